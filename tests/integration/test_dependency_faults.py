"""A remote service (Jira, GitHub, the LLM) that is down or answers garbage.

The HTTP client turns every such failure into a TransientError that names the
service and what went wrong (never the token); the worker pool retries the run
with backoff, then fails it with that message as last_error, while the workers
stay alive and other issues keep flowing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from mwai.clients.http import ApiClient
from mwai.errors import TransientError
from mwai.queue.processor import RunContext
from mwai.server.app import POOL_KEY, create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import db_rows, wait_for

TOKEN = "tok-do-not-leak-0123456789"


async def broken(request: web.Request) -> web.StreamResponse:
    mode = request.match_info["mode"]
    if mode == "malformed-json":
        return web.Response(body=b'{"key": "A-1", "fields": ', content_type="application/json")
    if mode == "html-200":
        return web.Response(text="<html><body>Bad gateway</body></html>",
                            content_type="text/html")
    if mode == "429-storm":
        return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
    if mode == "500":
        return web.json_response({"errorMessages": ["Internal server error"]}, status=500)
    if mode == "slow":
        await asyncio.sleep(5)
        return web.json_response({})
    if mode == "reset":
        assert request.transport is not None
        request.transport.close()  # the connection drops before any answer
        await asyncio.sleep(1)
        return web.json_response({})
    raise web.HTTPNotFound()


@pytest.fixture
async def remote(aiohttp_server: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/{mode}", broken)
    server = await aiohttp_server(app)
    yield str(server.make_url("")).rstrip("/")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


def client(session: aiohttp.ClientSession, base_url: str) -> ApiClient:
    return ApiClient("jira", base_url, session, headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout_s=0.3, retries=2, backoff_base_s=0.01, backoff_max_s=0.05)


@pytest.mark.parametrize(("mode", "named"), [
    ("malformed-json", "not JSON"),
    ("html-200", "not JSON"),
    ("429-storm", "429"),
    ("500", "Internal server error"),
    ("slow", "timed out"),
    ("reset", "Disconnected"),
])
async def test_garbage_and_failures_become_a_clear_transient_error(
        remote: str, mode: str, named: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransientError) as caught:
            await client(session, remote).request("GET", f"/{mode}")
    message = str(caught.value)
    assert message.startswith(f"jira GET /{mode} failed after 3 tries")
    assert named in message
    assert TOKEN not in message


async def test_connection_refused_is_a_clear_transient_error() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransientError) as caught:
            await client(session, f"http://127.0.0.1:{closed_port()}").request("GET", "/x")
    assert "Cannot connect" in str(caught.value) and TOKEN not in str(caught.value)


async def test_a_retry_after_longer_than_max_wait_goes_to_the_run_queue_at_once(
        aiohttp_server: Any) -> None:
    """Retry-After is a floor of the backoff, taken whole: a wait past max_wait_s is not
    slept inside the request but handed to the run queue with the TransientError."""
    calls: list[str] = []

    async def overloaded(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=429, headers={"Retry-After": "120"}, text="later")

    app = web.Application()
    app.router.add_get("/busy", overloaded)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        api = ApiClient("jira", str(server.make_url("")).rstrip("/"), session, retries=3,
                        backoff_base_s=0.01, backoff_max_s=0.05, max_wait_s=60.0)
        with pytest.raises(TransientError) as caught:
            await api.request("GET", "/busy")
    assert calls == ["/busy"]  # no retry slept within the request
    assert caught.value.retry_after_s == 120.0


class DependsOnADeadService:
    """Runs of DEAD-* call a service nobody listens on; the others just complete."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def process(self, ctx: RunContext) -> None:
        if ctx.run.issue_key.startswith("DEAD"):
            async with aiohttp.ClientSession() as session:
                await client(session, self.base_url).request("GET", "/rest/api/3/myself")

    async def close(self) -> None:
        return None


async def test_runs_against_a_dead_service_fail_clearly_and_others_keep_flowing(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(max_attempts=2, workers=2)
    app = create_app(settings, processor=DependsOnADeadService(
        f"http://127.0.0.1:{closed_port()}"))
    web_client = await aiohttp_client(app)
    keys = ["DEAD-1", "OK-1", "DEAD-2", "OK-2", "OK-3", "OK-4"]
    for key in keys:
        response = await web_client.post("/webhook/jira", headers=secret_headers(),
                                         data=orjson.dumps(automation_payload(key)))
        assert response.status == 200

    def finished() -> bool:
        rows = db_rows(settings.db, "SELECT status FROM runs")
        return len(rows) == len(keys) and all(s in ("completed", "failed") for (s,) in rows)

    await wait_for(finished, timeout_s=20, what="every run finished")
    rows = {key: (status, attempts, error) for key, status, attempts, error in db_rows(
        settings.db, "SELECT issue_key, status, attempts, last_error FROM runs")}
    for key in ("OK-1", "OK-2", "OK-3", "OK-4"):
        assert rows[key][0] == "completed"
    for key in ("DEAD-1", "DEAD-2"):
        status, attempts, error = rows[key]
        assert (status, attempts) == ("failed", 2)
        assert "gave up after 2 attempts" in error and "Cannot connect" in error
        assert TOKEN not in error
    assert app[POOL_KEY].alive == settings.workers
