"""The human hand-off subsystem against real parts: a Slack-speaking HTTP server (tests/slack_receiver.py),
an SMTP server (aiosmtpd) and the embedded PostgreSQL. Nothing here is mocked.

* the fault matrix: every Slack behaviour × CRM ok/failing → outcome, records, alerts, fallback email, leads, flag;
* the Slack bot-token path (chat.postMessage, then chat.update with the CRM button);
* SMTP: STARTTLS with a certificate, authentication, a wrong password, a server without auth;
* relays: 4 concurrent relays over 30 rows deliver each Slack message exactly once; a relay killed
  with SIGKILL mid-delivery loses nothing and creates no second lead;
* replay (dry run and re-delivery), packet-generation failure, audit-write failure, hostile visitor text.
"""
import asyncio
import email
import email.policy
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from psycopg import sql
from slack_sdk.models.blocks import Block
from structlog.testing import capture_logs

import conftest
from conftest import fresh_db
from leadchat.config import Settings
from leadchat.db import DataKey, Keyring, create_pool, migrate, new_data_key
from leadchat.state import HandoffRequest
from leadchat.handoff import (PostgresCRMClient, SlackBotClient, SlackWebhookClient, SmtpFallbackClient,
                              crm_payload, deliver_handoff, deliver_update, relay_once, replay_handoff, run_relay,
                              slack_blocks)
from leadchat.packet import VisitorData, generate_context_packet
from leadchat.repos import (enqueue_handoff, enqueue_update, get_lead, get_session, leads_for_session, list_events,
                            list_handoff_records, upsert_session)
from leadchat.state import Message, QualificationState, SessionState, SignalEntry
from slack_receiver import SlackReceiver, api_error, ok, permanent, rate_limited, slow, status

# the test SMTP server accepts AUTH without TLS on purpose (the STARTTLS test requires it)
pytestmark = pytest.mark.filterwarnings('ignore:Requiring AUTH while not requiring TLS')

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 10, 30, tzinfo=timezone.utc)   # a Monday, in business hours
BACKOFF = '0.01,0.02,0.04'
SMTP_USER, SMTP_PASSWORD = 'leadchat@example.com', 's3cret'
CRM_URL = 'https://crm.example.test/leads/{id}'
DATA_KEY = new_data_key()           # the visitor's PII is sealed at rest: the tests and the relays share this key
KR = Keyring(DataKey.parse(DATA_KEY))


# --- services ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Inbox:
    "aiosmtpd handler: keeps every message with whether its session authenticated and used TLS."
    def __init__(self): self.messages = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(dict(msg=msg, rcpt=list(envelope.rcpt_tos), mail_from=envelope.mail_from,
                                  authenticated=session.authenticated, tls=session.ssl is not None))
        return '250 OK'

    def about(self, needle: str): return [m for m in self.messages if needle in str(m['msg']['Subject'])]


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)   # handled=False: aiosmtpd answers 535 itself on failure


@pytest.fixture(scope='module')
def smtp():
    "An SMTP server that requires LOGIN (over plain text: auth_require_tls=False)."
    inbox = Inbox()
    ctl = Controller(inbox, hostname='127.0.0.1', port=free_port(), authenticator=authenticator, auth_required=True,
                     auth_require_tls=False)
    ctl.start()
    ctl.inbox = inbox
    yield ctl
    ctl.stop()


async def migrated(pg) -> str:
    url = fresh_db(pg[1])
    await migrate(url, pg[0])
    return url


@pytest.fixture(scope='module')
async def db(pg):
    "A migrated database of this module's own, with a pool."
    url = await migrated(pg)
    pool = await create_pool(url, max_size=12)
    yield url, pool
    await pool.close()


def role_url(url: str, grants: str = '') -> str:
    "A login role with only `grants` (none by default): real permission errors, not mocks."
    role = f'ho_{uuid.uuid4().hex[:8]}'
    login = conftest.role_url(url, role)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL('GRANT USAGE ON SCHEMA public TO {}').format(sql.Identifier(role)))
        if grants: c.execute(sql.SQL(grants).format(role=sql.Identifier(role)))
    return login


@pytest.fixture(scope='module')
async def denied_pool(db):
    "A pool whose role may not write to any table: the CRM INSERT fails with a real permission error."
    pool = await create_pool(role_url(db[0]), max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def rx():
    with SlackReceiver() as r: yield r


def hsettings(url, smtp, rx=None, **kw) -> Settings:
    base = dict(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', database_url=url,
                handoff_channels='slack,crm,email', slack_webhook_url=rx.webhook_url if rx else 'http://127.0.0.1:9/hook',
                fallback_email_address='sales@example.com', smtp_host='127.0.0.1', smtp_port=smtp.port,
                smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, handoff_retry_backoff_seconds=BACKOFF,
                leadchat_data_key=DATA_KEY)
    return Settings(**{**base, **kw})


# --- data ----------------------------------------------------------------------------------------

def session_state(sid, *, company='Acme', visitor_email=None, level='hot', reason='hot_lead', **kw) -> SessionState:
    sig = [SignalEntry(dimension='problem_fit', level='confirmed', signal_type='explicit', turn_index=1,
                       evidence='we need a RAG assistant over our support tickets'),
           SignalEntry(dimension='authority_fit', level='confirmed', signal_type='explicit', turn_index=2,
                       evidence='I run the platform team')]
    return SessionState(session_id=sid, created_at=NOW, last_updated_at=NOW, lead_level=level, handoff_reason=reason,
                        visitor_email=visitor_email or f'{sid[-12:]}@acme.io', visitor_company=company, visitor_role='CTO',
                        qualification=QualificationState(problem_fit='confirmed', authority_fit='confirmed',
                                                         signals_observed=sig),
                        messages=[Message(role='user', content='When can we start?', turn_index=3, at=NOW)], **kw)


def handoff_request(state: SessionState, *, business_hours=True) -> HandoffRequest:
    return HandoffRequest(session_id=state.session_id, handoff_reason=state.handoff_reason or 'hot_lead',
                          lead_level=state.lead_level, business_hours=business_hours, session_state=state, triggered_at=NOW)


async def new_request(pool, **kw) -> HandoffRequest:
    "A hand-off request whose session row exists (as the orchestrator leaves it)."
    state = session_state(f'ho-{uuid.uuid4()}', **kw)
    async with pool.connection() as c: await upsert_session(c, state, keyring=KR)
    return handoff_request(state)


async def enqueue(pool, req: HandoffRequest) -> int:
    "What `dispatch_handoff` does inside the turn's transaction."
    async with pool.connection() as c:
        return await enqueue_handoff(c, session_id=req.session_id, handoff_reason=req.handoff_reason,
                                     request=req.model_dump(mode='json'), keyring=KR)


def valid_blocks(blocks) -> bool:
    "Each block parses as a slack_sdk Block Kit model and round-trips unchanged (`to_dict` enforces the limits)."
    for b in blocks: assert Block.parse(b).to_dict() == b
    return True


class Sleeps:
    "A real (short) sleep that records what it was asked to wait."
    def __init__(self): self.waits = []
    async def __call__(self, s):
        self.waits.append(s)
        await asyncio.sleep(s)


def events(logs, name): return [e for e in logs if e['event'] == name]


# --- Block Kit payloads ----------------------------------------------------------------------------

EVIL = ('<!channel> <http://evil.example|click here> & *bold* `code` @here\n' * 200)[:10_000]


@pytest.mark.parametrize('level', ['hot', 'warm', 'cold'])
@pytest.mark.parametrize('business_hours', [True, False])
@pytest.mark.parametrize('crm_url', [None, 'https://crm.example.test/leads/7'])
@pytest.mark.parametrize('hostile', [False, True])
def test_slack_blocks_are_valid_block_kit(level, business_hours, crm_url, hostile):
    packet = generate_context_packet(session_state('blocks-1', level=level))
    if hostile:
        packet = packet.model_copy(update={'conversation_summary': EVIL, 'visitor': VisitorData(
            email=EVIL[:300], name=EVIL, company=EVIL, role=EVIL)})
    blocks = slack_blocks(packet, business_hours, crm_url)
    assert valid_blocks(blocks)
    header = blocks[0]['text']['text']
    emoji = {'hot': '🔥', 'warm': '🌡️', 'cold': '❄️'}[level]
    if business_hours: assert header.startswith(f'{emoji} {level.capitalize()} Lead — ')
    else: assert header.startswith('📬 Lead captured (outside hours) — ')
    assert len(header) <= 150 and '\n' not in header
    assert [b['type'] for b in blocks] == ['header', 'section', 'section', 'section'] + (['actions'] if crm_url else [])
    if crm_url: assert blocks[-1]['elements'][0] == {'type': 'button', 'text': {'type': 'plain_text', 'text': 'View CRM Record'},
                                                     'url': crm_url}
    mrkdwn = [f['text'] for f in blocks[1]['fields']] + [blocks[2]['text']['text'], blocks[3]['text']['text']]
    for text in mrkdwn:   # no mention, link or entity can be formed by the visitor
        assert '<' not in text and '>' not in text
    if hostile:
        assert header.endswith('…') and 2990 <= len(blocks[2]['text']['text']) <= 3000
        assert '&lt;!channel&gt;' in blocks[2]['text']['text']


# --- the fault matrix ----------------------------------------------------------------------------

# name: (receiver script, receiver default, expected status, attempts, last HTTP status)
SLACK = {
    'ok': ([], ok(), 'delivered', 1, 200),
    '500_then_ok': ([status(500)], ok(), 'delivered', 2, 200),
    'always_500': ([], status(500), 'failed', 4, 500),
    '429_then_ok': ([rate_limited(0.05)], ok(), 'delivered', 2, 200),
    'permanent': ([permanent('channel_not_found')], ok(), 'failed', 1, 404),
    'timeout': ([], slow(0.6), 'failed', 4, None),
}
CRM = {'ok': ('delivered', 1), 'failing': ('failed', 4)}


@pytest.mark.parametrize('crm_case', list(CRM))
@pytest.mark.parametrize('slack_case', list(SLACK))
async def test_fault_matrix(slack_case, crm_case, db, denied_pool, smtp, rx):
    url, pool = db
    script, default, slack_status, slack_attempts, slack_http = SLACK[slack_case]
    crm_status, crm_attempts = CRM[crm_case]
    rx.script(*script)
    rx.default = default
    settings = hsettings(url, smtp, rx)
    req = await new_request(pool)
    sid = req.session_id
    sleeps, slack_sleeps = Sleeps(), Sleeps()
    slack = SlackWebhookClient(rx.webhook_url, settings.handoff_retry_backoff_seconds, timeout=0.2, sleep=slack_sleeps)
    crm = PostgresCRMClient(pool if crm_case == 'ok' else denied_pool, settings, record_url=CRM_URL, sleep=sleeps)

    with capture_logs() as logs:
        out = await deliver_handoff(req, settings=settings, pool=pool, slack=slack, crm=crm, sleep=sleeps)

    delivered = [slack_status, crm_status].count('delivered')
    expected = {2: 'complete', 1: 'partial_failure', 0: 'total_failure'}[delivered]
    assert out.outcome == expected
    s, c, e = out.channels['slack'], out.channels['crm'], out.channels['email']
    assert (s.status, s.attempt_count, s.last_http_status) == (slack_status, slack_attempts, slack_http)
    assert (c.status, c.attempt_count) == (crm_status, crm_attempts)
    assert e.status == ('skipped' if expected == 'complete' else 'delivered')

    # every request Slack saw is a valid Block Kit message; the button iff the CRM delivered first
    bodies = rx.bodies()
    assert len(bodies) == slack_attempts and all(valid_blocks(b['blocks']) for b in bodies)
    last = bodies[-1]['blocks']
    if crm_status == 'delivered':
        assert last[-1]['elements'][0]['url'] == CRM_URL.format(id=c.crm_record_id)
    else: assert last[-1]['type'] != 'actions'
    if slack_case == '429_then_ok': assert slack_sleeps.waits == [0.05]   # Retry-After, not the 0.01 backoff step

    # audit records: one per channel, all with the outcome
    async with pool.connection() as conn:
        records = {r.channel: r for r in await list_handoff_records(conn, session_id=sid)}
        leads = await leads_for_session(conn, sid, keyring=KR)
        row = await get_session(conn, sid, keyring=KR)
        evs = [ev.event_type for ev in await list_events(conn, session_id=sid)]
    assert set(records) == {'slack', 'crm', 'email'} and {r.outcome for r in records.values()} == {expected}
    assert (records['slack'].status, records['slack'].attempt_count, records['slack'].last_http_status) == \
           (slack_status, slack_attempts, slack_http)
    assert (records['crm'].status, records['crm'].attempt_count) == (crm_status, crm_attempts)
    assert records['email'].status == e.status
    # the CRM: one lead or none, and the record points at it
    assert len(leads) == (1 if crm_status == 'delivered' else 0)
    if leads:
        assert records['crm'].crm_record_id == str(leads[0].id) == out.crm_record_id
        assert leads[0].payload == crm_payload(generate_context_packet(req.session_state))
        assert leads[0].task_due_at == datetime(2026, 11, 23, 12, 30, tzinfo=timezone.utc)   # 2 h in business hours
    assert row.handoff_triggered is (expected != 'total_failure')
    assert {'complete': 'handoff_delivered'}.get(expected, f'handoff_{expected}') in evs

    # the fallback email went out exactly when a primary channel failed
    mails = smtp.inbox.about(req.session_state.visitor_email)
    assert len(mails) == (0 if expected == 'complete' else 1)
    if mails:
        m = mails[0]
        assert m['rcpt'] == ['sales@example.com'] and m['authenticated'] and m['mail_from'] == SMTP_USER
        assert str(m['msg']['Subject']) == f'[HANDOFF FALLBACK] hot lead — {req.session_state.visitor_email}'
        assert f'session_id:' in m['msg'].get_content() and sid in m['msg'].get_content()

    # logs: one WARN per failed attempt, ERROR per failed channel, the alert at the right level
    assert len(events(logs, 'slack_delivery_attempt_failed')) == slack_attempts - (slack_status == 'delivered')
    assert len(events(logs, 'crm_delivery_attempt_failed')) == crm_attempts - (crm_status == 'delivered')
    failed = events(logs, 'handoff_channel_failure')
    assert sorted(f['failed_channel'] for f in failed) == sorted(
        ch for ch, st in (('slack', slack_status), ('crm', crm_status)) if st == 'failed')
    for f in failed:
        assert f['log_level'] == 'error' and f['session_id'] == sid and f['triggered_at'] == '2026-11-23T10:30:00Z'
        assert {'last_http_status', 'attempt_count'} <= set(f)
    partial, total = events(logs, 'handoff_partial_failure'), events(logs, 'handoff_total_failure')
    assert [a['log_level'] for a in partial] == (['warning'] if expected == 'partial_failure' else [])
    assert [a['log_level'] for a in total] == (['critical'] if expected == 'total_failure' else [])
    assert all(a['alert'] for a in partial + total)
    assert not events(logs, 'fallback_email_failure')
    assert 'XXXXSECRET' not in repr(logs)   # the webhook URL is a secret


# --- updates after the hand-off: the same faults --------------------------------------------------

def update_of(req: HandoffRequest, email: str) -> tuple[HandoffRequest, list[dict]]:
    "The session a turn later: the visitor gave `email` (was the hand-off's)."
    old = req.session_state
    st = old.model_copy(update={'visitor_email': email, 'last_updated_at': NOW.replace(minute=45)})
    return req.model_copy(update={'session_state': st}), [{'kind': 'email', 'value': email, 'previous': old.visitor_email}]


@pytest.mark.parametrize('crm_case', list(CRM))
@pytest.mark.parametrize('slack_case', list(SLACK))
async def test_update_fault_matrix(slack_case, crm_case, db, denied_pool, smtp, rx):
    url, pool = db
    settings = hsettings(url, smtp, rx)
    req = await new_request(pool)
    sid = req.session_id
    first = await deliver_handoff(req, settings=settings, pool=pool, sleep=Sleeps())      # the hand-off: one lead
    assert first.outcome == 'complete'
    script, default, slack_status, slack_attempts, slack_http = SLACK[slack_case]
    crm_status, crm_attempts = CRM[crm_case]
    rx.requests.clear()
    rx.script(*script)
    rx.default = default
    upd, changes = update_of(req, f'new-{sid[-8:]}@acme.io')
    slack = SlackWebhookClient(rx.webhook_url, settings.handoff_retry_backoff_seconds, timeout=0.2, sleep=Sleeps())
    crm = PostgresCRMClient(pool if crm_case == 'ok' else denied_pool, settings, record_url=CRM_URL, sleep=Sleeps())
    out = await deliver_update(upd, changes, settings=settings, pool=pool, slack=slack, crm=crm, sleep=Sleeps(), outbox_id=None)

    delivered = [slack_status, crm_status].count('delivered')
    assert out.outcome == {2: 'complete', 1: 'partial_failure', 0: 'total_failure'}[delivered]
    s, c, e = out.channels['slack'], out.channels['crm'], out.channels['email']
    assert (s.status, s.attempt_count, s.last_http_status) == (slack_status, slack_attempts, slack_http)
    assert (c.status, c.attempt_count) == (crm_status, crm_attempts)
    assert e.status == ('delivered' if slack_status == 'failed' else 'skipped')          # only when Slack failed
    bodies = rx.bodies()
    assert len(bodies) == slack_attempts and all(valid_blocks(b['blocks']) for b in bodies)
    assert all(f'new-{sid[-8:]}@acme.io' in b['text'] for b in bodies)
    async with pool.connection() as conn:
        leads = await leads_for_session(conn, sid, keyring=KR)
        records = [r for r in await list_handoff_records(conn, session_id=sid) if r.kind == 'update']
        evs = [ev.event_type for ev in await list_events(conn, session_id=sid)]
    assert len(leads) == 1                                                                # never a second lead
    assert leads[0].email == (f'new-{sid[-8:]}@acme.io' if crm_status == 'delivered' else req.session_state.visitor_email)
    assert {r.channel: r.status for r in records} == {'slack': slack_status, 'crm': crm_status, 'email': e.status}
    assert 'handoff_updated' in evs
    mails = [m for m in smtp.inbox.about('[HANDOFF UPDATE]') if sid[-8:] in str(m['msg']['Subject'])]
    assert len(mails) == (1 if slack_status == 'failed' else 0)
    if mails: assert 'Email: new-' in mails[0]['msg'].get_content()


async def test_bot_token_updates_reply_in_the_hand_offs_thread(db, smtp, rx):
    url, pool = db
    settings = hsettings(url, smtp, rx, slack_bot_token='xoxb-test-token', slack_channel='C0NEWLEADS', slack_api_url=rx.api_url)
    req = await new_request(pool)
    assert (await deliver_handoff(req, settings=settings, pool=pool, sleep=Sleeps())).outcome == 'complete'
    upd, changes = update_of(req, 'second@acme.io')
    assert (await deliver_update(upd, changes, settings=settings, pool=pool, sleep=Sleeps())).outcome == 'complete'
    posts = [r['body'] for r in rx.requests if r['path'].endswith('chat.postMessage')]
    assert len(posts) == 2 and 'thread_ts' not in posts[0]
    async with pool.connection() as conn: [lead] = await leads_for_session(conn, req.session_id, keyring=KR)
    assert posts[1]['thread_ts'] == lead.slack_ts and posts[1]['channel'] == 'C0NEWLEADS' and lead.email == 'second@acme.io'
    assert 'Email: second@acme.io (was ' in posts[1]['text'] and valid_blocks(posts[1]['blocks'])


# --- retries, for real ----------------------------------------------------------------------------

async def test_real_backoff_waits_between_attempts(rx):
    rx.script(status(503), status(500), ok())
    res = await SlackWebhookClient(rx.webhook_url, [0.05, 0.1]).post({'text': 'x', 'blocks': []})
    assert (res.status, res.attempt_count) == ('delivered', 3)
    t = [r['at'] for r in rx.requests]
    assert t[1] - t[0] >= 0.045 and t[2] - t[1] >= 0.095


async def test_pseudocode_backoff_gives_three_attempts(rx):
    rx.default = status(500)
    res = await SlackWebhookClient(rx.webhook_url, [0.01, 0.02]).post({'text': 'x'})
    assert (res.status, res.attempt_count, len(rx.requests)) == ('failed', 3, 3)


@pytest.mark.parametrize('error', ['invalid_payload', 'channel_not_found', 'channel_is_archived', 'action_prohibited',
                                   'no_service', 'invalid_token'])
async def test_permanent_webhook_errors_are_not_retried(error, rx):
    rx.script(permanent(error))
    with capture_logs() as logs:
        res = await SlackWebhookClient(rx.webhook_url, [0.01, 0.02, 0.04]).post({'text': 'x'})
    assert (res.status, res.attempt_count, res.error, len(rx.requests)) == ('failed', 1, error, 1)
    assert [(e['attempt'], e['status'], e['permanent']) for e in events(logs, 'slack_delivery_attempt_failed')] == \
           [(1, res.last_http_status, True)]


async def test_retry_after_is_capped(rx):
    rx.script(rate_limited(3600))
    sleeps = []
    async def sleep(s): sleeps.append(s)
    res = await SlackWebhookClient(rx.webhook_url, [0.01], sleep=sleep, max_retry_after=60).post({'text': 'x'})
    assert (res.status, sleeps) == ('delivered', [60])


async def test_unreachable_webhook_is_retried_and_redacted():
    url = f'http://127.0.0.1:{free_port()}/services/T/B/SECRETPART'
    with capture_logs() as logs:
        res = await SlackWebhookClient(url, [0.01, 0.01], timeout=0.5).post({'text': 'x'})
    assert (res.status, res.attempt_count, res.last_http_status) == ('failed', 3, None)
    assert 'SECRETPART' not in repr(logs) + (res.error or '')


# --- the bot-token path --------------------------------------------------------------------------

async def test_bot_posts_at_once_then_adds_the_crm_button(db, smtp, rx):
    url, pool = db
    settings = hsettings(url, smtp, rx, slack_bot_token='xoxb-test-token', slack_channel='C0NEWLEADS')
    req = await new_request(pool)
    bot = SlackBotClient(settings.slack_bot_token, 'C0NEWLEADS', base_url=rx.api_url, backoff=[0.01, 0.02, 0.04])
    crm = PostgresCRMClient(pool, settings, record_url=CRM_URL)
    out = await deliver_handoff(req, settings=settings, pool=pool, slack=bot, crm=crm)
    assert out.outcome == 'complete'
    post, update = rx.requests
    assert post['path'] == '/api/chat.postMessage' and update['path'] == '/api/chat.update'
    assert post['auth'] == 'Bearer xoxb-test-token' and post['body']['channel'] == 'C0NEWLEADS'
    assert post['body']['blocks'][-1]['type'] == 'section'                 # sent before the CRM id was known
    assert update['body']['ts'] == out.channels['slack'].message_ts
    assert update['body']['blocks'][-1]['elements'][0]['url'] == CRM_URL.format(id=out.crm_record_id)
    assert valid_blocks(post['body']['blocks']) and valid_blocks(update['body']['blocks'])


async def test_bot_api_errors(rx):
    packet = generate_context_packet(session_state('bot-errors'))
    bot = SlackBotClient('xoxb-t', 'C1', base_url=rx.api_url, backoff=[0.01, 0.02, 0.04])
    rx.script(api_error('channel_not_found'))
    res = await bot.deliver(packet, True)
    assert (res.status, res.attempt_count, res.error) == ('failed', 1, 'channel_not_found')
    rx.script(api_error('internal_error'), rate_limited(0.01), ok())
    res = await bot.deliver(packet, True)
    assert (res.status, res.attempt_count) == ('delivered', 3) and res.message_ts


# --- SMTP ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp('tls')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(d / 'key.pem'),
                    '-out', str(d / 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1'], check=True, capture_output=True)
    return d / 'cert.pem', d / 'key.pem'


async def test_smtp_starttls_and_login(tls_files, smtp):
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    ctl = Controller(inbox, hostname='127.0.0.1', port=free_port(), tls_context=server_ctx, require_starttls=True,
                     authenticator=authenticator, auth_required=True)   # auth only after TLS
    ctl.start()
    try:
        settings = hsettings('postgresql://unused', smtp, smtp_port=ctl.port)
        packet = generate_context_packet(session_state('smtp-tls'))
        trusted = SmtpFallbackClient(settings, ssl_context=ssl.create_default_context(cafile=str(cert)), backoff=[0.01])
        res = await trusted.deliver(packet)
        assert (res.status, res.attempt_count) == ('delivered', 1)
        assert inbox.messages[0]['tls'] and inbox.messages[0]['authenticated']
        # the system CA store does not know this certificate: permanent failure, no retry
        res = await SmtpFallbackClient(settings, backoff=[0.01, 0.01]).deliver(packet)
        assert (res.status, res.attempt_count) == ('failed', 1) and 'CERTIFICATE_VERIFY_FAILED' in res.error
    finally: ctl.stop()


async def test_smtp_wrong_password_is_permanent(smtp):
    settings = hsettings('postgresql://unused', smtp, smtp_password='wrong')
    res = await SmtpFallbackClient(settings, backoff=[0.01, 0.01]).deliver(generate_context_packet(session_state('smtp-pw')))
    assert (res.status, res.attempt_count, res.last_http_status) == ('failed', 1, 535)


async def test_smtp_without_credentials():
    inbox = Inbox()
    ctl = Controller(inbox, hostname='127.0.0.1', port=free_port())
    ctl.start()
    try:
        settings = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                            smtp_host='127.0.0.1', smtp_port=ctl.port, fallback_email_address='sales@example.com',
                            leadchat_data_key=DATA_KEY)
        res = await SmtpFallbackClient(settings).deliver(generate_context_packet(session_state('smtp-open')))
        assert res.status == 'delivered' and not inbox.messages[0]['authenticated']
        assert inbox.messages[0]['mail_from'] == 'sales@example.com'   # no username: From is the fallback address
    finally: ctl.stop()


# --- failures around the channels ----------------------------------------------------------------

async def test_total_failure_with_failing_smtp_is_critical(db, denied_pool, smtp, rx):
    url, pool = db
    rx.default = permanent('channel_is_archived')
    settings = hsettings(url, smtp, rx, smtp_password='wrong')
    req = await new_request(pool)
    with capture_logs() as logs:
        out = await deliver_handoff(req, settings=settings, pool=pool,
                                    crm=PostgresCRMClient(denied_pool, settings), sleep=Sleeps())
    assert out.outcome == 'total_failure' and out.channels['email'].status == 'failed'
    [alert] = events(logs, 'fallback_email_failure')
    assert alert['log_level'] == 'critical' and alert['alert'] and alert['smtp_status'] == 535
    assert events(logs, 'handoff_total_failure')[0]['log_level'] == 'critical'


async def test_packet_generation_failure_aborts(db, smtp, rx):
    url, pool = db
    req = await new_request(pool)
    broken = req.model_copy(update={'session_state': req.session_state.model_copy(update={'handoff_reason': None})})
    with capture_logs() as logs:
        out = await deliver_handoff(broken, settings=hsettings(url, smtp, rx), pool=pool)
    assert out.outcome == 'total_failure' and out.channels == {} and 'handoff_reason not set' in out.error
    assert [e['log_level'] for e in events(logs, 'context_packet_generation_failure')] == ['error']
    assert [e['log_level'] for e in events(logs, 'handoff_aborted')] == ['critical']
    assert rx.requests == [] and not smtp.inbox.about(req.session_state.visitor_email)
    async with pool.connection() as c:
        assert (await get_session(c, req.session_id, keyring=KR)).handoff_triggered is False
        assert [e.event_type for e in await list_events(c, session_id=req.session_id)] == ['handoff_total_failure']
        assert await leads_for_session(c, req.session_id, keyring=KR) == []


async def test_audit_write_failure_does_not_change_the_outcome(db, denied_pool, smtp, rx):
    url, pool = db
    settings = hsettings(url, smtp, rx)
    req = await new_request(pool)
    with capture_logs() as logs:   # delivery works; the audit pool's role may not write anything
        out = await deliver_handoff(req, settings=settings, pool=denied_pool, crm=PostgresCRMClient(pool, settings))
    assert out.outcome == 'complete' and len(rx.requests) == 1
    assert [e['log_level'] for e in events(logs, 'handoff_record_write_failure')] == ['error']
    async with pool.connection() as c:
        assert await list_handoff_records(c, session_id=req.session_id) == []
        assert len(await leads_for_session(c, req.session_id, keyring=KR)) == 1


async def test_disabled_channels_are_skipped(db, smtp, rx):
    url, pool = db
    req = await new_request(pool)
    out = await deliver_handoff(req, settings=hsettings(url, smtp, rx, handoff_channels='crm,email'), pool=pool)
    assert out.outcome == 'complete' and rx.requests == []
    assert {k: v.status for k, v in out.channels.items()} == {'slack': 'skipped', 'crm': 'delivered', 'email': 'skipped'}
    # Slack alone, failing: total failure, and no email because the email channel is off
    rx.default = status(500)
    req = await new_request(pool)
    with capture_logs() as logs:
        out = await deliver_handoff(req, settings=hsettings(url, smtp, rx, handoff_channels='slack'), pool=pool)
    assert out.outcome == 'total_failure' and out.channels['email'].status == 'skipped'
    assert events(logs, 'fallback_email_disabled') and not smtp.inbox.about(req.session_state.visitor_email)


async def test_hostile_visitor_text_end_to_end(db, smtp, rx):
    url, pool = db
    sid = f'ho-{uuid.uuid4()}'
    long = ('<!channel> <http://evil.example|click> & ' * 60)[:2000]
    state = session_state(sid, company='<!here> <http://evil.example|Acme>\x00', visitor_email='a@b.c\r\nBcc: all@x.com')
    state = state.model_copy(update={'qualification': QualificationState(
        problem_fit='confirmed', authority_fit='confirmed', company_fit='confirmed', timing_fit='confirmed',
        signals_observed=[SignalEntry(dimension=d, level='confirmed', signal_type='explicit', turn_index=1, evidence=long)
                          for d in ('problem_fit', 'authority_fit', 'company_fit', 'timing_fit')])})
    async with pool.connection() as c:   # the index row as a turn would leave it (NUL is not storable there)
        await c.execute('INSERT INTO sessions (session_id) VALUES (%s)', [sid])
    rx.default = status(500)   # partial failure: the fallback email is sent too
    out = await deliver_handoff(handoff_request(state), settings=hsettings(url, smtp, rx), pool=pool,
                                crm=PostgresCRMClient(pool, hsettings(url, smtp, rx)))
    assert out.outcome == 'partial_failure'
    body = rx.bodies()[0]
    assert valid_blocks(body['blocks']) and '<' not in body['text']
    summary = body['blocks'][2]['text']['text']      # normalised phrases, never the pasted hostile text
    assert summary.startswith('*Summary:*') and len(summary) <= 3000 and '<!channel>' not in summary and '|click>' not in summary
    async with pool.connection() as c:
        lead = await get_lead(c, int(out.crm_record_id), keyring=KR)
    assert lead.company == '<!here> <http://evil.example|Acme>'
    [mail] = smtp.inbox.about('a@b.c Bcc: all@x.com')
    assert mail['rcpt'] == ['sales@example.com'] and mail['msg']['Bcc'] is None


# --- relays --------------------------------------------------------------------------------------

async def outbox(url):
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        return {r[0]: r[1:] for r in await (await c.execute(
            'SELECT session_id, status, attempts, claimed_by FROM handoff_outbox')).fetchall()}


async def test_concurrent_relays_deliver_each_row_exactly_once(pg, smtp, rx):
    url = await migrated(pg)
    pool = await create_pool(url, max_size=6)
    settings = hsettings(url, smtp, rx)
    reqs = [await new_request(pool, company=f'Relay {i:02d}') for i in range(30)]
    for r in reqs: await enqueue(pool, r)
    pools = [await create_pool(url, max_size=4) for _ in range(4)]

    async def relay(p, name):
        n = 0
        while k := await relay_once(p, settings, worker=name, limit=3): n += k
        return n
    counts = await asyncio.gather(*(relay(p, f'relay-{i}') for i, p in enumerate(pools)))
    assert sum(counts) == 30 and sum(1 for n in counts if n) >= 2
    headers = sorted(b['blocks'][0]['text']['text'] for b in rx.bodies())
    assert headers == sorted(f'🔥 Hot Lead — Relay {i:02d}' for i in range(30))   # each message exactly once
    rows = await outbox(url)
    assert {st for st, _, _ in rows.values()} == {'delivered'} and {a for _, a, _ in rows.values()} == {1}
    async with pool.connection() as c:
        assert [len(await leads_for_session(c, r.session_id, keyring=KR)) for r in reqs] == [1] * 30
    for p in [pool, *pools]: await p.close()


async def test_relay_records_each_outcome_in_the_outbox(pg, smtp, rx):
    url = await migrated(pg)
    pool = await create_pool(url, max_size=6)
    rx.default = permanent('channel_is_archived')
    partial_req, total_req, crash_req = [await new_request(pool, company=c) for c in ('Partial', 'Total', 'Crash')]
    await enqueue(pool, partial_req)
    async with pool.connection() as c:
        await enqueue_handoff(c, session_id='ho-garbage', handoff_reason='stall', request={'not': 'a request'}, keyring=KR)
    final = dict(handoff_retry_horizon_seconds=0)      # no outbox retries: the first result is final
    assert await relay_once(pool, hsettings(url, smtp, rx, **final), worker='r1') == 2
    await enqueue(pool, total_req)
    assert await relay_once(pool, hsettings(url, smtp, rx, handoff_channels='slack,email', **final), worker='r2') == 1

    async def broken_deliver(request, *, settings, pool, **kw): raise RuntimeError('bug in a custom deliver')
    await enqueue(pool, crash_req)
    with capture_logs() as logs:
        assert await relay_once(pool, hsettings(url, smtp, rx), worker='r3', deliver=broken_deliver) == 1
    assert events(logs, 'handoff_relay_failure')[0]['retry'] is True
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        rows = {r[0]: r[1:] for r in await (await c.execute(
            'SELECT session_id, status, last_error, available_at > now() + interval \'20 seconds\' FROM handoff_outbox')).fetchall()}
    assert rows[partial_req.session_id][:2] == ('partial_failure', 'slack: channel_is_archived')
    assert rows[total_req.session_id][0] == 'failed'
    assert rows['ho-garbage'][0] == 'failed' and rows['ho-garbage'][1].startswith('invalid request')
    assert rows[crash_req.session_id] == ('pending', 'RuntimeError: bug in a custom deliver', True)   # retried later
    await pool.close()


async def test_run_relay_survives_errors_and_stops(pg, smtp, rx):
    url = await migrated(pg)
    pool = await create_pool(url, max_size=4)
    settings = hsettings(url, smtp, rx)
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(pool, settings, worker='loop', interval=0.05, stop=stop))
    reqs = [await new_request(pool, company=f'Loop {i}') for i in range(3)]
    for r in reqs: await enqueue(pool, r)
    for _ in range(100):
        if len(rx.requests) == 3: break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert {st for st, _, _ in (await outbox(url)).values()} == {'delivered'}
    # a dead database: logged, the loop goes on
    broken = await create_pool(url, max_size=1)
    await broken.close()
    with capture_logs() as logs:
        t2 = asyncio.create_task(run_relay(broken, settings, worker='broken', interval=0.05, stop=stop))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, t2), 5)
    assert len(events(logs, 'handoff_relay_failure')) >= 2
    await pool.close()


def doomed_relay(url, smtp, rx, lease: float) -> subprocess.Popen:
    "A relay in a process of its own (for the tests that kill it with SIGKILL mid-delivery)."
    env = {**os.environ, 'RAG_RELEVANCE_THRESHOLD': '0.4', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'DATABASE_URL': url,
           'HANDOFF_CHANNELS': 'slack,crm,email', 'SLACK_WEBHOOK_URL': rx.webhook_url,
           'FALLBACK_EMAIL_ADDRESS': 'sales@example.com', 'SMTP_HOST': '127.0.0.1', 'SMTP_PORT': str(smtp.port),
           'SMTP_USERNAME': SMTP_USER, 'SMTP_PASSWORD': SMTP_PASSWORD, 'HANDOFF_RETRY_BACKOFF_SECONDS': BACKOFF,
           'LEADCHAT_DATA_KEY': DATA_KEY}
    code = textwrap.dedent(f'''
        import asyncio
        from leadchat.config import get_settings
        from leadchat.db import create_pool
        from leadchat.handoff import run_relay
        async def main():
            s = get_settings()
            pool = await create_pool(s.database_url, max_size=8)
            await run_relay(pool, s, worker='doomed', interval=0.05, stop=asyncio.Event(), lease_seconds={lease})
        asyncio.run(main())''')
    return subprocess.Popen([sys.executable, '-c', code], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_relay_killed_mid_delivery_loses_nothing(pg, smtp, rx):
    "kill -9 a relay after Slack got its requests but before it recorded anything; a new relay finishes the job."
    url = await migrated(pg)
    pool = await create_pool(url, max_size=6)
    settings = hsettings(url, smtp, rx)
    reqs = [await new_request(pool, company=f'Crash {i}') for i in range(5)]
    for r in reqs: await enqueue(pool, r)
    rx.default = slow(60)   # Slack holds every request: the relay is mid-delivery
    lease = 4
    proc = doomed_relay(url, smtp, rx, lease)
    try:
        deadline = time.monotonic() + 30
        while len(rx.requests) < 5:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, 'the relay never reached Slack'
            await asyncio.sleep(0.05)
        claimed_at = time.monotonic()
        async with pool.connection() as c:
            leads_before = {r.session_id: [l.id for l in await leads_for_session(c, r.session_id, keyring=KR)] for r in reqs}
    finally:
        proc.kill()   # SIGKILL: no cleanup, no finally blocks
        proc.wait()
    rows = await outbox(url)
    assert {st for st, _, _ in rows.values()} == {'in_progress'} and {w for _, _, w in rows.values()} == {'doomed'}
    async with pool.connection() as c:
        assert [await list_handoff_records(c, session_id=r.session_id) for r in reqs] == [[]] * 5

    rx.default = ok()
    assert await relay_once(pool, settings, worker='rescuer') == 0   # the lease still holds: nobody delivers twice
    while time.monotonic() - claimed_at < lease + 0.5: await asyncio.sleep(0.1)
    n = 0
    for _ in range(20):
        n += await relay_once(pool, settings, worker='rescuer')
        if n == 5: break
        await asyncio.sleep(0.25)
    assert n == 5
    rows = await outbox(url)
    assert {st for st, _, _ in rows.values()} == {'delivered'} and {a for _, a, _ in rows.values()} == {2}
    async with pool.connection() as c:
        for r in reqs:   # nothing lost, no second lead: the rescue found the lead the dead relay created
            leads = [l.id for l in await leads_for_session(c, r.session_id, keyring=KR)]
            assert len(leads) == 1 and leads_before[r.session_id] == leads   # the dead relay's lead, found again
            [crm] = [x for x in await list_handoff_records(c, session_id=r.session_id) if x.channel == 'crm']
            assert crm.crm_record_id == str(leads[0])
    # Slack is at-least-once: each message was posted by the dead relay and again by the rescuer
    headers = [b['blocks'][0]['text']['text'] for b in rx.bodies()]
    assert sorted(set(headers)) == sorted(f'🔥 Hot Lead — Crash {i}' for i in range(5))
    assert all(headers.count(h) == 2 for h in set(headers))
    await pool.close()


async def test_relay_killed_mid_update_loses_nothing_and_keeps_one_lead(pg, smtp, rx):
    "An update whose relay is killed mid-delivery is delivered by another relay after the lease; still one lead."
    url = await migrated(pg)
    pool = await create_pool(url, max_size=6)
    settings = hsettings(url, smtp, rx)
    reqs = [await new_request(pool, company=f'Upd {i}') for i in range(3)]
    for r in reqs:
        await enqueue(pool, r)
        upd, changes = update_of(r, f'later-{r.session_id[-6:]}@acme.io')
        async with pool.connection() as c:     # queued before the hand-off is delivered: it waits for it
            await enqueue_update(c, session_id=r.session_id, handoff_reason='hot_lead', change_key='turn:2', changes=changes,
                                 request=upd.model_dump(mode='json'), keyring=KR)
            await enqueue_update(c, session_id=r.session_id, handoff_reason='hot_lead', change_key='turn:2', changes=changes,
                                 request=upd.model_dump(mode='json'), keyring=KR)           # a turn recorded twice queues it once
    assert await relay_once(pool, settings, worker='first', limit=10) == 3       # the hand-offs only: updates wait
    rx.default = slow(60)
    lease = 4
    seen = len(rx.requests)
    proc = doomed_relay(url, smtp, rx, lease)
    try:
        deadline = time.monotonic() + 30
        while len(rx.requests) < seen + 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, 'the relay never reached Slack'
            await asyncio.sleep(0.05)
        claimed_at = time.monotonic()
    finally:
        proc.kill()
        proc.wait()
    rx.default = ok()
    while time.monotonic() - claimed_at < lease + 0.5: await asyncio.sleep(0.1)
    n = 0
    for _ in range(20):
        n += await relay_once(pool, settings, worker='rescuer')
        if n == 3: break
        await asyncio.sleep(0.25)
    assert n == 3
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        rows = await (await c.execute("SELECT kind, status FROM handoff_outbox ORDER BY id")).fetchall()
    assert sorted(rows) == [('handoff', 'delivered')] * 3 + [('update', 'delivered')] * 3
    async with pool.connection() as c:
        for r in reqs:
            [lead] = await leads_for_session(c, r.session_id, keyring=KR)
            assert lead.email == f'later-{r.session_id[-6:]}@acme.io'
    await pool.close()


# --- replay --------------------------------------------------------------------------------------

async def test_replay_dry_run_and_redelivery(db, smtp, rx):
    url, pool = db
    settings = hsettings(url, smtp, rx)
    req = await new_request(pool, company='Replay Co')
    oid = await enqueue(pool, req)
    delivered = await deliver_handoff(req, settings=settings, pool=pool)
    assert delivered.outcome == 'complete'
    sent = len(rx.requests)

    dry = await replay_handoff(pool, settings, oid, dry_run=True)
    packet = generate_context_packet(req.session_state)
    assert dry['slack_blocks'] == slack_blocks(packet, True, None) and valid_blocks(dry['slack_blocks'])
    assert dry['crm_payload'] == crm_payload(packet)
    assert 'Subject: [HANDOFF FALLBACK] hot lead' in dry['email'] and 'To: sales@example.com' in dry['email']
    assert len(rx.requests) == sent   # nothing sent

    again = await replay_handoff(pool, settings, oid, dry_run=False)
    assert again['outcome'] == 'complete' and again['status'] == 'delivered'
    assert again['crm_record_id'] == delivered.crm_record_id
    assert len(rx.requests) == sent + 1
    async with pool.connection() as c:
        assert len(await leads_for_session(c, req.session_id, keyring=KR)) == 1
        assert len(await list_handoff_records(c, session_id=req.session_id)) == 6   # two deliveries × three channels
    with pytest.raises(LookupError, match='no row'):
        await replay_handoff(pool, settings, 10**9, dry_run=True)


# --- retries that outlive an outage (issue 16 item 2) ---------------------------------------------

async def outbox_row(url, oid) -> dict:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        return await (await c.execute(
            '''SELECT status, retries, channel_status, dead_lettered_at, last_error, finished_at,
                      extract(epoch FROM available_at - now()) AS due_in FROM handoff_outbox WHERE id = %s''',
            [oid])).fetchone()


async def make_due(url, oid):
    "The clock moves on to the row's next attempt (the row is older by as much as it had to wait)."
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        await c.execute('''UPDATE handoff_outbox SET created_at = created_at - greatest(available_at - now(), interval '0'),
                                  available_at = now() WHERE id = %s''', [oid])


def slack_posts(rx, company) -> int:
    return sum(1 for b in rx.bodies() if f'Hot Lead — {company}' in str(b))


async def test_slack_down_for_an_hour_then_back_delivers_once_without_repeating_other_channels(db, smtp, rx):
    "The rep's view: Slack was down; the CRM lead and the fallback email arrived at once, Slack's post arrives when it is back."
    url, pool = db
    settings = hsettings(url, smtp, rx)
    req = await new_request(pool, company='Outage Co')
    oid = await enqueue(pool, req)
    rx.default = status(500)
    mails = len(smtp.inbox.messages)
    with capture_logs() as logs:
        assert await relay_once(pool, settings, worker='r1') == 1
    row = await outbox_row(url, oid)
    assert row['status'] == 'pending' and row['retries'] == 1 and row['dead_lettered_at'] is None
    assert 25 < row['due_in'] <= 30                                  # the first outbox retry: 30 s later
    assert row['channel_status']['crm']['status'] == 'delivered' and row['channel_status']['email']['status'] == 'delivered'
    assert row['channel_status']['slack']['status'] == 'failed'
    [sched] = events(logs, 'handoff_retry_scheduled')
    assert sched['failed_channels'] == ['slack'] and sched['retry_in_seconds'] == 30 and sched['outbox_id'] == oid
    assert len(smtp.inbox.messages) == mails + 1                     # the rep has the lead by email meanwhile
    assert await relay_once(pool, settings, worker='r1') == 0        # not due yet: nobody hammers a receiver that is down

    for retry, wait in ((2, 60), (3, 120)):                          # still down: each wait twice the last
        await make_due(url, oid)
        assert await relay_once(pool, settings, worker='r1') == 1
        row = await outbox_row(url, oid)
        assert row['status'] == 'pending' and row['retries'] == retry and wait - 5 < row['due_in'] <= wait

    rx.default = ok()                                                # Slack is back
    refused = slack_posts(rx, 'Outage Co')                           # the receiver keeps the requests it answered 500
    await make_due(url, oid)
    assert await relay_once(pool, settings, worker='r1') == 1
    row = await outbox_row(url, oid)
    assert row['status'] == 'delivered' and row['finished_at'] is not None and row['last_error'] is None
    assert {k: v['status'] for k, v in row['channel_status'].items()} == {'slack': 'delivered', 'crm': 'delivered',
                                                                          'email': 'delivered'}
    assert slack_posts(rx, 'Outage Co') == refused + 1               # posted once, when it could be
    assert len(smtp.inbox.messages) == mails + 1                     # the email was not sent again
    async with pool.connection() as c:
        assert len(await leads_for_session(c, req.session_id, keyring=KR)) == 1
        recs = await list_handoff_records(c, session_id=req.session_id)
    assert sorted((r.channel, r.status) for r in recs if r.channel == 'crm') == [('crm', 'delivered')]   # CRM once
    assert (await get_session_flag(pool, req.session_id)) is True


async def get_session_flag(pool, sid):
    async with pool.connection() as c: return (await get_session(c, sid, keyring=KR)).handoff_triggered


async def test_backoff_is_capped_and_a_row_past_its_horizon_is_dead_lettered(db, smtp, rx):
    "The operator's view: a channel down for longer than the horizon raises a CRITICAL alert, once, and stays visible."
    url, pool = db
    settings = hsettings(url, smtp, rx, handoff_retry_first_seconds=100, handoff_retry_max_interval_seconds=150,
                         handoff_retry_horizon_seconds=450)
    req = await new_request(pool, company='Horizon Co')
    oid = await enqueue(pool, req)
    rx.default = status(503)
    waits = []
    with capture_logs() as logs:
        for _ in range(4):
            assert await relay_once(pool, settings, worker='r2') == 1
            row = await outbox_row(url, oid)
            if row['status'] != 'pending': break
            waits.append(round(row['due_in'] / 50) * 50)
            await make_due(url, oid)
    assert waits == [100, 150, 150]                                  # doubled, then capped at the longest interval
    assert row['status'] == 'partial_failure' and row['dead_lettered_at'] is not None and row['finished_at'] is not None
    [dead] = events(logs, 'handoff_dead_lettered')
    assert dead['log_level'] == 'critical' and dead['alert'] is True and dead['failed_channels'] == ['slack']
    assert 'visitor' not in str(dead) and '@' not in str(dead)       # no PII in the alert
    assert await relay_once(pool, settings, worker='r2') == 0        # dead letters are not retried by themselves

    # one click: the replay sends only what has not arrived, and the row leaves the dead letters
    rx.default = ok()
    mails, leads_before = len(smtp.inbox.messages), await count_leads(pool, req.session_id)
    refused = slack_posts(rx, 'Horizon Co')
    res = await replay_handoff(pool, settings, oid, dry_run=False)
    assert res['status'] == 'delivered' and res['outcome'] == 'complete'
    assert res['channels']['crm']['status'] == 'delivered' and res['channels']['crm']['earlier'] is True
    row = await outbox_row(url, oid)
    assert row['status'] == 'delivered' and row['dead_lettered_at'] is None
    assert slack_posts(rx, 'Horizon Co') == refused + 1 and len(smtp.inbox.messages) == mails
    assert await count_leads(pool, req.session_id) == leads_before == 1


async def count_leads(pool, sid) -> int:
    async with pool.connection() as c: return len(await leads_for_session(c, sid, keyring=KR))


async def test_no_horizon_means_the_first_failure_is_final(db, smtp, rx):
    url, pool = db
    settings = hsettings(url, smtp, rx, handoff_retry_horizon_seconds=0, handoff_channels='slack,email')
    req = await new_request(pool, company='Final Co')
    oid = await enqueue(pool, req)
    rx.default = permanent('channel_is_archived')
    with capture_logs() as logs:
        assert await relay_once(pool, settings, worker='r3') == 1
    row = await outbox_row(url, oid)
    assert row['status'] == 'failed' and row['dead_lettered_at'] is not None and row['retries'] == 1   # Slack was all
    assert row['channel_status']['email']['status'] == 'delivered'  # ... though the rep has the fallback email
    assert events(logs, 'handoff_dead_lettered') and not events(logs, 'handoff_retry_scheduled')


async def test_a_retrying_hand_off_does_not_hold_back_the_sessions_updates(db, smtp, rx):
    "An update of a lead whose Slack post is waiting for a retry still reaches the CRM at once."
    url, pool = db
    settings = hsettings(url, smtp, rx)
    req = await new_request(pool, company='Update Co')
    oid = await enqueue(pool, req)
    rx.default = status(500)
    assert await relay_once(pool, settings, worker='r4') == 1
    assert (await outbox_row(url, oid))['status'] == 'pending'
    upd, changes = update_of(req, 'later@update.example')
    async with pool.connection() as c:
        uid = await enqueue_update(c, session_id=req.session_id, handoff_reason=req.handoff_reason, change_key='turn:2',
                                   changes=changes, request=upd.model_dump(mode='json'), keyring=KR)
    assert await relay_once(pool, settings, worker='r4') == 1        # the update, not the waiting hand-off
    urow = await outbox_row(url, uid)
    assert urow['channel_status']['crm']['status'] == 'delivered' and urow['status'] == 'pending'
