"""A local HTTP server that speaks the Anthropic Messages and OpenAI Chat Completions wire protocols by
replaying recorded responses (tests/fixtures/llm/<provider>/*) in the order a test scripts them.

Every request is kept (path, headers, JSON body), so tests can check exactly what a provider would
have received. Run it with `LiveServer(replay.app)`; the real `anthropic` / `openai` SDKs point at it
through ANTHROPIC_BASE_URL / OPENAI_BASE_URL.
"""
import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'llm'
PROVIDER_OF = {'/v1/messages': 'anthropic', '/v1/chat/completions': 'openai'}


@dataclass
class Reply:
    "One scripted response: a recorded fixture, its HTTP status, and how slowly to send it."
    fixture: str                      # file under fixtures/llm/<provider>/
    status: int = 200
    headers: dict = field(default_factory=dict)
    before_headers: float = 0.0       # seconds of silence before the status line (request timeouts)
    before_body: float = 0.0          # seconds of silence after the headers (first-token timeouts)
    between_events: float = 0.0       # pacing of SSE events (incremental streaming)


@dataclass
class Seen:
    provider: str
    path: str
    headers: dict
    body: dict
    raw: str


class LLMReplay:
    def __init__(self):
        self.queues = {'anthropic': deque(), 'openai': deque()}
        self.requests: list[Seen] = []
        self.app = Starlette(routes=[Route(p, self._handle, methods=['POST']) for p in PROVIDER_OF])

    def then(self, provider: str, *replies: Reply | str) -> 'LLMReplay':
        for r in replies:
            r = Reply(r) if isinstance(r, str) else r
            if not (FIXTURES / provider / r.fixture).is_file(): raise FileNotFoundError(f'no fixture {provider}/{r.fixture}')
            self.queues[provider].append(r)
        return self

    def bodies(self, provider: str | None = None) -> list[dict]:
        return [s.body for s in self.requests if provider in (None, s.provider)]

    def raw_text(self) -> str:
        "Everything every provider received (bodies, as sent on the wire)."
        return '\n'.join(s.raw for s in self.requests)

    def pending(self) -> int: return sum(len(q) for q in self.queues.values())

    async def _handle(self, request: Request):
        provider = PROVIDER_OF[request.url.path]
        raw = (await request.body()).decode()
        self.requests.append(Seen(provider, request.url.path, dict(request.headers), json.loads(raw), raw))
        if not self.queues[provider]:
            return JSONResponse({'type': 'error', 'error': {'type': 'api_error', 'message': 'replay: no scripted response left'}},
                                status_code=500, headers={'x-should-retry': 'false'})
        r = self.queues[provider].popleft()
        if r.before_headers: await asyncio.sleep(r.before_headers)
        text = (FIXTURES / provider / r.fixture).read_text()
        rid = {'anthropic': {'request-id': f'req_replay_{len(self.requests)}'},
               'openai': {'x-request-id': f'req_replay_{len(self.requests)}'}}[provider]
        headers = {**rid, **r.headers}
        if not r.fixture.endswith('.sse'):
            return Response(text, status_code=r.status, media_type='application/json', headers=headers)

        async def events():
            if r.before_body: await asyncio.sleep(r.before_body)
            for frame in text.split('\n\n'):
                if not frame.strip(): continue
                yield (frame + '\n\n').encode()
                if r.between_events: await asyncio.sleep(r.between_events)
        return StreamingResponse(events(), status_code=r.status, media_type='text/event-stream', headers=headers)


RETRY_FAST = {'retry-after-ms': '20'}     # what providers send with 429/529, shortened for the tests


def overloaded(n: int = 1) -> list[Reply]:
    return [Reply('error_529.json', 529, RETRY_FAST) for _ in range(n)]
