"""An external PostgreSQL set up the way README's "Managed PostgreSQL" says — extensions and two roles by its SQL,
`leadchat db migrate` as the migration role, the service as the least-privileged app role — on a separate server with
password authentication (tests/external_pg.py). Nothing is mocked."""
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from leadchat.db import MigrationError, migrate

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = Path(sys.executable).parent / 'leadchat'
HOT = "We're building a RAG assistant over our support tickets. I'm the CTO of a 300-person payments company."


def managed_section() -> str:
    "README's 'Managed PostgreSQL' part: the text the operator follows."
    text = (ROOT / 'README.md').read_text()
    start = text.index('### Managed PostgreSQL')
    end = re.search(r'\n##+ ', text[start + 1:])
    return text[start:start + 1 + end.start()] if end else text[start:]


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond(): return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope='module')
def managed(external_pg, tmp_path_factory):
    "A new database on the external server, set up by README's two SQL blocks: (urls by role, prod.env)."
    section = managed_section()
    admin_sql, migrate_sql = re.findall(r'```sql\n(.*?)```', section, re.S)
    passwords = dict(re.findall(r"CREATE ROLE (\w+) LOGIN PASSWORD '([^']+)'", admin_sql))
    assert set(passwords) == {'leadchat_migrate', 'leadchat_app'}
    # the superuser plays the provider: an admin user that is no superuser (CREATEROLE, owns the database), and the
    # pgvector its privileged role may install (rds_superuser, cloudsqlsuperuser); the README's first block runs as that admin
    name, admin = f'lc_{uuid.uuid4().hex[:8]}', f'provider_admin_{uuid.uuid4().hex[:8]}'
    with psycopg.connect(external_pg.url(database='postgres'), autocommit=True) as c:
        c.execute(sql.SQL('CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}').format(sql.Identifier(admin), sql.Literal(name)))
        c.execute(sql.SQL('CREATE DATABASE {} OWNER {}').format(sql.Identifier(name), sql.Identifier(admin)))
    with psycopg.connect(external_pg.url(database=name), autocommit=True) as c: c.execute('CREATE EXTENSION vector')
    urls = {'admin': external_pg.url(database=name)} | {r: external_pg.url(r, p, name) for r, p in passwords.items()}
    with psycopg.connect(external_pg.url(admin, name, name), autocommit=True) as c: c.execute(admin_sql)
    with psycopg.connect(urls['leadchat_migrate'], autocommit=True) as c: c.execute(migrate_sql)
    home = tmp_path_factory.mktemp('managed')
    env_file = home / 'prod.env'     # demo.env's settings on the managed database, as the app role
    demo = [l for l in (ROOT / 'demo.env').read_text().splitlines() if not l.startswith(('LEADCHAT_HOME=', 'DATABASE_URL='))]
    env_file.write_text('\n'.join(demo + [f'LEADCHAT_HOME={home}', f"DATABASE_URL={urls['leadchat_app']}", '']))
    return urls, env_file, section


def leadchat(*args, database_url=None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **({'DATABASE_URL': database_url} if database_url else {})}
    return subprocess.run([str(LEADCHAT), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, **kw)


def test_password_authentication_on_loopback_only(external_pg):
    "The tier's server is a service in its own right: a wrong password is refused, and it listens on 127.0.0.1 only."
    with pytest.raises(psycopg.OperationalError, match='password authentication failed'):
        psycopg.connect(external_pg.url(password='wrong'))
    with psycopg.connect(external_pg.url(), autocommit=True) as c:
        assert c.execute('SHOW listen_addresses').fetchone()[0] == '127.0.0.1'
        assert c.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        assert c.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'").fetchall() == [('scram-sha-256',)]


def test_the_app_role_cannot_migrate_and_says_who_can(managed):
    "Before the release step, `leadchat db migrate` as the app role fails with what to do, not a traceback, and creates nothing."
    urls, env_file, _ = managed
    r = leadchat('db', 'migrate', '--env-file', str(env_file))
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr
    assert 'leadchat_app' in r.stderr and 'permission denied' in r.stderr and 'migration role' in r.stderr
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    r = leadchat('serve', '--env-file', str(env_file), '--port', str(port))     # and the service does not start
    assert r.returncode != 0 and 'may not change the schema' in r.stderr and 'leadchat db migrate' in r.stderr, r.stderr[-3000:]
    with psycopg.connect(urls['admin']) as c:
        assert c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_migrations_as_the_migration_role_and_the_service_as_the_app_role(managed):
    "README's release step, then `leadchat serve` as the app role: a hot-lead turn over HTTP and its hand-off; no DROP."
    urls, env_file, section = managed
    assert 'leadchat db migrate --env-file prod.env' in section and 'leadchat serve --env-file prod.env' in section
    r = leadchat('db', 'migrate', '--env-file', str(env_file), database_url=urls['leadchat_migrate'])
    assert r.returncode == 0 and 'applied: 0001_core.sql' in r.stdout, r.stdout + r.stderr
    with psycopg.connect(urls['admin']) as c:     # the migration role owns everything it created
        owners = c.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert owners == [('leadchat_migrate',)]
    r = leadchat('db', 'status', '--env-file', str(env_file))
    assert r.returncode == 0, r.stdout + r.stderr      # exit 3 if anything were pending

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    p = subprocess.Popen([str(LEADCHAT), 'serve', '--env-file', str(env_file), '--port', str(port)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f'http://127.0.0.1:{port}'
    try:
        def ready():
            assert p.poll() is None, p.stderr.read()[-3000:]
            try: return httpx.get(f'{base}/readyz', timeout=2).status_code == 200
            except httpx.HTTPError: return False
        assert wait_for(ready, timeout=240), 'leadchat serve (as the app role) did not become ready'
        sid = str(uuid.uuid4())
        r = httpx.post(f'{base}/chat', json={'message': HOT}, headers={'ZGC-Session-ID': sid}, timeout=60)
        assert r.status_code == 200 and 'event: done' in r.text and '"handoff_reason":"hot_lead"' in r.text.replace(' ', '')
        with psycopg.connect(urls['leadchat_app'], autocommit=True) as c:     # the relay delivered it, as the app role
            assert wait_for(lambda: c.execute('SELECT status FROM handoff_outbox WHERE session_id = %s',
                                              [sid]).fetchone() == ('delivered',))
            assert c.execute('SELECT lead_level FROM leads WHERE session_id = %s', [sid]).fetchall() == [('hot',)]
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)

    # the next release's migration, run by mistake as the app role: who should run it instead
    folder = env_file.parent / 'migrations'
    shutil.copytree(ROOT / 'leadchat' / 'migrations', folder)
    (folder / '9999_next_release.sql').write_text('CREATE TABLE next_release (x int);')
    with pytest.raises(MigrationError, match=r"the database role 'leadchat_app' may not change "
                                             r'the schema \(permission denied for schema public\); run `leadchat db migrate` as the migration role'):
        asyncio.run(migrate(urls['leadchat_app'], folder=folder))

    with psycopg.connect(urls['leadchat_app'], autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='must be owner of table sessions'):
            c.execute('DROP TABLE sessions')
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='permission denied for schema public'):
            c.execute('CREATE TABLE t (x int)')
    with psycopg.connect(urls['leadchat_migrate']) as c:    # the migration role can (rolled back)
        c.execute('DROP TABLE leads CASCADE')
        c.rollback()
