"The chat API over real HTTP (uvicorn on a loopback port) against the embedded PostgreSQL: contract, bad input, security, ops."
import json
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from httpx_sse import connect_sse

from apiserver import LiveServer
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = 'staff-token-for-tests-0123456789'
ALLOWED = 'https://www.calderwood.example'


def app_settings(pg, url, **kw):
    base = dict(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                leadchat_home=pg[0].leadchat_home, database_url=url, leadchat_admin_token=TOKEN,
                leadchat_cors_origins=[ALLOWED], leadchat_rate_limit_ip_per_minute=10_000,
                leadchat_rate_limit_session_per_minute=10_000)
    return Settings(**{**base, **kw})


@pytest.fixture(scope='module')
def api(pg):
    url = fresh_db(pg[1])
    with LiveServer(create_app(app_settings(pg, url), knowledge_path=str(ROOT / 'knowledge'))) as srv:
        srv.db_url = url
        yield srv


def turn(client, sid, message, **headers):
    "One turn: (status, deltas text, done payload or None, error payload or None)."
    h = {'ZGC-Session-ID': sid, **headers}
    with connect_sse(client, 'POST', '/chat', json={'message': message}, headers=h) as es:
        if es.response.status_code != 200:
            es.response.read()
            return es.response.status_code, es.response.json(), None, None
        text, done, err = '', None, None
        for ev in es.iter_sse():
            if ev.event == 'delta': text += json.loads(ev.data)['content']
            elif ev.event == 'done': done = json.loads(ev.data)
            elif ev.event == 'error': err = json.loads(ev.data)
        return 200, text, done, err


def test_a_turn_streams_deltas_then_done(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        status, text, done, err = turn(c, sid, 'What case studies do you have in fintech?')
    assert status == 200 and err is None and text.strip()
    assert done == {'session_id': sid, 'turn_index': 1, 'lead_level': done['lead_level'], 'stage': 2, 'handoff_reason': None}
    with api.client() as c:
        status, text2, done2, _ = turn(c, sid, 'And in healthcare?')
    assert done2['turn_index'] == 2


@pytest.mark.parametrize('headers,body,status,code', [
    ({}, {'message': 'hi'}, 400, 'invalid_session_id'),
    ({'ZGC-Session-ID': 'not-a-uuid'}, {'message': 'hi'}, 400, 'invalid_session_id'),
    ({'ZGC-Session-ID': "1' OR '1'='1"}, {'message': 'hi'}, 400, 'invalid_session_id'),
    ({'ZGC-Session-ID': '00000000-0000-0000-0000-000000000000'}, {'message': 'hi'}, 400, 'invalid_session_id'),
    ({'ZGC-Session-ID': 'U'}, 'not json at all', 422, 'invalid_json'),
    ({'ZGC-Session-ID': 'U'}, ['message'], 422, 'invalid_request'),
    ({'ZGC-Session-ID': 'U'}, {'msg': 'hi'}, 422, 'invalid_request'),
    ({'ZGC-Session-ID': 'U'}, {'message': 42}, 422, 'invalid_request'),
    ({'ZGC-Session-ID': 'U'}, {'message': None}, 422, 'invalid_request'),
    ({'ZGC-Session-ID': 'U'}, {'message': '   '}, 422, 'empty_message'),
    ({'ZGC-Session-ID': 'U'}, {'message': 'a\x00b'}, 422, 'invalid_request'),
    ({'ZGC-Session-ID': 'U'}, '{"message": "mail ann@example.com \\ud800"}', 422, 'invalid_request'),
    ({'ZGC-Session-ID': 'U'}, '[' * 5000 + ']' * 5000, 422, 'invalid_json'),
    ({'ZGC-Session-ID': 'U'}, {'message': 'x' * 4001}, 413, 'message_too_long'),
    ({'ZGC-Session-ID': 'U'}, {'message': 'x' * 200_000}, 413, 'body_too_large'),    # refused before it is read (BodyLimit)
    ({'ZGC-Session-ID': 'U', 'Origin': 'https://evil.example'}, {'message': 'hi'}, 403, 'origin_not_allowed'),
])
def test_bad_input_is_refused_before_any_stream(api, headers, body, status, code):
    headers = {k: (str(uuid.uuid4()) if v == 'U' else v) for k, v in headers.items()}
    with api.client() as c:
        content = body if isinstance(body, str) else json.dumps(body)
        r = c.post('/chat', content=content, headers={'Content-Type': 'application/json', **headers})
    assert r.status_code == status and r.headers['content-type'].startswith('application/json')
    assert r.json()['error']['code'] == code and r.json()['error']['message']


def test_allowed_origin_gets_cors_headers(api):
    with api.client() as c:
        pre = c.options('/chat', headers={'Origin': ALLOWED, 'Access-Control-Request-Method': 'POST',
                                          'Access-Control-Request-Headers': 'content-type,zgc-session-id'})
        assert pre.status_code == 200 and pre.headers['access-control-allow-origin'] == ALLOWED
        status, text, done, _ = turn(c, str(uuid.uuid4()), 'hello there', Origin=ALLOWED)
    assert status == 200 and done['turn_index'] == 1


def test_rate_limits_per_ip_and_per_session(pg):
    url = fresh_db(pg[1])
    app = create_app(app_settings(pg, url, leadchat_rate_limit_ip_per_minute=5, leadchat_rate_limit_session_per_minute=2),
                     knowledge_path=str(ROOT / 'knowledge'))
    with LiveServer(app) as srv, srv.client() as c:
        sid = str(uuid.uuid4())
        codes = [turn(c, sid, 'hello')[0] for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.post('/chat', json={'message': 'hi'}, headers={'ZGC-Session-ID': sid})
        assert r.status_code == 429 and int(r.headers['retry-after']) >= 1
        codes = [turn(c, str(uuid.uuid4()), 'hello')[0] for _ in range(4)]
        assert codes[-1] == 429 and codes[0] == 200            # the IP budget (5/min) is spent


def test_concurrent_turns_on_one_session_never_lose_an_update(api):
    sid = str(uuid.uuid4())
    results = []
    def go(msg):
        with api.client() as c: results.append(turn(c, sid, msg))
    threads = [threading.Thread(target=go, args=(f'question number {i} about your services',)) for i in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 409]
    assert len(ok) + len(refused) == 4 and ok
    assert all(r[1]['error']['code'] == 'turn_in_progress' for r in refused)
    # every accepted turn is in the state: turn indexes are 1..n with no gap or repeat
    assert sorted(r[2]['turn_index'] for r in ok) == list(range(1, len(ok) + 1))
    with api.client() as c:
        detail = c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}).json()
    assert detail['session']['turn_count'] == len(ok) and len(detail['transcript']) == 2 * len(ok)


def test_a_live_lease_held_elsewhere_gives_409(api):
    sid = str(uuid.uuid4())
    with psycopg.connect(api.db_url, autocommit=True) as c:
        c.execute("INSERT INTO sessions (session_id, turn_lock_until, turn_lock_owner) VALUES (%s, now() + interval '1 minute', 'other-process')", [sid])
    with api.client() as c:
        r = c.post('/chat', json={'message': 'hi'}, headers={'ZGC-Session-ID': sid})
    assert r.status_code == 409 and r.json()['error']['code'] == 'turn_in_progress'
    with psycopg.connect(api.db_url, autocommit=True) as c:          # an expired lease (crashed process) is taken over
        c.execute("UPDATE sessions SET turn_lock_until = now() - interval '1 second' WHERE session_id = %s", [sid])
    with api.client() as c: assert turn(c, sid, 'hi')[0] == 200


def test_health_readiness_metrics_and_demo_page(api):
    with api.client() as c:
        assert c.get('/healthz').json() == {'status': 'ok'}
        ready = c.get('/readyz')
        assert ready.status_code == 200 and ready.json() == {'database': True, 'migrations': True, 'knowledge_index': True, 'ready': True}
        turn(c, str(uuid.uuid4()), 'hello')
        m = c.get('/metrics')
        assert m.status_code == 200 and 'leadchat_turns_total{route="respond"}' in m.text and 'leadchat_turn_seconds_bucket' in m.text
        page = c.get('/')
        assert page.status_code == 200 and '<html' in page.text
        assert '<script src="/chat.js" defer></script>' in page.text and '<growth-chat api-url="/chat"' in page.text


def test_metrics_count_the_outbox_by_state(pg):
    "An operator's alert rule: hand-offs waiting for a retry and dead letters are gauges, read from the database at scrape time."
    import psycopg
    url = fresh_db(pg[1])          # an outbox of its own: the other tests' hand-offs are retried on their own clock
    with LiveServer(create_app(app_settings(pg, url), knowledge_path=str(ROOT / 'knowledge'))) as srv:
        with psycopg.connect(url, autocommit=True) as c:
            for i, (status, retries, dead) in enumerate([('pending', 2, False), ('partial_failure', 5, True), ('failed', 1, True)]):
                # due in an hour: the running relay never picks the pending one up while the gauge is read
                c.execute('''INSERT INTO handoff_outbox (session_id, handoff_reason, request, status, retries, dead_lettered_at, available_at)
                             VALUES (%s, 'stall', '{}', %s, %s, CASE WHEN %s THEN now() END, now() + interval '1 hour')''',
                          [f'metrics-{i}', status, retries, dead])
        with srv.client() as c:
            text = c.get('/metrics').text
    assert 'leadchat_handoff_outbox{state="retrying"} 1.0' in text and 'leadchat_handoff_outbox{state="dead_letter"} 2.0' in text


def test_staff_api_requires_the_token_and_filters(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        turn(c, sid, 'I work at Acme Pay and we want to build a RAG assistant over our support tickets')
        for h in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': TOKEN}, {'Authorization': f'Basic {TOKEN}'}):
            r = c.get('/api/sessions', headers=h)
            assert r.status_code == 401 and 'sessions' not in r.text
        assert c.get(f'/api/sessions/{sid}').status_code == 401
        auth = {'Authorization': f'Bearer {TOKEN}'}
        page = c.get('/api/sessions', params={'limit': 500}, headers=auth).json()
        assert page['total'] >= 1 and any(s['session_id'] == sid for s in page['sessions'])
        assert c.get('/api/sessions', params={'lead_level': 'boiling'}, headers=auth).status_code == 422
        assert c.get('/api/sessions', params={'limit': 0}, headers=auth).status_code == 422
        assert c.get('/api/sessions', params={'stage': 'two'}, headers=auth).status_code == 422
        detail = c.get(f'/api/sessions/{sid}', headers=auth).json()
        assert detail['state']['session_id'] == sid and len(detail['transcript']) == 2
        assert detail['events'][0]['event_type'] in ('session_started', 'qualification_changed', 'lead_level_changed', 'contact_captured')
        assert c.get(f'/api/sessions/{uuid.uuid4()}', headers=auth).status_code == 404
        assert c.get('/api/sessions/' + 'x' * 500, headers=auth).status_code == 404


def test_staff_api_is_closed_without_a_configured_token(pg):
    app = create_app(app_settings(pg, fresh_db(pg[1]), leadchat_admin_token=None), knowledge_path=str(ROOT / 'knowledge'))
    with LiveServer(app) as srv, srv.client() as c:
        r = c.get('/api/sessions', headers={'Authorization': 'Bearer anything'})
        assert r.status_code == 401 and r.json()['error']['code'] == 'staff_api_closed'


def test_message_limit_counts_characters_after_json_decoding(api):
    "4,000 'é' sent as escaped JSON (\\u00e9, 24,000 bytes) is 4,000 characters: accepted; 4,001 are refused"
    sid = str(uuid.uuid4())
    body = '{"message": "' + '\\u00e9' * 4000 + '"}'
    with api.client() as c:
        r = c.post('/chat', content=body, headers={'Content-Type': 'application/json', 'ZGC-Session-ID': sid})
        assert r.status_code == 200, r.text[:300]
        r = c.post('/chat', content='{"message": "' + '\\u00e9' * 4001 + '"}',
                   headers={'Content-Type': 'application/json', 'ZGC-Session-ID': str(uuid.uuid4())})
        assert r.status_code == 413 and r.json()['error']['code'] == 'message_too_long'
