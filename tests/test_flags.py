"""Feature flags against the embedded PostgreSQL: the kill switches the migration seeds, edits with their version check
and audit trail, bad definitions refused with nothing written, a removed variation, two staff members editing at once,
a change reaching another process's cache within 5 s, and `leadchat flags` as an operator runs it (a real subprocess).
"""
import asyncio
import getpass
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import aconn, fresh_db, rows
from leadchat import flags
from leadchat.db import create_pool, migrate
from leadchat.flags import (KILL_SWITCHES, Flag, FlagConflictError, FlagError, FlagStore, UnknownFlagError, create_flag,
                            get_flag, kill, list_flags, multivariate, refresh, remove_variation, run_refresh, set_ramp,
                            set_value, unkill, update_flag)

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = str(Path(sys.executable).with_name('leadchat'))
SIDS = [f'00000000-0000-4000-8000-{i:012d}' for i in range(4000)]


@pytest.fixture(scope='module')
def db(pg, tmp_path_factory):
    "A fresh database of this module's own, and an env file pointing at it."
    url = fresh_db(pg[1])
    asyncio.run(migrate(url, pg[0]))
    env = tmp_path_factory.mktemp('flags') / 'flags.env'
    env.write_text(f'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
                   f'DATABASE_URL={url}\nLEADCHAT_HOME={pg[0].leadchat_home}\n')
    return url, env




def _mounted() -> bool:
    from leadchat.cli import app
    return any(g.name == 'flags' for g in app.registered_groups)


# `leadchat flags` once nbs/90_cli mounts the sub-app; until then the same typer app run as its own process
COMMAND = [LEADCHAT, 'flags'] if _mounted() else [sys.executable, '-c', 'from leadchat.flags import flags_app; flags_app(prog_name="leadchat flags")']


def cli(env, *args) -> subprocess.CompletedProcess:
    "`leadchat flags …` as a real process."
    clean = {k: v for k, v in os.environ.items() if k != 'LEADCHAT_ENV_FILE'}
    return subprocess.run([*COMMAND, *args, '--env-file', str(env)], capture_output=True, text=True, timeout=120,
                          env=clean, cwd=ROOT)


def audit(url, name):
    return rows(url, 'SELECT * FROM flag_audit WHERE flag = %s ORDER BY id', name)


def test_the_migration_seeds_the_five_kill_switches_on_for_every_session(db):
    url, _ = db
    seeded = {r['name']: r for r in rows(url, 'SELECT * FROM flags')}
    assert set(KILL_SWITCHES) <= set(seeded)
    for n in KILL_SWITCHES:
        assert (seeded[n]['kind'], seeded[n]['value'], seeded[n]['killed'], float(seeded[n]['ramp'])) == ('boolean', True, False, 100.0)
        assert [a['action'] for a in audit(url, n)][:1] == ['create']

    async def go():
        async with await aconn(url) as c:
            store = FlagStore([Flag(n, killed=True) for n in KILL_SWITCHES])     # stale snapshot: everything off
            assert await refresh(store, c)
            return store
    store = asyncio.run(go())
    assert all(store.is_on(n, s) for n in KILL_SWITCHES for s in SIDS[:200])


@pytest.mark.parametrize('bad, why', [
    (lambda c: set_ramp(c, 'rag_answers', 101, by='t'), 'outside 0–100'),
    (lambda c: set_ramp(c, 'rag_answers', -5, by='t'), 'outside 0–100'),
    (lambda c: set_ramp(c, 'rag_answers', 'NaN', by='t'), 'outside 0–100'),
    (lambda c: set_ramp(c, 'rag_answers', 'half', by='t'), 'not a number'),
    (lambda c: set_value(c, 'rag_answers', 'maybe', by='t'), 'must be true or false'),
    (lambda c: set_value(c, 'rag_answers', 1, by='t'), 'must be true or false'),
    (lambda c: kill(c, 'rag_answer', by='t'), 'did you mean rag_answers?'),
    (lambda c: kill(c, "x'; DROP TABLE flags; --", by='t'), 'no flag named'),
    (lambda c: kill(c, 'rag_answers', by=''), 'names who made it'),
    (lambda c: update_flag(c, 'rag_answers', 'set', by='t', kind='multivariate'), 'cannot be changed'),
])
def test_bad_edits_are_refused_and_nothing_is_written(db, bad, why):
    url, _ = db
    before = rows(url, 'SELECT * FROM flags ORDER BY name'), len(rows(url, 'SELECT id FROM flag_audit'))

    async def go():
        async with await aconn(url) as c:
            with pytest.raises(FlagError, match=why): await bad(c)
    asyncio.run(go())
    assert (rows(url, 'SELECT * FROM flags ORDER BY name'), len(rows(url, 'SELECT id FROM flag_audit'))) == before


def test_weights_that_do_not_sum_to_one_are_refused_not_equalised(db):
    "GrowthBook would silently bucket such weights as equal weights; the store refuses them before any write."
    url, _ = db
    for weights, total in [({'a': 0.5, 'b': 0.4}, '0.9'), ({'a': 0.7, 'b': 0.7}, '1.4'), ({'a': 0, 'b': 0}, '0')]:
        with pytest.raises(FlagError, match=f'must sum to 1, they sum to {total}'): multivariate('split_test', weights)
    bad = Flag('split_test', 'multivariate', None, 'a', (flags.Variation('a', 0.5), flags.Variation('b', 0.6)))

    async def go():
        async with await aconn(url) as c:
            with pytest.raises(FlagError, match='sum to 1.1'): await create_flag(c, bad, by='t')
            good = await create_flag(c, multivariate('split_test', {'a': 0.5, 'b': 0.5}), by='t')
            with pytest.raises(FlagError, match='sum to 1.5'):
                await update_flag(c, 'split_test', 'weights', by='t', version=good.version,
                                  variations=(flags.Variation('a', 0.5), flags.Variation('b', 1.0)))
            with pytest.raises(FlagError, match='exists already'): await create_flag(c, good, by='t')
            return await get_flag(c, 'split_test')
    after = asyncio.run(go())
    assert [v.weight for v in after.variations] == [0.5, 0.5] and after.version == 1
    assert [a['action'] for a in audit(url, 'split_test')] == ['create']


def test_a_variation_removed_while_sessions_hold_it(db):
    "Its sessions get the control (a valid arm), every other session keeps its arm; the control cannot be removed."
    url, _ = db

    async def go():
        async with await aconn(url) as c:
            await create_flag(c, multivariate('proposal_copy', {'long': 0.4, 'short': 0.3, 'bullets': 0.3}), by='ana')
            store = FlagStore(); await refresh(store, c)
            before = {s: store.value('proposal_copy', s) for s in SIDS}
            with pytest.raises(FlagError, match='is the default'): await remove_variation(c, 'proposal_copy', 'long', by='ana')
            with pytest.raises(FlagError, match='serves no variation "medium"'):
                await remove_variation(c, 'proposal_copy', 'medium', by='ana')
            f = await remove_variation(c, 'proposal_copy', 'short', by='ana')
            assert await refresh(store, c)
            after = {s: store.value('proposal_copy', s) for s in SIDS}
            with pytest.raises(FlagError, match='must be one of the variations still served'):
                await set_value(c, 'proposal_copy', 'short', by='ana')
            return f, before, after
    f, before, after = asyncio.run(go())
    assert [v.removed for v in f.variations] == [False, True, False] and f.live_values == ['long', 'bullets']
    held = [s for s in SIDS if before[s] == 'short']
    assert 0.25 < len(held) / len(SIDS) < 0.35
    assert all(after[s] == 'long' for s in held)
    assert all(after[s] == before[s] for s in SIDS if before[s] != 'short')
    assert set(after.values()) == {'long', 'bullets'}
    last = audit(url, 'proposal_copy')[-1]
    assert (last['by'], last['action'], last['old']['variations'][1]['removed'], last['new']['variations'][1]['removed']) == \
        ('ana', 'remove_variation', False, True)


def test_a_ramp_keeps_its_sessions_as_it_grows_and_kill_beats_the_ramp(db):
    url, _ = db

    async def go():
        async with await aconn(url) as c:
            await create_flag(c, Flag('new_flow', ramp=0), by='t')
            store, shares = FlagStore(), {}
            for pct in (0, 5, 25, 100):
                await set_ramp(c, 'new_flow', pct, by='t'); await refresh(store, c)
                shares[pct] = {s for s in SIDS if store.is_on('new_flow', s)}
            await kill(c, 'new_flow', by='t'); await refresh(store, c)
            killed = sum(store.is_on('new_flow', s) for s in SIDS)
            await unkill(c, 'new_flow', by='t'); await refresh(store, c)
            return shares, killed, sum(store.is_on('new_flow', s) for s in SIDS)
    shares, killed, back = asyncio.run(go())
    assert shares[0] == set() and shares[0] < shares[5] < shares[25] < shares[100] and len(shares[100]) == len(SIDS)
    assert abs(len(shares[5]) / len(SIDS) - 0.05) < 0.015 and abs(len(shares[25]) / len(SIDS) - 0.25) < 0.03
    assert (killed, back) == (0, len(SIDS))


def test_two_staff_members_editing_the_same_flag_at_once(db):
    "Both read version N and write: exactly one edit lands, the other gets a conflict naming who; nothing is lost."
    url, _ = db

    async def go():
        async with await aconn(url) as setup:
            await create_flag(setup, Flag('contested', ramp=10), by='t')
            v = (await get_flag(setup, 'contested')).version
        a, b = await aconn(url), await aconn(url)
        try:
            res = await asyncio.gather(set_ramp(a, 'contested', 50, by='console:ana', version=v),
                                       kill(b, 'contested', by='console:bob', version=v), return_exceptions=True)
            async with await aconn(url) as c:
                return v, res, await get_flag(c, 'contested')
        finally: await a.close(); await b.close()
    v, res, now = asyncio.run(go())
    won = [r for r in res if isinstance(r, Flag)]
    lost = [r for r in res if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], FlagConflictError), res
    assert now == won[0] and now.version == v + 1
    winner = now.updated_by
    assert f'was changed by {winner}' in str(lost[0]) and f'version {v + 1}' in str(lost[0]) and 'apply it again' in str(lost[0])
    assert (now.ramp, now.killed) in [(50.0, False), (10.0, True)]
    edits = [a for a in audit(url, 'contested') if a['action'] != 'create']
    assert [a['by'] for a in edits] == [winner]

    async def retry():      # the loser reloads and re-applies: both edits stand
        async with await aconn(url) as c:
            if winner == 'console:ana': return await kill(c, 'contested', by='console:bob', version=now.version)
            return await set_ramp(c, 'contested', 50, by='console:ana', version=now.version)
    final = asyncio.run(retry())
    assert (final.ramp, final.killed, final.version) == (50.0, True, v + 2)


def test_a_change_reaches_another_process_cache_within_five_seconds(db):
    "A FlagStore refreshing itself (its own pool, as another API process) sees a kill within the poll interval."
    url, _ = db
    code = f'''
import asyncio, sys, time
from leadchat.db import create_pool
from leadchat.flags import load_store, run_refresh
async def main():
    pool = await create_pool({url!r}, max_size=2)
    store = await load_store(pool); stop = asyncio.Event()
    task = asyncio.create_task(run_refresh(store, pool, stop=stop))
    print('on' if store.is_on('proactive_prompt', 'sid') else 'off', flush=True)
    t0 = time.monotonic()
    while store.is_on('proactive_prompt', 'sid') and time.monotonic() - t0 < 20: await asyncio.sleep(0.02)
    print(f'off after {{time.monotonic() - t0:.2f}}', flush=True)
    stop.set(); await task; await pool.close()
asyncio.run(main())
'''
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == 'on'      # (structlog's lines go to stdout too: skipped below)
        t0 = time.monotonic()
        r = cli(db[1], 'kill', 'proactive_prompt')
        assert r.returncode == 0, r.stderr
        line = proc.stdout.readline()
        while line and not line.startswith('off after'): line = proc.stdout.readline()
        seen = time.monotonic() - t0
        assert line.startswith('off after'), (line, proc.stderr.read())
        assert seen < 5.0, seen
    finally:
        proc.wait(timeout=30)
        assert cli(db[1], 'unkill', 'proactive_prompt').returncode == 0


def test_the_cli_lists_sets_ramps_kills_and_unkills_with_the_operator_audited(db):
    url, env = db
    me = f'cli:{getpass.getuser()}'
    r = cli(env, 'list')
    assert r.returncode == 0, r.stderr
    for n in KILL_SWITCHES: assert any(line.startswith(n) for line in r.stdout.splitlines()), r.stdout

    assert cli(env, 'create', 'slot_buttons', '--ramp', '0').returncode == 0
    r = cli(env, 'ramp', 'slot_buttons', '30')
    assert r.returncode == 0 and 'ramped to 30%' in r.stdout, r.stderr
    r = cli(env, 'set', 'slot_buttons', 'false')
    assert r.returncode == 0 and 'serves false' in r.stdout, r.stderr
    r = cli(env, 'kill', 'slot_buttons')
    assert r.returncode == 0 and 'killed' in r.stdout
    assert 'KILLED' in next(line for line in cli(env, 'list').stdout.splitlines() if line.startswith('slot_buttons'))
    assert cli(env, 'unkill', 'slot_buttons').returncode == 0
    r = cli(env, 'create', 'tone', '--variations', '["formal", "casual"]', '--weights', '[0.5, 0.5]')
    assert r.returncode == 0, r.stderr
    r = cli(env, 'set', 'tone', 'casual')
    assert r.returncode == 0 and 'serves "casual" by default' in r.stdout, r.stderr

    trail = [(a['action'], a['by'], a['old'] and a['old']['ramp'], a['new']['ramp'], a['new']['value'], a['new']['killed'])
             for a in audit(url, 'slot_buttons')]
    assert trail == [('create', me, None, 0.0, True, False), ('ramp', me, 0.0, 30.0, True, False),
                     ('set', me, 30.0, 30.0, False, False), ('kill', me, 30.0, 30.0, False, True),
                     ('unkill', me, 30.0, 30.0, False, False)]
    assert all(a['at'] is not None for a in audit(url, 'slot_buttons'))
    assert audit(url, 'tone')[-1]['new']['default_value'] == 'casual' and audit(url, 'tone')[-1]['by'] == me
    r = cli(env, 'history', 'slot_buttons')
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 5, (r.stdout, r.stderr)
    assert [line.split()[5] for line in lines] == ['unkill', 'kill', 'set', 'ramp', 'create'], lines    # newest first
    assert 'killed false → true' in lines[1] and 'ramp 0.0 → 30.0' in lines[3] and me in lines[0]


@pytest.mark.parametrize('args, why', [
    (('kill', 'rag_answer'), 'did you mean rag_answers?'),
    (('set', 'nonexistent_flag', 'true'), 'no flag named "nonexistent_flag"'),
    (('ramp', 'rag_answers', '150'), 'outside 0–100'),
    (('ramp', 'rag_answers', 'fifty'), 'not a number'),
    (('set', 'rag_answers', 'perhaps'), 'must be true or false'),
    (('set', 'Bad Name!', 'true'), 'no flag named'),
    (('create', 'weighted', '--variations', '["a", "b"]', '--weights', '[0.6, 0.6]'), 'must sum to 1, they sum to 1.2'),
    (('create', 'weighted', '--variations', '["a", "b"]', '--weights', '[1]'), 'same length'),
    (('create', 'weighted', '--variations', '[a, b]'), 'not valid JSON'),
    (('create', 'Weighted'), 'is not valid'),
    (('create', 'rag_answers'), 'exists already'),
    (('history', 'nonexistent_flag'), 'no flag named'),
])
def test_the_cli_refuses_bad_input_clearly_and_writes_nothing(db, args, why):
    url, env = db
    before = rows(url, 'SELECT * FROM flags ORDER BY name'), len(rows(url, 'SELECT id FROM flag_audit'))
    r = cli(env, *args)
    assert r.returncode == 1 and why in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr
    assert (rows(url, 'SELECT * FROM flags ORDER BY name'), len(rows(url, 'SELECT id FROM flag_audit'))) == before


def test_an_unknown_name_at_evaluation_is_an_error_not_a_feature_turned_off():
    store = FlagStore()
    with pytest.raises(UnknownFlagError, match='did you mean booking_in_chat'): store.is_on('booking_in_chats', 's')
    with pytest.raises(UnknownFlagError): store.for_session('s').value('nothing_like_it')
    # a kill switch whose row is missing (database unreadable, restored from before 0019) stays on, it is not unknown
    assert all(FlagStore([]).is_on(n, 's') for n in KILL_SWITCHES)


def test_a_failed_refresh_keeps_the_last_snapshot(db):
    url, _ = db

    async def go():
        pool = await create_pool(url, max_size=1)
        store = await flags.load_store(pool)
        async with pool.connection() as c: await kill(c, 'hosted_model', by='t')
        async with pool.connection() as c: await refresh(store, c)
        await pool.close()          # the database goes away: polls fail, the snapshot stays
        stop = asyncio.Event()
        task = asyncio.create_task(run_refresh(store, pool, stop=stop, interval=0.05))
        await asyncio.sleep(0.3); stop.set(); await task
        off = store.is_on('hosted_model', 's')
        async with await aconn(url) as c: await unkill(c, 'hosted_model', by='t')
        return off
    assert asyncio.run(go()) is False


# --- the kill switches wired into the service (step 4): through the real API, relay, calendar and model port -----------

import contextlib  # noqa: E402

import yaml  # noqa: E402
from httpx_sse import connect_sse  # noqa: E402

TOKEN = 'staff-token-for-tests-0123456789'


@pytest.fixture(scope='module')
def switch_api(pg, tmp_path_factory):
    "The app with a CalDAV calendar (Radicale), Slack (a local receiver), the CRM table and SMTP (aiosmtpd); flags polled every 0.1 s."
    from aiosmtpd.controller import Controller
    from apiserver import LiveServer
    from calendar_servers import IN_HOURS, Radicale, SettableClock, one_rep_calendar
    from leadchat.api import create_app
    from leadchat.calendar import CalendarService, load_calendar_config
    from leadchat.config import Settings
    from slack_receiver import SlackReceiver
    from test_handoff import SMTP_PASSWORD, SMTP_USER, Inbox, authenticator, free_port
    inbox = Inbox()
    smtp = Controller(inbox, hostname='127.0.0.1', port=free_port(), authenticator=authenticator, auth_required=True,
                      auth_require_tls=False)
    smtp.start()
    try:
        with Radicale() as radicale, SlackReceiver() as slack:
            radicale.make_calendar('ana', 'work')
            path = tmp_path_factory.mktemp('flagcal') / 'calendar.yaml'
            path.write_text(yaml.safe_dump(one_rep_calendar(radicale)))
            url, clock = fresh_db(pg[1]), SettableClock()
            clock.now = IN_HOURS
            s = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='slack,crm,email',
                         slack_webhook_url=slack.webhook_url, fallback_email_address='sales@calderwood.example',
                         smtp_host='127.0.0.1', smtp_port=smtp.port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD,
                         handoff_retry_backoff_seconds='0.05', leadchat_home=pg[0].leadchat_home, database_url=url,
                         leadchat_admin_token=TOKEN, leadchat_rate_limit_ip_per_minute=10_000,
                         leadchat_rate_limit_session_per_minute=10_000, leadchat_calendar_config=path)
            calendar = CalendarService(s, load_calendar_config(path, s), clock=clock)
            app = create_app(s, clock=clock, knowledge_path=str(ROOT / 'knowledge'), calendar=calendar, relay_interval=0.1,
                             flag_refresh_interval=0.1)
            with LiveServer(app) as srv:
                srv.the_app, srv.db_url, srv.slack, srv.inbox = app, url, slack, inbox
                yield srv
    finally: smtp.stop()


def wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := fn(): return out
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def switched_off(api, name):
    "Kill `name` in the database (as staff would), wait until the app's cache has it (≤ 5 s), unkill on the way out."
    async def edit(fn):
        async with await aconn(api.db_url) as c: await fn(c, name, by='test')
    asyncio.run(edit(kill))
    assert wait_for(lambda: not api.the_app.state.flags.is_on(name, 'any'), 5.0), f'{name} not off in the app within 5 s'
    try: yield
    finally:
        asyncio.run(edit(unkill))
        assert wait_for(lambda: api.the_app.state.flags.is_on(name, 'any'), 5.0)


def say(c, sid, message, **extra):
    "One turn: (reply text, {event: payload} of the non-delta events)."
    text, events = '', {}
    with connect_sse(c, 'POST', '/chat', json={'message': message, **extra}, headers={'ZGC-Session-ID': sid}) as es:
        assert es.response.status_code == 200, es.response.read()
        for ev in es.iter_sse():
            if ev.event == 'delta': text += json.loads(ev.data)['content']
            else: events[ev.event] = json.loads(ev.data)
    return text, events


def test_proactive_prompt_switch_reaches_the_widget_within_five_seconds(switch_api):
    sid = str(uuid.uuid4())
    with switch_api.client() as c:
        r = c.get('/chat/flags', headers={'ZGC-Session-ID': sid})
        assert r.status_code == 200 and r.json() == {'proactive_prompt': True} and r.headers['cache-control'] == 'no-store'
        assert c.get('/chat/flags').json() == {'proactive_prompt': True}          # no session yet: a flag at 100 % is on
        for bad in ('not-a-uuid', 'x' * 65, "'; DROP TABLE flags; --"):
            r = c.get('/chat/flags', headers={'ZGC-Session-ID': bad})
            assert r.status_code in (400, 422) and 'error' in r.json(), (bad, r.status_code, r.text)

        async def edit(fn):
            async with await aconn(switch_api.db_url) as conn: await fn(conn, 'proactive_prompt', by='test')
        asyncio.run(edit(kill))
        t0 = time.monotonic()
        off = wait_for(lambda: c.get('/chat/flags', headers={'ZGC-Session-ID': sid}).json() == {'proactive_prompt': False}, 5.0)
        seen = time.monotonic() - t0
        asyncio.run(edit(unkill))
        assert off and seen < 5.0, seen
        assert wait_for(lambda: c.get('/chat/flags', headers={'ZGC-Session-ID': sid}).json() == {'proactive_prompt': True}, 5.0)


def test_rag_answers_killed_answers_honestly_with_no_result(switch_api):
    from leadchat.compose import is_no_result_offer
    q = 'What case studies do you have in fintech?'
    with switch_api.client() as c:
        on_text, _ = say(c, str(uuid.uuid4()), q)
        with switched_off(switch_api, 'rag_answers'):
            sid = str(uuid.uuid4())
            off_text, ev = say(c, sid, q)
    assert on_text.strip() and not is_no_result_offer(on_text), on_text       # the control: the knowledge base answers
    assert is_no_result_offer(off_text) and ev['done']['turn_index'] == 1, off_text
    evs = rows(switch_api.db_url, "SELECT payload FROM analytics_events WHERE session_id = %s AND event_type = 'rag_no_result'", sid)
    assert [e['payload'].get('reason') for e in evs] == ['rag_answers_killed']


def handoff_channels_of(url, sid):
    return {r['channel']: r['status'] for r in rows(url, "SELECT channel, status FROM handoff_records WHERE session_id = %s "
                                                         "AND kind = 'handoff'", sid)}


def test_booking_in_chat_and_slack_delivery_killed(switch_api):
    "No slots in the chat (the proposal only; an earlier offer is not booked); the hand-off goes to the CRM and email only."
    from calendar_servers import HOT_WITH_EMAIL
    api = switch_api
    with api.client() as c:
        control = str(uuid.uuid4())
        reply, ev = say(c, control, HOT_WITH_EMAIL, timezone='America/New_York')
        assert ev['done']['handoff_reason'] == 'hot_lead' and len(ev['slots']['slots']) == 3 and 'Here are 3 times' in reply
        assert wait_for(lambda: handoff_channels_of(api.db_url, control).get('slack') == 'delivered'), 'control not on Slack'
        slack_seen, mail_seen = len(api.slack.requests), len(api.inbox.messages)

        with switched_off(api, 'booking_in_chat'), switched_off(api, 'slack_delivery'):
            sid = str(uuid.uuid4())
            reply, ev = say(c, sid, HOT_WITH_EMAIL, timezone='America/New_York')
            assert ev['done']['handoff_reason'] == 'hot_lead' and 'slots' not in ev and 'Here are 3 times' not in reply, (reply, ev)
            picked, ev2 = say(c, control, 'The second one works for me')       # slots offered before the kill: not booked
            assert 'meeting' not in ev2 and not picked.startswith("You're booked"), picked
            got = wait_for(lambda: (h := handoff_channels_of(api.db_url, sid)) and len(h) == 3 and h)
            assert got == {'slack': 'skipped', 'crm': 'delivered', 'email': 'delivered'}, got
    assert len(api.slack.requests) == slack_seen                     # nothing reached Slack while it was killed
    assert len(api.inbox.messages) > mail_seen                        # the team heard by email
    with psycopg.connect(api.db_url) as conn:
        assert conn.execute('SELECT count(*) FROM calendar_bookings WHERE session_id = %s', [control]).fetchone()[0] == 0
        assert conn.execute('SELECT count(*) FROM leads WHERE session_id = %s', [sid]).fetchone()[0] == 1


def test_hosted_model_killed_the_offline_engine_answers(pg):
    "A hosted provider (Anthropic's SDK against a local replay server) behind the kill switch: off, no request leaves."
    from apiserver import LiveServer
    from leadchat.api import create_app
    from llm_replay import LLMReplay
    from pydantic import SecretStr
    from test_api import app_settings
    replay = LLMReplay()
    with LiveServer(replay.app) as rsrv:
        url = fresh_db(pg[1])
        asyncio.run(migrate(url, pg[0]))

        async def edit(fn):
            async with await aconn(url) as c: await fn(c, 'hosted_model', by='test')
        asyncio.run(edit(kill))
        s = app_settings(pg, url, leadchat_model_provider='anthropic', anthropic_api_key=SecretStr('sk-ant-replay'),
                         anthropic_base_url=rsrv.url, llm_max_retries=0)
        app = create_app(s, knowledge_path=str(ROOT / 'knowledge'), flag_refresh_interval=0.1)
        with LiveServer(app) as srv, srv.client() as c:
            assert app.state.service.model.name == 'anthropic'
            sid = str(uuid.uuid4())
            text, ev = say(c, sid, 'What case studies do you have in fintech?')
            assert replay.requests == [] and text.strip() and 'done' in ev and 'error' not in ev
            kinds = [r['event_type'] for r in rows(url, 'SELECT event_type FROM analytics_events WHERE session_id = %s', sid)]
            assert 'llm_generation_failure' not in kinds, kinds
            asyncio.run(edit(unkill))                # the control: back on, the hosted model is asked (and fails: no script)
            assert wait_for(lambda: app.state.flags.is_on('hosted_model', sid), 5.0)
            say(c, str(uuid.uuid4()), 'And in healthcare?')
            assert replay.requests and replay.requests[0].provider == 'anthropic'


def test_a_turn_reads_one_snapshot_even_when_the_cache_refreshes_mid_turn():
    store = FlagStore()
    turn = store.for_session('s')
    assert turn.is_on('rag_answers')
    store.replace([Flag('hosted_model', killed=True), Flag('brand_new', ramp=100)])
    assert turn.is_on('hosted_model') is True                      # the turn's snapshot: before the refresh
    with pytest.raises(UnknownFlagError): turn.is_on('brand_new')  # never half of each (a feature missing → None → "off")
    after = store.for_session('s')
    assert (after.is_on('hosted_model'), after.is_on('brand_new')) == (False, True)
