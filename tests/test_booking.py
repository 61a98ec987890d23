"""The booking pipeline over real HTTP: the real app (`leadchat.api.create_app` with `calendar_router`) under uvicorn,
the embedded PostgreSQL, a real Radicale (CalDAV), an SMTP server (aiosmtpd), and the local server speaking the
Google Calendar and Microsoft Graph protocols (tests/calendar_servers.py).

* the database guard: the exclusion constraint alone lets exactly one of many concurrent overlapping inserts in;
* hold → confirm → event in the rep's calendar, ICS invite by email, the CRM lead updated, analytics events;
* 200 concurrent confirmations of one slot (and of one hold) → exactly one booking, clear 409s, nothing left over;
* Idempotency-Key: replay, different payload → 422, in flight → 409, 5xx releases the key;
* compensation: a provider failing mid-confirm (refused write, lost response, late write, down at the re-check)
  leaves no hold and no event; a confirmation abandoned by its process is undone by the sweeper;
* holds expire; cancellation (token or staff); fair assignment through the API; hostile input.
"""
import asyncio
import email
import email.policy
import json
import os
import time
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
import yaml
from aiosmtpd.controller import Controller
from psycopg.rows import dict_row

from apiserver import LiveServer
from calendar_servers import TOKEN, ProviderServer, Radicale, fail_after, free_port, slow, status
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.calendar import CalendarService, load_calendar_config
from leadchat.config import Settings
from leadchat.db import load_keyring
from leadchat.repos import open_lead, open_session, upsert_lead, upsert_session
from leadchat.state import SessionState

UTC = timezone.utc
MAD = ZoneInfo('Europe/Madrid')
STAFF = 'staff-token-for-tests-0123456789'
ALLOWED = 'https://www.calderwood.example'
NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)         # the calendar's clock: Friday 20 March 2026, noon UTC
PASSWORDS = {'ana': 'ana correct horse', 'eve': 'eve battery staple'}


# --- servers and the app ---------------------------------------------------------------------------

class Inbox:
    def __init__(self): self.messages = []
    async def handle_DATA(self, server, session, envelope):
        self.messages.append(dict(msg=email.message_from_bytes(envelope.content, policy=email.policy.default),
                                  rcpt=list(envelope.rcpt_tos)))
        return '250 OK'
    def to(self, addr): return [m for m in self.messages if addr in m['rcpt']]


@pytest.fixture(scope='module')
def smtp():
    inbox = Inbox()
    ctl = Controller(inbox, hostname='127.0.0.1', port=free_port())
    ctl.start()
    ctl.inbox = inbox
    yield ctl
    ctl.stop()


@pytest.fixture(scope='module')
def radicale():
    with Radicale(users=PASSWORDS) as r:
        r.make_calendar('ana', 'work')
        r.make_calendar('ana', 'shared')
        yield r


@pytest.fixture(scope='module')
def provider():
    with ProviderServer() as p: yield p


def calendar_yaml(radicale, provider) -> dict:
    def rep(id, name, calendar, **kw): return {'id': id, 'name': name, 'email': f'{id}@calderwood.example', 'calendar': calendar, **kw}
    reps = [
        rep('ana', 'Ana Ruiz', {'kind': 'caldav', 'url': radicale.calendar_url('ana', 'work'), 'username': 'ana',
                                'password_env': 'BOOKING_ANA_PASSWORD'}),
        rep('ben', 'Ben Hale', {'kind': 'google', 'calendar_id': 'ben@calderwood.example', 'base_url': provider.google_url,
                                'token_env': 'BOOKING_GOOGLE_TOKEN'}),
        rep('cleo', 'Cleo Marsh', {'kind': 'microsoft', 'user': 'cleo@calderwood.example', 'base_url': provider.graph_url,
                                   'token_env': 'BOOKING_GRAPH_TOKEN'}),
        rep('eve', 'Eve Stone', {'kind': 'caldav', 'url': radicale.calendar_url('ana', 'shared'), 'username': 'eve',
                                 'password_env': 'BOOKING_EVE_PASSWORD'}),     # may read that calendar, not write it
        rep('fay', 'Fay Lund', {'kind': 'none'}),
        rep('gus', 'Gus Moor', {'kind': 'none'}),
        rep('hal', 'Hal Reed', {'kind': 'google', 'calendar_id': 'hal@calderwood.example', 'base_url': provider.google_url,
                                'token_env': 'BOOKING_GOOGLE_TOKEN'}),
    ]
    mt = lambda id, reps, **kw: {'id': id, 'name': 'Intro call', 'reps': reps, 'min_notice_minutes': 60, 'horizon_days': 30,
                                 'buffer_after_minutes': 10, 'location': 'Video call', **kw}
    return {'team': {'name': 'Calderwood AI', 'working_hours': {'weekdays': ['09:00-13:00', '14:00-18:00']},
                     'invite_from': 'meetings@calderwood.example'},
            'reps': reps,
            'meeting_types': [mt('intro', None), mt('ana-call', ['ana']), mt('ben-call', ['ben']), mt('cleo-call', ['cleo']),
                              mt('eve-call', ['eve']), mt('fay-call', ['fay']), mt('team-call', ['fay', 'gus'], buffer_after_minutes=0),
                              mt('hal-call', ['hal'])]}


def app_settings(pg, url, cal_path, smtp_port, **kw) -> Settings:
    base = dict(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                leadchat_home=pg[0].leadchat_home, database_url=url, leadchat_admin_token=STAFF,
                leadchat_cors_origins=[ALLOWED], leadchat_rate_limit_ip_per_minute=100_000,
                leadchat_rate_limit_session_per_minute=10_000, leadchat_calendar_config=cal_path,
                smtp_host='127.0.0.1', smtp_port=smtp_port, leadchat_calendar_timeout_seconds=2.0,
                leadchat_freebusy_max_age_seconds=30)
    return Settings(**{**base, **kw})


@pytest.fixture(scope='module')
def api(pg, radicale, provider, smtp, tmp_path_factory):
    os.environ.update(BOOKING_ANA_PASSWORD=PASSWORDS['ana'], BOOKING_EVE_PASSWORD=PASSWORDS['eve'],
                      BOOKING_GOOGLE_TOKEN=TOKEN, BOOKING_GRAPH_TOKEN=TOKEN)
    path = tmp_path_factory.mktemp('cal') / 'calendar.yaml'
    path.write_text(yaml.safe_dump(calendar_yaml(radicale, provider)))
    url = fresh_db(pg[1])
    settings = app_settings(pg, url, path, smtp.port)
    calendar = CalendarService(settings, load_calendar_config(path, settings), clock=lambda: NOW)
    app = create_app(settings, knowledge_path='', calendar=calendar, calendar_sweep_interval=0.3)
    with LiveServer(app) as srv:
        srv.db_url, srv.settings = url, settings
        yield srv
    for k in ('BOOKING_ANA_PASSWORD', 'BOOKING_EVE_PASSWORD', 'BOOKING_GOOGLE_TOKEN', 'BOOKING_GRAPH_TOKEN'): os.environ.pop(k, None)


def db(api):
    return psycopg.connect(api.db_url, autocommit=True, row_factory=dict_row)


def query(api, sql, *args):
    with db(api) as c: return c.execute(sql, args).fetchall()


def leads_of(api, sid) -> list[dict]:
    "The session's leads, opened (contact details and payload are sealed at rest)."
    return [open_lead(r, load_keyring(api.settings)).model_dump(mode='json')
            for r in query(api, 'SELECT * FROM leads WHERE session_id = %s', sid)]


def wait_for(fn, what, timeout=15.0):
    "Poll `fn` until it returns something truthy (the sweeper and background jobs run on their own)."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := fn(): return out
        time.sleep(0.05)
    raise AssertionError(f'timed out waiting for {what}')


def slot_id(mt, rep, day, hhmm) -> str:
    "The slot id of `hhmm` Madrid time on 2026-03-`day` (or (month, day))."
    month, d = day if isinstance(day, tuple) else (3, day)
    h, m = map(int, hhmm.split(':'))
    return f"{mt}.{rep}.{datetime(2026, month, d, h, m, tzinfo=MAD).astimezone(UTC):%Y%m%dT%H%M}Z"


def visitor(n=1): return {'name': f'Lee Park {n}', 'email': f'lee{n}@acme.example'}


def key(): return str(uuid.uuid4())


def book(c, body, k=None, **headers):
    return c.post('/api/bookings', json=body, headers={'Idempotency-Key': k or key(), **headers})


def offer(c, sl, sid=None) -> str:
    "Offer `sl` to a session the way the widget is offered slots (GET /api/availability with its session_id); the session id."
    sid = sid or str(uuid.uuid4())
    r = c.get('/api/availability', params={'meeting_type': sl.split('.')[0], 'session_id': sid, 'days': 30, 'limit': 1000})
    assert r.status_code == 200 and sl in {s['slot_id'] for s in r.json()['slots']}, r.text[:300]
    return sid


def hold(c, sl, sid=None, **kw):
    "POST /api/holds for `sl`, offered to the session first."
    return c.post('/api/holds', json={'slot_id': sl, 'session_id': offer(c, sl, sid), **kw})


def active(api, rep=None):
    return query(api, "SELECT * FROM calendar_bookings WHERE status IN ('held', 'confirming', 'confirmed')"
                      + (' AND rep = %s' if rep else ''), *([rep] if rep else []))


def new_lead_session(api) -> str:
    "A chat session with a hot lead in the CRM (what the hand-off relay leaves)."
    sid = str(uuid.uuid4())
    async def go():
        async with await psycopg.AsyncConnection.connect(api.db_url, autocommit=True, row_factory=dict_row) as c:
            kr = load_keyring(api.settings)
            await upsert_session(c, SessionState(session_id=sid, lead_level='hot', handoff_reason='hot_lead'), keyring=kr)
            await upsert_lead(c, session_id=sid, handoff_reason='hot_lead', lead_level='hot', keyring=kr,
                              payload={'contact': {'email': None}, 'lead': {'source': 'website-chat', 'session_id': sid}})
    asyncio.run(go())
    return sid


# --- the database guard -------------------------------------------------------------------------------

async def test_the_exclusion_constraint_alone_admits_one_of_many_concurrent_inserts(pg):
    url = fresh_db(pg[1])
    from leadchat.db import migrate
    await migrate(url, pg[0])
    t0 = datetime(2026, 3, 30, 7, tzinfo=UTC)
    async def insert(i):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            try:
                await c.execute("""INSERT INTO calendar_bookings (id, rep, meeting_type, start_at, end_at, status, expires_at,
                                                                  hold_token_hash, provider)
                                   VALUES (%s, 'ana', 'intro', %s, %s, 'held', now() + interval '5 minutes', '\\x00', 'none')""",
                                [uuid.uuid4(), t0 + timedelta(minutes=i % 20), t0 + timedelta(minutes=30 + i % 20)])
                return 'in'
            except psycopg.errors.ExclusionViolation: return 'refused'
            # without the service's per-rep advisory lock, PostgreSQL may resolve two GiST exclusion checks waiting on
            # each other by aborting one (a deadlock): that insert is refused too — the guarantee is "never two in"
            except psycopg.errors.DeadlockDetected: return 'refused'
    results = await asyncio.gather(*(insert(i) for i in range(60)))
    assert results.count('in') == 1 and results.count('refused') == 59
    with psycopg.connect(url) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'btree_gist'").fetchone()


# --- availability ---------------------------------------------------------------------------------------

def test_availability_in_the_visitors_and_the_teams_zone(api):
    with api.client() as c:
        r = c.get('/api/availability', params={'meeting_type': 'ana-call', 'visitor_tz': 'America/New_York', 'days': 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body['kind'] == 'slots' and body['visitor_timezone'] == 'America/New_York'
    assert body['slots'][0]['team']['label'] == 'Fri 20 Mar 2026, 14:00–14:30 CET'    # noon UTC + 60 minutes' notice
    first = next(s for s in body['slots'] if s['start'].startswith('2026-03-23'))
    assert first['slot_id'] == slot_id('ana-call', 'ana', 23, '09:00')
    assert first['visitor']['label'] == 'Mon 23 Mar 2026, 04:00–04:30 EDT'       # New York already on summer time
    assert first['team']['label'] == 'Mon 23 Mar 2026, 09:00–09:30 CET'
    assert first['rep'] == {'id': 'ana', 'name': 'Ana Ruiz'}
    with api.client() as c:
        three = c.get('/api/availability', params={'meeting_type': 'ana-call', 'visitor_tz': 'America/New_York', 'offer': 3}).json()
    assert [s['visitor']['label'] for s in three['slots']] == ['Fri 20 Mar 2026, 09:00–09:30 EDT', 'Mon 23 Mar 2026, 04:00–04:30 EDT',
                                                               'Tue 24 Mar 2026, 04:00–04:30 EDT']


@pytest.mark.parametrize('params,status_code,code', [
    ({'visitor_tz': 'Mars/Olympus'}, 422, 'invalid_timezone'),
    ({'visitor_tz': '../../etc/passwd'}, 422, 'invalid_timezone'),
    ({'meeting_type': 'demo'}, 422, 'unknown_meeting_type'),
    ({'meeting_type': 'x' * 300}, 422, 'invalid_request'),
    ({'days': 0}, 422, 'invalid_request'),
    ({'limit': 'lots'}, 422, 'invalid_request'),
])
def test_availability_bad_input(api, params, status_code, code):
    with api.client() as c: r = c.get('/api/availability', params=params)
    assert r.status_code == status_code and r.json()['error']['code'] == code


def test_availability_degrades_to_a_callback_when_the_calendars_are_down(api, provider):
    provider.script('google.freebusy', status(503))
    with api.client() as c:
        r = c.get('/api/availability', params={'meeting_type': 'hal-call', 'visitor_tz': 'America/New_York'})
        assert r.status_code == 200 and r.json()['kind'] == 'callback' and r.json()['reason'] == 'calendar_unavailable'
        assert 'call you back' in r.json()['message']
        assert 'leadchat_calendar_callbacks_total 1.0' in c.get('/metrics').text
        provider.script('google.freebusy', status(503))                 # still down when the visitor tries to hold
        sid, sl = str(uuid.uuid4()), slot_id('hal-call', 'hal', 24, '09:00')
        query(api, 'INSERT INTO slot_offers (session_id, slot_id) VALUES (%s, %s) RETURNING 1', sid, sl)   # offered before
        r = c.post('/api/holds', json={'slot_id': sl, 'session_id': sid})
        assert r.status_code == 503 and r.json()['error']['code'] == 'calendar_unavailable'


def test_public_routes_refuse_other_origins(api):
    with api.client() as c:
        assert c.get('/api/availability', headers={'Origin': 'https://evil.example'}).status_code == 403
        assert c.get('/api/availability', headers={'Origin': ALLOWED}).status_code == 200
        r = c.post('/api/holds', json={'slot_id': slot_id('fay-call', 'fay', 23, '09:00'), 'session_id': str(uuid.uuid4())},
                   headers={'Origin': 'https://evil.example'})
        assert r.status_code == 403 and r.json()['error']['code'] == 'origin_not_allowed'


# --- the happy path -----------------------------------------------------------------------------------------

def test_hold_confirm_writes_caldav_event_sends_invite_updates_crm(api, radicale, smtp):
    sid = new_lead_session(api)
    sl = slot_id('ana-call', 'ana', 24, '10:00')
    with api.client() as c:
        h = hold(c, sl, sid, visitor_tz='America/New_York')
        assert h.status_code == 201, h.text
        held = h.json()
        assert held['slot']['visitor']['label'] == 'Tue 24 Mar 2026, 05:00–05:30 EDT' and len(held['booking_token']) > 30
        taken = c.post('/api/holds', json={'slot_id': sl, 'session_id': sid})
        assert taken.status_code == 409 and taken.json()['error']['code'] == 'slot_taken'
        offered = c.get('/api/availability', params={'meeting_type': 'ana-call', 'days': 5}).json()['slots']
        assert sl not in {s['slot_id'] for s in offered}                  # a held slot is not offered
        body = {'hold_id': held['hold_id'], 'booking_token': held['booking_token'], 'visitor': visitor(7),
                'notes': 'We would like to talk about RAG over support tickets.'}
        k = key()
        r = book(c, body, k)
    assert r.status_code == 201, r.text
    b = r.json()
    assert b['status'] == 'confirmed' and b['calendar'] == 'written' and b['invite'] == 'sending' and b['cancel_token']
    # the event is in Ana's calendar, at the right instant
    objs = radicale.objects('ana', 'work')
    (url, ical), = [(u, d) for u, d in objs.items() if uuid.UUID(b['booking_id']).hex in u]
    assert 'DTSTART:20260324T090000Z' in ical and 'lee7@acme.example' in ical
    assert 'SCHEDULE-AGENT=CLIENT' in ical.replace('\n ', '')            # a scheduling server must not email them too
    # the invite
    (m,) = wait_for(lambda: smtp.inbox.to('lee7@acme.example'), 'the invite')
    msg = m['msg']
    assert msg['Subject'] == 'Invitation: Intro call with Ana Ruiz — Tue 24 Mar 2026, 05:00–05:30 EDT'
    assert msg['From'] == 'meetings@calderwood.example' and msg['Cc'] is None
    cal = msg.get_body(('calendar',))
    assert cal.get_param('method') == 'REQUEST' and 'DTSTART:20260324T090000Z' in cal.get_content()
    assert 'ORGANIZER;CN="Ana Ruiz":mailto:ana@calderwood.example' in cal.get_content()
    assert 'SCHEDULE-AGENT' not in cal.get_content()
    assert [p.get_filename() for p in msg.iter_attachments()] == ['invite.ics']
    # the CRM lead has the meeting and its attendee; the lead's own contact changes only through the chat
    lead = wait_for(lambda: [l for l in leads_of(api, sid) if 'meeting' in l['payload']],
                    'the CRM update')[0]
    mtg = lead['payload']['meeting']
    assert (mtg['booking_id'], mtg['status'], mtg['start'], mtg['rep']['id']) == (b['booking_id'], 'confirmed', '2026-03-24T09:00:00Z', 'ana')
    assert mtg['attendee'] == {'name': 'Lee Park 7', 'email': 'lee7@acme.example'} and lead['email'] is None
    events = [e['event_type'] for e in query(api, 'SELECT event_type FROM analytics_events WHERE session_id = %s ORDER BY id', sid)]
    assert events == ['booking_held', 'booking_confirmed']
    # a retry with the same key and payload: the same answer, marked as a replay
    with api.client() as c:
        again = book(c, body, k)
        assert again.status_code == 201 and again.headers['idempotent-replayed'] == 'true'
        assert again.json() == {**b, 'cancel_token': again.json()['cancel_token']}
        other = book(c, {**body, 'notes': 'something else'}, k)
        assert other.status_code == 422 and other.json()['error']['code'] == 'idempotency_key_reused'
        twice = book(c, body)                                            # the same hold under a new key
        assert twice.status_code == 409 and twice.json()['error']['code'] == 'hold_already_confirmed'
    assert len([u for u in radicale.objects('ana', 'work') if uuid.UUID(b['booking_id']).hex in u]) == 1
    with api.client() as c: metrics = c.get('/metrics').text
    for line in ('leadchat_bookings_total{result="confirmed"}', 'leadchat_bookings_total{result="replayed"}',
                 'leadchat_bookings_total{result="idempotency_key_reused"}', 'leadchat_holds_total{result="slot_taken"}'):
        assert line in metrics, line


# --- 200 concurrent confirmations -------------------------------------------------------------------------------

async def confirm_many(api, bodies, headers=None):
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=api.url, timeout=60, limits=limits) as c:
        return await asyncio.gather(*(c.post('/api/bookings', json=b, headers={'Idempotency-Key': key(), **(headers or {})})
                                      for b in bodies))


async def test_200_concurrent_confirmations_of_one_slot(api, radicale):
    sl = slot_id('ana-call', 'ana', 25, '11:00')
    rs = await confirm_many(api, [{'slot_id': sl, 'visitor': visitor(i)} for i in range(200)])
    codes = sorted(r.status_code for r in rs)
    assert codes == [201] + [409] * 199, codes[:5]
    errors = {r.json()['error']['code'] for r in rs if r.status_code == 409}
    assert errors == {'slot_taken'} and all('taken' in r.json()['error']['message'] for r in rs if r.status_code == 409)
    (won,) = [r.json() for r in rs if r.status_code == 201]
    rows = query(api, "SELECT status, count(*) AS n FROM calendar_bookings WHERE rep = 'ana' AND start_at = %s GROUP BY status",
                 datetime(2026, 3, 25, 10, tzinfo=UTC))
    assert rows == [{'status': 'confirmed', 'n': 1}]                      # one booking, no leftover holds
    assert not query(api, "SELECT 1 FROM calendar_bookings WHERE status IN ('held', 'confirming')")
    assert sum(uuid.UUID(won['booking_id']).hex in u for u in radicale.objects('ana', 'work')) == 1
    stored = query(api, 'SELECT response_status, count(*) AS n FROM idempotency_keys GROUP BY response_status ORDER BY 1')
    assert {r['response_status']: r['n'] for r in stored}.get(409, 0) >= 199


async def test_200_concurrent_confirmations_of_one_hold(api):
    with api.client() as c:
        h = hold(c, slot_id('fay-call', 'fay', 25, '15:00')).json()
    rs = await confirm_many(api, [{'hold_id': h['hold_id'], 'booking_token': h['booking_token'], 'visitor': visitor(i)}
                                  for i in range(200)])
    assert sorted(r.status_code for r in rs) == [201] + [409] * 199
    assert {r.json()['error']['code'] for r in rs if r.status_code == 409} <= {'booking_in_progress', 'hold_already_confirmed'}
    assert [r['status'] for r in query(api, 'SELECT status FROM calendar_bookings WHERE id = %s', h['hold_id'])] == ['confirmed']


# --- idempotency -----------------------------------------------------------------------------------------------

async def test_a_retry_while_the_first_request_runs_gets_409_then_the_same_result(api, provider):
    provider.script('google.insert', slow(1.0))
    body = {'slot_id': slot_id('ben-call', 'ben', 26, '10:00'), 'visitor': visitor(3)}
    k = key()
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as c:
        n = len(provider.calls('google.insert'))
        first = asyncio.create_task(c.post('/api/bookings', json=body, headers={'Idempotency-Key': k}))
        while len(provider.calls('google.insert')) == n: await asyncio.sleep(0.02)     # it is writing the event now
        during = await c.post('/api/bookings', json=body, headers={'Idempotency-Key': k})
        mismatch = await c.post('/api/bookings', json={**body, 'visitor': visitor(4)}, headers={'Idempotency-Key': k})
        r1 = await first
        after = await c.post('/api/bookings', json=body, headers={'Idempotency-Key': k})
    assert during.status_code == 409 and during.json()['error']['code'] == 'request_in_progress' and during.headers['retry-after']
    assert mismatch.status_code == 422 and mismatch.json()['error']['code'] == 'idempotency_key_reused'
    assert r1.status_code == 201 and after.status_code == 201
    assert after.json() == {**r1.json(), 'cancel_token': after.json()['cancel_token']}     # a fresh cancel token
    assert len([e for (o, _), e in provider.events.items() if o == 'ben@calderwood.example'
                and e['start']['dateTime'] == '2026-03-26T09:00:00Z']) == 1


@pytest.mark.parametrize('k,code', [(None, 'idempotency_key_required'), ('', 'idempotency_key_required'),
                                    ('k' * 256, 'invalid_idempotency_key'), ('two words', 'invalid_idempotency_key')])
def test_idempotency_key_is_required_and_checked(api, k, code):
    headers = {} if k is None else {'Idempotency-Key': k}
    with api.client() as c:
        r = c.post('/api/bookings', json={'slot_id': slot_id('fay-call', 'fay', 27, '09:00'), 'visitor': visitor()}, headers=headers)
    assert r.status_code == 400 and r.json()['error']['code'] == code


# --- compensation ------------------------------------------------------------------------------------------------

def no_leftovers(api, rep, start):
    rows = query(api, 'SELECT status FROM calendar_bookings WHERE rep = %s AND start_at = %s', rep, start)
    assert rows and all(r['status'] in ('failed', 'released') for r in rows), rows


def test_google_create_succeeds_but_answers_500_compensation_removes_it(api, provider):
    provider.script('google.insert', fail_after(500))
    body = {'slot_id': slot_id('ben-call', 'ben', 27, '10:00'), 'visitor': visitor(5)}
    k = key()
    with api.client() as c:
        r = book(c, body, k)
        assert r.status_code == 503 and r.json()['error']['code'] == 'calendar_unavailable'
        assert 'call-back' in r.json()['error']['message']
        start = datetime(2026, 3, 27, 9, tzinfo=UTC)
        no_leftovers(api, 'ben', start)
        assert not [e for e in provider.events.values() if e['_start'] == start]          # no event
        assert provider.calls('google.delete')
        again = book(c, body, k)                      # nothing was booked, so the key was released: the retry runs
    assert again.status_code == 201 and [e for e in provider.events.values() if e['_start'] == start]
    assert [e['event_type'] for e in query(api, "SELECT event_type FROM analytics_events WHERE event_type LIKE 'booking_%%' "
                                                "AND payload->>'rep' = 'ben' ORDER BY id")][-2:] == ['booking_failed', 'booking_confirmed']


def test_graph_create_whose_answer_is_lost_is_found_by_transaction_id_and_removed(api, provider):
    provider.script('graph.create', fail_after(504))
    with api.client() as c:
        r = book(c, {'slot_id': slot_id('cleo-call', 'cleo', 30, '10:00'), 'visitor': visitor(6)})
    assert r.status_code == 503
    no_leftovers(api, 'cleo', datetime(2026, 3, 30, 8, tzinfo=UTC))
    assert not [1 for (o, _), e in provider.events.items() if o == 'cleo@calderwood.example']
    assert len(provider.calls('graph.create')) >= 2 and provider.calls('graph.delete')


def test_a_write_that_lands_after_its_timeout_is_removed_by_the_second_sweep(api, provider):
    provider.script('graph.create', slow(3.0))          # longer than the 2 s timeout: it lands after we gave up
    with api.client() as c:
        r = book(c, {'slot_id': slot_id('cleo-call', 'cleo', 30, '14:00'), 'visitor': visitor(8)})
    assert r.status_code == 503
    start = datetime(2026, 3, 30, 12, tzinfo=UTC)
    no_leftovers(api, 'cleo', start)
    wait_for(lambda: [e for (o, _), e in provider.events.items() if o == 'cleo@calderwood.example' and e['_start'] == start],
             'the late write to land')
    (bid,) = [r['id'] for r in query(api, 'SELECT id FROM calendar_bookings WHERE rep = %s AND start_at = %s', 'cleo', start)]
    query(api, "UPDATE calendar_jobs SET available_at = now() WHERE booking_id = %s AND kind = 'provider_cancel' RETURNING id", bid)
    wait_for(lambda: not [e for (o, _), e in provider.events.items() if o == 'cleo@calderwood.example' and e['_start'] == start],
             'the sweeper to remove it')


def test_caldav_write_refused_leaves_no_hold_and_no_event(api, radicale):
    with api.client() as c:
        h = hold(c, slot_id('eve-call', 'eve', 30, '11:00')).json()
        r = book(c, {'hold_id': h['hold_id'], 'booking_token': h['booking_token'], 'visitor': visitor(9)})
    assert r.status_code == 503 and r.json()['error']['code'] == 'calendar_unavailable'
    assert query(api, 'SELECT status FROM calendar_bookings WHERE id = %s', h['hold_id'])[0]['status'] == 'failed'
    assert radicale.objects('ana', 'shared') == {}


def test_provider_down_at_the_recheck_releases_the_hold(api, provider):
    with api.client() as c:
        h = hold(c, slot_id('ben-call', 'ben', 31, '09:30')).json()
        provider.script('google.freebusy', status(503))
        r = book(c, {'hold_id': h['hold_id'], 'booking_token': h['booking_token'], 'visitor': visitor(10)})
    assert r.status_code == 503
    assert query(api, 'SELECT status FROM calendar_bookings WHERE id = %s', h['hold_id'])[0]['status'] == 'failed'
    assert not [e for e in provider.events.values() if e['_start'] == datetime(2026, 3, 31, 7, 30, tzinfo=UTC)]


def test_the_calendar_is_read_again_before_confirming(api, radicale):
    with api.client() as c:
        h = hold(c, slot_id('ana-call', 'ana', 31, '15:00')).json()
        # meanwhile Ana accepts another meeting in her own calendar app
        radicale.add('ana', 'work', 'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:elsewhere@x\r\n'
                                    'DTSTAMP:20260301T000000Z\r\nDTSTART;TZID=Europe/Madrid:20260331T150000\r\n'
                                    'DTEND;TZID=Europe/Madrid:20260331T160000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n')
        r = book(c, {'hold_id': h['hold_id'], 'booking_token': h['booking_token'], 'visitor': visitor(11)})
    assert r.status_code == 409 and r.json()['error']['code'] == 'slot_unavailable'
    assert query(api, 'SELECT status FROM calendar_bookings WHERE id = %s', h['hold_id'])[0]['status'] == 'released'


def test_a_confirmation_abandoned_mid_way_is_undone_by_the_sweeper(api, provider):
    "As if the process died after writing the event: the row stays `confirming` until its lease passes."
    bid, start = uuid.uuid4(), datetime(2026, 4, 1, 8, tzinfo=UTC)
    gid = f'leadchat{bid.hex}'
    provider.events[('ben@calderwood.example', gid)] = {'id': gid, '_start': start, '_end': start + timedelta(minutes=30),
                                                         'start': {'dateTime': '2026-04-01T08:00:00Z'}}
    query(api, """INSERT INTO calendar_bookings (id, rep, meeting_type, start_at, end_at, status, expires_at, hold_token_hash, provider)
                  VALUES (%s, 'ben', 'ben-call', %s, %s, 'confirming', now() - interval '1 second', '\\x00', 'google') RETURNING id""",
          bid, start, start + timedelta(minutes=30))
    wait_for(lambda: query(api, "SELECT 1 FROM calendar_bookings WHERE id = %s AND status = 'failed'", bid), 'the lapse')
    wait_for(lambda: ('ben@calderwood.example', gid) not in provider.events, 'the event to be removed')


# --- holds: expiry and release ------------------------------------------------------------------------------------

def test_expired_holds_stop_blocking_and_are_swept(api):
    sl = slot_id('fay-call', 'fay', 26, '09:00')
    with api.client() as c:
        sid = offer(c, sl)
        h = c.post('/api/holds', json={'slot_id': sl, 'session_id': sid}).json()
        query(api, "UPDATE calendar_bookings SET expires_at = now() - interval '1 second' WHERE id = %s RETURNING id", h['hold_id'])
        r = book(c, {'hold_id': h['hold_id'], 'booking_token': h['booking_token'], 'visitor': visitor()})
        assert r.status_code == 409 and r.json()['error']['code'] == 'hold_expired'
        h2 = c.post('/api/holds', json={'slot_id': sl, 'session_id': sid})      # the lapsed hold no longer blocks
        assert h2.status_code == 201
    wait_for(lambda: query(api, "SELECT 1 FROM calendar_bookings WHERE id = %s AND status = 'expired'", h['hold_id']), 'the sweep')


def test_release_a_hold(api):
    with api.client() as c:
        sid = offer(c, slot_id('fay-call', 'fay', 26, '10:00'))
        h = c.post('/api/holds', json={'slot_id': slot_id('fay-call', 'fay', 26, '10:00'), 'session_id': sid}).json()
        url = f"/api/holds/{h['hold_id']}"
        assert c.delete(url).status_code == 401
        assert c.delete(url, headers={'Authorization': 'Bearer ' + 'x' * 43}).status_code == 404
        assert c.delete(f'/api/holds/{uuid.uuid4()}', headers={'Authorization': f"Bearer {h['booking_token']}"}).status_code == 404
        assert c.delete('/api/holds/not-a-uuid', headers={'Authorization': 'Bearer x'}).status_code == 422
        assert c.delete(url, headers={'Authorization': f"Bearer {h['booking_token']}"}).status_code == 204
        assert c.delete(url, headers={'Authorization': f"Bearer {h['booking_token']}"}).status_code == 204   # idempotent
        assert c.post('/api/holds', json={'slot_id': slot_id('fay-call', 'fay', 26, '10:00'), 'session_id': sid}).status_code == 201


# --- cancellation ---------------------------------------------------------------------------------------------------

def test_cancel_with_the_token_or_as_staff(api, radicale, smtp):
    sid = new_lead_session(api)
    with api.client() as c:
        b = book(c, {'slot_id': slot_id('ana-call', 'ana', (4, 2), '09:30'), 'visitor': visitor(12), 'session_id': sid}).json()
        url = f"/api/bookings/{b['booking_id']}"
        assert c.delete(url).status_code == 401
        r = c.delete(url, headers={'Authorization': 'Bearer not-the-token'})
        assert r.status_code == 403 and r.json()['error']['code'] == 'invalid_cancel_token'
        assert c.delete(f'/api/bookings/{uuid.uuid4()}', headers={'Authorization': f'Bearer {STAFF}'}).status_code == 404
        r = c.delete(url, headers={'Authorization': f"Bearer {b['cancel_token']}"})
        assert r.status_code == 200 and r.json() == {'booking_id': b['booking_id'], 'status': 'cancelled'}
        assert c.delete(url, headers={'Authorization': f"Bearer {b['cancel_token']}"}).json()['status'] == 'cancelled'
        other = book(c, {'slot_id': slot_id('ana-call', 'ana', (4, 2), '09:30'), 'visitor': visitor(13)})   # free again
        assert other.status_code == 201
        assert c.delete(f"/api/bookings/{other.json()['booking_id']}", headers={'Authorization': f'Bearer {STAFF}'}).status_code == 200
    hexid = uuid.UUID(b['booking_id']).hex
    wait_for(lambda: not [u for u in radicale.objects('ana', 'work') if hexid in u], 'the event to leave the calendar')
    notice = wait_for(lambda: [m for m in smtp.inbox.to('lee12@acme.example') if str(m['msg']['Subject']).startswith('Cancelled')],
                      'the cancellation email')[0]['msg']
    assert notice.get_body(('calendar',)).get_param('method') == 'CANCEL'
    wait_for(lambda: query(api, "SELECT 1 FROM leads WHERE session_id = %s AND payload->'meeting'->>'status' = 'cancelled'", sid),
             'the CRM update')


# --- reps without a writable calendar; the CRM lead that appears later; fairness -------------------------------------

def test_a_rep_without_a_calendar_gets_the_invite_too(api, smtp):
    with api.client() as c:
        b = book(c, {'slot_id': slot_id('fay-call', 'fay', (4, 3), '09:00'), 'visitor': visitor(14)}).json()
    assert b['calendar'] == 'invite_only'
    (m,) = wait_for(lambda: smtp.inbox.to('lee14@acme.example'), 'the invite')
    assert 'fay@calderwood.example' in m['rcpt'] and 'fay@calderwood.example' in str(m['msg']['Cc'])


def test_a_lead_created_after_the_booking_still_gets_the_meeting(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        b = book(c, {'slot_id': slot_id('fay-call', 'fay', (4, 3), '10:00'), 'visitor': visitor(15), 'session_id': sid}).json()
    wait_for(lambda: query(api, "SELECT 1 FROM calendar_jobs WHERE booking_id = %s AND kind = 'crm_sync' "
                                "AND last_error LIKE '%%no lead%%'", b['booking_id']), 'the first CRM attempt to fail')
    async def lead():
        async with await psycopg.AsyncConnection.connect(api.db_url, autocommit=True, row_factory=dict_row) as c:
            kr = load_keyring(api.settings)
            await upsert_session(c, SessionState(session_id=sid, lead_level='hot', handoff_reason='hot_lead'), keyring=kr)
            await upsert_lead(c, session_id=sid, handoff_reason='hot_lead', lead_level='hot', payload={'contact': {}}, keyring=kr)
    asyncio.run(lead())
    query(api, "UPDATE calendar_jobs SET available_at = now() WHERE booking_id = %s RETURNING id", b['booking_id'])
    wait_for(lambda: query(api, "SELECT 1 FROM leads WHERE session_id = %s AND payload->'meeting'->>'booking_id' = %s",
                           sid, b['booking_id']), 'the retried CRM update')


def test_assignment_stays_fair_through_the_api(api):
    reps = []
    with api.client() as c:
        for i in range(6):
            s = c.get('/api/availability', params={'meeting_type': 'team-call', 'days': 30, 'limit': 1}).json()['slots'][0]
            assert book(c, {'slot_id': s['slot_id'], 'visitor': visitor(100 + i)}).status_code == 201
            reps.append(s['rep']['id'])
    assert sorted(reps) == ['fay'] * 3 + ['gus'] * 3 and reps[:2] != ['fay', 'fay']


# --- hostile input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('payload,status_code,code', [
    ('{"slot_id": ', 422, 'invalid_json'),
    ('[1, 2, 3]', 422, 'invalid_json'),
    (json.dumps({'slot_id': 'x' * 20_000, 'visitor': visitor()}), 413, 'body_too_large'),
    (json.dumps({'visitor': visitor()}), 422, 'invalid_request'),
    (json.dumps({'slot_id': "intro.ana'; DROP TABLE leads;--.20260323T0800Z", 'visitor': visitor()}), 422, 'invalid_slot'),
    (json.dumps({'slot_id': 'ana-call.ana.20260323T0815Z', 'visitor': visitor()}), 422, 'invalid_slot'),      # off the grid
    (json.dumps({'slot_id': 'ana-call.ana.20260321T1000Z', 'visitor': visitor()}), 422, 'invalid_slot'),      # Saturday
    (json.dumps({'slot_id': 'ana-call.ana.20260320T1100Z', 'visitor': visitor()}), 422, 'invalid_slot'),      # in the past
    (json.dumps({'slot_id': 'ana-call.ana.20260601T0800Z', 'visitor': visitor()}), 422, 'invalid_slot'),      # beyond the horizon
    (json.dumps({'slot_id': 'ana-call.ben.20260323T0800Z', 'visitor': visitor()}), 422, 'invalid_slot'),      # not Ben's meeting
    (json.dumps({'slot_id': 'ana-call.ana.20260323T0800Z', 'visitor': {'name': 'Lee', 'email': 'lee@x.example\r\nBcc: y@z.example'}}), 422, 'invalid_request'),
    (json.dumps({'slot_id': 'ana-call.ana.20260323T0800Z', 'visitor': {'name': 'L\x00ee', 'email': 'lee@x.example'}}), 422, 'invalid_request'),
    (json.dumps({'slot_id': 'ana-call.ana.20260323T0800Z', 'visitor': {'name': 'x' * 101, 'email': 'lee@x.example'}}), 422, 'invalid_request'),
    (json.dumps({'slot_id': 'ana-call.ana.20260323T0800Z', 'visitor': visitor(), 'notes': 'n' * 1001}), 422, 'invalid_request'),
    (json.dumps({'slot_id': 'ana-call.ana.20260323T0800Z', 'visitor': visitor(), 'is_staff': True}), 422, 'invalid_request'),
    (json.dumps({'slot_id': 'ana-call.ana.20260323T0800Z', 'visitor': visitor(), 'visitor_tz': 'Nowhere/Land'}), 422, 'invalid_request'),
    (json.dumps({'hold_id': 'not-a-uuid', 'booking_token': 'x' * 40, 'visitor': visitor()}), 422, 'invalid_request'),
    (json.dumps({'hold_id': str(uuid.uuid4()), 'booking_token': 'x' * 40, 'visitor': visitor()}), 404, 'hold_not_found'),
])
def test_hostile_booking_requests(api, payload, status_code, code):
    before = query(api, 'SELECT count(*) AS n FROM calendar_bookings')
    with api.client() as c:
        r = c.post('/api/bookings', content=payload, headers={'Content-Type': 'application/json', 'Idempotency-Key': key()})
    assert r.status_code == status_code, r.text
    assert r.json()['error']['code'] == code and r.json()['error']['message']
    assert query(api, 'SELECT count(*) AS n FROM calendar_bookings') == before          # nothing was reserved


def test_rate_limits_apply_to_the_calendar_routes(pg, radicale, provider, smtp, tmp_path):
    path = tmp_path / 'calendar.yaml'
    path.write_text(yaml.safe_dump(calendar_yaml(radicale, provider)))
    settings = app_settings(pg, fresh_db(pg[1]), path, smtp.port, leadchat_rate_limit_ip_per_minute=3)
    app = create_app(settings, knowledge_path='', calendar_sweep_interval=None,
                     calendar=CalendarService(settings, load_calendar_config(path, settings), clock=lambda: NOW))
    with LiveServer(app) as srv, srv.client() as c:
        codes = [c.get('/api/availability', params={'meeting_type': 'fay-call'}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.post('/api/holds', json={'slot_id': slot_id('fay-call', 'fay', 23, '09:00'), 'session_id': str(uuid.uuid4())})
        assert r.status_code == 429 and int(r.headers['retry-after']) >= 1


# --- abuse (issue 16): holds only for offered slots, per-session and per-IP caps; cancel checks; hostile JSON; secrets ------

def test_a_hold_needs_a_session_that_was_offered_the_slot(api):
    sl, other = slot_id('fay-call', 'fay', (4, 6), '09:00'), slot_id('fay-call', 'fay', (4, 6), '10:00')
    third = slot_id('fay-call', 'fay', (4, 6), '11:00')
    with api.client() as c:
        r = c.post('/api/holds', json={'slot_id': sl})
        assert r.status_code == 422 and 'session_id' in r.json()['error']['message']
        r = c.post('/api/holds', json={'slot_id': sl, 'session_id': str(uuid.UUID(int=0))})
        assert r.status_code == 422 and r.json()['error']['code'] == 'invalid_request'
        sid = str(uuid.uuid4())
        r = c.post('/api/holds', json={'slot_id': sl, 'session_id': sid})           # never offered to this session
        assert r.status_code == 403 and r.json()['error']['code'] == 'slot_not_offered'
        assert 'GET /api/availability' in r.json()['error']['message']
        offer(c, sl, sid)
        h1 = c.post('/api/holds', json={'slot_id': sl, 'session_id': sid})
        assert h1.status_code == 201, h1.text
        assert c.post('/api/holds', json={'slot_id': other, 'session_id': sid}).status_code == 201
        r = c.post('/api/holds', json={'slot_id': third, 'session_id': sid})      # a third live hold
        assert r.status_code == 409 and r.json()['error']['code'] == 'too_many_holds' and 'release' in r.json()['error']['message']
        assert not query(api, "SELECT 1 FROM calendar_bookings WHERE session_id = %s AND start_at = %s", sid,
                         datetime(2026, 4, 6, 9, tzinfo=UTC))
        c.delete(f"/api/holds/{h1.json()['hold_id']}", headers={'Authorization': f"Bearer {h1.json()['booking_token']}"})
        assert c.post('/api/holds', json={'slot_id': third, 'session_id': sid}).status_code == 201   # one was given back
        another = str(uuid.uuid4())                                  # another session cannot hold what it was not offered
        assert c.post('/api/holds', json={'slot_id': slot_id('fay-call', 'fay', (4, 6), '12:00'),
                                          'session_id': another}).status_code == 403


def test_live_holds_per_ip_are_capped(pg, radicale, provider, smtp, tmp_path):
    path = tmp_path / 'calendar.yaml'
    path.write_text(yaml.safe_dump(calendar_yaml(radicale, provider)))
    settings = app_settings(pg, fresh_db(pg[1]), path, smtp.port, leadchat_live_holds_per_ip=3)
    app = create_app(settings, knowledge_path='', calendar_sweep_interval=None,
                     calendar=CalendarService(settings, load_calendar_config(path, settings), clock=lambda: NOW))
    with LiveServer(app) as srv, srv.client() as c:
        held = [hold(c, slot_id('fay-call', 'fay', 23, t)) for t in ('09:00', '10:00', '11:00')]      # three sessions
        assert [h.status_code for h in held] == [201] * 3
        r = hold(c, slot_id('fay-call', 'fay', 23, '12:00'))
        assert r.status_code == 429 and r.json()['error']['code'] == 'too_many_holds' and int(r.headers['retry-after']) >= 1
        h = held[0].json()
        c.delete(f"/api/holds/{h['hold_id']}", headers={'Authorization': f"Bearer {h['booking_token']}"})
        assert hold(c, slot_id('fay-call', 'fay', 23, '12:00')).status_code == 201


def test_cancel_checks_the_origin_and_the_rate_limit(api, pg, radicale, provider, smtp, tmp_path):
    with api.client() as c:
        b = book(c, {'slot_id': slot_id('fay-call', 'fay', (4, 7), '09:00'), 'visitor': visitor(20)}).json()
        url = f"/api/bookings/{b['booking_id']}"
        r = c.delete(url, headers={'Authorization': f"Bearer {b['cancel_token']}", 'Origin': 'https://evil.example'})
        assert r.status_code == 403 and r.json()['error']['code'] == 'origin_not_allowed'
        assert query(api, 'SELECT status FROM calendar_bookings WHERE id = %s', b['booking_id'])[0]['status'] == 'confirmed'
        r = c.delete(url, headers={'Authorization': f'Bearer {STAFF}', 'Origin': 'https://console.internal.example'})
        assert r.status_code == 200 and r.json()['status'] == 'cancelled'            # staff: no origin check
    path = tmp_path / 'calendar.yaml'
    path.write_text(yaml.safe_dump(calendar_yaml(radicale, provider)))
    settings = app_settings(pg, fresh_db(pg[1]), path, smtp.port, leadchat_rate_limit_ip_per_minute=2)
    app = create_app(settings, knowledge_path='', calendar_sweep_interval=None,
                     calendar=CalendarService(settings, load_calendar_config(path, settings), clock=lambda: NOW))
    with LiveServer(app) as srv, srv.client() as c:
        codes = [c.delete(f'/api/bookings/{uuid.uuid4()}', headers={'Authorization': 'Bearer ' + 'x' * 43}).status_code
                 for _ in range(3)]
        assert codes == [404, 404, 429]


DEEP = '{"slot_id": ' + '[' * 5000 + ']' * 5000 + '}'


@pytest.mark.parametrize('route', ['/api/holds', '/api/bookings'])
@pytest.mark.parametrize('payload', [
    DEEP, '{"visitor": ' + '{"a":' * 2500 + '1' + '}' * 2500 + '}',
    '{"slot_id": "fay-call.fay.20260323T0800Z", "session_id": "%s", "visitor_tz": "\\ud800", '
    '"visitor": {"name": "Lee planted.person@acme.example", "email": "planted.person@acme.example"}}' % uuid.uuid4(),
    '{"slot_id": "fay-call.fay.20260323T0800Z\\ud800", "visitor": {"name": "Lee", "email": "planted.person@acme.example"}}',
    '{"slot_id": "fay-call.fay.20260323T0800Z", "visitor": {"name": "Lee\\udfff", "email": "planted.person@acme.example"}, '
    '"notes": "call planted.person@acme.example"}',
    '{"\\ud800planted.person@acme.example": 1}',
])
def test_deep_json_and_lone_surrogates_are_422_and_not_logged(api, capfd, route, payload):
    before = query(api, 'SELECT count(*) AS n FROM calendar_bookings')
    with api.client() as c:
        r = c.post(route, content=payload.encode(), headers={'Content-Type': 'application/json', 'Idempotency-Key': key()})
    assert r.status_code == 422, r.text[:300]
    assert r.json()['error']['code'] in ('invalid_json', 'invalid_request') and 'planted' not in r.text
    assert query(api, 'SELECT count(*) AS n FROM calendar_bookings') == before
    out, err = capfd.readouterr()
    assert 'planted' not in out + err and 'Traceback' not in out + err


def test_the_cancel_token_is_not_stored_and_a_replay_still_can_cancel(api):
    body, k = {'slot_id': slot_id('fay-call', 'fay', (4, 8), '09:00'), 'visitor': visitor(21)}, key()
    with api.client() as c:
        first = book(c, body, k).json()
        (stored,) = query(api, 'SELECT response_body::text AS b FROM idempotency_keys WHERE key = %s', k)
        assert first['cancel_token'] not in stored['b'] and 'cancel_token' not in stored['b']
        assert not query(api, "SELECT 1 FROM idempotency_keys WHERE response_body ? 'cancel_token'")
        again = book(c, body, k)                        # the client retries a POST whose answer it lost
        assert again.status_code == 201 and again.headers['idempotent-replayed'] == 'true'
        token = again.json()['cancel_token']
        assert token and again.json() == {**first, 'cancel_token': token}
        assert first['cancel_token'] not in query(api, 'SELECT response_body::text AS b FROM idempotency_keys WHERE key = %s', k)[0]['b']
        r = c.delete(f"/api/bookings/{first['booking_id']}", headers={'Authorization': f'Bearer {token}'})
        assert r.status_code == 200 and r.json()['status'] == 'cancelled'


def test_a_booking_does_not_change_the_sessions_contact(api):
    sid = new_lead_session(api)
    kr = load_keyring(api.settings)
    query(api, 'UPDATE leads SET email_enc = %s, name_enc = %s WHERE session_id = %s RETURNING id',
          kr.encrypt('owner@acme.example', context='lead.email'), kr.encrypt('Owner', context='lead.name'), sid)
    empty = new_lead_session(api)
    with api.client() as c:
        b1 = book(c, {'slot_id': slot_id('fay-call', 'fay', (4, 8), '10:00'), 'visitor': visitor(22), 'session_id': sid}).json()
        b2 = book(c, {'slot_id': slot_id('fay-call', 'fay', (4, 8), '11:00'), 'visitor': visitor(23), 'session_id': empty}).json()
    for s, b in ((sid, b1), (empty, b2)):
        wait_for(lambda: query(api, "SELECT 1 FROM leads WHERE session_id = %s AND payload->'meeting'->>'booking_id' = %s",
                               s, b['booking_id']), 'the CRM update')
    (owner,), (blank,) = leads_of(api, sid), leads_of(api, empty)
    assert (owner['email'], owner['name']) == ('owner@acme.example', 'Owner')
    assert (blank['email'], blank['name']) == (None, None)
    assert blank['payload']['meeting']['attendee'] == {'name': 'Lee Park 23', 'email': 'lee23@acme.example'}
    assert [open_session(r, kr).visitor_email for r in query(api, 'SELECT * FROM sessions WHERE session_id IN (%s, %s)', sid, empty)] == [None, None]


async def test_concurrent_holds_of_one_session_stop_at_two(api):
    slots = [slot_id('fay-call', 'fay', (4, 9), f'{h:02d}:00') for h in (9, 10, 11, 12, 14, 15, 16, 17)]
    with api.client() as c:
        sid = offer(c, slots[0])
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as c:
        rs = await asyncio.gather(*(c.post('/api/holds', json={'slot_id': s, 'session_id': sid}) for s in slots))
    assert sorted(r.status_code for r in rs) == [201] * 2 + [409] * 6
    assert {r.json()['error']['code'] for r in rs if r.status_code == 409} == {'too_many_holds'}
    assert len(query(api, "SELECT 1 FROM calendar_bookings WHERE session_id = %s AND status = 'held'", sid)) == 2
