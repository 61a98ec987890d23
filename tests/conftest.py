import os

import pytest

from leadchat.config import Settings, get_settings

# Tests never read the developer's shell configuration.
for _k in list(os.environ):
    if _k.lower() in Settings.model_fields or _k == 'LEADCHAT_ENV_FILE': del os.environ[_k]


@pytest.fixture
def settings() -> Settings:
    "A minimal valid configuration: the two required values, CRM-only hand-off."
    return Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm')


@pytest.fixture(autouse=True)
def _fresh_settings_cache():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
