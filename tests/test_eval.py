"""The committed conversation eval (eval/conversations.yaml) on the offline engine, over the real chat API:
CI fails when the pass rate drops below the file's `min_pass_rate` or any reply leaks a price or the prompt."""
import json
from pathlib import Path

import pytest

from leadchat.config import Settings
from leadchat.evaluate import EvalError, evaluate, load_eval, report_markdown, write_report

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / 'eval' / 'conversations.yaml'


def eval_settings(pg):
    return Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                    leadchat_home=pg[0].leadchat_home, leadchat_company_name='Calderwood AI')


def test_the_eval_set_is_big_enough_and_covers_injection():
    ev = load_eval(EVAL)
    assert len(ev.cases) >= 40 and ev.min_pass_rate >= 0.9
    tags = [t for c in ev.cases for t in c.tags]
    assert tags.count('injection') >= 6 and {'hot_lead', 'explicit_request', 'stall', 'pricing', 'negative_persona'} <= set(tags)


def test_offline_eval_passes_its_threshold(pg, tmp_path):
    rep = evaluate(EVAL, eval_settings(pg), provider='offline', knowledge_path=str(ROOT / 'knowledge'), progress=False)
    md, js = write_report(rep, tmp_path / 'eval.md')
    failures = [f'{r.id}: {r.failures}' for r in rep.results if not r.passed]
    assert rep.forbidden_total == 0, failures
    assert rep.ok, f'pass rate {rep.pass_rate:.1%} below {rep.min_pass_rate:.0%}: {failures}'
    data = json.loads(js.read_text())
    assert data['cases'] == len(rep.results) and data['provider'] == 'offline' and '| cases passed |' in md.read_text()
    # every case really ran: a hand-off where one was expected, and the state was read back
    assert all(r.levels for r in rep.results) and any(r.handoff_reason == 'stall' for r in rep.results)


def test_a_failing_expectation_fails_the_run(pg, tmp_path):
    f = tmp_path / 'strict.yaml'
    f.write_text('min_pass_rate: 1\ncases:\n  - id: wrong\n    turns: ["What case studies do you have?"]\n'
                 '    expect: {handoff_reason: hot_lead, handoff_turn: 1}\n')
    rep = evaluate(f, eval_settings(pg), provider='offline', knowledge_path=str(ROOT / 'knowledge'), progress=False)
    assert not rep.ok and rep.results[0].failures[0] == 'handoff_reason: expected hot_lead, got None'
    assert '❌' in report_markdown(rep) and '## Failures' in report_markdown(rep)


@pytest.mark.parametrize('text,msg', [
    ('cases: "not a list"', 'cases'),
    ('cases:\n  - id: x\n    turns: ["' + 'a' * 4001 + '"]', 'longer than 4000'),
    ('cases:\n  - id: x\n    turns: ["hi"]\n    expect: {handoff_turn: 0}', 'handoff_turn'),
    ('cases:\n  - id: x\n    turns: ["hi"]\n    expect: {flags: {is_admin: true}}', 'is_admin'),
    ('cases:\n  - id: x\n    turns: [{say: hi}]', 'turns'),
    ('\x00\x01binary', 'not valid YAML'),
    ('min_pass_rate: 2\ncases: [{id: x, turns: [hi]}]', 'min_pass_rate'),
])
def test_bad_eval_files_are_refused_with_a_clear_error(tmp_path, text, msg):
    f = tmp_path / 'bad.yaml'
    f.write_text(text)
    with pytest.raises(EvalError, match=msg): load_eval(f)


def test_an_oversized_eval_file_is_refused(tmp_path):
    f = tmp_path / 'huge.yaml'
    f.write_text('#' * 2_100_000)
    with pytest.raises(EvalError, match='larger than'): load_eval(f)


def test_the_cli_runs_an_eval_and_sets_the_exit_code(pg, tmp_path):
    from typer.testing import CliRunner
    from leadchat.cli import app
    env = tmp_path / 'eval.env'
    env.write_text(f'RAG_RELEVANCE_THRESHOLD=0.263\nBUSINESS_HOURS_TIMEZONE=Europe/Madrid\nHANDOFF_CHANNELS=crm\n'
                   f'LEADCHAT_HOME={pg[0].leadchat_home}\n')
    f = tmp_path / 'two.yaml'
    f.write_text('cases:\n  - id: explicit\n    turns: ["Can I speak to someone?"]\n'
                 '    expect: {handoff_reason: explicit_request, handoff_turn: 1}\n'
                 '  - id: wrong\n    turns: ["hello"]\n    expect: {handoff_reason: hot_lead}\n')
    args = ['eval', str(f), '--provider', 'offline', '-e', str(env), '--knowledge', str(ROOT / 'knowledge'),
            '--report', str(tmp_path / 'out' / 'r.md')]
    r = CliRunner().invoke(app, args + ['--min-pass', '0.5'])
    assert r.exit_code == 0, r.output
    assert '1/2 cases passed' in r.output and 'FAIL wrong' in r.output and (tmp_path / 'out' / 'r.json').is_file()
    r = CliRunner().invoke(app, args + ['--min-pass', '1'])
    assert r.exit_code == 1, r.output
