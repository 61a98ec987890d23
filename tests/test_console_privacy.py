"""Issue 18 in the ops console: the admin-only Privacy requests page (look up what is held about an email, export it,
erase it behind a typed confirmation) and a returning visitor's history on the Session detail page — against real
conversations run through the API (offline model, embedded PostgreSQL, a settable clock). Streamlit's AppTest drives
the bad input (malformed, oversized, hostile and unknown emails, a wrong confirmation, an erasure submitted twice);
`streamlit run` visited with Chromium (Debian's /usr/bin/chromium) shows an admin the page and its round trip — the
email is then nowhere, proven by `privacy.find_traces` over every table and every decrypted checkpoint — shows an
agent neither the menu entry nor the page, and shows the rep a two-session visitor's history.

Screenshots go to pytest's tmp dir, or to $LEADCHAT_SCREENSHOT_DIR when set.
"""
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from httpx_sse import connect_sse
from psycopg.rows import dict_row
from streamlit.testing.v1 import AppTest

from apiserver import LiveServer
from calendar_servers import SettableClock
from conftest import console_backend, fresh_db, rows as q
from leadchat.api import create_app
from leadchat.config import get_settings
from leadchat.console import close_backends, get_backend
from leadchat.privacy import find_traces, load_keyring
from leadchat.staff import add_staff_user
from test_api import app_settings
from test_console import CHROMIUM_ARGS, Console, browser_sign_in, signed_in, texts

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / 'console' / 'app.py'
PASSWORD = 'correct horse battery staple'
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
WREN = 'wren.okafor@example.org'                 # comes back a week later: the history
OTTO = ('otto.brightwater@example.net', 'Otto Brightwater', '+49 30 901820 77')   # erased in Chromium
KOFI = 'kofi.mensah@example.org'                 # erased twice at once (two tabs)
SIGRID = 'sigrid.unrelated@example.com'          # nobody erases her: her data stays


def say(client, sid, message):
    with connect_sse(client, 'POST', '/chat', json={'message': message}, headers={'ZGC-Session-ID': sid}) as es:
        assert es.response.status_code == 200, es.response.read()
        return ''.join(json.loads(ev.data)['content'] for ev in es.iter_sse() if ev.event == 'delta')




def traces(world, needles) -> list[str]:
    "Where `needles` still are: every table, every decrypted checkpoint value (on the backend's loop: Playwright runs one here)."
    return world['backend'].conn(find_traces, world['keyring'], needles)


@pytest.fixture(scope='module')
def world(pg, tmp_path_factory):
    "Conversations through the API on a settable clock; an admin (dpo) and an agent (ana); the console's environment."
    url = fresh_db(pg[1])
    settings = app_settings(pg, url)
    clock = SettableClock(MONDAY)
    sids = {k: str(uuid.uuid4()) for k in ('wren1', 'wren2', 'otto', 'kofi', 'sigrid')}
    with LiveServer(create_app(settings, clock=clock, knowledge_path=str(ROOT / 'knowledge'))) as srv:
        with srv.client() as c:
            say(c, sids['wren1'], 'We want to automate claims triage for our 40 adjusters.')
            say(c, sids['wren1'], f"I'm the head of operations and I sign off on this budget. I'm Wren Okafor, {WREN}")
            clock.now = MONDAY + timedelta(days=1)
            say(c, sids['otto'], 'We run claims triage by hand for 40 adjusters and it is slow.')
            say(c, sids['otto'], f"I'm {OTTO[1]}, email {OTTO[0]}, phone {OTTO[2]}")
            say(c, sids['kofi'], f'We need to automate invoice matching. Reach me at {KOFI}')
            say(c, sids['sigrid'], f'We need a document search assistant. I am Sigrid, {SIGRID}')
            clock.now = MONDAY + timedelta(days=7)                        # a week later, a new session, the same email
            say(c, sids['wren2'], f'Hello, {WREN} here. Do you also work with insurers in Spain?')
            say(c, sids['wren2'], 'What does an engagement look like?')
    with console_backend(pg, url, PASSWORD, 'Dana Protection') as (env, backend):
        yield dict(url=url, sids=sids, env=env, backend=backend, keyring=load_keyring(settings))


def signed_in_as(username: str, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.text_input(key='sign_in_username').set_value(username)
    at.text_input(key='sign_in_password').set_value(PASSWORD)
    at.button(key='FormSubmitter:staff_sign_in-Sign in').click().run()
    assert not at.exception and at.title[0].value == 'Sessions', at.exception
    if page: at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def look_up(at: AppTest, email: str) -> AppTest:
    at.text_input(key='p_email').set_value(email)
    return at.button(key='FormSubmitter:p_lookup_form-Look up what is held').click().run()


def confirm_erase(at: AppTest, typed: str) -> AppTest:
    at.text_input(key='p_confirm').set_value(typed)
    return at.button(key='FormSubmitter:p_erase_form-Erase everything held about this person').click().run()


def requests_log(world) -> list[dict]:
    return q(world['url'], 'SELECT kind, identity_hash, operator, counts FROM privacy_requests ORDER BY id')


def privacy_audit(world) -> list[dict]:
    return q(world['url'], "SELECT username, action, detail FROM staff_audit WHERE action LIKE 'privacy.%%' ORDER BY id")


# --- who may use the page -----------------------------------------------------------------------------------------

def test_an_agent_is_refused_the_privacy_page_and_without_a_sign_in_it_is_the_sign_in_form(world):
    at = signed_in_as('ana', 'pages/privacy.py')                   # registered (hidden): its address answers
    assert at.title[0].value == 'Privacy requests'
    [refusal] = [e.value for e in at.error]
    assert 'for admins only' in refusal and 'leadchat staff role ana admin' in refusal
    assert not at.dataframe and [t.key for t in at.text_input if t.key in ('p_email', 'p_confirm')] == []
    alone = AppTest.from_file(str(ROOT / 'console' / 'pages' / 'privacy.py'), default_timeout=180).run()
    assert not alone.exception and alone.text_input(key='sign_in_password').proto.type == 1    # the sign-in form only
    assert 'Privacy requests' not in [t.value for t in alone.title]
    assert [r for r in requests_log(world) if r['operator'] == 'console:ana'] == []  # nothing was looked up
    assert [a for a in privacy_audit(world) if a['username'] == 'ana'] == []


# --- bad input ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('typed,why', [
    ('', 'type the email address'), ('otto', 'is not an email address'), ('otto@', 'is not an email address'),
    ("' OR 1=1; DROP TABLE sessions; --", 'is not an email address'), ('<img src=x onerror=alert(1)>@x.com', 'is not an email'),
    ('x' * 10_000, 'is not an email address'),                       # cut to 320 by the widget, then refused
    ('a\x00b@example.com', 'is not an email address'), (f'{WREN}\u202e', 'is not an email address')])
def test_what_is_not_an_email_is_refused_and_looks_nothing_up(world, typed, why):
    at = signed_in_as('dpo', 'pages/privacy.py')
    before = len(requests_log(world)), len(privacy_audit(world))
    look_up(at, typed)
    assert not at.exception
    assert any(e.value.startswith('Not looked up:') and why in e.value for e in at.error), [e.value for e in at.error]
    assert len(at.text_input(key='p_email').value) <= 320
    assert not at.dataframe and 'What is held' not in texts(at)
    assert (len(requests_log(world)), len(privacy_audit(world))) == before


def test_an_unknown_email_holds_nothing_and_its_lookup_is_logged_hashed(world):
    at = signed_in_as('dpo', 'pages/privacy.py')
    look_up(at, '  Nobody.Here@Example.COM ')
    assert not at.exception and any('Nothing is held about this email' in i.value for i in at.info)
    assert not at.dataframe and not [t for t in at.text_input if t.key == 'p_confirm']   # nothing to export or erase
    last, audit = requests_log(world)[-1], privacy_audit(world)[-1]
    assert (last['kind'], last['operator'], sum(last['counts'].values())) == ('erase_dry_run', 'console:dpo', 0)
    assert (audit['username'], audit['action'], audit['detail']) == ('dpo', 'privacy.erase_dry_run',
                                                                    {'identity_hash': last['identity_hash'], 'held': {}})
    assert 'nobody' not in json.dumps(requests_log(world) + privacy_audit(world), default=str).lower()


def test_a_wrong_confirmation_erases_nothing_and_two_tabs_erasing_at_once_erase_once(world):
    a, b = signed_in_as('dpo', 'pages/privacy.py'), signed_in_as('dpo', 'pages/privacy.py')
    for tab in (a, b):
        look_up(tab, KOFI)
        assert not tab.exception and 'What is held' in texts(tab)
    held = {r['table']: r['rows'] for r in a.dataframe[0].value.to_dict('records')}
    assert held['sessions'] == 1 and held['transcript'] == 2 and held['visitors'] == 1
    for wrong in ('kofi.mensah@example.com', 'not an email', 'x' * 5000):
        confirm_erase(a, wrong)
        assert any(e.value.startswith('Not erased:') and 'nothing was erased' in e.value for e in a.error)
        assert q(world['url'], 'SELECT count(*) AS n FROM sessions WHERE session_id = %s', world['sids']['kofi'])[0]['n'] == 1
    stale = a.session_state['p_lookup']
    confirm_erase(a, ' KOFI.MENSAH@example.org')                     # the same address, as typed by a person
    assert not a.exception and any(s.value.startswith('Erased: ') and 'sessions 1' in s.value for s in a.success)
    assert a.text_input(key='p_email').value == '' and 'What is held' not in texts(a)   # the address left the page
    a.session_state['p_lookup'] = stale                               # a page still showing the form: submitted again
    a.run()
    confirm_erase(a, KOFI)
    assert not a.exception and any('already submitted' in i.value for i in a.info)
    kofis = lambda: [r for r in requests_log(world) if r['kind'] == 'erase' and r['identity_hash'] == stale.identity_hash]
    assert len(kofis()) == 1                                          # the form's second submit did nothing
    confirm_erase(b, KOFI)                                           # the second tab, looked up before the erasure
    assert not b.exception and any('Nothing was left to erase' in i.value for i in b.info)
    erases = kofis()
    assert len(erases) == 2 and erases[0]['counts']['sessions'] == 1 and sum(erases[1]['counts'].values()) == 0
    assert {r['operator'] for r in erases} == {'console:dpo'}
    assert traces(world, [KOFI, 'Kofi', 'Mensah']) == []
    assert traces(world, [SIGRID]) != []                              # nobody else's data went


# --- the round trip in Chromium -------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        try: yield browser
        finally: browser.close()


@pytest.fixture(scope='module')
def console_server(world, tmp_path_factory):
    c = Console(world, tmp_path_factory.mktemp('console-privacy') / 'terminal.log')
    try: yield c
    finally: c.stop()


def shots(tmp_path) -> Path:
    out = Path(os.environ.get('LEADCHAT_SCREENSHOT_DIR') or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_in_chromium_an_agent_has_no_privacy_menu_entry_and_its_address_says_admins_only(world, console_server, chromium, tmp_path):
    ctx = chromium.new_context(viewport={'width': 1280, 'height': 900})
    try:
        page = ctx.new_page()
        page.goto(console_server.url)
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        browser_sign_in(page, 'ana')
        page.get_by_role('link', name='Funnel').wait_for(timeout=30_000)          # the menu is drawn
        assert page.get_by_role('link', name='Privacy requests').count() == 0
        page.goto(f'{console_server.url}/privacy')
        signed_in(page, 'Privacy requests')
        page.get_by_text('This page is for admins only', exact=False).wait_for(timeout=30_000)
        assert page.get_by_role('textbox', name='Email address of the person who asked').count() == 0
        page.screenshot(path=str(shots(tmp_path) / 'console-privacy-agent.png'))
    finally: ctx.close()


def test_in_chromium_an_admin_looks_up_exports_and_erases_and_the_email_is_then_nowhere(world, console_server, chromium, tmp_path):
    email, name, phone = OTTO
    needles = [email, name, 'Brightwater', '3090182077']
    held = traces(world, needles)
    assert {'transcript.content_enc(decrypted)', 'sessions.visitor_email_enc(decrypted)', 'checkpoints(decrypted)'} <= set(held)
    assert not [h for h in held if not h.endswith('(decrypted)')]                 # sealed at rest: no plain column holds it
    ctx = chromium.new_context(viewport={'width': 1280, 'height': 1000}, accept_downloads=True)
    try:
        page = ctx.new_page()
        page.goto(console_server.url)
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        browser_sign_in(page, 'dpo')
        page.get_by_role('link', name='Privacy requests').click()
        signed_in(page, 'Privacy requests')
        box = page.get_by_role('textbox', name='Email address of the person who asked')
        assert box.get_attribute('autocomplete') == 'off'                   # the browser does not keep the addresses
        box.fill(email.upper())
        page.get_by_role('button', name='Look up what is held').click()
        page.get_by_role('heading', name='What is held').wait_for(timeout=60_000)
        page.get_by_text('Dry run, nothing changed', exact=False).wait_for(timeout=30_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
        page.get_by_role('button', name='Erase everything held about this person').wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        assert traces(world, needles)                                               # a look is not an erasure
        page.screenshot(path=str(shots(tmp_path) / 'console-privacy-lookup.png'), full_page=True)

        page.get_by_role('button', name='Prepare the export (JSON)').click()
        download_button = page.get_by_role('button', name='Download the export')
        download_button.wait_for(timeout=60_000)
        with page.expect_download(timeout=60_000) as dl:
            download_button.click()
        doc = json.loads(Path(dl.value.path()).read_text(encoding='utf-8'))
        assert doc['format'] == 'leadchat-export/1' and doc['subject']['email'] == email
        assert [s['session_id'] for s in doc['sessions']] == [world['sids']['otto']]
        assert any(name in t['content'] for t in doc['sessions'][0]['transcript'])
        assert email not in dl.value.suggested_filename and dl.value.suggested_filename.endswith('.json')

        page.get_by_role('textbox', name='Type the email address again to confirm').fill(email)
        page.get_by_role('button', name='Erase everything held about this person').click()
        page.get_by_text('Erased: ', exact=False).wait_for(timeout=60_000)
        page.screenshot(path=str(shots(tmp_path) / 'console-privacy-erased.png'), full_page=True)
        assert email not in page.content()
    finally: ctx.close()
    assert traces(world, needles) == []                                             # every table, every checkpoint
    assert traces(world, [SIGRID]) != []
    log = [r for r in requests_log(world) if r['operator'] == 'console:dpo'][-3:]
    assert [r['kind'] for r in log] == ['erase_dry_run', 'export', 'erase'] and log[-1]['counts']['sessions'] == 1
    trail = privacy_audit(world)[-3:]
    assert [(a['username'], a['action']) for a in trail] == [('dpo', 'privacy.erase_dry_run'), ('dpo', 'privacy.export'),
                                                             ('dpo', 'privacy.erase')]
    assert {a['detail']['identity_hash'] for a in trail} == {r['identity_hash'] for r in log} and len({r['identity_hash'] for r in log}) == 1
    assert trail[1]['detail']['sessions'] == 1 and trail[2]['detail']['erased']['sessions'] == 1
    assert email not in json.dumps(trail + log, default=str) and email not in console_server.terminal()


# --- a returning visitor's history --------------------------------------------------------------------------------

def test_the_session_page_lists_a_returning_visitors_earlier_session(world):
    first, second = world['sids']['wren1'], world['sids']['wren2']
    at = signed_in_as('ana', 'pages/session.py')
    at.text_input(key='d_sid').set_value(second).run()
    assert not at.exception
    assert 'Returning visitor: 1 earlier session' in [h.value for h in at.subheader]
    hist = next(df for df in (d.value for d in at.dataframe) if 'about' in df.columns)
    row = q(world['url'], 'SELECT lead_level, handoff_reason FROM sessions WHERE session_id = %s', first)[0]
    assert list(hist['session']) == [first] and hist['lead'][0] == row['lead_level'] and hist['visit'][0] == 'earlier'
    assert hist['hand-off'][0] == (row['handoff_reason'] or '—') and hist['about'][0] == 'automating claims triage'
    assert hist['started'][0] == '2026-03-02 11:00'                                 # Madrid time
    at.selectbox(key='d_history_pick').select(first)
    at.button(key='d_history_open').click().run()                                   # the earlier one, from here
    assert not at.exception and at.text_input(key='d_sid').value == first
    assert 'This visitor came back: 1 later session' in [h.value for h in at.subheader]
    assert list(next(df for df in (d.value for d in at.dataframe) if 'about' in df.columns)['session']) == [second]
    at.text_input(key='d_sid').set_value(world['sids']['sigrid']).run()             # a one-time visitor: no history
    assert not at.exception and not any('visitor' in h.value for h in at.subheader)


def test_in_chromium_the_rep_sees_the_earlier_session_of_a_visitor_who_came_back(world, console_server, chromium, tmp_path):
    first, second = world['sids']['wren1'], world['sids']['wren2']
    ctx = chromium.new_context(viewport={'width': 1280, 'height': 1000})
    try:
        page = ctx.new_page()
        page.goto(f'{console_server.url}/session?session={second}')
        page.get_by_role('textbox', name='Password').wait_for(timeout=60_000)
        browser_sign_in(page, 'ana', lands_on=None)
        signed_in(page, 'Session detail')
        page.get_by_role('heading', name='Returning visitor: 1 earlier session').wait_for(timeout=60_000)
        grid = page.locator('[data-testid="stDataFrame"]').nth(1)
        grid.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots(tmp_path) / 'console-session-history.png'), full_page=True)
        page.get_by_role('button', name='Open that session').click()
        page.get_by_role('heading', name='This visitor came back: 1 later session').wait_for(timeout=60_000)
        assert page.get_by_role('textbox', name='Session id').input_value() == first
    finally: ctx.close()
