"""The Anthropic and OpenAI-compatible clients against FakeLlm over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.clients.http import HttpError, new_session
from mwai.clients.llm import (
    AnthropicClient,
    LlmConfig,
    OpenAIClient,
    estimate_cost_usd,
    make_llm,
)
from mwai.demo.fakes.llm import FakeLlm
from mwai.errors import PermanentError, TransientError
from tests.conftest import make_settings


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlm]:
    async with FakeLlm() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client_session:
        yield client_session


def llm_config(tmp_path: Path, fake: FakeLlm, **changes: Any) -> LlmConfig:
    base: dict[str, Any] = {
        "anthropic_api_key": fake.anthropic_key,
        "anthropic_base_url": fake.anthropic_base_url,
        "anthropic_model": "claude-sonnet-4-5",
        "openai_api_key": fake.openai_key,
        "openai_base_url": fake.openai_base_url,
        "openai_model": "gpt-4o",
        "llm_max_tokens": 1234,
        "llm_timeout_s": 5.0,
        "http_retries": 2,
    }
    return LlmConfig.of(make_settings(tmp_path, **{**base, **changes}))


MESSAGES = [{"role": "user", "content": "Plan PROJ-1"}]


async def test_anthropic_request_shape_and_reply(tmp_path: Path, fake: FakeLlm,
                                                 session: aiohttp.ClientSession) -> None:
    fake.add_reply("the plan")
    client = make_llm(llm_config(tmp_path, fake, llm_provider="anthropic"), session)
    assert isinstance(client, AnthropicClient)
    reply = await client.complete("You plan.", MESSAGES)

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == fake.anthropic_key
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers
    assert request.json == {"model": "claude-sonnet-4-5", "max_tokens": 1234,
                            "system": "You plan.", "messages": MESSAGES}
    assert reply.text == "the plan"
    assert reply.model == "claude-sonnet-4-5"
    assert reply.input_tokens > 0 and reply.output_tokens > 0
    assert reply.cost_usd == estimate_cost_usd("claude-sonnet-4-5", reply.input_tokens,
                                               reply.output_tokens)
    assert reply.cost_usd is not None and reply.cost_usd > 0
    assert reply.stop_reason == "end_turn"


async def test_openai_request_shape_and_reply(tmp_path: Path, fake: FakeLlm,
                                              session: aiohttp.ClientSession) -> None:
    fake.add_reply("openai plan")
    client = make_llm(llm_config(tmp_path, fake, llm_provider="openai"), session)
    assert isinstance(client, OpenAIClient)
    reply = await client.complete("You plan.", MESSAGES, max_tokens=99)

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["Authorization"] == f"Bearer {fake.openai_key}"
    assert "x-api-key" not in request.headers
    assert request.json == {
        "model": "gpt-4o", "max_tokens": 99,
        "messages": [{"role": "system", "content": "You plan."}, *MESSAGES],
    }
    assert reply.text == "openai plan"
    assert reply.input_tokens > 0 and reply.output_tokens > 0
    assert reply.cost_usd is not None and reply.cost_usd > 0


async def test_unknown_model_has_unknown_cost(tmp_path: Path, fake: FakeLlm,
                                              session: aiohttp.ClientSession) -> None:
    fake.add_reply("local answer")
    config = llm_config(tmp_path, fake, llm_provider="openai", openai_model="llama3.1:8b")
    reply = await make_llm(config, session).complete("", MESSAGES)
    assert reply.cost_usd is None
    assert reply.model == "llama3.1:8b"
    assert fake.requests[0].json["messages"] == MESSAGES  # no empty system message


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_429_with_retry_after_then_success(tmp_path: Path, fake: FakeLlm,
                                                 session: aiohttp.ClientSession,
                                                 provider: str) -> None:
    fake.fail_next("429", retry_after_s=0)
    fake.add_reply("after the rate limit")
    calls: list[tuple[str, str]] = []
    client = make_llm(llm_config(tmp_path, fake, llm_provider=provider), session,
                      observer=lambda service, outcome: calls.append((service, outcome)))
    reply = await client.complete("s", MESSAGES)
    assert reply.text == "after the rate limit"
    assert [r.status for r in fake.requests] == [429, 200]
    assert calls == [(provider, "429"), (provider, "200")]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_500_and_html_page_are_retried(tmp_path: Path, fake: FakeLlm,
                                             session: aiohttp.ClientSession,
                                             provider: str) -> None:
    fake.fail_next("500")
    fake.fail_next("html")
    fake.add_reply("finally")
    reply = await make_llm(llm_config(tmp_path, fake, llm_provider=provider),
                           session).complete("s", MESSAGES)
    assert reply.text == "finally"
    assert [r.status for r in fake.requests] == [500, 200, 200]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("kind", ["408", "409", "503", "529"])
async def test_statuses_the_official_sdks_retry_are_retried(
        tmp_path: Path, fake: FakeLlm, session: aiohttp.ClientSession, provider: str,
        kind: str) -> None:
    fake.fail_next(kind)
    fake.add_reply("after the retry")
    reply = await make_llm(llm_config(tmp_path, fake, llm_provider=provider),
                           session).complete("s", MESSAGES)
    assert reply.text == "after the retry"
    assert [r.status for r in fake.requests] == [int(kind), 200]


@pytest.mark.parametrize("provider, setting, given", [
    ("anthropic", "anthropic_base_url", "{url}/v1"),
    ("anthropic", "anthropic_base_url", "{url}/"),
    ("openai", "openai_base_url", "{url}"),
    ("openai", "openai_base_url", "{url}/v1/"),
])
async def test_base_url_with_or_without_v1(tmp_path: Path, fake: FakeLlm,
                                           session: aiohttp.ClientSession, provider: str,
                                           setting: str, given: str) -> None:
    fake.add_reply("found")
    config = llm_config(tmp_path, fake, llm_provider=provider,
                        **{setting: given.format(url=fake.url)})
    assert (await make_llm(config, session).complete("s", MESSAGES)).text == "found"
    assert fake.requests[0].path in ("/v1/messages", "/v1/chat/completions")


async def test_retries_exhausted_is_a_transient_error(tmp_path: Path, fake: FakeLlm,
                                                      session: aiohttp.ClientSession) -> None:
    fake.fail_next("500", count=2)
    config = llm_config(tmp_path, fake, http_retries=1)
    with pytest.raises(TransientError, match="anthropic POST /v1/messages failed after 2"):
        await make_llm(config, session).complete("s", MESSAGES)


async def test_slow_answer_times_out_then_retry_succeeds(tmp_path: Path, fake: FakeLlm,
                                                         session: aiohttp.ClientSession) -> None:
    fake.fail_next("slow", delay_s=1.0)
    fake.add_reply("second try")
    config = llm_config(tmp_path, fake, llm_timeout_s=0.3, http_retries=1)
    reply = await make_llm(config, session).complete("s", MESSAGES)
    assert reply.text == "second try"
    assert len(fake.requests) == 2


@pytest.mark.parametrize("provider, key_field", [("anthropic", "anthropic_api_key"),
                                                 ("openai", "openai_api_key")])
async def test_wrong_key_is_a_permanent_401(tmp_path: Path, fake: FakeLlm,
                                            session: aiohttp.ClientSession, provider: str,
                                            key_field: str) -> None:
    config = llm_config(tmp_path, fake, llm_provider=provider, **{key_field: "wrong-key"})
    with pytest.raises(HttpError) as caught:
        await make_llm(config, session).complete("s", MESSAGES)
    assert caught.value.status == 401
    assert "wrong-key" not in str(caught.value)
    assert len(fake.requests) == 1  # not retried


async def test_bad_messages_are_refused_before_sending(tmp_path: Path, fake: FakeLlm,
                                                       session: aiohttp.ClientSession) -> None:
    client = make_llm(llm_config(tmp_path, fake), session)
    with pytest.raises(PermanentError, match="role 'system'"):
        await client.complete("s", [{"role": "system", "content": "x"}])
    with pytest.raises(PermanentError, match="without messages"):
        await client.complete("s", [])
    assert fake.requests == []


async def test_scripted_function_sees_the_request(tmp_path: Path,
                                                  session: aiohttp.ClientSession) -> None:
    async with FakeLlm(lambda request: f"you said {request['messages'][-1]['content']}") as fake:
        reply = await make_llm(llm_config(tmp_path, fake), session).complete("s", MESSAGES)
    assert reply.text == "you said Plan PROJ-1"


def test_price_table_uses_the_longest_prefix() -> None:
    assert estimate_cost_usd("gpt-4o-mini-2024-07-18", 1_000_000, 0) == 0.15
    assert estimate_cost_usd("gpt-4o-2024-08-06", 1_000_000, 1_000_000) == 12.5
    assert estimate_cost_usd("claude-sonnet-4-5-20250929", 1_000_000, 1_000_000) == 18.0
    assert estimate_cost_usd("mystery-model", 10, 10) is None


async def test_openai_model_that_wants_max_completion_tokens(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with FakeLlm(["one", "two"], openai_completion_tokens_only=True) as fake:
        client = make_llm(llm_config(tmp_path, fake, llm_provider="openai",
                                       openai_model="gpt-5"), session)
        assert (await client.complete("s", MESSAGES)).text == "one"
        assert (await client.complete("s", MESSAGES)).text == "two"
    first, second, third = fake.requests
    assert first.status == 400 and "max_tokens" in first.json
    assert second.status == 200 and second.json["max_completion_tokens"] == 1234
    assert "max_tokens" not in second.json
    assert third.status == 200 and "max_completion_tokens" in third.json  # remembered
