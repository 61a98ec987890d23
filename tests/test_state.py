"Property-based tests of the state machine's invariants (the examples live in nbs/01_state.ipynb)."
from hypothesis import given, settings as hsettings, strategies as st
from structlog.testing import capture_logs

from leadchat.state import (DIMENSIONS, LEVEL_RANK, QualificationDelta, SessionState, SignalEntry,
                            append_message, apply_delta, derive_lead_level, is_hot_lead)

levels = st.sampled_from(['not_detected', 'partially_confirmed', 'confirmed'])
signal = st.builds(SignalEntry, dimension=st.sampled_from(DIMENSIONS),
                   level=st.sampled_from(['partially_confirmed', 'confirmed']),
                   signal_type=st.sampled_from(['explicit', 'implicit']),
                   evidence=st.text(min_size=1, max_size=40), turn_index=st.integers(0, 50))
delta = st.builds(QualificationDelta, problem_fit=st.none() | levels, authority_fit=st.none() | levels,
                  company_fit=st.none() | levels, timing_fit=st.none() | levels,
                  is_negative_persona=st.none() | st.booleans(), is_no_fit=st.none() | st.booleans(),
                  is_consultant=st.none() | st.booleans(), referral_mentioned=st.none() | st.booleans(),
                  signals=st.lists(signal, max_size=3))
# what a misbehaving model might return instead of a delta
garbage = st.dictionaries(st.sampled_from(['problem_fit', 'authority_fit', 'signals', 'is_no_fit', 'bogus', 'visitor_email']),
                          st.one_of(st.text(max_size=10), st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
                          max_size=4)


@hsettings(max_examples=300, deadline=None)
@given(st.lists(delta | garbage, max_size=12))
def test_apply_delta_never_downgrades(deltas):
    s = SessionState(session_id='prop')
    with capture_logs():
        for d in deltas:
            before = s
            s = apply_delta(s, d)
            for dim in DIMENSIONS:
                assert LEVEL_RANK[getattr(s.qualification, dim)] >= LEVEL_RANK[getattr(before.qualification, dim)]
            # latched flags stay latched — except the spec's one: a consultant acting for a client is never no-fit
            assert s.qualification.is_negative_persona >= before.qualification.is_negative_persona
            assert s.qualification.is_no_fit >= before.qualification.is_no_fit or (s.is_consultant and not s.qualification.is_no_fit)
            if s.is_consultant: assert not s.qualification.is_no_fit
            assert s.is_consultant >= before.is_consultant and s.referral_mentioned >= before.referral_mentioned
            # the signal log only grows
            assert s.qualification.signals_observed[:len(before.qualification.signals_observed)] == before.qualification.signals_observed


@hsettings(max_examples=200, deadline=None)
@given(delta)
def test_apply_delta_does_not_mutate_its_input(d):
    s = SessionState(session_id='prop')
    snapshot = s.model_dump()
    apply_delta(s, d)
    assert s.model_dump() == snapshot


@hsettings(max_examples=300, deadline=None)
@given(st.lists(delta, max_size=8))
def test_lead_level_rules(deltas):
    s = SessionState(session_id='prop')
    for d in deltas: s = apply_delta(s, d)
    q, level = s.qualification, derive_lead_level(s)
    if q.is_negative_persona or q.is_no_fit: assert level == 'cold' and not is_hot_lead(s)
    assert (level == 'hot') == is_hot_lead(s)
    if all(getattr(q, d) == 'not_detected' for d in DIMENSIONS): assert level == 'cold'


@hsettings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 30))
def test_window_keeps_last_turns_and_absolute_index(window, turns):
    s = SessionState(session_id='w')
    for t in range(1, turns + 1):
        s = append_message(s, 'user', 'q', turn_index=t, window_turns=window)
        s = append_message(s, 'assistant', 'a', turn_index=t, window_turns=window)
    kept = sorted({m.turn_index for m in s.messages})
    assert kept == list(range(max(1, turns - window + 1), turns + 1))
    assert s.messages[-1].turn_index == turns


def test_hostile_delta_values_are_discarded_not_crashing():
    s = SessionState(session_id='h')
    with capture_logs() as logs:
        for bad in ({'visitor_email': 'x' * 10_000}, {'signals': [{'dimension': 'problem_fit'}]},
                    {'problem_fit': {'$gt': ''}}, {'problem_fit': 'confirmed\x00'}, None, 42, 'confirmed'):
            assert apply_delta(s, bad) is s
    assert {l['event'] for l in logs} == {'state_update_validation_failure'}
