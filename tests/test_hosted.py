"""Contract tests of the hosted providers: the real `anthropic` and `openai` SDKs against a local server that
replays recorded responses (tests/llm_replay.py). Request shape, the tool loop, retries, timeouts and error
mapping — provider by provider, then whole turns through the real chat API and database."""
import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from httpx_sse import connect_sse
from pydantic import SecretStr
from structlog.testing import capture_logs

from apiserver import LiveServer
from conftest import fresh_db
from llm_replay import RETRY_FAST, LLMReplay, Reply, overloaded
from leadchat.api import create_app
from leadchat.config import Settings
from leadchat.hosted import (AnthropicModel, ModelAuthError, ModelOutputError, ModelOverloaded, ModelRateLimited,
                             ModelTimeout, ModelUnavailable, OpenAICompatModel)
from leadchat.prompts import EXTRA_CALL_RESULT, RETRIEVE_KNOWLEDGE_TOOL, load_prompt, render_layer7, stable_system_prompt
from leadchat.retrieval import RetrievalResult, RetrievedChunk, ToolCallBudget
from leadchat.state import QualificationDelta, SessionState, append_message
from test_api import TOKEN, app_settings, turn

ROOT = Path(__file__).resolve().parent.parent
FOLLOWUP = 'Someone from the team will get back to you later today.'
PII = ['jane.doe@acme-insurance.io', '+34 600 123 456', 'Jane', 'Doe']


def leaked(pii: str, text: str) -> bool:
    "`pii` appears in `text` as itself (a word, for names: 'Doe' is not leaked by 'does')."
    return re.search(rf'(?<![\w.]){re.escape(pii)}(?![\w])', text, re.IGNORECASE) is not None


@pytest.fixture
def replay():
    r = LLMReplay()
    with LiveServer(r.app) as srv:
        r.url = srv.url
        yield r
    assert r.pending() == 0, 'scripted responses were left unused'


def model_settings(replay, provider, **kw):
    base = dict(rag_relevance_threshold=0.3, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                leadchat_model_provider=provider, leadchat_company_name='Calderwood AI', llm_max_retries=2,
                anthropic_api_key=SecretStr('sk-ant-replay'), anthropic_base_url=replay.url,
                openai_api_key=SecretStr('sk-replay'), openai_base_url=replay.url + '/v1')
    return Settings(**{**base, **kw})


def make(replay, provider, **kw):
    s = model_settings(replay, provider, **kw)
    return (AnthropicModel if provider == 'anthropic' else OpenAICompatModel)(s)


def visitor_state(text='What fintech work have you done?', **kw):
    return append_message(SessionState(session_id='s-contract', **kw), 'user', text, turn_index=1, window_turns=10)


class KB:
    "A knowledge retriever answering from a fixed chunk (the provider, not retrieval, is under test here)."
    def __init__(self): self.queries = []
    async def retrieve_knowledge(self, query, **kw):
        self.queries.append(query)
        return RetrievalResult(status='ok', chunks=[RetrievedChunk(chunk_id='c1', content='Northwind Lending: a retrieval assistant cut review time.',
                                                                   score=0.71, source='case-study-northwind.md', chunk_index=0)])


async def collect(agen):
    out = []
    async for t in agen: out.append(t)
    return out


# a returning visitor (12_privacy carried their earlier sessions into the state): the topic is their own phrase, PII
# included; a level and a reason that are not the state's values; a fourth session beyond the three described
EARLIER = [dict(session_id='s-earlier-1', started='2026-03-02T10:00:00+00:00', lead_level='warm', handoff_reason='explicit_request',
                topic='claims triage for Jane Doe — jane.doe@acme-insurance.io, +34 600 123 456'),
           dict(session_id='s-earlier-2', started='2026-02-23T09:30:00+00:00', lead_level='hot lead!', handoff_reason='call Jane', topic=''),
           dict(session_id='s-earlier-3', started='2026-02-16T09:30:00+00:00', lead_level='cold', handoff_reason='', topic=''),
           dict(session_id='s-earlier-4', started='2026-02-09T09:30:00+00:00', lead_level='cold', handoff_reason='', topic='')]


def returning_layer(system_text: str) -> dict | None:
    "The returning-visitor layer's JSON in the per-turn system text, or None when there is no such layer."
    if '## RETURNING VISITOR' not in system_text: return None
    layer = system_text.split('## RETURNING VISITOR', 1)[1]
    return json.loads(layer.split('```json\n', 1)[1].rsplit('```', 1)[0])


# --- Anthropic ------------------------------------------------------------------------------------------------

async def test_anthropic_extract_request_shape_and_merge(replay):
    replay.then('anthropic', 'extract_cto.json')
    m = make(replay, 'anthropic')
    msg = "I'm Jane Doe (jane.doe@acme-insurance.io), CTO of a 200-person insurer; we're building a RAG assistant for our claims team, live by Q3."
    delta = await m.extract(msg, SessionState(session_id='x'), 1)
    assert (delta.problem_fit, delta.authority_fit, delta.timing_fit) == ('confirmed', 'confirmed', 'confirmed')
    assert delta.visitor_email == 'jane.doe@acme-insurance.io'         # captured locally, never by the model
    (seen,) = replay.requests
    assert seen.path == '/v1/messages' and seen.headers.get('x-api-key', seen.headers.get('authorization', '').removeprefix('Bearer ')) == 'sk-ant-replay' and 'anthropic-version' in seen.headers
    b = seen.body
    assert b['model'] == 'claude-haiku-4-5' and b['max_tokens'] == 1024
    assert b['tool_choice'] == {'type': 'tool', 'name': 'record_qualification'}
    assert set(b['tools'][0]['input_schema']['properties']) == set(QualificationDelta.model_fields)
    assert b['system'] == load_prompt('extract').text
    assert not any(leaked(p, seen.raw) for p in PII) and '[email]' in b['messages'][0]['content']


async def test_anthropic_extraction_garbage_is_an_output_error(replay):
    replay.then('anthropic', 'extract_garbage.json')
    with pytest.raises(ModelOutputError, match='extraction output rejected'):
        await make(replay, 'anthropic').extract('hello', SessionState(session_id='x'), 1)


async def test_anthropic_respond_streams_text_with_the_spec_prompt(replay):
    replay.then('anthropic', 'text.sse')
    m = make(replay, 'anthropic')
    st = visitor_state(visitor_email='jane.doe@acme-insurance.io')
    toks = await collect(m.respond('What fintech work have you done?', st, KB().retrieve_knowledge, followup_sentence=FOLLOWUP))
    assert len(toks) == 4 and ''.join(toks).endswith('What are you working on?')
    b = replay.bodies()[0]
    assert b['stream'] is True and b['tools'] == [RETRIEVE_KNOWLEDGE_TOOL] and b['tool_choice'] == {'type': 'auto'}
    assert b['system'][0] == {'type': 'text', 'text': stable_system_prompt('Calderwood AI'), 'cache_control': {'type': 'ephemeral'}}
    l7 = b['system'][1]['text']
    assert l7.startswith('## LAYER 7 — CURRENT SESSION STATE')
    state = json.loads(l7.split('```json\n', 1)[1].rsplit('```', 1)[0])
    assert state['visitor_email'] == '[captured]' and state['followup_commitment_sentence'] == FOLLOWUP
    assert b['messages'] == [{'role': 'user', 'content': 'What fintech work have you done?'}]


async def test_anthropic_returning_visitor_layer_says_what_earlier_sessions_were_about_and_nothing_that_identifies(replay):
    replay.then('anthropic', 'text.sse', 'text.sse')
    m = make(replay, 'anthropic')
    first = visitor_state('Hi, do you work with insurers?', visitor_email='jane.doe@acme-insurance.io', visitor_name='Jane Doe')
    back = first.model_copy(update={'prior_sessions': EARLIER})
    await collect(m.respond('Hi, do you work with insurers?', first, KB().retrieve_knowledge, followup_sentence=FOLLOWUP))
    await collect(m.respond('Hi, do you work with insurers?', back, KB().retrieve_knowledge, followup_sentence=FOLLOWUP))
    b_first, b_back = replay.bodies()
    # a first visit: layer 7 alone, as before; the cached stable block is the same for both
    assert b_first['system'][1]['text'] == render_layer7(first, FOLLOWUP) and returning_layer(b_first['system'][1]['text']) is None
    assert b_back['system'][0] == b_first['system'][0]
    text = b_back['system'][1]['text']
    assert text.startswith(render_layer7(back, FOLLOWUP) + '\n\n## RETURNING VISITOR')
    assert 'welcome them back' in text and 'Do not ask again' in text
    assert returning_layer(text) == {'earlier_sessions': [
        {'started': '2026-03-02', 'topic': 'claims triage for [name] — [email], [phone]', 'lead_level': 'warm', 'handoff_reason': 'explicit_request'},
        {'started': '2026-02-23', 'topic': None, 'lead_level': None, 'handoff_reason': None},
        {'started': '2026-02-16', 'topic': None, 'lead_level': 'cold', 'handoff_reason': None}], 'older_sessions_not_listed': 1}
    assert 's-earlier' not in text
    raw = replay.requests[1].raw
    for pii in PII: assert not leaked(pii, raw), f'{pii!r} reached the model provider'


async def test_anthropic_propose_for_a_returning_visitor_carries_the_layer_too(replay):
    replay.then('anthropic', 'proposal.sse')
    st = visitor_state(visitor_name='Jane Doe', prior_sessions=EARLIER[:1])
    await collect(make(replay, 'anthropic').propose('hot_lead', True, st, FOLLOWUP, None))
    text = replay.bodies()[0]['system'][1]['text']
    assert returning_layer(text)['earlier_sessions'][0]['topic'] == 'claims triage for [name] — [email], [phone]'
    assert text.index('## RETURNING VISITOR') < text.index('## PROPOSAL')
    assert not any(leaked(p, replay.raw_text()) for p in PII)


async def test_anthropic_tool_loop_pauses_retrieves_and_continues(replay):
    replay.then('anthropic', 'tool_use.sse', 'after_tool.sse')
    m, kb = make(replay, 'anthropic'), KB()
    budget = ToolCallBudget(kb, 1)
    toks = await collect(m.respond('What fintech work have you done?', visitor_state(), budget, followup_sentence=FOLLOWUP))
    text = ''.join(toks)
    assert text.startswith('Let me check our case studies.') and 'fintech lender' in text
    assert kb.queries == ['fintech case studies']
    first, second = replay.bodies()
    assert second['tool_choice'] == {'type': 'none'} and second['tools'] == [RETRIEVE_KNOWLEDGE_TOOL]
    assert second['messages'][-2] == {'role': 'assistant', 'content': [
        {'type': 'text', 'text': 'Let me check our case studies.'},
        {'type': 'tool_use', 'id': 'toolu_01A9Zfintech', 'name': 'retrieve_knowledge', 'input': {'query': 'fintech case studies'}}]}
    (result,) = second['messages'][-1]['content']
    assert result['type'] == 'tool_result' and result['tool_use_id'] == 'toolu_01A9Zfintech'
    assert json.loads(result['content'])['chunks'][0]['source'] == 'case-study-northwind.md'


async def test_anthropic_second_tool_call_is_ignored_and_logged(replay):
    replay.then('anthropic', 'tool_use_twice.sse', 'after_tool.sse')
    m, kb = make(replay, 'anthropic'), KB()
    with capture_logs() as logs:
        await collect(m.respond('How do you onboard, and where is the team?', visitor_state(), ToolCallBudget(kb, 1)))
    assert kb.queries == ['onboarding process']
    assert [l for l in logs if l['event'] == 'rag_extra_tool_call_ignored']
    results = replay.bodies()[1]['messages'][-1]['content']
    assert [r['tool_use_id'] for r in results] == ['toolu_01First', 'toolu_01Second'] and results[1]['content'] == EXTRA_CALL_RESULT


async def test_anthropic_overload_before_output_is_retried_once_output_is_not_duplicated(replay):
    replay.then('anthropic', *overloaded(1), 'text.sse')
    toks = await collect(make(replay, 'anthropic').respond('hi', visitor_state('hi'), KB().retrieve_knowledge))
    assert len(replay.requests) == 2 and ''.join(toks).count('Happy to help') == 1


@pytest.mark.parametrize('fixture,status,exc,requests', [
    ('error_529.json', 529, ModelOverloaded, 3),      # retried LLM_MAX_RETRIES=2 times, then mapped
    ('error_429.json', 429, ModelRateLimited, 3),
    ('error_401.json', 401, ModelAuthError, 1),       # never retried
])
async def test_anthropic_error_mapping(replay, fixture, status, exc, requests):
    replay.then('anthropic', *[Reply(fixture, status, RETRY_FAST) for _ in range(requests)])
    with pytest.raises(exc):
        await collect(make(replay, 'anthropic').respond('hi', visitor_state('hi'), KB().retrieve_knowledge))
    assert len(replay.requests) == requests


async def test_anthropic_midstream_error_is_not_retried(replay):
    replay.then('anthropic', 'overloaded_midstream.sse')
    toks = []
    with pytest.raises(ModelOverloaded):
        async for t in make(replay, 'anthropic').respond('hi', visitor_state('hi'), KB().retrieve_knowledge): toks.append(t)
    assert toks == ['We have worked with'] and len(replay.requests) == 1


async def test_anthropic_request_timeout(replay):
    replay.then('anthropic', Reply('text.sse', before_headers=2.0))
    m = make(replay, 'anthropic', llm_request_timeout_s=0.3, llm_max_retries=0)
    with pytest.raises(ModelTimeout):
        await collect(m.respond('hi', visitor_state('hi'), KB().retrieve_knowledge))


async def test_anthropic_propose_streams_and_keeps_the_followup_sentence(replay):
    replay.then('anthropic', 'proposal.sse', 'proposal_no_followup.sse')
    m = make(replay, 'anthropic')
    st = visitor_state()
    text = ''.join(await collect(m.propose('hot_lead', True, st, FOLLOWUP, None)))
    assert text.count(FOLLOWUP) == 1
    assert 'Reason: hot_lead' in replay.bodies()[0]['system'][1]['text'] and 'tools' not in replay.bodies()[0]
    with capture_logs() as logs:
        text = ''.join(await collect(m.propose('explicit_request', True, st, FOLLOWUP, None)))
    assert text == "Of course — I'll connect you with the team directly. " + FOLLOWUP
    assert any(l['event'] == 'prompt_compliance_violation' and l['rule'] == 'followup_sentence_missing' for l in logs)


async def test_anthropic_propose_falls_back_to_the_offline_copy(replay):
    replay.then('anthropic', *overloaded(3))
    text = ''.join(await collect(make(replay, 'anthropic').propose('hot_lead', True, visitor_state(), FOLLOWUP, None)))
    assert FOLLOWUP in text and 'conversation with one of our engineers' in text


async def test_anthropic_propose_first_token_timeout_falls_back(replay):
    replay.then('anthropic', Reply('proposal.sse', before_body=3.0))
    m = make(replay, 'anthropic', llm_stream_timeout_ms=300)
    text = ''.join(await collect(m.propose('explicit_request', False, visitor_state(), FOLLOWUP, None)))
    assert FOLLOWUP in text and text.startswith('Of course')


# --- OpenAI-compatible -----------------------------------------------------------------------------------------

async def test_openai_extract_uses_a_json_schema(replay):
    replay.then('openai', 'extract_cto.json')
    delta = await make(replay, 'openai').extract("I'm the CTO, jane.doe@acme-insurance.io", SessionState(session_id='x'), 1)
    assert delta.authority_fit == 'confirmed' and delta.visitor_email == 'jane.doe@acme-insurance.io'
    (seen,) = replay.requests
    assert seen.path == '/v1/chat/completions' and seen.headers['authorization'] == 'Bearer sk-replay'
    b = seen.body
    assert b['model'] == 'gpt-4.1-mini' and b['response_format']['type'] == 'json_schema'
    assert set(b['response_format']['json_schema']['schema']['properties']) == set(QualificationDelta.model_fields)
    assert not leaked('Jane', seen.raw) and not leaked('jane.doe@acme-insurance.io', seen.raw)


async def test_openai_server_without_json_schema_falls_back_to_json_mode(replay):
    replay.then('openai', Reply('error_json_schema_400.json', 400), 'extract_empty.json', 'extract_empty.json')
    m = make(replay, 'openai')
    await m.extract('hello', SessionState(session_id='x'), 1)
    await m.extract('hello again', SessionState(session_id='x'), 2)
    assert [b['response_format']['type'] for b in replay.bodies()] == ['json_schema', 'json_object', 'json_object']


async def test_openai_returning_visitor_layer_is_in_the_system_message(replay):
    replay.then('openai', 'text.sse')
    st = visitor_state('hi again', visitor_name='Jane Doe', prior_sessions=EARLIER[:2])
    await collect(make(replay, 'openai').respond('hi again', st, KB().retrieve_knowledge))
    (system, *_), raw = replay.bodies()[0]['messages'], replay.raw_text()
    assert system['role'] == 'system' and '## LAYER 7' in system['content']
    layer = returning_layer(system['content'])
    assert [s['started'] for s in layer['earlier_sessions']] == ['2026-03-02', '2026-02-23'] and 'older_sessions_not_listed' not in layer
    assert not any(leaked(p, raw) for p in PII)


async def test_openai_tool_loop(replay):
    replay.then('openai', 'tool_call.sse', 'after_tool.sse')
    kb = KB()
    text = ''.join(await collect(make(replay, 'openai').respond('fintech?', visitor_state('fintech?'), ToolCallBudget(kb, 1))))
    assert kb.queries == ['fintech case studies'] and text.startswith('We helped a fintech lender')
    first, second = replay.bodies()
    assert first['tools'][0]['function']['name'] == 'retrieve_knowledge' and first['tool_choice'] == 'auto'
    assert first['messages'][0]['role'] == 'system' and '## LAYER 7' in first['messages'][0]['content']
    assert second['tool_choice'] == 'none'
    assert second['messages'][-2]['tool_calls'][0] == {'id': 'call_Fq2fintech', 'type': 'function', 'function': {
        'name': 'retrieve_knowledge', 'arguments': '{"query": "fintech case studies"}'}}
    assert second['messages'][-1]['role'] == 'tool' and second['messages'][-1]['tool_call_id'] == 'call_Fq2fintech'


async def test_openai_second_tool_call_is_ignored(replay):
    replay.then('openai', 'tool_call_twice.sse', 'after_tool.sse')
    kb = KB()
    with capture_logs() as logs:
        await collect(make(replay, 'openai').respond('?', visitor_state('?'), ToolCallBudget(kb, 1)))
    assert kb.queries == ['onboarding process'] and any(l['event'] == 'rag_extra_tool_call_ignored' for l in logs)
    assert replay.bodies()[1]['messages'][-1] == {'role': 'tool', 'tool_call_id': 'call_Second', 'content': EXTRA_CALL_RESULT}


@pytest.mark.parametrize('fixture,status,exc,requests', [
    ('error_429.json', 429, ModelRateLimited, 3),
    ('error_503.json', 503, ModelUnavailable, 3),
    ('error_401.json', 401, ModelAuthError, 1),
])
async def test_openai_error_mapping(replay, fixture, status, exc, requests):
    replay.then('openai', *[Reply(fixture, status, RETRY_FAST) for _ in range(requests)])
    with pytest.raises(exc):
        await collect(make(replay, 'openai').respond('hi', visitor_state('hi'), KB().retrieve_knowledge))
    assert len(replay.requests) == requests


async def test_openai_rate_limit_then_success_streams_once(replay):
    replay.then('openai', Reply('error_429.json', 429, RETRY_FAST), 'text.sse')
    text = ''.join(await collect(make(replay, 'openai').respond('hi', visitor_state('hi'), KB().retrieve_knowledge)))
    assert text.count('Happy to help') == 1 and len(replay.requests) == 2


async def test_openai_local_server_needs_no_key(replay):
    replay.then('openai', 'text.sse')
    m = make(replay, 'openai', openai_api_key=None, openai_chat_model='llama3.2:3b')
    await collect(m.respond('hi', visitor_state('hi'), KB().retrieve_knowledge))
    assert replay.bodies()[0]['model'] == 'llama3.2:3b'


# --- whole turns through the chat API, the graph and the database ------------------------------------------------

@pytest.fixture
def hosted_api(pg, kb_url, replay, request):
    provider = request.param
    url = fresh_db(pg[1])
    s = app_settings(pg, url, **{k: v for k, v in model_settings(replay, provider).model_dump().items()
                                  if k.startswith(('anthropic_', 'openai_', 'llm_', 'leadchat_model', 'leadchat_company'))})
    s = s.model_copy(update={'database_url': url})
    with LiveServer(create_app(s, knowledge_path=str(ROOT / 'knowledge'))) as srv:
        srv.db_url, srv.provider = url, provider
        yield srv


def events_of(db_url, sid):
    with psycopg.connect(db_url) as c:
        return [r[0] for r in c.execute('SELECT event_type FROM analytics_events WHERE session_id = %s ORDER BY id', (sid,))]


FX = {'anthropic': {'extract_contact': 'extract_contact.json', 'extract_empty': 'extract_empty.json', 'text': 'text.sse',
                    'tool': 'tool_use.sse', 'after': 'after_tool.sse', 'proposal': 'proposal.sse'},
      'openai': {'extract_contact': 'extract_contact.json', 'extract_empty': 'extract_empty.json', 'text': 'text.sse',
                 'tool': 'tool_call.sse', 'after': 'after_tool.sse', 'proposal': 'proposal.sse'}}


@pytest.mark.parametrize('hosted_api', ['anthropic', 'openai'], indirect=True)
def test_no_pii_reaches_the_model_in_a_real_conversation(hosted_api, replay):
    p, fx = hosted_api.provider, FX[hosted_api.provider]
    sid = str(uuid.uuid4())
    replay.then(p, fx['extract_contact'], fx['tool'], fx['after'])
    replay.then(p, fx['extract_empty'], fx['text'])
    replay.then(p, fx['extract_empty'], fx['proposal'])
    with hosted_api.client() as c:
        s1, t1, d1, _ = turn(c, sid, "Hi, I'm Jane Doe — jane.doe@acme-insurance.io, +34 600 123 456. "
                                     "We're looking at document automation; what fintech work have you done?")
        s2, t2, d2, _ = turn(c, sid, 'Thanks Jane here again. Call me on +34 600 123 456 if easier.')
        s3, t3, d3, _ = turn(c, sid, 'Can I talk to someone on your team?')
        detail = c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}).json()
    assert (s1, s2, s3) == (200, 200, 200) and 'fintech lender' in t1 and d3['handoff_reason'] == 'explicit_request'
    sent = replay.raw_text()
    assert len(replay.requests) == 7
    for pii in PII: assert not leaked(pii, sent), f'{pii!r} reached the model provider'
    assert '[email]' in sent and '[phone]' in sent and '[name]' in sent
    assert detail['state']['visitor_email'] == 'jane.doe@acme-insurance.io'        # captured in-process
    # the real knowledge base answered the tool call: the continuation carries its chunks
    results = [m for b in replay.bodies() for m in b['messages']
               if m['role'] == 'tool' or (m['role'] == 'user' and isinstance(m['content'], list))]
    assert len(results) == 1 and 'case-study-fintech-rag' in json.dumps(results[0])


@pytest.mark.parametrize('hosted_api', ['anthropic'], indirect=True)
def test_stage3_language_in_generate_response_is_a_compliance_event(hosted_api, replay):
    sid = str(uuid.uuid4())
    replay.then('anthropic', 'extract_empty.json', 'stage3_violation.sse')
    with hosted_api.client() as c: status, text, done, _ = turn(c, sid, 'What do you do?')
    assert status == 200 and 'book a call' in text and done['handoff_reason'] is None
    assert 'prompt_compliance_violation' in events_of(hosted_api.db_url, sid)


@pytest.mark.parametrize('hosted_api', ['anthropic'], indirect=True)
def test_a_silent_model_times_out_into_the_fallback(hosted_api, replay):
    sid = str(uuid.uuid4())
    # LLM_STREAM_TIMEOUT_MS is 8 s by default; the model here says nothing for longer than that
    replay.then('anthropic', 'extract_empty.json', Reply('text.sse', before_body=9.0))
    with hosted_api.client() as c: status, text, done, _ = turn(c, sid, 'What do you do?')
    assert status == 200 and "I'm having trouble responding right now" in text and done['handoff_reason'] == 'llm_failure'
    assert 'stream_timeout' in events_of(hosted_api.db_url, sid)


@pytest.mark.parametrize('hosted_api', ['openai'], indirect=True)
def test_an_overloaded_model_fails_soft_through_the_api(hosted_api, replay):
    sid = str(uuid.uuid4())
    replay.then('openai', *[Reply('error_503.json', 503, RETRY_FAST) for _ in range(3)],       # extraction
                *[Reply('error_503.json', 503, RETRY_FAST) for _ in range(3)])                   # generation
    with hosted_api.client() as c: status, text, done, _ = turn(c, sid, 'What do you do?')
    assert status == 200 and "I'm having trouble responding right now" in text
    ev = events_of(hosted_api.db_url, sid)
    assert 'state_extraction_failure' in ev and 'llm_generation_failure' in ev


def chat(client, sid, message, **body):
    "One turn with the widget's body fields (visitor_id, consent): (status, reply text)."
    with connect_sse(client, 'POST', '/chat', json={'message': message, **body}, headers={'ZGC-Session-ID': sid}) as es:
        if es.response.status_code != 200:
            es.response.read()
            return es.response.status_code, es.response.json()
        return 200, ''.join(json.loads(ev.data)['content'] for ev in es.iter_sse() if ev.event == 'delta')


@pytest.mark.parametrize('hosted_api', ['anthropic'], indirect=True)
def test_a_returning_visitor_is_known_to_the_hosted_model_without_their_pii(hosted_api, replay):
    """Two sessions of one visitor (the widget's visitor id, chat_processing consent): the first says what it is about,
    gives a name, an email and a phone, and asks for the team; the second's request tells the model what the first was
    about, how far it got and that the team was brought in — and carries the qualification — without the PII."""
    vid, first, second = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    day = datetime.now(timezone.utc).date().isoformat()          # the first session's (midnight UTC: see below)
    consent = {'notice_version': 'v1', 'acknowledged_at': datetime.now(timezone.utc).isoformat()}
    replay.then('anthropic', 'extract_returning.json', 'text.sse', 'extract_empty.json', 'proposal.sse')
    replay.then('anthropic', 'extract_empty.json', 'text.sse')
    with hosted_api.client() as c:
        assert chat(c, first, "Hi, I'm Jane Doe (jane.doe@acme-insurance.io, +34 600 123 456). We want to automate claims "
                              'triage for our adjusters.', visitor_id=vid, consent=consent)[0] == 200
        assert chat(c, first, 'Can I talk to someone on your team?', visitor_id=vid)[0] == 200
        n_first = len(replay.requests)
        assert chat(c, second, 'Hi again, do you also work with insurers in Spain?', visitor_id=vid, consent=consent)[0] == 200
    assert len(replay.requests) == n_first + 2
    before = [b['system'][1]['text'] for b in replay.bodies()[:n_first] if b.get('stream')]
    assert len(before) == 2 and not any(returning_layer(t) for t in before)        # a first visit: no such layer
    respond = replay.bodies()[-1]
    assert respond['stream'] is True and respond['messages'] == [{'role': 'user', 'content': 'Hi again, do you also work with insurers in Spain?'}]
    text = respond['system'][1]['text']
    (earlier,) = returning_layer(text)['earlier_sessions']
    assert earlier == {'started': earlier['started'], 'topic': 'automating claims triage',
                       'lead_level': earlier['lead_level'], 'handoff_reason': 'explicit_request'}
    assert earlier['started'] in (day, datetime.now(timezone.utc).date().isoformat()) and earlier['lead_level'] in ('cold', 'warm', 'hot')
    l7 = json.loads(text.split('```json\n', 1)[1].split('```', 1)[0])
    assert l7['qualification']['problem_fit'] == 'partially_confirmed' and l7['visitor_email'] == '[captured]'   # carried over
    sent = replay.raw_text()
    for pii in PII: assert not leaked(pii, sent), f'{pii!r} reached the model provider'
