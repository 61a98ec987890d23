"""The ops console (console/app.py) against real conversations: the API (offline model, embedded
PostgreSQL, MiniLM) runs scripted visitors over HTTP, its relay delivers the hand-offs to the CRM
table, then every page is driven with Streamlit's AppTest — auth refusal, filters and hostile
search input, the session detail, replay dry run and confirmed re-delivery, threshold moves,
the funnel — and finally `streamlit run` in a subprocess is visited with Chromium (Playwright,
Debian's /usr/bin/chromium): a screenshot of every page, and the visitor's HTML stays inert; the
staff session cookie (a reload keeps you signed in, the idle limit ends it, sign-out clears it, a
tampered cookie is refused), deep links through the sign-in, and a quiet terminal.

Screenshots go to pytest's tmp dir, or to $LEADCHAT_SCREENSHOT_DIR when set;
LEADCHAT_UPDATE_README_SCREENSHOT=1 also refreshes nbs/images/console.png and nbs/images/console-reload.png.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from streamlit.testing.v1 import AppTest

from apiserver import LiveServer
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.config import get_settings
from leadchat.console import SESSION_KEY, close_backends, get_backend
from leadchat.staff import COOKIE_NAME
from leadchat.staff import StaffSession, add_staff_user, set_disabled
from test_api import app_settings, turn

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / 'console' / 'app.py'
PAGES = ['pages/sessions.py', 'pages/session.py', 'pages/handoffs.py', 'pages/rag.py', 'pages/funnel.py', 'pages/privacy.py']
PASSWORD = 'correct horse battery staple'
HOSTILE = ('<img src=x onerror="window.__pwned=1"> **bold** [click](https://evil.example) '
           '![pixel](https://evil.example/p.png) <script>window.__pwned=2</script> I am the CTO at Evil <b>Corp</b>')
CONVERSATIONS = {
    'hot': ['Hi! What case studies do you have in fintech?',
            "We're building a RAG assistant over our support tickets. I'm the CTO of a 300-person payments company.",
            'You can reach me at ana@acme-pay.example'],
    'ask': ['Can I speak to someone?'],
    'competitor': ["We're also an AI consultancy and I'm curious how you staff your projects."],
    'referral': ["A friend at another company recommended you. We're a 500-person logistics operator."],
    'paella': ['Can you give me a good recipe for paella?'],
    'email': ["We're building an internal knowledge assistant with LLMs.", 'My email is bea.lopez@example.com'],
    'hostile': [HOSTILE],
}
EMAILS = ('ana@acme-pay.example', 'bea.lopez@example.com')


def wait_for(pred, timeout=60.0, what='condition'):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline: raise TimeoutError(f'{what} not reached within {timeout:g}s')
        time.sleep(0.2)


@pytest.fixture(scope='module')
def seeded(pg, tmp_path_factory):
    "Real conversations through the API; its relay delivers the hand-offs. Returns the database and the session ids."
    url = fresh_db(pg[1])
    sids = {name: str(uuid.uuid4()) for name in CONVERSATIONS}
    with LiveServer(create_app(app_settings(pg, url), knowledge_path=str(ROOT / 'knowledge'), relay_interval=0.2)) as srv:
        with srv.client() as c:
            for name, said in CONVERSATIONS.items():
                for msg in said:
                    status, _, done, err = turn(c, sids[name], msg)
                    assert status == 200 and err is None and done, (name, msg)
        def delivered():
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FILTER (WHERE status <> 'delivered'), count(*) FROM handoff_outbox").fetchone()
        wait_for(lambda: delivered()[0] == 0 and delivered()[1] >= 2, what='the relay delivering every hand-off')
    tmp = tmp_path_factory.mktemp('console')
    env = dict(DATABASE_URL=url, RAG_RELEVANCE_THRESHOLD='0.263', BUSINESS_HOURS_TIMEZONE='Europe/Madrid',
               HANDOFF_CHANNELS='crm', LEADCHAT_HOME=str(pg[0].leadchat_home),
               LEADCHAT_CONFIG_CHANGELOG=str(tmp / 'CONFIG_CHANGELOG.md'),
               LEADCHAT_CALIBRATION_QUERIES=str(ROOT / 'bench' / 'calibration' / 'queries.yaml'))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        get_settings.cache_clear()
        backend = get_backend(get_settings())
        backend.conn(add_staff_user, 'ana', PASSWORD, 'Ana Ruiz')
        yield dict(url=url, sids=sids, env=env, tmp=tmp, backend=backend)
        close_backends()


def q(url, sql, *args):
    with psycopg.connect(url, row_factory=dict_row) as c: return c.execute(sql, args).fetchall()


def app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=180)


def sign_in(at: AppTest, username='ana', password=PASSWORD) -> AppTest:
    at.text_input(key='sign_in_username').set_value(username)     # set_value: like a client that ignores max_chars
    at.text_input(key='sign_in_password').set_value(password)
    return at.button(key='FormSubmitter:staff_sign_in-Sign in').click().run()


def as_staff(page: str | None = None, username='ana') -> AppTest:
    "A console signed in as `username` (through the form), on `page`."
    at = sign_in(app().run(), username)
    assert not at.exception, at.exception
    if page: at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    "Every piece of text the page shows (markdown, text, captions, alerts, code, json, metrics, tables)."
    parts = [e.value for kind in ('markdown', 'text', 'caption', 'title', 'header', 'subheader', 'error', 'warning',
                                  'info', 'success', 'code', 'json') for e in getattr(at, kind)]
    parts += [f'{m.label} {m.value}' for m in at.metric]
    parts += [df.value.to_csv() for df in at.dataframe]
    return '\n'.join(map(str, parts))


def shows_no_data(at: AppTest, seeded) -> None:
    t = texts(at)
    assert not at.dataframe and not at.metric and not at.json and not at.get('plotly_chart')
    for secret in (*EMAILS, *seeded['sids'].values(), 'Acme', 'CTO'):
        assert secret not in t
    assert at.text_input(key='sign_in_password').proto.type == 1       # the sign-in form is what is shown


# --- access ----------------------------------------------------------------------------------------

def test_a_visitor_without_an_account_sees_only_the_sign_in(seeded):
    at = app().run()
    assert not at.exception
    assert at.title[0].value == 'leadchat ops console'
    shows_no_data(at, seeded)
    for page in PAGES:                                  # the pages are not even registered
        with pytest.raises(ValueError): at.switch_page(page)


@pytest.mark.parametrize('page', PAGES)
def test_every_page_refuses_an_unauthenticated_visitor(seeded, page):
    at = AppTest.from_file(str(ROOT / 'console' / page), default_timeout=180).run()    # the page as its own script
    assert not at.exception
    shows_no_data(at, seeded)
    # with a session in the state that is not a StaffSession (a forged value) — refused too
    for forged in ({'username': 'ana'}, 'ana', StaffSession('nobody', None, 'password', datetime.now(timezone.utc),
                                                            datetime.now(timezone.utc))):
        at.session_state[SESSION_KEY] = forged
        shows_no_data(at.run(), seeded)


def test_sign_in_wrong_then_right_then_sign_out(seeded):
    at = app().run()
    sign_in(at, 'ana', 'not the password')
    assert [e.value for e in at.error] == ['Wrong username or password.']
    shows_no_data(at, seeded)
    sign_in(at, "ana' OR '1'='1", "' OR '1'='1")
    assert [e.value for e in at.error] == ['Wrong username or password.']
    sign_in(at, 'x' * 50_000, 'y' * 50_000)
    assert [e.value for e in at.error] == ['Wrong username or password.']
    sign_in(at)
    assert not at.exception and at.title[0].value == 'Sessions'
    assert 'Signed in as Ana Ruiz' in [t.value for t in at.sidebar.text]
    at.sidebar.button(key='sign_out').click().run()
    assert at.title[0].value == 'leadchat ops console' and 'You are signed out.' in texts(at)
    shows_no_data(at, seeded)
    attempts = q(seeded['url'], 'SELECT reason FROM staff_login_attempts ORDER BY id')
    assert [a['reason'] for a in attempts][-4:] == ['bad_credentials', 'unknown_user', 'unknown_user', 'ok']
    assert [a['action'] for a in q(seeded['url'], 'SELECT action FROM staff_audit ORDER BY id')][-2:] == ['staff.login', 'staff.logout']


def test_expired_or_disabled_sessions_end(seeded):
    at = as_staff()
    s = at.session_state[SESSION_KEY]
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    at.session_state[SESSION_KEY] = StaffSession(s.username, s.display_name, s.method, old, old)
    at.run()
    assert 'Your session expired; sign in again.' in texts(at)
    shows_no_data(at, seeded)
    seeded['backend'].conn(add_staff_user, 'bob', PASSWORD)
    at = as_staff(username='bob')
    seeded['backend'].conn(set_disabled, 'bob')
    at.run()
    assert 'Your account is disabled.' in texts(at)
    shows_no_data(at, seeded)


def test_oidc_identity_is_let_in_only_when_it_is_staff(seeded):
    seeded['backend'].conn(add_staff_user, 'ops@example.com', None, oidc_only=True)
    at = app()
    at.secrets['auth'] = {'redirect_uri': 'http://127.0.0.1:8501/oauth2callback', 'cookie_secret': 'x' * 32,
                          'client_id': 'id', 'client_secret': 'secret',
                          'server_metadata_url': 'http://127.0.0.1:9/.well-known/openid-configuration'}
    at.user = {'is_logged_in': False}
    at.run()
    from streamlit.auth_util import is_authlib_installed
    if is_authlib_installed(): assert any('Sign in with' in b.label for b in at.button)      # the OIDC button is offered
    else: assert any('Authlib package is missing' in e.value for e in at.error)
    shows_no_data(at, seeded)
    at.user = {'is_logged_in': True, 'email': 'stranger@example.com', 'email_verified': True}
    at.run()
    assert 'not a leadchat staff user' in texts(at)
    shows_no_data(at, seeded)
    at = app()
    at.secrets['auth'] = {'cookie_secret': 'x' * 32, 'client_id': 'id'}
    at.user = {'is_logged_in': True, 'email': 'OPS@example.com', 'email_verified': True}
    at.run()
    assert not at.exception and at.title[0].value == 'Sessions'
    at.user = {'is_logged_in': True, 'email': 'ops@example.com', 'email_verified': False}    # unverified claim
    shows_no_data(at.run(), seeded)


# --- sessions ---------------------------------------------------------------------------------------

def table(at: AppTest, i: int = 0):
    return at.dataframe[i].value


def test_sessions_list_filters_and_search(seeded):
    at = as_staff()
    df = table(at)
    assert set(df['session']) == set(seeded['sids'].values())
    assert set(EMAILS) <= set(df['email'])
    assert list(df.columns)[:3] == ['email', 'lead', 'hand-off'] and list(df.columns)[-1] == 'session'   # who first, the UUID last
    at.selectbox(key='s_level').select('hot').run()
    assert list(table(at)['session']) == [seeded['sids']['hot']]
    at.selectbox(key='s_level').select('any')
    at.selectbox(key='s_reason').select('explicit_request').run()
    assert list(table(at)['session']) == [seeded['sids']['ask']]
    at.selectbox(key='s_reason').select('any')
    at.selectbox(key='s_stage').select(3).run()
    assert list(table(at)['session']) == [seeded['sids']['ask']]          # proposed on its last turn
    at.selectbox(key='s_stage').select('any')
    at.text_input(key='s_search').input(' ANA@ACME-PAY.EXAMPLE').run()          # a whole email, in any letter case
    assert list(table(at)['session']) == [seeded['sids']['hot']]
    at.text_input(key='s_search').input('ACME-PAY').run()                       # part of one: sealed at rest, not found
    assert 'No sessions match these filters.' in texts(at)
    last_month = date.today() - timedelta(days=60)
    at.text_input(key='s_search').input('')
    at.date_input(key='s_days').set_value((last_month, last_month + timedelta(days=5))).run()
    assert 'No sessions match these filters.' in texts(at) and not at.dataframe
    at.date_input(key='s_days').set_value((date.today(), date.today() - timedelta(days=5))).run()   # a hostile client
    assert not at.exception and any('Filter not applied' in e.value and 'reversed' in e.value for e in at.error)


@pytest.mark.parametrize('search', ["' OR 1=1 --", "'; DROP TABLE sessions; --", '%', '_', '\\', '%_%',
                                    'a\x00b', '\u202e\u200b', '<script>alert(1)</script>', '{{7*7}}', 'ü' * 200])
def test_hostile_search_finds_nothing_and_breaks_nothing(seeded, search):
    at = as_staff()
    at.text_input(key='s_search').set_value(search).run()
    assert not at.exception
    assert 'No sessions match these filters.' in texts(at)
    assert q(seeded['url'], 'SELECT count(*) AS n FROM sessions')[0]['n'] >= len(CONVERSATIONS)


def test_an_oversized_search_is_cut_by_the_widget_and_finds_nothing(seeded):
    at = as_staff()
    at.text_input(key='s_search').set_value('x' * 10_000).run()       # a client ignoring max_chars
    assert not at.exception and not at.dataframe
    assert len(at.text_input(key='s_search').value) == 200             # Streamlit enforces max_chars on the server
    assert 'No sessions match these filters.' in texts(at)             # (SessionQuery refuses more: 71_console)


def test_pagination_over_the_sessions_index(seeded):
    old = datetime(2025, 6, 2, 10, 0, tzinfo=timezone.utc)
    with psycopg.connect(seeded['url'], autocommit=True) as c:
        for i in range(30):
            c.execute("INSERT INTO sessions (session_id, created_at, last_updated_at, visitor_company) "
                      "VALUES (%s, %s, %s, 'Pagination Co')", [f'page-{i:02d}', old, old + timedelta(minutes=i)])
    at = as_staff()
    at.date_input(key='s_days').set_value((date(2025, 6, 1), date(2025, 6, 3))).run()
    assert len(table(at)) == 25 and 'page 1 of 2' in texts(at) and table(at)['session'][0] == 'page-29'
    at.pagination[0].set_value(2).run()
    assert list(table(at)['session']) == [f'page-{i:02d}' for i in range(4, -1, -1)] and 'page 2 of 2' in texts(at)
    at.selectbox(key='s_level').select('cold').run()          # a new filter starts again at page 1
    assert 'page 1 of 2' in texts(at)


# --- session detail ----------------------------------------------------------------------------------

def test_session_detail_from_the_sessions_page(seeded):
    at = as_staff()
    hot = seeded['sids']['hot']
    at.selectbox(key='s_open').select(hot)
    at.button(key='s_open_btn').click().run()
    assert not at.exception and at.title[0].value == 'Session detail'
    said = [t.value for t in at.text]
    assert all(m in said for m in CONVERSATIONS['hot'])                      # the full transcript
    assert [m.label for m in at.metric][:2] == ['Lead level', 'Stage'] and at.metric[0].value == 'hot'
    timeline = next(df for df in (d.value for d in at.dataframe) if 'evidence' in df.columns)
    assert list(timeline['turn']) == [1, 2, 3]
    assert timeline['authority'][0] == '·' and timeline['authority'][1] == 'confirmed'
    assert 'authority_fit → confirmed' in timeline['evidence'][1] and timeline['event'][1] == 'handoff_proposed'
    routing = next(df for df in (d.value for d in at.dataframe) if 'selected' in df.columns)     # why each turn went where it went
    assert list(routing['turn']) == [1, 2, 3] and routing['selected'][1] == 'hot_lead'
    assert routing['why'][1].startswith('hot lead: ') and 'score: explicit_request' in routing.columns
    events = next(df for df in (d.value for d in at.dataframe) if 'event' in df.columns and 'payload' in df.columns)
    assert 'handoff_delivered' in set(events['event']) and 'session_started' in set(events['event'])
    packet = json.loads(at.json[0].value)
    assert packet['session_id'] == hot and packet['lead_level'] == 'hot' and packet['handoff_reason'] == 'hot_lead'
    assert any(s.startswith(('🔥 Hot Lead — ', '📬 Lead captured (outside hours) — ')) for s in said)   # Slack header
    assert any('[HANDOFF FALLBACK]' not in c.value and 'visitor.company:' in c.value for c in at.code)
    assert at.get('plotly_chart')
    # Follow-through: every delivery the rep was sent, with its status
    sent = next(df for df in (d.value for d in at.dataframe) if 'channel' in df.columns and 'attempts' in df.columns)
    assert {'slack', 'crm'} <= set(sent['channel']) and 'Deliveries (every promise and what went out)' in texts(at)


def test_visitor_markup_is_shown_as_plain_text(seeded):
    at = as_staff('pages/session.py')
    at.text_input(key='d_sid').input(seeded['sids']['hostile']).run()
    assert not at.exception
    assert HOSTILE in [t.value for t in at.text]                              # verbatim, as text
    assert all('<img' not in m.value and 'evil.example' not in m.value for m in at.markdown)


@pytest.mark.parametrize('sid', ['no-such-session', "' OR 1=1 --", 'x' * 500, str(uuid.uuid4())])
def test_unknown_or_hostile_session_ids(seeded, sid):
    at = as_staff('pages/session.py')
    at.text_input(key='d_sid').set_value(sid).run()
    assert not at.exception
    assert 'There is no session with this id.' in texts(at) and not at.json


# --- hand-offs ---------------------------------------------------------------------------------------

def test_handoffs_replay_dry_run_then_confirmed_redelivery(seeded):
    url, hot = seeded['url'], seeded['sids']['hot']
    (item,) = q(url, "SELECT id FROM handoff_outbox WHERE session_id = %s AND kind = 'handoff'", hot)
    at = as_staff('pages/handoffs.py')
    df = table(at)
    row = df[df['id'] == item['id']].iloc[0]
    assert (row['status'], row['crm'], row['slack'], row['outcome']) == ('delivered', 'delivered', 'skipped', 'complete')
    at.selectbox(key='h_pick').select(item['id']).run()
    blocks, crm = json.loads(at.json[0].value), json.loads(at.json[1].value)
    assert blocks[0]['type'] == 'header' and blocks[0]['text']['text'].startswith(('🔥 Hot Lead', '📬 Lead captured'))
    assert '*Trigger:*\nhot_lead' in [f['text'] for f in blocks[1]['fields']]
    assert crm['lead']['session_id'] == hot and crm['lead']['source'] == 'website-chat'
    assert any('Subject: [HANDOFF FALLBACK] hot lead' in c.value for c in at.code)
    assert not any('Content-Transfer-Encoding' in c.value or '=?utf-8?' in c.value for c in at.code)   # decoded text
    assert list(df.columns)[:4] == ['id', 'visitor', 'lead', 'reason'] and list(df.columns)[-1] == 'session'
    records = lambda: q(url, "SELECT count(*) AS n FROM handoff_records WHERE session_id = %s", hot)[0]['n']
    leads = lambda: q(url, "SELECT count(*) AS n FROM leads WHERE session_id = %s", hot)[0]['n']
    before = (records(), leads())
    at.button(key='h_redeliver').click().run()                       # asks first; nothing sent yet
    assert any('Re-deliver hand-off' in w.value for w in at.warning) and (records(), leads()) == before
    at.button(key='h_no').click().run()
    assert (records(), leads()) == before and not at.warning
    at.button(key='h_redeliver').click().run()
    at.button(key='h_yes').click().run()
    assert not at.exception
    assert any(f"Hand-off #{item['id']} re-delivered: complete" in s.value for s in at.success)
    assert records() == before[0] + 3 and leads() == before[1] == 1     # new attempt records; still one lead
    (a,) = q(url, "SELECT username, detail FROM staff_audit WHERE action = 'handoff.redeliver'")
    assert a['username'] == 'ana' and a['detail']['outbox_id'] == item['id']
    at.selectbox(key='h_status').select('failed').run()
    assert 'No hand-offs match.' in texts(at)


def test_a_dead_letter_is_a_red_banner_with_a_one_click_replay(seeded):
    "The operator at 3 a.m.: a hand-off that never reached the CRM is the first thing on the page, and one click fixes it."
    url, hot = seeded['url'], seeded['sids']['hot']
    (item,) = q(url, "SELECT id FROM handoff_outbox WHERE session_id = %s AND kind = 'handoff'", hot)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("""UPDATE handoff_outbox SET status = 'failed', dead_lettered_at = now(), channel_status = '{}',
                     last_error = 'crm: connection refused' WHERE id = %s""", [item['id']])
    at = as_staff('pages/handoffs.py')
    assert not at.exception
    [banner] = [e.value for e in at.error]
    assert 'could not be delivered' in banner and 'only what did not arrive is sent' in banner
    assert any(f"#{item['id']}" in m.value and 'missing: **crm**' in m.value and 'connection refused' in m.value
               for m in at.markdown)
    assert table(at).set_index('id').loc[item['id'], 'next'].startswith('dead letter since')
    leads = q(url, "SELECT count(*) AS n FROM leads WHERE session_id = %s", hot)[0]['n']
    at.button(key=f"h_dead_{item['id']}").click().run()
    assert not at.exception and not at.error                         # the banner is gone
    assert any(f"Hand-off #{item['id']} re-delivered: complete" in s.value for s in at.success)
    (row,) = q(url, 'SELECT status, dead_lettered_at FROM handoff_outbox WHERE id = %s', item['id'])
    assert row['status'] == 'delivered' and row['dead_lettered_at'] is None
    assert q(url, "SELECT count(*) AS n FROM leads WHERE session_id = %s", hot)[0]['n'] == leads == 1
    (a,) = q(url, "SELECT detail FROM staff_audit WHERE action = 'handoff.redeliver' ORDER BY id DESC LIMIT 1")
    assert a['detail']['outbox_id'] == item['id']


# --- RAG tuning --------------------------------------------------------------------------------------

def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_rag_tuning_threshold_moves_changelog_and_try_a_query(seeded):
    at = as_staff('pages/rag.py')
    assert 'Run the calibration query set' in texts(at) or at.button(key='r_run')
    at.button(key='r_run').click().run()
    assert not at.exception
    rec = next(s.value for s in at.success if 'Recommended threshold' in s.value)
    assert at.slider(key='r_threshold').value == pytest.approx(0.263)
    mid_fp, mid_fn = metric(at, 'False positives'), metric(at, 'False negatives')
    at.slider(key='r_threshold').set_value(0.95).run()
    hi_fp, hi_fn = metric(at, 'False positives'), metric(at, 'False negatives')
    at.slider(key='r_threshold').set_value(0.0).run()
    lo_fp, lo_fn = metric(at, 'False positives'), metric(at, 'False negatives')
    n = lambda s: int(s.split()[0])
    assert n(hi_fp) == 0 and n(hi_fn) > n(mid_fn) and n(lo_fn) == 0 and n(lo_fp) > n(mid_fp)
    assert lo_fp.endswith('(100.0%)') and hi_fn.endswith('(100.0%)')
    fn_table = at.dataframe[1].value
    assert len(fn_table) == 0                                              # at 0.0 nothing is missed
    at.slider(key='r_threshold').set_value(0.3).run()
    at.button(key='r_write').click().run()
    log = Path(seeded['env']['LEADCHAT_CONFIG_CHANGELOG']).read_text()
    assert 'RAG_RELEVANCE_THRESHOLD = 0.300' in log and 'chosen in the ops console by ana' in log and rec
    assert q(seeded['url'], "SELECT detail FROM staff_audit WHERE action = 'config.changelog'")[0]['detail']['threshold'] == 0.3
    at.text_input(key='r_query').input('What case studies do you have in fintech?').run()
    chunks = at.dataframe[-1].value
    assert len(chunks) == 7 and chunks['passes'].iloc[0] and chunks['score'].is_monotonic_decreasing
    for hostile in ["' OR 1=1; DROP TABLE knowledge_chunks_minilm_l6_v2; --", 'email me at eve@example.com \x00']:
        at.text_input(key='r_query').set_value(hostile).run()
        assert not at.exception and len(at.dataframe[-1].value) == 7
    at.text_input(key='r_query').set_value('x' * 5000).run()          # cut to max_chars by Streamlit, still answered
    assert not at.exception and len(at.text_input(key='r_query').value) == 2000 and len(at.dataframe[-1].value) == 7


# --- funnel -------------------------------------------------------------------------------------------

def test_funnel_and_analytics(seeded):
    at = as_staff('pages/funnel.py')
    assert not at.exception
    n = {m.label: int(m.value) for m in at.metric}
    assert n['sessions'] == len(CONVERSATIONS)
    # each session counts in the furthest stage it reached and every stage before: 'ask' (one message, delivered)
    # counts as engaged, qualified, proposed and contacted too, so the funnel never widens
    assert n['delivered'] == 2 and n['contact captured'] == 3 and n['hand-off proposed'] == 3   # hot, ask (+ email)
    assert n['qualified'] == 4                                                # hot, referral, email, ask
    assert list(n.values()) == sorted(n.values(), reverse=True)
    failures = q(seeded['url'], "SELECT count(*) AS n FROM analytics_events WHERE event_type = ANY(%s)",
                 ['handoff_partial_failure', 'handoff_total_failure', 'rag_no_result', 'prompt_compliance_violation',
                  'state_extraction_failure', 'llm_generation_failure', 'stream_timeout', 'checkpointer_write_failure',
                  'booking_failed'])[0]['n']
    assert len(at.get('plotly_chart')) == 3 + bool(failures)
    assert bool(failures) != ('No failure events in this range.' in texts(at))
    sessions = as_staff()                                                      # the same window as Sessions by default
    assert at.date_input(key='f_days').value == sessions.date_input(key='s_days').value
    start, end = at.date_input(key='f_days').value
    assert end - start == timedelta(days=29)
    at.date_input(key='f_days').set_value((date(2020, 1, 1), date(2020, 1, 31))).run()   # nothing there: words, not axes
    assert not at.exception and not at.get('plotly_chart')
    assert 'No sessions started in this range' in texts(at) and 'No failure events in this range.' in texts(at)
    at.date_input(key='f_days').set_value((date.today(), date.today() - timedelta(days=3))).run()
    assert any('reversed' in e.value for e in at.error) and not at.get('plotly_chart')
    at.date_input(key='f_days').set_value((date(2020, 1, 1), date(2026, 1, 1))).run()
    assert any('longer than 366 days' in e.value for e in at.error)


# --- a real browser ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Console:
    "`streamlit run console/app.py` (as `make run` starts it) on a free loopback port; its terminal goes to `log`."
    def __init__(self, seeded, log: Path, env: dict | None = None, args: tuple = ()):
        self.port, self.log = free_port(), log
        self.url = f'http://127.0.0.1:{self.port}'
        env = {k: v for k, v in os.environ.items() if k not in ('LEADCHAT_ENV_FILE', 'LEADCHAT_CONSOLE_VERBOSE')} | seeded['env'] | (env or {})
        with open(log, 'wb') as out:
            self.proc = subprocess.Popen(
                [sys.executable, '-m', 'streamlit', 'run', str(APP), '--server.address', '127.0.0.1', '--server.port',
                 str(self.port), '--server.headless', 'true', '--browser.gatherUsageStats', 'false',
                 '--server.fileWatcherType', 'none', '--global.developmentMode', 'false', '--client.toolbarMode', 'viewer',
                 *(('--', *args) if args else ())], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try: wait_for(self.healthy, 60, 'streamlit health')
        except BaseException: self.stop(); raise

    def healthy(self) -> bool:
        if self.proc.poll() is not None: raise RuntimeError(f'streamlit exited: {self.terminal()[-2000:]}')
        try: return httpx.get(f'{self.url}/_stcore/health', timeout=2).status_code == 200
        except httpx.HTTPError: return False

    def terminal(self) -> str: return self.log.read_text(errors='replace')

    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(15)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(5)


@pytest.fixture(scope='module')
def console_server(seeded, tmp_path_factory):
    "The console with its default settings; stopped afterwards."
    c = Console(seeded, tmp_path_factory.mktemp('console-server') / 'terminal.log')
    try: yield c
    finally: c.stop()


CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']


@pytest.fixture(scope='module')
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        try: yield browser
        finally: browser.close()


def browser_sign_in(page, username='ana', password=PASSWORD, *, lands_on='Sessions'):
    page.get_by_role('textbox', name='Username').fill(username)
    page.get_by_role('textbox', name='Password').fill(password)
    page.get_by_role('button', name='Sign in').click()
    if lands_on: page.get_by_role('heading', name=lands_on).wait_for(timeout=60_000)


def staff_cookie(context) -> dict | None:
    return next((c for c in context.cookies() if c['name'] == COOKIE_NAME), None)


def signed_in(page, heading: str) -> None:
    "The page shows `heading` with the signed-in sidebar (not the sign-in form)."
    page.get_by_role('heading', name=heading).wait_for(timeout=60_000)
    page.get_by_role('button', name='Sign out').wait_for(timeout=30_000)
    assert page.get_by_role('textbox', name='Password').count() == 0


def test_every_page_in_chromium_with_screenshots(seeded, console_server, chromium, tmp_path):
    out = Path(os.environ.get('LEADCHAT_SCREENSHOT_DIR') or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    try:
        page = chromium.new_page(viewport={'width': 1440, 'height': 1000})
        dialogs, outside, titles = [], [], {}
        page.on('dialog', lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on('request', lambda r: outside.append(r.url) if not r.url.startswith(('http://127.0.0.1', 'data:', 'blob:')) else None)
        page.goto(console_server.url, wait_until='domcontentloaded')
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        assert page.get_by_role('link', name='Sessions').count() == 0
        for e in EMAILS: assert e not in page.content()
        page.screenshot(path=str(out / 'console-sign-in.png'))

        page.get_by_role('textbox', name='Username').fill('ana')
        page.get_by_role('textbox', name='Password').fill(PASSWORD)
        page.get_by_role('button', name='Sign in').click()
        page.get_by_role('heading', name='Sessions').wait_for(timeout=60_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / 'console-sessions.png'), full_page=True)

        def visit(link, heading, name, ready=None):
            page.get_by_role('link', name=link).click()
            page.get_by_role('heading', name=heading).wait_for(timeout=60_000)
            if ready: ready()
            page.wait_for_timeout(1500)           # let plotly finish drawing before the picture
            page.screenshot(path=str(out / f'console-{name}.png'), full_page=True)
            titles[link] = page.title()
            # text people need is in normal-contrast text, not st.caption (grey, 3.9:1 on white; WCAG asks 4.5:1)
            assert page.locator('[data-testid="stCaptionContainer"]').count() == 0, link

        def open_hostile():
            box = page.get_by_role('textbox', name='Session id')
            box.fill(seeded['sids']['hostile']); box.press('Enter')
            page.get_by_text('I am the CTO at Evil', exact=False).first.wait_for(timeout=30_000)
        visit('Session detail', 'Session detail', 'session-hostile', open_hostile)
        assert page.locator('img[src="x"]').count() == 0 and page.locator('a[href="https://evil.example"]').count() == 0
        assert page.evaluate('window.__pwned') is None and not dialogs

        def open_hot():
            box = page.get_by_role('textbox', name='Session id')
            box.fill(seeded['sids']['hot']); box.press('Enter')
            page.get_by_text('hot_lead', exact=True).first.wait_for(timeout=30_000)
        visit('Session detail', 'Session detail', 'session', open_hot)
        visit('Hand-offs', 'Hand-offs', 'handoffs', lambda: page.get_by_text('Dry run', exact=False).wait_for(timeout=30_000))

        def calibrate():
            page.get_by_role('button', name='Run the calibration query set').click()
            page.get_by_text('Recommended threshold', exact=False).wait_for(timeout=120_000)
        visit('RAG tuning', 'RAG threshold tuning', 'rag', calibrate)
        visit('Funnel', 'Funnel', 'funnel', lambda: page.locator('.js-plotly-plot').nth(2).wait_for(timeout=30_000))

        page.get_by_role('button', name='Sign out').click()
        page.get_by_role('textbox', name='Password').wait_for(timeout=30_000)
        assert 'ana@acme-pay.example' not in page.content()
    finally:
        page.close()
    assert titles == {'Session detail': 'Session detail · leadchat console', 'Hand-offs': 'Hand-offs · leadchat console',
                      'RAG tuning': 'RAG tuning · leadchat console', 'Funnel': 'Funnel · leadchat console'}   # a title each
    names = ['sign-in', 'sessions', 'session-hostile', 'session', 'handoffs', 'rag', 'funnel']
    for n in names: assert (out / f'console-{n}.png').stat().st_size > 10_000, n
    assert not outside, f'the console loaded something from outside: {outside[:5]}'
    if os.environ.get('LEADCHAT_UPDATE_README_SCREENSHOT') == '1':
        (ROOT / 'nbs' / 'images').mkdir(exist_ok=True)
        shutil.copy(out / 'console-funnel.png', ROOT / 'nbs' / 'images' / 'console.png')


def test_sign_in_limit_counts_the_browser_behind_a_trusted_proxy(monkeypatch):
    "The console's per-client sign-in limit keys on the visitor behind `LEADCHAT_TRUSTED_PROXIES`, never on a forged header."
    import types
    import leadchat.console as con
    from leadchat.config import Settings
    from streamlit.runtime.context import StreamlitHeaders

    def ctx(peer, headers):
        fake = types.SimpleNamespace(context=types.SimpleNamespace(ip_address=peer, headers=StreamlitHeaders(headers)))
        monkeypatch.setattr(con, '_st', lambda: fake)
    behind = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                      leadchat_trusted_proxies='10.0.0.0/8')
    plain = behind.model_copy(update={'leadchat_trusted_proxies': []})
    ctx('10.0.0.5', [('X-Forwarded-For', '203.0.113.9, 198.51.100.7')])
    assert con.client_id(behind) == '198.51.100.7'                    # the proxy's own hop, not the forged left part
    assert con.client_id(plain) == '10.0.0.5'                         # no trusted proxies: the peer
    ctx('192.0.2.44', [('X-Forwarded-For', '198.51.100.7')])
    assert con.client_id(behind) == '192.0.2.44'                      # an untrusted peer cannot pick its bucket
    ctx(None, [('X-Forwarded-For', '198.51.100.7')])
    assert con.client_id(behind.model_copy(update={'leadchat_trusted_proxies': ['127.0.0.1/32']})) == '198.51.100.7'


# --- staying signed in: the session cookie, in Chromium ---------------------------------------------------------------

def test_a_reload_keeps_staff_signed_in_until_sign_out(seeded, console_server, chromium, tmp_path):
    "A deep link survives the sign-in; a reload (a new Streamlit session) keeps the staff user signed in; sign-out ends it."
    hot = seeded['sids']['hot']
    ctx = chromium.new_context(viewport={'width': 1280, 'height': 800})
    try:
        page = ctx.new_page()
        page.goto(f'{console_server.url}/session?session={hot}')              # a deep link, before signing in
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        assert hot not in page.content() and page.title() == 'Sign in · leadchat console'
        browser_sign_in(page, lands_on=None)
        signed_in(page, 'Session detail')
        page.get_by_text('hot_lead', exact=True).first.wait_for(timeout=60_000)    # that session's page
        assert page.url == f'{console_server.url}/session?session={hot}'
        cookie = staff_cookie(ctx)
        assert cookie and cookie['httpOnly'] and cookie['sameSite'] == 'Strict' and cookie['path'] == '/'
        assert 'ana' not in cookie['value'] and COOKIE_NAME not in page.evaluate('document.cookie')   # scripts cannot read it

        page.reload()                                                            # the deep link, after a reload
        signed_in(page, 'Session detail')
        page.get_by_text('hot_lead', exact=True).first.wait_for(timeout=60_000)
        page.get_by_role('link', name='Sessions').click()
        signed_in(page, 'Sessions')
        page.reload()
        signed_in(page, 'Sessions')
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
        page.get_by_text('Signed in as Ana Ruiz').wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        shot = Path(os.environ.get('LEADCHAT_SCREENSHOT_DIR') or tmp_path) / 'console-reload.png'
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000 and page.viewport_size == {'width': 1280, 'height': 800}
        if os.environ.get('LEADCHAT_UPDATE_README_SCREENSHOT') == '1':
            shutil.copy(shot, ROOT / 'nbs' / 'images' / 'console-reload.png')

        old = dict(cookie)
        page.get_by_role('button', name='Sign out').click()
        page.get_by_role('textbox', name='Password').wait_for(timeout=30_000)
        page.get_by_text('You are signed out.').wait_for(timeout=30_000)
        assert staff_cookie(ctx) is None                                         # the browser forgot it
        page.reload()
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        ctx.add_cookies([{k: old[k] for k in ('name', 'value', 'domain', 'path', 'httpOnly', 'sameSite')}])
        page.goto(console_server.url)                                            # a copy kept from before: dead on the server
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        page.get_by_text('Your session expired; sign in again.').wait_for(timeout=30_000)
        assert page.get_by_role('button', name='Sign out').count() == 0
    finally: ctx.close()
    logins = [r['action'] for r in q(seeded['url'], "SELECT action FROM staff_audit WHERE action LIKE 'staff.log%%' ORDER BY id")]
    assert logins[-2:] == ['staff.login', 'staff.logout']                     # one sign-in for all the reloads


def test_a_tampered_cookie_is_refused(seeded, console_server, chromium):
    ctx = chromium.new_context()
    try:
        page = ctx.new_page()
        page.goto(console_server.url)
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        browser_sign_in(page)
        good = staff_cookie(ctx)
        token, sig = good['value'].rsplit('.', 1)
        forged = [token + '.' + ('A' if sig[0] != 'A' else 'B') + sig[1:],        # one character of the signature
                  token[:-1] + ('a' if token[-1] != 'a' else 'b') + '.' + sig,      # one character of the token
                  'x' * 43 + '.' + sig, token, '..', 'ana', '%00' * 40]
        for value in forged:
            other = chromium.new_context()
            try:
                other.add_cookies([{**{k: good[k] for k in ('name', 'domain', 'path', 'httpOnly', 'sameSite')}, 'value': value}])
                p2 = other.new_page()
                p2.goto(console_server.url)
                p2.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
                p2.get_by_text('Your sign-in could not be verified; sign in again.').wait_for(timeout=30_000)
                assert p2.get_by_role('button', name='Sign out').count() == 0
                for e in EMAILS: assert e not in p2.content()
            finally: other.close()
        page.reload()                                                            # the real one still works
        signed_in(page, 'Sessions')
    finally: ctx.close()
    assert 'console_cookie_refused' in console_server.terminal()               # a warning: on the terminal by default


def test_lockout_still_applies_in_the_browser(seeded, console_server, chromium):
    seeded['backend'].conn(add_staff_user, 'carl', PASSWORD)
    page = chromium.new_page()
    try:
        page.goto(console_server.url)
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        tries = lambda: q(seeded['url'], "SELECT count(*) AS n FROM staff_login_attempts WHERE username = 'carl'")[0]['n']
        for i in range(5):
            browser_sign_in(page, 'carl', f'not the password {i}', lands_on=None)
            wait_for(lambda: tries() == i + 1, 30, f'sign-in attempt {i + 1}')
            page.get_by_text('Wrong username or password.').wait_for(timeout=30_000)
        browser_sign_in(page, 'carl', PASSWORD, lands_on=None)
        page.get_by_text('Too many failed sign-in attempts', exact=False).wait_for(timeout=30_000)
        assert page.get_by_role('button', name='Sign out').count() == 0
    finally: page.close()
    reasons = [r['reason'] for r in q(seeded['url'], "SELECT reason FROM staff_login_attempts WHERE username = 'carl' ORDER BY id")]
    assert reasons == ['bad_credentials'] * 5 + ['locked']


def test_the_idle_limit_ends_a_session_and_v_brings_the_info_lines_back(seeded, chromium, tmp_path):
    "LEADCHAT_STAFF_SESSION_IDLE_MINUTES: a reload after the idle time finds the session ended. (`-- -v`: info lines.)"
    c = Console(seeded, tmp_path / 'terminal.log', env={'LEADCHAT_STAFF_SESSION_IDLE_MINUTES': '0.1'}, args=('-v',))
    try:
        ctx = chromium.new_context()
        page = ctx.new_page()
        page.goto(c.url)
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        browser_sign_in(page)
        page.reload()
        signed_in(page, 'Sessions')                                                # within 6 s: still signed in
        page.wait_for_timeout(8_000)                                               # idle past 6 s
        page.reload()
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        page.get_by_text('Your session expired; sign in again.').wait_for(timeout=30_000)
        assert page.get_by_role('button', name='Sign out').count() == 0
        ctx.close()
        assert 'staff_login' in c.terminal() and 'method=password' in c.terminal()      # -v: the info lines are back
    finally: c.stop()


def test_the_terminal_stays_quiet(console_server):
    "After every browser test above: no Streamlit context warnings, no per-action info lines, no progress bars."
    out = console_server.terminal()
    assert 'URL: http://127.0.0.1' in out                                       # it is the console's terminal
    assert 'missing ScriptRunContext' not in out
    assert '[info' not in out and 'staff_login ' not in out
    assert '%|' not in out and 'it/s]' not in out
