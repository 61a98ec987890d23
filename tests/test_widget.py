"""The <growth-chat> widget in Debian's Chromium (Playwright), against the real API on the offline engine
(also with a real Radicale calendar: a meeting booked with the slot buttons) and against local backends
that fail or script events on purpose (tests/widget_servers.py); and the API's widget asset routes.

Needs the built widget (widget/dist: `make widget`). Screenshots go to build/test-artifacts/widget/ (git-ignored).
"""
import gzip
import json
import re
import socket
from datetime import timezone
from pathlib import Path

import psycopg
import pytest
import yaml
from playwright.sync_api import Page, expect, sync_playwright

from apiserver import LiveServer
from calendar_servers import HOT_WITH_EMAIL, Radicale, SettableClock, one_rep_calendar
from conftest import fresh_db
from leadchat.api import create_app
from leadchat.calendar import CalendarService, load_calendar_config
from test_api import ALLOWED, app_settings
from widget_servers import WidgetHost, gated, hang, reply, status, stream_error

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / 'widget' / 'dist'
SHOTS = ROOT / 'build' / 'test-artifacts' / 'widget'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']
UUID4 = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$')
EVENTS = ['zgc:chat_opened', 'zgc:first_message_sent', 'zgc:qualification_state_changed', 'zgc:contact_captured',
          'zgc:escalation_triggered', 'zgc:conversation_ended', 'zgc:fallback_activated', 'zgc:gdpr_acknowledged',
          'zgc:meeting_booked']
DETAIL_KEYS = {
    'zgc:chat_opened': {'session_id', 'timestamp'},
    'zgc:first_message_sent': {'session_id', 'timestamp'},
    'zgc:qualification_state_changed': {'session_id', 'lead_level', 'timestamp'},
    'zgc:contact_captured': {'session_id', 'timestamp'},
    'zgc:escalation_triggered': {'session_id', 'handoff_reason', 'lead_level', 'timestamp'},
    'zgc:conversation_ended': {'session_id', 'termination_type', 'turn_count', 'timestamp'},
    'zgc:fallback_activated': {'session_id', 'reason', 'timestamp'},
    'zgc:gdpr_acknowledged': {'session_id', 'timestamp'},
    'zgc:meeting_booked': {'session_id', 'timestamp', 'meeting_start'},
}
# Every zgc:* event the element dispatches, recorded from before the widget loads (they bubble to document).
RECORD_EVENTS = 'window.__zgc = [];' + ''.join(
    f'document.addEventListener({e!r}, (ev) => window.__zgc.push({{type: ev.type, detail: ev.detail, '
    f'onElement: ev.target.tagName === "GROWTH-CHAT"}}));' for e in EVENTS)
HOT = "We're building a RAG assistant over our support tickets. I'm the CTO of a 300-person payments company."


def closed_port() -> int:
    "A loopback port nothing listens on (bound, then released)."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def built():
    manifest = DIST / 'manifest.json'
    if not manifest.is_file():
        raise RuntimeError(f'{manifest} is missing: build the widget first (`make widget`, or npm ci && npm run build in widget/)')
    return json.loads(manifest.read_text())


@pytest.fixture(scope='module')
def host():
    with WidgetHost() as h: yield h


@pytest.fixture(scope='module')
def api(pg, built, host):
    "The real app (offline engine, embedded PostgreSQL); the test host's origin may embed the widget."
    url = fresh_db(pg[1])
    settings = app_settings(pg, url, leadchat_cors_origins=[ALLOWED, host.origin])
    with LiveServer(create_app(settings, knowledge_path=str(ROOT / 'knowledge'))) as srv:
        srv.db_url = url
        yield srv


@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={'width': 1280, 'height': 800}, timezone_id='Europe/Madrid')
    ctx.add_init_script(RECORD_EVENTS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context) -> Page:
    p = context.new_page()
    p.console_messages = []
    p.on('console', lambda m: p.console_messages.append((m.type, m.text)))
    p.on('pageerror', lambda e: p.console_messages.append(('pageerror', str(e))))
    return p


def embed(api, *, api_url, fallback_url='https://www.calderwood.example/contact', extra='', head='', body='') -> str:
    "A host page with the spec's two lines (chat.js from the real API's alias)."
    attrs = ''.join(f' {k}="{v}"' for k, v in (('api-url', api_url), ('fallback-url', fallback_url)) if v is not None)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>host</title>{head}</head><body>'
            f'<h1>Host page</h1><p><a href="#top" id="host-link">a host link</a></p>{body}'
            f'<script src="{api.url}/chat.js" defer></script>\n<growth-chat{attrs}{extra}></growth-chat></body></html>')


def events(page: Page) -> list[dict]:
    return page.evaluate('window.__zgc')


def names(page: Page) -> list[str]:
    return [e['type'] for e in events(page)]


def launcher(page: Page): return page.locator('growth-chat .gc-launcher')
def composer(page: Page): return page.locator('growth-chat .gc-input')
def assistant_messages(page: Page): return page.locator('growth-chat .gc-msg-assistant')
def fallback_view(page: Page): return page.locator('growth-chat .gc-fallback')


def open_and_acknowledge(page: Page):
    launcher(page).click()
    page.locator('growth-chat .gc-gdpr-ack').click()
    expect(composer(page)).to_be_enabled()


def send(page: Page, text: str):
    composer(page).fill(text)
    composer(page).press('Enter')


def check_payloads(page: Page, forbidden=()):
    "Every event has exactly the spec's detail fields, ISO timestamps, a UUID v4 session id and no visitor text."
    for e in events(page):
        assert e['onElement'], e
        assert set(e['detail']) == DETAIL_KEYS[e['type']], e
        assert UUID4.match(e['detail']['session_id']) and re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$', e['detail']['timestamp'])
        blob = json.dumps(e['detail']).lower()
        for text in forbidden: assert text.lower() not in blob, (text, e)


def shot(page: Page, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f'{name}.png'))


# --- the demo page against the real API (offline engine) -------------------------------------------------

def test_demo_page_a_visitor_chats_through_the_widget(api, page):
    chat_requests = []
    page.on('request', lambda r: chat_requests.append(r) if r.url.endswith('/chat') else None)
    page.goto(api.url + '/')
    expect(launcher(page)).to_be_visible()
    expect(launcher(page)).to_have_attribute('aria-expanded', 'false')
    assert page.locator('growth-chat').evaluate('el => el.shadowRoot.mode') == 'open'

    launcher(page).click()
    expect(page.locator('growth-chat .gc-gdpr')).to_contain_text('This chat is powered by AI. Conversations may be stored for up to 90 days')
    expect(composer(page)).to_be_disabled()             # the notice gates the input ...
    page.wait_for_function('window.__zgc.length > 0')   # the recorder is a page script: on a loaded machine it can lag the DOM
    assert names(page) == ['zgc:chat_opened'] and chat_requests == []      # ... and nothing was sent
    page.locator('growth-chat .gc-gdpr-ack').click()
    expect(page.locator('growth-chat .gc-gdpr')).to_have_count(0)
    expect(composer(page)).to_be_enabled()
    expect(composer(page)).to_be_focused()
    assert page.evaluate('sessionStorage.getItem("growth_chat_gdpr_acknowledged")') == 'true'

    send(page, 'What fintech case studies do you have?')
    expect(page.locator('growth-chat .gc-msg-user')).to_have_text(re.compile('What fintech case studies do you have'))
    expect(assistant_messages(page).first).to_contain_text(re.compile('bank|fintech|financ', re.I), timeout=30_000)
    expect(page.locator('growth-chat .gc-viewport')).to_have_attribute('aria-busy', 'false', timeout=30_000)

    send(page, HOT + ' Reach me at maria.lopez@acmepay.example')
    expect(assistant_messages(page)).to_have_count(2)
    page.wait_for_function('window.__zgc.some(e => e.type === "zgc:escalation_triggered")', timeout=30_000)
    ev = events(page)
    order = [e['type'] for e in ev]
    assert order[:3] == ['zgc:chat_opened', 'zgc:gdpr_acknowledged', 'zgc:first_message_sent'], order
    assert order.index('zgc:contact_captured') < order.index('zgc:escalation_triggered')
    assert order.count('zgc:first_message_sent') == 1 and 'zgc:fallback_activated' not in order
    esc = next(e['detail'] for e in ev if e['type'] == 'zgc:escalation_triggered')
    assert esc['handoff_reason'] == 'hot_lead' and esc['lead_level'] == 'hot'
    changes = [e['detail']['lead_level'] for e in ev if e['type'] == 'zgc:qualification_state_changed']
    assert changes and changes[-1] == 'hot'
    check_payloads(page, forbidden=['maria', 'acmepay', 'fintech', 'CTO'])
    # one session per page load, sent as ZGC-Session-ID on every request, the same in every event
    sids = {r.headers['zgc-session-id'] for r in chat_requests}
    assert len(chat_requests) == 2 and len(sids) == 1 and UUID4.match(sids.pop()) is not None
    assert {e['detail']['session_id'] for e in ev} == {chat_requests[0].headers['zgc-session-id']}
    # the notice acknowledgement reached the server with the first message and is stored with its scope
    bodies = [r.post_data_json for r in chat_requests]
    assert 'consent' in bodies[0] and 'consent' not in bodies[1]
    with psycopg.connect(api.db_url) as conn:
        scopes = conn.execute('SELECT scope, notice_version FROM consent_records WHERE session_id = %s ORDER BY scope',
                              [chat_requests[0].headers['zgc-session-id']]).fetchall()
    assert [s for s, _ in scopes] == ['chat_processing', 'follow_up'] and scopes[0][1] == bodies[0]['consent']['notice_version']
    page.locator('growth-chat .gc-viewport').evaluate('el => el.scrollTop = el.scrollHeight')
    shot(page, 'demo-conversation')
    # the host page's own listener got them too (the demo's event log)
    expect(page.locator('#events')).to_contain_text('zgc:escalation_triggered')
    assert not [m for m in page.console_messages if m[0] in ('error', 'pageerror')], page.console_messages

    page.reload()                    # a new page load: a new session id, the notice already acknowledged
    launcher(page).click()
    expect(composer(page)).to_be_enabled()
    send(page, 'hello')
    expect(assistant_messages(page).first.locator('.gc-text')).not_to_be_empty(timeout=30_000)
    assert len(chat_requests) == 3 and chat_requests[-1].headers['zgc-session-id'] not in sids | {chat_requests[0].headers['zgc-session-id']}


def test_embedded_on_another_origin_the_api_answers_allowed_origins_only(api, host, page, browser):
    # host.origin is in LEADCHAT_CORS_ORIGINS: the preflight passes and the reply streams
    page.goto(host.page('cross-origin', embed(api, api_url=f'{api.url}/chat')))
    open_and_acknowledge(page)
    send(page, 'How do you run an engagement?')
    expect(assistant_messages(page).first).not_to_be_empty(timeout=30_000)
    expect(page.locator('growth-chat .gc-viewport')).to_have_attribute('aria-busy', 'false', timeout=30_000)
    assert 'zgc:fallback_activated' not in names(page) and 'zgc:first_message_sent' in names(page)
    # a second origin that is not listed: the browser's preflight is refused → connection error → fallback
    with WidgetHost() as other:
        ctx = browser.new_context()
        ctx.add_init_script(RECORD_EVENTS)
        p2 = ctx.new_page()
        p2.goto(other.page('not-allowed', embed(api, api_url=f'{api.url}/chat')))
        open_and_acknowledge(p2)
        send(p2, 'hello')
        expect(fallback_view(p2)).to_be_visible()
        assert [e['detail']['reason'] for e in events(p2) if e['type'] == 'zgc:fallback_activated'] == ['connection_error']
        ctx.close()


# --- streaming, typing indicator, timeouts and the fallback table (local backends) -------------------------

def test_tokens_render_incrementally_after_a_typing_indicator(api, host, page):
    url = host.backend('gated', gated('Hello', ', I can', ' help with that.', done={'lead_level': 'warm'}))
    page.goto(host.page('gated', embed(api, api_url=url)))
    open_and_acknowledge(page)
    send(page, 'hi there')
    typing = page.locator('growth-chat .gc-typing')
    expect(typing).to_be_visible()                        # from the moment the request is sent ...
    expect(typing).to_have_attribute('aria-label', 'The assistant is typing')
    expect(page.locator('growth-chat .gc-viewport')).to_have_attribute('aria-busy', 'true')
    host.release('gated')                                 # ... until the first token
    expect(assistant_messages(page).first).to_have_text(re.compile(r'Hello$'))
    expect(typing).to_have_count(0)
    host.release('gated')                                 # each token shows while the stream is still open
    expect(assistant_messages(page).first).to_have_text(re.compile(r'Hello, I can$'))
    assert 'zgc:qualification_state_changed' not in names(page)
    host.release('gated', 2)                              # last token, then done
    expect(assistant_messages(page).first).to_have_text(re.compile(r'Hello, I can help with that\.$'))
    page.wait_for_function('window.__zgc.some(e => e.type === "zgc:qualification_state_changed")')
    assert [e['detail']['lead_level'] for e in events(page) if e['type'] == 'zgc:qualification_state_changed'] == ['warm']
    expect(page.locator('growth-chat .gc-viewport')).to_have_attribute('aria-busy', 'false')
    req = host.requests('gated')[0]
    # the visitor's time zone (the browser's) goes with every message
    consent = req['body'].pop('consent')
    assert UUID4.match(req['body'].pop('visitor_id'))        # the first-party visitor id, once the notice is acknowledged
    assert req['body'] == {'message': 'hi there', 'timezone': 'Europe/Madrid'} and UUID4.match(req['headers']['ZGC-Session-ID'])
    # ... and the privacy-notice acknowledgement with the session's first message (the server stores it, scope chat_processing)
    assert set(consent) == {'notice_version', 'acknowledged_at'} and consent['acknowledged_at'].endswith('Z')


def fallback_reason(page):
    return [e['detail']['reason'] for e in events(page) if e['type'] == 'zgc:fallback_activated']


def assert_fallback_with_link(page, href):
    view = fallback_view(page)
    expect(view).to_be_visible()
    expect(view).to_contain_text('Our chat assistant isn’t available right now. You can still reach us using our contact form.')
    link = view.get_by_role('link', name='Contact us →')
    expect(link).to_have_attribute('href', href)
    expect(link).to_have_attribute('target', '_blank')
    expect(composer(page)).to_have_count(0)               # the input is gone: nothing more can be sent
    expect(launcher(page)).to_be_visible()


def test_backend_down_on_the_first_turn_falls_back_for_the_whole_session(api, host, page):
    contact = host.page('contact', '<!doctype html><title>Contact</title><h1>Contact us</h1>')
    page.goto(host.page('down', embed(api, api_url=f'http://127.0.0.1:{closed_port()}/chat', fallback_url=contact)))
    open_and_acknowledge(page)
    send(page, 'hello?')
    assert_fallback_with_link(page, contact)
    expect(fallback_view(page).get_by_role('link')).to_be_focused()     # the input it replaced had the focus
    assert fallback_reason(page) == ['connection_error']
    check_payloads(page, forbidden=['hello?'])
    shot(page, 'fallback')
    launcher(page).click()                                # close, reopen: still the fallback
    launcher(page).click()
    assert_fallback_with_link(page, contact)
    page.reload()                                         # session-permanent: survives a reload, no retry
    launcher(page).click()
    assert_fallback_with_link(page, contact)
    assert fallback_reason(page) == [] and 'zgc:chat_opened' in names(page)
    with page.expect_popup() as popup:                    # the contact link opens in a new tab
        fallback_view(page).get_by_role('link').click()
    popup.value.wait_for_load_state()
    assert popup.value.url == contact and popup.value.title() == 'Contact'
    popup.value.close()


def test_a_5xx_on_the_first_turn_falls_back(api, host, page):
    url = host.backend('five-hundred', status(503))
    page.goto(host.page('five-hundred', embed(api, api_url=url)))
    open_and_acknowledge(page)
    send(page, 'hello')
    assert_fallback_with_link(page, 'https://www.calderwood.example/contact')
    assert fallback_reason(page) == ['http_error'] and len(host.requests('five-hundred')) == 1


def test_no_first_token_within_stream_timeout_ms_falls_back(api, host, page):
    url = host.backend('silent', hang())
    page.clock.install()
    page.goto(host.page('silent', embed(api, api_url=url)))
    open_and_acknowledge(page)
    send(page, 'anyone there?')
    expect(page.locator('growth-chat .gc-typing')).to_be_visible()
    page.clock.run_for(7_000)                             # the spec's default STREAM_TIMEOUT_MS is 10000
    expect(page.locator('growth-chat .gc-typing')).to_be_visible()
    assert fallback_reason(page) == []
    page.clock.run_for(3_500)
    assert_fallback_with_link(page, 'https://www.calderwood.example/contact')
    assert fallback_reason(page) == ['stream_timeout']


def test_later_turn_failures_are_inline_and_the_session_continues(api, host, page):
    url = host.backend('flaky', reply('First answer.', done={'turn_index': 1}), status(500), hang(), stream_error(),
                       reply('Fine again.', done={'turn_index': 2}))
    page.goto(host.page('flaky', embed(api, api_url=url, extra=' stream-timeout-ms="1500"')))
    open_and_acknowledge(page)
    send(page, 'first')
    expect(assistant_messages(page).nth(0).locator('.gc-text')).to_have_text('First answer.')
    send(page, 'second')                                  # 5xx on a later turn
    expect(assistant_messages(page).nth(1).locator('.gc-inline-error')).to_have_text(re.compile("didn't come through"))
    expect(composer(page)).to_be_enabled()
    send(page, 'third')                                   # no first token within stream-timeout-ms
    expect(assistant_messages(page).nth(2).locator('.gc-inline-error')).to_have_text(re.compile('took too long'))
    send(page, 'fourth')                                  # the backend's own error event
    expect(assistant_messages(page).nth(3).locator('.gc-inline-error')).to_have_attribute('role', 'alert')
    send(page, 'fifth')
    expect(assistant_messages(page).nth(4).locator('.gc-text')).to_have_text('Fine again.')
    expect(fallback_view(page)).to_be_hidden()
    assert 'zgc:fallback_activated' not in names(page)
    sids = {r['headers']['ZGC-Session-ID'] for r in host.requests('flaky')}
    assert len(host.requests('flaky')) == 5 and len(sids) == 1    # one session throughout, no retries
    shot(page, 'inline-errors')


# --- configuration --------------------------------------------------------------------------------------------

def test_missing_attributes_log_a_configuration_error_and_degrade(api, host, page, context):
    panel_requests = []
    page.on('request', lambda r: panel_requests.append(r.url) if '/panel-' in r.url else None)
    page.goto(host.page('no-attrs', embed(api, api_url=None, fallback_url=None)))
    expect(launcher(page)).to_be_visible()
    errors = [t for kind, t in page.console_messages if kind == 'error']
    assert any('ConfigurationError' in t and 'api-url' in t for t in errors), errors
    assert any('ConfigurationError' in t and 'fallback-url' in t for t in errors), errors
    launcher(page).click()
    view = fallback_view(page)
    expect(view).to_contain_text('Our chat assistant isn’t available right now.')
    expect(view.get_by_role('link')).to_have_count(0)     # no fallback-url: a generic fallback without a link
    expect(composer(page)).to_have_count(0)
    assert panel_requests == [] and fallback_reason(page) == []    # permanent fallback; never loads the panel

    # only fallback-url missing: the chat works; when the backend is down the fallback has no link
    p2 = context.new_page()
    p2.console_messages = []
    p2.on('console', lambda m: p2.console_messages.append((m.type, m.text)))
    p2.goto(host.page('no-fallback-url', embed(api, api_url=f'http://127.0.0.1:{closed_port()}/chat', fallback_url=None)))
    expect(launcher(p2)).to_be_visible()
    errors = [t for kind, t in p2.console_messages if kind == 'error']
    assert len(errors) == 1 and 'ConfigurationError' in errors[0] and 'fallback-url' in errors[0], errors
    open_and_acknowledge(p2)
    send(p2, 'hello')
    expect(fallback_view(p2)).to_contain_text('Please try again later')
    expect(fallback_view(p2).get_by_role('link')).to_have_count(0)


def test_hostile_attribute_values_are_refused(api, host, page):
    page.goto(host.page('hostile', embed(api, api_url='javascript:alert(1)', fallback_url='javascript:alert(2)',
                                         extra=' position="top-middle" proactive-delay-ms="soon" '
                                               'proactive-message="&lt;img src=x onerror=alert(3)&gt;"')))
    expect(launcher(page)).to_be_visible()
    errors = [t for kind, t in page.console_messages if kind == 'error']
    assert sum('ConfigurationError' in t for t in errors) == 2, errors
    warnings = [t for kind, t in page.console_messages if kind == 'warning']
    assert any('position' in t for t in warnings) and any('proactive-delay-ms' in t for t in warnings), warnings
    box = launcher(page).bounding_box()
    assert box['x'] > 1000                                # bottom-right, the default
    launcher(page).click()
    expect(fallback_view(page).get_by_role('link')).to_have_count(0)   # never a javascript: link
    assert page.locator('growth-chat img').count() == 0


def test_sessionstorage_unavailable_the_notice_returns_on_each_open(api, host, browser):
    ctx = browser.new_context()
    ctx.add_init_script(RECORD_EVENTS + "Object.defineProperty(window, 'sessionStorage', "
                        "{get() { throw new DOMException('storage is disabled', 'SecurityError'); }});")
    page = ctx.new_page()
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    url = host.backend('no-storage', reply('Hi.'))
    page.goto(host.page('no-storage', embed(api, api_url=url)))
    open_and_acknowledge(page)
    send(page, 'hello')
    expect(assistant_messages(page).first).to_contain_text('Hi.')
    launcher(page).click()
    launcher(page).click()                                # reopened: the acknowledgement was not kept
    expect(page.locator('growth-chat .gc-gdpr')).to_be_visible()
    expect(composer(page)).to_be_disabled()
    assert errors == [] and names(page).count('zgc:gdpr_acknowledged') == 1
    ctx.close()


# --- proactive prompt, inactivity, explicit close, expiry ------------------------------------------------------

def test_proactive_prompt_appears_after_the_delay_once_per_session(api, host, page):
    page.clock.install()
    page.goto(host.page('proactive', embed(api, api_url=host.backend('proactive', reply('Hi.')))))
    prompt = page.locator('growth-chat .gc-prompt')
    expect(launcher(page)).to_be_visible()
    # the page's fake clock also runs in real time, so the checks keep a margin around the spec's default 45000
    page.clock.run_for(40_000)
    expect(prompt).to_be_hidden()
    page.clock.run_for(6_000)
    expect(prompt).to_be_visible()
    expect(prompt).to_contain_text('Have a question about AI engineering?')
    expect(page.locator('growth-chat .gc-panel')).to_be_hidden()    # it never opens the chat by itself
    shot(page, 'proactive-prompt')
    page.locator('#host-link').click()                    # a click away from the bubble dismisses it
    expect(prompt).to_be_hidden()
    page.reload()                                         # shown at most once per session
    page.clock.run_for(120_000)
    expect(prompt).to_be_hidden()
    assert names(page) == []


def test_proactive_prompt_switched_off_on_the_server_is_never_shown(api, host, page):
    "Issue 19's kill switch: the widget asks GET <api-url>/flags just before the prompt; proactive_prompt false — no prompt."
    page.clock.install()
    url = host.backend('proactive-off', reply('Hi.'))
    host.proactive['proactive-off'] = False
    page.goto(host.page('proactive-off', embed(api, api_url=url)))
    expect(launcher(page)).to_be_visible()
    page.clock.run_for(120_000)
    expect(page.locator('growth-chat .gc-prompt')).to_be_hidden()
    assert names(page) == []          # (switched on — the default — the tests above show it after the delay)


def test_proactive_prompt_custom_delay_and_message_and_open(api, host, browser):
    ctx = browser.new_context()
    ctx.add_init_script(RECORD_EVENTS)
    page = ctx.new_page()
    page.clock.install()
    page.goto(host.page('proactive-custom', embed(api, api_url=host.backend('pc', reply('Hi.')),
                                                  extra=' proactive-delay-ms="20000" proactive-message="Planning a RAG project?"')))
    prompt = page.locator('growth-chat .gc-prompt')
    page.clock.run_for(15_000)
    expect(prompt).to_be_hidden()
    page.clock.run_for(6_000)
    expect(prompt).to_have_text(re.compile('Planning a RAG project?'))
    prompt.get_by_role('button', name='Planning a RAG project?').click()    # the bubble opens the chat
    expect(prompt).to_be_hidden()
    expect(page.locator('growth-chat .gc-panel')).to_be_visible()
    assert names(page) == ['zgc:chat_opened']
    # opened before the delay (another tab of the same site: a new session storage): the timer never fires
    page2 = browser.new_context().new_page()
    page2.clock.install()
    page2.goto(host.page('proactive-custom', embed(api, api_url=host.backend('pc', reply('Hi.')),
                                                   extra=' proactive-delay-ms="20000"')))
    launcher(page2).click()
    launcher(page2).click()
    page2.clock.run_for(60_000)
    expect(page2.locator('growth-chat .gc-prompt')).to_be_hidden()
    page2.context.close()
    ctx.close()


def ended(page):
    return [e['detail'] for e in events(page) if e['type'] == 'zgc:conversation_ended']


def test_fifteen_minutes_without_a_message_ends_the_conversation(api, host, page):
    url = host.backend('idle', reply('Sure.', done={'turn_index': 1}))
    page.clock.install()
    page.goto(host.page('idle', embed(api, api_url=url)))
    open_and_acknowledge(page)
    send(page, 'first question')
    expect(assistant_messages(page).nth(0).locator('.gc-text')).to_have_text('Sure.')
    page.clock.run_for('10:00')
    send(page, 'second question')                         # a visitor message resets the timer
    expect(assistant_messages(page).nth(1).locator('.gc-text')).to_have_text('Sure.')
    page.clock.run_for('14:00')                           # 24 minutes after the first message, 14 after the second
    assert ended(page) == []
    page.clock.run_for('01:10')
    expect(page.locator('growth-chat .gc-note')).to_contain_text('15 minutes')
    (detail,) = ended(page)
    assert detail['termination_type'] == 'inactivity_timeout' and detail['turn_count'] == 2
    first_sid = host.requests('idle')[0]['headers']['ZGC-Session-ID']
    assert detail['session_id'] == first_sid
    expect(assistant_messages(page)).to_have_count(0)     # a fresh thread for a new conversation
    send(page, 'back again')
    expect(assistant_messages(page).first.locator('.gc-text')).to_have_text('Sure.')    # answered: the request is logged
    assert host.requests('idle')[-1]['headers']['ZGC-Session-ID'] != first_sid
    assert names(page).count('zgc:first_message_sent') == 2
    check_payloads(page, forbidden=['question', 'back again'])


def test_end_chat_is_an_explicit_close_and_an_expired_session_ends_too(api, host, page):
    url = host.backend('ending', reply('One.'), reply('Two.'), status(410, 'session_expired'), reply('Three.'))
    page.goto(host.page('ending', embed(api, api_url=url)))
    open_and_acknowledge(page)
    end = page.locator('growth-chat .gc-end')
    expect(end).to_be_hidden()                            # nothing to end yet
    send(page, 'a')
    expect(assistant_messages(page).first.locator('.gc-text')).to_have_text('One.')
    end.click()
    expect(end).to_be_hidden()
    assert ended(page)[-1]['termination_type'] == 'explicit_close' and ended(page)[-1]['turn_count'] == 1
    expect(page.locator('growth-chat .gc-note')).to_contain_text('You ended the conversation')
    send(page, 'b')
    expect(assistant_messages(page).first).to_contain_text('Two.')
    send(page, 'c')                                       # the backend says the session expired
    expect(page.locator('growth-chat .gc-note')).to_contain_text('expired')
    assert [d['termination_type'] for d in ended(page)] == ['explicit_close', 'session_expiry']
    sids = [r['headers']['ZGC-Session-ID'] for r in host.requests('ending')]
    assert sids[0] != sids[1] == sids[2]
    send(page, 'd')
    expect(assistant_messages(page).first).to_contain_text('Three.')
    assert host.requests('ending')[-1]['headers']['ZGC-Session-ID'] not in sids
    launcher(page).click()                                # minimising is not an end
    assert len(ended(page)) == 2


# --- isolation, accessibility, small screens --------------------------------------------------------------------

HOSTILE_CSS = '''<style>
  * { color: rgb(255, 0, 0) !important; font-family: "Courier New", monospace !important; font-size: 31px !important;
      letter-spacing: 4px !important; text-transform: uppercase !important; line-height: 3 !important; }
  button { background: rgb(0, 255, 0) !important; border-radius: 0 !important; }
  div, section, p { border: 3px dashed rgb(255, 0, 255) !important; margin: 9px !important; }
  growth-chat { color: rgb(255, 0, 0); font-size: 31px; }
  .gc-launcher, .gc-panel, .gc-input, .gc-msg { display: none !important; }
</style>'''
SAME_CLASSES = ('<div class="gc-root gc-panel" id="host-panel">host div</div>'
                '<button class="gc-launcher" id="host-button">host button</button>')


def test_host_css_does_not_leak_in_and_widget_css_does_not_leak_out(api, host, page):
    url = host.backend('isolated', reply('Styled by the widget.'))
    page.goto(host.page('hostile-css', embed(api, api_url=url, head=HOSTILE_CSS, body=SAME_CLASSES)))
    # the host page's own elements that share the widget's class names keep the host's styles
    host_panel = page.locator('#host-panel').evaluate('el => { const s = getComputedStyle(el); return [s.position, s.width, s.boxShadow, s.zIndex] }')
    assert host_panel[0] == 'static' and host_panel[1] != '370px' and host_panel[2] == 'none' and host_panel[3] == 'auto'
    assert page.locator('#host-button').evaluate('el => getComputedStyle(el).display') == 'none'   # the host's own rule
    assert page.locator('#host-button').evaluate('el => getComputedStyle(el).borderRadius') == '0px'
    # ... and nothing of the host's reaches inside the shadow root
    open_and_acknowledge(page)
    send(page, 'style check')
    expect(assistant_messages(page).first).to_contain_text('Styled by the widget.')
    style = lambda sel, props: page.locator(f'growth-chat {sel}').first.evaluate(
        f'el => {{ const s = getComputedStyle(el); return {json.dumps(props)}.map(p => s.getPropertyValue(p)) }}')
    assert style('.gc-launcher', ['display', 'background-color', 'border-radius']) == ['grid', 'rgb(42, 111, 151)', '50%']
    title = style('.gc-title', ['color', 'font-size', 'letter-spacing', 'text-transform', 'font-family'])
    assert title[:4] == ['rgb(255, 255, 255)', '16px', 'normal', 'none'] and 'Courier' not in title[4]
    msg = style('.gc-msg-assistant', ['color', 'font-size', 'border-top-style', 'margin-top', 'line-height'])
    assert msg[0] != 'rgb(255, 0, 0)' and msg[1] == '14.5px' and msg[2] == 'none' and msg[3] == '0px' and msg[4] != '93px'
    assert style('.gc-input', ['display'])[0] != 'none'
    assert composer(page).bounding_box()['height'] < 60     # sized in the shadow tree, not by a host-styled clone
    # nothing was added to the host's DOM: all of the widget lives in its shadow root
    assert page.evaluate('[...document.body.querySelectorAll("*")].map(e => e.tagName).join(",")') == \
        'H1,P,A,DIV,BUTTON,SCRIPT,GROWTH-CHAT'
    assert page.evaluate('document.head.querySelectorAll("script, style, link").length') == 1   # the host's own <style>
    shot(page, 'hostile-host-css')


def test_keyboard_only_and_screen_reader_semantics(api, host, page):
    url = host.backend('keyboard', reply('Hello ', 'from ', 'the ', 'keyboard.'))
    page.goto(host.page('keyboard', embed(api, api_url=url)))
    expect(launcher(page)).to_be_visible()
    page.locator('#host-link').focus()
    page.keyboard.press('Tab')                            # the launcher is the next stop after the host's content
    expect(launcher(page)).to_be_focused()
    expect(launcher(page)).to_have_accessible_name('Open chat')
    page.keyboard.press('Enter')
    panel = page.get_by_role('dialog', name='Chat with us')
    expect(panel).to_be_visible()
    expect(launcher(page)).to_have_attribute('aria-expanded', 'true')
    expect(launcher(page)).to_have_accessible_name('Close chat')
    ack = page.get_by_role('button', name='Got it')
    expect(ack).to_be_focused()                           # focus moves into the panel, to the notice
    page.keyboard.press('Enter')
    box = page.get_by_role('textbox', name='Your message')
    expect(box).to_be_focused()
    page.keyboard.type('Can you hear me?')
    page.keyboard.press('Enter')
    log = page.get_by_role('log', name='Conversation')
    expect(log).to_have_attribute('aria-live', 'polite')
    expect(log).to_contain_text('Hello from the keyboard.')
    expect(log).to_have_attribute('aria-busy', 'false')
    expect(page.locator('growth-chat .gc-msg-user .gc-sr-only')).to_have_text('You said:')
    page.keyboard.press('Tab')                            # the send button (disabled while empty) is skipped
    expect(page.get_by_role('button', name='Close chat').last).to_be_focused()
    page.keyboard.press('Shift+Tab')
    expect(box).to_be_focused()
    page.keyboard.press('Escape')                         # Escape closes and returns focus to the launcher
    expect(panel).to_be_hidden()
    expect(launcher(page)).to_be_focused()
    expect(launcher(page)).to_have_attribute('aria-expanded', 'false')


def test_phone_viewport_and_reduced_motion(api, host, browser):
    ctx = browser.new_context(viewport={'width': 375, 'height': 667}, device_scale_factor=2, is_mobile=True,
                              has_touch=True, reduced_motion='reduce')
    page = ctx.new_page()
    url = host.backend('phone', reply('Works on a phone.'))
    page.goto(host.page('phone', embed(api, api_url=url, head='<meta name="viewport" content="width=device-width, initial-scale=1">')))
    box = launcher(page).bounding_box()
    assert box['x'] + box['width'] <= 375 and box['y'] + box['height'] <= 667 and box['width'] >= 44   # a fat-finger target
    launcher(page).tap()
    page.locator('growth-chat .gc-gdpr-ack').tap()
    panel = page.locator('growth-chat .gc-panel')
    assert panel.bounding_box() == {'x': 0, 'y': 0, 'width': 375, 'height': 667}    # full screen on a phone
    composer(page).fill('hi from a phone')
    page.locator('growth-chat .gc-send').tap()
    expect(assistant_messages(page).first).to_contain_text('Works on a phone.')
    ib = composer(page).bounding_box()
    assert 0 <= ib['y'] and ib['y'] + ib['height'] <= 667
    assert panel.evaluate('el => getComputedStyle(el).animationName') == 'none'     # reduced motion respected
    shot(page, 'phone')
    page.get_by_role('button', name='Close chat').first.tap()
    expect(panel).to_be_hidden()
    ctx.close()
    # without the preference the panel animates in
    ctx = browser.new_context(reduced_motion='no-preference')
    page = ctx.new_page()
    page.goto(host.page('phone', embed(api, api_url=url)))
    launcher(page).click()
    assert page.locator('growth-chat .gc-panel').evaluate('el => getComputedStyle(el).animationName') == 'gc-rise'
    ctx.close()


# --- meeting slots (issue 10: calendar hand-off) -----------------------------------------------------------------

@pytest.fixture(scope='module')
def booking_api(pg, built, host, tmp_path_factory):
    "The real app with the calendar router: one rep (Ana) on a real Radicale calendar, a clock in business hours."
    with Radicale() as radicale:
        radicale.make_calendar('ana', 'work')
        path = tmp_path_factory.mktemp('widgetcal') / 'calendar.yaml'
        path.write_text(yaml.safe_dump(one_rep_calendar(radicale)))
        url = fresh_db(pg[1])
        clock = SettableClock()
        settings = app_settings(pg, url, leadchat_cors_origins=[ALLOWED, host.origin], leadchat_calendar_config=path)
        calendar = CalendarService(settings, load_calendar_config(path, settings), clock=clock)
        app = create_app(settings, clock=clock, calendar=calendar, knowledge_path=str(ROOT / 'knowledge'))
        with LiveServer(app) as srv:
            srv.db_url, srv.radicale = url, radicale
            yield srv


def slot_buttons(page: Page): return page.locator('growth-chat .gc-slot')


def test_a_hot_lead_books_a_meeting_with_a_slot_button(booking_api, host, browser):
    ctx = browser.new_context(viewport={'width': 1280, 'height': 800}, timezone_id='America/New_York')
    ctx.add_init_script(RECORD_EVENTS)
    page = ctx.new_page()
    errors, failed = [], []
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' and 'Failed to load resource' not in m.text else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.on('response', lambda r: failed.append(r.url) if r.status >= 400 else None)
    bodies = []
    page.on('request', lambda r: bodies.append((r.headers.get('zgc-session-id'), r.post_data_json))
            if r.url.endswith('/chat') and r.method == 'POST' else None)
    page.goto(host.page('booking', embed(booking_api, api_url=f'{booking_api.url}/chat')))
    open_and_acknowledge(page)
    send(page, HOT_WITH_EMAIL)
    offer = page.get_by_role('group', name='Times you can book')
    expect(offer.get_by_role('button')).to_have_count(3, timeout=30_000)
    expect(assistant_messages(page).first).to_contain_text('Here are 3 times')
    buttons = slot_buttons(page)
    for i in range(3): expect(buttons.nth(i)).to_be_enabled()          # once the reply is done
    texts = buttons.all_inner_texts()
    assert all(re.search(r' E[DS]T with Ana Ruiz$', t) for t in texts), texts   # in the visitor's zone (the browser's)
    labels = [t.removesuffix(' with Ana Ruiz') for t in texts]
    assert all(label in assistant_messages(page).first.inner_text() for label in labels)
    assert {k: v for k, v in bodies[0][1].items() if k not in ('consent', 'visitor_id')} == {'message': HOT_WITH_EMAIL, 'timezone': 'America/New_York'}
    assert bodies[0][1]['consent']['notice_version']                   # the notice acknowledgement went with it
    assert UUID4.match(bodies[0][1]['visitor_id'])                     # and the first-party visitor id (12_privacy)
    # keyboard: the buttons come right after the message text, before the input
    composer(page).focus()
    page.keyboard.press('Shift+Tab')
    expect(buttons.nth(2)).to_be_focused()
    page.keyboard.press('Shift+Tab')
    expect(buttons.nth(1)).to_be_focused()
    expect(buttons.nth(1)).to_have_accessible_name(texts[1])
    page.locator('growth-chat .gc-viewport').evaluate('el => el.scrollTop = el.scrollHeight')
    page.mouse.move(5, 5)                                 # no hover in the picture
    shot(page, 'slots-offered')

    buttons.nth(1).click()                                # the second time
    user_msgs = page.locator('growth-chat .gc-msg-user')
    expect(user_msgs).to_have_count(2)
    expect(user_msgs.nth(1)).to_have_text(re.compile(re.escape(labels[1]) + '$'))    # the label as the visitor's message
    expect(composer(page)).to_be_focused()                # the keyboard stays in the conversation
    booked = page.locator('growth-chat .gc-booked')
    expect(booked).to_have_text(f'Booked: {labels[1]} with Ana Ruiz', timeout=30_000)
    expect(assistant_messages(page).nth(1)).to_contain_text("You're booked: " + labels[1])
    for i in range(3): expect(buttons.nth(i)).to_be_disabled()          # that offer is done
    expect(buttons.nth(1)).to_have_class(re.compile(r'\bgc-slot-picked\b'))
    page.wait_for_function('window.__zgc.some(e => e.type === "zgc:meeting_booked")')
    sid, pick = bodies[1]
    assert pick['message'] == labels[1] and pick['timezone'] == 'America/New_York'
    assert re.fullmatch(r'intro\.ana\.\d{8}T\d{4}Z', pick['slot_id']), pick
    assert {b[0] for b in bodies} == {sid} and len(bodies) == 2
    (meeting,) = [e['detail'] for e in events(page) if e['type'] == 'zgc:meeting_booked']
    assert meeting['session_id'] == sid
    check_payloads(page, forbidden=['lee.park', 'acme', 'Ana', 'Ruiz', labels[1]])
    page.locator('growth-chat .gc-viewport').evaluate('el => el.scrollTop = el.scrollHeight')
    shot(page, 'slots-booked')
    with psycopg.connect(booking_api.db_url) as conn:
        rows = conn.execute('SELECT rep, status, start_at FROM calendar_bookings WHERE session_id = %s', [sid]).fetchall()
    assert [(rep, st) for rep, st, _ in rows] == [('ana', 'confirmed')]
    start = rows[0][2].astimezone(timezone.utc)
    assert meeting['meeting_start'] == start.strftime('%Y-%m-%dT%H:%M:%S.000Z')
    assert pick['slot_id'].endswith(start.strftime('%Y%m%dT%H%MZ'))     # the slot that was clicked
    events_in_calendar = []
    for _ in range(100):                                  # the calendar write may trail the reply
        if events_in_calendar := [ics for ics in booking_api.radicale.objects('ana', 'work').values() if 'UID' in ics]: break
        page.wait_for_timeout(100)
    assert len(events_in_calendar) == 1
    assert errors == [] and [u for u in failed if not u.endswith('/favicon.ico')] == []
    ctx.close()


SLOTS_A = [{'slot_id': 'intro.ana.20260324T0800Z', 'label': 'Tue 24 Mar 2026, 17:00–17:30 JST', 'rep': 'Ana Ruiz'},
           {'slot_id': 'intro.ana.20260325T0900Z', 'label': 'Wed 25 Mar 2026, 18:00–18:30 JST', 'rep': 'Ana Ruiz'},
           {'slot_id': 'intro.ana.20260326T0800Z', 'label': 'Thu 26 Mar 2026, 17:00–17:30 JST', 'rep': 'Ana Ruiz'}]
SLOTS_B = [{'slot_id': 'intro.ana.20260327T0800Z', 'label': 'Fri 27 Mar 2026, 17:00–17:30 JST', 'rep': 'Ana Ruiz'}]


def test_slot_offers_on_a_phone_newer_offers_failures_and_words(api, host, browser):
    url = host.backend('slots', reply('Here are 3 times that work for the team.', events=[('slots', {'slots': SLOTS_A})],
                                      done={'lead_level': 'hot', 'handoff_reason': 'hot_lead'}),
                       status(500),                                       # the first pick fails
                       reply('Friday works too.', events=[('slots', {'slots': SLOTS_B})]),
                       reply("You're booked: " + SLOTS_B[0]['label'],
                             events=[('meeting', {'label': SLOTS_B[0]['label'], 'rep': 'Ana Ruiz', 'start': '2026-03-27T08:00:00Z'})]))
    ctx = browser.new_context(viewport={'width': 375, 'height': 667}, device_scale_factor=2, is_mobile=True,
                              has_touch=True, reduced_motion='reduce', timezone_id='Asia/Tokyo')
    ctx.add_init_script(RECORD_EVENTS)
    page = ctx.new_page()
    page.goto(host.page('slots', embed(api, api_url=url, head='<meta name="viewport" content="width=device-width, initial-scale=1">')))
    launcher(page).tap()
    page.locator('growth-chat .gc-gdpr-ack').tap()
    send(page, 'I want to talk to someone')
    buttons = slot_buttons(page)
    expect(buttons).to_have_count(3)
    for i in range(3): expect(buttons.nth(i)).to_be_enabled()
    for i in range(3):                                    # fat-finger targets inside a phone's width
        b = buttons.nth(i).bounding_box()
        assert b['x'] >= 0 and b['x'] + b['width'] <= 375 and b['height'] >= 44, b
    assert buttons.first.evaluate('el => getComputedStyle(el).transitionDuration') == '0s'    # reduced motion
    shot(page, 'phone-slots')

    buttons.nth(0).tap()                                  # → 500: an inline error, and the offer can be used again
    expect(assistant_messages(page).nth(1).locator('.gc-inline-error')).to_have_text(re.compile("didn't come through"))
    for i in range(3): expect(buttons.nth(i)).to_be_enabled()
    send(page, 'Anything on Friday?')                     # typing instead of clicking: a newer offer
    expect(buttons).to_have_count(4)
    for i in range(3): expect(buttons.nth(i)).to_be_disabled()          # the older offer is closed ...
    expect(buttons.nth(3)).to_be_enabled()                              # ... the newer one is open
    assert 'zgc:meeting_booked' not in names(page)
    send(page, 'The Friday one please')                   # booked in words: a meeting closes the open offer
    expect(page.locator('growth-chat .gc-booked')).to_have_text(f"Booked: {SLOTS_B[0]['label']} with Ana Ruiz")
    expect(buttons.nth(3)).to_be_disabled()
    page.wait_for_function('window.__zgc.some(e => e.type === "zgc:meeting_booked")')
    (meeting,) = [e['detail'] for e in events(page) if e['type'] == 'zgc:meeting_booked']
    assert meeting['meeting_start'] == '2026-03-27T08:00:00.000Z'
    check_payloads(page, forbidden=['Ana', 'JST', 'Friday'])
    assert len({r['body']['visitor_id'] for r in host.requests('slots')}) == 1      # one visitor id on every message
    bodies = [{k: v for k, v in r['body'].items() if k not in ('consent', 'visitor_id')} for r in host.requests('slots')]
    assert bodies == [
        {'message': 'I want to talk to someone', 'timezone': 'Asia/Tokyo'},
        {'message': SLOTS_A[0]['label'], 'timezone': 'Asia/Tokyo', 'slot_id': SLOTS_A[0]['slot_id']},
        {'message': 'Anything on Friday?', 'timezone': 'Asia/Tokyo'},
        {'message': 'The Friday one please', 'timezone': 'Asia/Tokyo'},
    ]
    ctx.close()


def test_a_time_zone_the_server_does_not_know_is_dropped_not_fatal(api, host, browser):
    url = host.backend('tz', status(422, 'invalid_timezone'), reply('Hello.'))
    ctx = browser.new_context(timezone_id='America/Ciudad_Juarez')
    page = ctx.new_page()
    page.goto(host.page('tz', embed(api, api_url=url)))
    open_and_acknowledge(page)
    send(page, 'hi')
    expect(assistant_messages(page).first.locator('.gc-text')).to_have_text('Hello.')
    send(page, 'and again')
    expect(assistant_messages(page).nth(1).locator('.gc-text')).to_have_text('Hello.')
    bodies = [r['body'] for r in host.requests('tz')]
    assert ['consent' in b for b in bodies] == [True, True, False]     # the acknowledgement goes with the first turn
    assert [{k: v for k, v in b.items() if k not in ('consent', 'visitor_id')} for b in bodies] == [
        {'message': 'hi', 'timezone': 'America/Ciudad_Juarez'}, {'message': 'hi'}, {'message': 'and again'}]
    expect(fallback_view(page)).to_be_hidden()
    ctx.close()


# --- the API's widget asset routes ---------------------------------------------------------------------------

def raw_get(base_url: str, target: str) -> tuple[int, bytes]:
    "GET with the request target sent exactly as given (no client-side normalisation of ../ or %2e)."
    host, port = base_url.removeprefix('http://').split(':')
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f'GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n'.encode())
        data = b''
        while chunk := s.recv(65536): data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    return int(head.split()[1]), body


def test_asset_routes_cache_headers_and_compression(api, built):
    v, panel = built['version'], built['panel']
    raw_launcher = (DIST / 'chat.js').read_bytes()
    with api.client() as c:
        alias = c.get('/chat.js', headers={'Accept-Encoding': 'identity'})
        assert alias.status_code == 200 and alias.content == raw_launcher
        assert alias.headers['cache-control'] == 'public, max-age=300'
        assert alias.headers['content-type'] == 'text/javascript; charset=utf-8'
        assert alias.headers['x-content-type-options'] == 'nosniff' and 'content-encoding' not in alias.headers
        for name, raw in (('chat.js', raw_launcher), (panel, (DIST / 'widget' / v / panel).read_bytes())):
            for enc, suffix in (('br', '.br'), ('gzip', '.gz')):
                with c.stream('GET', f'/widget/{v}/{name}', headers={'Accept-Encoding': enc}) as r:
                    body = b''.join(r.iter_raw())
                assert r.status_code == 200 and r.headers['content-encoding'] == enc
                assert body == (DIST / 'widget' / v / (name + suffix)).read_bytes()
                if enc == 'gzip': assert gzip.decompress(body) == raw
                assert r.headers['cache-control'] == 'public, max-age=31536000, immutable'
                assert 'Accept-Encoding' in r.headers['vary'] and r.headers['access-control-allow-origin'] == '*'
        head = c.head(f'/widget/{v}/{panel}', headers={'Accept-Encoding': 'br'})
        assert head.status_code == 200 and head.content == b'' and int(head.headers['content-length']) == built['sizes']['panel']['brotli']
        assert c.get('/chat.js', headers={'Accept-Encoding': 'br;q=0, gzip'}).headers['content-encoding'] == 'gzip'
        # the panel is found from the alias: chat.js → widget/<version>/panel-<hash>.js
        assert panel in alias.text
        stale = c.get(f'/widget/0.0.1/chat.js')
        assert stale.status_code == 404 and stale.json()['error']['code'] == 'unknown_widget_version'
        assert v in stale.json()['error']['message']
        for bad in (f'/widget/{v}/manifest.json', f'/widget/{v}/{panel}.br', f'/widget/{v}/panel-000000000000.js',
                    '/widget/chat.js', f'/widget/{v}/', '/widget/%2e%2e/chat.js'):
            r = c.get(bad)
            assert r.status_code == 404 and r.headers['content-type'].startswith('application/json'), bad
        assert '/chat.js' not in c.get('/openapi.json').text      # static files, not API


@pytest.mark.parametrize('target', [
    '/widget/../../etc/passwd', '/widget/../manifest.json', '/widget/1.0.0/../../../../etc/passwd',
    '/widget/1.0.0/..%2F..%2Fmanifest.json', '/widget/%2e%2e/%2e%2e/etc/passwd', '/widget/1.0.0/%2e%2e%2fchat.js',
    '/widget/1.0.0/chat.js%00.png', '/widget/1.0.0//etc/passwd', '/chat.js/../../etc/passwd', '/widget/1.0.0/%5c..%5cchat.js',
])
def test_asset_routes_refuse_traversal(api, target):
    code, body = raw_get(api.url, target.replace('1.0.0', json.loads((DIST / 'manifest.json').read_text())['version']))
    assert code in (400, 404), (target, code)
    assert b'root:' not in body and b'"launcher"' not in body and b'customElements' not in body


def test_widget_not_built_is_a_clear_503(pg, api, tmp_path):
    app = create_app(app_settings(pg, api.db_url, leadchat_widget_dir=tmp_path / 'nowhere'), knowledge_path=str(ROOT / 'knowledge'))
    with LiveServer(app) as srv, srv.client() as c:
        for path in ('/chat.js', '/widget/1.0.0/chat.js'):
            r = c.get(path)
            assert r.status_code == 503 and r.json()['error']['code'] == 'widget_not_built'
            assert 'make widget' in r.json()['error']['message'] and 'LEADCHAT_WIDGET_DIR' in r.json()['error']['message']
        assert c.get('/healthz').status_code == 200       # the API itself is fine


# --- issue 21: load on intent, WCAG 2.1 AA (axe-core + keyboard), Markdown replies ------------------------------

def widget_requests(page: Page, api) -> list[str]:
    "Start recording the URLs the page fetches from the API (chat.js, the panel)."
    urls = []
    page.on('request', lambda r: urls.append(r.url.removeprefix(api.url)) if r.url.startswith(api.url) else None)
    return urls


def settle(page: Page):
    "Wait until the page has loaded and the browser has been idle (when an idle preload would have fetched the panel)."
    page.wait_for_load_state('load')
    page.evaluate('new Promise((r) => requestIdleCallback(() => setTimeout(r, 1000)))')


def is_panel(r): return '/panel-' in r.url


def test_a_page_view_without_the_chat_downloads_only_the_launcher_and_intent_fetches_the_panel(api, host, browser, built):
    url = host.backend('intent', reply('Hi.'))
    panel = f"/widget/{built['version']}/{built['panel']}"
    ctx = browser.new_context()
    page = ctx.new_page()
    urls = widget_requests(page, api)
    page.goto(host.page('intent', embed(api, api_url=url)))
    expect(launcher(page)).to_be_visible()
    settle(page)
    assert urls == ['/chat.js']                           # never touched: the launcher only, no idle preload
    with page.expect_request(is_panel):                   # the pointer over the launcher fetches the panel ...
        launcher(page).hover()
    launcher(page).click()
    expect(page.locator('growth-chat .gc-gdpr-ack')).to_be_visible()
    assert urls == ['/chat.js', panel]                    # ... once
    p2 = ctx.new_page()                                   # keyboard focus on the launcher is intent too
    urls2 = widget_requests(p2, api)
    p2.goto(host.page('intent', embed(api, api_url=url)))
    settle(p2)
    p2.locator('#host-link').focus()
    with p2.expect_request(is_panel):
        p2.keyboard.press('Tab')
    assert urls2 == ['/chat.js', panel]
    p3 = ctx.new_page()                                   # so is the proactive prompt being shown
    with p3.expect_request(is_panel):
        p3.goto(host.page('intent-prompt', embed(api, api_url=url, extra=' proactive-delay-ms="300"')))
    expect(p3.locator('growth-chat .gc-prompt')).to_be_visible()
    ctx.close()
    ctx = browser.new_context()
    page = ctx.new_page()                                 # preload="idle" remains an option
    with page.expect_request(is_panel):
        page.goto(host.page('intent-idle', embed(api, api_url=url, extra=' preload="idle"')))
    page = ctx.new_page()                                 # preload="open": not even on hover, only on open
    urls = widget_requests(page, api)
    page.goto(host.page('intent-open', embed(api, api_url=url, extra=' preload="open"')))
    launcher(page).hover()
    settle(page)
    assert urls == ['/chat.js']
    launcher(page).click()
    expect(page.locator('growth-chat .gc-gdpr-ack')).to_be_visible()
    assert urls == ['/chat.js', panel]
    ctx.close()


AXE = ROOT / 'widget' / 'node_modules' / 'axe-core' / 'axe.min.js'
VIEWPORTS = {'desktop': dict(viewport={'width': 1280, 'height': 800}),
             'phone': dict(viewport={'width': 375, 'height': 667}, device_scale_factor=2, is_mobile=True, has_touch=True)}


def axe_violations(page: Page) -> list:
    "axe-core's WCAG 2.0/2.1 A and AA violations on the whole page (the widget's open shadow root included)."
    if not page.evaluate('!!window.axe'): page.add_script_tag(content=AXE.read_text())
    return page.evaluate('''async () => (await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
        resultTypes: ['violations']})).violations.map((v) => ({id: v.id, help: v.help,
        nodes: v.nodes.map((n) => JSON.stringify(n.target) + ': ' + n.failureSummary)}))''')


@pytest.mark.parametrize('device', VIEWPORTS)
def test_axe_finds_no_violations_in_any_state(api, host, browser, device):
    url = host.backend(f'axe-{device}', gated('Here is **what** we do:\n\n', '- a [case study](https://example.com/cases)\n- `RAG` audits'),
                       reply('Pick a time.', events=[('slots', {'slots': SLOTS_A})]), status(500))
    ctx = browser.new_context(**VIEWPORTS[device], reduced_motion='reduce')
    page = ctx.new_page()
    meta = '<meta name="viewport" content="width=device-width, initial-scale=1">'
    page.goto(host.page(f'axe-{device}', embed(api, api_url=url, head=meta, extra=' proactive-delay-ms="0"')))
    seen = {}
    def audit(state):
        seen[state] = axe_violations(page)
    expect(page.locator('growth-chat .gc-prompt')).to_be_visible()
    audit('launcher and proactive prompt')
    page.keyboard.press('Escape')
    launcher(page).focus()
    page.keyboard.press('Escape')
    audit('launcher')
    launcher(page).click()
    expect(page.locator('growth-chat .gc-gdpr-ack')).to_be_visible()
    audit('privacy notice')
    page.locator('growth-chat .gc-gdpr-ack').click()
    audit('empty conversation')
    send(page, 'What do you do?')
    expect(page.locator('growth-chat .gc-typing')).to_be_visible()
    audit('typing indicator')
    host.release(f'axe-{device}', 3)
    expect(assistant_messages(page).first.locator('li')).to_have_count(2)
    expect(page.locator('growth-chat .gc-viewport')).to_have_attribute('aria-busy', 'false')
    audit('Markdown reply')
    send(page, 'When can we talk?')
    expect(slot_buttons(page)).to_have_count(3)
    for i in range(3): expect(slot_buttons(page).nth(i)).to_be_enabled()
    audit('slot buttons')
    send(page, 'And then?')
    expect(assistant_messages(page).nth(2).locator('.gc-inline-error')).to_be_visible()
    audit('inline error')
    page.locator('growth-chat .gc-end').click()
    expect(page.locator('growth-chat .gc-note')).to_be_visible()
    audit('conversation ended')
    page.goto(host.page(f'axe-down-{device}', embed(api, api_url=f'http://127.0.0.1:{closed_port()}/chat', head=meta)))
    launcher(page).click()
    send(page, 'hello?')
    expect(fallback_view(page)).to_be_visible()
    audit('fallback')
    ctx.close()
    assert len(seen) == 10 and all(v == [] for v in seen.values()), {k: v for k, v in seen.items() if v}


# The focused element (through shadow roots): its outline, and the outline's contrast with what is behind it.
FOCUS = '''() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  const rgba = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const up = (n) => n.parentElement || n.getRootNode().host || null;
  const bg = (n) => { for (; n; n = up(n)) { const c = rgba(getComputedStyle(n).backgroundColor); if (c.length === 3 || c[3] > 0) return c; } return [255, 255, 255]; };
  const s = getComputedStyle(el);
  const a = lum(rgba(s.outlineColor)), b = lum(bg(parseFloat(s.outlineOffset) < 0 ? el : up(el)));
  const inside = (n) => { for (; n; n = up(n)) if (n.classList && n.classList.contains('gc-panel')) return true; return false; };
  return {el: (el.getAttribute('aria-label') || el.textContent || el.tagName).trim().slice(0, 80), cls: String(el.className),
          style: s.outlineStyle, width: parseFloat(s.outlineWidth), contrast: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05),
          inPanel: inside(el)};
}'''


def focus_ring(page: Page) -> dict:
    "The focused element, asserted to show a focus indicator: an outline ≥ 2 px at ≥ 3:1 against its background."
    f = page.evaluate(FOCUS)
    assert f['style'] not in ('none', 'hidden') and f['width'] >= 2 and f['contrast'] >= 3, f
    return f


def test_keyboard_only_the_whole_flow_with_a_visible_focus_indicator_at_each_step(api, host, page):
    url = host.backend('kbd-flow', reply('We can help. See [our cases](https://example.com/cases).',
                                         events=[('slots', {'slots': SLOTS_A})]), reply('Booked it.'))
    page.goto(host.page('kbd-flow', embed(api, api_url=url)))
    page.locator('#host-link').focus()
    page.keyboard.press('Tab')
    assert focus_ring(page)['cls'] == 'gc-launcher'
    page.keyboard.press('Enter')
    expect(page.get_by_role('button', name='Got it')).to_be_focused()
    focus_ring(page)
    assert page.get_by_role('dialog', name='Chat with us').get_attribute('aria-modal') is None   # not modal beside the page
    page.keyboard.press('Enter')
    expect(composer(page)).to_be_focused()
    focus_ring(page)
    page.keyboard.type('Can we talk next week?')
    page.keyboard.press('Enter')
    expect(slot_buttons(page)).to_have_count(3)
    for i in range(3): expect(slot_buttons(page).nth(i)).to_be_enabled()
    stops = []
    for _ in range(12):                                   # Shift+Tab back through the panel up to "End chat"
        page.keyboard.press('Shift+Tab')
        stops.append(focus_ring(page))
        if stops[-1]['cls'] == 'gc-end': break
    names_ = [s['el'] for s in stops]
    assert names_[:3] == [SLOTS_A[2]['label'] + ' with Ana Ruiz', SLOTS_A[1]['label'] + ' with Ana Ruiz', SLOTS_A[0]['label'] + ' with Ana Ruiz']
    assert 'our cases' in names_ and stops[-1]['cls'] == 'gc-end' and 'Close chat' in names_, names_
    for _ in range(len(stops) - 2): page.keyboard.press('Tab')   # forward again to the second slot
    assert focus_ring(page)['el'].startswith(SLOTS_A[1]['label'])
    page.keyboard.press('Enter')                          # pick it
    expect(composer(page)).to_be_focused()
    expect(assistant_messages(page).nth(1)).to_contain_text('Booked it.')
    focus_ring(page)
    page.keyboard.press('Tab')                            # past the (disabled) send button to the launcher, now "Close chat"
    assert focus_ring(page)['cls'] == 'gc-launcher'
    page.keyboard.press('Shift+Tab')
    expect(composer(page)).to_be_focused()
    for _ in range(12):                                   # back to "End chat", and end the conversation from the keyboard
        page.keyboard.press('Shift+Tab')
        if focus_ring(page)['cls'] == 'gc-end': break
    page.keyboard.press('Enter')
    expect(page.locator('growth-chat .gc-note')).to_contain_text('You ended the conversation')
    expect(composer(page)).to_be_focused()                # the keyboard stays in the (new) conversation
    focus_ring(page)
    page.keyboard.press('Escape')
    expect(launcher(page)).to_be_focused()
    assert focus_ring(page)['cls'] == 'gc-launcher'
    expect(page.locator('growth-chat .gc-panel')).to_be_hidden()


# --- the privacy notice: its policy link (privacy-url) and its controls ----------------------------------------

PRIVACY = 'https://www.calderwood.example/privacy'


def test_privacy_url_links_the_notice_and_its_link_and_got_it_show_a_focus_ring(api, host, page):
    url = host.backend('privacy', reply('Hi.'))
    page.goto(host.page('privacy', embed(api, api_url=url, extra=f' privacy-url="{PRIVACY}"')))
    page.locator('#host-link').focus()
    page.keyboard.press('Tab')
    page.keyboard.press('Enter')                          # open from the keyboard: focus on "Got it"
    ack = page.get_by_role('button', name='Got it')
    expect(ack).to_be_focused()
    ring = focus_ring(page)
    assert ring['inPanel'] and ring['cls'] == 'gc-btn gc-gdpr-ack'
    link = page.locator('growth-chat .gc-gdpr').get_by_role('link', name='Privacy Policy')
    expect(link).to_have_attribute('href', PRIVACY)
    expect(link).to_have_attribute('target', '_blank')
    expect(link).to_have_attribute('rel', 'noopener noreferrer')
    expect(link).to_have_accessible_name('Privacy Policy')
    page.keyboard.press('Shift+Tab')                      # the link is a stop before the button
    expect(link).to_be_focused()
    assert focus_ring(page)['el'] == 'Privacy Policy'
    # styled: the link underlined in the notice's text, the button a real (pointer-sized) button
    assert 'underline' in link.evaluate('el => getComputedStyle(el).textDecorationLine')
    assert ack.bounding_box()['height'] >= 32
    assert axe_violations(page) == []
    shot(page, 'privacy-notice-link-focused')
    page.keyboard.press('Tab')
    expect(ack).to_be_focused()
    focus_ring(page)
    page.keyboard.press('Enter')
    expect(composer(page)).to_be_focused()


def test_an_unsafe_privacy_url_is_refused_and_the_notice_has_no_link(api, host, page):
    url = host.backend('privacy-bad', reply('Hi.'))
    page.goto(host.page('privacy-bad', embed(api, api_url=url, extra=' privacy-url="javascript:alert(1)"')))
    expect(launcher(page)).to_be_visible()
    warnings = [t for kind, t in page.console_messages if kind == 'warning']
    assert any('privacy-url' in t for t in warnings), warnings
    assert not [t for kind, t in page.console_messages if kind == 'error']
    launcher(page).click()
    notice = page.locator('growth-chat .gc-gdpr')
    expect(notice).to_contain_text('Privacy Policy')      # the words stay, as text
    expect(notice.get_by_role('link')).to_have_count(0)
    expect(page.get_by_role('button', name='Got it')).to_be_visible()


def test_demo_page_shows_the_two_lines_that_embed_the_widget(api, page):
    "The demo page's snippet is exactly the two lines it embeds the widget with (escaped, in a <pre><code>)."
    src = (ROOT / 'leadchat' / 'static' / 'demo.html').read_text()
    lines = re.search(r'<!-- The whole integration: two lines\. -->\n(<script .*</script>\n<growth-chat .*</growth-chat>)\n', src)
    assert lines, 'demo.html: the two embedding lines follow the "The whole integration" comment'
    page.goto(api.url + '/')
    code = page.locator('pre > code')
    expect(code).to_have_count(1)
    assert code.inner_text().strip() == lines.group(1)
    assert page.locator('pre > code *').count() == 0      # text, not markup
    expect(launcher(page)).to_be_visible()
    assert axe_violations(page) == []
    page.set_viewport_size({'width': 1280, 'height': 2400})
    shot(page, 'demo-page')
    page.set_viewport_size({'width': 375, 'height': 667})   # a phone: the snippet wraps, nothing scrolls sideways
    assert page.evaluate('document.documentElement.scrollWidth') <= 375
    assert code.evaluate('el => el.parentElement.scrollWidth <= el.parentElement.clientWidth')
    assert axe_violations(page) == []


def test_full_screen_the_panel_is_modal_focus_stays_inside_and_escape_returns_to_the_launcher(api, host, browser):
    # a narrow window: a phone, or a desktop browser zoomed in (the CSS viewport shrinks the same way)
    ctx = browser.new_context(viewport={'width': 400, 'height': 700})
    page = ctx.new_page()
    url = host.backend('modal', reply('Hello there.'))
    page.goto(host.page('modal', embed(api, api_url=url)))
    page.locator('#host-link').focus()
    page.keyboard.press('Tab')
    page.keyboard.press('Enter')
    dialog = page.get_by_role('dialog', name='Chat with us')
    expect(dialog).to_have_attribute('aria-modal', 'true')
    expect(page.get_by_role('button', name='Got it')).to_be_focused()
    page.keyboard.press('Enter')
    expect(composer(page)).to_be_focused()
    page.keyboard.type('hi')
    page.keyboard.press('Enter')
    expect(assistant_messages(page).first).to_contain_text('Hello there.')
    assert page.evaluate('!!document.querySelector("#host-link").closest("[inert]")')     # the hidden host page is inert
    assert page.evaluate('!document.querySelector("growth-chat").closest("[inert]")')
    for key in ['Tab'] * 8 + ['Shift+Tab'] * 8:         # Tab never walks out onto the host page
        page.keyboard.press(key)
        f = focus_ring(page)
        assert f['inPanel'], (key, f)
    page.keyboard.press('Escape')
    expect(dialog).to_be_hidden()
    expect(launcher(page)).to_be_focused()
    assert page.evaluate('!document.querySelector("[inert]")')                            # the host page is back
    page.set_viewport_size({'width': 1280, 'height': 800})                               # wide again: not modal
    launcher(page).click()
    expect(dialog).to_be_visible()
    assert dialog.get_attribute('aria-modal') is None and page.evaluate('!document.querySelector("[inert]")')
    page.set_viewport_size({'width': 400, 'height': 700})                                # narrowed while open: modal
    expect(dialog).to_have_attribute('aria-modal', 'true')
    ctx.close()


def test_input_resting_border_has_3_to_1_contrast(api, host, page):
    page.goto(host.page('border', embed(api, api_url=host.backend('border', reply('Hi.')))))
    open_and_acknowledge(page)
    page.locator('#host-link').focus()                    # resting: not focused
    ratio = composer(page).evaluate('''(el) => {
      const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
      const lum = (c) => c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
        .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
      let n = el.parentElement;
      while (getComputedStyle(n).backgroundColor.startsWith('rgba(0, 0, 0, 0')) n = n.parentElement;
      const a = lum(rgb(getComputedStyle(el).borderTopColor)), b = lum(rgb(getComputedStyle(n).backgroundColor));
      return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); }''')
    assert ratio >= 3, ratio


HOSTILE_MD = ('<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> **Bold** and *soft*, '
              '[a case](https://example.com/cases), [bad](javascript:window.__pwned=3), [data](data:text/html,<b>x</b>), '
              '<a href="javascript:window.__pwned=4">raw link</a>\n\n- one\n- **two**\n\n' + '**[' * 300 + 'deep' + ')]**' * 300)


def test_markdown_replies_render_only_allowed_elements(api, host, page):
    url = host.backend('markdown', reply(HOSTILE_MD))
    page.goto(host.page('markdown', embed(api, api_url=url)))
    open_and_acknowledge(page)
    send(page, 'show me')
    text = assistant_messages(page).first.locator('.gc-text')
    expect(text.locator('li')).to_have_count(2)
    expect(text.locator('strong').first).to_have_text('Bold')
    expect(text.locator('em').first).to_have_text('soft')
    link = text.get_by_role('link', name='a case')
    expect(link).to_have_attribute('href', 'https://example.com/cases')
    expect(link).to_have_attribute('target', '_blank')
    expect(link).to_have_attribute('rel', 'noopener noreferrer')
    expect(text).to_contain_text('<img src=x onerror="window.__pwned=1">')     # markup shows as text
    tags = text.evaluate('el => [...new Set([...el.querySelectorAll("*")].map((e) => e.tagName))].sort()')
    assert set(tags) <= {'P', 'UL', 'OL', 'LI', 'STRONG', 'EM', 'CODE', 'A'}, tags
    hrefs = text.evaluate('el => [...el.querySelectorAll("a")].map((a) => a.getAttribute("href"))')
    assert hrefs == ['https://example.com/cases'], hrefs
    assert page.evaluate('window.__pwned') is None
    expect(text).to_contain_text('deep')
