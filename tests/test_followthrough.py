"""Follow-through, from the visitor's and the rep's side: what the visitor is promised happens, and the rep gets
every detail. The real app over real HTTP with a real Radicale calendar, a local Slack Web API receiver (bot
token: threaded replies), an SMTP server (aiosmtpd) and the embedded PostgreSQL; a settable clock.

* one lead per session, kept current: details given after a hand-off reach the CRM row and the Slack thread;
* booking at any hour, ranked by the visitor's working hours, with follow-up filters;
* honest confirmations: the invite is promised only when an .ics invitation really goes out;
* the widget's consent reaches the server and is stored per session with its scope;
* bad input: a second email, a malformed email, an unknown zone, a foreign slot id, an expired session.
"""
import email
import email.policy
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import psycopg
import pytest
import yaml
from aiosmtpd.controller import Controller

from apiserver import LiveServer
from calendar_servers import Radicale, SettableClock, one_rep_calendar
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.calendar import CalendarService, load_calendar_config
from leadchat.config import Settings
from leadchat.db import load_keyring
from leadchat.repos import open_lead
from slack_receiver import SlackReceiver
from test_chat_booking import TOKEN, say, state_of, wait_for
from test_handoff import SMTP_PASSWORD, SMTP_USER, Inbox, authenticator, free_port

pytestmark = pytest.mark.filterwarnings('ignore:Requiring AUTH while not requiring TLS')

ROOT = Path(__file__).resolve().parent.parent
MADRID, NEW_YORK, LOS_ANGELES = ZoneInfo('Europe/Madrid'), ZoneInfo('America/New_York'), ZoneInfo('America/Los_Angeles')
EVENING = datetime(2026, 3, 24, 20, 0, tzinfo=timezone.utc)        # Tuesday 21:00 in Madrid: the team has gone home
SUNDAY = datetime(2026, 3, 22, 12, 0, tzinfo=timezone.utc)         # Sunday 13:00 in Madrid
HOT = "I'm the CTO of a 300-person insurer; we're building a claims RAG assistant and need it live by Q2."
CONSENT = {'notice_version': '2026-01', 'acknowledged_at': '2026-03-24T19:59:30Z'}


@pytest.fixture(scope='module')
def smtp():
    inbox = Inbox()
    ctl = Controller(inbox, hostname='127.0.0.1', port=free_port(), authenticator=authenticator, auth_required=True,
                     auth_require_tls=False)
    ctl.start()
    ctl.inbox = inbox
    yield ctl
    ctl.stop()


@pytest.fixture(scope='module')
def ft(pg, smtp, tmp_path_factory):
    "The app with Slack (bot token), CRM and email hand-off, a Radicale calendar for Ana and an SMTP relay for invites."
    with Radicale() as radicale, SlackReceiver() as slack:
        radicale.make_calendar('ana', 'work')
        path = tmp_path_factory.mktemp('ft') / 'calendar.yaml'
        path.write_text(yaml.safe_dump(one_rep_calendar(radicale)))
        url = fresh_db(pg[1])
        clock = SettableClock(EVENING)
        s = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid',
                     handoff_channels='slack,crm,email', slack_bot_token='xoxb-test-token', slack_channel='C0NEWLEADS',
                     slack_api_url=slack.api_url, fallback_email_address='sales@calderwood.example',
                     smtp_host='127.0.0.1', smtp_port=smtp.port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD,
                     handoff_retry_backoff_seconds='0.05', leadchat_home=pg[0].leadchat_home, database_url=url,
                     leadchat_admin_token=TOKEN, leadchat_rate_limit_ip_per_minute=10_000,
                     leadchat_rate_limit_session_per_minute=10_000, leadchat_calendar_config=path)
        calendar = CalendarService(s, load_calendar_config(path, s), clock=clock)
        app = create_app(s, clock=clock, knowledge_path=str(ROOT / 'knowledge'), calendar=calendar, relay_interval=0.1)
        with LiveServer(app) as srv:
            srv.db_url, srv.slack, srv.clock, srv.radicale, srv.smtp, srv.settings = url, slack, clock, radicale, smtp, s
            yield srv


@pytest.fixture
def api(ft):
    ft.clock.now = EVENING
    return ft


def posts(api, since=0):
    "chat.postMessage bodies since request number `since`."
    return [r['body'] for r in api.slack.requests[since:] if r['path'].endswith('chat.postMessage')]


def replies(api, sid):
    "The replies in the Slack thread of this session's lead (its hand-off message opened it)."
    rows = leads(api, sid)
    ts = rows[0]['slack_ts'] if rows else None
    return [b for b in posts(api) if ts and b.get('thread_ts') == ts]


def leads(api, sid):
    "The session's lead rows, opened (their contact details and payload are sealed at rest)."
    with psycopg.connect(api.db_url, row_factory=psycopg.rows.dict_row) as c:
        rows = c.execute('SELECT * FROM leads WHERE session_id = %s', [sid]).fetchall()
    return [open_lead(r, load_keyring(api.settings)).model_dump(mode='json') for r in rows]


def local(slot, zone):
    return datetime.fromisoformat(slot['start']).astimezone(zone)


def invites_to(api, addr):
    return [m for m in api.smtp.inbox.messages if addr in m['rcpt'] and any(
        p.get_content_type() == 'text/calendar' for p in m['msg'].walk())]


def calendar_part(msg) -> icalendar.Calendar:
    part = next(p for p in msg.walk() if p.get_content_type() == 'text/calendar')
    return icalendar.Calendar.from_ical(part.get_content())


# --- Done when: the whole follow-through at 21:00 team time -----------------------------------------------------------

def test_done_when_hot_lead_at_night_books_in_the_visitors_afternoon(api):
    sid, addr = str(uuid.uuid4()), 'dana@example.com'
    since = len(api.slack.requests)
    with api.client() as c:
        reply, ev = say(c, sid, HOT, timezone='America/New_York', consent=CONSENT)
        assert ev['done']['handoff_reason'] == 'hot_lead'
        assert wait_for(lambda: (r := leads(api, sid)) and r[0]['slack_ts']), 'the hand-off opens the thread'
        reply, ev = say(c, sid, addr)
        assert 'slots' in ev, f'a qualified visitor gets slots at 21:00 team time: {reply!r}'
        reply, ev = say(c, sid, 'Anything in my afternoon?')
        offered = ev['slots']['slots']
        assert offered and all(12 <= local(s, NEW_YORK).hour < 19 for s in offered), offered
        pick = offered[0]
        reply, ev = say(c, sid, pick['label'], slot_id=pick['slot_id'])
        assert ev['meeting']['slot_id'] == pick['slot_id']
        assert f'calendar invite is on its way to {addr}' in reply
    # one lead, with the email and the meeting, the reasons accumulated
    # (the booking writes the meeting at once; the email arrives through the relay's update, up to a poll later)
    rows = wait_for(lambda: (r := leads(api, sid)) and 'booked' in r[0]['reasons'] and r[0]['payload'].get('meeting')
                    and r[0]['email'] and r)
    assert rows and len(rows) == 1 and rows[0]['email'] == addr
    assert rows[0]['payload']['meeting']['start'] == pick['start']
    assert rows[0]['reasons'][0] == 'hot_lead' and rows[0]['reasons'][-1] == 'booked'
    # the rep: the hand-off message, then two replies in its thread (the email, then the meeting)
    thread = wait_for(lambda: (p := replies(api, sid)) and len(p) >= 2 and p)
    assert thread and len(thread) == 2, [json.dumps(p)[:300] for p in replies(api, sid)]
    roots = [b for b in posts(api, since) if 'thread_ts' not in b]
    assert len(roots) == 1 and 'Lead captured (outside hours)' in roots[0]['text']
    assert addr in json.dumps(thread[0]) and 'Meeting booked' in json.dumps(thread[1], ensure_ascii=False)
    # one .ics invitation to the visitor, METHOD:REQUEST, the slot's times in UTC
    inv = wait_for(lambda: invites_to(api, addr))
    assert inv and len(inv) == 1
    cal = calendar_part(inv[0]['msg'])
    assert str(cal['METHOD']) == 'REQUEST'
    vevent = cal.walk('VEVENT')[0]
    start = vevent['DTSTART'].dt
    assert start.utcoffset() == timedelta(0) and start == datetime.fromisoformat(pick['start']).astimezone(timezone.utc)
    assert vevent['DTSTART'].to_ical().endswith(b'Z') and vevent['DTEND'].to_ical().endswith(b'Z')
    assert addr in str(vevent['ATTENDEE']).lower()
    assert len(leads(api, sid)) == 1 and len(invites_to(api, addr)) == 1


# --- one lead per session, kept current ------------------------------------------------------------------------------

def test_email_after_the_hand_off_reaches_the_lead_and_the_thread(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        _, ev = say(c, sid, HOT, timezone='Europe/Madrid')
        assert ev['done']['handoff_reason'] == 'hot_lead'
        assert wait_for(lambda: leads(api, sid)) and leads(api, sid)[0]['email'] is None
        reply, _ = say(c, sid, "I'm Dana Whitfield, dana@example.com, +1 415 555 0100")
        assert 'dana@example.com' in reply
    row = wait_for(lambda: (r := leads(api, sid)) and r[0]['email'] == 'dana@example.com' and r)
    assert row and len(row) == 1 and row[0]['name'] == 'Dana Whitfield'
    assert row[0]['payload']['contact']['email'] == 'dana@example.com'          # the packet was regenerated
    thread = wait_for(lambda: replies(api, sid))
    assert thread and 'dana@example.com' in json.dumps(thread[0]) and 'Not captured' not in json.dumps(thread[0])


def test_an_explicit_request_after_a_hot_lead_adds_a_reason_not_a_lead(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        say(c, sid, HOT + ' lee@acme-insurance.example')
        say(c, sid, 'Can I speak to someone on your team?')
    rows = wait_for(lambda: (r := leads(api, sid)) and 'explicit_request' in (r[0]['reasons'] or []) and r)
    assert rows and len(rows) == 1 and rows[0]['reasons'] == ['hot_lead', 'explicit_request']


def test_a_second_email_wins_and_both_are_kept(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        say(c, sid, HOT + ' Reach me at lee@acme-insurance.example')
        reply, _ = say(c, sid, 'Actually, better use lee.park@acme.example, the other one is my old address')
        assert 'lee.park@acme.example' in reply
        detail = state_of(c, sid)
    assert detail['state']['visitor_email'] == 'lee.park@acme.example'
    assert [h['value'] for h in detail['contact_history'] if h['field'] == 'email'] == [
        'lee@acme-insurance.example', 'lee.park@acme.example']
    row = wait_for(lambda: (r := leads(api, sid)) and r[0]['email'] == 'lee.park@acme.example' and r)
    assert row and len(row) == 1


def test_a_malformed_email_is_asked_again_and_loses_nothing(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        say(c, sid, HOT)
        reply, ev = say(c, sid, 'my email is dana@example')
        assert 'dana@example' in reply and 'complete' in reply.lower()
        detail = state_of(c, sid)
    assert detail['state']['visitor_email'] is None
    assert 'my email is dana@example' in [m['content'] for m in detail['transcript']]


# --- booking at any hour ---------------------------------------------------------------------------------------------

def test_slots_at_the_weekend_for_a_qualified_visitor(api):
    api.clock.now = SUNDAY
    sid = str(uuid.uuid4())
    with api.client() as c:
        reply, ev = say(c, sid, HOT + ' lee@acme-insurance.example', timezone='Europe/Madrid')
        if 'slots' not in ev: reply, ev = say(c, sid, 'Can we book a call?')
    assert 'slots' in ev and len(ev['slots']['slots']) == 3, reply
    assert all(local(s, MADRID).weekday() < 5 for s in ev['slots']['slots'])   # the meeting is in hours


def test_a_new_york_visitor_is_offered_their_working_hours(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        _, ev = say(c, sid, HOT + ' lee@acme-insurance.example', timezone='America/New_York')
        if 'slots' not in ev: _, ev = say(c, sid, 'Can we book a call?')
    hours = [local(s, NEW_YORK).hour for s in ev['slots']['slots']]
    assert hours and all(8 <= h < 19 for h in hours), ev['slots']['slots']


def test_a_los_angeles_visitor_is_offered_their_morning(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        _, ev = say(c, sid, HOT + ' lee@acme-insurance.example', timezone='America/Los_Angeles')
        if 'slots' not in ev: _, ev = say(c, sid, 'Can we book a call?')
    offered = ev['slots']['slots']
    assert offered and all(8 <= local(s, LOS_ANGELES).hour < 19 for s in offered), offered
    assert all(s['label'].endswith(('PDT', 'PST')) for s in offered)


def test_no_slot_in_the_visitors_day_is_said(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        reply, ev = say(c, sid, HOT + ' lee@acme-insurance.example', timezone='Pacific/Honolulu')
        if 'slots' not in ev: reply, ev = say(c, sid, 'Can we book a call?')
    assert ev['slots']['slots'] and 'working day' in reply


@pytest.mark.parametrize('ask,ok', [
    ('Thursday?', lambda d: d.weekday() == 3),
    ('anything in my afternoon?', lambda d: 12 <= d.hour < 19),
    ('next week?', lambda d: d.date() >= datetime(2026, 3, 30).date()),
    ('Do you have something in the morning?', lambda d: d.hour < 12),
])
def test_follow_up_requests_re_offer_filtered_slots(api, ask, ok):
    sid = str(uuid.uuid4())
    with api.client() as c:
        _, ev = say(c, sid, HOT + ' lee@acme-insurance.example', timezone='America/New_York')
        if 'slots' not in ev: say(c, sid, 'Can we book a call?')
        reply, ev = say(c, sid, ask)
    assert 'slots' in ev, f'{ask!r}: {reply!r}'
    assert all(ok(local(s, NEW_YORK)) for s in ev['slots']['slots']), (ask, ev['slots']['slots'])
    assert all(s['label'] in reply for s in ev['slots']['slots'])


def test_an_unknown_zone_gets_team_time_and_is_told(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        reply, ev = say(c, sid, HOT + ' lee@acme-insurance.example', timezone='Mars/Olympus_Mons')
        if 'slots' not in ev: reply, ev = say(c, sid, 'Can we book a call?')
    assert 'slots' in ev and all(s['label'].endswith(('CET', 'CEST')) for s in ev['slots']['slots'])
    assert 'Mars/Olympus_Mons' in reply


def test_a_slot_id_from_another_session_books_nothing(api):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    with api.client() as c:
        _, ev = say(c, a, HOT + ' lee@acme-insurance.example', timezone='Europe/Madrid')
        if 'slots' not in ev: _, ev = say(c, a, 'Can we book a call?')
        theirs = ev['slots']['slots'][0]
        _, evb = say(c, b, HOT + ' kim@acme-insurance.example', timezone='Europe/Madrid')
        reply, evb2 = say(c, b, theirs['label'], slot_id=theirs['slot_id'])
        if theirs['slot_id'] not in json.dumps(evb):
            assert 'meeting' not in evb2 and 'offered' in reply.lower()
        _, eva = say(c, a, theirs['label'], slot_id=theirs['slot_id'])
        assert eva.get('meeting', {}).get('slot_id') == theirs['slot_id'] or 'meeting' in evb2


def test_a_booking_after_the_session_expired_gets_fresh_slots(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        _, ev = say(c, sid, HOT + ' lee@acme-insurance.example', timezone='Europe/Madrid')
        if 'slots' not in ev: _, ev = say(c, sid, 'Can we book a call?')
        pick = ev['slots']['slots'][0]
        api.clock.now = EVENING + timedelta(hours=30)
        reply, ev2 = say(c, sid, pick['label'], slot_id=pick['slot_id'])
    assert 'meeting' not in ev2 and 'expired' in reply.lower(), reply
    assert wait_for(lambda: leads(api, sid)), 'the lead is still there'


# --- honest confirmations --------------------------------------------------------------------------------------------

def test_every_promise_maps_to_a_delivery_record(api):
    sid, addr = str(uuid.uuid4()), 'lee@acme-insurance.example'
    with api.client() as c:
        _, ev = say(c, sid, f'{HOT} {addr}', timezone='Europe/Madrid')
        if 'slots' not in ev: _, ev = say(c, sid, 'Can we book a call?')
        reply, ev = say(c, sid, 'the first one')
        assert 'calendar invite is on its way' in reply
        detail = wait_for(lambda: (d := state_of(c, sid)) and any(
            r['channel'] == 'invite' and r['status'] == 'delivered' for r in d['deliveries']) and d)
    assert detail, 'the invite promise has a delivery record'


# --- consent ---------------------------------------------------------------------------------------------------------

def test_consent_is_stored_with_scope_and_never_assumed(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        say(c, sid, 'What services do you offer?', consent=CONSENT)
        scopes = {r['scope'] for r in state_of(c, sid)['consent']}
        assert scopes == {'chat_processing'}
        say(c, sid, HOT + ' You can reach me at lee@acme-insurance.example')
        detail = state_of(c, sid)
    rec = {r['scope']: r for r in detail['consent']}
    assert set(rec) == {'chat_processing', 'follow_up'}                  # never marketing unless opted in
    assert rec['chat_processing']['notice_version'] == '2026-01'
    assert rec['chat_processing']['granted_at'].startswith('2026-03-24')
    assert detail['state']['consent']['gdpr_notice_acknowledged'] is True
    row = wait_for(lambda: leads(api, sid))
    assert 'follow_up' in json.dumps(row[0]['payload']['consent'])


def test_marketing_only_when_opted_in(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        say(c, sid, 'Hello', consent={**CONSENT, 'marketing': True})
        assert {r['scope'] for r in state_of(c, sid)['consent']} == {'chat_processing', 'marketing'}


@pytest.mark.parametrize('consent', [
    'yes', {'notice_version': 'x' * 200, 'acknowledged_at': '2026-03-24T19:59:30Z'},
    {'notice_version': '2026-01', 'acknowledged_at': 'yesterday'}, {'notice_version': '2026-01'},
    {'notice_version': '2026-01', 'acknowledged_at': '2026-03-24T19:59:30Z', 'marketing': 'sure'},
])
def test_malformed_consent_is_refused(api, consent):
    with api.client() as c:
        _, err = say(c, str(uuid.uuid4()), 'hello', consent=consent)
    assert err['status'] == 422 and err['error']['code'] == 'invalid_consent'


def test_can_we_book_a_call_at_night_gets_slots_once_the_email_is_known(api):
    sid = str(uuid.uuid4())
    with api.client() as c:
        reply, ev = say(c, sid, 'Can we book a call?', timezone='Europe/Madrid')
        assert ev['done']['handoff_reason'] == 'explicit_request' and 'slots' not in ev     # the email first
        reply, ev = say(c, sid, 'sure, lee@acme-insurance.example')
        assert 'slots' in ev and len(ev['slots']['slots']) == 3, reply
        reply, ev = say(c, sid, 'Can we book a call?')                                     # asked again: slots again
        assert 'slots' in ev and 'Here are' in reply
