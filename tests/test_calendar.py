"""Availability against real parts: a real Radicale CalDAV server, ICS feeds over HTTP, and the Google Calendar /
Microsoft Graph protocols spoken by a local server with recorded bodies (tests/calendar_servers.py).

* the adapter conformance suite, run against every provider: busy blocks normalised to UTC, events written and
  cancelled idempotently, failures as ProviderError;
* provider contract tests: what leadchat sends (paths, headers, bodies) and how it reads the recorded answers;
* recurring events, all-day and transparent events through CalDAV, across the spring-forward weekend;
* DST and time-zone edges for slots: a visitor in New York, a team in Madrid, spring-forward and fall-back weeks;
* the free/busy cache (freshness bound, single flight) and the circuit breaker through `CalendarService`;
* `offer_slots`: three slots, or a call-back when the calendars are down.
"""
import asyncio
import json
import os
import threading
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from calendar_servers import TOKEN, ProviderServer, Radicale, fail_after, malformed, slow, status
from leadchat.calendar import (CalDavAdapter, CalendarEvent, CalendarService, CallbackOffer, GoogleCalendar,
                               GoogleCalendarAdapter, IcsAdapter, MicrosoftCalendar, MicrosoftCalendarAdapter,
                               ProviderError, ProviderUnavailable, load_calendar_config,
                               parse_calendar_config)
from leadchat.config import ConfigurationError, Settings

ROOT = Path(__file__).resolve().parent.parent
UTC = timezone.utc
MAD, NYC = ZoneInfo('Europe/Madrid'), ZoneInfo('America/New_York')


def U(y, mo, d, h=0, mi=0): return datetime(y, mo, d, h, mi, tzinfo=UTC)


def settings(**kw) -> Settings:
    base = dict(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                leadchat_calendar_timeout_seconds=2.0)
    return Settings(**{**base, **kw})


def ics(*events: str) -> str:
    return 'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//leadchat tests//EN\r\n' + ''.join(events) + 'END:VCALENDAR\r\n'


def vevent(uid, start, end, *extra) -> str:
    return (f'BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260301T000000Z\r\n{start}\r\n{end}\r\n'
            + ''.join(f'{x}\r\n' for x in extra) + 'END:VEVENT\r\n')


# A weekly 10:00 Madrid meeting across the spring-forward Sunday, an all-day event, a transparent one, a cancelled one.
WEEKLY = vevent('weekly@t', 'DTSTART;TZID=Europe/Madrid:20260316T100000', 'DTEND;TZID=Europe/Madrid:20260316T110000',
                'RRULE:FREQ=WEEKLY;COUNT=4', 'SUMMARY:Weekly sync')
ALLDAY = vevent('offsite@t', 'DTSTART;VALUE=DATE:20260325', 'DTEND;VALUE=DATE:20260326', 'SUMMARY:Offsite')
TRANSPARENT = vevent('note@t', 'DTSTART:20260324T140000Z', 'DTEND:20260324T150000Z', 'TRANSP:TRANSPARENT')
CANCELLED = vevent('off@t', 'DTSTART:20260324T160000Z', 'DTEND:20260324T170000Z', 'STATUS:CANCELLED')
EXPECTED = [(U(2026, 3, 16, 9), U(2026, 3, 16, 10)), (U(2026, 3, 23, 9), U(2026, 3, 23, 10)),
            (U(2026, 3, 24, 23), U(2026, 3, 25, 23)),          # all day 25 March, Madrid (CET)
            (U(2026, 3, 30, 8), U(2026, 3, 30, 9)),            # 10:00 CEST after the change
            (U(2026, 4, 6, 8), U(2026, 4, 6, 9))]
WINDOW = (U(2026, 3, 14), U(2026, 4, 14))


def event(uid='leadchat-0b7d1f0e5c8a4a2b9d3c6e1f2a4b5c6d', start=U(2026, 3, 31, 8), minutes=30) -> CalendarEvent:
    return CalendarEvent(uid=uid, start=start, end=start + timedelta(minutes=minutes), summary='Intro call — Calderwood AI',
                         description='Booked from the website chat.', organizer_name='Ana Ruiz',
                         organizer_email='ana@calderwood.example', attendee_name='Lee Park',
                         attendee_email='lee@acme.example', location='Video call')


# --- servers ---------------------------------------------------------------------------------------

PASSWORDS = {'ana': 'ana correct horse', 'eve': 'eve battery staple'}


@pytest.fixture(scope='module')
def radicale():
    "Radicale with htpasswd authentication (owner_write: Eve may read Ana's calendars, not write them)."
    os.environ['ANA_CALDAV_PASSWORD'] = PASSWORDS['ana']
    with Radicale(users=PASSWORDS) as r:
        r.make_calendar('ana', 'work')
        r.add('ana', 'work', ics(WEEKLY))
        r.add('ana', 'work', ics(ALLDAY))
        r.add('ana', 'work', ics(TRANSPARENT))
        r.add('ana', 'work', ics(CANCELLED))
        yield r
    os.environ.pop('ANA_CALDAV_PASSWORD', None)


def ana(radicale, cal='work', **kw):
    return CalDavAdapter(radicale.calendar_url('ana', cal), MAD, username='ana', password=PASSWORDS['ana'], **kw)


@pytest.fixture(scope='module')
def provider():
    with ProviderServer() as p: yield p


@pytest.fixture
def prov(provider, monkeypatch):
    provider.reset()
    provider.google_busy, provider.graph_busy = {}, {}
    monkeypatch.setenv('GOOGLE_TOKEN', TOKEN)
    monkeypatch.setenv('GRAPH_TOKEN', TOKEN)
    return provider


class Files:
    "A static HTTP server for ICS feeds: `files.put('/a.ics', text)`."
    def __init__(self):
        self.files, self.hits = {}, 0
        outer = self
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                outer.hits += 1
                body = outer.files.get(self.path)
                if body is None: self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
                self.send_response(200); self.send_header('Content-Type', 'text/calendar')
                self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
    def put(self, path, text): self.files[path] = text.encode() if isinstance(text, str) else text
    def close(self): self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture(scope='module')
def files():
    f = Files()
    yield f
    f.close()


# --- the adapter conformance suite: every provider ---------------------------------------------------

def google(prov, cal='ana@calderwood.example', **kw):
    return GoogleCalendarAdapter(GoogleCalendar(kind='google', calendar_id=cal, base_url=prov.google_url, token_env='GOOGLE_TOKEN'), **kw)


def graph(prov, user='ben@calderwood.example', **kw):
    return MicrosoftCalendarAdapter(MicrosoftCalendar(kind='microsoft', user=user, base_url=prov.graph_url, token_env='GRAPH_TOKEN'), **kw)


@pytest.fixture(params=['caldav', 'google', 'microsoft'])
def writable(request, radicale, prov):
    "A writable adapter of each kind, on an empty calendar, and a function listing what the provider holds."
    if request.param == 'caldav':
        name = f'conf{len(radicale.objects("ana", "work"))}{id(request)}'[-12:]
        radicale.make_calendar('ana', name)
        a = ana(radicale, name)
        return a, lambda: list(radicale.objects('ana', name).values())
    if request.param == 'google':
        return google(prov), lambda: [e for (o, _), e in prov.events.items()]
    return graph(prov), lambda: [e for (o, _), e in prov.events.items()]


async def test_conformance_write_read_cancel(writable):
    adapter, stored = writable
    ev = event()
    assert await adapter.busy(*WINDOW) == []
    first = await adapter.create_event(ev)
    again = await adapter.create_event(ev) if adapter.kind != 'microsoft' else first   # a retried create: no second event
    assert first and again == first and len(stored()) == 1
    assert await adapter.busy(*WINDOW) == [(ev.start, ev.end)]
    await adapter.cancel_event(ev, first)
    assert stored() == [] and await adapter.busy(*WINDOW) == []
    await adapter.cancel_event(ev, first)          # cancelling again is fine: it is gone
    await adapter.cancel_event(ev, None)           # and so is cancelling without knowing the provider's id


async def test_conformance_busy_is_utc_merged_and_clipped(writable):
    adapter, _ = writable
    a = event('leadchat-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', U(2026, 3, 31, 8), 60)
    b = event('leadchat-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', U(2026, 3, 31, 8, 30), 60)     # overlaps a
    for e in (a, b): await adapter.create_event(e)
    got = await adapter.busy(U(2026, 3, 31, 8, 15), U(2026, 3, 31, 9, 15))
    assert got == [(U(2026, 3, 31, 8, 15), U(2026, 3, 31, 9, 15))]
    assert all(s.tzinfo == UTC for s, _ in got)
    for e in (a, b): await adapter.cancel_event(e)


# --- ICS feeds -----------------------------------------------------------------------------------------

async def test_ics_feed_over_http_recurring_allday_transparent(files):
    files.put('/ana.ics', ics(WEEKLY, ALLDAY, TRANSPARENT, CANCELLED))
    assert await IcsAdapter(f'{files.url}/ana.ics', MAD).busy(*WINDOW) == EXPECTED


async def test_ics_feed_from_a_file_relative_to_the_config(tmp_path):
    (tmp_path / 'feeds').mkdir()
    (tmp_path / 'feeds' / 'ana.ics').write_text(ics(WEEKLY))
    a = IcsAdapter('feeds/ana.ics', MAD, base_dir=tmp_path)
    assert (await a.busy(*WINDOW))[2] == (U(2026, 3, 30, 8), U(2026, 3, 30, 9))


@pytest.mark.parametrize('path,body,contains', [
    ('/missing.ics', None, 'HTTP 404'),
    ('/garbage.ics', 'this is not iCalendar at all', 'not valid iCalendar'),
    ('/huge.ics', 'X' * 300_000, 'larger than'),
    ('/nodtstart.ics', ics('BEGIN:VEVENT\r\nUID:x\r\nDTSTART:yesterday\r\nEND:VEVENT\r\n'), 'ics:'),
])
async def test_bad_ics_feeds_are_errors_not_empty_calendars(files, path, body, contains):
    if body is not None: files.put(path, body)
    with pytest.raises(ProviderError, match=contains):
        await IcsAdapter(f'{files.url}{path}', MAD, max_bytes=200_000).busy(*WINDOW)


async def test_ics_feed_that_does_not_answer_is_an_error():
    with pytest.raises(ProviderError):
        await IcsAdapter('http://127.0.0.1:9/feed.ics', MAD, timeout=1).busy(*WINDOW)


# --- CalDAV (Radicale) -------------------------------------------------------------------------------

async def test_caldav_busy_expands_recurrences_across_dst(radicale):
    assert await ana(radicale).busy(*WINDOW) == EXPECTED


def test_radicale_free_busy_report_is_not_trusted(radicale):
    "Why recurrences are expanded client-side: Radicale's own free-busy-query misplaces the first summer-time instance."
    with radicale.client('ana') as c:
        fb = c.calendar(url=radicale.calendar_url('ana', 'work')).freebusy_request(U(2026, 3, 29), U(2026, 3, 31)).data
    assert '20260330T090000Z' in fb and '20260330T080000Z' not in fb     # the meeting is at 08:00Z (10:00 CEST)


async def test_caldav_write_is_refused_without_rights_and_reads_still_work(radicale):
    eve = CalDavAdapter(radicale.calendar_url('ana', 'work'), MAD, username='eve', password=PASSWORDS['eve'])
    assert await eve.busy(*WINDOW) == EXPECTED            # owner_write: Eve may read Ana's calendar …
    with pytest.raises(ProviderError) as e:               # … but not write to it
        await eve.create_event(event())
    assert not e.value.retryable and 'leadchat-0b7d' not in str(radicale.objects('ana', 'work'))


async def test_caldav_wrong_password(radicale):
    bad = CalDavAdapter(radicale.calendar_url('ana', 'work'), MAD, username='ana', password='battery staple')
    with pytest.raises(ProviderError) as e:
        await bad.busy(*WINDOW)
    assert 'battery staple' not in str(e.value) and not e.value.retryable


async def test_caldav_server_down_is_a_provider_error():
    r = Radicale()
    with r:
        r.make_calendar('ana', 'work')
        a = CalDavAdapter(r.calendar_url('ana', 'work'), MAD, username='ana', timeout=2)
        assert await a.busy(*WINDOW) == []
    with pytest.raises(ProviderError):
        await a.busy(*WINDOW)


# --- Google Calendar: contract ------------------------------------------------------------------------

async def test_google_freebusy_request_and_recorded_response(prov):
    prov.google_busy['ana@calderwood.example'] = 'google_freebusy.json'
    busy = await google(prov).busy(U(2026, 3, 23), U(2026, 3, 30))
    assert busy == [(U(2026, 3, 23, 8), U(2026, 3, 23, 9, 30)), (U(2026, 3, 24, 13), U(2026, 3, 24, 15)),
                    (U(2026, 3, 26, 16), U(2026, 3, 26, 17))]
    (req,) = prov.calls('google.freebusy')
    assert req['path'] == '/calendar/v3/freeBusy' and req['auth'] == f'Bearer {TOKEN}'
    assert req['body'] == {'timeMin': '2026-03-23T00:00:00Z', 'timeMax': '2026-03-30T00:00:00Z',
                           'items': [{'id': 'ana@calderwood.example'}]}


async def test_google_long_windows_are_split(prov):
    await google(prov).busy(U(2026, 1, 1), U(2026, 4, 1))
    assert [r['body']['timeMin'] for r in prov.calls('google.freebusy')] == ['2026-01-01T00:00:00Z', '2026-03-02T00:00:00Z']


@pytest.mark.parametrize('plan,contains,retryable', [
    (status(401, json.loads((ROOT / 'tests/fixtures/calendar/google_error_401.json').read_text())), 'HTTP 401: Request had invalid', False),
    (status(503, json.loads((ROOT / 'tests/fixtures/calendar/google_error_503.json').read_text())), 'HTTP 503', True),
    (status(429), 'HTTP 429', True),
    (malformed(), 'not JSON', True),
    (slow(1.5), 'timed out', True),
])
async def test_google_failures(prov, plan, contains, retryable):
    prov.script('google.freebusy', plan)
    with pytest.raises(ProviderError, match=contains) as e:
        await google(prov, timeout=0.5).busy(U(2026, 3, 23), U(2026, 3, 30))
    assert e.value.retryable is retryable and TOKEN not in str(e.value)


async def test_google_calendar_error_inside_a_200_is_not_a_free_calendar(prov):
    prov.google_busy['ghost@calderwood.example'] = 'google_freebusy_notfound.json'
    with pytest.raises(ProviderError, match='notFound'):
        await google(prov, 'ghost@calderwood.example').busy(U(2026, 3, 23), U(2026, 3, 30))


async def test_google_token_comes_from_env_or_file(prov, tmp_path, monkeypatch):
    monkeypatch.delenv('GOOGLE_TOKEN')
    with pytest.raises(ProviderError, match='GOOGLE_TOKEN is not set'):
        await google(prov).busy(U(2026, 3, 23), U(2026, 3, 24))
    assert prov.requests == []
    tok = tmp_path / 'token'
    tok.write_text(TOKEN + '\n')
    a = GoogleCalendarAdapter(GoogleCalendar(kind='google', calendar_id='ana@calderwood.example',
                                             base_url=prov.google_url, token_file=tok))
    assert await a.busy(U(2026, 3, 23), U(2026, 3, 24)) == []


async def test_google_insert_contract(prov):
    ev = event()
    eid = await google(prov).create_event(ev)
    (req,) = prov.calls('google.insert')
    assert req['path'] == '/calendar/v3/calendars/ana%40calderwood.example/events'
    assert req['query'] == {'sendUpdates': ['none']} and eid == ev.google_id
    assert req['body']['id'] == ev.google_id and req['body']['iCalUID'] == ev.uid
    assert req['body']['start'] == {'dateTime': '2026-03-31T08:00:00Z', 'timeZone': 'UTC'}
    assert req['body']['attendees'] == [{'email': 'lee@acme.example', 'displayName': 'Lee Park'}]


async def test_google_insert_whose_response_is_lost_is_cancelled_by_its_id(prov):
    prov.script('google.insert', fail_after(500))
    with pytest.raises(ProviderError):
        await google(prov).create_event(event())
    assert len(prov.events) == 1                      # it was created, the answer was lost
    await google(prov).cancel_event(event(), None)    # compensation knows the id: it chose it
    assert prov.events == {}


# --- Microsoft Graph: contract --------------------------------------------------------------------------

async def test_graph_getschedule_request_and_recorded_response(prov):
    prov.graph_busy['ben@calderwood.example'] = 'graph_getschedule.json'
    busy = await graph(prov).busy(U(2026, 3, 23), U(2026, 3, 30))
    assert busy == [(U(2026, 3, 23, 8), U(2026, 3, 23, 9)), (U(2026, 3, 24, 12), U(2026, 3, 24, 13)),
                    (U(2026, 3, 25), U(2026, 3, 26))]
    (req,) = prov.calls('graph.schedule')
    assert req['path'] == '/v1.0/users/ben@calderwood.example/calendar/getSchedule'
    assert req['prefer'] == 'outlook.timezone="UTC"' and req['auth'] == f'Bearer {TOKEN}'
    assert req['body'] == {'schedules': ['ben@calderwood.example'],
                           'startTime': {'dateTime': '2026-03-23T00:00:00', 'timeZone': 'UTC'},
                           'endTime': {'dateTime': '2026-03-30T00:00:00', 'timeZone': 'UTC'}, 'availabilityViewInterval': 15}


async def test_graph_windows_zone_names_are_normalised(prov):
    prov.graph_busy['ben@calderwood.example'] = 'graph_getschedule_windows_tz.json'
    assert await graph(prov).busy(U(2026, 3, 23), U(2026, 3, 24)) == [(U(2026, 3, 23, 8), U(2026, 3, 23, 9))]


async def test_graph_failures(prov):
    prov.graph_busy['ghost@calderwood.example'] = 'graph_getschedule_error.json'
    with pytest.raises(ProviderError, match='ErrorMailboxNotFound'):
        await graph(prov, 'ghost@calderwood.example').busy(U(2026, 3, 23), U(2026, 3, 24))
    prov.script('graph.schedule', status(401, json.loads((ROOT / 'tests/fixtures/calendar/graph_error_401.json').read_text())))
    with pytest.raises(ProviderError, match='HTTP 401: Access token validation failure') as e:
        await graph(prov).busy(U(2026, 3, 23), U(2026, 3, 24))
    assert not e.value.retryable


async def test_graph_create_uses_a_transaction_id_and_a_lost_create_can_be_cancelled(prov):
    ev = event()
    prov.script('graph.create', fail_after(504))
    with pytest.raises(ProviderError, match='HTTP 504'):
        await graph(prov).create_event(ev)
    (req,) = prov.calls('graph.create')
    assert req['body']['transactionId'] == ev.uid and req['body']['start'] == {'dateTime': '2026-03-31T08:00:00', 'timeZone': 'UTC'}
    assert 'attendees' not in req['body'] and 'lee@acme.example' in req['body']['body']['content']   # Graph would email them
    assert len(prov.events) == 1
    await graph(prov).cancel_event(ev, None)       # repeats the create (same transactionId → same event), deletes it
    assert prov.events == {} and len(prov.calls('graph.create')) == 2


# --- configuration ----------------------------------------------------------------------------------------

def team_config(radicale=None, prov=None, **mt) -> dict:
    reps = [{'id': 'ana', 'name': 'Ana Ruiz', 'email': 'ana@calderwood.example'},
            {'id': 'ben', 'name': 'Ben Hale', 'email': 'ben@calderwood.example'}]
    if radicale:
        reps[0]['calendar'] = {'kind': 'caldav', 'url': radicale.calendar_url('ana', 'work'), 'username': 'ana'}
        if radicale.users: reps[0]['calendar']['password_env'] = 'ANA_CALDAV_PASSWORD'
    if prov: reps[1]['calendar'] = {'kind': 'google', 'calendar_id': 'ben@calderwood.example', 'base_url': prov.google_url,
                                    'token_env': 'GOOGLE_TOKEN'}
    return {'team': {'name': 'Calderwood AI', 'working_hours': {'weekdays': ['09:00-13:00', '14:00-18:00']}},
            'reps': reps, 'meeting_types': [{'id': 'intro', 'name': 'Intro call', **{'min_notice_minutes': 60, **mt}}]}


def test_the_example_configuration_loads(monkeypatch):
    team = load_calendar_config(ROOT / 'calendar.example.yaml', settings())
    assert team.reps and team.meeting_types and str(team.team_tz) == 'Europe/Madrid'
    assert any(r.calendar.kind == 'caldav' for r in team.reps)


def test_config_errors_name_the_file_and_field(tmp_path):
    p = tmp_path / 'calendar.yaml'
    p.write_text(yaml.safe_dump({**team_config(), 'meeting_types': [{'id': 'intro', 'name': 'x', 'horizon_days': 0}]}))
    with pytest.raises(ConfigurationError, match=r'LEADCHAT_CALENDAR_CONFIG \(.*calendar.yaml\): meeting_types.0.horizon_days'):
        load_calendar_config(p, settings())
    with pytest.raises(ConfigurationError, match='LEADCHAT_CALENDAR_CONFIG is not set'):
        CalendarService.from_settings(settings())


def test_a_missing_caldav_password_variable_is_a_start_up_error(radicale):
    data = team_config(radicale)
    data['reps'][0]['calendar']['password_env'] = 'NO_SUCH_PASSWORD_VARIABLE'
    with pytest.raises(ConfigurationError, match='NO_SUCH_PASSWORD_VARIABLE is not set'):
        CalendarService(settings(), parse_calendar_config(data, settings()))


# --- slots across DST -------------------------------------------------------------------------------------

def service(data, now, **kw) -> CalendarService:
    s = settings(**kw)
    return CalendarService(s, parse_calendar_config(data, s), clock=lambda: now)


async def first_slot_labels(svc, day: date, visitor='America/New_York'):
    av = await svc.availability('intro', visitor, start=datetime(day.year, day.month, day.day, tzinfo=MAD),
                                end=datetime(day.year, day.month, day.day, 23, tzinfo=MAD))
    s = av.slots[0]
    return s.to_dict()['visitor']['label'], s.to_dict()['team']['label'], len(av.slots)


@pytest.mark.parametrize('day,visitor_label,team_label', [
    (date(2026, 3, 2), 'Mon 02 Mar 2026, 03:00–03:30 EST', 'Mon 02 Mar 2026, 09:00–09:30 CET'),    # both winter: 6 h
    (date(2026, 3, 9), 'Mon 09 Mar 2026, 04:00–04:30 EDT', 'Mon 09 Mar 2026, 09:00–09:30 CET'),    # US sprang forward: 5 h
    (date(2026, 3, 27), 'Fri 27 Mar 2026, 04:00–04:30 EDT', 'Fri 27 Mar 2026, 09:00–09:30 CET'),   # last day at 5 h
    (date(2026, 3, 30), 'Mon 30 Mar 2026, 03:00–03:30 EDT', 'Mon 30 Mar 2026, 09:00–09:30 CEST'),  # Europe too: 6 h
    (date(2026, 10, 23), 'Fri 23 Oct 2026, 03:00–03:30 EDT', 'Fri 23 Oct 2026, 09:00–09:30 CEST'), # both summer
    (date(2026, 10, 26), 'Mon 26 Oct 2026, 04:00–04:30 EDT', 'Mon 26 Oct 2026, 09:00–09:30 CET'),  # Europe fell back: 5 h
    (date(2026, 11, 2), 'Mon 02 Nov 2026, 03:00–03:30 EST', 'Mon 02 Nov 2026, 09:00–09:30 CET'),   # US too: 6 h
])
async def test_visitor_in_new_york_team_in_madrid(day, visitor_label, team_label):
    svc = service(team_config(), datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=3))
    v, t, n = await first_slot_labels(svc, day)
    assert (v, t) == (visitor_label, team_label)
    assert n == 16                                   # 8 working hours, 30-minute grid: the DST week loses no slot


async def test_dst_weekends_keep_every_working_day_whole():
    svc = service(team_config(min_notice_minutes=0), U(2026, 3, 25))
    av = await svc.availability('intro', 'America/New_York', start=U(2026, 3, 25), end=U(2026, 4, 4))
    per_day = {}
    for s in av.slots: per_day.setdefault(s.start.astimezone(MAD).date(), []).append(s.start.astimezone(MAD).strftime('%H:%M'))
    assert sorted(per_day) == [date(2026, 3, d) for d in (25, 26, 27, 30, 31)] + [date(2026, 4, d) for d in (1, 2, 3)]
    assert all(v[0] == '09:00' and v[-1] == '17:30' and len(v) == 16 for v in per_day.values())


async def test_rep_overrides_and_rep_time_zone():
    data = team_config()
    data['reps'][1].update(timezone='Europe/London', working_hours={'mon': ['08:00-10:00'], 'tue': []})
    data['meeting_types'].append({'id': 'ben-only', 'name': 'Ben', 'reps': ['ben'], 'min_notice_minutes': 0})
    svc = service(data, U(2026, 3, 29))
    av = await svc.availability('ben-only', 'Europe/Madrid', start=U(2026, 3, 30), end=U(2026, 4, 1))
    assert [s.start for s in av.slots] == [U(2026, 3, 30, 7), U(2026, 3, 30, 7, 30), U(2026, 3, 30, 8), U(2026, 3, 30, 8, 30)]
    assert av.slots[0].to_dict()['visitor']['label'] == 'Mon 30 Mar 2026, 09:00–09:30 CEST'   # 08:00 BST, Monday only
    wed = await svc.availability('ben-only', start=U(2026, 4, 1), end=U(2026, 4, 2))
    assert wed.slots[0].start == U(2026, 4, 1, 8)          # other days: the team's 09:00, in London


async def test_recurring_busy_blocks_from_caldav_shape_the_slots(radicale):
    svc = service(team_config(radicale, min_notice_minutes=0, buffer_after_minutes=15), U(2026, 3, 22))
    av = await svc.availability('intro', 'America/New_York', start=U(2026, 3, 23), end=U(2026, 4, 1))
    ana = {s.start for s in av.slots if s.rep_id == 'ana'}
    # the weekly 10:00–11:00 Madrid meeting: 09:30 would run into it with its 15-minute buffer, 10:00 and 10:30 are inside
    for monday, nine in ((date(2026, 3, 23), U(2026, 3, 23, 8)), (date(2026, 3, 30), U(2026, 3, 30, 7))):
        assert nine in ana
        assert not {nine + timedelta(minutes=m) for m in (30, 60, 90)} & ana
        assert nine + timedelta(minutes=120) in ana
    assert not any(s.astimezone(MAD).date() == date(2026, 3, 25) for s in ana)     # the all-day offsite


# --- cache, single flight, circuit breaker --------------------------------------------------------------------

async def test_one_provider_call_for_a_burst_and_a_fresh_one_after_the_bound(prov):
    mono = [0.0]
    s = settings(leadchat_freebusy_max_age_seconds=30)
    svc = CalendarService(s, parse_calendar_config(team_config(prov=prov), s), clock=lambda: U(2026, 3, 22), monotonic=lambda: mono[0])
    await asyncio.gather(*(svc.availability('intro', 'America/New_York') for _ in range(50)))
    assert len(prov.calls('google.freebusy')) == 1
    mono[0] = 29
    await svc.availability('intro')
    assert len(prov.calls('google.freebusy')) == 1
    mono[0] = 31
    await svc.availability('intro')
    assert len(prov.calls('google.freebusy')) == 2


async def test_a_failing_provider_opens_its_circuit_and_recovers(prov):
    mono = [0.0]
    s = settings(leadchat_freebusy_max_age_seconds=0.001, leadchat_calendar_breaker_failures=3,
                 leadchat_calendar_breaker_reset_seconds=20)
    svc = CalendarService(s, parse_calendar_config(team_config(prov=prov), s), clock=lambda: U(2026, 3, 22), monotonic=lambda: mono[0])
    prov.script('google.freebusy', *[status(503)] * 10)
    for i in range(3):
        mono[0] += 1
        av = await svc.availability('intro')
        assert av.unavailable_reps == ['ben'] and {x.rep_id for x in av.slots} == {'ana'}
    assert len(prov.calls('google.freebusy')) == 3 and svc.breakers[svc.adapter('ben').key].state == 'open'
    mono[0] += 1
    with pytest.raises(ProviderUnavailable, match='circuit open'):
        await svc.rep_busy('ben', U(2026, 3, 23), U(2026, 3, 24))
    assert len(prov.calls('google.freebusy')) == 3                  # open: the provider is not called
    prov.plans.clear()
    mono[0] += 20
    av = await svc.availability('intro')                            # half-open trial succeeds
    assert av.unavailable_reps == [] and svc.breakers[svc.adapter('ben').key].state == 'closed'


async def test_offer_slots_and_the_callback_when_every_calendar_is_down():
    r = Radicale()
    with r:
        r.make_calendar('ana', 'work')
        data = team_config(r)
        data['meeting_types'][0]['reps'] = ['ana']
        svc = service(data, U(2026, 3, 22, 12), leadchat_freebusy_max_age_seconds=0)
        offer = await svc.offer_slots('intro', 'America/New_York', n=3)
        # ranked by the visitor's working day: 09:00 EDT (14:00 in Madrid), not 04:00 EDT (issue 15)
        assert [s.label() for s in offer] == ['Mon 23 Mar 2026, 09:00–09:30 EDT', 'Tue 24 Mar 2026, 09:00–09:30 EDT',
                                              'Wed 25 Mar 2026, 09:00–09:30 EDT']
        assert [s.slot_id for s in offer][0] == 'intro.ana.20260323T1300Z'
    out = await svc.offer_slots('intro', 'America/New_York')
    assert isinstance(out, CallbackOffer) and out.reason == 'calendar_unavailable'
    assert out.to_dict()['kind'] == 'callback' and 'call you back' in out.message


async def test_check_reads_every_calendar_once(radicale, prov):
    svc = service(team_config(radicale, prov), U(2026, 3, 22))
    rows = {r['rep']: r for r in await svc.check(days=3)}
    assert rows['ana']['ok'] and rows['ana']['kind'] == 'caldav' and rows['ben']['ok'] and rows['ben']['kind'] == 'google'
    prov.script('google.freebusy', status(503))
    rows = {r['rep']: r for r in await svc.check(days=3)}
    assert rows['ana']['ok'] and not rows['ben']['ok'] and 'HTTP 503' in rows['ben']['error']


async def test_bad_visitor_time_zones_are_refused():
    svc = service(team_config(), U(2026, 3, 22))
    for tz in ['Mars/Olympus', '../../etc/passwd', '', 'x' * 500, 'America/New_York\x00']:
        with pytest.raises(ValueError, match='visitor_tz'):
            await svc.availability('intro', tz or 'bad tz')
    with pytest.raises(LookupError, match="unknown meeting type 'demo'"):
        await svc.availability('demo')
