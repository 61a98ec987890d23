"""The hostile-request corpus (tests/fixtures/bad_input.yaml, issue 16 item 3) against a live server: no case gets a
5xx or leaves a traceback, and none of the visitor details planted in the requests reaches the logs.

Requests go over a plain socket, exactly as the corpus writes them (no client-side normalisation of paths, header
values sent as latin-1 bytes); the server runs with the calendar routes so their cases can join the corpus.
The widget cases need the built widget (widget/dist: `make widget`), as tests/test_widget.py does."""
import logging
import socket
import uuid
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from test_api import TOKEN
from test_web_hardening import calendar_server

ROOT = Path(__file__).resolve().parent.parent
CORPUS = yaml.safe_load((ROOT / 'tests' / 'fixtures' / 'bad_input.yaml').read_text(encoding='utf-8'))
PLANTED = CORPUS['planted']
LEAKS = [PLANTED['email'], PLANTED['phone'], PLANTED['phone'].replace(' ', ''), PLANTED['email'].split('@')[0]]


def fill(text: str) -> str:
    "The corpus's placeholders filled in (plain replacement: bodies are full of JSON braces)."
    for k, v in {'{sid}': str(uuid.uuid4()), '{token}': TOKEN, '{email}': PLANTED['email'], '{phone}': PLANTED['phone']}.items():
        text = text.replace(k, v)
    return text


def body_bytes(case: dict) -> bytes | None:
    b = case.get('body')
    if b is None: return None
    if isinstance(b, dict): b = b.get('prefix', '') + b['repeat'] * b['times'] + b.get('suffix', '')
    return fill(b).encode(case.get('encoding', 'utf-8'), 'surrogatepass')


def send(url: str, case: dict, timeout: float = 60) -> tuple[int, bytes]:
    "The case as one HTTP/1.1 request (Connection: close); the status and the whole answer."
    host, port = url.removeprefix('http://').split(':')
    headers = {'Host': 'test', 'Connection': 'close', **{k: fill(str(v)) for k, v in (case.get('headers') or {}).items()}}
    body = body_bytes(case)
    if body is not None and case.get('chunked'):
        headers['Transfer-Encoding'] = 'chunked'
        body = b''.join(b'%x\r\n%s\r\n' % (len(c), c) for c in (body[i:i + 16384] for i in range(0, len(body), 16384))) + b'0\r\n\r\n'
    elif body is not None and not any(k.lower() == 'content-length' for k in headers): headers['Content-Length'] = str(len(body))
    head = f"{case.get('method', 'GET')} {fill(case['path'])} HTTP/1.1\r\n" + ''.join(f'{k}: {v}\r\n' for k, v in headers.items())
    data = b''
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try: s.sendall(head.encode('latin-1') + b'\r\n' + (body or b''))
        except (BrokenPipeError, ConnectionResetError): pass       # answered and closed before the body was read
        try:
            while got := s.recv(65536): data += got
        except ConnectionResetError: pass
    assert data.startswith(b'HTTP/1.1 '), f'no HTTP answer: {data[:200]!r}'
    return int(data.split(b' ', 2)[1]), data


class Collect(logging.Handler):
    def __init__(self): super().__init__(logging.DEBUG); self.lines = []
    def emit(self, record): self.lines.append(f'{record.getMessage()} {record.exc_text or ""} {record.exc_info or ""}')


@pytest.fixture(scope='module')
def server(pg, tmp_path_factory):
    with calendar_server(pg, tmp_path_factory.mktemp('badcal')) as srv: yield srv


def test_the_corpus_is_well_formed():
    names = [c['name'] for c in CORPUS['cases']]
    assert len(names) == len(set(names)) and len(names) >= 50
    for c in CORPUS['cases']:
        assert set(c) <= {'name', 'method', 'path', 'headers', 'body', 'chunked', 'encoding', 'expect'}, c['name']
        assert c['path'].startswith('/'), c['name']


@pytest.mark.parametrize('case', CORPUS['cases'], ids=[c['name'] for c in CORPUS['cases']])
def test_hostile_request_gets_a_clean_answer(server, case):
    handler = Collect()
    loggers = [logging.getLogger(), logging.getLogger('uvicorn'), logging.getLogger('uvicorn.error')]
    for lg in loggers: lg.addHandler(handler)
    try:
        with capture_logs() as events: status, answer = send(server.url, case)
    finally:
        for lg in loggers: lg.removeHandler(handler)
    assert status < 500, answer[:600]
    if 'expect' in case: assert status in case['expect'], (status, answer[:600])
    logged = ' '.join(map(repr, events)) + ' '.join(handler.lines)
    assert 'Traceback' not in logged and 'Exception in ASGI application' not in logged, logged[:2000]
    for leak in LEAKS: assert leak not in logged, f'{leak!r} reached the logs: {logged[:2000]}'
