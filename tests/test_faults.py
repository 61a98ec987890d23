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
from leadchat.graph import FALLBACK_MESSAGE
from leadchat.models import OfflineModel
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


def test_a_failing_handoff_dispatch_never_blocks_the_turn(pg, kb_url):
    url = restricted_url(kb_url, 'REVOKE INSERT ON handoff_outbox FROM {role}')
    with serve(pg, url, None) as srv, srv.client() as c:
        with capture_logs() as logs: status, reply, done, err = turn(c, str(uuid.uuid4()), 'Can I speak to someone?')
    assert status == 200 and err is None and done['handoff_reason'] == 'explicit_request' and reply.strip()
    assert any(l['event'] == 'turn_record_failure' for l in logs)



def test_a_failing_update_of_the_lead_never_blocks_the_turn(pg, kb_url):
    "Contact details after the hand-off whose update cannot be queued: the visitor still gets the turn."
    url = restricted_url(kb_url, 'REVOKE INSERT ON contact_history FROM {role}')
    sid = str(uuid.uuid4())
    with serve(pg, url, None) as srv, srv.client() as c:
        status, _, done, _ = turn(c, sid, "I'm the CTO of a 300-person insurer; we're building a claims RAG assistant, live by Q2.")
        assert status == 200 and done['handoff_reason'] == 'hot_lead'
        with capture_logs() as logs: status, reply, done, err = turn(c, sid, 'dana@example.com')
    assert status == 200 and err is None and done['turn_index'] == 2 and reply.strip()
    assert any(l['event'] == 'turn_record_failure' for l in logs)
