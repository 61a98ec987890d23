"""Issue 19 item 5: shadow routing. `shadow_route` from the visitor's side (each hot-lead rule on a hot lead, a near-hot
lead, a negative persona, an explicit request, a stall threshold below and above live, slot turns mirrored); the empty
policy agrees with the live graph code (`score_router` + `stall_check`, run for real) on every state of a grid;
`check_policy` refuses what it does not know; `disagreement` / `disagreement_examples` read the events back from the
embedded PostgreSQL (nothing yet, one count per turn, hostile input refused)."""
import asyncio
import itertools
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import fresh_db
from leadchat.db import migrate
from leadchat.graph import score_router, stall_check
from leadchat.shadow import (HOT_LEAD_RULES, check_policy, disagreement, disagreement_examples, pairs_figure,
                             shadow_decision, shadow_experiments, shadow_route)
from leadchat.state import QualificationState as Q, SessionState

LIVE_THRESHOLD = 6
HOT = Q(problem_fit='confirmed', authority_fit='confirmed', company_fit='partially_confirmed')
NEAR = Q(problem_fit='confirmed', authority_fit='confirmed')                       # no company, no timing
PROBLEM_TIMING = Q(problem_fit='confirmed', timing_fit='confirmed')               # no authority
WARM = Q(problem_fit='partially_confirmed', authority_fit='confirmed', timing_fit='confirmed')
COMPETITOR = HOT.model_copy(update={'is_negative_persona': True, 'negative_persona_kind': 'competitor'})
STUDENT = NEAR.model_copy(update={'is_no_fit': True, 'no_fit_reason': 'academic'})


def visitor(q=Q(), **kw) -> SessionState: return SessionState(session_id='visitor-1', qualification=q, **kw)


# (the visitor, state after extraction, live route, turn counter after this turn, policy, shadow route)
CASES = [
    # a hot lead: every rule proposes, as live
    *[(f'hot lead ({r})', visitor(HOT), 'hot_lead', 2, {'hot_lead_rule': r}, 'hot_lead') for r in HOT_LEAD_RULES],
    ('hot lead already proposed to this session', visitor(HOT, handoff_reason='hot_lead', stage3_proposals_issued=1),
     'respond', 2, {'hot_lead_rule': 'two_of_three'}, 'respond'),
    ('hot lead after a stall proposal (live proposes again)', visitor(HOT, handoff_reason='stall', stage3_proposals_issued=1),
     'hot_lead', 2, {'hot_lead_rule': 'problem_and_authority'}, 'hot_lead'),
    # a near-hot lead: the looser rules propose where live answers
    ('near-hot, CEO with a confirmed problem (all_three)', visitor(NEAR), 'respond', 3, {'hot_lead_rule': 'all_three'}, 'respond'),
    ('near-hot, CEO with a confirmed problem (problem_and_authority)', visitor(NEAR), 'respond', 3, {'hot_lead_rule': 'problem_and_authority'}, 'hot_lead'),
    ('near-hot, CEO with a confirmed problem (two_of_three)', visitor(NEAR), 'respond', 3, {'hot_lead_rule': 'two_of_three'}, 'hot_lead'),
    ('near-hot, problem and timing but no authority (problem_and_authority)', visitor(PROBLEM_TIMING), 'respond', 3, {'hot_lead_rule': 'problem_and_authority'}, 'respond'),
    ('near-hot, problem and timing but no authority (two_of_three)', visitor(PROBLEM_TIMING), 'respond', 3, {'hot_lead_rule': 'two_of_three'}, 'hot_lead'),
    ('warm: problem only partly confirmed (two_of_three)', visitor(WARM), 'respond', 3, {'hot_lead_rule': 'two_of_three'}, 'hot_lead'),
    ('warm: problem only partly confirmed (problem_and_authority)', visitor(WARM), 'clarify', 3, {'hot_lead_rule': 'problem_and_authority'}, 'clarify'),
    ('near-hot on the live stall turn, candidate stalls at 8 and keeps the all_three rule', visitor(NEAR, turn_counter=5),
     'stall', 6, {'stall_threshold': 8}, 'respond'),
    # negative persona / no-fit: never a hot lead, whatever the rule
    *[(f'a competitor with all three ({r})', visitor(COMPETITOR), 'respond', 3, {'hot_lead_rule': r}, 'respond') for r in HOT_LEAD_RULES],
    *[(f'a student with problem and authority ({r})', visitor(STUDENT), 'respond', 3, {'hot_lead_rule': r}, 'respond') for r in HOT_LEAD_RULES],
    # an explicit request wins over everything, as live (even for a competitor)
    ('asks for a person on turn 1', visitor(explicit_human_request=True), 'explicit_request', 1,
     {'hot_lead_rule': 'two_of_three', 'stall_threshold': 2}, 'explicit_request'),
    ('a competitor asks for a person', visitor(COMPETITOR, explicit_human_request=True), 'explicit_request', 3, {}, 'explicit_request'),
    # the stall threshold lower and higher than live (6)
    ('4th quiet turn, candidate stalls at 4', visitor(turn_counter=3), 'respond', 4, {'stall_threshold': 4}, 'stall'),
    ('5th quiet turn, candidate stalls at 4 (live has not yet)', visitor(turn_counter=4), 'respond', 5, {'stall_threshold': 4}, 'stall'),
    ('3rd quiet turn, candidate stalls at 4', visitor(turn_counter=2), 'respond', 3, {'stall_threshold': 4}, 'respond'),
    ('6th quiet turn, live stalls, candidate waits until 8', visitor(turn_counter=5), 'stall', 6, {'stall_threshold': 8}, 'respond'),
    ('8th quiet turn, candidate at 8 stalls', visitor(turn_counter=7), 'respond', 8, {'stall_threshold': 8}, 'stall'),
    ('6th quiet turn, live stalls, same threshold', visitor(turn_counter=5), 'stall', 6, {'stall_threshold': 6}, 'stall'),
    ('quiet turns after a proposal: no stall again', visitor(turn_counter=4, stage3_proposals_issued=1, handoff_reason='stall'),
     'respond', 5, {'stall_threshold': 2}, 'respond'),
    ('a quiet clarifying turn, candidate stalls', visitor(turn_counter=3), 'clarify', 4, {'stall_threshold': 3}, 'stall'),
    # slot turns and model failures are mirrored, whatever the candidate would do
    ('picks an offered slot', visitor(HOT, turn_counter=7), 'book_slot', 8, {'hot_lead_rule': 'two_of_three', 'stall_threshold': 2}, 'book_slot'),
    ('asks for other times', visitor(NEAR, turn_counter=7), 'offer_slots', 8, {'hot_lead_rule': 'two_of_three', 'stall_threshold': 2}, 'offer_slots'),
    ('the model failed', visitor(NEAR, turn_counter=7), 'llm_failure', 8, {'hot_lead_rule': 'two_of_three', 'stall_threshold': 2}, 'llm_failure'),
]


@pytest.mark.parametrize('what,state,live,counter,policy,want', CASES, ids=[c[0] for c in CASES])
def test_shadow_route_from_the_visitors_side(what, state, live, counter, policy, want):
    policy = check_policy(policy)
    assert shadow_route(state, live=live, counter=counter, settings_threshold=LIVE_THRESHOLD, policy=policy) == want
    d = shadow_decision('candidate', policy, state, live=live, counter=counter, settings_threshold=LIVE_THRESHOLD)
    assert d == {'experiment': 'candidate', 'route': want, 'live': live, 'agree': want == live}


def test_clarify_is_the_readers_call_not_the_policys():
    "On a turn the live policy proposed on, the graph tells the shadow that the answer would have been a question."
    s = visitor(NEAR, turn_counter=5)
    assert shadow_route(s, live='stall', counter=6, settings_threshold=6, policy={'stall_threshold': 9}, clarify=True) == 'clarify'
    assert shadow_route(s, live='stall', counter=6, settings_threshold=6, policy={'stall_threshold': 9}) == 'respond'
    assert shadow_route(s, live='book_slot', counter=6, settings_threshold=6, policy={}, clarify=True) == 'book_slot'


def test_a_policy_does_not_change_between_turns_or_mutate_the_state():
    s = visitor(NEAR, turn_counter=3)
    before = s.model_dump()
    policy = check_policy({'hot_lead_rule': 'two_of_three'})
    assert {shadow_route(s, live='respond', counter=4, settings_threshold=6, policy=policy) for _ in range(50)} == {'hot_lead'}
    assert s.model_dump() == before and policy == {'hot_lead_rule': 'two_of_three'}


# ------------------------------------------------------------------ the live graph code, run for real

LEVELS = ('not_detected', 'partially_confirmed', 'confirmed')
PERSONAS = ({}, {'is_negative_persona': True, 'negative_persona_kind': 'vendor'}, {'is_no_fit': True, 'no_fit_reason': 'solo'})


def grid():
    for p, a, c, t, persona, explicit, reason, proposals, tc, clarify in itertools.product(
            LEVELS, LEVELS, LEVELS, LEVELS, PERSONAS, (False, True), (None, 'hot_lead', 'stall'), (0, 1), (0, 1, 2, 3),
            (None, 'timing_fit')):
        q = Q(problem_fit=p, authority_fit=a, company_fit=c, timing_fit=t, **persona)
        yield SessionState(session_id='grid', qualification=q, explicit_human_request=explicit, handoff_reason=reason,
                           stage3_proposals_issued=proposals, turn_counter=tc), clarify


async def live_route(state: SessionState, clarify, threshold: int) -> str:
    "The live route as leadchat.graph takes it: score_router, then (when it did not propose) stall_check."
    ctx = SimpleNamespace(slot_request=None, slot_refused=False, slot_expired=False, slot_choice=None, signals={},
                          clarify=clarify, failed=None, settings=SimpleNamespace(stall_turn_threshold=threshold),
                          route=None, reason=None, routing=None)
    rt = SimpleNamespace(context=ctx)
    await score_router(state, rt)
    if ctx.route != 'propose': await stall_check(state, rt)
    return ctx.routing['selected']


def test_the_empty_policy_agrees_with_the_live_graph_on_every_state_and_looser_rules_only_add_hot_leads():
    threshold = 3

    async def go():
        return [(s, c, await live_route(s, c, threshold)) for s, c in grid()]

    seen, checked = set(), 0
    for s, clarify, live in asyncio.run(go()):
        seen.add(live)
        counter = s.turn_counter + 1
        for kw in ({}, {'clarify': clarify is not None}):
            assert shadow_route(s, live=live, counter=counter, settings_threshold=threshold, policy={}, **kw) == live, (s, live)
        for rule in HOT_LEAD_RULES[1:]:
            got = shadow_route(s, live=live, counter=counter, settings_threshold=threshold, policy={'hot_lead_rule': rule},
                               clarify=clarify is not None)
            assert got == live or (got == 'hot_lead' and live in ('respond', 'clarify', 'stall')), (rule, s, live, got)
        for t in (2, 4):
            got = shadow_route(s, live=live, counter=counter, settings_threshold=threshold, policy={'stall_threshold': t},
                               clarify=clarify is not None)
            assert got == live or {got, live} <= {'stall', 'respond', 'clarify'}, (t, s, live, got)
        checked += 1
    assert checked == 81 * 3 * 2 * 3 * 2 * 4 * 2
    assert seen == {'explicit_request', 'hot_lead', 'stall', 'respond', 'clarify'}        # the grid reaches every route


# ------------------------------------------------------------------ bad policies (EXP validates shadow experiments with this)

@pytest.mark.parametrize('bad,says', [
    ({'hot_lead_rule': 'any_two'}, 'unknown hot_lead_rule'),
    ({'hot_lead_rule': 'two_of_tree'}, "did you mean 'two_of_three'"),
    ({'hot_lead_rule': None}, 'use one of all_three, problem_and_authority, two_of_three'),
    ({'hot_lead_rule': ['all_three']}, 'unknown hot_lead_rule'),
    ({'stall_threshold': '4'}, 'whole number'),
    ({'stall_threshold': 4.5}, 'whole number'),
    ({'stall_threshold': 4.0}, 'whole number'),
    ({'stall_threshold': True}, 'whole number'),
    ({'stall_threshold': None}, 'whole number'),
    ({'stall_threshold': 1}, 'from 2 to 20'),
    ({'stall_threshold': 21}, 'from 2 to 20'),
    ({'stall_threshold': 10**40}, 'from 2 to 20'),
    ({'stal_threshold': 4}, "did you mean 'stall_threshold'"),
    ({'routing': 'aggressive'}, 'the keys are hot_lead_rule, stall_threshold'),
    ('two_of_three', 'JSON object'),
    (None, 'JSON object'),
    ([('hot_lead_rule', 'two_of_three')], 'JSON object'),
])
def test_a_bad_policy_is_refused_with_a_clear_message(bad, says):
    with pytest.raises(ValueError, match=None) as e: check_policy(bad)
    assert says in str(e.value)
    assert len(str(e.value)) < 300           # an oversized value is not echoed back whole


def test_a_good_policy_is_normalised():
    assert check_policy({'hot_lead_rule': ' PROBLEM_and_authority', 'stall_threshold': 20}) == \
        {'hot_lead_rule': 'problem_and_authority', 'stall_threshold': 20}
    assert check_policy({}) == {}


# ------------------------------------------------------------------ reading the record (embedded PostgreSQL)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope='module')
def url(pg):
    u = fresh_db(pg[1])
    asyncio.run(migrate(u, pg[0]))
    return u


def insert(url, rows):
    "rows: (session_id, turn_index, event_type, live, shadow route, experiment, minutes after T0)."
    with psycopg.connect(url, autocommit=True) as c:
        for sid, ti, et, live, sh, name, minutes in rows:
            payload = {'lead_level': 'warm', 'route': live, 'routing': {'selected': live, 'why': f'why {live}'}}
            if name: payload['shadow'] = {'experiment': name, 'route': sh, 'live': live, 'agree': sh == live}
            c.execute('INSERT INTO analytics_events (session_id, event_type, turn_index, payload, created_at) '
                      'VALUES (%s, %s, %s, %s::jsonb, %s)', [sid, et, ti, json.dumps(payload), T0 + timedelta(minutes=minutes)])


def read(url, fn, *args, **kw):
    async def go():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as c:
            return await fn(c, *args, **kw)
    return asyncio.run(go())


def test_no_turns_evaluated_yet(url):
    d = read(url, disagreement, 'nobody_ran_me')
    assert (d['turns'], d['disagreements'], d['rate'], d['sessions'], d['pairs']) == (0, 0, None, 0, [])
    assert read(url, disagreement_examples, 'nobody_ran_me') == []


def test_disagreement_counts_each_turn_once_and_by_pair(url):
    insert(url, [
        ('d-1', 1, 'session_started', 'respond', 'respond', 'counting', 0),
        ('d-1', 2, 'qualification_changed', 'respond', 'hot_lead', 'counting', 1),
        ('d-1', 2, 'lead_level_changed', 'respond', 'hot_lead', 'counting', 1),       # the same turn twice: counted once
        ('d-1', 3, 'handoff_proposed', 'hot_lead', 'hot_lead', 'counting', 2),
        ('d-2', 1, 'session_started', 'respond', 'respond', 'counting', 3),
        ('d-2', 2, 'turn_completed', 'respond', 'stall', 'counting', 4),
        ('d-2', 3, 'turn_completed', 'respond', 'stall', 'counting', 5),
        ('d-3', 1, 'session_started', 'book_slot', 'book_slot', 'counting', 6),
        ('d-3', 2, 'turn_completed', 'respond', 'respond', None, 7),                   # no shadow running: not a turn
        ('d-4', 1, 'session_started', 'respond', 'hot_lead', 'another_one', 8),       # another experiment's turn
    ])
    d = read(url, disagreement, 'counting')
    assert (d['turns'], d['disagreements'], d['sessions'], d['sessions_disagreeing']) == (7, 3, 3, 2)
    assert d['rate'] == pytest.approx(3 / 7)
    assert {(p['live'], p['shadow']): (p['turns'], p['sessions'], p['agree']) for p in d['pairs']} == {
        ('respond', 'respond'): (2, 2, True), ('respond', 'hot_lead'): (1, 1, False), ('hot_lead', 'hot_lead'): (1, 1, True),
        ('respond', 'stall'): (2, 1, False), ('book_slot', 'book_slot'): (1, 1, True)}
    assert (d['first'], d['last']) == (T0, T0 + timedelta(minutes=6))
    since = read(url, disagreement, 'counting', since=T0 + timedelta(minutes=4))
    assert (since['turns'], since['disagreements']) == (3, 2)
    fig = pairs_figure(d)
    assert sorted(zip(fig.data[0].y, fig.data[0].x)) == [('respond → hot_lead', 1), ('respond → stall', 2)]


def test_examples_are_the_first_disagreeing_turn_of_each_session_newest_first_without_transcript(url):
    ex = read(url, disagreement_examples, 'counting')
    assert [(e['session_id'], e['turn_index'], e['live'], e['shadow'], e['why']) for e in ex] == [
        ('d-2', 2, 'respond', 'stall', 'why respond'), ('d-1', 2, 'respond', 'hot_lead', 'why respond')]
    assert set(ex[0]) == {'session_id', 'turn_index', 'live', 'shadow', 'why', 'at'}
    assert len(read(url, disagreement_examples, 'counting', limit=1)) == 1


@pytest.mark.parametrize('name', ["x' OR '1'='1", 'Counting', '', None, 7, 'a' * 64, 'counting; DROP TABLE analytics_events'])
def test_a_hostile_experiment_name_is_refused_before_any_query(url, name):
    with pytest.raises(ValueError, match='is not an experiment name'): read(url, disagreement, name)
    with pytest.raises(ValueError, match='is not an experiment name'): read(url, disagreement_examples, name)


@pytest.mark.parametrize('kw,says', [({'since': '2026-03-02'}, 'timezone-aware'), ({'since': datetime(2026, 3, 2)}, 'timezone-aware'),
                                     ({'limit': 0}, 'from 1 to 1000'), ({'limit': '5'}, 'from 1 to 1000'),
                                     ({'limit': True}, 'from 1 to 1000'), ({'limit': 10**6}, 'from 1 to 1000')])
def test_bad_query_arguments_are_refused(url, kw, says):
    with pytest.raises(ValueError, match=says): read(url, disagreement_examples, 'counting', **kw)


def test_shadow_experiments_lists_the_running_one_first(url):
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO experiments (name, kind, target, status, policy, updated_by, started_at, stopped_at) VALUES "
                  "('old_try', 'shadow', 'routing', 'stopped', '{\"stall_threshold\": 4}', 'test', now() - interval '2 days', now() - interval '1 day'), "
                  "('looser_hot', 'shadow', 'routing', 'running', '{\"hot_lead_rule\": \"two_of_three\"}', 'test', now() - interval '3 days', NULL), "
                  "('idea', 'shadow', 'routing', 'draft', '{}', 'test', NULL, NULL)")
    rows = read(url, shadow_experiments)
    assert [r['name'] for r in rows][0] == 'looser_hot' and {r['name'] for r in rows} == {'old_try', 'looser_hot', 'idea'}
    assert rows[0]['policy'] == {'hot_lead_rule': 'two_of_three'}


# ------------------------------------------------------------------ end to end: the real app over HTTP records the shadow

def test_a_running_shadow_policy_is_recorded_on_every_turn_and_changes_nothing_the_visitor_sees(pg):
    "Offline engine, embedded PostgreSQL, real HTTP: a looser policy in shadow; the replies are the live policy's."
    import uuid
    from pathlib import Path
    from apiserver import LiveServer
    from leadchat.api import create_app
    from leadchat.experiments import Experiment, create_experiment, start
    from test_api import app_settings, turn

    async def setup(c):
        await create_experiment(c, Experiment('e2e_looser', 'routing', kind='shadow',
                                              policy={'hot_lead_rule': 'problem_and_authority', 'stall_threshold': 2}), by='test')
        await start(c, 'e2e_looser', by='test')
    url = fresh_db(pg[1])                    # a database of its own: one shadow policy runs at a time
    asyncio.run(migrate(url, pg[0]))
    read(url, setup)
    near, quiet = str(uuid.uuid4()), str(uuid.uuid4())
    app = create_app(app_settings(pg, url), knowledge_path=str(Path(__file__).resolve().parent.parent / 'knowledge'))
    with LiveServer(app) as srv, srv.client() as c:
        for sid, message in [(near, 'Hi! What case studies do you have in fintech?'),
                             (near, "I'm the CTO. We're building a RAG assistant over our support tickets."),   # problem + authority
                             (near, 'Do you work with Python?'),
                             (quiet, 'How long does a typical project take?'), (quiet, 'Do you work with Python?')]:
            status, text, done, err = turn(c, sid, message)
            assert status == 200 and err is None and text.strip(), (status, text, err)
    with psycopg.connect(url, row_factory=dict_row) as c:
        evs = c.execute("SELECT session_id, turn_index, event_type, payload FROM analytics_events "
                        "WHERE session_id = ANY(%s) AND payload ? 'route' ORDER BY id", [[near, quiet]]).fetchall()
    got = [(e['session_id'] == near, e['turn_index'], e['payload']['route'], e['payload']['shadow']) for e in evs]
    assert [(n, t, r, s['live'], s['route'], s['agree']) for n, t, r, s in got] == [
        (True, 1, 'respond', 'respond', 'respond', True),
        (True, 2, 'respond', 'respond', 'hot_lead', False),      # the looser rule would have proposed
        (True, 3, 'respond', 'respond', 'hot_lead', False),      # ... and, from the live history, again
        (False, 1, 'respond', 'respond', 'respond', True),
        (False, 2, 'respond', 'respond', 'stall', False),        # a stall at 2 turns, live waits for 6
    ], got
    assert all(e['event_type'] != 'handoff_proposed' for e in evs)         # nothing was proposed to the visitor
    d = read(url, disagreement, 'e2e_looser')
    assert (d['turns'], d['disagreements'], d['sessions'], d['sessions_disagreeing']) == (5, 3, 2, 2)
    assert [(x['session_id'], x['turn_index'], x['shadow']) for x in read(url, disagreement_examples, 'e2e_looser')] == \
        [(quiet, 2, 'stall'), (near, 2, 'hot_lead')]
