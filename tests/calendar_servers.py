"""Real and protocol-speaking calendar servers for the calendar and booking tests.

* `Radicale` — a real Radicale CalDAV server in a subprocess on 127.0.0.1:<free port>, with a
  temporary storage folder; no authentication (any user name, any password) or htpasswd
  authentication; `owner_write` rights (a user may write only below /<user>/, read everywhere).
  It stops when the context exits.
* `ProviderServer` — a local HTTP server that speaks the parts of Google Calendar API v3
  (`freeBusy`, `events.insert`, `events.delete`) and Microsoft Graph v1.0 (`getSchedule`, create
  and delete event) leadchat uses, answering with the recorded bodies in tests/fixtures/calendar/
  and keeping the events it is sent, so free/busy reflects them. Every request is recorded.
  Behaviour can be scripted per route: `server.script('google.insert', fail_after(500))`.
"""
import copy
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'calendar'
TOKEN = 'ya29.test-token-for-the-local-provider'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


# --- Radicale ---------------------------------------------------------------------------------

class Radicale:
    "A real Radicale 3 server: `with Radicale() as r: r.make_calendar('ana', 'work')`."

    def __init__(self, *, users: dict[str, str] | None = None):
        self.users = users           # None: no authentication; else htpasswd (plain) with these users
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix='radicale-'))
        self.url = f'http://127.0.0.1:{self.port}/'
        self.proc = None

    def start(self):
        args = [sys.executable, '-m', 'radicale', '--config', '', '--server-hosts', f'127.0.0.1:{self.port}',
                '--storage-filesystem-folder', str(self.dir / 'collections'), '--rights-type', 'owner_write',
                '--logging-level', 'warning']
        if self.users is None: args += ['--auth-type', 'none']
        else:
            htpasswd = self.dir / 'htpasswd'
            htpasswd.write_text(''.join(f'{u}:{p}\n' for u, p in self.users.items()))
            args += ['--auth-type', 'htpasswd', '--auth-htpasswd-filename', str(htpasswd),
                     '--auth-htpasswd-encryption', 'plain']
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f'radicale exited: {self.proc.stderr.read().decode(errors="replace")[-2000:]}')
            try:
                socket.create_connection(('127.0.0.1', self.port), 0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline: raise TimeoutError('radicale did not start within 30 s')
                time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        if self.proc and self.proc.stderr: self.proc.stderr.close()

    def __enter__(self): return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, user: str, password: str = 'any'):
        import caldav
        return caldav.DAVClient(url=self.url, username=user, password=(self.users or {}).get(user, password), auth_type='basic')

    def calendar_url(self, user: str, cal: str) -> str: return f'{self.url}{user}/{cal}/'

    def make_calendar(self, user: str, cal: str) -> str:
        "MKCALENDAR /<user>/<cal>/ (as that user); returns its URL."
        with self.client(user) as c: c.principal().make_calendar(name=cal, cal_id=cal)
        return self.calendar_url(user, cal)

    def add(self, user: str, cal: str, ics: str):
        with self.client(user) as c: c.calendar(url=self.calendar_url(user, cal)).add_event(ics)

    def objects(self, user: str, cal: str) -> dict[str, str]:
        "Every calendar object in the calendar: URL → iCalendar text."
        with self.client(user) as c:
            return {str(o.url): o.data for o in c.calendar(url=self.calendar_url(user, cal)).events()}


# --- Google Calendar and Microsoft Graph ------------------------------------------------------

def status(code: int, body=None): return {'kind': 'status', 'code': code, 'body': body}
def slow(seconds: float, then=None): return {'kind': 'slow', 'seconds': seconds, 'then': then}
def fail_after(code: int = 500, body=None):
    "Do what was asked (store/delete the event), then answer an error: the response is lost, the effect is not."
    return {'kind': 'after', 'code': code, 'body': body}
def malformed(): return {'kind': 'raw', 'code': 200, 'text': '<html>proxy error</html>'}


def _z(dt: datetime) -> str: return dt.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _parse(s: str) -> datetime:
    d = datetime.fromisoformat(s)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


class ProviderServer:
    def __init__(self):
        self.requests, self.plans = [], {}
        self.google_busy: dict[str, str] = {}     # calendar id → recorded freeBusy fixture
        self.graph_busy: dict[str, str] = {}      # user → recorded getSchedule fixture
        self.events: dict[tuple[str, str], dict] = {}    # (calendar id or user, event id) → event
        self.deleted: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass
            def do_POST(self): outer._handle(self, 'POST')
            def do_DELETE(self): outer._handle(self, 'DELETE')
            def do_GET(self): outer._handle(self, 'GET')

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def google_url(self) -> str: return self.url

    @property
    def graph_url(self) -> str: return self.url + '/v1.0'

    def script(self, route: str, *plans):
        with self.lock: self.plans.setdefault(route, []).extend(plans)

    def reset(self):
        with self.lock:
            self.requests.clear(); self.plans.clear(); self.events.clear(); self.deleted.clear()

    def calls(self, route: str) -> list[dict]: return [r for r in self.requests if r['route'] == route]

    # --- dispatch
    def _route(self, method, parts):
        if method == 'POST' and parts == ['calendar', 'v3', 'freeBusy']: return 'google.freebusy', {}
        if parts[:3] == ['calendar', 'v3', 'calendars'] and len(parts) >= 5 and parts[4] == 'events':
            if method == 'POST' and len(parts) == 5: return 'google.insert', {'cal': parts[3]}
            if method == 'DELETE' and len(parts) == 6: return 'google.delete', {'cal': parts[3], 'id': parts[5]}
        if parts[:2] == ['v1.0', 'users'] and len(parts) >= 4:
            user = parts[2]
            if method == 'POST' and parts[3:] == ['calendar', 'getSchedule']: return 'graph.schedule', {'user': user}
            if method == 'POST' and parts[3:] == ['calendar', 'events']: return 'graph.create', {'user': user}
            if method == 'DELETE' and len(parts) == 5 and parts[3] == 'events': return 'graph.delete', {'user': user, 'id': parts[4]}
        return None, {}

    def _handle(self, h, method):
        u = urlsplit(h.path)
        parts = [unquote(p) for p in u.path.strip('/').split('/')]
        raw = h.rfile.read(int(h.headers.get('Content-Length', 0) or 0))
        try: body = json.loads(raw) if raw else None
        except ValueError: body = raw.decode(errors='replace')
        route, args = self._route(method, parts)
        with self.lock:
            self.requests.append(dict(route=route, method=method, path=u.path, query=parse_qs(u.query), body=body,
                                      auth=h.headers.get('Authorization'), prefer=h.headers.get('Prefer'), at=time.monotonic()))
            plan = self.plans[route].pop(0) if self.plans.get(route) else None
        self.arrived.set()
        try: self._answer(h, route, args, body, plan)
        except (BrokenPipeError, ConnectionResetError): pass

    def _answer(self, h, route, args, body, plan):
        if plan and plan['kind'] == 'slow':
            time.sleep(plan['seconds'])
            plan = plan['then']
        if plan and plan['kind'] == 'status': return self._send(h, plan['code'], plan['body'] or {'error': {'code': plan['code'], 'message': 'scripted'}})
        if plan and plan['kind'] == 'raw': return self._send(h, plan['code'], plan['text'])
        if route is None: return self._send(h, 404, {'error': {'code': 404, 'message': 'Not Found'}})
        if h.headers.get('Authorization') != f'Bearer {TOKEN}':
            return self._send(h, 401, fixture('graph_error_401.json' if route.startswith('graph') else 'google_error_401.json'))
        code, out = getattr(self, '_' + route.replace('.', '_'))(body, **args)
        if plan and plan['kind'] == 'after':
            return self._send(h, plan['code'], plan['body'] or {'error': {'code': plan['code'], 'message': 'Backend Error'}})
        return self._send(h, code, out)

    def _send(self, h, code, body):
        out = body.encode() if isinstance(body, str) else (json.dumps(body).encode() if body is not None else b'')
        h.send_response(code)
        if body is not None: h.send_header('Content-Type', 'application/json; charset=UTF-8' if not isinstance(body, str) else 'text/html')
        h.send_header('Content-Length', str(len(out)))
        h.end_headers()
        h.wfile.write(out)

    # --- Google
    def _busy_from_events(self, owner, t0, t1):
        with self.lock:
            return [(e['_start'], e['_end']) for (o, _), e in self.events.items() if o == owner and e['_start'] < t1 and e['_end'] > t0]

    def _google_freebusy(self, body):
        if not isinstance(body, dict) or not {'timeMin', 'timeMax', 'items'} <= set(body):
            return 400, {'error': {'code': 400, 'message': 'Missing timeMin, timeMax or items.'}}
        t0, t1 = _parse(body['timeMin']), _parse(body['timeMax'])
        out = {'kind': 'calendar#freeBusy', 'timeMin': body['timeMin'], 'timeMax': body['timeMax'], 'calendars': {}}
        for item in body['items']:
            cid = item['id']
            entry = copy.deepcopy(fixture(self.google_busy[cid])['calendars'][cid]) if cid in self.google_busy else {'busy': []}
            entry.setdefault('busy', [])
            entry['busy'] += [{'start': _z(s), 'end': _z(e)} for s, e in self._busy_from_events(cid, t0, t1)]
            out['calendars'][cid] = entry
        return 200, out

    def _google_insert(self, body, cal):
        eid = body.get('id') or uuid.uuid4().hex
        with self.lock:
            if (cal, eid) in self.events:
                return 409, {'error': {'code': 409, 'message': 'The requested identifier already exists.',
                                       'errors': [{'domain': 'global', 'reason': 'duplicate', 'message': 'The requested identifier already exists.'}]}}
            ev = dict(body, _start=_parse(body['start']['dateTime']), _end=_parse(body['end']['dateTime']))
            self.events[(cal, eid)] = ev
        text = (FIXTURES / 'google_event.json').read_text()
        for k, v in {'id': eid, 'summary': body.get('summary', ''), 'start': body['start']['dateTime'],
                     'end': body['end']['dateTime'], 'iCalUID': body.get('iCalUID', ''),
                     'attendee': (body.get('attendees') or [{}])[0].get('email', '')}.items():
            text = text.replace('{' + k + '}', json.dumps(v)[1:-1])
        return 200, json.loads(text)

    def _google_delete(self, body, cal, id):
        with self.lock:
            if self.events.pop((cal, id), None) is not None:
                self.deleted.add((cal, id))
                return 204, None
            if (cal, id) in self.deleted: return 410, {'error': {'code': 410, 'message': 'Resource has been deleted'}}
        return 404, {'error': {'code': 404, 'message': 'Not Found'}}

    # --- Microsoft Graph
    def _graph_schedule(self, body, user):
        if not isinstance(body, dict) or not {'schedules', 'startTime', 'endTime'} <= set(body):
            return 400, {'error': {'code': 'ErrorInvalidRequest', 'message': 'schedules, startTime and endTime are required.'}}
        t0 = _parse(body['startTime']['dateTime'])
        t1 = _parse(body['endTime']['dateTime'])
        values = []
        for sid in body['schedules']:
            if sid in self.graph_busy:
                v = next(x for x in fixture(self.graph_busy[sid])['value'] if x['scheduleId'] == sid)
            else: v = {'scheduleId': sid, 'availabilityView': '', 'scheduleItems': []}
            v = copy.deepcopy(v)
            v.setdefault('scheduleItems', [])
            v['scheduleItems'] += [{'isPrivate': False, 'status': 'busy', 'subject': 'leadchat booking',
                                    'start': {'dateTime': s.strftime('%Y-%m-%dT%H:%M:%S.0000000'), 'timeZone': 'UTC'},
                                    'end': {'dateTime': e.strftime('%Y-%m-%dT%H:%M:%S.0000000'), 'timeZone': 'UTC'}}
                                   for s, e in self._busy_from_events(sid, t0, t1)]
            values.append(v)
        return 200, {'@odata.context': 'https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)',
                     'value': values}

    def _graph_create(self, body, user):
        tid = body.get('transactionId')
        with self.lock:
            if tid:
                for (o, eid), e in self.events.items():
                    if o == user and e.get('transactionId') == tid: return 201, self._graph_event(eid, e)
            eid = 'AAMkAG' + uuid.uuid4().hex
            ev = dict(body, _start=_parse(body['start']['dateTime']), _end=_parse(body['end']['dateTime']))   # timeZone: UTC
            self.events[(user, eid)] = ev
        return 201, self._graph_event(eid, ev)

    def _graph_event(self, eid, body):
        text = (FIXTURES / 'graph_event.json').read_text()
        att = (body.get('attendees') or [{}])[0].get('emailAddress', {})
        for k, v in {'id': eid, 'subject': body.get('subject', ''), 'start': body['start']['dateTime'],
                     'end': body['end']['dateTime'], 'transactionId': body.get('transactionId') or '',
                     'attendee': att.get('address', ''), 'attendee_name': att.get('name', '')}.items():
            text = text.replace('{' + k + '}', json.dumps(v)[1:-1])
        return json.loads(text)

    def _graph_delete(self, body, user, id):
        with self.lock:
            if self.events.pop((user, id), None) is not None: return 204, None
        return 404, {'error': {'code': 'ErrorItemNotFound', 'message': 'The specified object was not found in the store.'}}


# --- booking in the chat (tests/test_chat_booking.py, tests/test_widget.py) --------------------------

IN_HOURS = datetime(2026, 3, 23, 9, 0, tzinfo=timezone.utc)         # Monday 10:00 in Madrid: the team is in
HOT_WITH_EMAIL = ("I'm the CTO of a 300-person insurer; we're building a claims RAG assistant and need it live by Q2. "
                  "Reach me at lee.park@acme-insurance.example")


class SettableClock:
    "The app's and the calendar's clock: business hours and slots must not depend on when the tests run."
    def __init__(self, now: datetime = IN_HOURS): self.now = now
    def __call__(self): return self.now


def one_rep_calendar(radicale: Radicale) -> dict:
    "calendar.yaml for one rep, Ana, on a real Radicale calendar (ana/work must exist)."
    return {'team': {'name': 'Calderwood AI', 'working_hours': {'weekdays': ['09:00-13:00', '14:00-18:00']}},
            'reps': [{'id': 'ana', 'name': 'Ana Ruiz', 'email': 'ana@calderwood.example',
                      'calendar': {'kind': 'caldav', 'url': radicale.calendar_url('ana', 'work'), 'username': 'ana'}}],
            'meeting_types': [{'id': 'intro', 'name': 'Intro call', 'duration_minutes': 30, 'min_notice_minutes': 120,
                               'horizon_days': 14}]}
