"""The database refuses writes (disk full, read-only file): webhooks get 503 with
Retry-After while the fault lasts, nothing answered 200 is lost, and the service
recovers by itself once the fault is gone.

No privilege needed, so these never skip: the faults are SQLite's own errors,
raised on the very connection that serves writes (Store.on_writer) of the real
app. ``PRAGMA max_page_count`` at the database's current size makes the next page
a write needs fail with SQLITE_FULL ("database or disk is full"), the error a
full disk gives; ``PRAGMA query_only`` makes every write fail with SQLITE_READONLY
("attempt to write a readonly database"), the error a read-only file gives.
Lifting the pragma is the operator freeing space or fixing the permissions.
tests/acceptance/test_store_faults.py adds the real faults against `mwai serve`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from mwai.queue.store import Store
from mwai.server.app import STORE_KEY, create_app
from mwai.settings import Settings
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import db_rows, wait_for

PADDING = 2000  # each webhook needs new pages soon: the page limit is reached quickly


def pragma(statement: str) -> Callable[[sqlite3.Connection], Any]:
    """Runs on the writer connection; the value the pragma answers, if any."""
    def run(conn: sqlite3.Connection) -> Any:
        row = conn.execute(statement).fetchone()
        return row[0] if row else None
    return run


def page_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_count").fetchone()[0])


class Fault:
    """Injects and lifts one fault on the served writer connection."""

    def __init__(self, name: str, inject: str, lift: str, error: str) -> None:
        self.name, self.inject, self.lift, self.error = name, inject, lift, error

    def __repr__(self) -> str:
        return self.name


DISK_FULL = Fault("disk_full", "PRAGMA max_page_count = 1",  # clamped to the current size
                  "PRAGMA max_page_count = 4294967294", "database or disk is full")
READ_ONLY = Fault("read_only", "PRAGMA query_only = 1", "PRAGMA query_only = 0",
                  "attempt to write a readonly database")


class Client:
    """Posts webhooks and remembers which keys were acknowledged."""

    def __init__(self, http: Any) -> None:
        self.http = http
        self.acked: list[str] = []
        self.refused: list[str] = []
        self.number = 0

    async def post(self, prefix: str) -> int:
        self.number += 1
        key = f"{prefix}-{self.number}"
        response = await self.http.post(
            "/webhook/jira", data=orjson.dumps(automation_payload(key, pad="x" * PADDING)),
            headers=secret_headers())
        document = await response.json()
        if response.status == 200:
            assert document["ok"] is True, document
            self.acked.append(key)
        else:
            assert response.status == 503, (response.status, document)
            assert document["ok"] is False
            assert "retry later" in document["error"], document
            assert int(response.headers["Retry-After"]) >= 1
            self.refused.append(key)
        return int(response.status)


async def idle(settings: Settings) -> None:
    await wait_for(lambda: db_rows(settings.db, "SELECT count(*) FROM runs WHERE status "
                                   "IN ('queued', 'running')")[0][0] == 0,
                   timeout_s=20, what="every run finished")


@pytest.mark.parametrize("fault", [DISK_FULL, READ_ONLY], ids=repr)
async def test_a_write_fault_answers_503_loses_nothing_and_recovers_by_itself(
        aiohttp_client: Any, settings: Settings, fault: Fault) -> None:
    http = await aiohttp_client(create_app(settings))
    store: Store = http.server.app[STORE_KEY]
    client = Client(http)
    for _ in range(5):
        assert await client.post("BEFORE") == 200
    await idle(settings)

    await store.on_writer(pragma(fault.inject))
    if fault is DISK_FULL:
        size = await store.on_writer(page_count)
        assert await store.on_writer(pragma("PRAGMA max_page_count")) == size
    # The pages already there may still hold a webhook or two (disk full); then
    # every webhook is refused while the fault lasts.
    statuses = [await client.post("FAULT") for _ in range(40)]
    first_refusal = statuses.index(503)
    assert first_refusal <= 5, statuses
    assert set(statuses[first_refusal:]) == {503}, statuses
    health = await (await http.get("/health/detailed")).json()
    assert health["status"] == "degraded", health
    assert any("refuses writes" in problem and fault.error in problem
               for problem in health["problems"]), health
    assert (await http.get("/health")).status == 200  # the process itself stays up

    await store.on_writer(pragma(fault.lift))
    # The very next webhook is stored: no restart, no reopening.
    for _ in range(5):
        assert await client.post("AFTER") == 200
    await idle(settings)
    health = await (await http.get("/health/detailed")).json()
    assert health["status"] == "healthy", health

    rows = dict(db_rows(settings.db, "SELECT issue_key, status FROM runs"))
    assert sorted(rows) == sorted(client.acked), "stored runs are exactly the acknowledged"
    assert set(rows.values()) == {"completed"}
    assert not set(client.refused) & set(rows)
    assert db_rows(settings.db, "PRAGMA integrity_check") == [("ok",)]
