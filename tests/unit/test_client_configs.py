"""Each client takes only its part of the settings: the config built from Settings
keeps every setting's meaning, and a config's repr never shows a secret."""

from __future__ import annotations

import dataclasses

import pytest

from mwai.clients.github import GitHubConfig
from mwai.clients.jira import JiraConfig
from mwai.clients.llm import LlmConfig
from mwai.errors import PermanentError
from mwai.settings import Settings

SETTINGS = Settings.defaults(
    jira_base_url="https://acme.atlassian.net", jira_email="bot@acme.test",
    jira_api_token="jira-secret", gh_token="gh-secret", github_api_url="https://ghe.test/api/v3",
    anthropic_api_key="anthropic-secret", anthropic_base_url="https://anthropic.test",
    anthropic_model="claude-sonnet-4-5", openai_api_key="openai-secret",
    openai_base_url="https://openai.test/v1", openai_model="gpt-4o", llm_max_tokens=777,
    llm_timeout_s=120.0, http_timeout_s=12.5, http_retries=3)


def test_jira_config_of_the_settings() -> None:
    config = JiraConfig.of(SETTINGS)
    assert config == JiraConfig(base_url="https://acme.atlassian.net", email="bot@acme.test",
                                api_token="jira-secret", api_version="3", timeout_s=12.5,
                                retries=3)
    assert JiraConfig.of(Settings.defaults(jira_api_version="2")).api_version == "2"
    assert "jira-secret" not in repr(config)


def test_github_config_of_the_settings() -> None:
    config = GitHubConfig.of(SETTINGS)
    assert (config.api_url, config.token, config.app) == ("https://ghe.test/api/v3",
                                                          "gh-secret", None)
    assert (config.timeout_s, config.retries) == (12.5, 3)
    assert "gh-secret" not in repr(config)


@pytest.mark.parametrize(("provider", "url", "key", "model"), [
    ("anthropic", "https://anthropic.test", "anthropic-secret", "claude-sonnet-4-5"),
    ("openai", "https://openai.test/v1", "openai-secret", "gpt-4o"),
])
def test_llm_config_takes_the_chosen_providers_settings(
        provider: str, url: str, key: str, model: str) -> None:
    config = LlmConfig.of(dataclasses.replace(SETTINGS, llm_provider=provider))
    assert config == LlmConfig(provider=provider, base_url=url, api_key=key,
                               model=model, max_tokens=777, timeout_s=120.0, retries=3)
    assert key not in repr(config)


def test_an_unknown_llm_provider_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="MWAI_LLM_PROVIDER='bard' is not supported"):
        LlmConfig.of(Settings.defaults(llm_provider="bard"))
