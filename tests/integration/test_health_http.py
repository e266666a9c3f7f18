"""GET /health/detailed answers 503 when the service is unhealthy (README, docs/operations.md):
no worker alive, or the database cannot be read. Degraded stays 200."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
import pytest

from mwai.queue.processor import RunContext
from mwai.server.app import POOL_KEY, STORE_KEY, create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import wait_for


class WorkerCrash(BaseException):
    """Escapes every handler of the pool, as a bug in it would: the worker dies."""


class CrashingProcessor:
    async def process(self, ctx: RunContext) -> None:
        raise WorkerCrash(f"worker crashed on run {ctx.run.id}")

    async def close(self) -> None:
        return None


async def detailed(client: Any) -> tuple[int, dict[str, Any]]:
    response = await client.get("/health/detailed")
    return response.status, await response.json()


async def test_no_worker_alive_is_503_unhealthy(aiohttp_client: Any,
                                                settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(workers=2), CrashingProcessor()))
    pool = client.app[POOL_KEY]
    status, report = await detailed(client)
    assert (status, report["status"]) == (200, "healthy"), report

    async def crash_one(key: str, alive_after: int) -> None:
        response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload(key)),
                                     headers=secret_headers())
        assert response.status == 200
        await wait_for(lambda: pool.alive == alive_after, what=f"{alive_after} workers alive")

    await crash_one("DIE-1", 1)
    status, report = await detailed(client)
    assert (status, report["status"]) == (200, "degraded"), report
    assert "only 1 of 2 workers alive" in report["problems"]

    await crash_one("DIE-2", 0)
    status, report = await detailed(client)
    assert (status, report["status"]) == (503, "unhealthy"), report
    assert report["workers"]["alive"] == 0
    assert report["problems"][0] == "no worker is alive"
    assert report["database"] == "healthy"
    # /health only says that the process answers: it stays 200.
    assert (await client.get("/health")).status == 200


async def test_database_that_cannot_be_read_is_503_unhealthy(
        aiohttp_client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await aiohttp_client(create_app(settings))
    status, report = await detailed(client)
    assert (status, report["status"], report["database"]) == (200, "healthy", "healthy")

    # The driver's own error at the store's read connection (what an unreadable
    # file or a failing disk gives); mwai's translation and the route are real.
    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(client.app[STORE_KEY]._reader, "execute", unreadable)
    status, report = await detailed(client)
    assert (status, report["status"]) == (503, "unhealthy"), report
    assert report["database"].startswith("unhealthy: database ")
    assert "disk I/O error" in report["database"]
    assert report["problems"] == ["database unavailable"]
    assert report["queued"] is None and report["running"] is None

    monkeypatch.undo()  # readable again: healthy again, nothing to restart
    status, report = await detailed(client)
    assert (status, report["status"]) == (200, "healthy"), report
