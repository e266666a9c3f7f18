"""Fake Jira's request log and fault injection: what tests ask for and what they check.

FakeJira (mwai/demo/fakes/jira.py) logs every request and takes the next matching
fault before answering: 429 with Retry-After, 5xx, a slow answer, an answer held
after acting, or a 200 HTML page (a proxy or login page).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    auth_ok: bool
    status: int = 0


@dataclass
class Fault:
    status: int  # 0: no error, only the delay
    retry_after_s: float | None = None
    delay_s: float = 0.0
    html: bool = False
    match: str | None = None  # substring of "METHOD /path"; None: any request
    hold_s: float = 0.0  # after acting on the request: its answer waits (a kill lands)


class JiraFail(Exception):
    """Answer the request with Jira's error shape."""

    def __init__(self, status: int, messages: Iterable[str] = (),
                 errors: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = {"errorMessages": list(messages), "errors": errors or {}}


def json_answer(document: Any, status: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), headers=headers,
                        content_type="application/json")


async def fault_answer(fault: Fault) -> web.Response | None:
    """Wait the fault's delay; its answer, or None when the request is then handled."""
    if fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    if fault.html:
        return web.Response(status=200, content_type="text/html",
                            text="<html><body>Atlassian is down for maintenance</body></html>")
    if not fault.status:
        return None
    headers = {}
    if fault.retry_after_s is not None:
        headers["Retry-After"] = f"{fault.retry_after_s:g}"
    message = "Rate limit exceeded." if fault.status == 429 else "Internal error"
    return json_answer({"errorMessages": [message]}, fault.status, headers)


class JiraFaults:
    """The request log and the queue of faults, mixed into FakeJira."""

    requests: list[RequestRecord]
    faults: list[Fault]

    def fail_next(self, n: int = 1, status: int = 429, retry_after_s: float | None = None,
                  match: str | None = None) -> None:
        """The next ``n`` requests (matching ``match``, e.g. "POST /rest") get ``status``."""
        self.faults.extend(Fault(status, retry_after_s=retry_after_s, match=match)
                           for _ in range(n))

    def slow_next(self, n: int = 1, delay_s: float = 2.0, match: str | None = None) -> None:
        """The next ``n`` requests wait ``delay_s`` before being handled normally."""
        self.faults.extend(Fault(0, delay_s=delay_s, match=match) for _ in range(n))

    def hold_next(self, n: int = 1, hold_s: float = 5.0, match: str | None = None) -> None:
        """Act on the next ``n`` requests at once, then hold each answer ``hold_s``."""
        self.faults += [Fault(0, hold_s=hold_s, match=match) for _ in range(n)]

    def html_next(self, n: int = 1, match: str | None = None) -> None:
        """The next ``n`` requests get a 200 HTML page (a proxy or login page)."""
        self.faults.extend(Fault(200, html=True, match=match) for _ in range(n))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        target = f"{method} {path}"
        for index, fault in enumerate(self.faults):
            if fault.match is None or fault.match in target:
                return self.faults.pop(index)
        return None

    def calls(self, method: str | None = None, path_contains: str = "") -> list[RequestRecord]:
        """Logged requests, filtered by method and a substring of the path."""
        return [record for record in self.requests
                if (method is None or record.method == method) and path_contains in record.path]

