"""Issue 19 items 3 and 4: experiment results per arm and the guardrails, against the embedded PostgreSQL.

The statistics against values worked by hand and scipy's own (Wilson via `binomtest`, the z-test via the χ² of the 2×2
table); metrics from events written the way the service writes them, with exact expected counts; the SRM check on a
55/45 and a 50.1/49.9 split of 10,000; guardrails that halt a harmful arm (fallback rate, conversion drop) once — audited,
logged, alerted to the local Slack receiver (webhook and bot) — and leave a healthy or a too-small arm alone; bad input
(an unknown name, a shadow experiment, an experiment nobody was exposed to); `leadchat experiments results`.
"""
import asyncio
import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import structlog
import typer
from psycopg.rows import dict_row
from scipy import stats
from typer.testing import CliRunner

from conftest import fresh_db, rows as q
from leadchat import experiments as ex
from leadchat import flags as fl
from leadchat.config import Settings
from leadchat.db import create_pool, migrate
from leadchat.experiments import Experiment, ExperimentError, UnknownExperimentError, create_experiment, start, stop
from leadchat.results import (SRM_THRESHOLD, arm_days, build_results, check_guardrails, evaluate_guardrails, guardrail_breaches,
                              experiment_results, render_text, results_command, results_over_time, run_guardrails,
                              slack_alert, srm_check, two_proportion_test, wilson_interval)
from leadchat.state import SessionState
from slack_receiver import SlackReceiver, status

DAY0 = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
LEADCHAT = str(Path(sys.executable).with_name('leadchat'))
ARMS = {'proposal_copy': ('standard', 'short'), 'booking_flow': ('slots_in_chat', 'handoff_only'),
        'prompt_layer': ('standard', 'concise'), 'stall_threshold': (6, 3)}


# ---------------------------------------------------------------------------------------------------------- statistics

@pytest.mark.parametrize('k, n', [(12, 100), (0, 40), (40, 40), (1, 2), (37, 10_000), (5000, 10_000)])
def test_wilson_interval_matches_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    assert 0 <= lo <= k / n <= hi <= 1


def test_wilson_interval_by_hand_and_bad_input():
    # 12 of 100: centre (0.12 + 1.96²/200)/(1 + 1.96²/100) = 0.13404, half-width 1.96·√(0.12·0.88/100 + 1.96²/40000)/1.0384 = 0.06405
    assert wilson_interval(12, 100) == pytest.approx((0.0700, 0.1981), abs=1e-4)
    assert wilson_interval(0, 0) is None                       # nobody yet: no interval, no division by zero
    for k, n in [(5, 3), (-1, 10), (1, -1)]:
        with pytest.raises(ValueError, match='not a proportion'): wilson_interval(k, n)


def test_two_proportion_z_test_by_hand_and_against_the_chi_square_of_the_table():
    c = two_proportion_test(60, 500, 45, 500)
    # pooled 0.105; se √(0.105·0.895·(2/500)) = 0.019388; z = 0.03/0.019388 = 1.5473; p = 2·(1 − Φ(1.5473)) = 0.1218
    assert (c.diff, c.z, c.p_value) == (pytest.approx(0.03), pytest.approx(1.5473, abs=1e-4), pytest.approx(0.1218, abs=1e-4))
    se = math.sqrt(0.12 * 0.88 / 500 + 0.09 * 0.91 / 500)     # the interval is unpooled
    assert (c.lo, c.hi) == (pytest.approx(0.03 - 1.959964 * se, abs=1e-6), pytest.approx(0.03 + 1.959964 * se, abs=1e-6))
    assert c.relative == pytest.approx(1 / 3) and c.p_lower == pytest.approx(1 - 0.1218 / 2, abs=1e-4)
    for k, n, k0, n0 in [(60, 500, 45, 500), (30, 1000, 52, 1000), (7, 90, 3, 120), (400, 800, 350, 760)]:
        chi2, p, _, _ = stats.chi2_contingency([[k, n - k], [k0, n0 - k0]], correction=False)
        t = two_proportion_test(k, n, k0, n0)
        assert t.p_value == pytest.approx(p, abs=1e-10) and t.z ** 2 == pytest.approx(chi2, rel=1e-9)
    assert two_proportion_test(0, 50, 0, 50).p_value == 1.0 and two_proportion_test(0, 50, 0, 50).relative is None
    assert two_proportion_test(3, 10, 0, 0) is None and two_proportion_test(0, 0, 3, 10) is None
    with pytest.raises(ValueError, match='not a proportion'): two_proportion_test(11, 10, 3, 10)


def test_srm_check_fires_on_55_45_and_not_on_5010_4990():
    w = {'standard': 0.5, 'short': 0.5}
    bad = srm_check({'standard': 5500, 'short': 4500}, w)
    assert bad.mismatch and bad.chi2 == pytest.approx(100.0) and bad.p_value < SRM_THRESHOLD
    assert 'Sample ratio mismatch' in bad.warning and 'do not read the results' in bad.warning
    fine = srm_check({'standard': 5010, 'short': 4990}, w)
    assert not fine.mismatch and fine.warning is None and fine.chi2 == pytest.approx(0.04) and fine.p_value == pytest.approx(0.8415, abs=1e-4)
    assert not srm_check({'a': 6000, 'b': 3000}, {'a': 2 / 3, 'b': 1 / 3}).mismatch          # uneven weights, even split of them
    assert srm_check({'standard': 900, 'short': 880, 'long': 4}, w).mismatch                  # an arm the flag does not serve
    assert (srm_check({}, w).mismatch, srm_check({}, w).note) == (False, 'no sessions exposed yet')


# ------------------------------------------------------------------------------------------------------------ database

@pytest.fixture
async def db(pg):
    "A fresh migrated database and a pool on it (every test starts experiments of its own on every target)."
    url = fresh_db(pg[1])
    await migrate(url, pg[0])
    pool = await create_pool(url, max_size=4)
    try: yield url, pool
    finally: await pool.close()




async def running(pool, name, target, *, weights=(0.5, 0.5), guardrails=None, go=True) -> Experiment:
    "A flag whose variations are the target's arms, and an experiment on it (started unless `go` is False)."
    arms = ARMS[target]
    async with pool.connection() as conn:
        await fl.create_flag(conn, fl.multivariate(f'{name}_flag', dict(zip(arms, weights))), by='test')
        e = await create_experiment(conn, Experiment(name, target, f'{name}_flag', guardrails=guardrails or {}), by='test')
        return await start(conn, name, by='test') if go else e


async def sessions(conn, experiment, arm, n, *, engaged=0, qualified=0, handoff=0, booked=0, fallbacks=0, delivered=0,
                   failed=0, day=0, turns=1, prior=False):
    """`n` sessions exposed to `arm` with exact outcome counts: the first `engaged` reach turn 3, the first `qualified` are
    warm, the first `handoff` are offered a hand-off and the first `booked` of those book; the first `fallbacks` have one
    fallback turn; the first `delivered`/`failed` hand-offs were delivered / failed. `prior`: each session was already warm
    and offered a hand-off on a turn before its exposure (which must not count)."""
    rows = []
    for i in range(n):
        sid, t0 = str(uuid.uuid4()), DAY0 + timedelta(days=day, minutes=i % 600)
        first = 3 if prior else 1
        last = 3 if prior else max(turns, 3 if i < engaged else 1)
        ev = []
        if prior: ev += [('session_started', 1, {'lead_level': 'hot'}), ('handoff_proposed', 2, {'lead_level': 'hot'})]
        ev.append(('experiment_exposure', first, {'experiment': experiment, 'arm': arm, 'flag': 'f', 'target': 't', 'subject': 'session'}))
        for t in range(first, last + 1):
            main = 'handoff_proposed' if i < handoff and t == last else 'session_started' if t == 1 else 'turn_completed'
            ev.append((main, t, {'lead_level': 'warm' if i < qualified and t == last else 'cold', 'route': 'respond'}))
        if i < fallbacks: ev.append(('llm_generation_failure', last, {'error': 'TimeoutError'}))
        if i < delivered: ev.append(('handoff_delivered', None, {}))
        elif i < delivered + failed: ev.append(('handoff_total_failure', None, {}))
        if i < min(booked, handoff): ev.append(('booking_confirmed', None, {}))
        rows += [(sid, e, t, json.dumps(p), t0 + timedelta(seconds=10 * j)) for j, (e, t, p) in enumerate(ev)]
    async with conn.cursor().copy('COPY analytics_events (session_id, event_type, turn_index, payload, created_at) FROM STDIN') as cp:
        for r in rows: await cp.write_row(r)


async def test_metrics_per_arm_from_events_exact_counts(db):
    url, pool = db
    await running(pool, 'copy_test', 'proposal_copy')
    async with pool.connection() as conn:
        await sessions(conn, 'copy_test', 'standard', 200, engaged=80, qualified=50, handoff=30, booked=6, day=0)
        await sessions(conn, 'copy_test', 'standard', 100, engaged=40, qualified=10, handoff=20, booked=9, day=2)
        await sessions(conn, 'copy_test', 'short', 310, engaged=150, qualified=93, handoff=62, booked=31, fallbacks=7,
                       delivered=40, failed=4, turns=2, day=1)
        await sessions(conn, 'copy_test', 'short', 20, prior=True)              # warm and offered before the exposure: not credited
        await sessions(conn, 'other_exp', 'short', 50, engaged=50, handoff=50)   # another experiment's sessions
        dup = str(uuid.uuid4())                                                # an exposure recorded twice counts once
        for _ in range(2):
            await conn.execute("INSERT INTO analytics_events (session_id, event_type, turn_index, payload, created_at) VALUES "
                               "(%s, 'experiment_exposure', 1, %s, %s)",
                               [dup, json.dumps({'experiment': 'copy_test', 'arm': 'short'}), DAY0 + timedelta(days=1)])
        res = await experiment_results(conn, 'copy_test')
    std, short = res.arm('standard'), res.arm('short')
    assert [a.arm for a in res.arms] == ['standard', 'short'] and std.control and not short.control
    assert (std.n, std.counts) == (300, {'engaged': 120, 'qualified': 60, 'handoff': 50, 'booked': 15})
    # 'prior' sessions: exposed on turn 3 (engaged) but warm and offered only before it
    assert (short.n, short.counts) == (331, {'engaged': 170, 'qualified': 93, 'handoff': 62, 'booked': 31})
    turns = 150 * 3 + 160 * 2 + 20 * 1                      # engaged sessions took 3 turns, the others 2; 'prior' ones 1 after exposure
    assert (short.turns, short.fallbacks, short.deliveries, short.delivery_failures) == (turns, 7, 44, 4)
    assert short.fallback_rate == pytest.approx(7 / turns) and short.delivery_failure_rate == pytest.approx(4 / 44)
    assert short.intervals['booked'] == pytest.approx(wilson_interval(31, 331))
    c = short.vs_control['booked']
    assert c.p_value == pytest.approx(two_proportion_test(31, 331, 15, 300).p_value) and std.vs_control['booked'] is None
    row = {r['arm']: r for r in res.table()}['short']
    assert (row['n'], row['booked'], row['booked_rate'], row['booked_p']) == (331, 31, pytest.approx(31 / 331), pytest.approx(c.p_value))
    assert row['share'] == pytest.approx(331 / 631) and row['control'] is False
    # per day (2, 3, 4 November), cumulative: the 'prior' sessions on day 0, the rest of short on day 1, standard grows on day 2
    over = [(r['day'].day, r['arm'], r['n'], r['booked']) for r in await _over(pool, 'copy_test')]
    assert over == [(2, 'standard', 200, 6), (2, 'short', 20, 0), (3, 'standard', 200, 6), (3, 'short', 331, 31),
                    (4, 'standard', 300, 15), (4, 'short', 331, 31)]
    assert not res.srm.mismatch and res.srm.observed == {'standard': 300, 'short': 331}


async def _over(pool, name):
    async with pool.connection() as conn: return await results_over_time(conn, name)


async def test_results_as_of_a_moment_leave_out_later_events(db):
    _, pool = db
    await running(pool, 'asof_test', 'booking_flow')
    async with pool.connection() as conn:
        await sessions(conn, 'asof_test', 'slots_in_chat', 30, handoff=10, day=0)
        await sessions(conn, 'asof_test', 'handoff_only', 40, handoff=20, day=5)
        early = await experiment_results(conn, 'asof_test', now=DAY0 + timedelta(days=1))
        late = await experiment_results(conn, 'asof_test')
    assert [(a.arm, a.n) for a in early.arms] == [('slots_in_chat', 30), ('handoff_only', 0)]
    assert [(a.arm, a.n, a.counts['handoff']) for a in late.arms] == [('slots_in_chat', 30, 10), ('handoff_only', 40, 20)]


async def test_srm_on_10000_exposures_55_45_fires_and_5010_4990_does_not(db):
    _, pool = db
    await running(pool, 'srm_bad', 'proposal_copy')
    await running(pool, 'srm_ok', 'booking_flow')
    async with pool.connection() as conn:
        for name, a, b, split in [('srm_bad', 'standard', 'short', 5500), ('srm_ok', 'slots_in_chat', 'handoff_only', 5010)]:
            await conn.execute("INSERT INTO analytics_events (session_id, event_type, turn_index, payload) "
                               "SELECT %s::text || g, 'experiment_exposure', 1, jsonb_build_object('experiment', %s::text, 'arm', "
                               "CASE WHEN g <= %s::int THEN %s::text ELSE %s::text END) FROM generate_series(1, 10000) g",
                               [name, name, split, a, b])
        await fl.set_ramp(conn, 'srm_ok_flag', 50, by='cli:ops')        # a ramp shrinks every arm alike: still tested
        bad, ok = await experiment_results(conn, 'srm_bad'), await experiment_results(conn, 'srm_ok')
    assert bad.srm.mismatch and bad.srm.p_value < 1e-20 and bad.srm.observed == {'standard': 5500, 'short': 4500}
    assert 'Sample ratio mismatch' in render_text(bad)
    assert not ok.srm.mismatch and ok.srm.p_value == pytest.approx(0.8415, abs=1e-4) and 'SRM: ok' in render_text(ok)


async def test_unknown_experiment_says_the_closest_name_and_a_shadow_experiment_has_no_arms(db):
    _, pool = db
    await running(pool, 'short_copy', 'proposal_copy', go=False)
    async with pool.connection() as conn:
        with pytest.raises(UnknownExperimentError, match='did you mean short_copy'): await experiment_results(conn, 'short_cpy')
        await create_experiment(conn, Experiment('hot_rule', 'routing', kind='shadow', policy={'hot_lead_rule': 'two_of_three'}), by='test')
        with pytest.raises(ExperimentError, match='shadow experiment'): await experiment_results(conn, 'hot_rule')


async def test_an_experiment_nobody_was_exposed_to_is_an_honest_empty_result(db):
    _, pool = db
    await running(pool, 'quiet', 'prompt_layer', go=False)
    async with pool.connection() as conn:
        res = await experiment_results(conn, 'quiet')
        assert await results_over_time(conn, 'quiet') == [] and await arm_days(conn, 'quiet') == []
        assert await evaluate_guardrails(conn, res.experiment) == []
    assert [(a.arm, a.n) for a in res.arms] == [('standard', 0), ('concise', 0)] and res.exposed == 0
    for a in res.arms:
        assert a.rate('booked') is None and a.intervals['booked'] is None and a.vs_control['booked'] is None
        assert a.fallback_rate is None and a.delivery_failure_rate is None
    assert all(r['share'] is None and r['booked_rate'] is None for r in res.table())
    assert (res.srm.mismatch, res.srm.note) == (False, 'no sessions exposed yet')
    assert 'no sessions exposed yet' in render_text(res)
    json.dumps(res.to_json(), default=str)                 # serialisable, no NaN or inf


async def test_a_variation_removed_mid_experiment_keeps_its_sessions_and_the_split_is_not_tested(db):
    _, pool = db
    await running(pool, 'three_way', 'stall_threshold', weights=(0.5, 0.5))
    async with pool.connection() as conn:
        await sessions(conn, 'three_way', '6', 500)
        await sessions(conn, 'three_way', '3', 300, fallbacks=100)
        await fl.remove_variation(conn, 'three_way_flag', 3, by='test')
        res = await experiment_results(conn, 'three_way')
    assert [(a.arm, a.n, a.removed) for a in res.arms] == [('6', 500, False), ('3', 300, True)]
    assert not res.srm.mismatch and 'was removed during the experiment' in res.srm.note and res.srm.p_value is None
    # a third of its turns fell back, but the removed arm is served the control already: nothing to halt
    assert res.arm('3').fallback_rate == pytest.approx(1 / 3) and guardrail_breaches(res) == []
    assert await check_guardrails(pool) == []


async def test_weights_edited_mid_experiment_are_not_read_as_a_sample_ratio_mismatch(db):
    _, pool = db
    await running(pool, 'reweighted', 'proposal_copy')
    async with pool.connection() as conn:
        await sessions(conn, 'reweighted', 'standard', 5500)
        await sessions(conn, 'reweighted', 'short', 4500)
        assert (await experiment_results(conn, 'reweighted')).srm.mismatch                  # before the edit: a mismatch
        f = await fl.get_flag(conn, 'reweighted_flag')
        await fl.update_flag(conn, 'reweighted_flag', 'reweight', by='cli:ops',
                             variations=tuple(fl.Variation(v.value, w) for v, w in zip(f.variations, (0.6, 0.4))))
        res = await experiment_results(conn, 'reweighted')
    assert not res.srm.mismatch and 'changed during the experiment (by cli:ops' in res.srm.note and res.srm.p_value is None
    assert [(a.arm, a.n) for a in res.arms] == [('standard', 5500), ('short', 4500)]


# ---------------------------------------------------------------------------------------------------------- guardrails

async def test_guardrail_halts_an_arm_whose_fallback_rate_is_too_high_audited_logged_and_alerted(db):
    url, pool = db
    await running(pool, 'flaky_flow', 'booking_flow')             # defaults: max_fallback_rate 5 %, min_sessions 200
    await running(pool, 'healthy_copy', 'proposal_copy')
    async with pool.connection() as conn:
        await sessions(conn, 'flaky_flow', 'slots_in_chat', 250, fallbacks=5)
        await sessions(conn, 'flaky_flow', 'handoff_only', 250, fallbacks=50)       # 20 % of turns fell back
        await sessions(conn, 'healthy_copy', 'standard', 250, fallbacks=5)
        await sessions(conn, 'healthy_copy', 'short', 250, fallbacks=7)             # 2.8 %: fine
        flagstore = await fl.load_store(pool)
    before = await ex.load_store(pool, flags=flagstore)
    visitor = SessionState(session_id=str(uuid.uuid4()), experiments={'flaky_flow': 'handoff_only'})
    assert ex.arm_value(visitor, 'booking_flow', 'slots_in_chat', before) == 'handoff_only'
    with SlackReceiver() as rx, structlog.testing.capture_logs() as logs:
        alert = slack_alert(Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid',
                                     handoff_channels='crm', slack_webhook_url=rx.webhook_url))
        halts = await check_guardrails(pool, alert=alert)
        again = await check_guardrails(pool, alert=alert)             # halted already: no second halt, no second alert
        posted = rx.bodies('/services/')
    assert [(h.experiment, h.arm, [b.rule for b in h.breaches]) for h in halts] == [('flaky_flow', 'handoff_only', ['max_fallback_rate'])]
    assert again == []
    (e,) = q(url, "SELECT * FROM experiments WHERE name = 'flaky_flow'")
    assert (e['status'], e['halted_arm'], e['updated_by']) == ('halted', 'handoff_only', 'guardrail')
    assert 'fallback rate 20.00% of 250 turns > 5.00%' in e['halt_reason']
    assert q(url, "SELECT status FROM experiments WHERE name = 'healthy_copy'")[0]['status'] == 'running'
    audit = q(url, "SELECT * FROM experiment_audit WHERE experiment = 'flaky_flow' AND action = 'halt'")
    assert [(a['by'], a['old']['status'], a['new']['status'], a['new']['halted_arm']) for a in audit] == \
        [('guardrail', 'running', 'halted', 'handoff_only')]
    halted = [l for l in logs if l['event'] == 'experiment_arm_halted']
    assert [(l['alert'], l['experiment'], l['arm'], l['log_level']) for l in halted] == [(True, 'flaky_flow', 'handoff_only', 'warning')]
    assert 'fallback rate' in halted[0]['reason'] and 'session_id' not in halted[0]
    assert len(posted) == 1 and 'flaky_flow' in posted[0]['text'] and '`handoff_only` halted' in posted[0]['text']
    # all traffic to control: the session that held the harmful arm is served the control from the next refresh
    after = await ex.load_store(pool, flags=flagstore)
    assert ex.arm_value(visitor, 'booking_flow', 'slots_in_chat', after) == 'slots_in_chat'


async def test_guardrail_halts_a_significant_conversion_drop_and_not_a_small_or_noisy_one(db):
    url, pool = db
    g = {'metric': 'handoff', 'max_conversion_drop': 0.25, 'min_sessions': 200, 'alpha': 0.05}
    await running(pool, 'worse_copy', 'proposal_copy', guardrails=g)
    await running(pool, 'slight_flow', 'booking_flow', guardrails=g)
    await running(pool, 'few_prompt', 'prompt_layer', guardrails=g)
    async with pool.connection() as conn:
        await sessions(conn, 'worse_copy', 'standard', 400, handoff=120)           # 30 %
        await sessions(conn, 'worse_copy', 'short', 400, handoff=60)               # 15 %: −50 %, p ≪ 0.05
        await sessions(conn, 'slight_flow', 'slots_in_chat', 400, handoff=120)     # 30 %
        await sessions(conn, 'slight_flow', 'handoff_only', 400, handoff=100)      # 25 %: −17 %, under the bound
        await sessions(conn, 'few_prompt', 'standard', 150, handoff=60)
        await sessions(conn, 'few_prompt', 'concise', 150, handoff=10)             # a big drop, under min_sessions
        found = {n: await evaluate_guardrails(conn, await ex.get_experiment(conn, n)) for n in ('worse_copy', 'slight_flow', 'few_prompt')}
    assert [(b.arm, b.rule, round(b.observed, 2)) for b in found['worse_copy']] == [('short', 'max_conversion_drop', 0.5)]
    assert found['slight_flow'] == [] and found['few_prompt'] == []
    halts = await check_guardrails(pool, by='guardrail')
    assert [(h.experiment, h.arm) for h in halts] == [('worse_copy', 'short')]
    status = {r['name']: r['status'] for r in q(url, 'SELECT name, status FROM experiments')}
    assert status == {'worse_copy': 'halted', 'slight_flow': 'running', 'few_prompt': 'running'}
    assert 'one-sided p' in q(url, "SELECT halt_reason FROM experiments WHERE name = 'worse_copy'")[0]['halt_reason']


async def test_two_processes_checking_at_once_halt_and_alert_once(db):
    url, pool = db
    await running(pool, 'race_flow', 'booking_flow')
    async with pool.connection() as conn:
        await sessions(conn, 'race_flow', 'slots_in_chat', 220)
        await sessions(conn, 'race_flow', 'handoff_only', 220, fallbacks=60)
    sent = []
    async def alert(text): sent.append(text)
    other = await create_pool(url, max_size=2)
    try: a, b = await asyncio.gather(check_guardrails(pool, alert=alert), check_guardrails(other, alert=alert))
    finally: await other.close()
    assert sorted([len(a), len(b)]) == [0, 1] and len(sent) == 1
    assert len(q(url, "SELECT * FROM experiment_audit WHERE experiment = 'race_flow' AND action = 'halt'")) == 1


async def test_slack_alert_with_the_bot_token_posts_to_the_channel_and_a_failed_post_leaves_the_halt(db):
    url, pool = db
    await running(pool, 'bot_flow', 'booking_flow')
    async with pool.connection() as conn:
        await sessions(conn, 'bot_flow', 'slots_in_chat', 220)
        await sessions(conn, 'bot_flow', 'handoff_only', 220, fallbacks=60)
    base = dict(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm')
    assert slack_alert(Settings(**base)) is None                              # not configured: the log line is the alert
    with SlackReceiver() as rx:
        rx.script(status(500))
        alert = slack_alert(Settings(**base, slack_bot_token='xoxb-test-token', slack_channel='C0ALERTS', slack_api_url=rx.api_url))
        with structlog.testing.capture_logs() as logs:
            halts = await check_guardrails(pool, alert=alert)                # Slack answers 500: logged, the halt stands
        assert [h.arm for h in halts] == ['handoff_only']
        assert [l['event'] for l in logs if l['event'] in ('experiment_arm_halted', 'experiment_alert_failed')] == \
            ['experiment_arm_halted', 'experiment_alert_failed']
        assert await alert('*hello* <!channel>') is True                    # the next post goes through
        req = rx.requests[-1]
    assert req['path'] == '/api/chat.postMessage' and req['auth'] == 'Bearer xoxb-test-token'
    assert req['body']['channel'] == 'C0ALERTS' and req['body']['text'] == '*hello* <!channel>'
    assert q(url, "SELECT status FROM experiments WHERE name = 'bot_flow'")[0]['status'] == 'halted'


async def test_the_alert_text_cannot_mention_the_channel():
    from leadchat.results import Halt, alert_text
    text = alert_text(Halt('x', '<!channel>', 'a & b', ()), control='<@U1>')
    assert '<!channel>' not in text and '&lt;!channel&gt;' in text and '&lt;@U1&gt;' in text and 'a &amp; b' in text


async def test_run_guardrails_halts_in_the_loop_logs_errors_and_stops(db):
    url, pool = db
    await running(pool, 'loop_flow', 'booking_flow')
    async with pool.connection() as conn:
        await sessions(conn, 'loop_flow', 'slots_in_chat', 220)
        await sessions(conn, 'loop_flow', 'handoff_only', 220, fallbacks=60)
    async def follower(): return False
    stop_ = asyncio.Event()
    task = asyncio.create_task(run_guardrails(pool, stop=stop_, interval=0.02, leader=follower))
    await asyncio.sleep(0.3)                                       # not the leader: checks nothing
    stop_.set()
    await asyncio.wait_for(task, 5)
    assert q(url, "SELECT status FROM experiments WHERE name = 'loop_flow'")[0]['status'] == 'running'
    async def leads(): return True
    stop_ = asyncio.Event()
    task = asyncio.create_task(run_guardrails(pool, stop=stop_, interval=0.05, leader=leads))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if q(url, "SELECT status FROM experiments WHERE name = 'loop_flow'")[0]['status'] == 'halted': break
    assert q(url, "SELECT status FROM experiments WHERE name = 'loop_flow'")[0]['status'] == 'halted'
    stop_.set()
    await asyncio.wait_for(task, 5)
    broken = await create_pool(url, max_size=1)
    await broken.close()                                          # every check now fails: logged, the loop goes on
    stop_ = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run_guardrails(broken, stop=stop_, interval=0.02))
        await asyncio.sleep(0.2)
        stop_.set()
        await asyncio.wait_for(task, 5)
    assert sum(l['event'] == 'guardrails_failure' for l in logs) >= 2 and logs[-1]['event'] == 'guardrails_stopped'


async def test_a_stopped_or_draft_experiment_is_not_halted(db):
    url, pool = db
    await running(pool, 'done_flow', 'booking_flow')
    async with pool.connection() as conn:
        await sessions(conn, 'done_flow', 'slots_in_chat', 220)
        await sessions(conn, 'done_flow', 'handoff_only', 220, fallbacks=60)
        await stop(conn, 'done_flow', by='test')
    assert await check_guardrails(pool) == []
    assert q(url, "SELECT status FROM experiments WHERE name = 'done_flow'")[0]['status'] == 'stopped'


# ------------------------------------------------------------------------------------------------------------------ CLI

@pytest.fixture
def cli_env(db, pg, tmp_path):
    url, _ = db
    env = tmp_path / 'results.env'
    env.write_text(f'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
                   f'DATABASE_URL={url}\nLEADCHAT_HOME={pg[0].leadchat_home}\n')
    return env


def _cli(*args):
    app = typer.Typer()
    app.command('results')(results_command)
    app.command('other')(lambda: None)                    # two commands: `results` is a subcommand, as under `leadchat experiments`
    return CliRunner().invoke(app, ['results', *args])


async def test_cli_prints_the_table_and_json_and_refuses_unknown_names(db, cli_env):
    _, pool = db
    await running(pool, 'cli_copy', 'proposal_copy')
    async with pool.connection() as conn:
        await sessions(conn, 'cli_copy', 'standard', 300, handoff=30, booked=10)
        await sessions(conn, 'cli_copy', 'short', 310, handoff=45, booked=20)
    out = await asyncio.to_thread(_cli, 'cli_copy', '-e', str(cli_env))
    assert out.exit_code == 0, out.output
    assert 'experiment cli_copy: running' in out.stdout and 'Meeting booked' in out.stdout and 'standard (control)' in out.stdout
    assert 'SRM: ok' in out.stdout and '95% CI' in out.stdout
    js = await asyncio.to_thread(_cli, 'cli_copy', '--json', '-e', str(cli_env))
    data = json.loads(js.stdout)
    assert data['exposed'] == 610 and [(a['arm'], a['n'], a['booked']) for a in data['arms']] == [('standard', 300, 10), ('short', 310, 20)]
    assert data['srm']['mismatch'] is False and data['arms'][1]['booked_p'] == pytest.approx(two_proportion_test(20, 310, 10, 300).p_value)
    bad = await asyncio.to_thread(_cli, 'cli_cpy', '-e', str(cli_env))
    assert bad.exit_code == 1 and 'did you mean cli_copy?' in bad.output
    tz = await asyncio.to_thread(_cli, 'cli_copy', '--tz', 'Mars/Olympus', '-e', str(cli_env))
    assert tz.exit_code == 1 and 'is not a time zone' in tz.output
    if _mounted():                                      # `leadchat experiments results` as an operator runs it
        clean = {k: v for k, v in os.environ.items() if k != 'LEADCHAT_ENV_FILE'}
        run = lambda *a: subprocess.run([LEADCHAT, 'experiments', 'results', *a, '-e', str(cli_env)], capture_output=True,
                                        text=True, timeout=120, env=clean)
        real, wrong = await asyncio.gather(asyncio.to_thread(run, 'cli_copy'), asyncio.to_thread(run, 'cli_cpy'))
        assert real.returncode == 0 and 'Meeting booked' in real.stdout and 'SRM: ok' in real.stdout, real.stderr
        assert wrong.returncode == 1 and 'did you mean cli_copy?' in wrong.stderr


def _mounted() -> bool:
    from leadchat.cli import app
    group = next((g for g in app.registered_groups if g.name == 'experiments'), None)
    return group is not None and any(c.name == 'results' for c in group.typer_instance.registered_commands)


def test_build_results_without_a_flag_still_reports_and_says_why_no_srm():
    e = Experiment('orphan', 'proposal_copy', 'gone_flag', status='running')
    day = dict(day=DAY0.date(), arm='short', n=10, engaged=1, qualified=1, handoff=1, booked=0, turns=10, fallbacks=0,
               deliveries=0, delivery_failures=0)
    res = build_results(e, None, [day])
    assert [(a.arm, a.n) for a in res.arms] == [('short', 10)] and res.arm('short').vs_control['booked'] is None
    assert not res.srm.mismatch and 'the flag is gone' in res.srm.note
