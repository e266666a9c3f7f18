"""The benchmark's databases: created by the store, then filled and counted by the
bench's own SQL (``sql/bench.sql``) with the sqlite3 module on the database file.

The production store keeps no query that only the benchmark needs, and a fill of a
million runs is one INSERT ... SELECT, not a Python round trip per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypedDict

import orjson

from mwai.bench import loadgen as lg
from mwai.queue.store import Store

DAY_S = 86400.0
# The webhook every load sends and every fixture run stores (with its own issue key).
PAYLOAD = {
    "event_type": "issue_assigned",
    "issue_key": lg.KEY_PLACEHOLDER,
    "issue_type": "Story",
    "status": "Backlog",
    "assignee_account_id": "5b10ac8d82e05b22cc7d4ef5",
    "project_key": "BENCH",
    "summary": "Add a retry button to the export dialog",
}
# Like the store's readers: a count made while `mwai serve` commits waits this long
# for its lock instead of failing the section.
BUSY_TIMEOUT_S = 1.0


def _load_queries() -> dict[str, str]:
    """sql/bench.sql by name: "-- name: X" starts a query, other comment lines are dropped."""
    text = resources.files("mwai.bench").joinpath("sql/bench.sql").read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.split(":", 1)[1].strip(), []
        elif name and not line.lstrip().startswith("--"):
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return {key: sql.rstrip(";") for key, sql in queries.items()}


SQL = _load_queries()


class TableSizes(TypedDict):
    runs: int
    events: int
    open_runs: int


class Progress(TypedDict):
    """The completed runs of a throughput window (times in epoch seconds)."""

    completed: int
    first_started_at: float | None
    last_finished_at: float | None


class RunTimes(TypedDict):
    id: int
    created_at: float
    started_at: float | None


# ------------------------------------------------------------------- writing


def create_db(db: Path) -> None:
    """An empty mwai database at the current schema, made by the store itself."""

    async def create() -> None:
        store = Store(str(db))
        await store.open()
        await store.close()

    asyncio.run(create())


@contextlib.contextmanager
def _fixture_connection(db: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        connection.execute(SQL["fixture_cache"])
        yield connection
        connection.execute(SQL["checkpoint"]).fetchall()
    finally:
        connection.close()


def fill_finished(db: Path, count: int, span_s: float = 60 * DAY_S) -> None:
    """``count`` more finished runs over the last ``span_s``, five events each."""
    with _fixture_connection(db) as connection:
        after_id = connection.execute(SQL["max_run_id"]).fetchone()[0]
        payload = orjson.dumps({**PAYLOAD, "issue_key": "SCALE-1"}).decode()
        connection.execute(SQL["fill_finished_runs"], {
            "count": count, "payload_json": payload, "newest": time.time() - 60,
            "span_s": span_s})
        connection.execute(SQL["fill_events"], {"after_id": after_id})


def fill_queued(db: Path, count: int) -> None:
    """``count`` queued runs of distinct issues, all due now."""
    with _fixture_connection(db) as connection:
        payload = orjson.dumps({**PAYLOAD, "issue_key": "FILL-1"}).decode()
        connection.execute(SQL["fill_queued_runs"], {
            "count": count, "payload_json": payload, "now": time.time()})


# ------------------------------------------------------------------- reading


def _read(db: Path, name: str, **params: Any) -> list[dict[str, Any]]:
    # mode=rw: the file must exist (a missing one is a bench bug, not a new database);
    # query_only: a count can never change what it measures.
    with contextlib.closing(sqlite3.connect(f"file:{db.absolute()}?mode=rw", uri=True,
                                            timeout=BUSY_TIMEOUT_S)) as connection:
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA query_only = 1")
        return [dict(row) for row in connection.execute(SQL[name], params)]


def table_sizes(db: Path) -> TableSizes:
    row = _read(db, "table_sizes")[0]
    return TableSizes(runs=row["runs"], events=row["events"], open_runs=row["open_runs"])


def progress(db: Path) -> Progress:
    row = _read(db, "progress")[0]
    return Progress(completed=row["completed"], first_started_at=row["first_started_at"],
                    last_finished_at=row["last_finished_at"])


def run_times(db: Path, after_id: int = 0) -> list[RunTimes]:
    """Every run after ``after_id``: when it was enqueued and when it was claimed."""
    return [RunTimes(id=row["id"], created_at=row["created_at"], started_at=row["started_at"])
            for row in _read(db, "run_times", after_id=after_id)]


def old_finished_runs(db: Path, before: float) -> int:
    """How many runs `mwai prune` may delete: finished and last updated before ``before``."""
    return int(_read(db, "old_finished_runs", before=before)[0]["runs"])


def runs_page_cursor(db: Path, run_id: int) -> str:
    """The runs page cursor (``<updated_at>:<id>``) that starts just after ``run_id``."""
    row = _read(db, "run_cursor", id=run_id)[0]
    return f"{float(row['updated_at'])!r}:{int(row['id'])}"
