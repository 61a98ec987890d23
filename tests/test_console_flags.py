"""Issue 19 item 1: the console's Feature flags page (admins only) — the flags as the service serves them, a change
(kill, unkill, ramp, value) audited under the staff member's name, and a conflict instead of an overwrite when someone
else changed the flag first. Streamlit's AppTest drives the real page against the embedded PostgreSQL."""
from pathlib import Path

import asyncio

import psycopg
import pytest
from psycopg.rows import dict_row
from streamlit.testing.v1 import AppTest

from leadchat.config import get_settings
from leadchat.console import close_backends, get_backend
from leadchat.db import migrate
from leadchat.flags import set_ramp
from leadchat.staff import add_staff_user
from tests.conftest import console_backend, fresh_db, rows as q

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / 'console' / 'app.py'
PASSWORD = 'correct horse battery staple'




@pytest.fixture(scope='module')
def world(pg):
    url = fresh_db(pg[1])
    asyncio.run(migrate(url))
    with console_backend(pg, url, PASSWORD, 'Dana Ops') as (env, backend): yield dict(url=url, backend=backend)


def signed_in_as(username: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.text_input(key='sign_in_username').set_value(username)
    at.text_input(key='sign_in_password').set_value(PASSWORD)
    at.button(key='FormSubmitter:staff_sign_in-Sign in').click().run()
    assert not at.exception and at.title[0].value == 'Sessions', at.exception
    at.switch_page('pages/flags.py').run()
    assert not at.exception, at.exception
    return at


def change(at: AppTest, name: str, action: str, amount: str = '', *, pick: bool = True) -> AppTest:
    if pick: at.selectbox(key='f_name').set_value(name).run()
    at.radio(key='f_action').set_value(action)
    at.text_input(key='f_amount').set_value(amount)
    return at.button(key='FormSubmitter:f_change-Apply').click().run()


def flag(world, name) -> dict: return q(world['url'], 'SELECT * FROM flags WHERE name = %s', name)[0]


def test_an_agent_is_refused_the_flags_page(world):
    at = signed_in_as('ana')
    assert any('for admins only' in e.value for e in at.error)
    assert not at.dataframe


def test_an_admin_sees_the_kill_switches_kills_one_and_the_change_is_audited_under_their_name(world):
    at = signed_in_as('dpo')
    shown = {r['flag']: r for r in at.dataframe[0].value.to_dict('records')}
    assert {'booking_in_chat', 'proactive_prompt', 'hosted_model', 'rag_answers', 'slack_delivery'} <= set(shown)
    assert shown['slack_delivery']['serves'] == '100%'
    change(at, 'slack_delivery', 'kill')
    assert not at.exception, at.exception
    assert any('slack_delivery: kill applied' in s.value for s in at.success), [e.value for e in at.error]
    f = flag(world, 'slack_delivery')
    assert (f['killed'], f['updated_by']) == (True, 'console:dpo')
    (audit,) = q(world['url'], "SELECT * FROM flag_audit WHERE flag = 'slack_delivery' AND action = 'kill'")
    assert audit['by'] == 'console:dpo' and audit['old']['killed'] is False and audit['new']['killed'] is True
    change(signed_in_as('dpo'), 'slack_delivery', 'unkill')
    assert flag(world, 'slack_delivery')['killed'] is False


def test_a_change_made_meanwhile_by_someone_else_is_a_conflict_and_is_not_overwritten(world):
    at = signed_in_as('dpo')
    at.selectbox(key='f_name').set_value('rag_answers').run()              # the admin is looking at the flag
    world['backend'].conn(set_ramp, 'rag_answers', 50, by='cli:ops')      # someone else, from the CLI, first
    change(at, 'rag_answers', 'ramp', '10', pick=False)
    assert any('Not changed:' in e.value and 'changed by cli:ops' in e.value for e in at.error), [e.value for e in at.error]
    assert float(flag(world, 'rag_answers')['ramp']) == 50.0              # the other change stands
    change(at, 'rag_answers', 'ramp', '10', pick=False)                   # the page now shows it: applying again works
    assert any('rag_answers: ramp applied' in s.value for s in at.success), [e.value for e in at.error]
    assert float(flag(world, 'rag_answers')['ramp']) == 10.0


@pytest.mark.parametrize('action, amount, why', [('ramp', '150', 'ramp'), ('ramp', 'lots', 'a ramp is a number'),
                                                 ('set value', 'maybe', '')])
def test_bad_input_changes_nothing_and_says_why(world, action, amount, why):
    before = flag(world, 'booking_in_chat')
    at = change(signed_in_as('dpo'), 'booking_in_chat', action, amount)
    assert not at.exception and any(e.value.startswith('Not changed:') and why in e.value for e in at.error), [e.value for e in at.error]
    assert flag(world, 'booking_in_chat')['version'] == before['version']
