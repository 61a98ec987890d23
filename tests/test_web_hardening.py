"""Issue 16, item 3 (the web layer): request bodies refused at their route's limit while they arrive (chunked included),
security headers, /metrics optionally behind the staff token, NUL in the staff API, the staff token's failed-attempt limit.
Everything over real sockets against a live uvicorn server and the embedded PostgreSQL."""
import json
import socket
import uuid
from pathlib import Path

import pytest
import yaml

from apiserver import LiveServer
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.booking import MAX_BODY_BYTES
from leadchat.calendar import CalendarService, load_calendar_config
from test_api import ALLOWED, TOKEN, app_settings

ROOT = Path(__file__).resolve().parent.parent
AUTH = {'Authorization': f'Bearer {TOKEN}'}
CHAT_LIMIT = 4000 * 12 + 2048          # the /chat body limit for the default 4,000-character message


def team_yaml() -> dict:
    "One rep without a calendar provider: enough for the calendar routes to exist."
    return {'team': {'name': 'Calderwood AI', 'working_hours': {'weekdays': ['09:00-13:00', '14:00-18:00']}},
            'reps': [{'id': 'ana', 'name': 'Ana Ruiz', 'email': 'ana@calderwood.example', 'calendar': {'kind': 'none'}}],
            'meeting_types': [{'id': 'intro', 'name': 'Intro call', 'duration_minutes': 30, 'horizon_days': 14}]}


def calendar_server(pg, folder: Path) -> LiveServer:
    "A live app, on a database of its own, with the calendar routes (one rep, no provider)."
    path = folder / 'calendar.yaml'
    path.write_text(yaml.safe_dump(team_yaml()))
    settings = app_settings(pg, fresh_db(pg[1]), leadchat_calendar_config=path)
    return LiveServer(create_app(settings, knowledge_path=str(ROOT / 'knowledge'), calendar_sweep_interval=None,
                                 calendar=CalendarService(settings, load_calendar_config(path, settings))))


@pytest.fixture(scope='module')
def web(pg, tmp_path_factory):
    with calendar_server(pg, tmp_path_factory.mktemp('webcal')) as srv: yield srv


def raw_request(url: str, head: str, chunks=(), *, finish: bool = False, timeout: float = 20) -> tuple[int, dict, bytes]:
    """Send `head` (request line + headers) and then `chunks` as a chunked body over a plain socket — without the final
    zero-length chunk unless `finish`, so a server that waits for the whole body never answers — and read the answer."""
    host, port = url.removeprefix('http://').split(':')
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head.encode() + b'\r\n')
        try:
            for c in chunks: s.sendall(b'%x\r\n%s\r\n' % (len(c), c))
            if finish: s.sendall(b'0\r\n\r\n')
        except (BrokenPipeError, ConnectionResetError): pass      # the server answered and closed: read what it said
        data = b''
        while b'\r\n\r\n' not in data or len(data) < data.index(b'\r\n\r\n') + 4 + _length(data):
            got = s.recv(65536)
            if not got: break
            data += got
    head_, _, body = data.partition(b'\r\n\r\n')
    lines = head_.decode('latin-1').split('\r\n')
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(':') for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(data: bytes) -> int:
    for line in data.split(b'\r\n\r\n')[0].split(b'\r\n'):
        if line.lower().startswith(b'content-length:'): return int(line.split(b':')[1])
    return 0


def chat_head(path='/chat', extra='') -> str:
    return (f'POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n'
            f'ZGC-Session-ID: {uuid.uuid4()}\r\n{extra}')


@pytest.mark.parametrize('path,limit', [('/chat', CHAT_LIMIT), ('/api/holds', MAX_BODY_BYTES),
                                        ('/api/bookings', MAX_BODY_BYTES)])
def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(web, path, limit):
    "The body never ends: a server that reads it whole before checking would wait forever (the test would time out)."
    chunks = [b'{"message": "' + b'x' * 4096] + [b'x' * 4096] * (limit // 4096 + 1)
    status, headers, body = raw_request(web.url, chat_head(path, 'Transfer-Encoding: chunked\r\nIdempotency-Key: k-1\r\n'),
                                        chunks)
    assert status == 413, body[:300]
    assert json.loads(body)['error']['code'] == 'body_too_large' and str(limit) in json.loads(body)['error']['message']
    with web.client() as c: assert c.get('/healthz').status_code == 200        # the server is still up


@pytest.mark.parametrize('path', ['/chat', '/api/holds', '/api/sessions', '/healthz'])
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(web, path):
    status, headers, body = raw_request(web.url, chat_head(path, 'Content-Length: 400000000\r\n'))
    assert status == 413 and json.loads(body)['error']['code'] == 'body_too_large'
    assert headers.get('connection') == 'close'


def test_bodies_within_the_limits_still_work(web):
    chunks = [json.dumps({'message': 'What case studies do you have in fintech?'}).encode()]
    status, headers, body = raw_request(web.url, chat_head('/chat', 'Transfer-Encoding: chunked\r\n'), chunks, finish=True)
    assert status == 200 and headers['content-type'].startswith('text/event-stream')
    with web.client() as c:
        r = c.post('/api/holds', json={'slot_id': 'intro.ana.nope'})
        assert r.status_code in (404, 409, 422) and r.json()['error']['code'] != 'body_too_large'
        r = c.post('/chat', json={'message': 'é' * 4000}, headers={'ZGC-Session-ID': str(uuid.uuid4())})
        assert r.status_code == 200


def test_security_headers(web):
    with web.client() as c:
        page = c.get('/')
        assert page.status_code == 200
        csp = page.headers['content-security-policy']
        assert "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
        for r in (page, c.get('/healthz'), c.get('/metrics'), c.get('/api/sessions'),
                  c.post('/chat', json={'message': 'hi'}), c.get('/no/such/page')):
            assert r.headers['x-content-type-options'] == 'nosniff', r.url
            assert r.headers['referrer-policy'] == 'strict-origin', r.url
        for r in (c.get('/chat.js'), c.get('/healthz')):
            assert 'content-security-policy' not in r.headers and 'cross-origin-resource-policy' not in r.headers
        js = c.get('/chat.js', headers={'Origin': 'https://somebody-elses.example'})
        if js.status_code == 200:                          # the widget is built: it still loads from other sites
            assert js.headers['access-control-allow-origin'] == '*' and js.headers['x-content-type-options'] == 'nosniff'


def test_metrics_is_open_by_default(web):
    with web.client() as c: assert c.get('/metrics').status_code == 200


def test_metrics_behind_the_staff_token_when_asked(pg):
    app = create_app(app_settings(pg, fresh_db(pg[1]), leadchat_metrics_require_token=True), knowledge_path=str(ROOT / 'knowledge'))
    with LiveServer(app) as srv, srv.client() as c:
        for h in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': TOKEN}):
            r = c.get('/metrics', headers=h)
            assert r.status_code == 401 and r.json()['error']['code'] == 'unauthorized' and 'leadchat_' not in r.text
        r = c.get('/metrics', headers=AUTH)
        assert r.status_code == 200 and 'leadchat_turns_in_flight' in r.text


@pytest.mark.parametrize('url', ['/api/sessions/%00', '/api/sessions/abc%00def', '/api/sessions?search=a%00b',
                                 '/api/sessions?handoff_reason=%00', '/api/sessions?lead_level=%00',
                                 '/api/sessions?search=a%00b&search=ok', '/api/sessions?x%00=1'])
def test_nul_in_the_staff_api_is_a_clear_4xx(web, url):
    with web.client() as c: r = c.get(url, headers=AUTH)
    assert r.status_code in (400, 422), r.text[:300]
    assert 'NUL' in r.json()['error']['message'] or r.json()['error']['code'] == 'invalid_filter'


def test_failed_staff_tokens_are_rate_limited_per_ip(pg):
    app = create_app(app_settings(pg, fresh_db(pg[1])), knowledge_path=str(ROOT / 'knowledge'))
    with LiveServer(app) as srv, srv.client() as c:
        assert c.get('/api/sessions', headers=AUTH).status_code == 200        # successes do not count
        codes = [c.get('/api/sessions', headers={'Authorization': f'Bearer guess-{i}'}).status_code for i in range(10)]
        assert codes == [401] * 10
        r = c.get('/api/sessions', headers={'Authorization': 'Bearer guess-11'})
        assert r.status_code == 429 and int(r.headers['retry-after']) >= 1 and r.json()['error']['code'] == 'rate_limited'
        # the right token too, while the IP is throttled: a guesser learns nothing from the answer
        assert c.get(f'/api/sessions/{uuid.uuid4()}', headers=AUTH).status_code == 429
        assert c.get('/healthz').status_code == 200


def test_a_trickled_body_is_cut(pg):
    "A body not all there LEADCHAT_BODY_TIMEOUT_SECONDS after the route starts reading it: 408, nothing stored."
    app = create_app(app_settings(pg, fresh_db(pg[1]), leadchat_body_timeout_seconds=1), knowledge_path=str(ROOT / 'knowledge'))
    with LiveServer(app) as srv:
        head = (f'POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                f'ZGC-Session-ID: {uuid.uuid4()}\r\nTransfer-Encoding: chunked\r\n')
        status, _, body = raw_request(srv.url, head, [b'{"message": "hel'])        # and then nothing more
        assert status == 408 and json.loads(body)['error']['code'] == 'body_timeout'
        status, _, _ = raw_request(srv.url, head, [b'{"message": "hello"}'], finish=True)
        assert status == 200                                                       # a whole body still works


class SlowModel:
    "A model port whose answer takes 1.5 s: a turn that is still streaming when the server is told to stop."
    name = 'slow'
    async def extract(self, message, state, turn_index):
        from leadchat.state import QualificationDelta
        return QualificationDelta()
    async def respond(self, message, state, retrieve, **kw):
        import asyncio
        yield 'one moment…'
        await asyncio.sleep(1.5)
        yield ' done.'
    async def propose(self, reason, business_hours, state, followup_sentence, case_study): yield 'proposal'
    def is_stage3_language(self, text): return False


def test_an_open_stream_finishes_when_the_server_stops(pg):
    "SIGTERM mid-turn: the turn streams to its `done` (within LEADCHAT_DRAIN_SECONDS), it is not cut."
    import signal, threading, time
    import httpx
    from sse_starlette.sse import AppStatus
    app = create_app(app_settings(pg, fresh_db(pg[1]), leadchat_drain_seconds=5), model=SlowModel(),
                     knowledge_path=str(ROOT / 'knowledge'))
    out = {}
    try:
        with LiveServer(app) as srv:
            def chat():
                try:
                    with httpx.Client(base_url=srv.url, timeout=20) as c:
                        r = c.post('/chat', json={'message': 'hello'}, headers={'ZGC-Session-ID': str(uuid.uuid4())})
                        out['status'], out['body'] = r.status_code, r.text
                except httpx.HTTPError as e: out['error'] = repr(e)        # a stream cut mid-way
            t = threading.Thread(target=chat); t.start()
            time.sleep(0.7)                                    # the stream is open, its first words sent
            srv.server.handle_exit(signal.SIGTERM, None)       # what uvicorn does on SIGTERM (sse-starlette hooks it)
            t.join(20)
    finally: AppStatus.should_exit = False                     # process-wide flag: later tests' streams must not stop
    assert out.get('status') == 200 and 'one moment' in out['body'] and 'event: done' in out['body'], out
