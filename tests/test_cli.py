"The installed `leadchat` console script, run as a user runs it."
import json
import os
import subprocess
import sys
from pathlib import Path

import leadchat

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = Path(sys.executable).parent / 'leadchat'


def run(*args, env=None):
    e = {k: v for k, v in os.environ.items()}
    e.update(env or {})
    return subprocess.run([str(LEADCHAT), *args], capture_output=True, text=True, cwd=ROOT, env=e, timeout=120)


def test_help_lists_commands():
    r = run('--help')
    assert r.returncode == 0 and 'check' in r.stdout and 'demo' in r.stdout


def test_the_committed_demo_profile_is_valid_and_the_demo_runs():
    r = run('check', '--env-file', 'demo.env')
    assert r.returncode == 0, r.stderr
    r = run('demo', '--env-file', 'demo.env')
    assert r.returncode == 0, r.stderr
    assert 'propose_handoff (hot_lead)' in r.stdout and '"handoff_reason": "hot_lead"' in r.stdout


def test_missing_required_variables_stop_with_a_named_error(tmp_path):
    empty = tmp_path / 'empty.env'
    empty.write_text('')
    r = run('check', '--env-file', str(empty))
    assert r.returncode == 2
    assert 'RAG_RELEVANCE_THRESHOLD is not set' in r.stderr and 'Traceback' not in r.stderr


def test_environment_overrides_and_hostile_values(tmp_path):
    env = {'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm'}
    assert run('check', env=env).returncode == 0
    for k, v, needle in [('BUSINESS_HOURS_START', '9.5', 'BUSINESS_HOURS_START'),
                         ('BUSINESS_HOURS_END', '9' * 400, 'BUSINESS_HOURS_END'),
                         ('BUSINESS_HOURS_TIMEZONE', '../../../etc/localtime', 'BUSINESS_HOURS_TIMEZONE'),
                         ('BUSINESS_HOURS_TIMEZONE', 'Europe/Madrid\u202e', 'BUSINESS_HOURS_TIMEZONE'),
                         ('RAG_RELEVANCE_THRESHOLD', 'NaN', 'RAG_RELEVANCE_THRESHOLD'),
                         ('CONTEXT_WINDOW_TURNS', '0', 'CONTEXT_WINDOW_TURNS'),
                         ('HANDOFF_RETRY_BACKOFF_SECONDS', '1;3;9', 'HANDOFF_RETRY_BACKOFF_SECONDS'),
                         ('HANDOFF_CHANNELS', 'slack', 'SLACK_WEBHOOK_URL'),
                         ('SMTP_PORT', '99999', 'SMTP_PORT')]:
        r = run('check', env={**env, k: v})
        assert r.returncode == 2, (k, v, r.stdout)
        assert needle in r.stderr and 'Traceback' not in r.stderr, (k, r.stderr)


def test_json_output_masks_secrets():
    env = {'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'SMTP_PASSWORD': 'hunter2-secret', 'LEADCHAT_ADMIN_TOKEN': 'tok-very-secret-' + 'x' * 20,
           'DATABASE_URL': 'postgresql://app:db-pass-9f3k@db.example.com:5432/leadchat?sslmode=require',
           'CHECKPOINT_DB_URL': 'postgresql://cp:cp-pass-77@db.example.com/cp',
           'SLACK_WEBHOOK_URL': 'https://hooks.slack.com/services/T0001/B0002/hookSecret123'}
    r = run('check', '--json', env=env)
    assert r.returncode == 0, r.stderr
    assert 'hunter2-secret' not in r.stdout and 'tok-very-secret' not in r.stdout and '**********' in r.stdout
    for secret in ('db-pass-9f3k', 'cp-pass-77', 'hookSecret123', 'T0001', 'B0002'): assert secret not in r.stdout, secret
    out = json.loads(r.stdout)
    assert out['database_url'] == 'postgresql://app:****@db.example.com:5432/leadchat?sslmode=require'
    assert out['checkpoint_db_url'] == 'postgresql://cp:****@db.example.com/cp'
    assert out['slack_webhook_url'] == 'https://hooks.slack.com/services/****'


def test_a_short_staff_token_stops_check_and_serve():
    env = {'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm'}
    for token in ('a', 'x' * 31):
        for cmd in (('check',), ('check', '--json'), ('serve', '--port', '9')):
            r = run(*cmd, env={**env, 'LEADCHAT_ADMIN_TOKEN': token})
            assert r.returncode == 2, (cmd, r.stdout, r.stderr)
            assert 'LEADCHAT_ADMIN_TOKEN' in r.stderr and 'at least 32 characters' in r.stderr, r.stderr
            assert 'secrets.token_urlsafe(32)' in r.stderr and 'Traceback' not in r.stderr
            assert 'leadchat starting' not in r.stdout
    assert run('check', env={**env, 'LEADCHAT_ADMIN_TOKEN': 'y' * 32}).returncode == 0


def test_db_commands_against_a_fresh_embedded_server(tmp_path):
    env = {'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'LEADCHAT_HOME': str(tmp_path)}
    first = run('db', 'migrate', env=env)
    assert first.returncode == 0 and 'applied: 0001_core.sql' in first.stdout, first.stderr
    second = run('db', 'migrate', env=env)
    assert second.returncode == 0 and 'database is up to date' in second.stdout
    status = run('db', 'status', env=env)
    rows = [line.split() for line in status.stdout.splitlines() if line[:4].isdigit()]
    shipped = sorted((Path(leadchat.__file__).parent / 'migrations').glob('*.sql'))
    assert status.returncode == 0 and len(rows) == len(shipped) and all(r[1] == 'applied' for r in rows), status.stdout
    purge = run('db', 'purge', '--dry-run', env=env)
    assert purge.returncode == 0 and purge.stdout.startswith('would delete: sessions 0')
    assert run('db', 'purge', '--days', '0', env=env).returncode == 2          # typer: --days must be >= 1
    assert run('db', 'expire', env=env).stdout.strip() == 'expired 0 session(s)'


def test_db_commands_report_an_unreachable_server_without_a_traceback():
    env = {'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'DATABASE_URL': 'postgresql://app:hunter2@127.0.0.1:9/leadchat'}
    r = run('db', 'status', env=env)
    assert r.returncode == 1 and 'cannot connect to the database' in r.stderr
    assert 'hunter2' not in r.stderr and 'Traceback' not in r.stderr


def test_ingest_calibrate_and_eval_rag_through_the_cli(tmp_path):
    env = {'RAG_RELEVANCE_THRESHOLD': '0.25', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'LEADCHAT_HOME': str(tmp_path / 'home')}
    first = run('ingest', 'knowledge', env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert 'new 18' in first.stdout and 'embedded 0' not in first.stdout
    again = run('ingest', 'knowledge', env=env)
    assert again.returncode == 0 and 'embedded 0;' in again.stdout and 'unchanged 18' in again.stdout
    out, log = tmp_path / 'cal', tmp_path / 'CHANGELOG.md'
    cal = run('calibrate', '--out', str(out), '--changelog-file', str(log), env=env)
    assert cal.returncode == 0, cal.stderr[-2000:]
    assert 'proposed RAG_RELEVANCE_THRESHOLD=' in cal.stdout and 'false positives' in cal.stdout
    assert out.with_suffix('.html').stat().st_size > 1000 and out.with_suffix('.json').exists()
    assert log.read_text().startswith('# Configuration changelog') and 'RAG_RELEVANCE_THRESHOLD = ' in log.read_text()
    # the scope report: the combined decision beside the threshold, on the tuning set and the held-out set
    for f in ('bench/calibration/scope-dev.yaml', 'bench/calibration/scope-heldout.yaml'):
        assert f'scope {f}: threshold alone FP' in cal.stdout and 'combined (threshold + classifier + lexical support) FP' in cal.stdout
        assert f'- scope `{f}`: threshold alone FP' in log.read_text()
    rep = json.loads(out.with_suffix('.json').read_text())['scope']['bench/calibration/scope-heldout.yaml']
    assert rep['n_relevant'] >= 70 and rep['n_out_of_scope'] >= 45 and 0 <= rep['combined']['fp_rate'] <= 1
    bad = tmp_path / 'scope.yaml'
    bad.write_text('- id: a\n  query: hi\n  kind: sideways\n')
    r = run('calibrate', '--scope', str(bad), '--no-changelog', '--out', str(tmp_path / 'o2'), env=env)
    assert r.returncode == 1 and 'query #1: kind' in r.stderr and 'Traceback' not in r.stderr
    ev = run('eval-rag', env=env)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert 'id_based_context_recall' in ev.stdout and 'skipped: no model key configured' in ev.stdout


def test_ingest_and_calibrate_reject_bad_input(tmp_path):
    env = {'RAG_RELEVANCE_THRESHOLD': '0.25', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'LEADCHAT_HOME': str(tmp_path / 'home')}
    (tmp_path / 'bad.md').write_bytes(b'\xff\xfe\x00binary')
    r = run('ingest', str(tmp_path / 'bad.md'), env=env)
    assert r.returncode == 1 and 'bad.md' in r.stderr and 'Traceback' not in r.stderr
    r = run('ingest', str(tmp_path / 'missing'), env=env)
    assert r.returncode == 1 and 'does not exist' in r.stderr
    q = tmp_path / 'q.yaml'
    q.write_text('- id: a\n  query: hi\n  kind: sideways\n')
    r = run('calibrate', '--queries', str(q), '--no-changelog', '--out', str(tmp_path / 'o'), env=env)
    assert r.returncode == 1 and 'does not exist; run `leadchat ingest` first' in r.stderr     # nothing ingested yet
    (tmp_path / 'one.md').write_text('# One\n\nWe build retrieval systems.\n')
    assert run('ingest', str(tmp_path / 'one.md'), env=env).returncode == 0
    r = run('calibrate', '--queries', str(q), '--no-changelog', '--out', str(tmp_path / 'o'), env=env)
    assert r.returncode == 1 and 'query #1: kind' in r.stderr and 'Traceback' not in r.stderr
    q.write_text('- id: a\n  query: hi\n  kind: in_scope\n  expected_sources: [no-such-doc]\n')
    r = run('calibrate', '--queries', str(q), '--no-changelog', '--out', str(tmp_path / 'o'), env=env)
    assert r.returncode == 1 and 'unknown source' in r.stderr
    q.write_text(': : not yaml [')
    r = run('calibrate', '--queries', str(q), '--no-changelog', '--out', str(tmp_path / 'o'), env=env)
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    r = run('eval-rag', '--ranking', 'sideways', env=env)
    assert r.returncode == 2


def start_serve(home: Path, *args: str, tries: int = 600) -> tuple[subprocess.Popen, str, int]:
    "`leadchat serve -e demo.env` on a free port with LEADCHAT_HOME=`home`, once /readyz answers 200: (process, base URL, port)."
    import socket, time
    import httpx
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    env = {**os.environ, 'LEADCHAT_HOME': str(home)}
    p = subprocess.Popen([str(LEADCHAT), 'serve', '-e', 'demo.env', '--port', str(port), *args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f'http://127.0.0.1:{port}'
    for _ in range(tries):
        try:
            if httpx.get(f'{base}/readyz', timeout=1).status_code == 200: break
        except httpx.HTTPError: pass
        if p.poll() is not None:
            raise AssertionError(p.stderr.read()[-2000:])
        time.sleep(0.2)
    return p, base, port


def test_serve_starts_the_chat_service(tmp_path):
    "What `make run` does: `leadchat serve` on an empty home — migrations, ingest, the API — then a real turn."
    import json, uuid
    import httpx
    p, base, port = start_serve(tmp_path / 'home', tries=300)
    try:
        assert httpx.get(f'{base}/readyz').json()['ready'] is True
        assert 'growth' in httpx.get(base).text.lower() or 'ZGC-Session-ID' in httpx.get(base).text
        r = httpx.post(f'{base}/chat', json={'message': 'Can I speak to someone?'},
                       headers={'ZGC-Session-ID': str(uuid.uuid4())}, timeout=30)
        assert r.status_code == 200 and 'event: done' in r.text
        done = json.loads(r.text.split('event: done')[1].split('data: ')[1].split('\n')[0])
        assert done['handoff_reason'] == 'explicit_request' and done['stage'] == 3
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    assert f'leadchat starting on http://127.0.0.1:{port}' in out


def test_calendar_commands(tmp_path):
    "`leadchat calendar check|slots` against a calendar.yaml with a calendar-less rep (working hours only)."
    cal = tmp_path / 'cal.yaml'
    cal.write_text('team: {name: T}\nreps: [{id: fay, name: Fay, email: fay@x.example, calendar: {kind: none}}]\n'
                   'meeting_types: [{id: intro, name: Intro, duration_minutes: 30}]\n')
    env = tmp_path / 'cal.env'
    env.write_text(f'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
                   f'LEADCHAT_CALENDAR_CONFIG={cal}\n')
    r = run('calendar', 'check', '-e', str(env))
    assert r.returncode == 0 and 'fay' in r.stdout and ' ok ' in r.stdout, r.stdout + r.stderr
    r = run('calendar', 'slots', '-e', str(env), '--tz', 'America/New_York')
    lines = [l for l in r.stdout.strip().splitlines() if l.startswith('intro.fay.')]
    assert r.returncode == 0 and len(lines) == 3, r.stdout + r.stderr
    assert all(('EST' in l or 'EDT' in l) and ('CET' in l or 'CEST' in l) for l in lines)
    for bad in (['--tz', 'Mars/Base'], ['--meeting-type', 'nope'], ['-n', '0']):
        r = run('calendar', 'slots', '-e', str(env), *bad)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, (bad, r.stdout, r.stderr)
    cal.write_text('team: {name: T}\nreps: []\n')
    r = run('calendar', 'check', '-e', str(env))
    assert r.returncode == 2 and 'configuration error' in r.stderr, r.stdout + r.stderr


def test_check_validates_the_calendar_config(tmp_path):
    env = tmp_path / 'c.env'
    base = 'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
    env.write_text(base + f'LEADCHAT_CALENDAR_CONFIG={ROOT / "calendar.example.yaml"}\n')
    r = run('check', '-e', str(env))
    assert r.returncode == 0 and 'calendar 2 reps, 2 meeting types' in r.stdout, r.stdout + r.stderr
    for bad in ('team: [1, 2]\n', 'not: yaml: at: all: [', '\x00'):
        (tmp_path / 'bad.yaml').write_text(bad)
        env.write_text(base + f'LEADCHAT_CALENDAR_CONFIG={tmp_path / "bad.yaml"}\n')
        r = run('check', '-e', str(env))
        assert r.returncode == 2 and 'LEADCHAT_CALENDAR_CONFIG' in r.stderr and 'Traceback' not in r.stderr, (bad, r.stderr)


def test_db_purge_prunes_login_attempts_and_scrubs_old_booking_contacts(pg):
    "Retention covers the staff sign-in log and calendar bookings' visitor contact, by the rule sessions follow."
    import asyncio
    import psycopg
    from conftest import fresh_db
    from leadchat.db import migrate
    url = fresh_db(pg[1])
    asyncio.run(migrate(url, pg[0]))
    old, recent = "now() - interval '40 days'", "now() - interval '2 days'"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"INSERT INTO staff_login_attempts (username, method, succeeded, reason, at) VALUES "
                  f"('old-guess', 'password', false, 'unknown_user', {old}), ('new-guess', 'password', false, 'unknown_user', {recent})")
        c.execute(f"INSERT INTO sessions (session_id, created_at, last_updated_at) VALUES ('s-lead', {old}, {old})")
        c.execute("INSERT INTO leads (session_id, handoff_reason, lead_level, payload) VALUES ('s-lead', 'hot_lead', 'hot', '{}')")
        for i, (sid, when, start) in enumerate([('s-gone', old, old), (None, old, old), ('s-lead', old, old),
                                                ('s-new', recent, recent), ('s-future', old, "now() + interval '60 days'")]):
            c.execute(f"""INSERT INTO calendar_bookings (id, rep, meeting_type, start_at, end_at, status, hold_token_hash,
                          provider, session_id, visitor_name, visitor_email, notes, created_at, updated_at)
                          VALUES (gen_random_uuid(), 'rep{i}', 'intro', {start}, {start} + interval '30 minutes', 'confirmed',
                          '\\x00', 'none', %s, 'Visitor {i}', 'v{i}@example.com', 'call me at 555-010{i}', {when}, {when})""", [sid])
    env = {'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'DATABASE_URL': url}
    dry = run('db', 'purge', '--days', '30', '--dry-run', env=env)
    assert dry.returncode == 0, dry.stderr
    assert 'login_attempts 1' in dry.stdout and 'booking_contacts 2' in dry.stdout, dry.stdout
    r = run('db', 'purge', '--days', '30', env=env)
    assert r.returncode == 0 and 'login_attempts 1' in r.stdout and 'booking_contacts 2' in r.stdout, r.stdout + r.stderr
    with psycopg.connect(url) as c:
        assert [x[0] for x in c.execute('SELECT username FROM staff_login_attempts')] == ['new-guess']
        kept = {x[0]: x[1:] for x in c.execute('SELECT rep, visitor_name, visitor_email, notes FROM calendar_bookings')}
    assert kept['rep0'] == kept['rep1'] == (None, None, None)           # old, no lead: contact gone, booking kept
    assert kept['rep2'][1] == 'v2@example.com'                          # the lead's booking stays with the lead
    assert kept['rep3'][1] == 'v3@example.com' and kept['rep4'][1] == 'v4@example.com'   # recent / meeting still ahead
    again = run('db', 'purge', '--days', '30', env=env).stdout
    assert 'login_attempts 0' in again and 'booking_contacts 0' in again, again


def test_serve_sigterm_stops_the_embedded_server_and_the_access_log_has_no_query(tmp_path):
    "SIGTERM of `leadchat serve` stops the PostgreSQL it started; access log lines carry the path, never the query."
    import signal, time
    import httpx
    home = tmp_path / 'home'
    p, base, port = start_serve(home)
    try:
        postmaster = int((home / 'pgdata' / 'postmaster.pid').read_text().split()[0])
        os.kill(postmaster, 0)                                           # running
        httpx.get(f'{base}/chat?email=x@y.z&name=Ana', timeout=10)
        httpx.get(f'{base}/readyz?token=s3cr3t', timeout=10)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill(); p.communicate()
    for _ in range(150):                                                 # a generous wait, not a timing assertion
        try: os.kill(postmaster, 0)
        except ProcessLookupError: break
        time.sleep(0.2)
    else: raise AssertionError(f'postmaster {postmaster} still running after SIGTERM of serve')
    logged = out + err
    assert '"GET /chat HTTP/1.1"' in logged and '"GET /readyz HTTP/1.1"' in logged, logged[-3000:]
    assert 'x@y.z' not in logged and 'Ana' not in logged and 's3cr3t' not in logged
    pids = home / 'pgdata' / '.handle_pids.json'
    assert not pids.exists() or str(p.pid) not in pids.read_text()


def test_descriptor_exhaustion_in_the_accept_loop_is_one_line_a_minute():
    "138,830 'Too many open files' tracebacks in 13 s become one line per minute, without a traceback."
    import errno, logging
    from leadchat.cli import install_log_filters
    install_log_filters()
    seen = []
    class Keep(logging.Handler):
        def emit(self, record): seen.append((self.format(record), record.exc_info))
    h = Keep()
    lg = logging.getLogger('asyncio')
    lg.addHandler(h)
    try:
        for _ in range(500):
            try: raise OSError(errno.EMFILE, 'Too many open files')
            except OSError: lg.error('socket.accept() out of system resource', exc_info=True)
        lg.error('something else entirely')
    finally: lg.removeHandler(h)
    assert len(seen) == 2 and 'Traceback' not in seen[0][0] and seen[0][1] is None
    assert 'out of file descriptors' in seen[0][0] and 'ulimit -n' in seen[0][0]
    assert seen[1][0] == 'something else entirely'


def test_serve_closes_a_connection_whose_headers_never_finish(tmp_path):
    "Slowloris: a request line and headers dribbled in are cut off after --header-timeout; normal requests still work."
    import socket, time
    import httpx
    p, base, port = start_serve(tmp_path / 'home', '--header-timeout', '1')
    try:
        slow = socket.create_connection(('127.0.0.1', port))
        slow.settimeout(30)                                  # generous: the server must hang up long before
        slow.sendall(b'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ')
        try: got = slow.recv(100)
        except socket.timeout: got = None
        slow.close()
        assert got == b'', 'the server kept a connection with unfinished headers open'
        assert httpx.get(f'{base}/readyz', timeout=10).status_code == 200
    finally:
        p.terminate(); p.communicate(timeout=60)


def test_every_command_without_an_env_file_names_the_flag_to_add(tmp_path):
    "A new user's first try, from the repository root with nothing configured: the variable, and `-e demo.env` to add."
    for cmd in (['demo'], ['check'], ['serve', '--port', '9'], ['relay'], ['db', 'status'], ['db', 'migrate'], ['db', 'purge'],
                ['db', 'expire'], ['ingest', 'knowledge'], ['calibrate'], ['eval-rag'], ['eval', 'eval/conversations.yaml'],
                ['handoff', 'replay', '1'], ['calendar', 'check'], ['calendar', 'slots'], ['calendar', 'sweep']):
        r = run(*cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert 'is not set' in r.stderr and 'add `-e demo.env`' in r.stderr and 'Traceback' not in r.stderr, (cmd, r.stderr)
    r = run('demo', '-e', 'demo.env')                     # the hint, followed, works
    assert r.returncode == 0 and 'propose_handoff (hot_lead)' in r.stdout, r.stderr
    # away from the repository, the hint names no demo.env that is not there
    r = subprocess.run([str(LEADCHAT), 'demo'], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and 'add `-e FILE`' in r.stderr and 'demo.env`' not in r.stderr, r.stderr


def test_calendar_commands_take_the_calendar_file_as_a_flag(tmp_path):
    "demo.env names no calendar: the calendar commands say to add --calendar, and read the file it names."
    r = run('calendar', 'check', '-e', 'demo.env')
    assert r.returncode == 2 and 'LEADCHAT_CALENDAR_CONFIG is not set in demo.env' in r.stderr, r.stderr
    assert '--calendar calendar.example.yaml' in r.stderr and 'Traceback' not in r.stderr
    cal = tmp_path / 'cal.yaml'
    cal.write_text('team: {name: T}\nreps: [{id: fay, name: Fay, email: fay@x.example, calendar: {kind: none}}]\n'
                   'meeting_types: [{id: intro, name: Intro, duration_minutes: 30}]\n')
    r = run('calendar', 'check', '-e', 'demo.env', '--calendar', str(cal))
    assert r.returncode == 0 and 'fay' in r.stdout and ' ok ' in r.stdout, r.stdout + r.stderr
    r = run('calendar', 'slots', '-e', 'demo.env', '-c', str(cal), '-n', '2')
    assert r.returncode == 0 and len([l for l in r.stdout.splitlines() if l.startswith('intro.fay.')]) == 2, r.stdout + r.stderr
    for bad in (tmp_path / 'missing.yaml', tmp_path):                      # no such file; a directory
        r = run('calendar', 'check', '-e', 'demo.env', '--calendar', str(bad))
        assert r.returncode == 2 and 'Traceback' not in r.stderr, (bad, r.stderr)


def test_ingest_and_calibrate_need_no_threshold_yet(tmp_path):
    "The threshold's error says to run `leadchat calibrate`: calibrate (and the ingest before it) run without one."
    env = tmp_path / 'new.env'
    env.write_text(f'BUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\nLEADCHAT_HOME={tmp_path / "home"}\n')
    r = run('check', '-e', str(env))
    assert r.returncode == 2 and 'run `leadchat calibrate`' in r.stderr
    (tmp_path / 'kb').mkdir()
    (tmp_path / 'kb' / 'rag.md').write_text('# Retrieval\n\nWe build retrieval-augmented assistants over support tickets.\n')
    (tmp_path / 'kb' / 'cloud.md').write_text('# Cloud\n\nWe migrate data platforms to the cloud for insurers.\n')
    assert run('ingest', str(tmp_path / 'kb'), '-e', str(env)).returncode == 0
    q = tmp_path / 'q.yaml'
    q.write_text('- {id: a, query: "Do you build RAG assistants over support tickets?", kind: in_scope, expected_sources: [rag]}\n'
                 '- {id: b, query: "Can you migrate our data platform to the cloud?", kind: in_scope, expected_sources: [cloud]}\n'
                 '- {id: c, query: "What is a good recipe for banana bread?", kind: out_of_scope}\n')
    r = run('calibrate', '-e', str(env), '--queries', str(q), '--no-scope')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'proposed RAG_RELEVANCE_THRESHOLD=' in r.stdout and 'to use it, set RAG_RELEVANCE_THRESHOLD=' in r.stdout
    report = tmp_path / 'home' / 'calibration'
    assert json.loads((report / 'calibration.json').read_text())['calibration']['n_relevant'] == 2
    assert 'RAG_RELEVANCE_THRESHOLD = ' in (report / 'CONFIG_CHANGELOG.md').read_text()
    assert (report / 'calibration.png').read_bytes()[:4] == b'\x89PNG' and f'{report / "calibration.png"}' not in r.stderr
    # no Chromium for kaleido: no PNG, and the command says so instead of listing one
    r = run('calibrate', '-e', str(env), '--queries', str(q), '--no-scope', '--out', str(tmp_path / 'nopng' / 'cal'),
            env={'BROWSER_PATH': str(tmp_path / 'no-such-chromium')})
    assert r.returncode == 0 and not (tmp_path / 'nopng' / 'cal.png').exists(), r.stderr[-2000:]
    wrote = next(l for l in r.stdout.splitlines() if l.startswith('wrote '))
    assert 'cal.html' in wrote and 'cal.png' not in wrote and f'no {tmp_path / "nopng" / "cal.png"}: plotly' in r.stderr, r.stderr


def test_commands_on_a_fresh_data_home_say_to_migrate_first(tmp_path):
    "Before `make run` or `db migrate` made the schema, the commands that need it say so (no traceback, no error loop)."
    env = tmp_path / 'fresh.env'
    env.write_text(f'RAG_RELEVANCE_THRESHOLD=0.4\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
                   f'LEADCHAT_HOME={tmp_path / "home"}\n')
    for cmd in (['handoff', 'replay', '1'], ['handoff', 'replay', '1', '--dry-run'], ['db', 'purge', '--dry-run'],
                ['db', 'expire'], ['relay']):
        r = run(*cmd, '-e', str(env))
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert f'run `leadchat db migrate -e {env}`' in r.stderr and 'Traceback' not in r.stderr, (cmd, r.stderr)
    assert run('db', 'migrate', '-e', str(env)).returncode == 0
    r = run('handoff', 'replay', '1', '--dry-run', '-e', str(env))          # now the schema is there: the row is not
    assert r.returncode == 1 and 'db migrate' not in r.stderr and 'Traceback' not in r.stderr, r.stderr
