#!/usr/bin/env python
"""Request-body limits under load (issue 16, item 3): the API process's peak RSS while hostile chunked bodies arrive.

    .venv/bin/python bench/bodies.py [--bodies 8] [--mb 400] [--compare-mb 50] [--smoke]

One `leadchat serve`-like API process (create_app under uvicorn, the embedded PostgreSQL, the offline model, the
calendar routes for one rep without a provider) is started in a fresh data home. Its RSS is sampled (psutil, every
10 ms) while N clients at once each stream a chunked body of M MB (no Content-Length, 64 KiB chunks of one reused
buffer: the client never holds a body) to `/chat`, then to `/api/holds`. Reported per route: the baseline RSS (after
warm-up requests), the peak, what each client got back (413 `body_too_large` once the server has read past the
route's limit) and how much it had sent by then; after each run the server must still answer /healthz.
Target: peak ≤ baseline + 50 MB.

For comparison, the same runs with smaller bodies (`--compare-mb`) against the same app without its BodyLimit
middleware — the old behaviour, every body read whole before its size was checked.

Writes bench/results/bodies.json and bench/results/bodies.md (not with --smoke: 2 bodies × 5 MB, nothing written).
"""
from __future__ import annotations

import argparse, asyncio, json, os, platform, subprocess, sys, tempfile, threading, time, uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / 'bench' / 'results'
CHUNK = 64 * 1024
TARGET_MB = 50
TEAM = {'team': {'name': 'Bench', 'working_hours': {'weekdays': ['09:00-13:00', '14:00-18:00']}},
        'reps': [{'id': 'ana', 'name': 'Ana', 'email': 'ana@calderwood.example', 'calendar': {'kind': 'none'}}],
        'meeting_types': [{'id': 'intro', 'name': 'Intro call', 'duration_minutes': 30, 'horizon_days': 14}]}


def free_port() -> int:
    import socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def serve(port: int, without_limit: bool, knowledge: str):
    "The API process (run by this script with --serve): create_app from the environment's settings, under uvicorn."
    import uvicorn
    from leadchat.api import create_app
    from leadchat.web import BodyLimit
    from leadchat.config import get_settings
    app = create_app(get_settings(), knowledge_path=knowledge)
    if without_limit: app.user_middleware = [m for m in app.user_middleware if m.cls is not BodyLimit]
    uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning', timeout_keep_alive=120)


def start_server(home: str, without_limit: bool, knowledge: str) -> tuple[subprocess.Popen, int]:
    import httpx
    cal = Path(home) / 'calendar.yaml'
    cal.write_text(json.dumps(TEAM))           # JSON is YAML
    env = {**os.environ, 'RAG_RELEVANCE_THRESHOLD': '0.263', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid',
           'HANDOFF_CHANNELS': 'crm', 'LEADCHAT_HOME': home, 'LEADCHAT_CALENDAR_CONFIG': str(cal),
           'LEADCHAT_RATE_LIMIT_IP_PER_MINUTE': '100000', 'LEADCHAT_RATE_LIMIT_SESSION_PER_MINUTE': '10000'}
    port = free_port()
    args = [sys.executable, __file__, '--serve', '--port', str(port), '--knowledge', knowledge]
    p = subprocess.Popen(args + (['--without-limit'] if without_limit else []), cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(1500):
        try:
            if httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=1).status_code == 200: return p, port
        except httpx.HTTPError: pass
        if p.poll() is not None: raise SystemExit(p.stderr.read()[-3000:])
        time.sleep(0.2)
    p.kill()
    raise SystemExit('the API process did not start within 300 s')


class Sampler:
    "The peak RSS of a process, sampled every 10 ms in a thread."
    def __init__(self, pid: int):
        import psutil
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *exc): self.stop.set(); self.thread.join()


async def read_all(reader) -> bytes:
    "What the server sent until it closed the connection (or reset it)."
    data = b''
    try:
        while chunk := await reader.read(65536): data += chunk
    except (ConnectionError, OSError): pass
    return data


async def send_body(port: int, path: str, size: int) -> dict:
    "Stream a `size`-byte chunked body to `path`; stop when the server answers or closes. What was sent and received."
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    head = (f'POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n'
            f'ZGC-Session-ID: {uuid.uuid4()}\r\nConnection: close\r\n\r\n').encode()
    answer = asyncio.create_task(read_all(reader))
    chunk = b'%x\r\n' % CHUNK + b'{"message": "' + b'x' * (CHUNK - 13) + b'\r\n'
    sent, t0 = 0, time.perf_counter()
    try:
        writer.write(head)
        while sent < size and not answer.done():
            writer.write(chunk)
            await writer.drain()
            sent += CHUNK
        if not answer.done(): writer.write(b'0\r\n\r\n'); await writer.drain()
    except (ConnectionError, OSError): pass            # the server answered and closed the connection
    try: data = await asyncio.wait_for(answer, 120)
    except asyncio.TimeoutError: data = b''
    writer.close()
    status = int(data.split(b' ', 2)[1]) if data.startswith(b'HTTP/1.1 ') else None
    code = None
    if b'\r\n\r\n' in data:
        try: code = json.loads(data.split(b'\r\n\r\n', 1)[1])['error']['code']
        except (ValueError, KeyError, TypeError): pass
    return dict(status=status, code=code, sent_mb=round(sent / 2**20, 2), seconds=round(time.perf_counter() - t0, 2))


def attack(port: int, pid: int, path: str, bodies: int, mb: int) -> dict:
    import httpx, psutil
    proc = psutil.Process(pid)
    samples = []
    for _ in range(50): samples.append(proc.memory_info().rss); time.sleep(0.01)
    base = max(samples)                    # the baseline: the highest of half a second's samples before the attack
    with Sampler(pid) as s:
        t0 = time.perf_counter()
        async def go(): return await asyncio.gather(*(send_body(port, path, mb * 2**20) for _ in range(bodies)))
        res = asyncio.run(go())
        wall = time.perf_counter() - t0
        time.sleep(0.3)
    up = httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=10).status_code == 200
    answers = Counter(f"{r['status']} {r['code'] or ''}".strip() if r['status'] else 'reset before the answer was read' for r in res)
    return dict(path=path, bodies=bodies, body_mb=mb, baseline_rss_mb=round(base / 2**20, 1), peak_rss_mb=round(s.peak / 2**20, 1),
                growth_mb=round((s.peak - base) / 2**20, 1), answers=dict(answers),
                sent_mb_max=max(r['sent_mb'] for r in res), seconds=round(wall, 2), server_up_after=up,
                within_target=(s.peak - base) / 2**20 <= TARGET_MB)


def warm_up(port: int, full: bool):
    "The requests a live process has seen before an attack: the code paths (and, in a full run, the models) loaded."
    import httpx
    with httpx.Client(base_url=f'http://127.0.0.1:{port}', timeout=120) as c:
        for _ in range(3):
            c.post('/chat', content='{"message": 1}', headers={'ZGC-Session-ID': str(uuid.uuid4())})
            c.post('/api/holds', json={'slot_id': 'intro.nope'})
            if full:
                with c.stream('POST', '/chat', json={'message': 'What case studies do you have in fintech?'},
                              headers={'ZGC-Session-ID': str(uuid.uuid4())}) as r:
                    for _ in r.iter_bytes(): pass


def run(bodies: int, mb: int, *, without_limit: bool, full: bool) -> list[dict]:
    home = tempfile.mkdtemp(prefix='lc-bodies-')
    srv, port = start_server(home, without_limit, str(ROOT / 'knowledge') if full else '')
    try:
        warm_up(port, full)
        out = [attack(port, srv.pid, path, bodies, mb) for path in ('/chat', '/api/holds')]
        for o in out: o['body_limit'] = 'off (old behaviour)' if without_limit else 'on'
        return out
    finally:
        srv.terminate()
        try: srv.wait(30)
        except subprocess.TimeoutExpired: srv.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--serve', action='store_true'); ap.add_argument('--port', type=int)
    ap.add_argument('--knowledge', default=''); ap.add_argument('--without-limit', action='store_true')
    ap.add_argument('--bodies', type=int, default=8)
    ap.add_argument('--mb', type=int, default=400)
    ap.add_argument('--compare-mb', type=int, default=50, help='body size of the runs without BodyLimit (0: skip them)')
    ap.add_argument('--smoke', action='store_true', help='seconds-long run: 2 bodies × 5 MB, nothing written')
    a = ap.parse_args()
    if a.serve: return serve(a.port, a.without_limit, a.knowledge)
    if a.smoke: a.bodies, a.mb, a.compare_mb = 2, 5, 0
    t0 = time.time()
    runs = run(a.bodies, a.mb, without_limit=False, full=not a.smoke)
    if a.compare_mb: runs += run(a.bodies, a.compare_mb, without_limit=True, full=not a.smoke)
    res = dict(started_at=datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec='seconds'),
               seconds=round(time.time() - t0, 1), machine=dict(cpus=os.cpu_count(), python=platform.python_version()),
               target=f'peak RSS ≤ baseline + {TARGET_MB} MB', runs=runs)
    if a.smoke:
        print(json.dumps(res, indent=1))
        # refused: a 413, or a reset when the server closed before the client read its 413 (seen on a loaded machine)
        bad = [r for r in runs if not r['server_up_after']
               or set(r['answers']) - {'413 body_too_large', 'reset before the answer was read'}]
        if bad: raise SystemExit(f'bodies were not refused at the limit: {bad}')
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'bodies.json').write_text(json.dumps(res, indent=2) + '\n')
    cmd = f'.venv/bin/python bench/bodies.py --bodies {a.bodies} --mb {a.mb} --compare-mb {a.compare_mb}'
    md = ['# Request bodies under load (issue 16, item 3): peak RSS of the API process', '',
          f'`{cmd}` — {res["started_at"]}, {res["seconds"]} s on this machine ({os.cpu_count()} cores).', '',
          f'{a.bodies} clients at once each stream a chunked {a.mb} MB body (no Content-Length) to one route; the API '
          f'process\'s RSS is sampled every 10 ms. Target: peak ≤ baseline + {TARGET_MB} MB.', '',
          '| route | BodyLimit | bodies × MB | baseline RSS MB | peak RSS MB | growth MB | answers | most sent by one client MB | wall s | up after | within target |',
          '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in runs:
        answers = ', '.join(f'{k} ×{v}' for k, v in r['answers'].items())
        md.append(f"| `{r['path']}` | {r['body_limit']} | {r['bodies']} × {r['body_mb']} | {r['baseline_rss_mb']} | {r['peak_rss_mb']} "
                  f"| {r['growth_mb']} | {answers} | {r['sent_mb_max']} | {r['seconds']} | {r['server_up_after']} | {r['within_target']} |")
    md += ['', 'With BodyLimit the server answers `413 body_too_large` and closes the connection once it has read past the '
           "route's limit (/chat: 50,048 bytes; /api/*: 16,384); what a client had sent by then is mostly in the kernel's "
           'socket buffers, never in the process. The runs without it (the old behaviour: every body read whole, then '
           'checked) use smaller bodies; their growth scales with bodies × size.', '']
    (RESULTS / 'bodies.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__':
    main()
