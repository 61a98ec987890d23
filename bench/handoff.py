#!/usr/bin/env python
"""Hand-off benchmarks (issue: Human handoff). Not a test: it records numbers, it never fails on them.

    .venv/bin/python bench/handoff.py [--requests 200] [--rows 500]
    .venv/bin/python bench/handoff.py --updates 40          # only: details after the hand-off → the rep (issue 15)

Measures, in one run and on one machine, against the local Slack receiver (tests/slack_receiver.py,
in its own process so it does not share the benchmark's interpreter) and the embedded PostgreSQL:
  * trigger → Slack 200: `deliver_handoff` with Slack and the CRM enabled (default clients from
    settings: the webhook waits for the CRM id, then posts), p50/p95 of the time from the call to
    Slack's 200, and of the whole call (records, flag, analytics event included); beside a bare
    httpx POST of the same payload to the same receiver (a new client per request with a TLS
    context built once, as the default webhook client does) as the baseline;
  * relay throughput: N outbox rows delivered by 1 relay and by 4 concurrent relays (one process,
    one pool each, `relay_once` limit 10), and by 1 and 4 relay *processes* (`run_relay`, started
    and polling before the rows are committed; time from the database clock), rows/s; beside two baselines in the same run: the outbox
    alone (claim + finish with a no-op delivery) and bare POSTs to the receiver, 10 at a time.
Writes bench/results/handoff.json and bench/results/handoff.md.

With `--updates N`: the real app over real HTTP (uvicorn, offline engine, embedded PostgreSQL, Slack bot token against
the local receiver, the relay at its default 1 s poll): N visitors become hot leads, and then give their email; measured
from the email turn's `done` event to (a) the threaded reply in the hand-off's Slack thread, (b) the CRM row carrying the
email — target ≤ 5 s p95 — beside the first hand-off measured the same way (turn `done` → the thread's first message).
Also counts leads per session (target 0 duplicates). Writes bench/results/handoff_updates.{json,md}.
"""
import argparse, asyncio, json, os, platform, statistics, subprocess, sys, tempfile, time, uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import structlog
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from leadchat.config import Settings  # noqa: E402
from leadchat.db import create_pool, database_url, migrate, stop_embedded  # noqa: E402
from leadchat.state import HandoffRequest  # noqa: E402
from leadchat.handoff import (HandoffOutcome, deliver_handoff, handoff_clients, relay_once,  # noqa: E402
                              slack_payload)
from leadchat.packet import generate_context_packet  # noqa: E402
from leadchat.repos import enqueue_handoff, upsert_session  # noqa: E402
from leadchat.db import DataKey, Keyring, new_data_key  # noqa: E402
# the visitor's PII is sealed at rest (0017): this run's seeding and its relays (here and in child processes) share one key
os.environ.setdefault('LEADCHAT_DATA_KEY', new_data_key())
KR = Keyring(DataKey.parse(os.environ['LEADCHAT_DATA_KEY']))
from leadchat.state import Message, QualificationState, SessionState, SignalEntry  # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))   # warnings and up only
TLS = httpx.create_ssl_context()   # built once, as leadchat.handoff does
NOW = datetime(2026, 11, 23, 10, 30, tzinfo=timezone.utc)


def pct(xs, p): return statistics.quantiles(xs, n=100, method='inclusive')[p - 1] if len(xs) > 1 else xs[0]


def start_receiver():
    "The Slack receiver in a separate process; returns (process, webhook URL)."
    code = ('import sys, time; sys.path.insert(0, "tests"); from slack_receiver import SlackReceiver; '
            'r = SlackReceiver(); print(r.webhook_url, flush=True); time.sleep(10**6)')
    p = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip()


def request(i: int, tag: str) -> HandoffRequest:
    sid = f'bench-{tag}-{i}'
    sig = [SignalEntry(dimension=d, level='confirmed', signal_type='explicit', turn_index=n + 1,
                       evidence='we need a retrieval assistant live before Q3')
           for n, d in enumerate(['problem_fit', 'authority_fit', 'company_fit', 'timing_fit'])]
    st = SessionState(session_id=sid, created_at=NOW, last_updated_at=NOW, lead_level='hot', handoff_reason='hot_lead',
                      visitor_email=f'lead{i}@acme.io', visitor_company=f'Acme {i}', visitor_role='CTO',
                      qualification=QualificationState(problem_fit='confirmed', authority_fit='confirmed',
                                                       company_fit='confirmed', timing_fit='confirmed', signals_observed=sig),
                      messages=[Message(role='user', content='When can we start?', turn_index=6, at=NOW)])
    return HandoffRequest(session_id=sid, handoff_reason='hot_lead', lead_level='hot', business_hours=True,
                          session_state=st, triggered_at=NOW)


async def seed(pool, n, tag, *, outbox: bool) -> list[HandoffRequest]:
    reqs = [request(i, tag) for i in range(n)]
    async with pool.connection() as c:
        async with c.transaction():
            for r in reqs:
                await upsert_session(c, r.session_state, keyring=KR)
                if outbox: await enqueue_handoff(c, session_id=r.session_id, handoff_reason=r.handoff_reason,
                                                 request=r.model_dump(mode='json'), keyring=KR)
    return reqs


class TimedSlack:
    "Wraps the default Slack client and notes when Slack's 200 arrived."
    def __init__(self, inner): self.inner, self.done = inner, None
    async def deliver(self, *a, **k):
        r = await self.inner.deliver(*a, **k)
        self.done = time.perf_counter()
        return r


async def bench_latency(pool, settings, hook, n):
    reqs = await seed(pool, n + 10, f'lat{uuid.uuid4().hex[:6]}', outbox=False)
    payload = slack_payload(generate_context_packet(reqs[0].session_state), True, 'https://crm.example.test/leads/1')
    base = []
    for _ in range(10):   # warm-up
        async with httpx.AsyncClient(verify=TLS) as h: await h.post(hook, json=payload)
    for _ in tqdm(range(n), desc='bare POST'):
        t = time.perf_counter()
        async with httpx.AsyncClient(timeout=10, verify=TLS) as h: r = await h.post(hook, json=payload)
        assert r.status_code == 200
        base.append((time.perf_counter() - t) * 1000)
    to_slack, whole = [], []
    for i, r in enumerate(tqdm(reqs, desc='deliver_handoff')):
        slack = TimedSlack(handoff_clients(settings, pool)['slack'])
        t = time.perf_counter()
        out = await deliver_handoff(r, settings=settings, pool=pool, slack=slack)
        end = time.perf_counter()
        assert out.outcome == 'complete', out.summary()
        if i >= 10:   # the first 10 are warm-up
            to_slack.append((slack.done - t) * 1000)
            whole.append((end - t) * 1000)
    q = lambda xs: dict(p50_ms=round(pct(xs, 50), 2), p95_ms=round(pct(xs, 95), 2), n=len(xs))
    return dict(trigger_to_slack_200=q(to_slack), deliver_handoff_total=q(whole), bare_post_baseline=q(base))


async def run_relays(url, settings, k, deliver=deliver_handoff):
    pools = [await create_pool(url, max_size=12) for _ in range(k)]
    async def relay(p, name):
        n = 0
        while m := await relay_once(p, settings, worker=name, limit=10, deliver=deliver): n += m
        return n
    t = time.perf_counter()
    counts = await asyncio.gather(*(relay(p, f'bench-relay-{i}') for i, p in enumerate(pools)))
    dt = time.perf_counter() - t
    for p in pools: await p.close()
    return sum(counts), dt


async def noop_deliver(request, *, settings, pool):
    return HandoffOutcome(request.session_id, request.handoff_reason, 'complete', {})


RELAY_PROCESS = '''
import asyncio, sys, structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
from leadchat.config import get_settings
from leadchat.db import create_pool
from leadchat.handoff import run_relay
async def main():
    s = get_settings()
    pool = await create_pool(s.database_url, max_size=12)
    print('ready', flush=True)
    await run_relay(pool, s, worker=sys.argv[1], interval=0.02, stop=asyncio.Event())
asyncio.run(main())
'''


async def relay_processes(url, pool, hook, rows, k):
    "k relay processes, started and polling before the rows appear (one commit); rows/s from the database clock."
    env = {**os.environ, 'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid',
           'DATABASE_URL': url, 'HANDOFF_CHANNELS': 'slack,crm', 'SLACK_WEBHOOK_URL': hook}
    procs = [subprocess.Popen([sys.executable, '-c', RELAY_PROCESS, f'proc-{k}-{i}'], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for i in range(k)]
    try:
        for p in procs: assert p.stdout.readline().strip() == 'ready'
        await asyncio.sleep(0.3)
        tag = f'proc{uuid.uuid4().hex[:6]}'
        await seed(pool, rows, tag, outbox=True)
        async with pool.connection() as c:
            while True:
                r = await (await c.execute(
                    '''SELECT count(*) FILTER (WHERE status = 'delivered') AS done, count(*) AS n,
                              extract(epoch FROM max(finished_at) - min(created_at)) AS secs,
                              count(DISTINCT claimed_by) AS workers
                       FROM handoff_outbox WHERE session_id LIKE %s''', [f'bench-{tag}-%'])).fetchone()
                if r['done'] == r['n']: break
                await asyncio.sleep(0.05)
    finally:
        for p in procs: p.kill(); p.wait()
    secs = float(r['secs'])
    return dict(rows=r['done'], seconds=round(secs, 3), rows_per_s=round(r['done'] / secs, 1), workers_used=r['workers'])


async def bench_relays(url, pool, settings, hook, rows):
    out = {}
    for name, k, deliver in [('outbox only (no-op delivery), 1 relay', 1, noop_deliver),
                             ('1 relay', 1, deliver_handoff), ('4 relays', 4, deliver_handoff)]:
        await seed(pool, rows, f'rel{uuid.uuid4().hex[:6]}', outbox=True)
        n, dt = await run_relays(url, settings, k, deliver)
        assert n == rows, (name, n)
        out[name] = dict(rows=n, seconds=round(dt, 3), rows_per_s=round(n / dt, 1))
    payload = slack_payload(generate_context_packet(request(0, 'x').session_state), True, None)
    sem = asyncio.Semaphore(10)
    async def post():
        async with sem:
            async with httpx.AsyncClient(timeout=10, verify=TLS) as h:
                assert (await h.post(hook, json=payload)).status_code == 200
    t = time.perf_counter()
    await asyncio.gather(*(post() for _ in range(rows)))
    dt = time.perf_counter() - t
    out['bare POSTs, 10 at a time (baseline)'] = dict(rows=rows, seconds=round(dt, 3), rows_per_s=round(rows / dt, 1))
    for k in (1, 4): out[f'{k} relay process(es)'] = await relay_processes(url, pool, hook, rows, k)
    return out


HOT = "I'm the CTO of a 300-person insurer; we're building a claims RAG assistant and need it live by Q2."


def bench_updates(n: int) -> dict:
    "Contact details after the hand-off → Slack thread reply and CRM row, over real HTTP (see the module docstring)."
    import psycopg
    from httpx_sse import connect_sse
    sys.path.insert(0, str(ROOT / 'tests'))
    from slack_receiver import SlackReceiver
    from leadchat.api import create_app
    from leadchat.evaluate import BackgroundServer
    home = tempfile.mkdtemp(prefix='lc-bench-upd-')
    boot = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                    leadchat_home=home)
    url = database_url(boot)
    asyncio.run(migrate(url, boot))

    def say(c, sid, text):
        with connect_sse(c, 'POST', '/chat', json={'message': text}, headers={'ZGC-Session-ID': sid}) as es:
            for ev in es.iter_sse():
                if ev.event in ('done', 'error'): return ev.event
    def wait(fn, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (v := fn()) is not None: return v
            time.sleep(0.01)
        raise TimeoutError('nothing arrived within 30 s')
    first, slack_lat, crm_lat = [], [], []
    try:
        with SlackReceiver() as rx, psycopg.connect(url, autocommit=True) as db:
            s = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', database_url=url,
                         leadchat_home=home, handoff_channels='slack,crm', slack_bot_token='xoxb-bench', slack_channel='C0BENCH',
                         slack_api_url=rx.api_url, leadchat_rate_limit_ip_per_minute=10_000,
                         leadchat_rate_limit_session_per_minute=10_000)
            lead = lambda sid: db.execute('SELECT email, slack_ts FROM leads WHERE session_id = %s', [sid]).fetchone()
            def reply_at(ts, addr):
                return next((r['at'] for r in list(rx.requests) if r['path'].endswith('chat.postMessage')
                             and isinstance(r['body'], dict) and r['body'].get('thread_ts') == ts and addr in r['body'].get('text', '')), None)
            with BackgroundServer(create_app(s, knowledge_path=str(ROOT / 'knowledge'))) as srv, srv.client() as c:
                for i in tqdm(range(n), desc='updates'):
                    sid, addr = str(uuid.uuid4()), f'visitor{i}@acme-bench.example'
                    assert say(c, sid, HOT) == 'done'
                    t0 = time.monotonic()
                    ts = wait(lambda: (r := lead(sid)) and r[1] or None)
                    first.append((time.monotonic() - t0) * 1000)
                    assert say(c, sid, addr) == 'done'
                    t1 = time.monotonic()
                    crm_at = wait(lambda: time.monotonic() if (r := lead(sid)) and r[0] == addr else None)
                    slack_at = wait(lambda: reply_at(ts, addr))
                    slack_lat.append((slack_at - t1) * 1000)
                    crm_lat.append((crm_at - t1) * 1000)
            dup = db.execute('SELECT count(*) FROM (SELECT session_id FROM leads GROUP BY session_id HAVING count(*) > 1) x').fetchone()[0]
            sessions = db.execute('SELECT count(DISTINCT session_id) FROM leads').fetchone()[0]
    finally: stop_embedded(boot)
    q = lambda xs: dict(p50_ms=round(pct(xs, 50), 1), p95_ms=round(pct(xs, 95), 1), max_ms=round(max(xs), 1), n=len(xs))
    return dict(handoff_to_thread=q(first), email_to_slack_reply=q(slack_lat), email_to_crm_row=q(crm_lat),
                sessions=sessions, duplicate_leads=dup, relay_interval_s=1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--requests', type=int, default=200)
    ap.add_argument('--rows', type=int, default=500)
    ap.add_argument('--updates', type=int, default=0, help='only measure details after the hand-off, over N sessions')
    a = ap.parse_args()
    os.chdir(ROOT)
    if a.updates:
        res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count(), platform=platform.platform()),
                   at=datetime.now(timezone.utc).isoformat(timespec='seconds'), **bench_updates(a.updates))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / 'handoff_updates.json').write_text(json.dumps(res, indent=2) + '\n')
        h, sl, cr = res['handoff_to_thread'], res['email_to_slack_reply'], res['email_to_crm_row']
        md = [f"# Details after the hand-off reach the rep ({res['at']}, {res['machine']['cpus']} CPUs, Python {res['machine']['python']})", '',
              'The real app over HTTP (offline engine, embedded PostgreSQL), Slack bot token against the local receiver, the '
              'relay polling every 1 s (the default). Each visitor becomes a hot lead, then gives an email.', '',
              '| measure | p50 | p95 (target ≤ 5 s) | max | baseline (same run), p95 |', '|---|---|---|---|---|',
              f"| email turn `done` → reply in the hand-off's Slack thread (n={sl['n']}) | {sl['p50_ms']:.0f} ms | {sl['p95_ms']:.0f} ms | {sl['max_ms']:.0f} ms | {h['p95_ms']:.0f} ms (hand-off turn → thread opened) |",
              f"| email turn `done` → CRM row has the email | {cr['p50_ms']:.0f} ms | {cr['p95_ms']:.0f} ms | {cr['max_ms']:.0f} ms | {h['p95_ms']:.0f} ms (hand-off turn → thread opened) |",
              '', f"Leads: {res['sessions']} sessions with a lead, {res['duplicate_leads']} with more than one.", '',
              f"Command: `.venv/bin/python bench/handoff.py --updates {a.updates}`", '']
        (RESULTS / 'handoff_updates.md').write_text('\n'.join(md))
        print('\n'.join(md))
        return
    res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count(), platform=platform.platform()),
               at=datetime.now(timezone.utc).isoformat(timespec='seconds'))
    home = tempfile.mkdtemp(prefix='lc-bench-')
    boot = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                    leadchat_home=home)
    url = database_url(boot)
    asyncio.run(migrate(url, boot))
    proc, hook = start_receiver()
    settings = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', database_url=url,
                        handoff_channels='slack,crm', slack_webhook_url=hook)

    async def go():
        pool = await create_pool(url, max_size=12)
        try:
            lat = await bench_latency(pool, settings, hook, a.requests)
            rel = await bench_relays(url, pool, settings, hook, a.rows)
        finally: await pool.close()
        return lat, rel
    try: res['latency'], res['relay'] = asyncio.run(go())
    finally:
        proc.kill()
        stop_embedded(boot)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'handoff.json').write_text(json.dumps(res, indent=2) + '\n')
    L, R = res['latency'], res['relay']
    b, s, w = L['bare_post_baseline'], L['trigger_to_slack_200'], L['deliver_handoff_total']
    one, four = R['1 relay'], R['4 relays']
    p1, p4 = R['1 relay process(es)'], R['4 relay process(es)']
    ob, hb = R['outbox only (no-op delivery), 1 relay'], R['bare POSTs, 10 at a time (baseline)']
    md = [f"# Hand-off benchmarks ({res['at']}, {res['machine']['cpus']} CPUs, Python {res['machine']['python']})", '',
          'Slack is the local receiver (tests/slack_receiver.py) in its own process; the CRM is the embedded PostgreSQL.', '',
          '| measure | result | baseline (same run) | ratio |', '|---|---|---|---|',
          f"| trigger → Slack 200, p50 (`deliver_handoff`, Slack + CRM, n={s['n']}) | {s['p50_ms']:.2f} ms | {b['p50_ms']:.2f} ms (bare httpx POST) | {s['p50_ms']/b['p50_ms']:.1f}× |",
          f"| trigger → Slack 200, p95 | {s['p95_ms']:.2f} ms | {b['p95_ms']:.2f} ms (bare httpx POST) | {s['p95_ms']/b['p95_ms']:.1f}× |",
          f"| whole `deliver_handoff` (+ 3 records, flag, event), p95 | {w['p95_ms']:.2f} ms | {b['p95_ms']:.2f} ms (bare httpx POST) | {w['p95_ms']/b['p95_ms']:.1f}× |",
          f"| relay throughput, 1 relay ({one['rows']} rows) | {one['rows_per_s']:.0f} rows/s | {hb['rows_per_s']:.0f} POSTs/s (bare, 10 at a time); {ob['rows_per_s']:.0f} rows/s (outbox only) | {one['rows_per_s']/hb['rows_per_s']:.2f}× of bare POSTs |",
          f"| relay throughput, 4 relays in one process ({four['rows']} rows) | {four['rows_per_s']:.0f} rows/s | {one['rows_per_s']:.0f} rows/s (1 relay) | {four['rows_per_s']/one['rows_per_s']:.2f}× |",
          f"| relay throughput, 1 relay process, polling ({p1['rows']} rows) | {p1['rows_per_s']:.0f} rows/s | {hb['rows_per_s']:.0f} POSTs/s (bare) | {p1['rows_per_s']/hb['rows_per_s']:.2f}× |",
          f"| relay throughput, 4 relay processes, polling ({p4['rows']} rows, {p4['workers_used']} used) | {p4['rows_per_s']:.0f} rows/s | {p1['rows_per_s']:.0f} rows/s (1 process) | {p4['rows_per_s']/p1['rows_per_s']:.2f}× |",
          '', f"Command: `.venv/bin/python bench/handoff.py --requests {a.requests} --rows {a.rows}`", '']
    (RESULTS / 'handoff.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__': main()
