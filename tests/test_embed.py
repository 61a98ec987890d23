"""The ONNX Runtime embedding backend (leadchat/embed.py): same vectors as the torch path, deterministic export on first use,
and no torch in the serving process, the relay or the console."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml

from leadchat.embed import EmbeddingModelError, OnnxEmbeddings, embedding_backend, ensure_onnx, model_hash, onnx_path

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = Path(sys.executable).parent / 'leadchat'
CALIBRATION = ROOT / 'bench' / 'calibration'


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def py(code: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, env=e, timeout=timeout)


def calibration_queries() -> list[str]:
    return [q['query'] for f in sorted(CALIBRATION.glob('*.yaml')) for q in yaml.safe_load(f.read_text())]


def test_fp32_vectors_equal_the_torch_path_on_the_knowledge_base_and_the_calibration_queries(kb_url):
    "The committed knowledge base (ingested by the default backend, ONNX fp32) and every calibration query: cosine ≥ 0.9999."
    from leadchat.embed import torch_embeddings
    with psycopg.connect(kb_url) as c:
        rows = c.execute('SELECT content, embedding::text FROM knowledge_chunks_minilm_l6_v2 ORDER BY chunk_id').fetchall()
    stored = np.array([json.loads(v) for _, v in rows], dtype=np.float32)
    queries = calibration_queries()
    assert len(rows) > 50 and len(queries) > 100
    torch_emb = torch_embeddings()
    old = np.asarray(torch_emb.embed_documents([t for t, _ in rows] + queries), dtype=np.float32)
    new_q = OnnxEmbeddings(ensure_onnx()).embed_array(queries)
    cos_kb = (stored * old[:len(rows)]).sum(1)
    cos_q = (new_q * old[len(rows):]).sum(1)
    assert cos_kb.min() >= 0.9999, cos_kb.min()
    assert cos_q.min() >= 0.9999, cos_q.min()


def test_int8_is_close_but_not_equal():
    texts = calibration_queries()[:40]
    fp32, int8 = OnnxEmbeddings(ensure_onnx('fp32')).embed_array(texts), OnnxEmbeddings(ensure_onnx('int8')).embed_array(texts)
    cos = (fp32 * int8).sum(1)
    assert 0.9 < cos.min() and cos.max() < 0.99999


def test_first_use_exports_in_a_child_process_deterministically(tmp_path):
    "A clean cache: the first embedding exports (torch only in the child), and the file is byte-identical to any other export."
    reference = ensure_onnx()
    r = py("import sys\nfrom leadchat.knowledge import local_embeddings\nv = local_embeddings().embed_query('hello')\n"
           "assert len(v) == 384 and 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]\n"
           "from leadchat.embed import onnx_path; print(onnx_path())",
           env={'LEADCHAT_CACHE_DIR': str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    fresh = Path(r.stdout.strip().splitlines()[-1])
    assert fresh.is_relative_to(tmp_path) and fresh.name == 'model-fp32.onnx' and model_hash() in fresh.parent.name
    assert sha256(fresh) == sha256(reference)
    assert not list(fresh.parent.glob('.*.tmp'))


def test_backend_choice_and_its_errors(monkeypatch):
    monkeypatch.setenv('LEADCHAT_EMBEDDING_BACKEND', 'onnx-int8')
    assert embedding_backend() == 'onnx-int8'
    from leadchat.knowledge import local_embeddings
    assert local_embeddings().path == onnx_path('int8')
    monkeypatch.setenv('LEADCHAT_EMBEDDING_BACKEND', 'gpu')
    with pytest.raises(EmbeddingModelError, match='LEADCHAT_EMBEDDING_BACKEND'): local_embeddings()
    monkeypatch.delenv('LEADCHAT_EMBEDDING_BACKEND')
    assert local_embeddings() is local_embeddings() and local_embeddings().path == onnx_path('fp32')


def test_backend_from_settings_reaches_retriever_classifier_and_index(tmp_path, monkeypatch):
    "LEADCHAT_EMBEDDING_BACKEND in an env file (not the environment) picks the retriever's and the classifier's runtime, and int8 its own index."
    from leadchat.config import ConfigurationError, get_settings
    from leadchat.db import knowledge_table
    from leadchat.knowledge import get_embeddings
    from leadchat.providers import get_model
    monkeypatch.delenv('LEADCHAT_EMBEDDING_BACKEND', raising=False)
    base = 'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\nLEADCHAT_MODEL_PROVIDER=offline\n'
    env = tmp_path / 'int8.env'
    env.write_text(base + 'LEADCHAT_EMBEDDING_BACKEND=onnx-int8\n')
    s = get_settings(env)
    assert s.leadchat_embedding_backend == 'onnx-int8' and get_embeddings(s).path == onnx_path('int8')
    assert knowledge_table(s)[0].endswith('_minilm_l6_v2_int8')
    assert get_model(s, embed=get_embeddings(s).embed_documents).reader.model_id.endswith(':int8')
    (env := tmp_path / 'fp32.env').write_text(base)
    s = get_settings(env)
    assert s.leadchat_embedding_backend == 'onnx' and get_embeddings(s).path == onnx_path('fp32')
    assert knowledge_table(s)[0].endswith('_minilm_l6_v2')
    (env := tmp_path / 'gpu.env').write_text(base + 'LEADCHAT_EMBEDDING_BACKEND=gpu\n')
    with pytest.raises(ConfigurationError, match='(?i)leadchat_embedding_backend'): get_settings(env)


def test_an_export_that_cannot_run_says_what_to_do(tmp_path):
    "No torch where the export runs: the error names the remedy (here torch is hidden from the child)."
    (tmp_path / 'torch').mkdir()
    (tmp_path / 'torch' / '__init__.py').write_text("raise ImportError('torch is not installed')\n")
    r = py("from leadchat.embed import ensure_onnx, EmbeddingModelError\n"
           "try: ensure_onnx()\nexcept EmbeddingModelError as e: print('ERR', e)\n",
           env={'LEADCHAT_CACHE_DIR': str(tmp_path / 'cache'), 'PYTHONPATH': str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'ERR' in r.stdout and 'torch' in r.stdout and 'leadchat models export' in r.stdout


def test_models_cli(tmp_path):
    r = subprocess.run([str(LEADCHAT), 'models', 'status'], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and 'backend onnx' in r.stdout and model_hash() in r.stdout, r.stderr
    ensure_onnx()
    r = subprocess.run([str(LEADCHAT), 'models', 'export'], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0 and 'fp32' in r.stdout and 'cached' in r.stdout, r.stderr
    r = subprocess.run([str(LEADCHAT), 'models', 'export', '-p', 'fp16'], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and 'fp32 or int8' in r.stderr


SERVE_TURNS_CONSOLE = r'''
import json, sys, uuid
from leadchat.api import create_app
from leadchat.config import get_settings
from leadchat.evaluate import BackgroundServer
s = get_settings()
sid = str(uuid.uuid4())
with BackgroundServer(create_app(s, knowledge_path='knowledge', relay_interval=0.1)) as srv, srv.client() as c:
    for msg in ['Do you have case studies on RAG for fintech?', 'We are a 300-person bank and I lead the data team.',
                'Can I speak to someone?']:
        r = c.post('/chat', json={'message': msg}, headers={'ZGC-Session-ID': sid})
        assert r.status_code == 200 and 'event: done' in r.text, r.text[-500:]
    import time; time.sleep(0.5)     # the in-process relay delivers the hand-off
served = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'pandas', 'pyarrow')})
from leadchat.console import close_backends, get_backend, try_query
b = get_backend(s)
rows = b.run(try_query(b.retriever, 'Do you have case studies on RAG for fintech?', s.rag_relevance_threshold))
close_backends()
mods = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sentence_transformers', 'transformers'))
print(json.dumps({'loaded': mods[:5], 'onnxruntime': 'onnxruntime' in sys.modules, 'console_rows': len(rows), 'served': served}))
'''


def test_serving_the_relay_and_the_console_never_import_torch(pg, kb_url):
    """`leadchat serve`'s app (with its relay) starts, runs turns with retrieval and the classifier; the console queries.
    Serving a trained classifier loads neither scikit-learn nor scipy (nor pandas behind them): only training does."""
    from leadchat.classify import get_classifier
    from leadchat.knowledge import local_embeddings
    get_classifier(local_embeddings().embed_documents)        # the cache the server reads (trained here, if the corpus changed)
    env = {'DATABASE_URL': kb_url, 'RAG_RELEVANCE_THRESHOLD': '0.263', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid',
           'HANDOFF_CHANNELS': 'crm', 'LEADCHAT_MODEL_PROVIDER': 'offline', 'LEADCHAT_HOME': str(pg[0].leadchat_home)}
    r = py(SERVE_TURNS_CONSOLE, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {'loaded': [], 'onnxruntime': True, 'console_rows': out['console_rows'], 'served': []} and out['console_rows'] > 0, out


def test_light_commands_load_no_model(pg):
    "`leadchat --help`, `check` and `db status` import neither torch nor ONNX Runtime."
    env = {'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'LEADCHAT_HOME': str(pg[0].leadchat_home)}
    for args in (['--help'], ['check'], ['db', 'status']):
        r = py("import sys\nfrom leadchat.cli import app\n"
               f"try: app({args!r})\nexcept SystemExit as e: code = e.code\n"
               "heavy = [m for m in ('torch', 'onnxruntime', 'sentence_transformers', 'transformers') if m in sys.modules]\n"
               "print('HEAVY', heavy, code, file=sys.stderr)\n", env=env, timeout=120)
        assert "HEAVY [] 0" in r.stderr, (args, r.stdout[-1000:], r.stderr[-2000:])


def test_calibrate_reports_int8_beside_fp32(pg, kb_url, tmp_path):
    env = {**os.environ, 'DATABASE_URL': kb_url, 'RAG_RELEVANCE_THRESHOLD': '0.263', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid',
           'HANDOFF_CHANNELS': 'crm', 'LEADCHAT_HOME': str(pg[0].leadchat_home)}
    r = subprocess.run([str(LEADCHAT), 'calibrate', '--int8', '--no-scope', '--no-changelog', '--out', str(tmp_path / 'cal')],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'proposed RAG_RELEVANCE_THRESHOLD=' in r.stdout and 'int8 ONNX model: proposed threshold' in r.stdout
    res = json.loads((tmp_path / 'cal.json').read_text())
    assert {'threshold', 'false_positive_rate', 'false_negative_rate'} <= set(res['calibration_int8'])


async def test_the_micro_batcher_batches_on_the_onnx_backend():
    "Concurrent turns' texts go through one ONNX Runtime call, with the vectors each would get alone."
    import asyncio
    from leadchat.knowledge import EmbeddingBatcher, local_embeddings
    emb = local_embeddings()
    b = EmbeddingBatcher(emb, max_wait_ms=50)
    texts = [f'Do you have case studies on RAG for fintech, part {i}?' for i in range(12)]
    got = await asyncio.gather(*(b.embed(t) for t in texts))
    assert b.batches == 1
    assert np.allclose(np.array(got), emb.embed_array(texts), atol=1e-5)
    assert np.allclose(await asyncio.to_thread(b.embed_blocking, texts[:2]), got[:2], atol=1e-6)   # cached, from a worker thread
