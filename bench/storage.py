#!/usr/bin/env python
"""Storage benchmarks (issue: Storage). Not a test: it records numbers, it never fails on them.

    .venv/bin/python bench/storage.py [--turns 300] [--purge-sessions 100000]

Measures, in one run and on one machine:
  * embedded PostgreSQL start: cold (initdb + start) and warm (existing data dir, server stopped),
    each in a fresh process, beside the bare interpreter start as the baseline;
  * one turn's checkpoint read + write through a LangGraph graph whose state is a realistic
    SessionState (10-exchange window, signals, visitor fields), with leadchat's saver on the
    embedded server vs LangGraph's InMemorySaver (the baseline), p50/p95;
  * purge of N old sessions (each with 2 transcript rows, 2 events and a checkpoint), beside
    the dry run (counting the same rows) as the baseline.
Writes bench/results/storage.json and bench/results/storage.md.
"""
import argparse, asyncio, json, os, platform, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from leadchat.config import Settings  # noqa: E402
from leadchat.db import create_checkpointer, create_pool, database_url, migrate, stop_embedded  # noqa: E402
from leadchat.repos import purge_sessions  # noqa: E402
from leadchat.state import (QualificationDelta, SessionState, SignalEntry, append_message,  # noqa: E402
                            apply_delta)

RESULTS = ROOT / 'bench' / 'results'


def pct(xs, p): return statistics.quantiles(xs, n=100, method='inclusive')[p - 1] if len(xs) > 1 else xs[0]


def settings(home): return Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid',
                                    handoff_channels='crm', leadchat_home=home)


def timed_process(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, '-c', code], check=True, capture_output=True)
    return (time.perf_counter() - t) * 1000


def bench_start(repeats=3):
    base = [timed_process('import leadchat.db') for _ in range(repeats)]
    cold, warm = [], []
    for _ in tqdm(range(repeats), desc='embedded start'):
        home = tempfile.mkdtemp(prefix='lc-bench-')
        code = (f'from leadchat.db import database_url; from leadchat.config import Settings; import psycopg;'
                f'psycopg.connect(database_url(Settings(rag_relevance_threshold=0.4, business_hours_timezone="UTC",'
                f'handoff_channels="crm", leadchat_home={home!r}))).execute("SELECT 1")')
        cold.append(timed_process(code))
        warm.append(timed_process(code))
    return dict(import_only_ms=statistics.median(base), cold_ms=statistics.median(cold), warm_ms=statistics.median(warm))


def realistic_state(sid):
    s = SessionState(session_id=sid)
    for t in range(1, 11):
        s = append_message(s, 'user', 'We are evaluating a retrieval assistant for our support team. ' * 3,
                           turn_index=t, window_turns=10)
        s = append_message(s, 'assistant', 'Here is how a similar engagement went for a fintech client. ' * 6,
                           turn_index=t, window_turns=10)
    sig = [SignalEntry(dimension=d, level='confirmed', signal_type='explicit', evidence='we need this live by Q3',
                       turn_index=i + 1) for i, d in enumerate(['problem_fit', 'authority_fit', 'company_fit', 'timing_fit'])]
    return apply_delta(s, QualificationDelta(signals=sig, visitor_email='ana@example.com', visitor_company='Acme'))


def graph_with(saver):
    from langgraph.graph import END, START, StateGraph
    g = StateGraph(SessionState)
    g.add_node('write_state', lambda s: {'turn_counter': s.turn_counter + 1})
    g.add_edge(START, 'write_state'); g.add_edge('write_state', END)
    return g.compile(checkpointer=saver)


async def bench_checkpoint(url, turns):
    from langgraph.checkpoint.memory import InMemorySaver
    pool = await create_pool(url, max_size=4)
    out = {}
    for name, saver in [('InMemorySaver (baseline)', InMemorySaver()), ('LeadchatSaver (Postgres)', create_checkpointer(pool))]:
        g = graph_with(saver)
        state = realistic_state('seed')
        for i in range(5):  # warm-up: a few sessions with history
            await g.ainvoke(state.model_copy(update={'session_id': f'warm-{i}'}), {'configurable': {'thread_id': f'w-{name}-{i}'}}, durability='exit')
        xs = []
        cfg = {'configurable': {'thread_id': f'bench-{name}-{time.time()}'}}
        await g.ainvoke(state, cfg, durability='exit')
        for _ in tqdm(range(turns), desc=name):
            t = time.perf_counter()
            await g.ainvoke({'turn_counter': 0}, cfg, durability='exit')   # one turn: read, run, write once
            xs.append((time.perf_counter() - t) * 1000)
        out[name] = dict(p50_ms=round(pct(xs, 50), 3), p95_ms=round(pct(xs, 95), 3), n=len(xs))
    await pool.close()
    return out


async def bench_purge(url, n):
    pool = await create_pool(url, max_size=2)
    async with pool.connection() as c:
        old = datetime.now(timezone.utc) - timedelta(days=200)
        await c.execute('''INSERT INTO sessions (session_id, created_at, last_updated_at)
                           SELECT 'p-' || g, %s, %s FROM generate_series(1, %s) g''', [old, old, n])
        await c.execute('''INSERT INTO transcript (session_id, turn_index, role, content)
                           SELECT 'p-' || g, 1, r, 'hello there' FROM generate_series(1, %s) g,
                           unnest(ARRAY['user', 'assistant']) r''', [n])
        await c.execute('''INSERT INTO analytics_events (session_id, event_type, payload)
                           SELECT 'p-' || g, e, '{}' FROM generate_series(1, %s) g,
                           unnest(ARRAY['session_started', 'turn_completed']) e''', [n])
        await c.execute('''INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, checkpoint, metadata)
                           SELECT 'p-' || g, '', 'c1', '{}'::jsonb, '{}'::jsonb FROM generate_series(1, %s) g''', [n])
        t = time.perf_counter(); dry = await purge_sessions(c, dry_run=True); dry_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter(); done = await purge_sessions(c); real_ms = (time.perf_counter() - t) * 1000
    await pool.close()
    assert dry.sessions == done.sessions == n, (dry, done)
    return dict(sessions=n, dry_run_ms=round(dry_ms, 1), purge_ms=round(real_ms, 1), deleted=done.model_dump())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--turns', type=int, default=300)
    ap.add_argument('--purge-sessions', type=int, default=100_000)
    a = ap.parse_args()
    os.chdir(ROOT)
    res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count(), platform=platform.platform()),
               at=datetime.now(timezone.utc).isoformat(timespec='seconds'))
    res['embedded_start'] = bench_start()
    home = tempfile.mkdtemp(prefix='lc-bench-')
    cfg = settings(home)
    url = database_url(cfg)
    asyncio.run(migrate(url, cfg))
    res['checkpoint_turn'] = asyncio.run(bench_checkpoint(url, a.turns))
    res['purge'] = asyncio.run(bench_purge(url, a.purge_sessions))
    stop_embedded(cfg)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'storage.json').write_text(json.dumps(res, indent=2) + '\n')
    s, c, p = res['embedded_start'], res['checkpoint_turn'], res['purge']
    mem, pg = c['InMemorySaver (baseline)'], c['LeadchatSaver (Postgres)']
    md = [f"# Storage benchmarks ({res['at']}, {res['machine']['cpus']} CPUs, Python {res['machine']['python']})", '',
          '| measure | result | baseline (same run) | ratio |', '|---|---|---|---|',
          f"| embedded start, cold (initdb + start + SELECT 1, new process) | {s['cold_ms']:.0f} ms | {s['import_only_ms']:.0f} ms (process + import only) | {s['cold_ms']/s['import_only_ms']:.1f}× |",
          f"| embedded start, warm (existing data dir) | {s['warm_ms']:.0f} ms | {s['import_only_ms']:.0f} ms | {s['warm_ms']/s['import_only_ms']:.1f}× |",
          f"| one turn, checkpoint read + write, p50 (10-exchange SessionState) | {pg['p50_ms']:.2f} ms | {mem['p50_ms']:.2f} ms (InMemorySaver) | {pg['p50_ms']/mem['p50_ms']:.1f}× |",
          f"| one turn, checkpoint read + write, p95 | {pg['p95_ms']:.2f} ms | {mem['p95_ms']:.2f} ms (InMemorySaver) | {pg['p95_ms']/mem['p95_ms']:.1f}× |",
          f"| purge {p['sessions']:,} old sessions (+2 transcript rows, 2 events, 1 checkpoint each) | {p['purge_ms']/1000:.2f} s | {p['dry_run_ms']/1000:.2f} s (dry run, same rows) | {p['purge_ms']/p['dry_run_ms']:.1f}× |",
          '', f"Command: `.venv/bin/python bench/storage.py --turns {a.turns} --purge-sessions {a.purge_sessions}`", '']
    (RESULTS / 'storage.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__': main()
