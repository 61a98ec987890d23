import asyncio
import os
import uuid

import psycopg
import pytest
from psycopg import sql

from leadchat.config import Settings, get_settings

# Live provider tests (tests/test_hosted_live.py) read these keys, and only these, from the shell.
LIVE_KEYS = {k: os.environ.get(k) for k in ('ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'OPENAI_BASE_URL', 'OPENAI_CHAT_MODEL')}

# Tests never read the developer's shell configuration.
for _k in list(os.environ):
    if _k.lower() in Settings.model_fields or _k == 'LEADCHAT_ENV_FILE': del os.environ[_k]


@pytest.fixture
def settings() -> Settings:
    "A minimal valid configuration: the two required values, CRM-only hand-off."
    return Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm')


@pytest.fixture(autouse=True)
def _fresh_settings_cache():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope='session')
def pg(tmp_path_factory):
    "One embedded server for the whole test session, in a throw-away LEADCHAT_HOME: (settings, url)."
    from leadchat.db import database_url, migrate
    home = tmp_path_factory.mktemp('leadchat-home')
    cfg = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                   leadchat_home=home)
    url = database_url(cfg)
    asyncio.run(migrate(url, cfg))
    return cfg, url


def fresh_db(url: str) -> str:
    "A new empty database on the same server (for tests that need a pristine schema)."
    name = f't_{uuid.uuid4().hex[:12]}'
    with psycopg.connect(url, autocommit=True) as c: c.execute(sql.SQL('CREATE DATABASE {}').format(sql.Identifier(name)))
    return url.replace('/leadchat?', f'/{name}?')


@pytest.fixture(scope='session')
def kb_url(pg):
    "A migrated database holding the committed knowledge base, ingested once with MiniLM."
    from pathlib import Path
    from leadchat.db import migrate
    from leadchat.knowledge import ingest, load_documents
    url = fresh_db(pg[1])
    async def go():
        await migrate(url, pg[0])
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
            return await ingest(c, load_documents(Path(__file__).resolve().parent.parent / 'knowledge'),
                                settings=pg[0], progress=False)
    rep = asyncio.run(go())
    assert rep.embedded_chunks == rep.chunks > 50
    return url
