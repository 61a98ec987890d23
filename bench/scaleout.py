#!/usr/bin/env python
"""Scale-out benchmarks (issue 17: many processes, one database). Records numbers; never pass/fail.

    .venv/bin/python bench/scaleout.py [--duration 20] [--sessions 200] [--rate 50] [--workers 1 2] [--smoke]

In one run on one machine (2 cores, loopback, the offline engine):
  * `leadchat serve --workers N` behind a real nginx (Debian's package; `proxy_bind` from a trusted address, as in
    tests/test_scaleout.py) for each N: 200 visitor sessions pacing themselves to 50 turns/s in total (think time
    between turns, every message a distinct text), then the same sessions back-to-back (saturation). Reported:
    turns/s, p50/p95 turn latency, errors; the throughput ratio of the largest N to N = 1 (the baseline);
  * the shared rate limit's cost per check: `SharedRateLimiter.hit` (one statement on PostgreSQL) beside the
    process-local `RateLimiter.hit` (the baseline), p50/p95 over many checks on the same database; a chat request
    makes two checks (per IP, per session).
The database is the embedded one `leadchat serve` starts, or with --external a PostgreSQL server started as a
separate service on a TCP port with password authentication (tests/external_pg.py, as the test tier does). Writes bench/results/scaleout.json and .md (not with --smoke).
"""
import argparse, asyncio, json, os, platform, shutil, signal, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'bench')); sys.path.insert(0, str(ROOT / 'tests'))
from orchestrator import free_port, load, pct  # noqa: E402
from test_scaleout import PROXY, nginx_conf, wait_ready  # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
LEADCHAT = Path(sys.executable).with_name('leadchat')
NGINX = shutil.which('nginx') or '/usr/sbin/nginx'


def serve_env(home: str) -> dict:
    return {**os.environ, 'RAG_RELEVANCE_THRESHOLD': '0.263', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid',
            'HANDOFF_CHANNELS': 'crm', 'LEADCHAT_HOME': home, 'LEADCHAT_TRUSTED_PROXIES': PROXY,
            'LEADCHAT_RATE_LIMIT_IP_PER_MINUTE': '100000', 'LEADCHAT_RATE_LIMIT_SESSION_PER_MINUTE': '10000'}


def behind_nginx(workers: int, home: str, tmp: Path, runs) -> dict:
    "Start `serve --workers N` and nginx in front, run `runs(base)`, stop both."
    app_port, proxy_port = free_port(), free_port()
    log = open(tmp / f'serve-{workers}.log', 'w+')          # a file, not a pipe: thousands of access-log lines would fill a pipe
    srv = subprocess.Popen([str(LEADCHAT), 'serve', '--port', str(app_port), '--workers', str(workers), '--knowledge',
                            str(ROOT / 'knowledge')], cwd=ROOT, env=serve_env(home), stdout=log, stderr=log, text=True)
    nginx = None
    try:
        wait_ready(f'http://127.0.0.1:{app_port}/readyz', srv)
        d = tmp / f'nginx-{workers}'; d.mkdir(exist_ok=True)
        nginx = subprocess.Popen([NGINX, '-c', str(nginx_conf(d, proxy_port, app_port)), '-p', str(d)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_ready(f'http://127.0.0.1:{proxy_port}/healthz', nginx)
        return runs(f'http://127.0.0.1:{proxy_port}')
    finally:
        if nginx is not None: nginx.terminate(); nginx.wait(10)
        srv.send_signal(signal.SIGTERM)
        try: srv.wait(90)
        except subprocess.TimeoutExpired:
            srv.kill(); log.seek(0); raise SystemExit(f'leadchat serve did not stop within 90 s of SIGTERM: {log.read()[-3000:]}')


def limiter_cost(n: int, home: str) -> dict:
    "Per-check cost of the shared limiter (PostgreSQL) and the process-local one, on the service's database."
    from leadchat.config import Settings
    from leadchat.db import create_pool, database_url, migrate
    from leadchat.web import RateLimiter, SharedRateLimiter
    s = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm', leadchat_home=home)
    url = database_url(s)

    async def go():
        await migrate(url, s)
        pool = await create_pool(url, max_size=4)
        shared, local = SharedRateLimiter('bench', 10**6, lambda: pool), RateLimiter(10**6)
        try:
            for i in range(50): await shared.hit(f'warm{i % 5}')
            out = {}
            for name, hit in (('process-local RateLimiter (baseline)', lambda k: local.hit(k)),
                              ('shared SharedRateLimiter (PostgreSQL)', shared.hit)):
                ts = []
                for i in range(n):
                    t = time.perf_counter()
                    r = hit(f'198.51.100.{i % 200}')
                    if asyncio.iscoroutine(r): await r
                    ts.append((time.perf_counter() - t) * 1000)
                out[name] = dict(checks=n, p50_ms=pct(ts, 50), p95_ms=pct(ts, 95))
            return out
        finally: await pool.close()
    return asyncio.run(go())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--duration', type=float, default=20)
    ap.add_argument('--sessions', type=int, default=200)
    ap.add_argument('--rate', type=float, default=50.0, help='offered turns/s in total for the paced run')
    ap.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--checks', type=int, default=2000)
    ap.add_argument('--external', action='store_true',
                    help='a PostgreSQL server of its own on a TCP port with a password (tests/external_pg.py), not the embedded one')
    ap.add_argument('--smoke', action='store_true', help='seconds-long run of every path; writes no results')
    a = ap.parse_args()
    if a.smoke: a.duration, a.sessions, a.rate, a.checks = 2, 10, 10.0, 50
    if not Path(NGINX).exists(): raise SystemExit('nginx is not installed (tools/bootstrap-system.sh installs it)')
    home = tempfile.mkdtemp(prefix='lc-scaleout-')
    tmp = Path(tempfile.mkdtemp(prefix='lc-scaleout-nginx-'))
    rows, external = [], None
    if a.external:
        from external_pg import ExternalPostgres
        external = ExternalPostgres().start()
        os.environ['DATABASE_URL'] = external.url()          # serve, its workers and the limiter bench all use it
    try:
        for w in a.workers:
            def runs(base, w=w):
                asyncio.run(load(base, 4, 2 if a.smoke else 5))                                  # warm-up
                paced = dict(asyncio.run(load(base, a.sessions, a.duration, a.rate)), workers=w, mode='paced')
                sat = dict(asyncio.run(load(base, a.sessions, a.duration)), workers=w, mode='saturation (back-to-back)')
                return [paced, sat]
            rows += behind_nginx(w, home, tmp, runs)
            print(json.dumps(rows[-2:]), flush=True)
        limits = limiter_cost(a.checks, home)
        print(json.dumps(limits), flush=True)
    finally:
        from leadchat.config import Settings
        from leadchat.db import stop_embedded
        stop_embedded(Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                               leadchat_home=home))
        shutil.rmtree(tmp, ignore_errors=True)
        if external is not None: external.stop()
    sat = {r['workers']: r['turns_per_s'] for r in rows if r['mode'].startswith('saturation')}
    ratio = round(sat[max(sat)] / sat[min(sat)], 2) if len(sat) > 1 and sat[min(sat)] else None
    if a.smoke: return
    meta = dict(when=datetime.now(timezone.utc).isoformat(timespec='seconds'), machine=f'{platform.machine()}, {os.cpu_count()} cores',
                database='external (PostgreSQL 18 on TCP, password auth)' if a.external else 'embedded (leadchat serve)',
                command=' '.join(['bench/scaleout.py'] + sys.argv[1:]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'scaleout.json').write_text(json.dumps(dict(meta=meta, http=rows, saturation_ratio=ratio, limiter=limits), indent=2) + '\n')
    md = [f'# Scale-out behind nginx ({meta["when"]}, {meta["machine"]}, database: {meta["database"]})', '',
          f'`{meta["command"]}` — offline engine, loopback, `leadchat serve --workers N` behind nginx.', '',
          '| workers | load | sessions | turns/s | p50 ms | p95 ms | errors |', '|---|---|---|---|---|---|---|']
    md += [f"| {r['workers']} | {r['mode']} | {r['sessions']} | {r['turns_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['errors']} |"
           for r in rows]
    md += ['', f'Saturation throughput, {max(sat)} workers vs 1 (the baseline): **×{ratio}**.', '',
           '## Rate-limit check cost (a chat request makes two)', '', '| limiter | checks | p50 ms | p95 ms |', '|---|---|---|---|']
    md += [f"| {k} | {v['checks']} | {v['p50_ms']} | {v['p95_ms']} |" for k, v in limits.items()]
    (RESULTS / 'scaleout.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__':
    main()
