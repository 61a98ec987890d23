"""Issue 19's target, as a data scientist would check it: 2,000 synthetic sessions through the real service (graph,
offline engine, PostgreSQL recorder and checkpointer) with a known true effect in one arm. The experiment's result —
read from `analytics_events` by `leadchat.results`, as the console and `leadchat experiments results` read it — finds
the effect, an A/A split finds nothing (false-positive rate at the nominal 5 % over repeated seeds), and a harmful arm is
halted by its guardrail, after which its sessions get control's behaviour. The machinery is bench/experiments.py (whose
full run is committed in bench/results/experiments.md); here the same run is asserted."""
import asyncio
import sys
from pathlib import Path

import pytest

from conftest import fresh_db
from leadchat.config import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'bench'))
import experiments as sim  # noqa: E402  (bench/experiments.py)


@pytest.fixture(scope='module')
def run(pg):
    cfg = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                   leadchat_home=pg[0].leadchat_home, database_url=fresh_db(pg[1]))
    return asyncio.run(sim.simulate(cfg, sessions=2000, harm_sessions=400, seeds=1000, progress=False))


def test_every_session_does_what_its_arm_and_length_say(run):
    "The wiring, session by session: exposed once, in one arm, handed off exactly when its length reached its arm's threshold."
    assert run['exposed'] == 2000
    assert run['consistent'] == 2000
    assert set(run['reasons']) == {'stall'}       # vague visitors: the stall proposal is the only hand-off the engine makes


def test_the_true_effect_is_detected(run):
    ab = run['ab']
    assert ab['true_diff'] == pytest.approx(0.075)
    assert ab['p_value'] < 0.05
    lo, hi = ab['interval']
    assert lo <= ab['true_diff'] <= hi and lo > 0
    assert not ab['srm'] and abs(ab['n_control'] - ab['n_treatment']) < 150       # a 50/50 split, no sample-ratio mismatch
    assert run['power']['design'] >= 0.9                                          # the stated power of this design
    assert run['power']['power'] >= 0.8                                          # resampling the real outcomes agrees


def test_an_aa_split_finds_nothing(run):
    aa = run['aa']
    assert aa['p_value'] >= 0.05 and aa['interval'][0] < 0 < aa['interval'][1] and not aa['srm']
    rr = aa['rerandomised']
    assert rr['seeds'] == 1000
    assert rr['interval'][0] <= 0.05 and rr['rate'] <= 0.065      # the nominal 5 %, within the sampling error of 1,000 seeds
    assert rr['rate_at_1pct'] <= 0.02                              # and at the 1 % level, 1 %


def test_a_harmful_arm_is_halted_and_its_sessions_get_control(run):
    g = run['guardrail']
    assert g['rate_harmful'] == 0 and g['rate_control'] > 0.2
    assert g['halted'] == [('stall_harm', '10')]
    assert g['reason'].startswith('hand-off proposed')          # the metric that dropped, in the alert's words
    assert 'halt' in g['audited']
    assert len(g['alerts']) == 1 and 'stall_harm' in g['alerts'][0] and '10' in g['alerts'][0]
    assert g['continued'] >= 10 and g['proposed_after_halt'] == g['continued']
