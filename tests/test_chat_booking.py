"""From first message to a confirmed meeting, in the chat: the real app with the calendar router, the embedded
PostgreSQL, a real Radicale (CalDAV) calendar and a local Slack receiver. A hot lead in business hours with an
email is offered three slots (an SSE `slots` event for the widget's buttons), picks one in words or with a
button (slot_id), and the booking lands in the rep's calendar, the session state, the context packet, the
analytics events and Slack."""
import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import yaml
from httpx_sse import connect_sse

from apiserver import LiveServer
from calendar_servers import IN_HOURS, HOT_WITH_EMAIL, Radicale, SettableClock, one_rep_calendar
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.calendar import CalendarService, load_calendar_config
from leadchat.config import Settings
from slack_receiver import SlackReceiver

ROOT = Path(__file__).resolve().parent.parent
TOKEN = 'staff-token-for-tests-0123456789'
SATURDAY = datetime(2026, 3, 28, 10, 0, tzinfo=timezone.utc)
HOT = HOT_WITH_EMAIL


@pytest.fixture(scope='module')
def radicale():
    with Radicale() as r:
        r.make_calendar('ana', 'work')
        yield r


@pytest.fixture(scope='module')
def booking_api(pg, radicale, tmp_path_factory):
    path = tmp_path_factory.mktemp('chatcal') / 'calendar.yaml'
    path.write_text(yaml.safe_dump(one_rep_calendar(radicale)))
    url = fresh_db(pg[1])
    clock = SettableClock()
    with SlackReceiver() as slack:
        s = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='slack,crm',
                     slack_webhook_url=slack.webhook_url, handoff_retry_backoff_seconds='0.05', leadchat_home=pg[0].leadchat_home,
                     database_url=url, leadchat_admin_token=TOKEN, leadchat_rate_limit_ip_per_minute=10_000,
                     leadchat_rate_limit_session_per_minute=10_000, leadchat_calendar_config=path)
        calendar = CalendarService(s, load_calendar_config(path, s), clock=clock)
        app = create_app(s, clock=clock, knowledge_path=str(ROOT / 'knowledge'), calendar=calendar, relay_interval=0.1)
        with LiveServer(app) as srv:
            srv.db_url, srv.slack, srv.clock, srv.radicale = url, slack, clock, radicale
            yield srv


def say(c, sid, message, **extra):
    "One turn: (reply text, {event: payload} of the non-delta events)."
    text, events = '', {}
    with connect_sse(c, 'POST', '/chat', json={'message': message, **extra}, headers={'ZGC-Session-ID': sid}) as es:
        if es.response.status_code != 200:
            es.response.read()
            return None, {'status': es.response.status_code, **es.response.json()}
        for ev in es.iter_sse():
            if ev.event == 'delta': text += json.loads(ev.data)['content']
            else: events[ev.event] = json.loads(ev.data)
    return text, events


def state_of(c, sid):
    return c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}).json()


def wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := fn(): return out
        time.sleep(0.05)
    return None


def test_a_hot_lead_books_a_meeting_in_words(booking_api):
    api, sid = booking_api, str(uuid.uuid4())
    api.clock.now = IN_HOURS
    with api.client() as c:
        reply, ev = say(c, sid, HOT, timezone='America/New_York')
        assert ev['done']['handoff_reason'] == 'hot_lead'
        offered = ev['slots']['slots']
        assert len(offered) == 3 and 'Here are 3 times' in reply
        assert all(s['label'].endswith(('EDT', 'EST')) for s in offered)           # the visitor's zone
        assert len({s['label'][:3] for s in offered}) == 3                         # three different days
        assert all(s['label'] in reply for s in offered)
        reply2, ev2 = say(c, sid, 'The second one works for me')
        assert reply2.startswith("You're booked: " + offered[1]['label']) and 'lee.park@acme-insurance.example' in reply2
        assert ev2['meeting']['label'] == offered[1]['label'] and ev2['meeting']['rep'] == 'Ana Ruiz'
        assert ev2['done']['handoff_reason'] is None                               # picking a slot is not a new request
        detail = state_of(c, sid)
    assert detail['state']['meeting']['slot_id'] == offered[1]['slot_id'] and detail['state']['offered_slots'] == []
    assert 'booking_confirmed' in [e['event_type'] for e in detail['events']]
    with psycopg.connect(api.db_url) as conn:
        rows = conn.execute("SELECT rep, status FROM calendar_bookings WHERE session_id = %s", [sid]).fetchall()
    assert rows == [('ana', 'confirmed')]
    assert wait_for(lambda: any('UID' in ics for ics in api.radicale.objects('ana', 'work').values())), 'no event in the calendar'
    # the team hears about it: the packet again, now with the booked slot (team time)
    booked = wait_for(lambda: [r for r in api.slack.requests if 'Meeting booked' in json.dumps(r['body'], ensure_ascii=False)])
    assert booked and 'CET' in json.dumps(booked[0]['body'], ensure_ascii=False)


def test_a_widget_button_books_by_slot_id_and_a_retry_never_books_twice(booking_api):
    api, sid = booking_api, str(uuid.uuid4())
    api.clock.now = IN_HOURS
    with api.client() as c:
        _, ev = say(c, sid, HOT, timezone='Europe/Madrid')
        pick = ev['slots']['slots'][2]
        offered_ids = {s['slot_id'] for s in ev['slots']['slots']}
        forged_id = next(f'intro.ana.202603{d}T1500Z' for d in ('26', '27', '30') if f'intro.ana.202603{d}T1500Z' not in offered_ids)
        reply, forged = say(c, sid, 'this one', slot_id=forged_id)                   # not offered: picks nothing
        assert 'meeting' not in forged and "isn't one I offered you" in reply
        reply, ev2 = say(c, sid, pick['label'], slot_id=pick['slot_id'])
        assert ev2['meeting']['label'] == pick['label'] and reply.startswith("You're booked")
        _, again = say(c, sid, pick['label'], slot_id=pick['slot_id'])               # already booked: nothing offered
        assert 'meeting' not in again and 'slots' not in again
    with psycopg.connect(api.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM calendar_bookings WHERE session_id = %s AND status = 'confirmed'",
                            [sid]).fetchone()[0] == 1


def test_slots_wait_for_the_email_and_come_at_any_hour(booking_api):
    api = booking_api
    api.clock.now = IN_HOURS
    with api.client() as c:
        sid = str(uuid.uuid4())
        _, ev = say(c, sid, "I'm the CTO of a 300-person insurer; we're building a claims RAG assistant, live by Q2.")
        assert ev['done']['handoff_reason'] == 'hot_lead' and 'slots' not in ev
        reply, ev = say(c, sid, 'Sure: lee.park@acme-insurance.example')
        assert len(ev['slots']['slots']) == 3 and 'Here are 3 times' in reply
        _, none = say(c, sid, 'None of those work for me, sorry')
        assert 'meeting' not in none
        api.clock.now = SATURDAY       # the conversation is at the weekend, the meeting is in hours
        sid2 = str(uuid.uuid4())
        reply, ev = say(c, sid2, HOT)
        assert ev['done']['handoff_reason'] == 'hot_lead' and 'Monday' in reply and len(ev['slots']['slots']) == 3
    api.clock.now = IN_HOURS


@pytest.mark.parametrize('extra,code', [
    ({'timezone': '../../etc/passwd'}, 'invalid_timezone'), ({'timezone': 42}, 'invalid_timezone'),
    ({'timezone': 'x' * 100}, 'invalid_timezone'), ({'slot_id': '../../etc/passwd'}, 'invalid_slot_id'),
    ({'slot_id': ['a']}, 'invalid_slot_id'), ({'slot_id': 'a' * 101}, 'invalid_slot_id'),
])
def test_bad_timezone_or_slot_id_is_refused(booking_api, extra, code):
    with booking_api.client() as c:
        _, err = say(c, str(uuid.uuid4()), 'hello', **extra)
    assert err['status'] == 422 and err['error']['code'] == code
