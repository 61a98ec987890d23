"""Issue 19 items 3 and 4: the console's Experiments page. Every staff member sees the experiments, the metrics per arm
with intervals and p-values, the conversion plot and the SRM warning; only an admin starts, stops or halts an arm —
audited as console:<username> — and a change someone else made first is a conflict shown as an error. Streamlit's
AppTest drives the real page against the embedded PostgreSQL."""
import asyncio
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from streamlit.testing.v1 import AppTest

from leadchat import flags as fl
from leadchat.config import get_settings
from leadchat.console import close_backends, get_backend
from leadchat.db import migrate
from leadchat.experiments import Experiment, create_experiment, start, stop
from leadchat.staff import add_staff_user
from tests.conftest import console_backend, fresh_db, rows as q

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / 'console' / 'app.py'
PAGE = ('pages/experiments.py', 'Experiments', 'experiments')
PASSWORD = 'correct horse battery staple'




@pytest.fixture(scope='module')
def app_file() -> Path:
    "console/app.py, which lists the Experiments page in its Analytics section."
    assert repr(PAGE) in APP.read_text(), 'console/app.py does not list the Experiments page'
    return APP


def exposures(url, experiment, counts: dict[str, int], *, handoff: dict[str, int] | None = None,
              fallbacks: dict[str, int] | None = None):
    """Sessions exposed per arm (one statement each), the first `handoff[arm]` of them offered a hand-off on turn 1, the
    first `fallbacks[arm]` with a fallback on that turn."""
    handoff, fallbacks = handoff or {}, fallbacks or {}
    with psycopg.connect(url) as c:
        for arm, n in counts.items():
            prefix = f'{experiment}-{arm}-{uuid.uuid4().hex[:6]}-'
            c.execute("INSERT INTO analytics_events (session_id, event_type, turn_index, payload) SELECT %s::text || g, "
                      "'experiment_exposure', 1, jsonb_build_object('experiment', %s::text, 'arm', %s::text) "
                      "FROM generate_series(1, %s::int) g", [prefix, experiment, arm, n])
            c.execute("INSERT INTO analytics_events (session_id, event_type, turn_index, payload) SELECT %s::text || g, "
                      "CASE WHEN g <= %s::int THEN 'handoff_proposed' ELSE 'session_started' END, 1, "
                      "'{\"lead_level\": \"warm\"}' FROM generate_series(1, %s::int) g", [prefix, handoff.get(arm, 0), n])
            c.execute("INSERT INTO analytics_events (session_id, event_type, turn_index, payload) SELECT %s::text || g, "
                      "'llm_generation_failure', 1, '{}' FROM generate_series(1, %s::int) g", [prefix, fallbacks.get(arm, 0)])


@pytest.fixture(scope='module')
def world(pg, app_file):
    url = fresh_db(pg[1])
    asyncio.run(migrate(url))
    with console_backend(pg, url, PASSWORD, 'Dana Ops') as (env, backend):

        async def setup(conn):
            for name, target, arms in [('skewed_copy', 'proposal_copy', ('standard', 'short')),
                                       ('flow_test', 'booking_flow', ('slots_in_chat', 'handoff_only')),
                                       ('quiet_prompt', 'prompt_layer', ('standard', 'concise')),
                                       ('stall_test', 'stall_threshold', (6, 3))]:
                await fl.create_flag(conn, fl.multivariate(f'{name}_flag', dict.fromkeys(arms, 0.5)), by='test')
                await create_experiment(conn, Experiment(name, target, f'{name}_flag', description=f'{name} test'), by='test')
            await start(conn, 'skewed_copy', by='test')
            await start(conn, 'flow_test', by='test')
            await start(conn, 'stall_test', by='test')
        backend.conn(setup)
        exposures(url, 'skewed_copy', {'standard': 5500, 'short': 4500}, handoff={'standard': 550, 'short': 540})
        exposures(url, 'flow_test', {'slots_in_chat': 300, 'handoff_only': 310}, handoff={'slots_in_chat': 30, 'handoff_only': 45})
        exposures(url, 'stall_test', {'6': 250, '3': 260}, fallbacks={'6': 3, '3': 40})
        yield dict(url=url, backend=backend, app=app_file)


def signed_in_as(world, username: str, experiment: str | None = None) -> AppTest:
    at = AppTest.from_file(str(world['app']), default_timeout=180).run()
    at.text_input(key='sign_in_username').set_value(username)
    at.text_input(key='sign_in_password').set_value(PASSWORD)
    at.button(key='FormSubmitter:staff_sign_in-Sign in').click().run()
    assert not at.exception and at.title[0].value == 'Sessions', at.exception
    at.switch_page(PAGE[0]).run()
    assert not at.exception, at.exception
    assert at.title[0].value == 'Experiments'
    if experiment: at.selectbox(key='x_name').set_value(experiment).run()
    assert not at.exception, at.exception
    return at


COLUMN = {'x_list': 'kind', 'x_summary': 'exposed', 'x_history': 'change'}      # a column only that table has


def frame(at, key) -> list[dict]:
    "The rows of the page's table `key` ([] when the page does not show it)."
    found = [d.value for d in at.dataframe if COLUMN[key] in d.value.columns]
    assert len(found) <= 1, f'{len(found)} tables have a {COLUMN[key]!r} column'
    return found[0].to_dict('records') if found else []


def change(at: AppTest, action: str, arm: str | None = None, reason: str = '') -> AppTest:
    at.radio(key='x_action').set_value(action)
    if arm is not None: at.selectbox(key='x_arm').set_value(arm)
    at.text_input(key='x_reason').set_value(reason)
    return at.button(key='FormSubmitter:x_change-Apply').click().run()


def experiment(world, name) -> dict: return q(world['url'], 'SELECT * FROM experiments WHERE name = %s', name)[0]


def test_an_agent_sees_the_metrics_the_plot_and_the_srm_warning_but_cannot_change_anything(world):
    at = signed_in_as(world, 'ana', 'skewed_copy')
    listed = {r['experiment']: r for r in frame(at, 'x_list')}
    assert {'skewed_copy', 'flow_test', 'quiet_prompt'} <= set(listed) and listed['quiet_prompt']['status'] == 'draft'
    summary = {r['arm']: r for r in frame(at, 'x_summary')}
    assert set(summary) == {'standard (control)', 'short'}
    assert summary['standard (control)']['exposed'] == '5,500' and summary['short']['exposed'] == '4,500'
    assert summary['short']['handoff'].startswith('12.0% [') and summary['short']['handoff p']      # 540/4500 vs 550/5500
    assert summary['standard (control)']['handoff'].startswith('10.0% [')
    assert [m.value for m in at.metric] == ['5,500', '4,500']
    warnings = [w.value for w in at.warning]
    assert any('Sample ratio mismatch' in w and '5,500' in w for w in warnings), warnings
    charts = at.get('plotly_chart')
    assert len(charts) == 2
    fig = json.loads(charts[0].proto.spec)
    assert {t.get('name') for t in fig['data']} >= {'standard (control)', 'short'}
    assert any(t.get('fill') == 'toself' for t in fig['data'])                        # the interval bands
    # no change form for an agent, and the page says why
    assert not any(b.key == 'FormSubmitter:x_change-Apply' for b in at.button)
    assert any('for admins' in i.value for i in at.info)


def test_no_srm_warning_on_a_balanced_split_and_an_empty_experiment_is_an_honest_empty_page(world):
    at = signed_in_as(world, 'ana', 'flow_test')
    assert not any('Sample ratio mismatch' in w.value for w in at.warning)
    assert any('the split matches the weights' in c.value for c in at.caption)
    at.selectbox(key='x_name').set_value('quiet_prompt').run()
    assert not at.exception, at.exception
    assert any('No sessions exposed yet' in i.value for i in at.info) and not frame(at, 'x_summary')
    assert not at.get('plotly_chart')


def test_an_admin_halts_an_arm_audited_under_their_name_and_the_page_shows_who_and_why(world):
    at = signed_in_as(world, 'dpo', 'flow_test')
    change(at, 'halt an arm', 'handoff_only', 'too many hand-offs fail in this arm')
    assert not at.exception, at.exception
    assert any('flow_test: halt an arm applied' in s.value for s in at.success), [e.value for e in at.error]
    e = experiment(world, 'flow_test')
    assert (e['status'], e['halted_arm'], e['updated_by']) == ('halted', 'handoff_only', 'console:dpo')
    (audit,) = q(world['url'], "SELECT * FROM experiment_audit WHERE experiment = 'flow_test' AND action = 'halt'")
    assert audit['by'] == 'console:dpo' and audit['new']['halt_reason'] == 'too many hand-offs fail in this arm'
    again = signed_in_as(world, 'ana', 'flow_test')
    assert any('handoff_only' in x.value and 'console:dpo' in x.value and 'too many hand-offs' in x.value for x in again.error)
    assert [r['change'] for r in frame(again, 'x_history')][:1] == ['halt']


def test_a_change_made_meanwhile_by_someone_else_is_a_conflict_and_is_not_overwritten(world):
    at = signed_in_as(world, 'dpo', 'skewed_copy')                       # the admin is looking at the experiment
    world['backend'].conn(stop, 'skewed_copy', by='cli:ops')            # someone else, from the CLI, first
    change(at, 'halt an arm', 'short', 'looks worse')
    assert any('Not changed:' in e.value and 'changed by cli:ops' in e.value for e in at.error), [e.value for e in at.error]
    e = experiment(world, 'skewed_copy')
    assert (e['status'], e['halted_arm'], e['updated_by']) == ('stopped', None, 'cli:ops')


def test_an_admin_creates_a_draft_from_the_page_and_bad_definitions_are_refused(world):
    at = signed_in_as(world, 'dpo')
    at.text_input(key='x_new_name').set_value('Bad Name!')
    at.button(key='FormSubmitter:x_create-Create as a draft').click().run()
    assert any(e.value.startswith('Not created:') and 'is not valid' in e.value for e in at.error), [e.value for e in at.error]
    at.text_input(key='x_new_name').set_value('copy_again')
    at.selectbox(key='x_new_target').set_value('proposal_copy')
    at.selectbox(key='x_new_flag').set_value('quiet_prompt_flag')          # standard/concise: not proposal_copy's values
    at.button(key='FormSubmitter:x_create-Create as a draft').click().run()
    assert any('Not created:' in e.value and 'does not accept' in e.value for e in at.error), [e.value for e in at.error]
    at.selectbox(key='x_new_flag').set_value('skewed_copy_flag')
    at.text_input(key='x_new_about').set_value('the short copy, again')
    at.button(key='FormSubmitter:x_create-Create as a draft').click().run()
    assert not at.exception and any('copy_again created as a draft' in x.value for x in at.success), [e.value for e in at.error]
    e = experiment(world, 'copy_again')
    assert (e['status'], e['flag'], e['updated_by'], e['description']) == ('draft', 'skewed_copy_flag', 'console:dpo', 'the short copy, again')
    assert 'copy_again' in {r['experiment'] for r in frame(at, 'x_list')}
    assert not any(b.key == 'FormSubmitter:x_create-Create as a draft' for b in signed_in_as(world, 'ana').button)


@pytest.mark.parametrize('action, arm, reason, why', [
    ('halt an arm', 'concise', '', 'names its reason'),                   # no reason
    ('stop', None, '', 'has not started'),                                # a draft
])
def test_bad_changes_change_nothing_and_say_why(world, action, arm, reason, why):
    before = experiment(world, 'quiet_prompt')
    at = change(signed_in_as(world, 'dpo', 'quiet_prompt'), action, arm, reason)
    assert not at.exception and any(e.value.startswith('Not changed:') and why in e.value for e in at.error), [e.value for e in at.error]
    assert experiment(world, 'quiet_prompt')['version'] == before['version']


def test_the_page_on_its_own_shows_an_unauthenticated_visitor_only_the_sign_in(world):
    at = AppTest.from_file(str(ROOT / 'console' / PAGE[0]), default_timeout=180).run()
    assert not at.exception, at.exception
    assert not at.dataframe and not at.get('plotly_chart') and all(t.value != 'Experiments' for t in at.title)
    assert at.text_input(key='sign_in_password').proto.type == 1       # the password field of the sign-in form


def test_an_arm_over_its_guardrail_is_shown_before_the_relay_halts_it(world):
    at = signed_in_as(world, 'ana', 'stall_test')
    over = [w.value for w in at.warning if 'Over a guardrail now' in w.value]
    assert len(over) == 1 and '3: fallback rate 15.38% of 260 turns > 5.00%' in over[0], [w.value for w in at.warning]
    at.selectbox(key='x_name').set_value('flow_test').run()
    assert not any('Over a guardrail now' in w.value for w in at.warning)
