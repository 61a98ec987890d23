import asyncio
from contextlib import contextmanager
import os
import uuid

import psycopg
import pytest
from psycopg import sql

from leadchat.config import Settings, get_settings


def pytest_configure(config):
    """This run's temporary files in a directory of its own that the embedded server's system user may enter. pytest's
    default, /tmp/pytest-of-<user>, is shared by every run and reset to mode 0700 when another run starts, which locks
    the `pgserver` user out of the data directories of a run still going."""
    import tempfile
    if config.option.basetemp is None and not hasattr(config, 'workerinput'):
        base = tempfile.mkdtemp(prefix='leadchat-pytest-')
        os.chmod(base, 0o755)
        config.option.basetemp = config._leadchat_basetemp = base


def pytest_unconfigure(config):
    import shutil
    if (base := getattr(config, '_leadchat_basetemp', None)): shutil.rmtree(base, ignore_errors=True)

# Live provider tests (tests/test_hosted_live.py) read these keys, and only these, from the shell.
LIVE_KEYS = {k: os.environ.get(k) for k in ('ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'OPENAI_BASE_URL', 'OPENAI_CHAT_MODEL')}

# `LEADCHAT_TEST_PG=external` (make test's second pass): the session database is a separate PostgreSQL server on a
# loopback TCP port with password authentication (tests/external_pg.py), reached through DATABASE_URL.
TEST_PG = os.environ.get('LEADCHAT_TEST_PG', 'embedded')
if TEST_PG not in ('embedded', 'external'):
    raise pytest.UsageError(f'LEADCHAT_TEST_PG={TEST_PG!r}: use embedded (the default) or external')

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
def external_pg():
    "A PostgreSQL server as a separate service (pg_ctl, 127.0.0.1, SCRAM passwords), stopped at the end of the session."
    from external_pg import ExternalPostgres
    with ExternalPostgres() as server: yield server


@pytest.fixture(scope='session')
def pg(request, tmp_path_factory):
    "One server for the whole test session, in a throw-away LEADCHAT_HOME: (settings, url). Embedded unless LEADCHAT_TEST_PG=external."
    from leadchat.db import database_url, migrate
    home = tmp_path_factory.mktemp('leadchat-home')
    external = request.getfixturevalue('external_pg').url() if TEST_PG == 'external' else None
    cfg = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                   leadchat_home=home, database_url=external)
    url = database_url(cfg)
    asyncio.run(migrate(url, cfg))
    return cfg, url


def role_url(url: str, role: str) -> str:
    "Create login role `role` (with a password) on `url`'s server; the URL that signs in as it, embedded or external."
    from urllib.parse import quote, urlsplit, urlunsplit
    password = uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL('CREATE ROLE {} LOGIN PASSWORD {}').format(sql.Identifier(role), sql.Literal(password)))
    parts = urlsplit(url)
    host = parts.netloc.rpartition('@')[2]
    return urlunsplit(parts._replace(netloc=f'{quote(role, safe="")}:{password}@{host}'))



@contextmanager
def console_backend(pg, url: str, password: str, admin_name: str):
    """The console's backend on `url`, with the console's environment set and two staff users — `dpo` (an admin,
    `admin_name`) and `ana` (an agent) — signing in with `password`: (env, backend); closed after."""
    from leadchat.console import close_backends, get_backend
    from leadchat.staff import add_staff_user
    env = dict(DATABASE_URL=url, RAG_RELEVANCE_THRESHOLD='0.263', BUSINESS_HOURS_TIMEZONE='Europe/Madrid',
               HANDOFF_CHANNELS='crm', LEADCHAT_HOME=str(pg[0].leadchat_home))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        get_settings.cache_clear()
        backend = get_backend(get_settings())
        backend.conn(add_staff_user, 'dpo', password, admin_name, role='admin')
        backend.conn(add_staff_user, 'ana', password, 'Ana Ruiz')
        try: yield env, backend
        finally: close_backends()
    get_settings.cache_clear()


def rows(url: str, sql: str, *args) -> list[dict]:
    "The rows of one query on `url` (dict rows, a connection of its own)."
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as c: return c.execute(sql, args).fetchall()


async def aconn(url: str):
    "An async autocommit connection to `url` with dict rows."
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row)


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
