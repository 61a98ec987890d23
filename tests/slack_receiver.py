"""A local HTTP server that speaks Slack's incoming-webhook and Web API protocols, for the hand-off tests.

`SlackReceiver` binds 127.0.0.1 on a free port and records every request (path, JSON body,
Authorization header, arrival time). What it answers is scripted per request: `script(...)`
queues responses that are used one per request, in order; when the queue is empty `default`
answers. Responses are built with the helpers below:

    ok()                      200 "ok" (webhook) / {"ok": true, "ts": ...} (Web API)
    status(500)               HTTP 500 with a body
    rate_limited(0.05)        429 with Retry-After
    slow(2.0)                 wait, then answer 200 (longer than a client's timeout = a timeout)
    permanent('channel_not_found')   the webhook's permanent 4xx errors, with Slack's status codes
    api_error('channel_not_found')   Web API: HTTP 200 {"ok": false, "error": ...}

Webhook URL: `receiver.webhook_url`; Web API base URL: `receiver.api_url` (chat.postMessage,
chat.update).
"""
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The status codes Slack's incoming webhooks use for these errors.
WEBHOOK_ERROR_STATUS = {'invalid_payload': 400, 'user_not_found': 404, 'channel_not_found': 404,
                        'channel_is_archived': 410, 'action_prohibited': 403, 'posting_to_general_channel_denied': 403,
                        'too_many_attachments': 400, 'no_service': 404, 'no_service_id': 400, 'no_team': 400,
                        'team_disabled': 404, 'invalid_token': 403, 'no_text': 400}


def ok(): return {'kind': 'ok'}
def status(code, body='internal_error'): return {'kind': 'status', 'code': code, 'body': body}
def rate_limited(retry_after): return {'kind': 'status', 'code': 429, 'body': 'rate_limited',
                                       'headers': {'Retry-After': str(retry_after)}}
def slow(seconds, then=None): return {'kind': 'slow', 'seconds': seconds, 'then': then or ok()}
def permanent(error): return {'kind': 'status', 'code': WEBHOOK_ERROR_STATUS[error], 'body': error}
def api_error(error): return {'kind': 'api_error', 'error': error}


class SlackReceiver:
    def __init__(self):
        self.requests, self.default, self._script = [], ok(), []
        self._lock, self._ts = threading.Lock(), itertools.count(1)
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                try: body = json.loads(raw)
                except ValueError: body = raw.decode(errors='replace')
                with outer._lock:
                    outer.requests.append(dict(path=self.path, body=body, auth=self.headers.get('Authorization'),
                                               at=time.monotonic()))
                    plan = outer._script.pop(0) if outer._script else outer.default
                outer.arrived.set()
                try: self._answer(plan)
                except (BrokenPipeError, ConnectionResetError): pass   # the client gave up (timeout)

            def _answer(self, plan):
                if plan['kind'] == 'slow':
                    time.sleep(plan['seconds'])
                    return self._answer(plan['then'])
                api = '/api/' in self.path
                if plan['kind'] == 'ok':
                    if not api: return self._send(200, 'ok')
                    return self._send(200, {'ok': True, 'channel': 'C0NEWLEADS', 'ts': f'1700000000.{next(outer._ts):06d}'})
                if plan['kind'] == 'api_error': return self._send(200, {'ok': False, 'error': plan['error']})
                return self._send(plan['code'], plan['body'], plan.get('headers', {}))

            def _send(self, code, body, headers=None):
                out = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
                self.send_response(code)
                self.send_header('Content-Type', 'application/json' if isinstance(body, dict) else 'text/plain')
                self.send_header('Content-Length', str(len(out)))
                for k, v in (headers or {}).items(): self.send_header(k, v)
                self.end_headers()
                self.wfile.write(out)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128   # the default 5 drops concurrent connects (the client retries a second later)
        self.server = Server(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        base = f'http://127.0.0.1:{self.server.server_port}'
        self.webhook_url = f'{base}/services/T000/B000/XXXXSECRET'
        self.api_url = f'{base}/api'
        threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()

    def script(self, *plans):
        "Answer the next requests with `plans`, in order."
        with self._lock: self._script.extend(plans)
        return self

    def bodies(self, path_part: str = '/services/'):
        with self._lock: return [r['body'] for r in self.requests if path_part in r['path']]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()
