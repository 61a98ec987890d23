"""Issue 19 item 5: the console's Shadow routing page — any staff member sees the running shadow policy, the
disagreement rate with its counts, a plotly bar chart of the (live → shadow) pairs and the example turns, each linked to
its session page (a hostile session id is escaped in the link and printed without control characters); nothing yet is
said honestly. Streamlit's AppTest drives the real page against the embedded PostgreSQL."""
import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from leadchat.config import get_settings
from leadchat.console import close_backends, get_backend
from leadchat.db import migrate
from leadchat.staff import add_staff_user
from tests.conftest import fresh_db

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / 'console' / 'app.py'
PAGE = 'pages/shadow.py'
PASSWORD = 'correct horse battery staple'
HOSTILE = 'x"><script>alert(1)</script>&session=evil#\x1b[31m\nnext'


@pytest.fixture(scope='module')
def app() -> Path:
    "console/app.py, which lists the page in PAGES['Tuning']."
    assert PAGE in APP.read_text(), 'console/app.py does not list the Shadow routing page'
    return APP


@pytest.fixture(scope='module')
def world(pg):
    url = fresh_db(pg[1])
    asyncio.run(migrate(url))
    env = dict(DATABASE_URL=url, RAG_RELEVANCE_THRESHOLD='0.263', BUSINESS_HOURS_TIMEZONE='Europe/Madrid',
               HANDOFF_CHANNELS='crm', LEADCHAT_HOME=str(pg[0].leadchat_home), STALL_TURN_THRESHOLD='6')
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        get_settings.cache_clear()
        backend = get_backend(get_settings())
        backend.conn(add_staff_user, 'ana', PASSWORD, 'Ana Ruiz')          # an agent: every staff member may look
        yield dict(url=url, backend=backend)
        close_backends()
    get_settings.cache_clear()


def execute(url, sql, *args):
    with psycopg.connect(url, autocommit=True) as c: c.execute(sql, args)


def experiment(url, name, status, policy, *, started=True):
    execute(url, "INSERT INTO experiments (name, kind, target, status, policy, updated_by, started_at, description) "
                 "VALUES (%s, 'shadow', 'routing', %s, %s::jsonb, 'cli:ops', CASE WHEN %s THEN now() - interval '1 hour' END, %s)",
            name, status, json.dumps(policy), started, 'a looser hot-lead rule')


def turn(url, sid, ti, live, shadow, name, minutes_ago):
    payload = {'lead_level': 'warm', 'route': live, 'routing': {'selected': live, 'why': f'not hot: authority not confirmed ({ti})'},
               'shadow': {'experiment': name, 'route': shadow, 'live': live, 'agree': live == shadow}}
    execute(url, 'INSERT INTO analytics_events (session_id, event_type, turn_index, payload, created_at) VALUES (%s, %s, %s, %s::jsonb, %s)',
            sid, 'turn_completed', ti, json.dumps(payload), datetime.now(timezone.utc) - timedelta(minutes=minutes_ago))


def shadow_page(app: Path) -> AppTest:
    at = AppTest.from_file(str(app), default_timeout=180).run()
    at.text_input(key='sign_in_username').set_value('ana')
    at.text_input(key='sign_in_password').set_value(PASSWORD)
    at.button(key='FormSubmitter:staff_sign_in-Sign in').click().run()
    assert not at.exception and at.title[0].value == 'Sessions', at.exception
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.title[0].value == 'Shadow routing'
    return at


def texts(at) -> str: return ' '.join(x.value for x in [*at.info, *at.warning, *at.success, *at.error, *at.markdown, *at.caption])


def test_no_shadow_policy_yet(world, app):
    at = shadow_page(app)
    assert 'No shadow policy has been set up yet' in texts(at)
    assert not at.metric and not at.get('plotly_chart')


def test_a_running_policy_with_no_turns_yet_says_so(world, app):
    experiment(world['url'], 'looser_hot', 'running', {'hot_lead_rule': 'two_of_three'})
    at = shadow_page(app)
    policy = at.dataframe[0].value.to_dict('records')
    assert {r['rule']: r['candidate'] for r in policy} == {'hot-lead rule': 'two_of_three', 'stall threshold (turns)': '6 (as live)'}
    assert 'No turns evaluated yet' in texts(at)
    assert not at.metric and not at.get('plotly_chart')


def test_the_rate_the_pairs_and_the_examples_with_escaped_links(world, app):
    url = world['url']
    for ti, (live, sh) in enumerate([('respond', 'respond'), ('respond', 'hot_lead'), ('respond', 'hot_lead'), ('hot_lead', 'hot_lead')], 1):
        turn(url, 'sess-a', ti, live, sh, 'looser_hot', 30 - ti)
    turn(url, HOSTILE, 1, 'respond', 'respond', 'looser_hot', 20)
    turn(url, HOSTILE, 2, 'stall', 'hot_lead', 'looser_hot', 19)
    turn(url, 'sess-c', 1, 'book_slot', 'book_slot', 'looser_hot', 10)
    turn(url, 'sess-d', 1, 'respond', 'hot_lead', 'another_policy', 5)          # not this policy's turn
    at = shadow_page(app)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {'Turns evaluated': '7', 'Disagreements': '3', 'Disagreement rate': '42.9%',
                       'Sessions with a disagreement': '2 of 3'}
    charts = at.get('plotly_chart')
    assert len(charts) == 1
    bar = json.loads(charts[0].proto.spec)['data'][0]
    assert sorted(zip(bar['y'], bar['x'])) == [('respond → hot_lead', 2), ('stall → hot_lead', 1)]
    pairs = {(r['live'], r['shadow']): r['turns'] for r in at.dataframe[1].value.to_dict('records')}
    assert pairs == {('respond', 'respond'): 2, ('respond', 'hot_lead'): 2, ('hot_lead', 'hot_lead'): 1,
                     ('stall', 'hot_lead'): 1, ('book_slot', 'book_slot'): 1}
    ex = at.dataframe[2].value.to_dict('records')
    assert [(r['turn'], r['live'], r['shadow']) for r in ex] == [(2, 'stall', 'hot_lead'), (2, 'respond', 'hot_lead')]
    hostile, plain = ex
    assert plain['session'] == 'sess-a' and plain['open'] == 'session?session=sess-a'
    assert plain['why (live routing)'] == 'not hot: authority not confirmed (2)'
    # the hostile id: printed without control characters, and one opaque query value in its link
    assert '\x1b' not in hostile['session'] and '\n' not in hostile['session']
    link = urlsplit(hostile['open'])
    assert link.path == 'session' and not link.fragment and '<' not in hostile['open'] and '"' not in hostile['open']
    assert parse_qs(link.query) == {'session': [HOSTILE]}
    # the window: none of these turns is older than a day, and the experiment started an hour ago
    at.radio(key='sh_window').set_value('last 24 hours').run()
    assert {m.label: m.value for m in at.metric}['Turns evaluated'] == '7'


def test_a_stopped_policy_still_shows_what_it_recorded(world, app):
    url = world['url']
    execute(url, "UPDATE experiments SET status = 'stopped', stopped_at = now() WHERE name = 'looser_hot'")
    experiment(url, 'all_agree', 'running', {})
    turn(url, 'sess-e', 1, 'respond', 'respond', 'all_agree', 1)
    at = shadow_page(app)
    assert at.selectbox(key='sh_name').value == 'all_agree'          # the running one first
    assert 'agreed with the live policy on every turn' in texts(at) and not at.get('plotly_chart')
    at.selectbox(key='sh_name').set_value('looser_hot').run()
    assert not at.exception, at.exception
    assert 'looser_hot is stopped' in texts(at)
    assert {m.label: m.value for m in at.metric}['Disagreements'] == '3'
