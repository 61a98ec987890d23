"The scenario suite: scripted conversations over HTTP, the expected state checked after every turn."
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import yaml

from apiserver import LiveServer
from conftest import fresh_db
from leadchat.api import create_app
from test_api import TOKEN, app_settings, turn

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = yaml.safe_load((Path(__file__).parent / 'scenarios' / 'conversations.yaml').read_text())
CLOCKS = {'in_hours': datetime(2026, 1, 12, 9, 0, tzinfo=timezone.utc),       # Monday 10:00 Madrid
          'outside_hours': datetime(2026, 1, 17, 10, 0, tzinfo=timezone.utc),  # Saturday 11:00 Madrid
          'after_cutoff': datetime(2026, 1, 14, 15, 30, tzinfo=timezone.utc)}  # Wednesday 16:30 Madrid


class Clock:
    "A settable clock for the app (business hours must not depend on when the tests run)."
    now = CLOCKS['in_hours']
    def __call__(self): return self.now


CLOCK = Clock()


@pytest.fixture(scope='module')
def api(pg):
    url = fresh_db(pg[1])
    with LiveServer(create_app(app_settings(pg, url), clock=CLOCK, knowledge_path=str(ROOT / 'knowledge'))) as srv:
        srv.db_url = url
        yield srv


STATE_KEYS = {'lead_level', 'turn_counter', 'stage3_proposals_issued', 'visitor_email', 'is_consultant', 'referral_mentioned'}
QUAL_KEYS = {'problem_fit', 'authority_fit', 'company_fit', 'timing_fit', 'is_negative_persona', 'is_no_fit'}


def check(expect: dict, reply: str, done: dict, detail: dict, outbox: list[str], where: str):
    st = detail['state']
    for k, v in expect.items():
        if k == 'stage': got = done['stage']
        elif k == 'proposed': got = done['handoff_reason'] is not None
        elif k == 'handoff_reason': got = done['handoff_reason']
        elif k == 'turn_index': got = done['turn_index']
        elif k in QUAL_KEYS: got = st['qualification'][k]
        elif k in STATE_KEYS: got = st[k]
        elif k == 'event': got = detail['events_this_turn'][0]
        elif k == 'outbox': got, v = sorted(outbox), sorted(v)
        elif k == 'window_messages': got = len(st['messages'])
        elif k == 'first_window_turn': got = st['messages'][0]['turn_index']
        elif k == 'reply_contains':
            for s in v: assert s.lower() in reply.lower(), f'{where}: reply lacks {s!r}: {reply!r}'
            continue
        elif k == 'reply_excludes':
            for s in v: assert s.lower() not in reply.lower(), f'{where}: reply has {s!r}: {reply!r}'
            continue
        else: raise KeyError(f'{where}: unknown expectation {k}')
        assert got == v, f'{where}: {k} is {got!r}, expected {v!r}\nreply: {reply!r}'


@pytest.mark.parametrize('scenario', SCENARIOS, ids=[s['name'] for s in SCENARIOS])
def test_scenario(api, scenario):
    CLOCK.now = CLOCKS[scenario.get('clock', 'in_hours')]
    sid = str(uuid.uuid4())
    auth = {'Authorization': f'Bearer {TOKEN}'}
    with api.client() as c:
        for i, t in enumerate(scenario['turns'], 1):
            status, reply, done, err = turn(c, sid, t['say'])
            where = f"turn {i} ({t['say'][:40]!r})"
            assert status == 200 and err is None and done is not None, f'{where}: {status} {reply} {err}'
            assert done['turn_index'] == i and reply.strip()
            detail = c.get(f'/api/sessions/{sid}', headers=auth).json()
            detail['events_this_turn'] = [e['event_type'] for e in detail['events'] if e['turn_index'] == i
                                          and e['event_type'] in ('session_started', 'turn_completed', 'qualification_changed',
                                                                  'lead_level_changed', 'handoff_proposed', 'contact_captured')]
            with psycopg.connect(api.db_url) as conn:
                outbox = [r[0] for r in conn.execute("SELECT handoff_reason FROM handoff_outbox WHERE session_id = %s AND kind = 'handoff'", [sid])]
            check(t.get('expect', {}), reply, done, detail, outbox, where)
    with psycopg.connect(api.db_url) as conn:    # one lead per session, whatever the conversation did
        assert conn.execute('SELECT count(*) FROM leads WHERE session_id = %s', [sid]).fetchone()[0] <= 1
        assert conn.execute("SELECT count(*) FROM handoff_outbox WHERE session_id = %s AND kind = 'handoff'", [sid]).fetchone()[0] <= 1
