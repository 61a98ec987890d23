"Knowledge ingest and RAG triage against the embedded PostgreSQL and the real MiniLM model (every row of the spec's RAG error table)."
import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from structlog.testing import capture_logs

from conftest import fresh_db
from fakes import FakeOpenAI, fake_vector
from leadchat.config import ConfigurationError, Settings
from leadchat.db import DatabaseError, create_pool, ensure_knowledge_table, migrate
from leadchat.knowledge import KnowledgeError, ingest, load_documents, local_embeddings
from leadchat.retrieval import KnowledgeRetriever, ToolCallBudget

ROOT = Path(__file__).resolve().parent.parent
KB = ROOT / 'knowledge'


def cfg(pg, **kw):
    base = dict(rag_relevance_threshold=0.25, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                leadchat_home=pg[0].leadchat_home)
    return Settings(**{**base, **kw})


@pytest.fixture
async def retriever(pg, kb_url):
    p = await create_pool(kb_url, max_size=2)
    yield KnowledgeRetriever(p, cfg(pg))
    await p.close()


# --- ingest -----------------------------------------------------------------------------------

async def test_ingest_is_incremental(pg, tmp_path):
    docs = tmp_path / 'kb'
    shutil.copytree(KB, docs)
    url = fresh_db(pg[1]); await migrate(url, pg[0])
    s = cfg(pg)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        first = await ingest(c, load_documents(docs), settings=s, progress=False)
        assert first.embedded_chunks == first.chunks and len(first.new_documents) == first.documents
        again = await ingest(c, load_documents(docs), settings=s, progress=False)
        assert again.embedded_chunks == 0 and len(again.unchanged_documents) == again.documents
        # edit one section of one document: only that document changes, only the new text is embedded
        faq = docs / 'faq.md'
        faq.write_text(faq.read_text() + '\n\n## Do you have a mascot?\n\nYes: a small copper anvil called Forge.\n')
        before = {r['chunk_id'] for r in await (await c.execute('SELECT chunk_id FROM knowledge_chunks_minilm_l6_v2 WHERE source <> %s', ['faq'])).fetchall()}
        edited = await ingest(c, load_documents(docs), settings=s, progress=False)
        assert edited.changed_documents == ['faq'] and 0 < edited.embedded_chunks <= 2
        after = {r['chunk_id'] for r in await (await c.execute('SELECT chunk_id FROM knowledge_chunks_minilm_l6_v2 WHERE source <> %s', ['faq'])).fetchall()}
        assert before == after                                   # other documents' rows untouched
        # remove a document: its chunks go
        (docs / 'case-study-retail-search.md').unlink()
        removed = await ingest(c, load_documents(docs), settings=s, progress=False)
        assert removed.removed_documents == ['case-study-retail-search'] and removed.embedded_chunks == 0
        n = (await (await c.execute("SELECT count(*) AS n FROM knowledge_chunks_minilm_l6_v2 WHERE source = 'case-study-retail-search'")).fetchone())['n']
        assert n == 0


async def test_dimension_mismatch_is_a_clear_error(pg):
    url = fresh_db(pg[1]); await migrate(url)
    s = cfg(pg, knowledge_table_name='kb_custom')
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        await ensure_knowledge_table(c, 'kb_custom_minilm_l6_v2', 1536)      # someone created it for another model
        with pytest.raises(DatabaseError, match=r'stores vector\(1536\) but the configured embedding model produces 384-d'):
            await ingest(c, {'faq': '# FAQ\n\nhello'}, settings=s, progress=False)


def test_bad_documents_are_named(tmp_path):
    (tmp_path / 'ok.md').write_text('# OK\n\nfine')
    (tmp_path / 'latin1.md').write_bytes('# Caf\xe9\n'.encode('latin-1'))
    with pytest.raises(KnowledgeError, match='latin1.md is not UTF-8'): load_documents(tmp_path)
    (tmp_path / 'latin1.md').unlink()
    (tmp_path / 'huge.md').write_text('x' * 1_100_000)
    with pytest.raises(KnowledgeError, match='huge.md is larger than'): load_documents(tmp_path)
    (tmp_path / 'huge.md').unlink()
    (tmp_path / 'bin.txt').write_bytes(b'abc\x00def')
    with pytest.raises(KnowledgeError, match='NUL bytes'): load_documents(tmp_path)
    (tmp_path / 'bin.txt').unlink()
    (tmp_path / 'Bad Name!.md').write_text('# x')
    with pytest.raises(KnowledgeError, match='file names must be'): load_documents(tmp_path)
    (tmp_path / 'Bad Name!.md').unlink()
    (tmp_path / 'empty.md').write_text('   \n')
    with capture_logs() as logs: assert list(load_documents(tmp_path)) == ['ok']
    assert logs[0]['event'] == 'empty_document_skipped'
    with pytest.raises(KnowledgeError, match='does not exist'): load_documents(tmp_path / 'nope')


# --- retrieval: the RAG error table ------------------------------------------------------------

async def test_ok_chunks_are_scored_ranked_and_logged(retriever):
    with capture_logs() as logs:
        res = await retriever.retrieve_knowledge('Which vector database did you use for the challenger bank knowledge assistant?')
    assert res.status == 'ok' and res.reason is None
    assert res.chunks[0].source == 'case-study-fintech-rag'
    scores = [c.score for c in res.chunks]
    assert scores == sorted(scores, reverse=True) and all(0 <= x <= 1 for x in scores) and len(scores) <= 7
    raw = next(l for l in logs if l['event'] == 'rag_scores')
    assert raw['threshold'] == 0.25 and len(raw['scores']) >= len(res.chunks)


async def test_proactive_case_study_flag(retriever):
    res = await retriever.retrieve_knowledge('We are a hospital and want to extract data from scanned patient referral letters')
    assert res.status == 'ok' and res.chunks[0].source.startswith('case-study-')
    assert res.proactive_case_study == (res.chunks[0].score > retriever.settings.rag_proactive_threshold) is True
    services = await retriever.retrieve_knowledge('What does your MLOps and evaluation service include?')
    assert services.status == 'ok' and not services.chunks[0].source.startswith('case-study-')
    assert services.proactive_case_study is False


async def test_all_chunks_below_threshold_is_no_result(retriever):
    with capture_logs() as logs:
        res = await retriever.retrieve_knowledge('Can you give me a good recipe for paella?')
    assert (res.status, res.reason, res.chunks) == ('no_result', 'below_threshold', [])
    assert any(l['event'] == 'rag_no_result' for l in logs)
    assert (await retriever.retrieve_knowledge('   ')).reason == 'empty_query'


async def test_embedding_api_failure_and_timeout_are_status_error(pg, kb_url):
    fake = FakeOpenAI()
    try:
        s = cfg(pg, leadchat_embedding_provider='openai', openai_api_key='sk-test', openai_eu_endpoint=fake.url)
        p = await create_pool(kb_url, max_size=1)
        r = KnowledgeRetriever(p, s, embed_timeout=1.0)
        fake.mode = 'error'
        with capture_logs() as logs: res = await r.retrieve_knowledge('fintech case studies')
        assert (res.status, res.reason, res.chunks) == ('error', 'embedding_failure', [])
        assert logs[0]['event'] == 'embedding_api_failure'
        fake.mode = 'stall'
        with capture_logs() as logs: res = await r.retrieve_knowledge('fintech case studies')
        assert (res.status, res.reason) == ('error', 'embedding_failure') and 'TimeoutError' in logs[0]['error']
        await p.close()
    finally: fake.close()


async def test_vector_search_failure_is_status_error(pg, kb_url):
    p = await create_pool(kb_url, max_size=1)
    r = KnowledgeRetriever(p, cfg(pg), embeddings=local_embeddings())
    await p.close()                                   # the database goes away
    with capture_logs() as logs: res = await r.retrieve_knowledge('fintech case studies')
    assert (res.status, res.reason) == ('error', 'search_failure')
    failure = next(l for l in logs if l['event'] == 'vector_search_failure')
    assert failure['log_level'] == 'error'


async def test_corrupt_or_empty_chunks_are_skipped(pg, kb_url):
    url = fresh_db(pg[1]); await migrate(url, pg[0])
    q = 'How do you run evaluation of LLM systems in production?'
    v = local_embeddings().embed_query(q)
    vec = '[' + ','.join(map(str, v)) + ']'
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        for i, content in enumerate(['', '   ', 'Evaluation harnesses run nightly against a golden set.']):
            await c.execute('INSERT INTO knowledge_chunks_minilm_l6_v2 (chunk_id, source, chunk_index, content, content_hash, embedding) '
                            'VALUES (%s, %s, %s, %s, %s, %s::vector)', [f'c{i}', 'services-mlops', i, content, f'h{i}', vec])
    p = await create_pool(url, max_size=1)
    with capture_logs() as logs: res = await KnowledgeRetriever(p, cfg(pg)).retrieve_knowledge(q)
    await p.close()
    assert res.status == 'ok' and [c.chunk_id for c in res.chunks] == ['c2']
    assert sorted(l['chunk_id'] for l in logs if l['event'] == 'corrupt_chunk_skipped') == ['c0', 'c1']
    assert all(l['log_level'] == 'warning' for l in logs if l['event'] == 'corrupt_chunk_skipped')


def test_missing_relevance_threshold_stops_start_up():
    with pytest.raises(ConfigurationError, match='RAG_RELEVANCE_THRESHOLD is not set'):
        Settings(business_hours_timezone='Europe/Madrid', handoff_channels='crm')


async def test_extra_tool_calls_in_a_turn_are_ignored(retriever):
    budget = ToolCallBudget(retriever, max_calls=1, session_id='s-1')
    assert (await budget('fintech case studies')).status == 'ok'
    with capture_logs() as logs: assert await budget('and healthcare?') is None
    assert (logs[0]['event'], logs[0]['log_level'], logs[0]['session_id']) == ('rag_extra_tool_call_ignored', 'warning', 's-1')


# --- PII, ef_search, top_k, hybrid ----------------------------------------------------------------

async def test_pii_is_scrubbed_from_what_the_embedding_provider_receives(pg):
    fake = FakeOpenAI()
    try:
        url = fresh_db(pg[1]); await migrate(url)
        s = cfg(pg, leadchat_embedding_provider='openai', openai_api_key='sk-test', openai_eu_endpoint=fake.url,
                rag_relevance_threshold=0.0)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
            await ensure_knowledge_table(c, 'knowledge_chunks_text_embedding_3_small', 1536)
            expected = "I'm [name] ([email], [phone]): do you sign NDAs, [name]?"
            v = '[' + ','.join(map(str, fake_vector(expected, 1536))) + ']'   # a chunk that matches the scrubbed query exactly
            await c.execute('INSERT INTO knowledge_chunks_text_embedding_3_small (chunk_id, source, chunk_index, content, content_hash, embedding) '
                            "VALUES ('a', 'faq', 0, 'We sign NDAs.', 'h', %s::vector)", [v])
        p = await create_pool(url, max_size=1)
        res = await KnowledgeRetriever(p, s).retrieve_knowledge(
            "I'm Ana Ruiz (ana.ruiz@acme.io, +34 600 123 456): do you sign NDAs, Ana?", names=['Ana Ruiz'])
        await p.close()
        assert res.status == 'ok' and res.chunks[0].score == pytest.approx(1.0, abs=1e-5)
        bodies = [r['body'] for r in fake.requests]
        assert len(bodies) == 1 and fake.requests[0]['path'] == '/v1/embeddings'
        sent = json.loads(bodies[0])['input']
        sent = sent[0] if isinstance(sent, list) else sent
        assert sent == expected
        for pii in ('Ana', 'Ruiz', 'acme.io', '600'): assert pii not in bodies[0]
    finally: fake.close()


async def test_ef_search_and_top_k_are_applied_per_query(pg, kb_url):
    # force the HNSW index even on a small table, then ef_search caps how many rows it can return
    with psycopg.connect(kb_url, autocommit=True) as c:
        db = urlsplit(kb_url).path.lstrip('/')
        c.execute(sql.SQL('ALTER DATABASE {} SET enable_seqscan = off').format(sql.Identifier(db)))
    try:
        p = await create_pool(kb_url, max_size=1)
        q = 'What does your RAG and knowledge assistant service include?'
        narrow = await KnowledgeRetriever(p, cfg(pg, rag_relevance_threshold=0.0, rag_hnsw_ef_search=2, rag_top_k=7)).retrieve_knowledge(q)
        wide = await KnowledgeRetriever(p, cfg(pg, rag_relevance_threshold=0.0, rag_hnsw_ef_search=40, rag_top_k=7)).retrieve_knowledge(q)
        top3 = await KnowledgeRetriever(p, cfg(pg, rag_relevance_threshold=0.0, rag_top_k=3)).retrieve_knowledge(q)
        await p.close()
        assert len(narrow.chunks) <= 2 < len(wide.chunks) == 7 and len(top3.chunks) == 3
    finally:
        with psycopg.connect(kb_url, autocommit=True) as c:
            c.execute(sql.SQL('ALTER DATABASE {} RESET enable_seqscan').format(sql.Identifier(db)))


async def test_hybrid_ranking_keeps_the_cosine_gate(pg, kb_url):
    p = await create_pool(kb_url, max_size=1)
    hybrid = KnowledgeRetriever(p, cfg(pg), ranking='hybrid')
    res = await hybrid.retrieve_knowledge('Which vector database did you use for the challenger bank knowledge assistant?')
    assert res.status == 'ok' and 'case-study-fintech-rag' in {c.source for c in res.chunks[:3]}
    assert all(c.score >= 0.25 for c in res.chunks) and len(res.chunks) <= 7
    assert (await hybrid.retrieve_knowledge('Can you give me a good recipe for paella?')).status == 'no_result'
    await p.close()


LONG_QUESTION = ("We're a 350-person insurer in Spain and our claims inbox is a mess. We need to automate FNOL triage for "
                 "motor claims with llms, reading the emails and attachments. Have you done this for other insurers?")


async def test_a_long_question_is_pooled_from_the_sentences_the_reader_already_embedded(tmp_path):
    "The visitor's side: a long message costs one pass of the model, and what it retrieves is the pooled sentences' vector."
    import asyncio
    import numpy as np
    from leadchat.classify import SignalReader
    from leadchat.compose import retrieval_query
    from leadchat.embed import pooled
    from leadchat.knowledge import EmbeddingBatcher
    from leadchat.retrieval import query_parts
    inner, batches = local_embeddings(), []
    class Counted:
        def embed_documents(self, texts): batches.append(list(texts)); return inner.embed_documents(texts)
    batcher = EmbeddingBatcher(Counted())
    settings = Settings(rag_relevance_threshold=0.25, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                        leadchat_home=tmp_path)
    retriever = KnowledgeRetriever(None, settings, embeddings=batcher)       # embedding only: no database needed
    query = retrieval_query(LONG_QUESTION)
    parts = query_parts(query)
    assert len(parts) == 4 and parts[-1] == 'Have you done this for other insurers?'
    reader = SignalReader(inner.embed_documents, aembed=lambda texts: asyncio.gather(*map(batcher.embed, texts)))
    await reader.aread(LONG_QUESTION, prefetch=parts)            # what the offline engine does at the turn's start
    assert len(batches) == 1
    vector = await retriever.embed(query)
    assert len(batches) == 1                                     # every part was in the reader's batch: nothing more to run
    want = pooled(inner.embed_array(parts), parts)
    assert np.allclose(vector, want, atol=1e-6)
    whole = inner.embed_array([query])[0]
    assert float(np.dot(vector, whole)) > 0.85                   # close to the joined text's vector, not equal to it
    # a short question of two sentences is embedded whole (its sentences lean on each other)
    short = "are you on CET? we're in Berlin"
    assert np.allclose(await retriever.embed(short), inner.embed_array([short])[0], atol=1e-6)
    # an embedder without the batcher (a thread, one call for all the parts) gives the same vector
    plain = KnowledgeRetriever(None, settings, embeddings=inner)
    assert np.allclose(await plain.embed(query), want, atol=1e-6)
    batcher.worker.cancel()


async def test_a_long_question_is_retrieved_pooled_through_the_provider_too(pg, kb_url):
    "With the hosted embedder the parts go in one request, and PII scrubbed from the query never reaches it."
    fake = FakeOpenAI()
    try:
        s = cfg(pg, leadchat_embedding_provider='openai', openai_api_key='sk-test', openai_eu_endpoint=fake.url)
        p = await create_pool(kb_url, max_size=1)
        try: await KnowledgeRetriever(p, s).retrieve_knowledge(LONG_QUESTION + ' Write to ana@acme.io.')
        finally: await p.close()
        bodies = [json.loads(r['body']) for r in fake.requests if r['path'].endswith('/embeddings')]
        assert len(bodies) == 1 and isinstance(bodies[0]['input'], list) and len(bodies[0]['input']) == 5
        assert bodies[0]['input'][-1] == 'Write to [email].' and 'ana@acme.io' not in json.dumps(bodies[0])
    finally: fake.close()
