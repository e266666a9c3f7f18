"""Outgoing HTTP: one shared ClientSession, timeouts, and retries that honour Retry-After.

Every remote call of mwai (Jira, GitHub, the LLM providers, alert webhooks)
goes through ``ApiClient.request``:

* what the official SDKs (anthropic, openai) retry is retried: 408, 409 (Jira's
  transition answers it on a conflicting update), 429, every 5xx (proxies' 520-524,
  Anthropic's 529), timeouts and connection errors; with exponential backoff and
  jitter, waiting at least what Retry-After (seconds or an HTTP date) or, when the
  quota is spent, GitHub's x-ratelimit-reset says (capped);
* a client may name other answers that are rate limits (GitHub's 403s);
* when the retries run out, or Retry-After asks for a longer wait than
  ``max_wait_s``, a ``TransientError`` is raised so the *run* is retried later
  (carrying the Retry-After hint);
* other 4xx raise ``HttpError`` (permanent) with the status and the service's
  own message, never request headers (they hold the credentials);
* a 2xx whose body is not the JSON asked for (an HTML error page from a proxy)
  counts as a transient failure.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from mwai.backoff import backoff_s
from mwai.errors import PermanentError, TransientError
from mwai.logs import HTTP_LOGGER

log = logging.getLogger(HTTP_LOGGER)

# Retried below 500 as the official SDKs do: request timeout, conflict, too many requests.
RETRY_STATUSES_4XX = frozenset({408, 409, 429})
# A rate-limit reset further away than this is a skewed clock, not a wait worth making.
RATE_LIMIT_RESET_MAX_S = 3600.0
USER_AGENT = "mwai (+https://github.com/mwai)"

# (status, headers, body) -> None when the answer is not a rate limit, else the least
# wait in seconds it asks for (0 when its headers say how long): a client's own rule.
RateLimitRule = Callable[[int, Mapping[str, str], bytes], float | None]
# Called after every attempt with (service, status or "error"): metrics hook.
CallObserver = Callable[[str, str], None]
# Used by clients created without an observer; mwai.server.app sets it to the app's
# metrics before the workers start, so every task they create inherits it.
DEFAULT_OBSERVER: contextvars.ContextVar[CallObserver | None] = contextvars.ContextVar(
    "mwai_http_observer", default=None)


class HttpError(PermanentError):
    """A remote service answered with a 4xx that retrying will not fix."""

    def __init__(self, service: str, method: str, path: str, status: int, detail: str) -> None:
        self.service = service
        self.status = status
        self.detail = detail
        super().__init__(f"{service} {method} {path} answered {status}: {detail}")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now_s is None else now_s
    return max(0.0, moment.timestamp() - current)


def retryable_status(status: int) -> bool:
    """Whether retrying may get another answer: 408, 409, 429 and every 5xx."""
    return status in RETRY_STATUSES_4XX or status >= 500


def server_wait_s(headers: Mapping[str, str], now_s: float | None = None) -> float | None:
    """How long the service asked to wait: Retry-After, else (when x-ratelimit-remaining
    is 0) until GitHub's x-ratelimit-reset (epoch seconds), at most
    RATE_LIMIT_RESET_MAX_S; None when it did not say. ``headers`` is case-insensitive."""
    retry_after_s = parse_retry_after(headers.get("retry-after"), now_s)
    if retry_after_s is not None:
        return retry_after_s
    if headers.get("x-ratelimit-remaining", "").strip() != "0":
        return None
    try:
        reset_s = float(headers.get("x-ratelimit-reset", ""))
    except ValueError:
        return None
    current = time.time() if now_s is None else now_s
    return min(RATE_LIMIT_RESET_MAX_S, max(0.0, reset_s - current))


def summarize_body(body: bytes, limit: int = 300) -> str:
    """The service's own error message if it sent JSON, else the start of the body."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip().replace("\n", " ")
        return text[:limit] or "(empty body)"
    messages: list[str] = []
    if isinstance(document, dict):
        for key in ("errorMessages", "message", "error", "errors", "detail"):
            value = document.get(key)
            if value:
                messages.append(orjson.dumps(value).decode() if not isinstance(value, str)
                                else value)
    text = "; ".join(messages) if messages else orjson.dumps(document).decode()
    return text[:limit]


def _loggable(path: str) -> str:
    """A path for a log line: a full URL (an alert or Slack webhook, whose path is
    its token) is cut to its origin, without any user:password."""
    if not path.startswith("http"):
        return path
    parts = urllib.parse.urlsplit(path)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/..."


class ApiClient:
    """Requests to one service's base URL, with its auth headers and retry policy."""

    def __init__(
        self,
        service: str,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_wait_s: float = 60.0,
        observer: CallObserver | None = None,
        rate_limit: RateLimitRule | None = None,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_wait_s = max_wait_s
        self.observer = observer
        self.rate_limit = rate_limit

    def _observe(self, outcome: str) -> None:
        observer = self.observer or DEFAULT_OBSERVER.get()
        if observer is not None:
            observer(self.service, outcome)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        expect_json: bool = True,
        ok: frozenset[int] | None = None,
    ) -> Response:
        """Send, retrying transient failures; return the final 2xx (or ``ok``) answer."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        body = None if json is None else orjson.dumps(json)
        send_headers = {**self.headers, **(headers or {})}
        if body is not None:
            send_headers.setdefault("Content-Type", "application/json")
        if expect_json:
            send_headers.setdefault("Accept", "application/json")
        accepted = ok or frozenset()
        problem = ""
        retry_after_s: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                # Retry-After is taken whole: a wait beyond max_wait_s goes to the run queue.
                delay_s = backoff_s(attempt, base_s=self.backoff_base_s,
                                    max_s=self.backoff_max_s, retry_after_s=retry_after_s)
                if delay_s > self.max_wait_s:
                    break
                log.warning("Retrying %s request", self.service, extra={
                    "service": self.service, "method": method, "path": _loggable(path),
                    "attempt": attempt, "delay_s": round(delay_s, 3), "problem": problem})
                await asyncio.sleep(delay_s)
            retry_after_s = None
            try:
                async with self.session.request(
                    method, url, data=body, params=params, headers=send_headers,
                    timeout=self.timeout,
                ) as answer:
                    payload = await answer.read()
                    status = answer.status
                    answer_headers = CIMultiDict(answer.headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._observe("error")
                problem = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
                if isinstance(exc, TimeoutError):
                    problem = f"timed out after {self.timeout.total:g} s"
                continue
            self._observe(str(status))
            limited_s = (None if self.rate_limit is None
                         else self.rate_limit(status, answer_headers, payload))
            if retryable_status(status) or limited_s is not None:
                retry_after_s = server_wait_s(answer_headers)
                if limited_s is not None:
                    retry_after_s = max(retry_after_s or 0.0, limited_s)
                problem = f"{status}: {summarize_body(payload, 200)}"
                continue
            if status >= 400 and status not in accepted:
                raise HttpError(self.service, method, path, status, summarize_body(payload))
            response = Response(status, answer_headers, payload)
            if expect_json and payload and status != 204:
                try:
                    response.json()
                except orjson.JSONDecodeError:
                    problem = f"{status} but the body is not JSON: {summarize_body(payload, 120)}"
                    continue
            return response
        raise TransientError(
            f"{self.service} {method} {path} failed after {self.retries + 1} tries: {problem}",
            retry_after_s=retry_after_s,
        )


def new_session(limit: int = 32) -> aiohttp.ClientSession:
    """The process's shared session; close it when the service stops."""
    connector = aiohttp.TCPConnector(limit=limit, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, json_serialize=lambda v:
                                 orjson.dumps(v).decode())
