"""A 200 means on disk: the connection that serves writes fsyncs every commit
(PRAGMA synchronous = FULL), and the webhook's answer waits for the commit.

A kill -9 keeps the page cache, so crash tests cannot see a missing fsync: the
setting is read from the served writer connection itself, and the order "commit
returned, then 200" is shown by holding a commit and watching the answer wait.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from mwai.queue.store import Store
from mwai.queue.writer import WriterConnection
from mwai.server.app import STORE_KEY, create_app
from mwai.settings import Settings
from tests.conftest import SECRET, automation_payload, secret_headers
from tests.integration.helpers import db_rows

SYNCHRONOUS = {"0": "OFF", "1": "NORMAL", "2": "FULL", "3": "EXTRA"}


def served_settings(tmp_path: Path, **environ: str) -> Settings:
    """Settings as `mwai serve` reads them: from the environment, defaults elsewhere."""
    return Settings.from_env({"JIRA_WEBHOOK_SECRET": SECRET, "MWAI_PROCESSOR": "noop",
                              "MWAI_DB": str(tmp_path / "mwai.sqlite3"), **environ})


def synchronous(conn: sqlite3.Connection) -> str:
    return SYNCHRONOUS[str(conn.execute("PRAGMA synchronous").fetchone()[0])]


async def test_the_served_writer_connection_syncs_every_commit_by_default(
        aiohttp_client: Any, tmp_path: Path) -> None:
    http = await aiohttp_client(create_app(served_settings(tmp_path)))
    store: Store = http.server.app[STORE_KEY]
    assert await store.on_writer(synchronous) == "FULL"
    assert await store.on_writer(lambda conn: conn.execute(
        "PRAGMA journal_mode").fetchone()[0]) == "wal"


async def test_the_synchronous_setting_reaches_the_served_writer_connection(
        aiohttp_client: Any, tmp_path: Path) -> None:
    # The reading above is the connection's, not a default: another setting shows.
    http = await aiohttp_client(create_app(served_settings(tmp_path,
                                                           MWAI_SYNCHRONOUS="NORMAL")))
    assert await http.server.app[STORE_KEY].on_writer(synchronous) == "NORMAL"


class HeldCommit:
    """Holds the writer thread inside the COMMIT of the transaction that stores the
    issue's run until released; records the order of the commit returning and the
    answer arriving."""

    def __init__(self, issue_key: str) -> None:
        self.issue_key = issue_key
        self.entered = threading.Event()
        self.release = threading.Event()
        self.order: list[str] = []
        self.lock = threading.Lock()

    def note(self, what: str) -> None:
        with self.lock:
            self.order.append(what)

    def stores_the_run(self, conn: sqlite3.Connection) -> bool:
        (found,) = sqlite3.Connection.execute(
            conn, "SELECT count(*) FROM runs WHERE issue_key = ?", (self.issue_key,)).fetchone()
        return bool(found)

    def wrap(self) -> Any:
        def execute(conn: WriterConnection, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql != "COMMIT" or self.entered.is_set() or not self.stores_the_run(conn):
                return sqlite3.Connection.execute(conn, sql, *args)
            self.entered.set()
            assert self.release.wait(timeout=30), "the test never released the commit"
            cursor = sqlite3.Connection.execute(conn, sql, *args)
            self.note("commit returned")
            return cursor
        return execute


async def test_the_200_is_sent_only_after_the_commit_returns(
        aiohttp_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    http = await aiohttp_client(create_app(settings))
    held = HeldCommit("HELD-1")
    monkeypatch.setattr(WriterConnection, "execute", held.wrap())

    async def post() -> int:
        response = await http.post("/webhook/jira", data=orjson.dumps(
            automation_payload("HELD-1")), headers=secret_headers())
        await response.read()
        held.note("answer received")
        return int(response.status)

    answer = asyncio.create_task(post())
    try:
        assert await asyncio.to_thread(held.entered.wait, 10), "the webhook's commit never began"
        # The loop is free while the writer thread is held: another request is answered
        # (a round trip through the same loop and client), the webhook's is not.
        assert (await http.get("/health")).status == 200
        assert not answer.done() and held.order == []
        assert db_rows(settings.db, "SELECT count(*) FROM runs WHERE issue_key = 'HELD-1'") \
            == [(0,)]  # not visible to another connection: not committed yet
    finally:
        held.release.set()
    assert await answer == 200
    assert held.order == ["commit returned", "answer received"]
    assert db_rows(settings.db, "SELECT count(*) FROM runs WHERE issue_key = 'HELD-1'") \
        == [(1,)]
