"""Issue 18 — returning visitors and their rights, end to end over real HTTP against PostgreSQL: PII encrypted at rest
(visitors and checkpoints), stitching, data-subject export and erasure proven by a scan of every table and every
decrypted checkpoint value, key rotation, and the issue's bad input."""
import asyncio
import io
import sys
import json
import tracemalloc
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from httpx_sse import connect_sse
from psycopg.rows import dict_row

from apiserver import LiveServer
from calendar_servers import SettableClock
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.config import Settings
from leadchat.db import create_pool, migrate
from leadchat.repos import open_session
from leadchat.privacy import (DataKey, DataKeyError, Keyring, PrivateSaver, check_data_key, encrypted_serializer, erase_subject, export_subject,
                              find_subject, find_traces, load_keyring, new_data_key, rotate_keys, stitch, visitor_history)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'bench'))
from orchestrator import NullModel, NullRetriever  # noqa: E402  (zero-cost model and retriever ports)

MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
CONSENT = {'notice_version': 'v1', 'acknowledged_at': '2026-03-02T09:59:00Z'}
TOKEN = 'staff-token-for-privacy-tests-0123456789'


def settings_for(home, url, **kw):
    return Settings(**{**dict(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                              leadchat_home=home, database_url=url, leadchat_rate_limit_ip_per_minute=10_000,
                              leadchat_rate_limit_session_per_minute=10_000), **kw})


@pytest.fixture(scope='module')
def api(pg, tmp_path_factory):
    url = fresh_db(pg[1])
    home = tmp_path_factory.mktemp('privacy-home')
    clock = SettableClock(MONDAY)
    s = settings_for(home, url, leadchat_admin_token=TOKEN)
    with LiveServer(create_app(s, clock=clock, knowledge_path=str(ROOT / 'knowledge'))) as srv:
        srv.db_url, srv.clock, srv.settings = url, clock, s
        srv.keyring = load_keyring(s)
        yield srv


def say(client, sid, message, **body):
    "One turn; returns (status, reply text or error JSON)."
    with connect_sse(client, 'POST', '/chat', json={'message': message, **body}, headers={'ZGC-Session-ID': sid}) as es:
        if es.response.status_code != 200:
            es.response.read()
            return es.response.status_code, es.response.json()
        text = ''.join(json.loads(ev.data)['content'] for ev in es.iter_sse() if ev.event == 'delta')
        return 200, text


def q(url, sql, params=()):
    with psycopg.connect(url, row_factory=dict_row) as c: return c.execute(sql, params).fetchall()


def arun(url, fn):
    "fn(conn) on a fresh async connection (autocommit, dict rows), run to completion."
    async def go():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as c: return await fn(c)
    return asyncio.run(go())


def converse(api, sid, email, name, phone, when):
    api.clock.now = when
    with api.client() as c:
        assert say(c, sid, 'We run claims triage by hand for 40 adjusters and it is slow.', consent=CONSENT)[0] == 200
        assert say(c, sid, f"I'm {name}, email {email}, phone {phone}")[0] == 200


# --- PII at rest ----------------------------------------------------------------------------------------------------

def test_a_returning_visitor_is_stitched_by_email_and_nothing_is_stored_in_clear_in_visitors_or_checkpoints(api):
    email, name, phone = 'nora.returning@example.org', 'Nora Quillfeather', '+44 20 7946 0811'
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    converse(api, first, email, name, phone, MONDAY)
    converse(api, second, email.upper(), name, phone, MONDAY + timedelta(days=7))     # same email, a week later
    links = q(api.db_url, 'SELECT session_id, visitor_id, linked_by FROM visitor_sessions WHERE session_id = ANY(%s)', [[first, second]])
    assert len(links) == 2 and len({r['visitor_id'] for r in links}) == 1
    hist = arun(api.db_url, lambda c: visitor_history(c, second, before=MONDAY + timedelta(days=8)))
    assert [h['session_id'] for h in hist] == [first] and hist[0]['problem_fit'] != 'not_detected'
    # the identities: ciphertext + blind index, never the value
    idents = q(api.db_url, "SELECT kind, value_enc, key_id FROM visitor_identities")
    assert {r['kind'] for r in idents} >= {'email', 'phone'}
    assert all(r['value_enc'].startswith(f"v1.{api.keyring.current.key_id}.") for r in idents)
    assert {api.keyring.decrypt(r['value_enc'], context=r['kind']) for r in idents} >= {email, '+442079460811'}
    # checkpoints: a plain search of the three tables finds nothing; opened with the key, the state is all there
    for table, col in [('checkpoints', 'checkpoint::text'), ('checkpoint_blobs', "encode(blob, 'escape')"),
                       ('checkpoint_writes', "encode(blob, 'escape')")]:
        assert q(api.db_url, f'SELECT count(*) AS n FROM {table} WHERE {col} ILIKE %s', ['%quillfeather%'])[0]['n'] == 0, table
    assert 'checkpoints(decrypted)' in arun(api.db_url, lambda c: find_traces(c, api.keyring, [email]))
    assert all('+aesgcm.' in r['type'] for r in q(api.db_url, 'SELECT DISTINCT type FROM checkpoint_blobs WHERE blob IS NOT NULL'))


def test_the_encrypted_saver_passes_langgraphs_conformance_suite(pg):
    from langgraph.checkpoint.conformance import checkpointer_test, validate
    keyring = Keyring(DataKey.parse(new_data_key()))

    @checkpointer_test(name='PrivateSaver')
    async def private_saver():
        url = fresh_db(pg[1])
        await migrate(url)
        p = await create_pool(url, max_size=4)
        yield PrivateSaver(p, keyring=keyring)
        await p.close()

    report = asyncio.run(validate(private_saver))
    assert report.passed_all(), report.results


# --- stitching ------------------------------------------------------------------------------------------------------

def test_the_widgets_visitor_id_links_sessions_only_with_chat_processing_consent(api):
    vid = str(uuid.uuid4())
    a, b, c_ = (str(uuid.uuid4()) for _ in range(3))
    with api.client() as c:
        assert say(c, a, 'What services do you offer?', visitor_id=vid)[0] == 200                     # no consent: not linked
        assert say(c, b, 'What services do you offer?', visitor_id=vid, consent=CONSENT)[0] == 200
        assert say(c, c_, 'Any case studies in insurance?', visitor_id=vid, consent=CONSENT)[0] == 200
        assert say(c, c_, 'And in logistics?', visitor_id=vid)[0] == 200           # idempotent: still one link
        status, err = say(c, str(uuid.uuid4()), 'hi', visitor_id='fingerprint-1234')
        assert status == 422 and err['error']['code'] == 'invalid_visitor_id'
    rows = q(api.db_url, 'SELECT session_id, visitor_id FROM visitor_sessions WHERE session_id = ANY(%s)', [[a, b, c_]])
    assert sorted(r['session_id'] for r in rows) == sorted([b, c_]) and len({r['visitor_id'] for r in rows}) == 1


def test_one_email_connecting_two_visitors_merges_them_and_the_merge_is_recorded(pg):
    url = fresh_db(pg[1]); asyncio.run(migrate(url))
    kr = Keyring(DataKey.parse(new_data_key()))
    browser = str(uuid.uuid4())

    async def go(c):
        for sid in ('s1', 's2', 's3'):
            await c.execute('INSERT INTO sessions (session_id) VALUES (%s)', [sid])
        one = await stitch(c, kr, 's1', email='mia@example.org', at=MONDAY)
        two = await stitch(c, kr, 's2', browser_id=browser, at=MONDAY + timedelta(days=1))
        assert one.created and two.created and one.visitor_id != two.visitor_id
        three = await stitch(c, kr, 's3', email='MIA@example.org ', browser_id=browser, at=MONDAY + timedelta(days=2))
        again = await stitch(c, kr, 's3', email='mia@example.org', browser_id=browser, at=MONDAY + timedelta(days=2))
        # mid-rotation (a new key, the old one still held): the same email finds its visitor, no second identity row
        rotated = Keyring(DataKey.parse(new_data_key()), previous=[kr.current])
        await c.execute("INSERT INTO sessions (session_id) VALUES ('s4')")
        four = await stitch(c, rotated, 's4', email='mia@example.org', at=MONDAY + timedelta(days=3))
        assert four.visitor_id == one.visitor_id and not four.created
        n = (await (await c.execute("SELECT count(*) AS n FROM visitor_identities WHERE kind = 'email'")).fetchone())['n']
        assert n == 1
        return one, two, three, again
    one, two, three, again = arun(url, go)
    assert three.visitor_id == one.visitor_id and three.merged == [two.visitor_id]        # the older visitor wins
    assert again.visitor_id == one.visitor_id and again.merged == [] and not again.created  # idempotent
    assert {r['visitor_id'] for r in q(url, 'SELECT visitor_id FROM visitor_sessions')} == {one.visitor_id}
    assert q(url, 'SELECT from_visitor, into_visitor FROM visitor_merges') == [{'from_visitor': two.visitor_id, 'into_visitor': one.visitor_id}]
    assert q(url, 'SELECT merged_into FROM visitors WHERE visitor_id = %s', [two.visitor_id])[0]['merged_into'] == one.visitor_id


def test_a_failed_stitch_is_its_own_and_the_turns_transaction_goes_on(pg):
    """The stitch runs inside the turn's transaction with no client savepoint (one round trip): a failure must roll back
    the stitch alone — raised as its psycopg error, nothing of it written — and the turn's rows before and after it
    commit."""
    from leadchat.privacy import join_visitor, update_link
    url = fresh_db(pg[1]); asyncio.run(migrate(url))
    kr = Keyring(DataKey.parse(new_data_key()))

    async def go(c):
        async with c.transaction():
            await c.execute("INSERT INTO sessions (session_id) VALUES ('kept')")
            # a session row that does not exist: the link's foreign key fails inside the function, after it created
            # the visitor and its identity — both must go with it
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match='SQLSTATE 23503'):
                await stitch(c, kr, 'no-such-session', email='ghost@example.org', at=MONDAY)
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS      # not aborted
            await c.execute("UPDATE sessions SET turn_count = 1 WHERE session_id = 'kept'")
            ok = await stitch(c, kr, 'kept', email='kept@example.org', at=MONDAY)
            # the widget's id joining a consented session, with no time to link it at: the link's NOT NULL fails
            await c.execute("INSERT INTO sessions (session_id) VALUES ('joined')")
            await c.execute("INSERT INTO consent_records (session_id, scope, granted_at, source) VALUES ('joined', 'chat_processing', now(), 'widget')")
            with pytest.raises(psycopg.errors.NotNullViolation, match='SQLSTATE 23502'):
                await join_visitor(c, kr, 'joined', ok.visitor_id, str(uuid.uuid4()), at=None)
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            # the link's update with a topic past its column's limit (a ciphertext over 2,000 characters): its CHECK fails
            long = type(kr)(kr.current)
            long.encrypt = lambda value, context: 'x' * 2001
            with pytest.raises(psycopg.errors.CheckViolation, match='SQLSTATE 23514'):
                await update_link(c, long, 'kept', carried_at=MONDAY, topic='claims triage')
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            await update_link(c, kr, 'kept', carried_at=MONDAY, topic='claims triage')
            return ok
    ok = arun(url, go)
    assert ok.created
    assert q(url, 'SELECT session_id, turn_count FROM sessions ORDER BY 1') == [{'session_id': 'joined', 'turn_count': 0},
                                                                           {'session_id': 'kept', 'turn_count': 1}]
    assert q(url, 'SELECT count(*) AS n FROM visitors')[0]['n'] == 1          # the failed stitch's visitor is gone
    assert q(url, 'SELECT session_id, carried_at FROM visitor_sessions') == [{'session_id': 'kept', 'carried_at': MONDAY}]
    assert q(url, "SELECT count(*) AS n FROM visitor_identities WHERE kind = 'email'")[0]['n'] == 1


# --- memory across sessions ----------------------------------------------------------------------------------------

def detail(api, sid):
    with api.client() as c:
        r = c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_visitor_back_a_week_later_is_welcomed_with_what_they_told_us_and_the_history_reaches_the_packet(api):
    from leadchat.packet import generate_context_packet
    from leadchat.state import SessionState
    vid, first, second = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    start = MONDAY + timedelta(days=35)
    api.clock.now = start
    with api.client() as c:
        assert say(c, first, 'We want to automate claims triage for our 40 adjusters.', visitor_id=vid, consent=CONSENT)[0] == 200
        assert say(c, first, "I'm the head of operations and I sign off on this budget. I'm Wren Okafor, wren.okafor@example.org",
                   visitor_id=vid)[0] == 200
    before = q(api.db_url, 'SELECT problem_fit, authority_fit, lead_level FROM sessions WHERE session_id = %s', [first])[0]
    assert before['problem_fit'] != 'not_detected' and before['authority_fit'] != 'not_detected'

    api.clock.now = start + timedelta(days=7)
    with api.client() as c:
        status, reply = say(c, second, 'Hi, do you also work with insurers in Spain?', visitor_id=vid, consent=CONSENT)
    assert status == 200 and reply.startswith('Welcome back — last time we talked about automating claims triage'), reply
    d = detail(api, second)
    st = SessionState.model_validate(d['state'])
    assert (st.qualification.problem_fit, st.qualification.authority_fit) == (before['problem_fit'], before['authority_fit'])
    assert st.visitor_email == 'wren.okafor@example.org' and st.visitor_name       # known: carried, not asked again
    assert [p['session_id'] for p in st.prior_sessions] == [first] and st.prior_sessions[0]['lead_level'] == before['lead_level']
    assert [h['session_id'] for h in d['visitor_history']] == [first]
    packet = generate_context_packet(st.model_copy(update={'handoff_reason': 'hot_lead'}))
    assert packet.history[0]['session_id'] == first and packet.history[0]['topic'] == 'automating claims triage'
    with api.client() as c: say(c, second, 'And in Portugal?', visitor_id=vid)
    assert q(api.db_url, 'SELECT count(*) AS n FROM visitor_sessions WHERE session_id = %s AND carried_at IS NOT NULL', [second])[0]['n'] == 1


def test_the_same_email_in_a_new_session_carries_the_earlier_qualification_from_the_next_turn(api):
    email = 'kofi.again@example.org'
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    api.clock.now = MONDAY + timedelta(days=50)
    with api.client() as c:
        assert say(c, first, 'We need to automate invoice matching; it costs us two people full time.')[0] == 200
        assert say(c, first, f'You can reach me at {email}')[0] == 200
    old = q(api.db_url, 'SELECT problem_fit FROM sessions WHERE session_id = %s', [first])[0]['problem_fit']
    assert old != 'not_detected'
    api.clock.now = MONDAY + timedelta(days=57)
    with api.client() as c:
        assert say(c, second, f'Hello, {email} here.')[0] == 200                # no widget id: linked by the email
        assert say(c, second, 'What does an engagement look like?')[0] == 200
    row = open_session(q(api.db_url, 'SELECT * FROM sessions WHERE session_id = %s', [second])[0], api.keyring)
    assert (row.problem_fit, row.visitor_email) == (old, email)
    assert [h['session_id'] for h in detail(api, second)['visitor_history']] == [first]


def test_the_history_goes_in_with_the_turns_own_checkpoint_and_a_lost_link_is_made_by_the_next_turn_without_carrying_twice(api):
    """Stitching off the turn's critical path (bench/privacy.py): the carry-over writes no checkpoint of its own (the
    history goes into the turn's input), what the first session was about is read from its link (encrypted), and when
    the carry turn's stitch step is lost — its link and mark — the next turn makes them without carrying twice."""
    from leadchat.state import SessionState
    vid, first, second, plain = (str(uuid.uuid4()) for _ in range(4))
    start = MONDAY + timedelta(days=70)
    api.clock.now = start
    with api.client() as c:
        assert say(c, first, 'We want to automate claims triage for our 40 adjusters.', visitor_id=vid, consent=CONSENT)[0] == 200
    topic = q(api.db_url, 'SELECT topic_enc FROM visitor_sessions WHERE session_id = %s', [first])[0]['topic_enc']
    assert 'claims' not in topic and api.keyring.decrypt(topic, context='topic') == 'automating claims triage'

    api.clock.now = start + timedelta(days=7)
    with api.client() as c:
        status, reply = say(c, second, 'Hi again, do you work in Spain?', visitor_id=vid, consent=CONSENT)
        assert status == 200 and reply.startswith('Welcome back — last time we talked about automating claims triage'), reply
        assert say(c, plain, 'Hi again, do you work in Spain?', consent=CONSENT)[0] == 200      # no visitor id: nothing carried
    checkpoints = lambda sid: q(api.db_url, 'SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s', [sid])[0]['n']
    assert checkpoints(second) == checkpoints(plain) > 0          # no checkpoint of its own before the turn's
    carried = lambda: q(api.db_url, 'SELECT carried_at FROM visitor_sessions WHERE session_id = %s', [second])
    assert carried() and carried()[0]['carried_at'] is not None

    with psycopg.connect(api.db_url, autocommit=True) as conn:     # as if the carry turn's stitch step had failed
        conn.execute('DELETE FROM visitor_sessions WHERE session_id = %s', [second])
    with api.client() as c:
        assert say(c, second, 'And in Portugal?', visitor_id=vid)[0] == 200
    st = SessionState.model_validate(detail(api, second)['state'])
    assert [p['session_id'] for p in st.prior_sessions] == [first]            # carried once: not again
    assert carried() and carried()[0]['carried_at'] is not None                # linked and marked by this turn
    assert [h['session_id'] for h in detail(api, second)['visitor_history']] == [first]


# --- export and erasure ---------------------------------------------------------------------------------------------

def test_export_then_erase_leaves_no_trace_anywhere(api):
    email, name, phone = 'otto.erasable@example.net', 'Otto Brightwater', '+49 30 901820 77'
    other = 'someone.else@example.net'
    sid, keep = str(uuid.uuid4()), str(uuid.uuid4())
    converse(api, sid, email, name, phone, MONDAY + timedelta(days=14))
    converse(api, keep, other, 'Sigrid Unrelated', '+33 1 70 36 39 50', MONDAY + timedelta(days=14))
    needles = [email, name, 'Brightwater', '3090182077']
    before = arun(api.db_url, lambda c: find_traces(c, api.keyring, needles))
    assert {'transcript.content_enc(decrypted)', 'sessions.visitor_email_enc(decrypted)',
            'contact_history.value_enc(decrypted)', 'checkpoints(decrypted)'} <= set(before)
    assert not [h for h in before if not h.endswith('(decrypted)')]          # sealed: no plain search finds them

    buf = io.StringIO()
    n = arun(api.db_url, lambda c: export_subject(c, api.keyring, email, buf, operator='dpo@test'))
    doc = json.loads(buf.getvalue())
    assert n.sessions == 1 and doc['sessions'][0]['session_id'] == sid and len(doc['sessions'][0]['transcript']) == 4
    assert email in doc['visitors'][0]['identities'][0]['value'] or any(i['value'] == email for v in doc['visitors'] for i in v['identities'])
    assert any(c_['scope'] == 'chat_processing' for c_ in doc['sessions'][0]['consents'])
    assert doc['sessions'][0]['analytics_events'] and doc['subject']['email'] == email

    dry = arun(api.db_url, lambda c: erase_subject(c, api.keyring, email, operator='dpo@test', dry_run=True))
    assert dry['transcript'] == 4 and arun(api.db_url, lambda c: find_traces(c, api.keyring, needles)) == before   # dry: nothing gone
    counts = arun(api.db_url, lambda c: erase_subject(c, api.keyring, email, operator='dpo@test'))
    assert counts == dry and counts['sessions'] == 1 and counts['checkpoints'] > 0 and counts['visitors'] == 1
    assert arun(api.db_url, lambda c: find_traces(c, api.keyring, needles)) == []
    assert arun(api.db_url, lambda c: find_traces(c, api.keyring, [other])) != []          # nobody else's data went
    log = q(api.db_url, 'SELECT kind, identity_hash, operator FROM privacy_requests ORDER BY id')
    assert [r['kind'] for r in log][-3:] == ['export', 'erase_dry_run', 'erase'] and log[-1]['operator'] == 'dpo@test'
    assert len({r['identity_hash'] for r in log[-3:]}) == 1
    with api.client() as c: assert say(c, sid, 'Hello again?')[0] == 200     # the session id starts afresh, nothing restored
    assert q(api.db_url, 'SELECT turn_count, visitor_email_enc FROM sessions WHERE session_id = %s', [sid]) == [{'turn_count': 1, 'visitor_email_enc': None}]


def test_a_booking_is_anonymised_not_deleted_the_slot_stays_taken(api):
    sid, email, booking = str(uuid.uuid4()), 'booked.person@example.org', uuid.uuid4()
    converse(api, sid, email, 'Bram Bookwell', '+32 2 555 01 23', MONDAY + timedelta(days=120))
    start = MONDAY + timedelta(days=125)
    q(api.db_url, """INSERT INTO calendar_bookings (id, rep, meeting_type, start_at, end_at, status, hold_token_hash, session_id,
                                                    visitor_name, visitor_email, visitor_tz, notes, provider, client_hash)
                     VALUES (%s, 'ana', 'intro', %s, %s, 'confirmed', '\\x00', %s, 'Bram Bookwell', %s, 'Europe/Brussels',
                             'Bram wants to talk about claims', 'none', '\\x01') RETURNING id""",
      [booking, start, start + timedelta(minutes=30), sid, email])
    q(api.db_url, """INSERT INTO idempotency_keys (scope, key, request_hash, status, response_body, booking_id)
                     VALUES ('book', %s, 'h', 'completed', %s, %s) RETURNING key""",
      [str(uuid.uuid4()), json.dumps({'attendee': {'name': 'Bram Bookwell', 'email': email}}), booking])
    buf = io.StringIO()
    arun(api.db_url, lambda c: export_subject(c, api.keyring, email, buf, operator='dpo@test'))
    assert [b['visitor_email'] for b in json.loads(buf.getvalue())['bookings']] == [email]
    counts = arun(api.db_url, lambda c: erase_subject(c, api.keyring, email, operator='dpo@test'))
    assert counts['calendar_bookings'] == 1 and counts['idempotency_keys'] == 1
    row = q(api.db_url, 'SELECT status, start_at, visitor_name, visitor_email, notes, session_id FROM calendar_bookings WHERE id = %s', [booking])
    assert row == [{'status': 'confirmed', 'start_at': start, 'visitor_name': None, 'visitor_email': None, 'notes': None, 'session_id': None}]
    assert arun(api.db_url, lambda c: find_traces(c, api.keyring, [email, 'Bookwell', '3225550123'])) == []


def done_of(client, sid, message, **body):
    with connect_sse(client, 'POST', '/chat', json={'message': message, **body}, headers={'ZGC-Session-ID': sid}) as es:
        return next(json.loads(ev.data) for ev in es.iter_sse() if ev.event == 'done')


def test_after_erasure_the_widgets_visitor_id_is_never_linked_again_and_the_widget_is_told_to_rotate_it(api):
    vid, email = str(uuid.uuid4()), 'gone.for.good@example.org'
    first, later = str(uuid.uuid4()), str(uuid.uuid4())
    api.clock.now = MONDAY + timedelta(days=70)
    with api.client() as c:
        assert 'visitor' not in done_of(c, first, 'We want to automate claims triage.', visitor_id=vid, consent=CONSENT)
        assert 'visitor' not in done_of(c, first, f'Mail me at {email}', visitor_id=vid)
    counts = arun(api.db_url, lambda c: erase_subject(c, api.keyring, email, operator='dpo@test'))
    assert counts['erased_visitor_ids'] == 1 and counts['sessions'] == 1
    with api.client() as c:
        d = done_of(c, later, 'Hi, I am back', visitor_id=vid, consent=CONSENT)
    assert d['visitor'] == 'rotate'
    assert q(api.db_url, 'SELECT count(*) AS n FROM visitor_sessions WHERE session_id = %s', [later])[0]['n'] == 0
    assert arun(api.db_url, lambda c: find_traces(c, api.keyring, [email, vid])) == []     # the raw id is nowhere either


# --- bad input ------------------------------------------------------------------------------------------------------

def test_erasing_an_unknown_email_changes_nothing_and_is_logged(api):
    total = lambda: q(api.db_url, 'SELECT (SELECT count(*) FROM sessions) + (SELECT count(*) FROM transcript) AS n')[0]['n']
    n0 = total()
    counts = arun(api.db_url, lambda c: erase_subject(c, api.keyring, 'nobody.at.all@example.org', operator='dpo@test'))
    assert set(counts.values()) == {0} and total() == n0
    assert q(api.db_url, 'SELECT kind FROM privacy_requests ORDER BY id DESC LIMIT 1') == [{'kind': 'erase'}]
    with pytest.raises(ValueError, match='not an email'):
        arun(api.db_url, lambda c: erase_subject(c, api.keyring, "x' OR 1=1 --", operator='dpo@test'))


def test_an_email_that_appears_only_in_a_transcript_is_found_and_erased(api):
    sid, email = str(uuid.uuid4()), 'only.typed@example.org'
    with api.client() as c: assert say(c, sid, 'What services do you offer?')[0] == 200
    # a line the extractor never read as contact details (an older transcript, a quoted signature): only the text has it
    q(api.db_url, "INSERT INTO transcript (session_id, turn_index, role, content) VALUES (%s, 2, 'user', %s) RETURNING id",
      [sid, f'forwarding: "Only Typed" <{email.upper()}>'])
    assert q(api.db_url, 'SELECT count(*) AS n FROM sessions WHERE visitor_email IS NOT NULL AND session_id = %s', [sid])[0]['n'] == 0
    s = arun(api.db_url, lambda c: find_subject(c, api.keyring, email))
    assert s.session_ids == [sid] and not s.visitor_ids
    arun(api.db_url, lambda c: erase_subject(c, api.keyring, email, operator='dpo@test'))
    assert arun(api.db_url, lambda c: find_traces(c, api.keyring, [email])) == []


def test_two_concurrent_erasures_of_one_visitor_both_finish_and_the_second_finds_nothing(api):
    sid, email = str(uuid.uuid4()), 'twice.erased@example.org'
    converse(api, sid, email, 'Tove Twice', '+46 8 123 456 78', MONDAY + timedelta(days=21))

    async def both():
        async def one():
            async with await psycopg.AsyncConnection.connect(api.db_url, autocommit=True, row_factory=dict_row) as c:
                return await erase_subject(c, api.keyring, email, operator='dpo@test')
        return await asyncio.gather(one(), one())
    a, b = asyncio.run(both())
    assert sorted([a['sessions'], b['sessions']]) == [0, 1]
    assert arun(api.db_url, lambda c: find_traces(c, api.keyring, [email, 'Tove Twice'])) == []


def test_an_export_of_10000_turns_streams_in_bounded_memory(pg):
    url = fresh_db(pg[1]); asyncio.run(migrate(url))
    kr = Keyring(DataKey.parse(new_data_key()))
    filler = 'x' * 2000
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO sessions (session_id, visitor_email) VALUES ('long', 'long.talker@example.org')")
        with c.cursor().copy('COPY transcript (session_id, turn_index, role, content) FROM STDIN') as cp:
            for i in range(10_000): cp.write_row(('long', i // 2, 'user' if i % 2 == 0 else 'assistant', f'{i} {filler}'))

    class Sink(io.TextIOBase):
        size = 0
        def write(self, s): self.size += len(s); return len(s)
    sink = Sink()
    tracemalloc.start()
    n = arun(url, lambda c: export_subject(c, kr, 'long.talker@example.org', sink, operator='dpo@test'))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n.transcript == 10_000 and sink.size > 20_000_000
    assert peak < 5_000_000, f'peak {peak / 1e6:.1f} MB for a 20 MB transcript: not streamed'


def test_a_wrong_or_missing_key_at_start_up_is_a_clear_error_and_nothing_is_decrypted(api, tmp_path, monkeypatch):
    wrong = new_data_key()
    bad = settings_for(tmp_path, api.db_url)
    monkeypatch.setenv('LEADCHAT_DATA_KEY', wrong)
    from leadchat.service import prepare
    with pytest.raises(DataKeyError, match=f'but LEADCHAT_DATA_KEY is key id {DataKey.parse(wrong).key_id}'):
        asyncio.run(prepare(bad, knowledge_path=''))
    monkeypatch.setenv('LEADCHAT_DATA_KEY', 'not-a-key')
    with pytest.raises(DataKeyError, match='LEADCHAT_DATA_KEY must be 32 random bytes'): load_keyring(bad)
    monkeypatch.delenv('LEADCHAT_DATA_KEY')
    production = settings_for(tmp_path, api.db_url, leadchat_profile='production')     # a setting (env file or environment)
    with pytest.raises(DataKeyError, match='production profile refuses to start'): load_keyring(production)
    assert not (tmp_path / 'data.key').exists()        # production never generates a key
    # the CLI says the same and exits 2
    from typer.testing import CliRunner
    from leadchat.privacy import privacy_app
    r = CliRunner().invoke(privacy_app, ['erase', 'someone@example.org'], env={'LEADCHAT_PROFILE': 'production',
                           'RAG_RELEVANCE_THRESHOLD': '0.3', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
                           'LEADCHAT_HOME': str(tmp_path), 'DATABASE_URL': api.db_url})
    assert r.exit_code == 2 and 'refuses to start' in r.output


def test_a_wrong_key_is_caught_by_the_checkpoints_alone_before_any_visitor_was_stored(pg):
    url = fresh_db(pg[1]); asyncio.run(migrate(url))
    a, b = Keyring(DataKey.parse(new_data_key())), Keyring(DataKey.parse(new_data_key()))
    typ, data = encrypted_serializer(a).dumps_typed({'x': 1})
    q(url, "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) VALUES ('t', '', 'c', '1', %s, %s) RETURNING 1", [typ, data])
    arun(url, lambda c: _strict(c, a))                                          # the right key: fine
    with pytest.raises(DataKeyError, match=f'key id\\(s\\) {a.current.key_id}'): arun(url, lambda c: _strict(c, b))


def test_rotation_moves_everything_to_the_new_key_while_both_are_held(api, monkeypatch):
    sid, email = str(uuid.uuid4()), 'rota.tion@example.org'
    converse(api, sid, email, 'Rhea Rotation', '+34 612 345 678', MONDAY + timedelta(days=28))
    old = api.keyring
    new = Keyring(DataKey.parse(new_data_key()), previous=[old.current])

    async def go():
        p = await create_pool(api.db_url, max_size=2)
        try: return await rotate_keys(p, new, batch=3)         # small batches: several transactions per table
        finally: await p.close()
    done = asyncio.run(go())
    assert done['visitor_identities'] > 0 and done['checkpoint_blobs'] > 0 and done['checkpoints'] > 0
    assert {r['key_id'] for r in q(api.db_url, 'SELECT key_id FROM visitor_identities')} == {new.current.key_id}
    assert all(f'+aesgcm.{new.current.key_id}' in r['type'] for r in q(api.db_url, "SELECT DISTINCT type FROM checkpoint_blobs WHERE blob IS NOT NULL"))
    only_new = Keyring(new.current)
    arun(api.db_url, lambda c: _strict(c, only_new))                                # nothing is left under the old key
    assert arun(api.db_url, lambda c: find_subject(c, only_new, email)).session_ids == [sid]
    assert 'checkpoints(decrypted)' in arun(api.db_url, lambda c: find_traces(c, only_new, [email]))
    with pytest.raises(DataKeyError, match='encrypted under key id'): arun(api.db_url, lambda c: _strict(c, old))    # old key alone: refused
    # put the service's key back for the other tests (rotate back)
    back = Keyring(old.current, previous=[new.current])
    async def undo():
        p = await create_pool(api.db_url, max_size=2)
        try: await rotate_keys(p, back)
        finally: await p.close()
    asyncio.run(undo())


async def _strict(conn, keyring):
    "check_data_key as it runs with an explicitly set LEADCHAT_DATA_KEY (strict, not the demo's warning)."
    import os
    os.environ['LEADCHAT_DATA_KEY'] = new_data_key()
    try: await check_data_key(conn, keyring, Settings(rag_relevance_threshold=0.3, business_hours_timezone='Europe/Madrid', handoff_channels='crm'))
    finally: del os.environ['LEADCHAT_DATA_KEY']


# --- no PII in logs or analytics (item 5) ---------------------------------------------------------------------------

def test_the_scenario_suite_with_distinctive_pii_leaves_none_in_any_log_line_or_analytics_event(api, capfd, caplog):
    import logging
    import yaml
    scenarios = yaml.safe_load((Path(__file__).parent / 'scenarios' / 'conversations.yaml').read_text())
    caplog.set_level(logging.INFO)          # the service logs at INFO (DEBUG would show the stream itself)
    api.clock.now = MONDAY + timedelta(days=90)
    people = []
    with api.client() as c:
        for i, sc in enumerate(scenarios):
            name, email, phone = f'Zebulon Quartermaine{chr(65 + i % 26)}x', f'zq.probe{i}@pii-probe.example', f'+44 20 7946 {1000 + i}'
            people.append((name, email, phone))
            sid = str(uuid.uuid4())
            for t in sc['turns'][:4]:
                say(c, sid, t['say'], consent=CONSENT)
            say(c, sid, f"I'm {name}, my email is {email} and my phone is {phone}", visitor_id=str(uuid.uuid4()))
            say(c, sid, 'Thanks, that is all for now.')
    out, err = capfd.readouterr()
    lines = (out + err).splitlines() + [r.getMessage() for r in caplog.records]
    needles = [x.lower() for p in people for x in (p[0], p[1], p[2].replace(' ', ''), p[2])] + ['quartermaine', 'pii-probe']
    leaked = [l for l in lines if any(n in l.lower() for n in needles)]
    assert lines and not leaked, leaked[:5]
    rows = q(api.db_url, 'SELECT event_type, payload::text AS p FROM analytics_events')
    assert rows and not [r for r in rows if any(n in r['p'].lower() for n in needles)]
    # and the data is there where it belongs (the test can fail): the sessions hold the emails (sealed: opened with the key)
    emails = [open_session(r, api.keyring).visitor_email or '' for r in q(api.db_url, 'SELECT * FROM sessions')]
    assert sum(e.endswith('@pii-probe.example') for e in emails) >= len(scenarios) // 2


# --- the command line -----------------------------------------------------------------------------------------------

def test_the_cli_exports_to_a_file_erases_after_a_dry_run_and_refuses_what_is_not_an_email(api, tmp_path):
    from typer.testing import CliRunner
    from leadchat.privacy import privacy_app
    sid, email = str(uuid.uuid4()), 'cli.subject@example.org'
    converse(api, sid, email, 'Cleo Commandline', '+31 20 555 0199', MONDAY + timedelta(days=100))
    env = {'RAG_RELEVANCE_THRESHOLD': '0.263', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid', 'HANDOFF_CHANNELS': 'crm',
           'LEADCHAT_HOME': str(api.settings.leadchat_home), 'DATABASE_URL': api.db_url, 'COLUMNS': '300'}
    run = lambda *args: CliRunner().invoke(privacy_app, list(args), env=env)
    r = run('export', email, '--output', str(tmp_path / 'subject.json'), '--operator', 'dpo@cli')
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / 'subject.json').read_text())
    assert [s['session_id'] for s in doc['sessions']] == [sid] and not (tmp_path / 'subject.json.partial').exists()
    r = run('export', email)                                     # to stdout: the JSON alone (log lines go to stderr)
    assert r.exit_code == 0 and json.loads(r.stdout)['subject']['email'] == email and 'privacy_request' in r.stderr
    r = run('erase', email, '--dry-run', '--operator', 'dpo@cli')
    assert r.exit_code == 0 and r.stdout.startswith('would erase: ') and 'sessions 1' in r.stdout
    assert q(api.db_url, 'SELECT count(*) AS n FROM sessions WHERE session_id = %s', [sid])[0]['n'] == 1
    r = run('erase', email, '--operator', 'dpo@cli')
    assert r.exit_code == 0 and r.stdout.startswith('erased: ') and 'checkpoints' in r.stdout
    assert run('erase', email).stdout.strip() == 'erased: nothing held about this email'
    assert arun(api.db_url, lambda c: find_traces(c, api.keyring, [email, 'Commandline', '31205550199'])) == []
    r = run('erase', "'; DROP TABLE sessions; --")
    assert r.exit_code == 2 and 'is not an email address' in r.output
    assert q(api.db_url, "SELECT operator FROM privacy_requests WHERE operator = 'dpo@cli'") == [{'operator': 'dpo@cli'}] * 3
    r = run('rotate-key')
    assert r.exit_code == 0 and r.stdout.startswith('re-encrypted: visitor_identities 0')     # all under the current key already
    assert len(run('new-key').stdout.strip()) == 44
    from leadchat.config import get_settings
    get_settings.cache_clear()                          # the commands above read (and cached) the good configuration
    r = CliRunner().invoke(privacy_app, ['export', email], env={**env, 'BUSINESS_HOURS_TIMEZONE': 'Mars/Olympus_Mons'})
    assert r.exit_code == 2 and 'BUSINESS_HOURS_TIMEZONE' in r.stderr         # a configuration error, not a traceback


# --- the widget in Chromium -----------------------------------------------------------------------------------------

def test_in_chromium_the_visitor_id_appears_only_after_the_notice_and_a_returning_visitor_is_welcomed_back(api):
    import re
    from playwright.sync_api import expect, sync_playwright
    from test_widget import CHROMIUM_ARGS, UUID4, assistant_messages, composer, launcher, send
    api.clock.now = MONDAY + timedelta(days=140)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(timezone_id='Europe/Madrid')
            page = ctx.new_page()
            page.goto(api.url + '/')
            launcher(page).click()
            assert page.evaluate('localStorage.getItem("growth_chat_visitor_id")') is None      # before the notice: nothing
            page.locator('growth-chat .gc-gdpr-ack').click()
            send(page, 'We want to automate claims triage for our adjusters.')
            expect(assistant_messages(page).first).not_to_be_empty(timeout=30_000)
            expect(page.locator('growth-chat .gc-viewport')).to_have_attribute('aria-busy', 'false', timeout=30_000)
            vid = page.evaluate('localStorage.getItem("growth_chat_visitor_id")')
            assert vid and UUID4.match(vid)
            linked = q(api.db_url, "SELECT session_id FROM visitor_sessions WHERE linked_by = 'browser' AND linked_at >= %s", [api.clock.now])
            assert len(linked) == 1
            api.clock.now += timedelta(days=7)                  # a week later, a new tab on the same site
            page2 = ctx.new_page()
            page2.goto(api.url + '/')
            launcher(page2).click()
            page2.locator('growth-chat .gc-gdpr-ack').click()
            send(page2, 'Do you also work with insurers in Spain?')
            expect(assistant_messages(page2).first.locator('.gc-text')).to_contain_text(re.compile('^Welcome back — last time we talked about automating claims triage'),
                                                                    timeout=30_000)
            assert page2.evaluate('localStorage.getItem("growth_chat_visitor_id")') == vid
            ctx.close()
        finally: browser.close()


def test_the_console_reads_the_encrypted_checkpoints_the_service_wrote(api):
    "The ops console's session page decrypts what the chat service stored (the saver with the data key, not the plain one)."
    from leadchat.console import ConsoleBackend, load_session
    sid = str(uuid.uuid4())
    converse(api, sid, 'console.reader@example.com', 'Rowan Reader', '+34 611 222 333', MONDAY)
    backend = ConsoleBackend(api.settings)
    try:
        d = backend.run(load_session(backend.pool, backend.graph, sid))
        assert d is not None and d.state is not None, 'the console could not read the session state'
        assert d.state.visitor_email == 'console.reader@example.com'
        assert d.state.qualification.problem_fit != 'not_detected'
    finally: backend.close()


# --- the turn's visitor lookup, made with the lease ----------------------------------------------------------------

def test_the_visitor_lookup_goes_with_the_lease_a_refused_lease_leaves_nothing_and_a_failed_lookup_fails_no_turn(pg, tmp_path, monkeypatch, capfd):
    from leadchat import service as service_mod
    from leadchat.db import open_database
    from leadchat.privacy import turn_visitor
    from leadchat.service import ChatService, TurnInProgress
    url = fresh_db(pg[1])
    s = settings_for(tmp_path, url, leadchat_data_key=new_data_key())
    asyncio.run(migrate(url, s))
    browser, now = str(uuid.uuid4()), [MONDAY]

    async def go():
        db = await open_database(s, max_size=6)
        svc = ChatService(s, db, model=NullModel(), retriever=NullRetriever(), clock=lambda: now[0])    # zero-cost ports (bench/orchestrator.py)
        try:
            async for _ in svc.turn('first', 'Hello', consent=CONSENT, visitor_id=browser): pass
            # a second session of the same widget id, an hour later: the lookup made with the lease is the one carry_over
            # would make
            now[0] = MONDAY + timedelta(hours=1)
            lease = await svc.begin('second', visitor=(browser, CONSENT))
            (args, found) = lease.looked_up
            own = await turn_visitor(lease.conn, svc.keyring, 'second', browser, consent=True, before=now[0])
            assert args == (browser, True) and found == own and found.has_prior and not found.linked
            # the same session again while the lease is held: refused, and the lookup it made left nothing behind
            with pytest.raises(TurnInProgress): await svc.begin('second', visitor=(browser, CONSENT))
            async for _ in svc.stream('second', 'Hello again', lease, consent=CONSENT, visitor_id=browser): pass
            assert [r['session_id'] for r in await rows(db, 'SELECT session_id FROM visitor_sessions ORDER BY 1')] == ['first', 'second']
            state = (await svc.graph.aget_state({'configurable': {'thread_id': 'second'}})).values
            assert [p['session_id'] for p in state['prior_sessions']] == ['first']      # carried, from the lease's lookup
            # begun without the visitor (or with another widget id than the turn's): the turn looks it up itself
            lease = await svc.begin('third')
            assert lease.looked_up is None
            async for _ in svc.stream('third', 'Hi', lease, consent=CONSENT, visitor_id=browser): pass
            assert (await svc.graph.aget_state({'configurable': {'thread_id': 'third'}})).values['prior_sessions']
            # a lookup that fails with the lease fails neither the lease nor the turn: logged, the turn goes on without it
            async def broken(conn, *a, **kw): return await conn.execute('SELECT 1 / 0 AS x')
            monkeypatch.setattr(service_mod, 'send_turn_visitor', broken)
            lease = await svc.begin('fourth', visitor=(browser, CONSENT))
            assert lease.looked_up == ((browser, True), None)
            with pytest.raises(TurnInProgress): await svc.begin('fourth')        # the lock is held all the same
            async for _ in svc.stream('fourth', 'Hi', lease, consent=CONSENT, visitor_id=browser): pass
            assert (await rows(db, "SELECT count(*) AS n FROM transcript WHERE session_id = 'fourth'"))[0]['n'] == 2
            assert not await rows(db, "SELECT 1 FROM visitor_sessions WHERE session_id = 'fourth'")      # not linked this turn
        finally:
            await db.close()

    async def rows(db, sql):
        async with db.pool.connection() as c: return await (await c.execute(sql)).fetchall()

    asyncio.run(go())
    out, err = capfd.readouterr()
    assert 'visitor_memory_failure' in out + err and 'DivisionByZero' in out + err
