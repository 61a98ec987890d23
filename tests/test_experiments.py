"""Experiments against the embedded PostgreSQL: assignment by GrowthBook (deterministic, sticky, by weight, within the
flag's ramp, none while the flag is killed), the same arm for a visitor across sessions, exposure once, a removed arm, a
halted experiment serving control, start refusals (killed/boolean/unfit flag, a second experiment on a target), two
people editing at once, shadow policies, and `leadchat experiments` as an operator runs it (a real subprocess).
"""
import asyncio
import getpass
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from scipy.stats import chisquare

from conftest import aconn, fresh_db, rows
from leadchat import experiments as ex
from leadchat.db import create_pool, migrate
from leadchat.experiments import (Experiment, ExperimentConflictError, ExperimentError, ExperimentStore,
                                  UnknownExperimentError, arm_value, assign, check_experiment, create_experiment,
                                  experiment_history, get_experiment, halt_arm, shadow_policy, start, stop)
from leadchat.flags import Flag, FlagStore, create_flag, kill, list_flags, multivariate, remove_variation, set_ramp, unkill
from leadchat.state import SessionState

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = str(Path(sys.executable).with_name('leadchat'))
IDS = [f'00000000-0000-4000-8000-{i:012d}' for i in range(10_000)]


# --- in memory: GrowthBook's assignment through the experiment rule --------------------------------------------------

def running(name='exp', target='proposal_copy', flag='copy_ab', **kw) -> Experiment:
    return check_experiment(Experiment(name, target, flag, status=kw.pop('status', 'running'), **kw))


def store_of(flag: Flag, *exps: Experiment) -> ExperimentStore:
    return ExperimentStore(exps or [running(flag=flag.name)], flags=FlagStore([flag]))


def session(sid: str, arms: dict | None = None) -> SessionState:
    return SessionState(session_id=sid, experiments=arms or {})


def test_assignment_is_deterministic_across_processes_and_sticky_in_a_session():
    f = multivariate('copy_ab', {'standard': 0.5, 'short': 0.5})
    a, b = store_of(f), store_of(f)                 # two processes' caches built independently
    first = {i: assign(session(i), None, a)[0] for i in IDS[:2000]}
    assert first == {i: assign(session(i), None, b)[0] for i in IDS[:2000]}
    assert {tuple(x) for x in first.values()} == {('exp',)}           # ramp 100: every session is in
    assert Counter(x['exp'] for x in first.values()).keys() == {'standard', 'short'}
    # sticky: a session keeps the arm it holds, even when the weights (and so the hash ranges) change under it
    moved = store_of(multivariate('copy_ab', {'standard': 0.1, 'short': 0.9}))
    for i in IDS[:2000]:
        s = session(i, first[i])
        assert assign(s, None, moved) == ({}, [])
        assert arm_value(s, 'proposal_copy', 'standard', moved) == first[i]['exp']


def test_weights_are_respected_over_ten_thousand_ids():
    "A three-arm split 0.2/0.3/0.5: the counts fit the weights (chi-square), and every id is in."
    f = multivariate('stall_ab', {6: 0.2, 4: 0.3, 9: 0.5})
    st = store_of(f, running(target='stall_threshold', flag='stall_ab'))
    arms = [assign(session(i), None, st)[0]['exp'] for i in IDS]
    counts = Counter(arms)
    assert set(counts) == {'6', '4', '9'}
    observed = [counts['6'], counts['4'], counts['9']]
    assert chisquare(observed, [2000, 3000, 5000]).pvalue > 0.001, observed
    # and the test can tell: the same counts do not fit an even split
    assert chisquare(observed, [10_000 / 3] * 3).pvalue < 1e-6
    # the served value is typed (an int for stall_threshold)
    s = session(IDS[0], {'exp': arms[0]})
    assert arm_value(s, 'stall_threshold', 6, st) == int(arms[0])


def test_the_flag_ramp_is_the_experiment_coverage_and_it_grows_without_moving_anyone():
    ins = {}
    for pct in (0, 10, 40, 100):
        st = store_of(replace(multivariate('copy_ab', {'standard': 0.5, 'short': 0.5}), ramp=pct))
        ins[pct] = {i: arms['exp'] for i in IDS if (arms := assign(session(i), None, st)[0])}
    assert ins[0] == {} and len(ins[100]) == len(IDS)
    assert abs(len(ins[10]) / len(IDS) - 0.10) < 0.015 and abs(len(ins[40]) / len(IDS) - 0.40) < 0.02
    for lo, hi in ((10, 40), (40, 100)):
        assert set(ins[lo]) < set(ins[hi]) and all(ins[hi][i] == arm for i, arm in ins[lo].items())
    # outside the ramp: no arm, no exposure, the setting's default
    st = store_of(replace(multivariate('copy_ab', {'standard': 0.5, 'short': 0.5}), ramp=10))
    out = next(i for i in IDS if i not in ins[10])
    assert assign(session(out), None, st) == ({}, []) and arm_value(session(out), 'proposal_copy', 'dflt', st) == 'dflt'


def test_a_killed_flag_assigns_nobody_and_serves_control_to_arm_holders():
    f = multivariate('copy_ab', {'standard': 0.5, 'short': 0.5})
    killed = store_of(replace(f, killed=True))
    assert all(assign(session(i), None, killed) == ({}, []) for i in IDS[:1000])
    assert arm_value(session('s', {'exp': 'short'}), 'proposal_copy', 'dflt', killed) == 'standard'
    assert arm_value(session('s', {'exp': 'short'}), 'proposal_copy', 'dflt', store_of(f)) == 'short'


def test_a_visitor_gets_the_same_arm_in_every_session_and_is_exposed_once_per_session():
    st = store_of(multivariate('copy_ab', {'standard': 0.5, 'short': 0.5}))
    by_visitor = Counter()
    for v in IDS[:300]:
        arms = [assign(session(f'{v}-s{k}'), v, st) for k in range(3)]
        assert len({a[0]['exp'] for a in arms}) == 1
        for new, events in arms:
            assert events == [('experiment_exposure', {'experiment': 'exp', 'flag': 'copy_ab', 'target': 'proposal_copy',
                                                       'arm': new['exp'], 'subject': 'visitor'})]
        by_visitor[arms[0][0]['exp']] += 1
        # the next turn of a session that holds its arm: nothing new, no second exposure
        assert assign(session(f'{v}-s0', arms[0][0]), v, st) == ({}, [])
    assert set(by_visitor) == {'standard', 'short'}
    # without a visitor id the session id is hashed (and the exposure says so)
    new, events = assign(session(IDS[5]), None, st)
    assert new == assign(session('other'), IDS[5], st)[0] and events[0][1]['subject'] == 'session'


def test_a_removed_arm_serves_control_to_its_holders_and_takes_no_new_sessions():
    f = multivariate('copy3', {6: 0.4, 4: 0.3, 9: 0.3})
    exp = running(target='stall_threshold', flag='copy3')
    before = {i: assign(session(i), None, store_of(f, exp))[0]['exp'] for i in IDS[:3000]}
    gone = store_of(replace(f, variations=tuple(replace(v, removed=v.value == 4) for v in f.variations)), exp)
    for i, arm in before.items():
        held = session(i, {'exp': arm})
        assert arm_value(held, 'stall_threshold', 7, gone) == (6 if arm == '4' else int(arm))   # control for a removed arm
        new, events = assign(session(i), None, gone)
        if arm == '4': assert (new, events) == ({}, [])     # the removed arm's slot: not in the experiment
        else: assert new == {'exp': arm}                    # everyone else: the arm they had
    assert 0.25 < sum(a == '4' for a in before.values()) / len(before) < 0.35


def test_a_halted_experiment_serves_control_to_everyone_and_assigns_nobody():
    f = multivariate('copy_ab', {'standard': 0.5, 'short': 0.5})
    halted = store_of(f, running(status='halted', halted_arm='short', halt_reason='fewer hand-offs'))
    for arms in ({'exp': 'short'}, {'exp': 'standard'}, {}):
        assert arm_value(session('s', arms), 'proposal_copy', 'dflt', halted) == 'standard'
    assert all(assign(session(i), None, halted) == ({}, []) for i in IDS[:500])
    stopped = store_of(f, running(status='stopped'))
    assert arm_value(session('s', {'exp': 'short'}), 'proposal_copy', 'dflt', stopped) == 'dflt'
    assert arm_value(session('s', {'exp': 'short'}), 'booking_flow', 'slots_in_chat', store_of(f)) == 'slots_in_chat'
    with pytest.raises(ExperimentError, match='target "proposal-copy" is not known; did you mean proposal_copy?'):
        arm_value(session('s', {'exp': 'short'}), 'proposal-copy', 'dflt', store_of(f))   # a caller's typo is loud


def test_the_process_store_reads_the_flags_cache_at_evaluation_time():
    from leadchat import flags
    st = ExperimentStore([running()])
    try:
        flags.install(FlagStore([multivariate('copy_ab', {'standard': 0.5, 'short': 0.5})]))
        assert assign(session(IDS[0]), None, st)[0]
        flags.install(FlagStore([replace(multivariate('copy_ab', {'standard': 0.5, 'short': 0.5}), killed=True)]))
        assert assign(session(IDS[0]), None, st) == ({}, [])
        ex.install(st)
        assert ex.current() is st and shadow_policy() is None
    finally: flags.install(None); ex.install(None)
    assert ex.current().experiments == {}


# --- against the database -----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def db(pg, tmp_path_factory):
    "A fresh database of this module's own (flags copy_ab, stall_ab, booking_ab), and an env file pointing at it."
    url = fresh_db(pg[1])
    asyncio.run(migrate(url, pg[0]))

    async def flags_():
        async with await aconn(url) as c:
            await create_flag(c, multivariate('copy_ab', {'standard': 0.5, 'short': 0.5}), by='t')
            await create_flag(c, multivariate('stall_ab', {6: 0.5, 4: 0.5}), by='t')
            await create_flag(c, multivariate('booking_ab', {'slots_in_chat': 0.5, 'handoff_only': 0.5}), by='t')
            await create_flag(c, multivariate('wrong_values', {'standard': 0.5, 'long': 0.5}), by='t')
    asyncio.run(flags_())
    env = tmp_path_factory.mktemp('experiments') / 'experiments.env'
    env.write_text(f'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
                   f'DATABASE_URL={url}\nLEADCHAT_HOME={pg[0].leadchat_home}\n')
    return url, env




def run(url, fn):
    async def go():
        async with await aconn(url) as c: return await fn(c)
    return asyncio.run(go())


def audit(url, name):
    return rows(url, 'SELECT * FROM experiment_audit WHERE experiment = %s ORDER BY id', name)


def snapshot(url):
    return rows(url, 'SELECT * FROM experiments ORDER BY name'), len(rows(url, 'SELECT id FROM experiment_audit'))


def test_create_start_halt_stop_audited_with_the_full_guardrails(db):
    url, _ = db

    async def go(c):
        e = await create_experiment(c, Experiment('copy_life', 'proposal_copy', 'copy_ab', guardrails={'metric': 'booked'},
                                                  status='running'), by='ana')       # created as a draft whatever it says
        assert (e.status, e.version, e.guardrails) == ('draft', 1, {**ex.GUARDRAILS, 'metric': 'booked'})
        st = ExperimentStore(flags=FlagStore(await list_flags(c)))
        assert await ex.refresh(st, c) and not await ex.refresh(st, c) and st.running == ()
        e = await start(c, 'copy_life', by='ana')
        assert await ex.refresh(st, c) and [x.name for x in st.running] == ['copy_life']
        arms, events = assign(session(IDS[1]), None, st)
        assert arms['copy_life'] in ('standard', 'short') and len(events) == 1
        h = await halt_arm(c, 'copy_life', 'short', reason=' delivery failures 12% > 10% ', by='results')
        assert (h.status, h.halted_arm, h.halt_reason, h.version) == ('halted', 'short', 'delivery failures 12% > 10%', 3)
        assert await halt_arm(c, 'copy_life', 'standard', reason='again', by='results') == h     # idempotent
        assert await ex.refresh(st, c) and arm_value(session('s', {'copy_life': 'short'}), 'proposal_copy', 'x', st) == 'standard'
        with pytest.raises(ExperimentError, match='a halted experiment does not restart'): await start(c, 'copy_life', by='ana')
        s = await stop(c, 'copy_life', by='ana')
        assert s.status == 'stopped' and s.stopped_at >= s.started_at
        with pytest.raises(ExperimentError, match='already stopped'): await stop(c, 'copy_life', by='ana')
        with pytest.raises(ExperimentError, match='an experiment runs once'): await start(c, 'copy_life', by='ana')
        assert await ex.refresh(st, c) and arm_value(session('s', {'copy_life': 'short'}), 'proposal_copy', 'x', st) == 'x'
        return await experiment_history(c, 'copy_life')
    hist = run(url, go)
    assert [(r['action'], r['by']) for r in hist] == [('stop', 'ana'), ('halt', 'results'), ('start', 'ana'), ('create', 'ana')]
    assert hist[1]['old']['status'] == 'running' and hist[1]['new']['halted_arm'] == 'short'
    assert hist[3]['old'] is None and hist[3]['new']['guardrails']['metric'] == 'booked'


def test_start_refuses_a_killed_boolean_or_unfit_flag_and_changes_nothing(db):
    "Each was fine (or written behind the module's back) at create; start checks the flag again as it is now."
    url, _ = db

    async def refused(c, name, why):
        before = await get_experiment(c, name)
        with pytest.raises(ExperimentError, match=why): await start(c, name, by='t')
        assert await get_experiment(c, name) == before

    async def go(c):
        await create_experiment(c, Experiment('booking_life', 'booking_flow', 'booking_ab'), by='t')
        await kill(c, 'booking_ab', by='t')
        await refused(c, 'booking_life', 'flag booking_ab is killed: .* unkill it first')
        await unkill(c, 'booking_ab', by='t')
        with pytest.raises(ExperimentError, match='flag hosted_model is boolean'):
            await create_experiment(c, Experiment('bool_life', 'prompt_layer', 'hosted_model'), by='t')
        await c.execute("INSERT INTO experiments (name, kind, target, flag, updated_by) "
                        "VALUES ('bool_life', 'ab', 'prompt_layer', 'hosted_model', 't')")
        await refused(c, 'bool_life', 'flag hosted_model is boolean')
        await c.execute("INSERT INTO experiments (name, kind, target, flag, updated_by) "
                        "VALUES ('unfit_life', 'ab', 'prompt_layer', 'wrong_values', 't')")
        await refused(c, 'unfit_life', 'serves "long", which target prompt_layer does not accept')
    run(url, go)
    assert [a['action'] for a in audit(url, 'booking_life')] == ['create']


def test_one_experiment_per_target_and_per_flag(db):
    url, _ = db

    async def go(c):
        for n, t, f in (('stall_a', 'stall_threshold', 'stall_ab'), ('stall_b', 'stall_threshold', 'stall_ab'),
                        ('copy_on_stall', 'proposal_copy', 'copy_ab')):
            await create_experiment(c, Experiment(n, t, f), by='t')
        await start(c, 'stall_a', by='t')
        with pytest.raises(ExperimentError, match='experiment stall_a is running on target stall_threshold: .*stop it first'):
            await start(c, 'stall_b', by='t')
        await halt_arm(c, 'stall_a', '4', reason='stall', by='t')
        with pytest.raises(ExperimentError, match='experiment stall_a is halted on target stall_threshold'):
            await start(c, 'stall_b', by='t')
        await stop(c, 'stall_a', by='t')
        await start(c, 'stall_b', by='t')
        with pytest.raises(ExperimentError, match='no arm "7": its arms are 6, 4'): await halt_arm(c, 'stall_b', '7', reason='x', by='t')
        await stop(c, 'stall_b', by='t')
        # no two targets of TARGETS take the same values today; a flag running on some other target is refused all the same
        await create_experiment(c, Experiment('copy_other', 'proposal_copy', 'copy_ab'), by='t')
        await c.execute("UPDATE experiments SET target = 'some_future_target', status = 'running' WHERE name = 'copy_other'")
        with pytest.raises(ExperimentError, match='flag copy_ab already carries experiment copy_other: one experiment per flag'):
            await start(c, 'copy_on_stall', by='t')
        await stop(c, 'copy_other', by='t')
        await start(c, 'copy_on_stall', by='t')
        await stop(c, 'copy_on_stall', by='t')
    run(url, go)


def test_two_starts_on_one_target_racing_one_wins(db):
    "Two operators start two experiments on one target at the same moment: the unique index lets exactly one run."
    url, _ = db

    async def go():
        async with await aconn(url) as c:
            for f in ('layer_ab', 'layer_ab2'):
                await create_flag(c, multivariate(f, {'standard': 0.5, 'concise': 0.5}), by='t')
            await create_experiment(c, Experiment('race_a', 'prompt_layer', 'layer_ab'), by='t')
            await create_experiment(c, Experiment('race_b', 'prompt_layer', 'layer_ab2'), by='t')
        a, b = await aconn(url), await aconn(url)
        try: return await asyncio.gather(start(a, 'race_a', by='ana'), start(b, 'race_b', by='bob'), return_exceptions=True)
        finally: await a.close(); await b.close()
    res = asyncio.run(go())
    won = [r for r in res if isinstance(r, Experiment)]
    lost = [r for r in res if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], ExperimentError), res
    assert f'experiment {won[0].name} is running on target prompt_layer: one experiment at a time' in str(lost[0]), lost
    assert [r['name'] for r in rows(url, "SELECT name FROM experiments WHERE status = 'running'")] == [won[0].name]
    run(url, lambda c: stop(c, won[0].name, by='t'))


def test_two_people_editing_one_experiment_at_once(db):
    "Both read version N: exactly one edit lands, the other gets a conflict naming who; nothing is lost."
    url, _ = db

    async def setup(c):
        await create_experiment(c, Experiment('contested', 'booking_flow', 'booking_ab'), by='t')
        return (await start(c, 'contested', by='t')).version
    v = run(url, setup)

    async def go():
        a, b = await aconn(url), await aconn(url)
        try: return await asyncio.gather(halt_arm(a, 'contested', 'handoff_only', reason='slow', by='console:ana', version=v),
                                         stop(b, 'contested', by='console:bob', version=v), return_exceptions=True)
        finally: await a.close(); await b.close()
    res = asyncio.run(go())
    won = [r for r in res if isinstance(r, Experiment)]
    lost = [r for r in res if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], ExperimentConflictError), res
    now = run(url, lambda c: get_experiment(c, 'contested'))
    assert now == won[0] and now.version == v + 1 and now.status in ('halted', 'stopped')
    assert f'was changed by {now.updated_by}' in str(lost[0]) and 'apply it again' in str(lost[0])
    assert [a['by'] for a in audit(url, 'contested') if a['action'] not in ('create', 'start')] == [now.updated_by]
    # a guardrail halting without a version after a person halted: idempotent, no error, no new audit row
    if now.status == 'halted':
        assert run(url, lambda c: halt_arm(c, 'contested', 'slots_in_chat', reason='x', by='results')) == now
        run(url, lambda c: stop(c, 'contested', by='t'))


def test_shadow_experiments(db):
    url, _ = db

    async def go(c):
        with pytest.raises(ExperimentError, match="did you mean 'hot_lead_rule'"):
            await create_experiment(c, Experiment('sh', 'routing', kind='shadow', policy={'hot_lead': 'two_of_three'}), by='t')
        with pytest.raises(ExperimentError, match='whole number'):
            await create_experiment(c, Experiment('sh', 'routing', kind='shadow', policy={'stall_threshold': 'four'}), by='t')
        e = await create_experiment(c, Experiment('sh', 'routing', kind='shadow',
                                                  policy={'hot_lead_rule': 'TWO_OF_THREE', 'stall_threshold': 4}), by='t')
        assert e.policy == {'hot_lead_rule': 'two_of_three', 'stall_threshold': 4} and e.flag is None
        await create_experiment(c, Experiment('sh2', 'routing', kind='shadow', policy={'stall_threshold': 8}), by='t')
        st = ExperimentStore(flags=FlagStore())
        await ex.refresh(st, c)
        assert shadow_policy(st) is None
        await start(c, 'sh', by='t')
        with pytest.raises(ExperimentError, match='experiment sh is running on target routing'): await start(c, 'sh2', by='t')
        with pytest.raises(ExperimentError, match='no arm to halt'): await halt_arm(c, 'sh', 'x', reason='x', by='t')
        await ex.refresh(st, c)
        assert shadow_policy(st) == ('sh', {'hot_lead_rule': 'two_of_three', 'stall_threshold': 4})
        assert assign(session('s'), None, st) == ({}, [])         # a shadow experiment assigns nobody
        # a bad policy written behind the module's back never reaches a turn: start refuses it
        await c.execute("""UPDATE experiments SET policy = '{"hot_lead_rule": "always"}' WHERE name = 'sh2'""")
        await stop(c, 'sh', by='t')
        with pytest.raises(ExperimentError, match="shadow policy: unknown hot_lead_rule 'always'"): await start(c, 'sh2', by='t')
        await ex.refresh(st, c)
        assert shadow_policy(st) is None
    run(url, go)


@pytest.mark.parametrize('bad, why', [
    (lambda c: start(c, 'copy_lif', by='t'), 'did you mean copy_life?'),
    (lambda c: stop(c, "x'; DROP TABLE experiments; --", by='t'), 'no experiment named'),
    (lambda c: start(c, 'copy_life', by=''), 'names who made it'),
    (lambda c: halt_arm(c, 'copy_life', 'short', reason='', by='t'), 'names its reason'),
    (lambda c: create_experiment(c, Experiment('copy_life', 'proposal_copy', 'copy_ab'), by='t'), 'exists already'),
    (lambda c: create_experiment(c, Experiment('n1', 'proposal_copy', 'copy_abb'), by='t'), 'did you mean copy_ab?'),
    (lambda c: create_experiment(c, Experiment('n2', 'proposal_copy', 'wrong_values'), by='t'), '"long", which target'),
    (lambda c: create_experiment(c, Experiment('n3', 'stall_treshold', 'stall_ab'), by='t'), 'did you mean stall_threshold?'),
    (lambda c: create_experiment(c, Experiment('n4', 'proposal_copy', 'copy_ab', guardrails={'alpha': 0}), by='t'), 'out of range'),
    (lambda c: create_experiment(c, Experiment('n5', 'proposal_copy', 'copy_ab', description='x' * 501), by='t'), 'at most 500'),
    (lambda c: experiment_history(c, 'nope_nope'), 'no experiment named'),
    (lambda c: experiment_history(c, limit=0), 'limit must be'),
])
def test_bad_operations_are_refused_and_nothing_is_written(db, bad, why):
    url, _ = db
    if not rows(url, "SELECT 1 FROM experiments WHERE name = 'copy_life'"):
        run(url, lambda c: create_experiment(c, Experiment('copy_life', 'proposal_copy', 'copy_ab'), by='t'))
    before = snapshot(url)
    with pytest.raises(ExperimentError, match=why): run(url, bad)
    assert snapshot(url) == before


def test_unknown_names_say_what_is_close(db):
    url, _ = db
    with pytest.raises(UnknownExperimentError, match='did you mean contested'): run(url, lambda c: get_experiment(c, 'contestd'))


def test_a_change_reaches_another_process_within_five_seconds(db):
    "An ExperimentStore refreshing itself (its own pool, as another API process) sees a start within the poll interval."
    url, env = db
    code = f'''
import asyncio, time
from leadchat.db import create_pool
from leadchat.experiments import load_store, run_refresh
async def main():
    pool = await create_pool({url!r}, max_size=2)
    store = await load_store(pool); stop = asyncio.Event()
    task = asyncio.create_task(run_refresh(store, pool, stop=stop))
    print('ready', flush=True)
    t0 = time.monotonic()
    while 'reach_me' not in {{e.name for e in store.running}} and time.monotonic() - t0 < 20: await asyncio.sleep(0.02)
    print(f'running after {{time.monotonic() - t0:.2f}}', flush=True)
    stop.set(); await task; await pool.close()
asyncio.run(main())
'''
    run(url, lambda c: create_experiment(c, Experiment('reach_me', 'proposal_copy', 'copy_ab'), by='t'))
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        while line and line.strip() != 'ready': line = proc.stdout.readline()
        import time
        t0 = time.monotonic()
        r = cli(env, 'start', 'reach_me')
        assert r.returncode == 0, r.stderr
        line = proc.stdout.readline()
        while line and not line.startswith('running after'): line = proc.stdout.readline()
        assert line.startswith('running after'), (line, proc.stderr.read())
        assert time.monotonic() - t0 < 5.0
    finally:
        proc.wait(timeout=30)
        run(url, lambda c: stop(c, 'reach_me', by='t'))


# --- `leadchat experiments`, a real process --------------------------------------------------------------------------

def _mounted() -> bool:
    from leadchat.cli import app
    return any(g.name == 'experiments' for g in app.registered_groups)


# `leadchat experiments` once leadchat/cli.py mounts the sub-app; until then the same typer app run as its own process
COMMAND = [LEADCHAT, 'experiments'] if _mounted() else [
    sys.executable, '-c', 'from leadchat.experiments import experiments_app; experiments_app(prog_name="leadchat experiments")']


def cli(env, *args) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != 'LEADCHAT_ENV_FILE'}
    return subprocess.run([*COMMAND, *args, '--env-file', str(env)], capture_output=True, text=True, timeout=120,
                          env=clean, cwd=ROOT)


def test_the_cli_creates_starts_halts_stops_and_shows_history(db):
    url, env = db
    me = f'cli:{getpass.getuser()}'
    r = cli(env, 'create', 'cli_stall', '--flag', 'stall_ab', '--target', 'stall_threshold', '--guardrail', 'metric=booked',
            '--guardrail', 'min_sessions=500', '--description', 'four turns')
    assert r.returncode == 0 and 'cli_stall: created (draft) (version 1)' in r.stdout, r.stderr
    assert audit(url, 'cli_stall')[0]['new']['guardrails'] == {**ex.GUARDRAILS, 'metric': 'booked', 'min_sessions': 500}
    r = cli(env, 'start', 'cli_stall', '--version', '1')
    assert r.returncode == 0 and 'running (version 2)' in r.stdout, r.stderr
    r = cli(env, 'halt', 'cli_stall', '4', '--reason', 'fallback rate 9% > 5%')
    assert r.returncode == 0 and 'halted (arm 4: fallback rate 9% > 5%)' in r.stdout, r.stderr
    line = next(x for x in cli(env, 'list').stdout.splitlines() if x.startswith('cli_stall'))
    assert 'halted since' in line and 'v3' in line and 'flag stall_ab' in line and me in line, line
    r = cli(env, 'stop', 'cli_stall')
    assert r.returncode == 0 and 'stopped (version 4)' in r.stdout
    r = cli(env, 'create', 'cli_shadow', '--shadow', '--policy', 'hot_lead_rule=two_of_three', '--policy', 'stall_threshold=4')
    assert r.returncode == 0, r.stderr
    assert rows(url, "SELECT policy FROM experiments WHERE name = 'cli_shadow'")[0]['policy'] == \
        {'hot_lead_rule': 'two_of_three', 'stall_threshold': 4}
    lines = cli(env, 'history', 'cli_stall').stdout.strip().splitlines()
    assert [x.split()[5] for x in lines] == ['stop', 'halt', 'start', 'create'], lines
    assert all(me in x for x in lines) and 'status "running" → "halted"' in lines[1]


@pytest.mark.parametrize('args, why', [
    (('start', 'cli_stal'), 'did you mean cli_stall?'),
    (('stop', 'nothing_like_this'), 'no experiment named "nothing_like_this"'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'proposal_copy', '--guardrail', 'max_fallback=0.1'),
     'did you mean max_fallback_rate?'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'proposal_copy', '--guardrail', 'alpha=lots'), 'not a number'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'proposal_copy', '--guardrail', 'max_fallback_rate=1.5'), 'out of range'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'proposal_copy', '--guardrail', 'metric=revenue'), 'is not known'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'proposal_copy', '--guardrail', 'metric'), 'is not key=value'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'proposal_copy', '--guardrail', 'alpha=0.1', '--guardrail', 'alpha=0.2'),
     'given twice'),
    (('create', 'n1', '--flag', 'copy_ab'), 'needs --flag'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'colour'), 'target "colour" is not known'),
    (('create', 'n1', '--flag', 'rag_answers', '--target', 'proposal_copy'), 'is boolean'),
    (('create', 'n1', '--flag', 'rag_answer', '--target', 'proposal_copy'), 'did you mean rag_answers?'),
    (('create', 'N-1', '--flag', 'copy_ab', '--target', 'proposal_copy'), 'is not valid'),
    (('create', 'n1', '--shadow', '--policy', 'hot_lead_rule=sometimes'), "unknown hot_lead_rule 'sometimes'"),
    (('create', 'n1', '--shadow'), 'is the live policy'),
    (('create', 'n1', '--shadow', '--flag', 'copy_ab', '--policy', 'stall_threshold=4'), 'has no --flag'),
    (('create', 'n1', '--flag', 'copy_ab', '--target', 'proposal_copy', '--policy', 'stall_threshold=4'), 'add --shadow'),
    (('halt', 'cli_stall', '4', '--reason', 'late'), 'only a running experiment can be halted'),
    (('start', 'cli_stall'), 'an experiment runs once'),
    (('stop', 'cli_stall', '--version', '1'), 'your edit was made on version 1'),
    (('history', 'nope_nope'), 'no experiment named'),
])
def test_the_cli_refuses_bad_input_clearly_and_writes_nothing(db, args, why):
    url, env = db
    if not rows(url, "SELECT 1 FROM experiments WHERE name = 'cli_stall'"):
        assert cli(env, 'create', 'cli_stall', '--flag', 'stall_ab', '--target', 'stall_threshold').returncode == 0
        assert cli(env, 'start', 'cli_stall').returncode == 0 and cli(env, 'stop', 'cli_stall').returncode == 0
    before = snapshot(url)
    r = cli(env, *args)
    assert r.returncode == 1 and why in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr
    assert snapshot(url) == before
