#!/usr/bin/env python
"""RAG benchmarks (issue: Knowledge base and RAG triage). Records numbers; never pass/fail.

    .venv/bin/python bench/rag.py [--sizes 10000 100000] [--queries 200] [--backends torch onnx onnx-int8] [--smoke]

Every measure that involves the query embedding is taken for each embedding backend in the same run
(`LEADCHAT_EMBEDDING_BACKEND`: `torch` = sentence-transformers on PyTorch, the old path; `onnx` = the
same model exported to ONNX and run by ONNX Runtime, fp32, the default; `onnx-int8` = dynamic int8).

In one run on one machine:
  * the embedding model alone, per backend, each in a fresh process: load time (imports + model +
    first embedding), process RSS after one embedding, p50/p95 of one query, and the cosine of its
    vectors to the torch path's on the calibration queries;
  * retrieval latency (query embedding + HNSW search + threshold filter, i.e. the whole
    `retrieve_knowledge`) at each corpus size, p50/p95, beside its parts measured in the same
    run: the query embedding alone (the floor) and an exact sequential-scan search (the
    no-index baseline), per backend (the index holds fp32 vectors; int8 is timed against it, its
    quality is `leadchat calibrate --int8`'s to report). Corpora are the real knowledge base plus synthetic chunks whose vectors
    are real chunk vectors with Gaussian noise (so the index sees a realistic distribution);
  * ingest of the whole knowledge base, cold (a fresh data directory: server start, model load,
    embedding) and unchanged (nothing to embed), each as a fresh `leadchat ingest` process,
    beside `leadchat version` (process start + imports) as the baseline, for torch and onnx;
  * ranking quality, vector vs hybrid, on the committed labelled query set, for torch and onnx.
Writes bench/results/rag.json and bench/results/rag.md (`--smoke`: seconds-long, nothing written).
"""
import argparse, asyncio, json, os, platform, random, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from leadchat import calibrate as cal  # noqa: E402
from leadchat.config import Settings  # noqa: E402
from leadchat.db import create_pool, database_url, migrate, stop_embedded  # noqa: E402
from leadchat.embed import backend_embeddings  # noqa: E402
from leadchat.knowledge import ingest, load_documents  # noqa: E402
from leadchat.retrieval import KnowledgeRetriever  # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
LEADCHAT = Path(sys.executable).parent / 'leadchat'


def pct(xs, p): return statistics.quantiles(xs, n=100, method='inclusive')[p - 1]


def summary(xs): return dict(p50_ms=round(pct(xs, 50), 2), p95_ms=round(pct(xs, 95), 2), n=len(xs))


def settings(home, **kw):
    return Settings(**{**dict(rag_relevance_threshold=0.25, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                              leadchat_home=home), **kw})


def run_cli(*args, env):
    t = time.perf_counter()
    r = subprocess.run([str(LEADCHAT), *args], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    if r.returncode: raise SystemExit(r.stderr[-2000:])
    return (time.perf_counter() - t) * 1000, r.stdout.strip().splitlines()[-1]


def bench_ingest(backend):
    home = tempfile.mkdtemp(prefix='lc-bench-')
    env = dict(RAG_RELEVANCE_THRESHOLD='0.25', BUSINESS_HOURS_TIMEZONE='Europe/Madrid', HANDOFF_CHANNELS='crm', LEADCHAT_HOME=home,
               LEADCHAT_EMBEDDING_BACKEND=backend)
    base = statistics.median(run_cli('version', env=env)[0] for _ in range(3))
    cold, cold_out = run_cli('ingest', 'knowledge', env=env)
    warm = [run_cli('ingest', 'knowledge', env=env) for _ in range(3)]
    return dict(baseline_version_ms=round(base), cold_ms=round(cold), cold_report=cold_out,
                unchanged_ms=round(statistics.median(w[0] for w in warm)), unchanged_report=warm[-1][1])


MODEL_PROBE = r'''
import json, resource, statistics, sys, time
t = time.perf_counter()
from leadchat.embed import backend_embeddings
emb = backend_embeddings(sys.argv[1])
emb.embed_query('warm-up: how do you work with fintech companies?')
load_s = time.perf_counter() - t
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
queries = json.loads(sys.stdin.read())
lat, vecs = [], []
for q in queries:
    t = time.perf_counter(); vecs.append(emb.embed_query(q)); lat.append((time.perf_counter() - t) * 1000)
print(json.dumps(dict(load_s=load_s, rss_mb=rss_mb, lat=lat, vecs=vecs, torch='torch' in sys.modules)))
'''


def bench_model(backends, n):
    "Each backend in a fresh process: load time, RSS after one embedding, per-query latency; cosine to torch."
    qs = [q.query for q in cal.load_queries(ROOT / 'bench/calibration/queries.yaml')]
    rng = random.Random(5)
    queries = [rng.choice(qs) + f' {rng.randint(1, 10**6)}' for _ in range(n)]
    out, vecs = {}, {}
    for b in backends:
        r = subprocess.run([sys.executable, '-c', MODEL_PROBE, b], input=json.dumps(queries), capture_output=True, text=True, cwd=ROOT)
        if r.returncode: raise SystemExit(r.stderr[-2000:])
        m = json.loads(r.stdout.strip().splitlines()[-1])
        vecs[b] = np.array(m['vecs'], dtype=np.float32)
        out[b] = dict(load_s=round(m['load_s'], 2), rss_after_one_embed_mb=round(m['rss_mb']), query=summary(m['lat'][5:]),
                      imports_torch=m['torch'])
    ref = vecs.get('torch')
    for b in backends:
        if ref is not None: out[b]['cosine_to_torch_min'] = round(float((vecs[b] * ref).sum(1).min()), 7)
    return out


async def add_synthetic(url, table, n_total):
    "Top the table up to `n_total` rows with noisy copies of the real vectors."
    from psycopg import AsyncConnection
    async with await AsyncConnection.connect(url, autocommit=True) as c:
        rows = await (await c.execute(f'SELECT embedding::text FROM {table} WHERE source NOT LIKE %s', ['synthetic-%'])).fetchall()
        have = (await (await c.execute(f'SELECT count(*) FROM {table}')).fetchone())[0]
        base = np.array([json.loads(r[0]) for r in rows], dtype=np.float32)
        rng = np.random.default_rng(7)
        need = n_total - have
        for start in tqdm(range(0, need, 5000), desc=f'synthetic → {n_total:,}'):
            k = min(5000, need - start)
            v = base[rng.integers(0, len(base), k)] + rng.normal(0, 0.35 / np.sqrt(base.shape[1]) * 4, (k, base.shape[1])).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            async with c.cursor().copy(f'COPY {table} (chunk_id, source, chunk_index, content, content_hash, embedding) FROM STDIN') as cp:
                for i, vec in enumerate(v):
                    j = have + start + i
                    await cp.write_row((f'syn-{j}', f'synthetic-{j // 50}', j % 50, f'synthetic filler chunk {j}', f'syn{j}',
                                        '[' + ','.join(f'{x:.6f}' for x in vec) + ']'))
        await c.execute(f'ANALYZE {table}')


async def bench_retrieval(url, cfg, sizes, n_queries, backends):
    qs = [q.query for q in cal.load_queries(ROOT / 'bench/calibration/queries.yaml')]
    rng = random.Random(3)
    queries = [rng.choice(qs) + f' {rng.randint(1, 10**6)}' for _ in range(n_queries)]  # distinct texts: no cache can help
    pool = await create_pool(url, max_size=2)
    pairs = {b: (KnowledgeRetriever(pool, cfg, backend_embeddings(b), ranking='vector'),
                 KnowledgeRetriever(pool, cfg, backend_embeddings(b), ranking='hybrid')) for b in backends}
    for r, h in pairs.values():
        for q in queries[:10]: await r.retrieve_knowledge(q); await h.retrieve_knowledge(q)   # warm-up (model, plans, buffers)
    out = {}
    for n in sizes:
        r = pairs[backends[0]][0]
        await add_synthetic(url, r.table, n)
        out[n] = {}
        for b, (r, h) in pairs.items():
            emb, total, hyb = [], [], []
            for q in tqdm(queries, desc=f'{b} retrieve @ {n:,}'):       # same texts for every backend (no cache here)
                t = time.perf_counter(); v = await r.embed(q); emb.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter(); await r.retrieve_knowledge(q); total.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter(); await h.retrieve_knowledge(q); hyb.append((time.perf_counter() - t) * 1000)
            out[n][b] = dict(retrieve=summary(total), retrieve_hybrid=summary(hyb), embed_only=summary(emb))
        exact = []
        r = pairs[backends[-1]][0]
        async with pool.connection() as c:                          # exact scan, the no-index baseline
            vs = [await r.embed(q) for q in queries[:40]]
            for v in vs:
                vec = '[' + ','.join(f'{x:.7g}' for x in v) + ']'
                async with c.transaction():
                    await c.execute('SET LOCAL enable_indexscan = off')
                    t = time.perf_counter()
                    await c.execute(f'SELECT chunk_id, 1 - (embedding <=> %s::vector) AS s FROM {r.table} '
                                    'ORDER BY embedding <=> %s::vector LIMIT %s', [vec, vec, cfg.rag_top_k])
                    exact.append((time.perf_counter() - t) * 1000)
        out[n]['exact_scan_search'] = summary(exact)
    await pool.close()
    return out


async def bench_quality(url, cfg, backends):
    pool = await create_pool(url, max_size=2)
    qs = cal.load_queries(ROOT / 'bench/calibration/queries.yaml')
    out = {}
    for b in backends:
        for ranking in ('vector', 'hybrid'):
            r = KnowledgeRetriever(pool, cfg, backend_embeddings(b), ranking=ranking)
            scored = await cal.score_queries(r, qs, progress=False)
            c = cal.propose_threshold(scored)
            out[f'{ranking} ({b})'] = dict(threshold=c.threshold, fp=c.false_positive_rate, fn=c.false_negative_rate,
                                           **cal.ranking_quality(scored, qs, c.threshold))
    await pool.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000])
    ap.add_argument('--queries', type=int, default=200)
    ap.add_argument('--backends', nargs='+', default=['torch', 'onnx', 'onnx-int8'], help='embedding backends, side by side')
    ap.add_argument('--smoke', action='store_true', help='seconds-long run for `make test`: tiny sizes, nothing written')
    a = ap.parse_args()
    if a.smoke: a.sizes, a.queries = [500], 8
    fp32 = [b for b in a.backends if b != 'onnx-int8']
    res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count()), at=datetime.now(timezone.utc).isoformat(timespec='seconds'),
               backends=a.backends)
    res['model'] = bench_model(a.backends, 12 if a.smoke else a.queries)
    if not a.smoke: res['ingest'] = {b: bench_ingest(b) for b in fp32}
    home = tempfile.mkdtemp(prefix='lc-bench-')
    cfg = settings(home)
    url = database_url(cfg)
    asyncio.run(migrate(url, cfg))
    async def load():
        pool = await create_pool(url, max_size=1)
        async with pool.connection() as c: await ingest(c, load_documents(ROOT / 'knowledge'), settings=cfg, progress=False)
        await pool.close()
    asyncio.run(load())
    res['quality'] = asyncio.run(bench_quality(url, cfg, fp32))          # before the synthetic rows
    res['retrieval'] = {str(k): v for k, v in asyncio.run(bench_retrieval(url, cfg, a.sizes, a.queries, a.backends)).items()}
    stop_embedded(cfg)
    if a.smoke:
        print(json.dumps(res, indent=1)); return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'rag.json').write_text(json.dumps(res, indent=2) + '\n')
    q = res['quality']
    md = [f"# RAG benchmarks ({res['at']}, {res['machine']['cpus']} CPUs, all-MiniLM-L6-v2 on CPU)", '',
          'Backends side by side in one run: `torch` = sentence-transformers on PyTorch (the old path), `onnx` = ONNX Runtime fp32 '
          '(the default), `onnx-int8` = ONNX Runtime with int8 weights (an option; needs its own calibration).', '',
          '## The embedding model alone (a fresh process per backend)', '',
          '| backend | p50 / p95 per query | cosine to torch (min over the queries) | process RSS after one embedding | load time (imports + model + first embedding) | imports torch |',
          '|---|---|---|---|---|---|']
    for b, m in res['model'].items():
        md.append(f"| {b} | {m['query']['p50_ms']} / **{m['query']['p95_ms']} ms** | {m.get('cosine_to_torch_min', '—')} | "
                  f"**{m['rss_after_one_embed_mb']} MB** | {m['load_s']} s | {'yes' if m['imports_torch'] else 'no'} |")
    md += ['', '## Retrieval latency (`retrieve_knowledge`: embed + HNSW search + threshold filter)', '',
           '| chunks | backend | vector p50 | vector p95 | hybrid p50 | hybrid p95 | embed only p95 (floor) | exact scan search p95 (no index) |',
           '|---|---|---|---|---|---|---|---|']
    for n, per in res['retrieval'].items():
        for b in a.backends:
            v = per[b]
            md.append(f"| {int(n):,} | {b} | {v['retrieve']['p50_ms']} ms | **{v['retrieve']['p95_ms']} ms** | {v['retrieve_hybrid']['p50_ms']} ms | "
                      f"**{v['retrieve_hybrid']['p95_ms']} ms** | {v['embed_only']['p95_ms']} ms | {per['exact_scan_search']['p95_ms']} ms |")
    md += ['', '## Ingest of the whole knowledge base (fresh `leadchat ingest` process each time)', '',
           '| backend | run | wall time | baseline: `leadchat version` | result |', '|---|---|---|---|---|']
    for b, i in res['ingest'].items():
        md += [f"| {b} | cold (new data dir, server start, model load, embed all) | **{i['cold_ms']/1000:.1f} s** | {i['baseline_version_ms']/1000:.1f} s | {i['cold_report']} |",
               f"| {b} | unchanged re-ingest | **{i['unchanged_ms']/1000:.1f} s** | {i['baseline_version_ms']/1000:.1f} s | {i['unchanged_report']} |"]
    md += ['', '## Ranking quality on the committed query set (threshold calibrated per ranking and backend)', '',
           '| ranking (backend) | threshold | false positives | false negatives | hit@k | MRR |', '|---|---|---|---|---|---|']
    for k, v in q.items():
        md.append(f"| {k} | {v['threshold']:.3f} | {v['fp']:.1%} | {v['fn']:.1%} | {v['hit_at_k']:.3f} | {v['mrr']:.3f} |")
    md += ['', f"Command: `.venv/bin/python bench/rag.py --sizes {' '.join(map(str, a.sizes))} --queries {a.queries} "
           f"--backends {' '.join(a.backends)}`", '']
    (RESULTS / 'rag.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__': main()
