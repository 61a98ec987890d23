"The orchestrator's error table, each row injected into the real app and observed over HTTP."
import asyncio
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from structlog.testing import capture_logs

from apiserver import LiveServer
from leadchat.api import create_app
from leadchat.compose import is_stage3_language
from leadchat.graph import FALLBACK_MESSAGE, REPLY_LOST_MARKER, commit_failure_message
from leadchat.models import OfflineModel
from leadchat.service import turn_lock_key
from test_api import TOKEN, app_settings, turn

ROOT = Path(__file__).resolve().parent.parent


class FaultyModel(OfflineModel):
    "The offline provider with one fault switched on: the way a hosted model fails."
    def __init__(self, fault=None):
        super().__init__()
        self.fault = fault

    async def extract(self, message, state, turn_index):
        if self.fault == 'extract': raise ConnectionError('model endpoint unreachable')
        if self.fault == 'extract_garbage': return {'problem_fit': 'very', 'authority_fit': 12}
        return await super().extract(message, state, turn_index)

    async def respond(self, message, state, retrieve, **kw):
        if self.fault == 'respond': raise RuntimeError('HTTP 529 overloaded')
        if self.fault == 'hang': await asyncio.sleep(30)
        n = 0
        async for tok in super().respond(message, state, retrieve, **kw):
            n += 1
            if self.fault == 'midstream' and n == 4: raise RuntimeError('connection reset mid-stream')
            yield tok


def serve(pg, url, model, **kw):
    return LiveServer(create_app(app_settings(pg, url, **kw), model=model, knowledge_path=str(ROOT / 'knowledge')))


def restricted_url(url: str, revoke: str) -> str:
    "A login role with ordinary rights minus `revoke`: real permission errors inside the app."
    role = f'r_{uuid.uuid4().hex[:8]}'
    with psycopg.connect(url, autocommit=True) as c:
        r = sql.Identifier(role)
        c.execute(sql.SQL('CREATE ROLE {} LOGIN').format(r))
        c.execute(sql.SQL('GRANT USAGE ON SCHEMA public TO {}').format(r))
        c.execute(sql.SQL('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}').format(r))
        c.execute(sql.SQL('GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}').format(r))
        c.execute(sql.SQL(revoke).format(role=r))
    return url.replace('postgres:@', f'{role}:@')


def test_extraction_failure_continues_with_stale_state(pg, kb_url):
    with serve(pg, kb_url, FaultyModel('extract')) as srv, srv.client() as c:
        sid = str(uuid.uuid4())
        with capture_logs() as logs:
            status, reply, done, err = turn(c, sid, "I'm the CTO and we're building a RAG assistant")
        assert status == 200 and err is None and reply.strip() and done['handoff_reason'] is None
        detail = c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}).json()
    assert detail['state']['qualification']['problem_fit'] == 'not_detected'      # stale: nothing extracted
    assert 'state_extraction_failure' in [e['event_type'] for e in detail['events']]
    assert any(l['event'] == 'state_extraction_failure' and l['log_level'] == 'error' for l in logs)


def test_an_invalid_delta_is_discarded(pg, kb_url):
    with serve(pg, kb_url, FaultyModel('extract_garbage')) as srv, srv.client() as c:
        with capture_logs() as logs: status, reply, done, err = turn(c, str(uuid.uuid4()), 'hello')
    assert status == 200 and done['lead_level'] == 'cold'
    assert any(l['event'] == 'state_update_validation_failure' for l in logs)


@pytest.mark.parametrize('fault,event', [('respond', 'llm_generation_failure'), ('midstream', 'llm_generation_failure'),
                                         ('hang', 'stream_timeout')])
def test_generation_failure_or_timeout_gives_the_fallback_and_an_llm_failure_handoff(pg, kb_url, fault, event):
    with serve(pg, kb_url, FaultyModel(fault), llm_stream_timeout_ms=400) as srv, srv.client() as c:
        sid = str(uuid.uuid4())
        status, reply, done, err = turn(c, sid, 'What services do you offer?')
        assert status == 200 and err is None and FALLBACK_MESSAGE in reply
        assert done['handoff_reason'] == 'llm_failure' and done['stage'] == 3
        detail = c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}).json()
    assert event in [e['event_type'] for e in detail['events']]
    with psycopg.connect(kb_url) as conn:
        assert conn.execute('SELECT handoff_reason FROM handoff_outbox WHERE session_id = %s', [sid]).fetchone()[0] == 'llm_failure'


def test_checkpointer_write_failure_completes_the_turn_and_loses_only_that_state(pg, kb_url):
    url = restricted_url(kb_url, 'REVOKE INSERT, UPDATE ON checkpoints, checkpoint_blobs, checkpoint_writes FROM {role}')
    with serve(pg, url, None) as srv, srv.client() as c:
        sid = str(uuid.uuid4())
        with capture_logs() as logs:
            first = turn(c, sid, "We're building a RAG assistant over our support tickets")
            second = turn(c, sid, 'Which vector database did you use for the bank?')
    assert first[0] == second[0] == 200 and first[3] is None and second[3] is None
    assert first[2]['turn_index'] == 1 and second[2]['turn_index'] == 1     # the next turn loaded the last good (empty) state
    failures = [l for l in logs if l['event'] == 'checkpointer_write_failure']
    assert failures and failures[0]['log_level'] == 'error' and failures[0]['session_id'] == sid


def rows(url, q, *args):
    with psycopg.connect(url) as c: return c.execute(q, list(args)).fetchall()


def test_a_handoff_that_cannot_be_stored_is_never_promised(pg, kb_url):
    "Issue 16: the outbox row cannot be written → the visitor gets the fallback (no promise) and an error, never `done`."
    url = restricted_url(kb_url, 'REVOKE INSERT ON handoff_outbox FROM {role}')
    sid = str(uuid.uuid4())
    with serve(pg, url, None, fallback_email_address='sales@calderwood.example') as srv, srv.client() as c:
        with capture_logs() as logs: status, reply, done, err = turn(c, sid, 'Can I speak to someone?')
        assert status == 200 and done is None and err['code'] == 'turn_failed'
        assert reply == commit_failure_message(app_settings(pg, url, fallback_email_address='sales@calderwood.example'))
        assert 'sales@calderwood.example' in reply
        assert not is_stage3_language(reply)                          # no call, no "someone will get back to you"
        assert any(l['event'] == 'turn_commit_failure' and l['log_level'] == 'error' for l in logs)
        assert not any('speak to someone' in str(l) for l in logs)    # the message is not in the logs
    # nothing of the turn is stored: no transcript line, no outbox row, no lead, no hand-off event
    assert rows(kb_url, 'SELECT count(*) FROM transcript WHERE session_id = %s', sid) == [(0,)]
    assert rows(kb_url, 'SELECT count(*) FROM handoff_outbox WHERE session_id = %s', sid) == [(0,)]
    assert rows(kb_url, "SELECT count(*) FROM analytics_events WHERE session_id = %s AND event_type = 'handoff_proposed'", sid) == [(0,)]
    # the same visitor, once the database takes the write again, is handed off on their next message (turn 1 again)
    with serve(pg, kb_url, None) as srv, srv.client() as c:
        status, reply, done, err = turn(c, sid, 'Can I speak to someone?')
    assert err is None and done['handoff_reason'] == 'explicit_request' and done['turn_index'] == 1
    assert rows(kb_url, 'SELECT count(*) FROM handoff_outbox WHERE session_id = %s', sid) == [(1,)]


def test_a_locked_table_mid_turn_gives_the_fallback_and_the_session_carries_on(pg, kb_url):
    "The review's scenario without stopping the shared server: transcript locked, the commit times out (statement_timeout)."
    url = restricted_url(kb_url, "ALTER ROLE {role} SET statement_timeout = '1s'")
    sid = str(uuid.uuid4())
    with serve(pg, url, None) as srv, srv.client() as c:
        with psycopg.connect(kb_url) as locker:
            locker.execute('LOCK TABLE transcript IN ACCESS EXCLUSIVE MODE')
            status, reply, done, err = turn(c, sid, 'Can I talk to a human?')
            locker.rollback()
        assert status == 200 and done is None and err is not None and not is_stage3_language(reply)
        assert rows(kb_url, 'SELECT count(*) FROM handoff_outbox WHERE session_id = %s', sid) == [(0,)]
        # no 409 afterwards: the lease went with the turn
        status, reply, done, err = turn(c, sid, 'Can I talk to a human?')
    assert status == 200 and err is None and done['handoff_reason'] == 'explicit_request' and done['turn_index'] == 1
    assert rows(kb_url, 'SELECT role, turn_index FROM transcript WHERE session_id = %s ORDER BY id', sid) == [('user', 1), ('assistant', 1)]


class CrashAfterCommit(OfflineModel):
    "The proposal dies after its first token, as a process killed mid-stream would: nothing after the commit runs."
    async def propose(self, *a, **kw):
        async for tok in super().propose(*a, **kw):
            yield tok
            raise RuntimeError('killed mid-stream')


def test_a_reply_lost_after_the_handoff_commit_keeps_the_handoff_and_marks_the_transcript(pg, kb_url):
    sid = str(uuid.uuid4())
    with serve(pg, kb_url, CrashAfterCommit()) as srv, srv.client() as c:
        status, reply, done, err = turn(c, sid, 'Can I talk to a human?')
        assert status == 200 and done is None and err is not None and reply      # the first token streamed, then the failure
    # the hand-off committed before the proposal streamed: queued once, the visitor's message is in the transcript
    assert rows(kb_url, "SELECT handoff_reason FROM handoff_outbox WHERE session_id = %s AND kind = 'handoff'", sid) == [('explicit_request',)]
    assert rows(kb_url, 'SELECT role, turn_index FROM transcript WHERE session_id = %s ORDER BY id', sid) == [('user', 1)]
    with serve(pg, kb_url, None) as srv, srv.client() as c:
        status, reply, done, err = turn(c, sid, 'thanks, my email is lee@acme-insurance.example')
        assert err is None and done['turn_index'] == 2 and done['handoff_reason'] is None     # not proposed twice
        detail = c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}).json()
    roles = [(m['role'], m['turn_index']) for m in detail['transcript']]
    assert roles == [('user', 1), ('assistant', 1), ('user', 2), ('assistant', 2)]
    assert detail['transcript'][1]['content'] == REPLY_LOST_MARKER
    assert [e['turn_index'] for e in detail['events'] if e['event_type'] == 'reply_lost'] == [1]
    assert rows(kb_url, "SELECT count(*) FROM handoff_outbox WHERE session_id = %s AND kind = 'handoff'", sid) == [(1,)]
    assert rows(kb_url, 'SELECT count(*) FROM leads WHERE session_id = %s', sid) in ([(0,)], [(1,)])   # never two


def test_a_lease_is_gone_with_its_connection(pg, kb_url):
    "Issue 16: the turn lease is an advisory lock on a connection — a dead holder releases it at once, not after 60 s."
    sid = str(uuid.uuid4())
    with serve(pg, kb_url, None) as srv, srv.client() as c:
        holder = psycopg.connect(kb_url, autocommit=True)
        assert holder.execute('SELECT pg_try_advisory_lock(%s)', [turn_lock_key(sid)]).fetchone()[0]
        r = c.post('/chat', json={'message': 'hi'}, headers={'ZGC-Session-ID': sid})
        assert r.status_code == 409 and r.json()['error']['code'] == 'turn_in_progress'
        holder.close()                                        # the holding process is gone: so is its lock
        status, reply, done, err = turn(c, sid, 'hi')
    assert status == 200 and err is None and done['turn_index'] == 1


def test_a_failing_update_of_the_lead_never_blocks_the_turn(pg, kb_url):
    "Contact details after the hand-off whose update cannot be queued: the visitor still gets the turn."
    url = restricted_url(kb_url, 'REVOKE INSERT ON contact_history FROM {role}')
    sid = str(uuid.uuid4())
    with serve(pg, url, None) as srv, srv.client() as c:
        status, _, done, _ = turn(c, sid, "I'm the CTO of a 300-person insurer; we're building a claims RAG assistant, live by Q2.")
        assert status == 200 and done['handoff_reason'] == 'hot_lead'
        assert rows(kb_url, "SELECT handoff_reason FROM handoff_outbox WHERE session_id = %s AND kind = 'handoff'", sid) == [('hot_lead',)]
        with capture_logs() as logs: status, reply, done, err = turn(c, sid, 'dana@example.com')
    assert status == 200 and err is None and done['turn_index'] == 2 and reply.strip()
    assert 'passed dana@example.com on' not in reply                  # it was not: never said
    assert any(l['event'] == 'turn_record_failure' for l in logs)
