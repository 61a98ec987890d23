#!/usr/bin/env python
"""Tracing overhead (issue 17 item 5): the same chat turns with tracing off and on, measured in one run. Records; never pass/fail.

    .venv/bin/python bench/tracing.py [--turns 400] [--sessions 1 20] [--smoke]

Two API processes on one data home (one embedded PostgreSQL), the offline engine, over HTTP on loopback:
  * off: no OTEL_* variables (leadchat.telemetry's helpers are no-ops; no instrumentation);
  * sdk:  tracing on with the SDK and a no-op exporter (the target's measure): server spans, psycopg/httpx instrumentation,
          leadchat's spans, every span built and ended, nothing encoded or sent;
  * sdk_no_db: the same less psycopg's span per query — the default since per-query spans need LEADCHAT_TRACE_SQL;
  * sdk_own: leadchat's own spans only (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=psycopg,fastapi,httpx);
  * otlp: OTEL_TRACES_EXPORTER=otlp to a local OTLP/HTTP sink in this process that accepts and drops every batch — the
          whole production path, with the batch processor and the exporter's protobuf encoding (its background thread).
Five API processes on one data home; every visitor's turns rotate between them (the order shifts each turn), the
same text on each, so drift in the machine's load falls on all alike. Reported per concurrency level: p50/p95 per
turn for each, and each minus off.
Writes bench/results/tracing.json and bench/results/tracing.md.
"""
import argparse, asyncio, json, os, platform, random, statistics, subprocess, sys, tempfile, threading, time, uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / 'bench' / 'results'
sys.path.insert(0, str(ROOT / 'bench'))
from orchestrator import MESSAGES, free_port, one_turn, pct, ready   # noqa: E402


class Sink:
    "A local OTLP/HTTP receiver that accepts every export and counts it (a collector that drops everything)."
    def __init__(self):
        sink = self
        self.requests = self.bytes = 0
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                sink.requests += 1; sink.bytes += len(body)
                self.send_response(200); self.send_header('Content-Type', 'application/x-protobuf')
                self.send_header('Content-Length', '0'); self.end_headers()
            def log_message(self, *a): pass
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


MODES = tuple(os.environ.get('BENCH_TRACING_MODES', 'off sdk sdk_no_db sdk_own otlp').split())


def start_server(port, home, extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith('OTEL_')}
    env.update({'RAG_RELEVANCE_THRESHOLD': '0.263', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
                'LEADCHAT_HOME': home, 'LEADCHAT_RATE_LIMIT_IP_PER_MINUTE': '100000',
                'LEADCHAT_RATE_LIMIT_SESSION_PER_MINUTE': '10000', **extra_env})
    p = subprocess.Popen([sys.executable, __file__, '--serve', '--port', str(port)], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return ready(p, port, tries=900)


def serve(port):
    "An API process (run by this script with --serve); tracing as the OTEL_* variables say."
    import uvicorn
    from leadchat.api import create_app
    from leadchat.config import get_settings
    from leadchat import telemetry
    if os.environ.get('BENCH_TRACING') == 'noop': telemetry.setup_tracing(_Noop())
    app = create_app(get_settings(), knowledge_path=str(ROOT / 'knowledge'))

    @app.get('/__tracing', include_in_schema=False)
    async def on(): return {'on': telemetry.tracing_on()}
    uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning', backlog=4096, timeout_keep_alive=120)


class _Noop:
    "A span exporter that drops everything (built lazily: the SDK is imported only where it is used)."
    def __new__(cls):
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
        class Noop(SpanExporter):
            def export(self, spans): return SpanExportResult.SUCCESS
        return Noop()


async def in_process(turns):
    """leadchat's own spans alone, in one process: `ChatService.turn` with a zero-cost model (bench/orchestrator.py's
    NullModel/NullRetriever) on the embedded PostgreSQL, tracing switched off and on (SDK, no-op exporter, no
    instrumentation) in alternating blocks of 10 turns; wall time per turn."""
    from leadchat import telemetry
    from leadchat.db import migrate, open_database, stop_embedded
    from leadchat.service import ChatService
    from orchestrator import NullModel, NullRetriever, settings
    cfg = settings(tempfile.mkdtemp(prefix='lc-bench-trace-'), stall_turn_threshold=10_000)
    db = await open_database(cfg, max_size=8); await migrate(db.url, cfg)
    svc = ChatService(cfg, db, model=NullModel(), retriever=NullRetriever())
    sids, lat = [str(uuid.uuid4()) for _ in range(20)], {'off': [], 'on': []}
    try:
        for i in range(2 * turns + 40):
            on = (i // 10) % 2 == 1
            if on and not telemetry.tracing_on(): telemetry.setup_tracing(_Noop(), instrument=False)
            if not on and telemetry.tracing_on(): telemetry.shutdown_tracing()
            t = time.perf_counter()
            async for _ in svc.turn(sids[i % len(sids)], MESSAGES[i % len(MESSAGES)]): pass
            if i >= 40: lat['on' if on else 'off'].append((time.perf_counter() - t) * 1000)   # the first 40 warm up
    finally:
        telemetry.shutdown_tracing()
        await db.close(); stop_embedded(cfg)
    st = {k: dict(p50_ms=pct(v, 50), p95_ms=pct(v, 95), turns=len(v)) for k, v in lat.items()}
    return dict(**st, added_p50_ms=round(st['on']['p50_ms'] - st['off']['p50_ms'], 2),
                added_p95_ms=round(st['on']['p95_ms'] - st['off']['p95_ms'], 2))


async def interleaved(bases, sessions, turns):
    "`sessions` visitors per process, each taking `turns` turns in alternation off/on (the pair's order flips)."
    import httpx
    lat = {k: [] for k in bases}
    errors = {k: 0 for k in bases}
    limits = httpx.Limits(max_connections=sessions * 2 + 10, max_keepalive_connections=sessions * 2 + 10)
    clients = {k: httpx.AsyncClient(base_url=b, timeout=60, limits=limits) for k, b in bases.items()}
    async def visitor(k):
        rng = random.Random(k)
        sids = {name: str(uuid.uuid4()) for name in bases}
        for i in range(turns):
            msg = f'{rng.choice(MESSAGES)} (ref {rng.randrange(10**9)})'
            names = list(bases)
            order = names[(i + k) % len(names):] + names[:(i + k) % len(names)]
            for name in order:
                ms, err = await one_turn(clients[name], sids[name], msg)      # the same text on both
                if err: errors[name] += 1
                else: lat[name].append(ms)
    try: await asyncio.gather(*(visitor(k) for k in range(sessions)))
    finally:
        for c in clients.values(): await c.aclose()
    return lat, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--serve', action='store_true'); ap.add_argument('--port', type=int)
    ap.add_argument('--turns', type=int, default=400, help='turns per process at one session (divided among sessions above it)')
    ap.add_argument('--sessions', type=int, nargs='+', default=[1, 4])
    ap.add_argument('--smoke', action='store_true', help='seconds-long run for `make test`: tiny sizes, nothing written')
    a = ap.parse_args()
    if a.serve: return serve(a.port)
    if a.smoke: a.turns, a.sessions = 6, [1]
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))     # warnings and up only
    own = asyncio.run(in_process(20 if a.smoke else a.turns))
    import httpx
    sink = Sink()
    home = tempfile.mkdtemp(prefix='lc-bench-trace-')
    ports = {k: free_port() for k in MODES}
    env = {'off': {}, 'sdk': {'BENCH_TRACING': 'noop', 'LEADCHAT_TRACE_SQL': 'true'},      # everything on
           'sdk_no_db': {'BENCH_TRACING': 'noop', 'OTEL_PYTHON_DISABLED_INSTRUMENTATIONS': 'psycopg'},
           'sdk_own': {'BENCH_TRACING': 'noop', 'OTEL_PYTHON_DISABLED_INSTRUMENTATIONS': 'psycopg,fastapi,httpx'}, 'otlp': {'OTEL_TRACES_EXPORTER': 'otlp', 'LEADCHAT_TRACE_SQL': 'true', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT': f'{sink.url}/v1/traces',
                             'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL': 'http/protobuf', 'OTEL_BSP_SCHEDULE_DELAY': '1000'}}
    procs = {}
    try:
        procs['off'] = start_server(ports['off'], home, env['off'])       # migrations and ingest on a cold home, first
        for k in MODES[1:]: procs[k] = start_server(ports[k], home, env[k])
        import psutil
        cpu = lambda: {k: sum(psutil.Process(p.pid).cpu_times()[:2]) for k, p in procs.items()}
        bases = {k: f'http://127.0.0.1:{p}' for k, p in ports.items()}
        for k, b in bases.items():
            assert httpx.get(f'{b}/__tracing').json()['on'] == (k != 'off'), f'the {k} process has tracing the wrong way'
        asyncio.run(interleaved(bases, 2, 5 if a.smoke else 20))            # warm-up: plans, caches, the classifiers
        runs = []
        for n in a.sessions:
            t0, c0 = time.perf_counter(), cpu()
            lat, errors = asyncio.run(interleaved(bases, n, max(2, a.turns // n)))
            c1 = cpu()
            st = {k: dict(p50_ms=pct(v, 50), p95_ms=pct(v, 95), mean_ms=round(statistics.fmean(v), 2), turns=len(v),
                          errors=errors[k], cpu_ms_per_turn=round((c1[k] - c0[k]) * 1000 / max(1, len(v)), 2))
                  for k, v in lat.items()}
            runs.append(dict(sessions=n, **st, seconds=round(time.perf_counter() - t0, 1),
                             **{f'{k}_added_{p}': round(st[k][p] - st['off'][p], 2)
                                for k in MODES[1:] for p in ('p50_ms', 'p95_ms', 'cpu_ms_per_turn')}))
        time.sleep(1.5)                                                     # the last batch exported
        out = dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), machine=dict(
                       python=platform.python_version(), cpus=os.cpu_count(), platform=platform.platform()),
                   command='.venv/bin/python bench/tracing.py ' + ' '.join(sys.argv[1:]), in_process=own, runs=runs,
                   exported=dict(requests=sink.requests, bytes=sink.bytes), target='sdk − off ≤ +1 ms p95 per turn')
    finally:
        for p in procs.values(): p.terminate(); p.wait(20)
    print(json.dumps(out, indent=1))
    if a.smoke:
        assert sink.requests > 0, 'the traced process exported no spans'
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'tracing.json').write_text(json.dumps(out, indent=1) + '\n')
    rows = '\n'.join(f"| {r['sessions']} | {k} | {r[k]['turns']} | {r[k]['p50_ms']} | {r[k]['p95_ms']} | {r[k]['cpu_ms_per_turn']} | "
                     + (f"{r[k + '_added_p50_ms']:+} | **{r[k + '_added_p95_ms']:+}** | {r[k + '_added_cpu_ms_per_turn']:+} |"
                        if k != 'off' else '– | – | – |')
                     + f" {r[k]['errors']} |" for r in runs for k in MODES)
    (RESULTS / 'tracing.md').write_text(f"""# Tracing overhead (issue 17 item 5)

`{out['command']}` — {out['date']}, {out['machine']['cpus']} CPUs, Python {out['machine']['python']}.

Five API processes on one embedded PostgreSQL, the offline engine, over HTTP on loopback; every visitor's turns
rotate between them, the same message text on each: tracing **off** (no `OTEL_*` variables), **sdk** (tracing on:
SDK, server spans, psycopg/httpx instrumentation, leadchat's spans, a no-op exporter), **sdk_no_db** (the same without
psycopg's span per query), **sdk_own** (leadchat's own spans only: `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=psycopg,fastapi,httpx`)
and **otlp** (`OTEL_TRACES_EXPORTER=otlp` to a local OTLP/HTTP sink: batch processor and protobuf encoding too).
"Server CPU / turn" is the API process's user + system CPU time over the run divided by its turns (robust to the
machine's other load, unlike wall-clock percentiles on a shared 2-core box). Per-turn latency in ms; "added" is minus off.

| sessions | tracing | turns | p50 | p95 | server CPU / turn | added p50 | added p95 | added CPU / turn | errors |
|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

In one process, leadchat's own spans alone (`ChatService.turn`, zero-cost model, tracing switched on and off in
alternating blocks of 10 turns, {own['off']['turns']} turns each): off p50 {own['off']['p50_ms']} / p95 {own['off']['p95_ms']} ms,
on p50 {own['on']['p50_ms']} / p95 {own['on']['p95_ms']} ms: **{own['added_p50_ms']:+} ms p50, {own['added_p95_ms']:+} ms p95**.

Target (issue 17): sdk − off ≤ +1 ms p95 per turn. The sink received {sink.requests} export requests
({sink.bytes / 2**20:.1f} MiB); about 27 spans a turn (16 of them psycopg's).
""")


if __name__ == '__main__':
    main()
