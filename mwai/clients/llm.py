"""LLM clients: the Anthropic Messages API and any OpenAI-compatible Chat Completions API.

Both speak the same small protocol (``LlmClient.complete``): a system prompt and
user/assistant messages in, one text answer with its token usage and an estimated
cost out. Requests go through ``mwai.clients.http.ApiClient`` so 429 / 5xx / timeouts are
retried the same way as every other remote call of mwai.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, assert_never

import aiohttp

from mwai.clients.http import ApiClient, CallObserver, HttpError
from mwai.errors import PermanentError
from mwai.settings import Settings

ANTHROPIC_VERSION = "2023-06-01"
LlmProvider = Literal["anthropic", "openai"]
MESSAGE_ROLES = frozenset({"user", "assistant"})

# USD per million tokens (input, output), matched by the longest model-name prefix.
# Approximate list prices; a model missing here gets cost_usd=None (unknown, not 0).
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-haiku-4": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4o": (2.5, 10.0),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1": (2.0, 8.0),
}


@dataclass(frozen=True)
class LlmReply:
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    model: str
    stop_reason: str = ""


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """The provider an LLM client calls: its endpoint, key and model, and the limits
    of one request."""

    provider: LlmProvider
    base_url: str
    api_key: str = field(repr=False)  # a secret; "" for a local server that needs none
    model: str
    max_tokens: int  # of an answer, unless a call asks for another limit
    timeout_s: float  # one request (a long answer takes minutes)
    retries: int  # retries of a transient failure, then the run is retried later

    @classmethod
    def of(cls, settings: Settings) -> LlmConfig:
        """The provider MWAI_LLM_PROVIDER names, with its own URL, key and model."""
        provider: LlmProvider
        if settings.llm_provider == "anthropic":
            provider = "anthropic"
            base_url, api_key, model = (settings.anthropic_base_url, settings.anthropic_api_key,
                                        settings.anthropic_model)
        elif settings.llm_provider == "openai":
            provider = "openai"
            base_url, api_key, model = (settings.openai_base_url, settings.openai_api_key,
                                        settings.openai_model)
        else:
            raise PermanentError(
                f"MWAI_LLM_PROVIDER={settings.llm_provider!r} is not supported: use 'anthropic' "
                "or 'openai'"
            )
        return cls(provider=provider, base_url=base_url, api_key=api_key, model=model,
                   max_tokens=settings.llm_max_tokens, timeout_s=settings.llm_timeout_s,
                   retries=settings.http_retries)


class LlmClient(Protocol):
    async def complete(
        self, system: str, messages: list[dict[str, str]], max_tokens: int | None = None
    ) -> LlmReply: ...


def estimate_cost_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """Cost from the price table, or None when the model is not in it."""
    name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" style names of proxies
    matches = [prefix for prefix in PRICES_PER_MTOK if name.startswith(prefix)]
    if not matches:
        return None
    input_price, output_price = PRICES_PER_MTOK[max(matches, key=len)]
    return round((input_tokens * input_price + output_tokens * output_price) / 1_000_000, 6)


def check_messages(messages: list[dict[str, str]]) -> None:
    """Reject what both APIs would reject, with a message that names the problem."""
    if not messages:
        raise PermanentError("LLM request without messages: give at least one user message")
    for index, message in enumerate(messages):
        if message.get("role") not in MESSAGE_ROLES:
            raise PermanentError(
                f"LLM message {index} has role {message.get('role')!r}; use 'user' or "
                "'assistant' (the system prompt is passed separately)"
            )
        if not isinstance(message.get("content"), str):
            raise PermanentError(f"LLM message {index} has no text content")


def api_base(provider: LlmProvider, base_url: str) -> str:
    """The base URL the client's paths go under, from a setting given with or without /v1.

    Anthropic's paths start with /v1 and its base URL is documented both ways (the tools
    mwai replaces end it in /v1): a trailing /v1 is dropped rather than doubled.
    OpenAI's base URL ends in its version, and compatible servers put their API under
    other paths (Gemini's /v1beta/openai): only a bare host, like
    https://api.openai.com, gets OpenAI's /v1; a URL with a path is used as given."""
    base = base_url.strip().rstrip("/")
    if provider == "anthropic":
        return base.removesuffix("/v1")
    return base if urllib.parse.urlsplit(base).path else base + "/v1"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class _ProviderClient:
    """What both clients share: the model, the answer limit, the provider's API (its
    headers from the subclass) and the way an answer becomes an ``LlmReply``."""

    service: LlmProvider
    url_setting: str  # named when the URL answers with something else than the API

    def __init__(
        self,
        config: LlmConfig,
        session: aiohttp.ClientSession,
        observer: CallObserver | None = None,
    ) -> None:
        self.model = config.model
        self.max_tokens = config.max_tokens
        self.api = ApiClient(
            self.service,
            api_base(self.service, config.base_url),
            session,
            headers=self._headers(config.api_key),
            timeout_s=config.timeout_s,
            retries=config.retries,
            observer=observer,
        )

    def _headers(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    async def complete(
        self, system: str, messages: list[dict[str, str]], max_tokens: int | None = None
    ) -> LlmReply:
        check_messages(messages)
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        return await self._complete(system, chat, max_tokens or self.max_tokens)

    async def _complete(self, system: str, chat: list[dict[str, str]],
                        max_tokens: int) -> LlmReply:
        raise NotImplementedError

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return (await self.api.request("POST", path, json=body)).json()

    def _unexpected(self, document: Any) -> PermanentError:
        return PermanentError(
            f"{self.service} answered 200 but not with a chat completion "
            f"({str(document)[:200]!r}); check {self.url_setting} points at the API itself"
        )

    def _reply(self, document: dict[str, Any], text: str, input_tokens: Any,
               output_tokens: Any, stop_reason: Any) -> LlmReply:
        """The reply of a provider's answer, priced when its model is known."""
        model = str(document.get("model") or self.model)
        tokens_in, tokens_out = _int(input_tokens), _int(output_tokens)
        return LlmReply(text=text, input_tokens=tokens_in, output_tokens=tokens_out,
                        cost_usd=estimate_cost_usd(model, tokens_in, tokens_out), model=model,
                        stop_reason=str(stop_reason or ""))


class AnthropicClient(_ProviderClient):
    """POST {ANTHROPIC_BASE_URL}/v1/messages (the base given with or without /v1)."""

    service = "anthropic"
    url_setting = "ANTHROPIC_BASE_URL"

    def _headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}

    async def _complete(self, system: str, chat: list[dict[str, str]],
                        max_tokens: int) -> LlmReply:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "messages": chat}
        if system:
            body["system"] = system
        document = await self._post("/v1/messages", body)
        if not isinstance(document, dict) or not isinstance(document.get("content"), list):
            raise self._unexpected(document)
        text = "".join(
            block.get("text", "")
            for block in document["content"]
            if isinstance(block, dict) and block.get("type") == "text"
        )
        usage = document.get("usage") or {}
        return self._reply(document, text, usage.get("input_tokens"),
                           usage.get("output_tokens"), document.get("stop_reason"))


class OpenAIClient(_ProviderClient):
    """POST {OPENAI_BASE_URL}/chat/completions (OpenAI, Azure, Ollama, vLLM, ...)."""

    service = "openai"
    url_setting = "OPENAI_BASE_URL"
    # Newer OpenAI models (o-series, gpt-5) refuse "max_tokens" and want
    # "max_completion_tokens", which older compatible servers do not know: start with
    # the widely supported one and switch (this client only) when the server asks for it.
    token_limit_field = "max_tokens"

    def _headers(self, api_key: str) -> dict[str, str]:
        # Local servers (Ollama, vLLM) often need no key: send the header only with one.
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def _complete(self, system: str, chat: list[dict[str, str]],
                        max_tokens: int) -> LlmReply:
        system_message = [{"role": "system", "content": system}] if system else []
        body: dict[str, Any] = {"model": self.model, "messages": system_message + chat}
        try:
            document = await self._send(body, max_tokens)
        except HttpError as exc:
            if not (exc.status == 400 and self.token_limit_field == "max_tokens"
                    and "max_completion_tokens" in exc.detail):
                raise
            self.token_limit_field = "max_completion_tokens"
            document = await self._send(body, max_tokens)
        choices = document.get("choices") if isinstance(document, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise self._unexpected(document)
        message = choices[0].get("message") or {}
        usage = document.get("usage") or {}
        return self._reply(document, str(message.get("content") or ""),
                           usage.get("prompt_tokens"), usage.get("completion_tokens"),
                           choices[0].get("finish_reason"))

    async def _send(self, body: dict[str, Any], max_tokens: int) -> Any:
        return await self._post("/chat/completions", {**body, self.token_limit_field: max_tokens})


def make_llm(
    config: LlmConfig,
    session: aiohttp.ClientSession,
    observer: CallObserver | None = None,
) -> LlmClient:
    """The client of ``config.provider``."""
    if config.provider == "anthropic":
        return AnthropicClient(config, session, observer)
    if config.provider == "openai":
        return OpenAIClient(config, session, observer)
    assert_never(config.provider)
