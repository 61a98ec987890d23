"Traces and business metrics (issue 17 item 5): one trace per chat turn over real HTTP, the relay's delivery linked to it, trace ids in the log, the new Prometheus series."
import time
import uuid
from pathlib import Path

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apiserver import LiveServer
from conftest import fresh_db
from leadchat import telemetry
from leadchat.api import create_app
from test_api import app_settings, turn

ROOT = Path(__file__).resolve().parent.parent
NODES = ('update_state', 'score_router', 'generate_response', 'stall_check', 'write_state')


@pytest.fixture(scope='module')
def traced(pg):
    "The app with tracing on (in-memory exporter), and the log lines it writes (structlog's chain, plus a capture)."
    import os
    spans, lines = InMemorySpanExporter(), []
    before = structlog.get_config()['processors']
    os.environ['LEADCHAT_TRACE_SQL'] = 'true'          # the per-query spans too (off by default)
    try: assert telemetry.setup_tracing(spans)
    finally: del os.environ['LEADCHAT_TRACE_SQL']
    procs = structlog.get_config()['processors']
    structlog.configure(processors=[*procs[:-1], lambda _l, _m, ev: lines.append(dict(ev)) or ev, procs[-1]])
    url = fresh_db(pg[1])
    try:
        with LiveServer(create_app(app_settings(pg, url), knowledge_path=str(ROOT / 'knowledge'), relay_interval=0.2)) as srv:
            srv.spans, srv.lines = spans, lines
            yield srv
    finally:
        telemetry.shutdown_tracing()
        structlog.configure(processors=before)


def trace_of(spans, turn_span):
    return [s for s in spans.get_finished_spans() if s.context.trace_id == turn_span.context.trace_id]


def server_span_ended(spans, turn_span, timeout=10.0):
    "The server span ends once the response is sent, which may be just after the client read its last event."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s.name.startswith('POST /chat') for s in trace_of(spans, turn_span)): return True
        time.sleep(0.02)
    return False


def turn_span(spans, sid):
    found = [s for s in spans.get_finished_spans() if s.name == 'chat.turn' and s.attributes.get('session.id') == sid]
    assert len(found) == 1, f'one chat.turn span for the session, got {len(found)}'
    return found[0]


def test_a_turn_is_one_trace_with_a_span_per_node_retrieval_and_model_call(traced):
    sid = str(uuid.uuid4())
    with traced.client() as c:
        status, text, done, err = turn(c, sid, 'What case studies do you have in fintech?')
    assert status == 200 and err is None
    t = turn_span(traced.spans, sid)
    assert server_span_ended(traced.spans, t)                          # FastAPI's server span, in the same trace
    names = [s.name for s in trace_of(traced.spans, t)]
    for n in NODES: assert f'node.{n}' in names, names
    assert 'retrieval' in names and 'llm.respond' in names and 'llm.extract' in names, names
    assert t.attributes['turn.index'] == 1 and t.attributes['turn.route'] == 'respond'
    by_id = {s.context.span_id: s for s in trace_of(traced.spans, t)}
    node = next(s for s in by_id.values() if s.name == 'node.generate_response')
    assert node.parent.span_id == t.context.span_id
    ret = next(s for s in by_id.values() if s.name == 'retrieval')
    chain, p = [], ret.parent
    while p is not None and p.span_id in by_id: chain.append(by_id[p.span_id].name); p = by_id[p.span_id].parent
    assert 'node.generate_response' in chain and 'chat.turn' in chain, chain
    db = [s for s in by_id.values() if s.name.split(' ')[0] in ('SELECT', 'INSERT', 'UPDATE', 'DELETE', 'WITH')]
    assert db and any(s.attributes.get('db.system') == 'postgresql' for s in db), [(s.name, dict(s.attributes)) for s in db][:3]


def test_a_log_line_inside_a_turn_carries_its_trace_id(traced):
    sid = str(uuid.uuid4())
    with traced.client() as c: turn(c, sid, 'Do you have a case study in healthcare?')
    t = turn_span(traced.spans, sid)
    ret = [s for s in trace_of(traced.spans, t) if s.name == 'retrieval']
    line = next(l for l in traced.lines if l.get('event') == 'rag_scores' and l.get('trace_id') == format(t.context.trace_id, '032x'))
    assert line['span_id'] in {format(s.context.span_id, '016x') for s in ret}


def test_the_relays_delivery_span_links_to_the_turn_that_queued_the_handoff(traced):
    sid = str(uuid.uuid4())
    with traced.client() as c:
        status, _, done, err = turn(c, sid, 'I would like to talk to a person please, my email is dana@acme.example')
    assert status == 200 and err is None and done['handoff_reason'] == 'explicit_request', done
    t = turn_span(traced.spans, sid)
    assert 'outbox.write' in [s.name for s in trace_of(traced.spans, t)]
    deadline, found = time.monotonic() + 20, []
    while not found and time.monotonic() < deadline:
        found = [s for s in traced.spans.get_finished_spans() if s.name == 'handoff.deliver' and s.attributes.get('session.id') == sid]
        time.sleep(0.1)
    assert found, 'the relay delivered the hand-off in a span'
    d = found[0]
    assert d.context.trace_id != t.context.trace_id                    # a trace of its own ...
    assert [l.context.trace_id for l in d.links] == [t.context.trace_id]   # ... linked to the turn's
    assert d.attributes['handoff.outcome'] == 'complete'
    with traced.client() as c: text = c.get('/metrics').text
    assert 'leadchat_handoff_deliveries_total{channel="crm",outcome="delivered"}' in text


def test_metrics_show_the_new_series(traced):
    with traced.client() as c: text = c.get('/metrics').text
    for series in ('leadchat_turns_total{route=', 'leadchat_turn_fallbacks_total', 'leadchat_handoff_deliveries_total'):
        assert series in text, series


def test_tracing_is_off_unless_the_otel_variables_ask(monkeypatch):
    assert telemetry.tracing_exporters({}) == []
    assert telemetry.tracing_exporters({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:4318'}) == ['otlp']
    assert telemetry.tracing_exporters({'OTEL_TRACES_EXPORTER': 'none', 'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://x'}) == []
    with pytest.raises(ValueError, match='otlp'): telemetry.tracing_exporters({'OTEL_TRACES_EXPORTER': 'zipkin'})


# --- booking metrics (the calendar app of tests/test_booking.py) --------------------------------------------------
from test_booking import api as booking_api, book, hold, key, provider, radicale, slot_id, smtp, visitor  # noqa: E402,F401


def metric(text, series):
    return next((float(l.rsplit(' ', 1)[1]) for l in text.splitlines() if l.startswith(series + ' ')), None)


def test_booking_latency_success_and_idempotency_replays_are_counted(booking_api):
    sl = slot_id('ana-call', 'ana', 26, '11:00')
    with booking_api.client() as c:
        before = c.get('/metrics').text
        h = hold(c, sl).json()
        body, k = {'hold_id': h['hold_id'], 'booking_token': h['booking_token'], 'visitor': visitor(31)}, key()
        assert book(c, body, k).status_code == 201
        assert book(c, body, k).headers['idempotent-replayed'] == 'true'               # a replay
        assert book(c, {**body, 'notes': 'other'}, k).status_code == 422                # the key reused for another request
        after = c.get('/metrics').text
    delta = lambda s: (metric(after, s) or 0) - (metric(before, s) or 0)
    assert delta('leadchat_booking_confirmations_total{result="confirmed"}') == 1
    assert delta('leadchat_booking_confirmations_total{result="replayed"}') == 1
    assert delta('leadchat_booking_idempotency_total{kind="replay"}') == 1
    assert delta('leadchat_booking_idempotency_total{kind="mismatch"}') == 1
    assert delta('leadchat_booking_seconds_count') == 3


def test_sql_spans_only_when_asked(monkeypatch):
    "A span per SQL query costs ~0.8 ms of CPU a turn: psycopg is instrumented only with LEADCHAT_TRACE_SQL."
    monkeypatch.delenv('LEADCHAT_TRACE_SQL', raising=False)
    monkeypatch.delenv('OTEL_PYTHON_DISABLED_INSTRUMENTATIONS', raising=False)
    assert 'psycopg' in telemetry._disabled() and 'httpx' not in telemetry._disabled()
    monkeypatch.setenv('LEADCHAT_TRACE_SQL', 'true')
    assert 'psycopg' not in telemetry._disabled()
    monkeypatch.setenv('OTEL_PYTHON_DISABLED_INSTRUMENTATIONS', 'psycopg,httpx')
    assert {'psycopg', 'httpx'} <= telemetry._disabled()
