"""Local HTTP servers that speak an outside service's protocol, for services that cannot run here.

`FakeOpenAI` answers `POST /v1/embeddings` in OpenAI's wire format (float or base64 encoding,
as the client asks) with deterministic vectors, records every request body, and can be told to
fail (HTTP 500) or stall. It binds to 127.0.0.1 on a free port and stops when the test ends.
"""
import base64
import hashlib
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def fake_vector(text: str, dim: int) -> list[float]:
    "A deterministic unit vector for `text`."
    raw = b''.join(hashlib.sha256(f'{text}:{i}'.encode()).digest() for i in range(dim // 8 + 1))
    v = [(b - 127.5) / 127.5 for b in raw[:dim]]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


class FakeOpenAI:
    def __init__(self, dim: int = 1536):
        self.dim, self.requests, self.mode = dim, [], 'ok'   # ok | error | stall
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                outer.requests.append(dict(path=self.path, body=body.decode(), auth=self.headers.get('Authorization')))
                if outer.mode == 'stall': time.sleep(3)
                if outer.mode == 'error' or not self.path.endswith('/embeddings'):
                    return self._send(500, {'error': {'message': 'The server had an error', 'type': 'server_error'}})
                req = json.loads(body)
                inputs = req['input'] if isinstance(req['input'], list) else [req['input']]
                data = []
                for i, text in enumerate(inputs):
                    v = fake_vector(str(text), outer.dim)
                    emb = (base64.b64encode(struct.pack(f'<{len(v)}f', *v)).decode()
                           if req.get('encoding_format') == 'base64' else v)
                    data.append({'object': 'embedding', 'index': i, 'embedding': emb})
                self._send(200, {'object': 'list', 'data': data, 'model': req.get('model'),
                                 'usage': {'prompt_tokens': 8, 'total_tokens': 8}})

            def _send(self, code, obj):
                out = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.server.server_port}/v1'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
