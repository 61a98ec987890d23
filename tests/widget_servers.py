"""A local HTTP server for the widget's browser tests: host pages, and chat backends that misbehave on purpose.

`WidgetHost` binds 127.0.0.1 on a free port (its own origin, distinct from the real API's) and
serves:
  * host pages registered with `page(name, body)`: `GET /<name>.html`;
  * `POST /chat/<backend>`: a chat endpoint speaking the SSE contract of DESIGN §3, scripted per
    backend name with `backend(name, *responses)`; responses are used one per request, in order,
    and the last one repeats. Responses are built with the helpers below:

    reply('Hello', ', world', done={...})   200 text/event-stream: delta events, then done
    reply('Hi', events=[('slots', {...})])   ... with these other events (slots, meeting) between the deltas and done
    status(503)                              that HTTP status with a JSON error body
    hang()                                   200 text/event-stream, then nothing (no first token)
    gated('Hello', ', world', done={...})    one delta per `release()` of the backend's gate
    stream_error('turn_failed')              200, then `event: error`

Every request to a backend is recorded (`requests(name)`: headers and JSON body), so tests can
check what the widget sent — and that it sent nothing. The server stops with its context manager.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply(*tokens, done=None, events=()):
    return {'kind': 'reply', 'tokens': tokens or ('Hello',), 'done': done or {}, 'events': list(events)}
def status(code, error_code='server_error'): return {'kind': 'status', 'code': code, 'error_code': error_code}
def hang(): return {'kind': 'hang'}
def gated(*tokens, done=None): return {'kind': 'gated', 'tokens': tokens, 'done': done or {}}
def stream_error(code='turn_failed'): return {'kind': 'stream_error', 'code': code}


class WidgetHost:
    def __init__(self):
        self.pages, self.scripts, self.log = {}, {}, []
        self.proactive: dict[str, bool] = {}      # a backend's proactive_prompt switch (GET /chat/<name>/flags; default on)
        self.gates: dict[str, threading.Semaphore] = {}
        self.stop = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass

            def do_GET(self):
                path = self.path.split('?')[0]
                if path.startswith('/chat/') and path.endswith('/flags'):       # the widget asks before its proactive prompt
                    name = path.removeprefix('/chat/').removesuffix('/flags')
                    if name not in outer.scripts: return self.plain(404, 'no such backend')
                    return self.plain(200, json.dumps({'proactive_prompt': outer.proactive.get(name, True)}), 'application/json')
                body = outer.pages.get(path.lstrip('/').removesuffix('.html'))
                if body is None: return self.plain(404, 'not found')
                self.plain(200, body, 'text/html; charset=utf-8')

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                name = self.path.removeprefix('/chat/').split('?')[0]
                if name not in outer.scripts: return self.plain(404, 'no such backend')
                try: body = json.loads(raw)
                except ValueError: body = None
                with outer._lock:
                    outer.log.append({'backend': name, 'headers': dict(self.headers), 'body': body})
                    queue = outer.scripts[name]
                    resp = queue.pop(0) if len(queue) > 1 else queue[0]
                sid = self.headers.get('ZGC-Session-ID', '')
                getattr(self, resp['kind'])(resp, name, sid)

            def plain(self, code, text, ctype='text/plain; charset=utf-8'):
                data = text.encode()
                self.send_response(code)
                self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(data)))
                self.send_header('Cache-Control', 'no-store')
                self.end_headers()
                self.wfile.write(data)

            def status(self, resp, name, sid):
                data = json.dumps({'error': {'code': resp['error_code'], 'message': 'scripted failure'}}).encode()
                self.send_response(resp['code'])
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def open_stream(self):
                self.send_response(200)
                self.send_header('Content-Type', 'text/event-stream')
                self.send_header('Cache-Control', 'no-store')
                self.send_header('Connection', 'close')
                self.end_headers()
                self.wfile.flush()

            def event(self, event, data):
                self.wfile.write(f'event: {event}\r\ndata: {json.dumps(data)}\r\n\r\n'.encode())
                self.wfile.flush()

            def done(self, resp, sid):
                self.event('done', {'session_id': sid, 'turn_index': 1, 'lead_level': 'cold', 'stage': 2,
                                    'handoff_reason': None, **resp['done']})

            def reply(self, resp, name, sid):
                self.open_stream()
                self.wfile.write(b': ping\r\n\r\n')          # a comment, as sse-starlette sends
                for tok in resp['tokens']: self.event('delta', {'type': 'text_delta', 'content': tok})
                for event, data in resp.get('events', ()): self.event(event, data)
                self.done(resp, sid)

            def gated(self, resp, name, sid):
                self.open_stream()
                gate = outer.gates.setdefault(name, threading.Semaphore(0))
                try:
                    for tok in resp['tokens']:
                        while not gate.acquire(timeout=0.1):
                            if outer.stop.is_set(): return
                        self.event('delta', {'type': 'text_delta', 'content': tok})
                    while not gate.acquire(timeout=0.1):
                        if outer.stop.is_set(): return
                    self.done(resp, sid)
                except (BrokenPipeError, ConnectionResetError): pass

            def hang(self, resp, name, sid):
                self.open_stream()
                # keep the stream open, silent, until the client goes away or the server stops
                while not outer.stop.wait(0.1):
                    try: self.wfile.write(b': \r\n'); self.wfile.flush()   # a comment is not a token
                    except (BrokenPipeError, ConnectionResetError): return
                    outer.stop.wait(0.4)

            def stream_error(self, resp, name, sid):
                self.open_stream()
                self.event('error', {'code': resp['code'], 'message': 'the turn could not be completed'})

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.origin = f'http://127.0.0.1:{self.server.server_address[1]}'
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)

    def page(self, name: str, body: str) -> str:
        self.pages[name] = body
        return f'{self.origin}/{name}.html'

    def backend(self, name: str, *responses) -> str:
        with self._lock:
            self.scripts[name] = list(responses)
            self.log = [r for r in self.log if r['backend'] != name]
        self.gates[name] = threading.Semaphore(0)
        return f'{self.origin}/chat/{name}'

    def release(self, name: str, n: int = 1):
        "Let a gated backend send its next `n` events."
        for _ in range(n): self.gates[name].release()

    def requests(self, name: str) -> list[dict]:
        with self._lock: return [r for r in self.log if r['backend'] == name]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
