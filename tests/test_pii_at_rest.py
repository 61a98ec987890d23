"""Issue 18 item 4, the rest of it (0017_pii_encrypted.sql): after conversations, a hand-off and a booking, the
visitor's distinctive email, name and phone appear in no column of any table in plaintext; a wrong key fails clearly;
rotation re-encrypts every new sealed column; rows written before encryption are sealed (and still read)."""
import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import yaml
from httpx_sse import connect_sse
from psycopg import sql
from psycopg.rows import dict_row

from apiserver import LiveServer
from calendar_servers import SettableClock
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.calendar import CalendarService, load_calendar_config
from leadchat.config import Settings
from leadchat.db import DataKey, DataKeyError, Keyring, create_pool, load_keyring, migrate, new_data_key
from leadchat.privacy import (booking_value, check_data_key, erase_subject, export_subject, find_subject, rotate_keys,
                              seal_plaintext)
from leadchat.repos import (add_contact, append_transcript, contact_history, enqueue_handoff, enqueue_update, get_outbox_item,
                            get_session, get_transcript, leads_for_session, list_sessions, SessionFilter, upsert_lead,
                            upsert_session)
from leadchat.state import HandoffRequest, Message, SessionState

ROOT = Path(__file__).resolve().parent.parent
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
CONSENT = {'notice_version': 'v1', 'acknowledged_at': '2026-03-02T09:59:00Z'}
TOKEN = 'staff-token-for-pii-at-rest-tests-0123'
# the visitor of the end-to-end test: three values that occur nowhere else (the scan below looks for each)
EMAIL, NAME, PHONE = 'ottilie.vashenko@pii-rest.example', 'Ottilie Vashenko', '+44 20 7946 0377'
NEEDLES = [EMAIL, NAME, 'vashenko', PHONE, PHONE.replace(' ', ''), '7946 0377', '79460377']


def calendar_file(tmp: Path) -> Path:
    path = tmp / 'calendar.yaml'
    path.write_text(yaml.safe_dump({
        'team': {'name': 'Calderwood AI', 'working_hours': {'weekdays': ['09:00-18:00']},
                 'invite_from': 'meetings@calderwood.example'},
        'reps': [{'id': 'fay', 'name': 'Fay Lund', 'email': 'fay@calderwood.example', 'calendar': {'kind': 'none'}}],
        'meeting_types': [{'id': 'intro', 'name': 'Intro call', 'reps': ['fay'], 'min_notice_minutes': 60, 'horizon_days': 30,
                           'location': 'Video call'}]}))
    return path


@pytest.fixture(scope='module')
def api(pg, tmp_path_factory):
    url = fresh_db(pg[1])
    home = tmp_path_factory.mktemp('pii-home')
    clock = SettableClock(MONDAY)
    cal = calendar_file(tmp_path_factory.mktemp('pii-cal'))
    s = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                 leadchat_home=home, database_url=url, leadchat_admin_token=TOKEN, leadchat_rate_limit_ip_per_minute=10_000,
                 leadchat_rate_limit_session_per_minute=10_000, leadchat_calendar_config=cal)
    calendar = CalendarService(s, load_calendar_config(cal, s), clock=clock)
    app = create_app(s, clock=clock, knowledge_path=str(ROOT / 'knowledge'), calendar=calendar, relay_interval=0.1)
    with LiveServer(app) as srv:
        srv.db_url, srv.clock, srv.settings, srv.keyring = url, clock, s, load_keyring(s)
        yield srv


def say(client, sid, message, **body) -> str:
    with connect_sse(client, 'POST', '/chat', json={'message': message, **body}, headers={'ZGC-Session-ID': sid}) as es:
        assert es.response.status_code == 200
        return ''.join(json.loads(ev.data)['content'] for ev in es.iter_sse() if ev.event == 'delta')


def q(url, query, params=()):
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as c: return c.execute(query, params).fetchall()


def arun(url, fn):
    async def go():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as c: return await fn(c)
    return asyncio.run(go())


def plaintext_scan(url: str, needles) -> list[str]:
    """'table.column' of every column of every table (text, json, jsonb, arrays, bytea as raw bytes) where any needle
    appears as it is, case-insensitively: what someone with the database and not the key would read."""
    hits = []
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as c:
        cols = c.execute('''SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
                            JOIN information_schema.tables t USING (table_schema, table_name)
                            WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
                              AND c.data_type NOT IN ('vector', 'tsvector')''').fetchall()
        assert {r['table_name'] for r in cols} >= {'sessions', 'leads', 'contact_history', 'calendar_bookings', 'transcript',
                                                   'handoff_outbox', 'checkpoint_blobs', 'visitor_identities'}
        for r in cols:
            col = sql.Identifier(r['column_name'])
            expr = sql.SQL("encode({}, 'escape')").format(col) if r['data_type'] == 'bytea' else sql.SQL('{}::text').format(col)
            found = c.execute(sql.SQL('SELECT 1 FROM {} WHERE {} ILIKE ANY(%s) LIMIT 1').format(sql.Identifier(r['table_name']), expr),
                              [[f'%{n}%' for n in needles]]).fetchone()
            if found: hits.append(f"{r['table_name']}.{r['column_name']}")
    return hits


def wait_for(fn, what, timeout=30.0):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (v := fn()): return v
        time.sleep(0.1)
    raise AssertionError(f'timed out waiting for {what}')


# --- end to end -----------------------------------------------------------------------------------------------------

def test_after_conversations_a_hand_off_and_a_booking_no_column_of_any_table_holds_the_pii_in_plaintext(api):
    scenarios = yaml.safe_load((Path(__file__).parent / 'scenarios' / 'conversations.yaml').read_text())
    sid = str(uuid.uuid4())
    with api.client() as c:
        for sc in scenarios[:4]:                       # a few of the scenario suite's conversations, as they are
            other = str(uuid.uuid4())
            for t in sc['turns'][:3]: say(c, other, t['say'], consent=CONSENT)
        say(c, sid, 'We run claims triage by hand for 40 adjusters and it is slow; I am the CTO at a 300-person insurer.',
            consent=CONSENT)
        say(c, sid, f"I'm {NAME}, my email is {EMAIL} and my phone is {PHONE}. We want to start next month.")
        say(c, sid, 'Can I talk to someone on your team?')
        slot = f"intro.fay.{datetime(2026, 3, 4, 10, 0, tzinfo=timezone(timedelta(hours=1))).astimezone(timezone.utc):%Y%m%dT%H%M}Z"
        r = c.post('/api/bookings', json={'slot_id': slot, 'session_id': sid, 'visitor': {'name': NAME, 'email': EMAIL},
                                          'notes': f'Please call {NAME} on {PHONE} first'},
                   headers={'Idempotency-Key': str(uuid.uuid4())})
        assert r.status_code == 201, r.text
    kr = api.keyring
    # the data is all there, for whoever holds the key (so the scan below can fail)
    # the lead is written with the hand-off; when that came before the email (the first message can be a hot lead on
    # its own), the email reaches it with the update the relay delivers after it
    leads = wait_for(lambda: [l for l in arun(api.db_url, lambda c: leads_for_session(c, sid, keyring=kr)) if l.email],
                     'the hand-off relay (CRM) with the email')
    assert leads[0].email == EMAIL and leads[0].name == NAME and leads[0].payload['contact']['email'] == EMAIL
    wait_for(lambda: 'meeting' in arun(api.db_url, lambda c: leads_for_session(c, sid, keyring=kr))[0].payload, 'the booking on the lead')
    row = arun(api.db_url, lambda c: get_session(c, sid, keyring=kr))
    assert (row.visitor_email, row.visitor_name) == (EMAIL, NAME)
    assert any(EMAIL in m.content for m in arun(api.db_url, lambda c: get_transcript(c, sid, keyring=kr)))
    assert {h.field: h.value for h in arun(api.db_url, lambda c: contact_history(c, sid, keyring=kr))}['email'] == EMAIL
    outbox = q(api.db_url, 'SELECT id FROM handoff_outbox WHERE session_id = %s ORDER BY id', [sid])
    items = [arun(api.db_url, lambda c: get_outbox_item(c, r['id'], keyring=kr)) for r in outbox]
    # the hand-off — or, when it went before the email was given, the update that followed it — carries the email
    item = next(i for i in items if (i.request.get('session_state') or {}).get('visitor_email') == EMAIL)
    # the non-PII parts of the stored documents stay queryable
    assert q(api.db_url, "SELECT request->>'lead_level' AS l, request->>'handoff_reason' AS r FROM handoff_outbox WHERE id = %s",
             [item.id]) == [{'l': item.request['lead_level'], 'r': item.request['handoff_reason']}]
    assert q(api.db_url, "SELECT payload->'meeting'->>'status' AS s FROM leads WHERE session_id = %s", [sid]) == [{'s': 'confirmed'}]
    booking = q(api.db_url, 'SELECT * FROM calendar_bookings WHERE session_id = %s', [sid])
    assert booking and booking[0]['visitor_name'] is None and booking[0]['visitor_email_enc'].startswith(f'v1.{kr.current.key_id}.')
    assert booking_value(kr, booking[0], 'notes') == f'Please call {NAME} on {PHONE} first' and booking[0]['notes'] is None
    # found by exact email through the blind indexes
    assert [s.session_id for s in arun(api.db_url, lambda c: list_sessions(c, SessionFilter(search=EMAIL.upper()), keyring=kr))] == [sid]
    subject = arun(api.db_url, lambda c: find_subject(c, kr, EMAIL))
    assert sid in subject.session_ids and subject.booking_ids and NAME in subject.names
    # and in plaintext, nowhere
    assert plaintext_scan(api.db_url, NEEDLES) == []


def test_the_scan_finds_plaintext_when_there_is_some(api):
    "The scan is not blind: a value written in clear is found in its column."
    sid = f'scan-{uuid.uuid4()}'
    q(api.db_url, "INSERT INTO sessions (session_id, visitor_name) VALUES (%s, 'Quentin Scanwright') RETURNING 1", [sid])
    try: assert plaintext_scan(api.db_url, ['scanwright']) == ['sessions.visitor_name']
    finally: q(api.db_url, 'DELETE FROM sessions WHERE session_id = %s RETURNING 1', [sid])


# --- on a bare database ---------------------------------------------------------------------------------------------

@pytest.fixture
def bare(pg):
    url = fresh_db(pg[1]); asyncio.run(migrate(url))
    return url


def state(sid, email, name, **kw) -> SessionState:
    return SessionState(session_id=sid, visitor_email=email, visitor_name=name, lead_level='hot', handoff_reason='hot_lead',
                        messages=[Message(role='user', content=f'I am {name}, {email}', turn_index=1)], **kw)


async def write_everything(c, kr, sid, email, name, phone):
    "One session's worth of sealed rows in every table 0017 seals."
    s = state(sid, email, name)
    req = HandoffRequest(session_id=sid, handoff_reason='hot_lead', lead_level='hot', business_hours=True, session_state=s,
                         triggered_at=MONDAY).model_dump(mode='json')
    await upsert_session(c, s, keyring=kr)
    await append_transcript(c, sid, s.messages, keyring=kr)
    await add_contact(c, sid, 'email', email, keyring=kr)
    await add_contact(c, sid, 'phone', phone, keyring=kr)
    await upsert_lead(c, session_id=sid, handoff_reason='hot_lead', lead_level='hot', keyring=kr,
                      payload={'contact': {'email': email, 'name': name, 'phone': phone}, 'state_at': '2026-03-02T10:00:00Z'})
    await enqueue_handoff(c, session_id=sid, handoff_reason='hot_lead', request=req, keyring=kr)
    await enqueue_update(c, session_id=sid, handoff_reason='hot_lead', change_key='turn:2', request=req, keyring=kr,
                         changes=[{'kind': 'phone', 'value': phone}])


async def read_everything(c, kr, sid) -> dict:
    lead = (await leads_for_session(c, sid, keyring=kr))[0]
    items = [await get_outbox_item(c, r['id'], keyring=kr) for r in
             await (await c.execute('SELECT id FROM handoff_outbox WHERE session_id = %s ORDER BY id', [sid])).fetchall()]
    row = await get_session(c, sid, keyring=kr)
    return dict(session=(row.visitor_email, row.visitor_name),
                transcript=[m.content for m in await get_transcript(c, sid, keyring=kr)],
                contacts=[(h.field, h.value) for h in await contact_history(c, sid, keyring=kr)],
                lead=(lead.email, lead.name, lead.phone, lead.payload['contact']),
                outbox=[i.request['session_state']['visitor_email'] for i in items], changes=items[1].changes)


def expected(email, name, phone) -> dict:
    return dict(session=(email, name), transcript=[f'I am {name}, {email}'], contacts=[('email', email), ('phone', phone)],
                lead=(email, name, phone, {'email': email, 'name': name, 'phone': phone}), outbox=[email, email],
                changes=[{'kind': 'phone', 'value': phone}])


def test_a_wrong_key_fails_clearly_and_nothing_is_half_read(bare):
    right, wrong = Keyring(DataKey.parse(new_data_key())), Keyring(DataKey.parse(new_data_key()))
    arun(bare, lambda c: write_everything(c, right, 's1', 'wanda.wrongkey@example.org', 'Wanda Wrongkey', '+34 612 000 111'))
    assert arun(bare, lambda c: read_everything(c, right, 's1')) == expected('wanda.wrongkey@example.org', 'Wanda Wrongkey', '+34 612 000 111')
    for read in (lambda c: get_session(c, 's1', keyring=wrong), lambda c: get_transcript(c, 's1', keyring=wrong),
                 lambda c: leads_for_session(c, 's1', keyring=wrong), lambda c: contact_history(c, 's1', keyring=wrong)):
        with pytest.raises(DataKeyError, match=f'key id {right.current.key_id}'): arun(bare, read)
    # a tampered value does not authenticate (the context binds a value to its column)
    q(bare, "UPDATE sessions SET visitor_name_enc = visitor_email_enc WHERE session_id = 's1' RETURNING 1")
    with pytest.raises(DataKeyError, match='does not authenticate'): arun(bare, lambda c: get_session(c, 's1', keyring=right))
    # at start-up, the sealed sessions alone (no visitor, no checkpoint yet) name the key they were written with
    strict = Settings(rag_relevance_threshold=0.3, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                      leadchat_data_key=new_data_key())
    with pytest.raises(DataKeyError, match=f'key id\\(s\\) {right.current.key_id}'): arun(bare, lambda c: check_data_key(c, wrong, strict))
    arun(bare, lambda c: check_data_key(c, right, strict))


def test_rotation_re_encrypts_every_sealed_column_and_the_old_key_can_go(bare):
    old = Keyring(DataKey.parse(new_data_key()))
    people = [(f's{i}', f'rota{i}@example.org', f'Rhea Rotation{i}', f'+34 612 345 {100 + i}') for i in range(7)]
    for sid, e, n, p in people: arun(bare, lambda c: write_everything(c, old, sid, e, n, p))
    new = Keyring(DataKey.parse(new_data_key()), previous=[old.current])

    async def go():
        p = await create_pool(bare, max_size=2)
        try: return await rotate_keys(p, new, batch=3)          # several batches per table
        finally: await p.close()
    done = asyncio.run(go())
    assert {k: done[k] for k in ('sessions', 'leads', 'contact_history', 'transcript', 'handoff_outbox')} == dict(
        sessions=7, leads=7, contact_history=14, transcript=7, handoff_outbox=14)
    only_new = Keyring(new.current)                                      # the old key removed
    for sid, e, n, p in people: assert arun(bare, lambda c: read_everything(c, only_new, sid)) == expected(e, n, p)
    tokens = q(bare, '''SELECT visitor_email_enc AS t FROM sessions UNION ALL SELECT visitor_name_enc FROM sessions
                        UNION ALL SELECT email_enc FROM leads UNION ALL SELECT name_enc FROM leads UNION ALL SELECT phone_enc FROM leads
                        UNION ALL SELECT value_enc FROM contact_history UNION ALL SELECT content_enc FROM transcript''')
    assert len(tokens) == 7 * 8 and all(r['t'].startswith(f'v1.{new.current.key_id}.') for r in tokens)
    docs = q(bare, 'SELECT request AS d FROM handoff_outbox UNION ALL SELECT changes FROM handoff_outbox UNION ALL SELECT payload FROM leads')
    assert {k for r in docs for k in only_new.key_ids_of_leaves(r['d'])} == {new.current.key_id}
    # the blind indexes moved too: found by email with the new key alone, the transcript's email included
    assert arun(bare, lambda c: find_subject(c, only_new, 'ROTA3@example.org')).session_ids == ['s3']
    assert [s.session_id for s in arun(bare, lambda c: list_sessions(c, SessionFilter(search='rota5@example.org'), keyring=only_new))] == ['s5']
    again = asyncio.run(go())                                            # nothing left to move
    assert not any(again[k] for k in ('sessions', 'leads', 'contact_history', 'transcript', 'handoff_outbox'))


def test_rows_from_before_encryption_are_read_then_sealed_at_start_up_and_the_plaintext_is_gone(bare, tmp_path):
    email, name, phone = 'petra.plainold@example.org', 'Petra Plainold', '+49 30 1234 5678'
    s = state('legacy', email, name)
    req = HandoffRequest(session_id='legacy', handoff_reason='hot_lead', lead_level='hot', business_hours=True, session_state=s,
                         triggered_at=MONDAY).model_dump(mode='json')
    with psycopg.connect(bare, autocommit=True) as c:          # what a version before 0017 wrote
        c.execute("INSERT INTO sessions (session_id, visitor_email, visitor_name, lead_level) VALUES ('legacy', %s, %s, 'hot')", [email, name])
        c.execute("INSERT INTO transcript (session_id, turn_index, role, content) VALUES ('legacy', 1, 'user', %s)", [f'I am {name}, {email}'])
        c.execute("INSERT INTO contact_history (session_id, field, value) VALUES ('legacy', 'email', %s), ('legacy', 'phone', %s)", [email, phone])
        c.execute('''INSERT INTO leads (session_id, handoff_reason, reasons, lead_level, email, name, phone, payload)
                     VALUES ('legacy', 'hot_lead', '{hot_lead}', 'hot', %s, %s, %s, %s)''',
                  [email, name, phone, json.dumps({'contact': {'email': email, 'name': name, 'phone': phone}})])
        c.execute("INSERT INTO handoff_outbox (session_id, handoff_reason, request) VALUES ('legacy', 'hot_lead', %s)", [json.dumps(req)])
        c.execute('''INSERT INTO handoff_outbox (session_id, handoff_reason, request, kind, change_key, changes)
                     VALUES ('legacy', 'hot_lead', %s, 'update', 'turn:2', %s)''', [json.dumps(req), json.dumps([{'kind': 'phone', 'value': phone}])])
        c.execute('''INSERT INTO calendar_bookings (id, rep, meeting_type, start_at, end_at, status, hold_token_hash, session_id,
                                                   visitor_name, visitor_email, notes, provider)
                     VALUES (%s, 'fay', 'intro', %s, %s, 'confirmed', '\\x00', 'legacy', %s, %s, %s, 'none')''',
                  [uuid.uuid4(), MONDAY, MONDAY + timedelta(minutes=30), name, email, f'call {phone}'])
    needles = [email, name, 'plainold', phone, '1234 5678']
    assert set(plaintext_scan(bare, needles)) == {'sessions.visitor_email', 'sessions.visitor_name', 'transcript.content',
                                                  'contact_history.value', 'leads.email', 'leads.name', 'leads.phone', 'leads.payload',
                                                  'handoff_outbox.request', 'handoff_outbox.changes', 'calendar_bookings.visitor_name',
                                                  'calendar_bookings.visitor_email', 'calendar_bookings.notes'}
    kr = Keyring(DataKey.parse(new_data_key()))
    # before sealing, the readers take the plaintext, and a data-subject request finds everything
    assert arun(bare, lambda c: read_everything(c, kr, 'legacy')) == expected(email, name, phone)
    subject = arun(bare, lambda c: find_subject(c, kr, email))
    assert subject.session_ids == ['legacy'] and len(subject.booking_ids) == 1 and subject.names == {name} and subject.phones == {phone}

    async def seal():
        p = await create_pool(bare, max_size=2)
        try: return await seal_plaintext(p, kr, batch=1)
        finally: await p.close()
    assert asyncio.run(seal()) == dict(sessions=1, leads=1, contact_history=2, calendar_bookings=1, transcript=1, handoff_outbox=2)
    assert plaintext_scan(bare, needles) == []
    assert arun(bare, lambda c: read_everything(c, kr, 'legacy')) == expected(email, name, phone)       # read back, sealed
    assert arun(bare, lambda c: find_subject(c, kr, email)).session_ids == ['legacy']                  # by blind index now
    assert booking_value(kr, q(bare, "SELECT * FROM calendar_bookings WHERE session_id = 'legacy'")[0], 'notes') == f'call {phone}'
    assert asyncio.run(seal()) == dict(sessions=0, leads=0, contact_history=0, calendar_bookings=0, transcript=0, handoff_outbox=0)
    # the transcript stays append-only: sealing is the one UPDATE it takes, and what was said cannot change
    with pytest.raises(psycopg.errors.RaiseException, match='append-only'):
        q(bare, "UPDATE transcript SET role = 'assistant' WHERE session_id = 'legacy' RETURNING 1")
    with pytest.raises(psycopg.errors.RaiseException, match='append-only'):
        q(bare, "UPDATE transcript SET content = 'rewritten', content_enc = NULL WHERE session_id = 'legacy' RETURNING 1")


def test_the_service_seals_plaintext_on_start(bare, tmp_path):
    q(bare, "INSERT INTO sessions (session_id, visitor_email) VALUES ('old-one', 'sam.started@example.org') RETURNING 1")
    s = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                 leadchat_home=tmp_path, database_url=bare)
    from leadchat.service import prepare
    async def start_and_stop():
        db = await prepare(s, knowledge_path='')
        await db.close()
    asyncio.run(start_and_stop())
    assert plaintext_scan(bare, ['sam.started']) == []
    assert arun(bare, lambda c: get_session(c, 'old-one', keyring=load_keyring(s))).visitor_email == 'sam.started@example.org'


def test_export_and_erase_read_and_clear_the_sealed_columns(bare):
    import io
    kr = Keyring(DataKey.parse(new_data_key()))
    arun(bare, lambda c: write_everything(c, kr, 'ex', 'exa.porter@example.org', 'Exa Porter', '+33 1 23 45 67 89'))
    out = io.StringIO()
    arun(bare, lambda c: export_subject(c, kr, 'exa.porter@example.org', out, operator='dpo@test'))
    doc = json.loads(out.getvalue())
    sess = doc['sessions'][0]
    assert (sess['visitor_email'], sess['visitor_name']) == ('exa.porter@example.org', 'Exa Porter')
    assert sess['transcript'][0]['content'] == 'I am Exa Porter, exa.porter@example.org'
    assert [h['value'] for h in sess['contact_history']] == ['exa.porter@example.org', '+33 1 23 45 67 89']
    assert sess['leads'][0]['phone'] == '+33 1 23 45 67 89' and sess['handoff_outbox'][1]['changes'][0]['value'] == '+33 1 23 45 67 89'
    assert 'v1.' not in out.getvalue()                     # opened, not ciphertext
    arun(bare, lambda c: erase_subject(c, kr, 'exa.porter@example.org', operator='dpo@test'))
    assert q(bare, "SELECT count(*) AS n FROM sessions WHERE session_id = 'ex'")[0]['n'] == 0
    assert q(bare, "SELECT count(*) AS n FROM transcript WHERE session_id = 'ex'")[0]['n'] == 0
