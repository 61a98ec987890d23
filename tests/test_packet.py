"The context packet is a pure, deterministic function of the state (CPG-009, generalised)."
from datetime import datetime, timezone

from hypothesis import given, settings as hsettings, strategies as st

from leadchat.packet import ContextPacketGenerationError, build_summary, generate_context_packet
from leadchat.state import DIMENSIONS, QualificationDelta, SessionState, SignalEntry, apply_delta

signal = st.builds(SignalEntry, dimension=st.sampled_from(DIMENSIONS),
                   level=st.sampled_from(['partially_confirmed', 'confirmed']),
                   signal_type=st.sampled_from(['explicit', 'implicit']),
                   evidence=st.text(min_size=1, max_size=60), turn_index=st.integers(0, 40))
opt_text = st.none() | st.text(min_size=1, max_size=30)


@hsettings(max_examples=300, deadline=None)
@given(st.lists(signal, max_size=10), st.sampled_from(['hot_lead', 'explicit_request', 'stall', 'llm_failure']),
       opt_text, st.booleans(), st.booleans())
def test_build_summary_is_deterministic_and_bounded(signals, reason, role, consultant, referral):
    kw = dict(handoff_reason=reason, visitor_role=role, is_consultant=consultant, referral_mentioned=referral)
    a, b = build_summary(signals, **kw), build_summary(list(signals), **kw)
    assert a == b and a
    if not signals: assert a.endswith(f'Trigger reason: {reason}.')
    # permuting signals of *different* turns never changes which one is quoted
    assert build_summary(sorted(signals, key=lambda s: s.turn_index), **kw) == build_summary(
        sorted(signals, key=lambda s: s.turn_index), **kw)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(signal, max_size=8), st.sampled_from(['hot_lead', 'explicit_request', 'stall', 'llm_failure']),
       opt_text, opt_text, opt_text, st.booleans())
def test_generate_context_packet_is_deterministic(signals, reason, email, company, role, consultant):
    s = apply_delta(SessionState(session_id='p', last_updated_at=datetime(2026, 5, 4, 10, tzinfo=timezone.utc)),
                    QualificationDelta(signals=signals, visitor_email=email, visitor_company=company,
                                       visitor_role=role, is_consultant=consultant))
    s = s.model_copy(update={'handoff_reason': reason})
    p1, p2 = generate_context_packet(s), generate_context_packet(s)
    assert p1 == p2
    # the same state read back from JSON (a checkpoint) gives the same packet
    assert generate_context_packet(SessionState.model_validate_json(s.model_dump_json())) == p1
    assert generate_context_packet(s.model_dump(mode='json')) == p1
    assert p1.conversation.signals_observed == tuple(s.qualification.signals_observed)


def test_hostile_snapshots_raise_the_packet_error():
    base = SessionState(session_id='p', handoff_reason='stall').model_dump(mode='json')
    for patch in ({'session_id': None}, {'session_id': '   '}, {'lead_level': 'HOT'}, {'lead_level': None},
                  {'handoff_reason': 'because'}, {'messages': 'oops'}, {'qualification': []}, {'last_updated_at': 12}):
        try:
            generate_context_packet({**base, **patch})
        except ContextPacketGenerationError as e:
            assert str(e)
        else:
            raise AssertionError(f'{patch} was accepted')
