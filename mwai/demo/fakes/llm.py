"""FakeLlm: the Anthropic Messages API and the OpenAI Chat Completions API on 127.0.0.1.

One aiohttp app serves ``POST /v1/messages`` (Anthropic) and
``POST /v1/chat/completions`` (OpenAI-compatible; use ``fake.openai_base_url``).
Answers are scripted (a queue of texts, or a function of the request JSON), carry
usage counts, and every request is logged for assertions. Malformed requests and
missing / wrong credentials are rejected with the status and error shape of the real
APIs; ``fail_next`` injects 429 + Retry-After, 408, 409, 500, 503, 529 (the statuses
the official SDKs retry), slow answers and HTML pages.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mwai.demo.fakes.loopback import Fault, LoopbackServer

Script = Callable[[dict[str, Any]], str]
FAULT_KINDS = ("429", "408", "409", "500", "503", "529", "slow", "html")
# status -> the error type and message of the answer (Anthropic's names; OpenAI's shape
# carries the same words).
STATUS_ERRORS = {
    408: ("timeout_error", "Request timed out"),
    409: ("conflict_error", "Conflict: the request collided with another one"),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    status: int = 0
    # The usage the answer reported (what a client should count as spent).
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class FakeLlmState:
    replies: deque[str] = field(default_factory=deque)
    faults: deque[Fault] = field(default_factory=deque)


def count_tokens(text: str) -> int:
    """About four characters per token, like English text for real tokenizers."""
    return max(1, len(text) // 4)


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


class FakeLlm(LoopbackServer):
    def __init__(
        self,
        replies: list[str] | Script | None = None,
        *,
        anthropic_key: str = "test-anthropic-key",
        openai_key: str = "test-openai-key",
        openai_completion_tokens_only: bool = False,
    ) -> None:
        """``openai_completion_tokens_only``: refuse "max_tokens" like o-series / gpt-5."""
        self.anthropic_key = anthropic_key
        self.openai_completion_tokens_only = openai_completion_tokens_only
        self.openai_key = openai_key
        self.script: Script | None = replies if callable(replies) else None
        self.state = FakeLlmState(replies=deque(replies if isinstance(replies, list) else []))
        self.requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/chat/completions", self._openai)
        return app

    # -- scripting ------------------------------------------------------------------------

    def add_reply(self, *texts: str) -> None:
        self.state.replies.extend(texts)

    def fail_next(
        self, kind: str, count: int = 1, retry_after_s: float = 0.0, delay_s: float = 2.0
    ) -> None:
        """The next ``count`` requests get this fault (one of FAULT_KINDS)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        self.state.faults.extend(Fault(kind, retry_after_s, delay_s) for _ in range(count))

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # -- common ---------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> tuple[RecordedRequest, Any, bool]:
        raw = await request.read()
        try:
            document: Any = json.loads(raw) if raw else None
            valid = True
        except ValueError:
            document, valid = raw.decode("utf-8", "replace"), False
        recorded = RecordedRequest(request.method, request.path, dict(request.headers), document)
        self.requests.append(recorded)
        return recorded, document, valid

    async def _fault(self, request: web.Request, recorded: RecordedRequest,
                     error: Callable[[int, str, str], web.Response]) -> web.Response | None:
        if not self.state.faults:
            return None
        fault = self.state.faults.popleft()
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            if request.transport is None or request.transport.is_closing():
                # The client gave up (timeout): keep the scripted reply for its retry.
                return error(408, "timeout_error", "client went away")
            return None
        if fault.kind == "html":
            recorded.status = 200
            return web.Response(status=200, content_type="text/html",
                                text="<html><body>Bad gateway (proxy)</body></html>")
        if fault.kind == "429":
            response = error(429, "rate_limit_error", "Rate limited: slow down")
            response.headers["Retry-After"] = f"{fault.retry_after_s:g}"
        else:
            kind, message = STATUS_ERRORS[int(fault.kind)]
            response = error(int(fault.kind), kind, message)
        recorded.status = response.status
        return response

    def _next_text(self, document: dict[str, Any]) -> str | None:
        if self.script is not None:
            return self.script(document)
        return self.state.replies.popleft() if self.state.replies else None

    # -- Anthropic ------------------------------------------------------------------------

    @staticmethod
    def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
        return web.json_response(
            {"type": "error", "error": {"type": kind, "message": message}}, status=status)

    def _anthropic_problem(self, request: web.Request, document: Any, valid: bool
                           ) -> web.Response | None:
        error = self._anthropic_error
        key = request.headers.get("x-api-key")
        if not key:
            return error(401, "authentication_error", "x-api-key header is required")
        if key != self.anthropic_key:
            return error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return error(400, "invalid_request_error", "anthropic-version: header is required")
        if not valid or not isinstance(document, dict):
            return error(400, "invalid_request_error", "The request body is not valid JSON.")
        for name in ("model", "max_tokens", "messages"):
            if name not in document:
                return error(400, "invalid_request_error", f"{name}: Field required")
        if not isinstance(document["max_tokens"], int) or document["max_tokens"] < 1:
            return error(400, "invalid_request_error", "max_tokens: must be a positive integer")
        if "system" in document and not isinstance(document["system"], str | list):
            return error(400, "invalid_request_error", "system: Input should be a valid string")
        messages = document["messages"]
        if not isinstance(messages, list) or not messages:
            return error(400, "invalid_request_error", "messages: at least one message is "
                         "required")
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                return error(400, "invalid_request_error", f"messages.{index}.role: Input "
                             "should be 'user' or 'assistant'")
            if not _message_text(message.get("content")) and index < len(messages) - 1:
                return error(400, "invalid_request_error", f"messages.{index}: all messages "
                             "must have non-empty content except for the optional final "
                             "assistant message")
        if messages[0]["role"] != "user":
            return error(400, "invalid_request_error", "messages: first message must use the "
                         "\"user\" role")
        return None

    async def _scripted(
        self, request: web.Request, problem_of: Callable[..., web.Response | None],
        error: Callable[..., web.Response],
    ) -> tuple[RecordedRequest, dict[str, Any], str] | web.Response:
        """The request's scripted reply text, or the answer that refuses it (validation,
        an injected fault, no reply left)."""
        recorded, document, valid = await self._record(request)
        problem = problem_of(request, document, valid)
        if problem is None:
            problem = await self._fault(request, recorded, error)
        if problem is not None:
            recorded.status = recorded.status or problem.status
            return problem
        text = self._next_text(document)
        if text is None:
            recorded.status = 400
            return error(400, "invalid_request_error", "FakeLlm has no scripted reply left")
        recorded.status = 200
        return recorded, document, text

    async def _anthropic(self, request: web.Request) -> web.Response:
        scripted = await self._scripted(request, self._anthropic_problem, self._anthropic_error)
        if isinstance(scripted, web.Response):
            return scripted
        recorded, document, text = scripted
        prompt = str(document.get("system", "")) + "".join(
            _message_text(m.get("content")) for m in document["messages"])
        recorded.input_tokens, recorded.output_tokens = count_tokens(prompt), count_tokens(text)
        return web.json_response({
            "id": f"msg_fake{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": document["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": count_tokens(prompt),
                      "output_tokens": count_tokens(text)},
        })

    # -- OpenAI ---------------------------------------------------------------------------

    @staticmethod
    def _openai_error(status: int, kind: str, message: str, code: str | None = None
                      ) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": code}},
            status=status)

    def _openai_problem(self, request: web.Request, document: Any, valid: bool
                        ) -> web.Response | None:
        error = self._openai_error
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            return error(401, "invalid_request_error", "You didn't provide an API key. You "
                         "need to provide your API key in an Authorization header using "
                         "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        if authorization.removeprefix("Bearer ") != self.openai_key:
            return error(401, "invalid_request_error", "Incorrect API key provided.",
                         "invalid_api_key")
        if not valid or not isinstance(document, dict):
            return error(400, "invalid_request_error", "We could not parse the JSON body of "
                         "your request.")
        if not document.get("model"):
            return error(400, "invalid_request_error", "you must provide a model parameter")
        messages = document.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "invalid_request_error", "Missing required parameter: "
                         "'messages'.", "missing_required_parameter")
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool"):
                return error(400, "invalid_request_error", f"Invalid value for "
                             f"'messages[{index}].role'.", "invalid_value")
        if self.openai_completion_tokens_only and "max_tokens" in document:
            return error(400, "invalid_request_error", "Unsupported parameter: 'max_tokens' "
                         "is not supported with this model. Use 'max_completion_tokens' "
                         "instead.", "unsupported_parameter")
        for name in ("max_tokens", "max_completion_tokens"):
            limit = document.get(name)
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                return error(400, "invalid_request_error", f"Invalid '{name}': must be a "
                             "positive integer.", "invalid_value")
        return None

    async def _openai(self, request: web.Request) -> web.Response:
        scripted = await self._scripted(request, self._openai_problem, self._openai_error)
        if isinstance(scripted, web.Response):
            return scripted
        recorded, document, text = scripted
        prompt_tokens = count_tokens("".join(
            _message_text(m.get("content")) for m in document["messages"]))
        completion_tokens = count_tokens(text)
        recorded.input_tokens, recorded.output_tokens = prompt_tokens, completion_tokens
        return web.json_response({
            "id": f"chatcmpl-fake{next(self._ids):06d}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": document["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
