"""Staff users against the embedded PostgreSQL: `leadchat staff` as an operator runs it (a real
subprocess reading the password from stdin, and the hidden prompt through typer's runner), the
password policy, hostile usernames, sign-in with its lockout, and what gets logged and stored.
"""
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from structlog.testing import capture_logs
from typer.testing import CliRunner

import leadchat.staff as staff_mod
from conftest import aconn, fresh_db, rows
from leadchat.cli import app
from leadchat.config import get_settings
from leadchat.db import migrate
from leadchat.staff import (LOCKOUT_FAILURES, LOCKOUT_WINDOW, OIDC_ONLY_HASH, StaffError, add_staff_user,
                            authenticate, authorize_oidc, set_disabled)

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = str(Path(sys.executable).with_name('leadchat'))
GOOD = 'a long enough passphrase'


@pytest.fixture(scope='module')
def db(pg, tmp_path_factory):
    "A fresh database of this module's own, and an env file pointing at it."
    url = fresh_db(pg[1])
    env = tmp_path_factory.mktemp('staff') / 'staff.env'
    env.write_text(f'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
                   f'DATABASE_URL={url}\nLEADCHAT_HOME={pg[0].leadchat_home}\n')
    return url, env


def cli(env, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    "`leadchat staff …` as a real process (no terminal: the password comes on stdin)."
    clean = {k: v for k, v in os.environ.items() if k != 'LEADCHAT_ENV_FILE'}
    return subprocess.run([LEADCHAT, 'staff', *args, '--env-file', str(env)], input=stdin, capture_output=True,
                          text=True, timeout=120, env=clean, cwd=ROOT)




def test_add_list_disable_enable_through_the_real_cli(db):
    url, env = db
    r = cli(env, 'add', 'Ana.Ruiz@Example.com', '--name', 'Ana Ruiz', '--password-stdin', stdin=GOOD + '\n')
    assert r.returncode == 0, r.stderr
    assert 'added staff user ana.ruiz@example.com' in r.stdout and GOOD not in r.stdout + r.stderr
    (u,) = rows(url, "SELECT * FROM staff_users WHERE username = 'ana.ruiz@example.com'")
    assert u['password_hash'].startswith('$argon2id$') and GOOD not in u['password_hash'] and u['display_name'] == 'Ana Ruiz'
    assert cli(env, 'add', 'ops@example.com', '--oidc-only').returncode == 0
    listing = cli(env, 'list')
    assert listing.returncode == 0
    assert 'ana.ruiz@example.com' in listing.stdout and 'ops@example.com' in listing.stdout and 'oidc' in listing.stdout
    assert '$argon2' not in listing.stdout and OIDC_ONLY_HASH not in listing.stdout
    assert cli(env, 'disable', 'ANA.RUIZ@example.com').returncode == 0
    assert rows(url, "SELECT disabled, disabled_at IS NOT NULL AS t FROM staff_users WHERE username = 'ana.ruiz@example.com'") \
        == [{'disabled': True, 't': True}]
    assert 'disabled' in cli(env, 'list').stdout
    assert cli(env, 'enable', 'ana.ruiz@example.com').returncode == 0
    r = cli(env, 'disable', 'nobody')
    assert r.returncode == 1 and 'no staff user' in r.stderr


@pytest.mark.parametrize('password,why', [
    ('', 'too short'), ('password', 'too short'), ('password2024!', 'well-known'), ('passwordpassword', 'repetitive'),
    ('aaaaaaaaaaaaaaaaaaaa', 'repetitive'), ('1234567890123', 'well-known'), ('qwertyuiopasdfgh', 'well-known'),
    ('carla-rules-the-world', 'username'), ('x' * 5000, 'too long'), ('with a\x07bell character', 'control'),
])
def test_weak_passwords_are_refused_and_nothing_is_written(db, password, why):
    url, env = db
    r = cli(env, 'add', 'carla', '--password-stdin', stdin=password + '\n')
    assert r.returncode == 2 and why in r.stderr, (r.stdout, r.stderr)
    assert rows(url, "SELECT 1 FROM staff_users WHERE username = 'carla'") == []


def test_empty_stdin_is_a_clear_error(db):
    r = cli(db[1], 'add', 'dora', '--password-stdin', stdin='')
    assert r.returncode == 2 and 'standard input is empty' in r.stderr


@pytest.mark.parametrize('username', ['', ' ', 'a b', "x'; DROP TABLE staff_users; --", 'x' * 65, 'ünïcode',
                                      '../../etc/passwd', 'name\twith\ttabs', '<script>'])
def test_bad_usernames_are_refused_before_any_prompt(db, username):
    url, env = db
    r = cli(env, 'add', username, '--password-stdin', stdin=GOOD + '\n')
    assert r.returncode == 2 and 'is not valid' in r.stderr and 'Traceback' not in r.stderr
    assert rows(url, "SELECT to_regclass('staff_users') IS NOT NULL AS ok") == [{'ok': True}]


def test_duplicates_in_any_letter_case_are_refused(db):
    url, env = db
    assert cli(env, 'add', 'erin', '--password-stdin', stdin=GOOD + '\n').returncode == 0
    for dup in ('erin', 'ERIN', ' Erin '):
        r = cli(env, 'add', dup, '--password-stdin', stdin='another long passphrase\n')
        assert r.returncode == 1 and 'already exists' in r.stderr
    assert len(rows(url, "SELECT 1 FROM staff_users WHERE lower(username) = 'erin'")) == 1


def test_no_password_option_on_the_command_line(db):
    r = cli(db[1], 'add', 'fay', '--password', GOOD)
    assert r.returncode == 2 and 'No such option' in r.stderr


def test_hidden_prompt_asks_twice_and_never_echoes(db):
    get_settings.cache_clear()
    runner = CliRunner()
    r = runner.invoke(app, ['staff', 'add', 'gus', '--env-file', str(db[1])], input=f'{GOOD}\n{GOOD}\n')
    assert r.exit_code == 0, r.output
    assert 'Password:' in r.output and 'Repeat for confirmation:' in r.output and GOOD not in r.output
    r = runner.invoke(app, ['staff', 'add', 'hal', '--env-file', str(db[1])], input=f'{GOOD}\nsomething else entirely\n')
    assert r.exit_code != 0 and 'do not match' in r.output
    assert rows(db[0], "SELECT 1 FROM staff_users WHERE username = 'hal'") == []


def test_roles_through_the_real_cli_default_to_agent_and_every_change_is_audited(db):
    import getpass
    url, env = db
    who = f'cli:{getpass.getuser()}'
    r = cli(env, 'add', 'hana', '--role', 'admin', '--password-stdin', stdin=GOOD + '\n')
    assert r.returncode == 0 and 'added staff user hana as admin' in r.stdout, r.stderr
    assert cli(env, 'add', 'ivo', '--password-stdin', stdin=GOOD + '\n').returncode == 0
    roles = lambda: {u['username']: u['role'] for u in rows(url, "SELECT username, role FROM staff_users WHERE username IN ('hana', 'ivo')")}
    assert roles() == {'hana': 'admin', 'ivo': 'agent'}
    r = cli(env, 'role', 'IVO', 'admin')
    assert r.returncode == 0 and 'staff user ivo is now admin' in r.stdout
    for args, code, why in [(('role', 'ivo', 'root'), 2, 'is not valid'), (('role', 'ivo', 'Admin'), 2, 'is not valid'),
                            (('role', 'nobody', 'agent'), 1, 'no staff user'),
                            (('role', "x'; DROP TABLE staff_users; --", 'agent'), 1, 'is not valid'),
                            (('add', 'jo', '--role', 'superuser', '--password-stdin'), 2, 'is not valid')]:
        r = cli(env, *args, stdin=GOOD + '\n')
        assert r.returncode == code and why in r.stderr and 'Traceback' not in r.stderr, (args, r.stdout, r.stderr)
    assert roles() == {'hana': 'admin', 'ivo': 'admin'} and rows(url, "SELECT 1 FROM staff_users WHERE username = 'jo'") == []
    assert cli(env, 'role', 'ivo').returncode == 2                             # the role is required
    trail = rows(url, "SELECT username, action, detail FROM staff_audit WHERE detail ->> 'user' IN ('hana', 'ivo', 'jo') ORDER BY id")
    assert [(a['username'], a['action'], a['detail']) for a in trail] == [
        (who, 'staff.add', {'user': 'hana', 'role': 'admin'}), (who, 'staff.add', {'user': 'ivo', 'role': 'agent'}),
        (who, 'staff.role', {'user': 'ivo', 'from': 'agent', 'to': 'admin'})]      # the refused ones wrote nothing
    assert cli(env, 'add', 'kai', '--oidc-only').returncode == 0
    listed = {l.split()[0]: l for l in cli(env, 'list').stdout.splitlines()[1:]}
    assert ' admin ' in listed['hana'] and ' admin ' in listed['ivo'] and ' agent ' in listed['kai']


class CountingHasher(staff_mod.PasswordHasher):
    verifies = 0

    def verify(self, *a, **kw):
        CountingHasher.verifies += 1
        return super().verify(*a, **kw)


@pytest.fixture
def counting(monkeypatch):
    staff_mod._hasher.cache_clear()
    monkeypatch.setattr(staff_mod, '_hasher', lambda: CountingHasher())
    CountingHasher.verifies = 0
    yield CountingHasher


async def test_every_kind_of_bad_credentials_costs_one_verification_and_says_the_same(db, counting):
    url, _ = db
    c = await aconn(url)
    try:
        await add_staff_user(c, 'ivy', GOOD)
        await add_staff_user(c, 'jon', GOOD)
        await set_disabled(c, 'jon')
        await add_staff_user(c, 'kim@example.com', None, oidc_only=True)
        cases = [('ivy', 'not the password'), ('nobody-here', GOOD), ('jon', GOOD), ('kim@example.com', OIDC_ONLY_HASH),
                 ("' OR '1'='1", "pw' OR '1'='1' --"), ('x' * 100_000, 'y' * 100_000), ('ivy\x00', GOOD), ('', '')]
        for who, pw in cases:
            counting.verifies = 0
            with capture_logs() as logs:
                r = await authenticate(c, who, pw, client='192.0.2.10')
            assert (r.ok, r.reason, r.message) == (False, 'bad_credentials', 'Wrong username or password.'), who[:20]
            assert counting.verifies == 1, who[:20]             # the same argon2 work whether or not the user exists
            assert logs and all(pw not in repr(e) for e in logs if pw)   # never the password in a log line
        r = await authenticate(c, ' IVY ', GOOD, client='192.0.2.10')
        assert (r.ok, r.username) == (True, 'ivy')
        stored = await (await c.execute('SELECT * FROM staff_login_attempts')).fetchall()
        assert all(GOOD not in str(row.values()) for row in stored)
        assert max(len(row['username']) for row in stored) <= 128
    finally: await c.close()


async def test_lockout_per_username_and_per_client(db, counting):
    url, _ = db
    c = await aconn(url)
    now = datetime.now(timezone.utc) + timedelta(days=1)    # clear of the other tests' attempts
    try:
        await add_staff_user(c, 'lea', GOOD)
        for i in range(LOCKOUT_FAILURES):
            assert (await authenticate(c, 'lea', f'wrong guess {i}', client=f'198.51.100.{i}', now=now)).reason == 'bad_credentials'
        counting.verifies = 0
        r = await authenticate(c, 'lea', GOOD, client='198.51.100.77', now=now + timedelta(minutes=1))
        assert (r.ok, r.reason) == (False, 'locked') and counting.verifies == 0     # not even checked
        assert 'Too many failed sign-in attempts' in r.message and r.retry_after_seconds <= 14 * 60 + 1
        # refused attempts do not extend the lock
        for _ in range(10): await authenticate(c, 'lea', GOOD, now=now + timedelta(minutes=2))
        assert (await authenticate(c, 'lea', GOOD, now=now + LOCKOUT_WINDOW + timedelta(seconds=1))).ok
        # an unknown username locks exactly the same way
        for i in range(LOCKOUT_FAILURES): await authenticate(c, 'ghost', f'guess {i}', now=now)
        assert (await authenticate(c, 'ghost', 'guess', now=now)).reason == 'locked'
        # one client spraying many usernames
        later = now + timedelta(hours=2)
        for i in range(staff_mod.CLIENT_FAILURES):
            await authenticate(c, f'spray{i}', 'some guess', client='203.0.113.9', now=later)
        r = await authenticate(c, 'lea', GOOD, client='203.0.113.9', now=later)
        assert r.reason == 'rate_limited'
        assert (await authenticate(c, 'lea', GOOD, client='203.0.113.10', now=later)).ok   # another client is fine
    finally: await c.close()


async def test_oidc_identity_must_be_an_enabled_staff_user(db):
    c = await aconn(db[0])
    try:
        await add_staff_user(c, 'max@example.com', None, oidc_only=True)
        assert (await authorize_oidc(c, 'MAX@example.com')).ok
        for email in ['stranger@example.com', None, '', "' OR 1=1 --", 'x' * 10_000]:
            r = await authorize_oidc(c, email)
            assert (r.ok, r.reason) == (False, 'not_staff') and 'leadchat staff add' in r.message
        await set_disabled(c, 'max@example.com')
        assert not (await authorize_oidc(c, 'max@example.com')).ok
    finally: await c.close()


async def test_migration_0003_on_a_fresh_database(pg):
    url = fresh_db(pg[1])
    await migrate(url, pg[0])
    c = await aconn(url)
    try:
        tables = {r['t'] for r in await (await c.execute(
            "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public'")).fetchall()}
        assert {'staff_users', 'staff_login_attempts', 'staff_audit'} <= tables
        await add_staff_user(c, 'nia', GOOD)
        with pytest.raises(psycopg.errors.UniqueViolation):      # the index on lower(username), below the code's check
            await c.execute("INSERT INTO staff_users (username, password_hash) VALUES ('NIA', 'x')")
        with pytest.raises(StaffError, match='already exists'): await add_staff_user(c, 'Nia', GOOD)
    finally: await c.close()


async def test_a_failed_sign_in_never_logs_the_typed_username(db, counting):
    "People type their password into the username field: failure logs carry a short hash, never the text."
    c = await aconn(db[0])
    now = datetime.now(timezone.utc) + timedelta(days=3)
    typed = 'Tr0ub4dor&3-typed-in-the-wrong-box'
    try:
        with capture_logs() as logs:
            for i in range(LOCKOUT_FAILURES + 1):
                await authenticate(c, typed, 'whatever', client='192.0.2.44', now=now)
            await authorize_oidc(c, 'outsider.typed@example.com')
        failed = [e for e in logs if e['event'] in ('staff_login_failed', 'staff_login_refused')]
        assert {e['event'] for e in failed} == {'staff_login_failed', 'staff_login_refused'}
        for e in failed:
            assert typed.lower() not in repr(e) and typed not in repr(e) and 'outsider.typed' not in repr(e), e
            assert 'username' not in e and len(e['username_hash']) == 12, e
        assert len({e['username_hash'] for e in failed if e.get('method') != 'oidc'}) == 1   # one typed name, one hash
    finally: await c.close()


# --- the console session cookie (leadchat.staff.StaffSessions; the browser side is in test_console.py) ---------------

def test_a_cookie_is_accepted_only_with_its_own_signature(tmp_path):
    from leadchat.staff import LoginResult, StaffSession, StaffSessions, cookie_secret, sign_token, unsign_token
    key = cookie_secret(tmp_path / 'home')
    assert cookie_secret(tmp_path / 'home') == key and len(key) == 32                       # made once, then reused
    assert (tmp_path / 'home' / 'console-cookie.key').stat().st_mode & 0o077 == 0           # nobody else may read it
    reg = StaffSessions()
    token, live = reg.start(StaffSession.start(LoginResult(True, 'ok', 'ana', None), 'password'))
    good = sign_token(token, key)
    assert unsign_token(good, key) == token and reg.resume(token).username == 'ana'
    flipped = [good[:i] + ('a' if good[i] != 'a' else 'b') + good[i + 1:] for i in range(0, len(good), 7)]
    hostile = [*flipped, good + 'x', good.upper(), sign_token(token, cookie_secret(tmp_path / 'other')),
               good.replace('.', ''), '.', '..', good + '.' + good, 'ü' * 60 + '.' + good.split('.')[1],
               '\x00' * 50, 'a' * 10_000, b'bytes', ['list'], {'token': token}, 3.5]
    for value in hostile: assert unsign_token(value, key) is None, repr(value)[:60]
    assert reg.resume(secrets_token()) is None                                              # a well-formed unknown token


def secrets_token() -> str:
    import secrets
    return secrets.token_urlsafe(32)


def test_sessions_registry_under_threads():
    "Browser sessions run in threads of their own: starting, touching and ending at once loses nothing and never raises."
    import threading
    from leadchat.staff import LoginResult, StaffSession, StaffSessions
    reg, tokens, errors = StaffSessions(), [], []
    def work(i):
        try:
            for j in range(50):
                t, s = reg.start(StaffSession.start(LoginResult(True, 'ok', f'user{i}', None), 'password'))
                reg.touch(s.key); reg.redeem(reg.issue_code(t))
                if j % 2: reg.end(s.key)
                else: tokens.append(t)
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors and len(tokens) == 8 * 25 and all(reg.resume(t) for t in tokens)
    assert reg.end_user('user3') == 25 and sum(reg.resume(t) is not None for t in tokens) == 7 * 25


def test_the_idle_setting_is_read_and_bad_values_are_named(monkeypatch):
    from leadchat.config import ConfigurationError
    from leadchat.staff import IDLE_SETTING, SESSION_IDLE, session_idle
    monkeypatch.delenv(IDLE_SETTING, raising=False)
    assert session_idle() == SESSION_IDLE == timedelta(minutes=60)
    monkeypatch.setenv(IDLE_SETTING, '15')
    assert session_idle() == timedelta(minutes=15)
    for bad in ('0', '-1', 'sixty', 'nan', 'inf', '1e9', ' '):
        monkeypatch.setenv(IDLE_SETTING, bad)
        if bad == ' ': assert session_idle() == SESSION_IDLE; continue                     # blank: the default
        with pytest.raises(ConfigurationError, match=IDLE_SETTING): session_idle()
