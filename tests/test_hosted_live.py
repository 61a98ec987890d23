"""Live calls to the hosted providers. They run only when the developer's shell has the keys
(ANTHROPIC_API_KEY; OPENAI_API_KEY, or OPENAI_BASE_URL for a local OpenAI-compatible server) and are
skipped — loudly, with the reason in pytest's summary — otherwise. The contract tests in
tests/test_hosted.py cover the same code against replayed responses on every run."""
import pytest
from pydantic import SecretStr

from conftest import LIVE_KEYS
from leadchat.config import Settings
from leadchat.hosted import AnthropicModel, OpenAICompatModel
from leadchat.state import SessionState, append_message

BASE = dict(rag_relevance_threshold=0.3, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
            leadchat_company_name='Calderwood AI')
needs_anthropic = pytest.mark.skipif(not LIVE_KEYS['ANTHROPIC_API_KEY'],
                                     reason='LIVE TEST SKIPPED: ANTHROPIC_API_KEY is not set (no network key on this machine); '
                                            'the Anthropic contract tests ran against replayed responses')
needs_openai = pytest.mark.skipif(not (LIVE_KEYS['OPENAI_API_KEY'] or LIVE_KEYS['OPENAI_BASE_URL']),
                                  reason='LIVE TEST SKIPPED: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; '
                                         'the OpenAI-compatible contract tests ran against replayed responses')


def models():
    out = []
    if LIVE_KEYS['ANTHROPIC_API_KEY']:
        out.append(AnthropicModel(Settings(**BASE, anthropic_api_key=SecretStr(LIVE_KEYS['ANTHROPIC_API_KEY']))))
    if LIVE_KEYS['OPENAI_API_KEY'] or LIVE_KEYS['OPENAI_BASE_URL']:
        kw = {k: v for k, v in {'openai_api_key': LIVE_KEYS['OPENAI_API_KEY'], 'openai_base_url': LIVE_KEYS['OPENAI_BASE_URL'],
                                 'openai_chat_model': LIVE_KEYS['OPENAI_CHAT_MODEL']}.items() if v}
        out.append(OpenAICompatModel(Settings(**BASE, **kw)))
    return out


async def _extract_and_respond(model):
    msg = "I'm the CTO of a 200-person insurer; we're building a RAG assistant for claims and need it live by Q3."
    delta = await model.extract(msg, SessionState(session_id='live'), 1)
    assert delta.authority_fit == 'confirmed' and delta.problem_fit in ('partially_confirmed', 'confirmed')
    st = append_message(SessionState(session_id='live'), 'user', 'What fintech case studies do you have?', turn_index=1, window_turns=10)
    queries = []

    async def retrieve(q):
        queries.append(q)
        return None
    text = ''.join([t async for t in model.respond('What fintech case studies do you have?', st, retrieve,
                                                  followup_sentence='Someone from the team will get back to you later today.')])
    assert text.strip() and queries, 'the model should look the question up in the knowledge base'


@needs_anthropic
async def test_live_anthropic():
    await _extract_and_respond(next(m for m in models() if m.name == 'anthropic'))


@needs_openai
async def test_live_openai_compatible():
    await _extract_and_respond(next(m for m in models() if m.name == 'openai'))
