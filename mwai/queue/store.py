"""The only place that talks SQL: the durable run queue and its journal.

Writes are functions of the write connection (``_op_*`` below) handed to the
group-commit writer thread (mwai/writer.py): every write asked for while the
previous batch was being committed goes into the next transaction, so many
webhooks share one fsync, and one bad write still fails alone. Reads use a
separate aiosqlite connection and never wait for the writer (WAL). Driver
errors are translated to mwai errors.

A PostgreSQL backend would implement the same public methods.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from mwai.errors import InvalidRunState, NotMwaiDatabase, RunNotFound, StoreError, StoreUnavailable
from mwai.queue.writer import BatchWriter, Checkpointer, WriterConnection, translate_error

T = TypeVar("T")

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")


def _load_queries() -> dict[str, str]:
    text = resources.files("mwai.queue").joinpath("sql/queries.sql").read_text(encoding="utf-8")
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


def _load_migrations() -> list[str]:
    folder = resources.files("mwai.queue").joinpath("sql/migrations")
    files = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in files]


Q = _load_queries()
MIGRATIONS = _load_migrations()
SCHEMA_VERSION = len(MIGRATIONS)
# How often the background checkpoint copies the WAL into the database (after commits).
CHECKPOINT_INTERVAL_S = 0.5


def now_s() -> float:
    return time.time()


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    run_id: int
    deduplicated: bool  # a redelivery (same delivery id): nothing was written
    coalesced: bool  # merged into an already-queued run of the same issue


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    id: int
    issue_key: str
    attempts: int
    payload_json: str
    created_at: float
    available_at: float
    priority: int
    request_id: str | None
    branch: str | None
    pr_url: str | None
    action: str | None
    worker: str
    claimed_at: float

    @property
    def payload(self) -> dict[str, Any]:
        value = orjson.loads(self.payload_json)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Event:
    run_id: int
    message: str
    level: str = "info"
    meta: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class HealthCounts:
    queued: int
    running: int
    stuck: int
    oldest_queued_at: float | None


@dataclass(frozen=True, slots=True)
class LostRun:
    run_id: int
    issue_key: str
    outcome: str  # queued | failed | cancelled | superseded
    worker: str | None


def _prefix_range(prefix: str) -> dict[str, str]:
    """Bounds that select every locked_by starting with ``prefix`` using an index."""
    return {"prefix_low": prefix, "prefix_high": prefix + "\U0010ffff"}


class Store:
    """The run queue and its journal in one SQLite file.

    ``await store.open()`` before use, ``await store.close()`` after. With
    ``readonly=True`` only the read connection is opened (views, mwai runs...).
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 1000,
        readonly: bool = False,
        create: bool = True,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.readonly = readonly
        self.create = create and not readonly
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"
        self._reader: aiosqlite.Connection | None = None
        self._writer: BatchWriter | None = None
        self._checkpointer: Checkpointer | None = None

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> Store:
        if not self.create and not Path(self.path).exists():
            raise StoreError(
                f"database {self.path} does not exist: start `mwai serve` once to create it, "
                "or point --db / MWAI_DB at the right file"
            )
        if not self.readonly:
            conn = await asyncio.to_thread(self._open_writer)
            self._writer = BatchWriter(conn, self.path, self.busy_timeout_ms, _flush_events)
            self._writer.start()
            writer = self._writer
            self._checkpointer = Checkpointer(self._uri(), Q["wal_checkpoint"],
                                              CHECKPOINT_INTERVAL_S,
                                              lambda: writer.batches_committed)
            self._checkpointer.start()
        try:
            self._reader = await aiosqlite.connect(self._uri(), uri=True)
            await self._reader.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await self._reader.execute("PRAGMA query_only = 1")
            version = await self._read_version()
        except sqlite3.Error as exc:
            await self.close()
            raise translate_error(exc, self.path) from None
        except StoreError:
            await self.close()
            raise
        if version != SCHEMA_VERSION:
            await self.close()
            raise NotMwaiDatabase(
                f"{self.path} has schema version {version}, this mwai needs {SCHEMA_VERSION}: "
                "start `mwai serve` with this mwai once to migrate it"
            )
        return self

    def _uri(self) -> str:
        mode = "rwc" if self.create else "rw"
        return f"file:{Path(self.path).absolute()}?mode={mode}"

    async def _read_version(self) -> int:
        assert self._reader is not None
        async with self._reader.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version == 0:
            async with self._reader.execute("SELECT count(*) FROM sqlite_master") as cursor:
                row = await cursor.fetchone()
            if row and row[0]:
                raise NotMwaiDatabase(
                    f"{self.path} is a SQLite database but not a mwai one (no mwai schema); "
                    "point --db / MWAI_DB at the mwai database"
                )
        return version

    def _open_writer(self) -> WriterConnection:
        try:
            conn = sqlite3.connect(
                self._uri(), uri=True, isolation_level=None, check_same_thread=False,
                factory=WriterConnection,
            )
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"database {self.path}: cannot switch to WAL mode")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(Q["wal_backstop"])
            self._migrate(conn)
            # From here on the writer waits for the lock itself (BatchWriter._begin):
            # SQLite's busy handler sleeps in steps of up to 100 ms, long after the
            # other writer has let go.
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate_error(exc, self.path) from None
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise NotMwaiDatabase(
                f"{self.path} is a SQLite database but not a mwai one (no mwai schema); "
                "point --db / MWAI_DB at the mwai database"
            )
        if version > SCHEMA_VERSION:
            raise NotMwaiDatabase(
                f"{self.path} has schema version {version}, newer than this mwai "
                f"({SCHEMA_VERSION}): upgrade mwai"
            )
        for number in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_statements(MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    @property
    def write_failure(self) -> str | None:
        """The error of the last failed batch; None once a batch changing rows commits."""
        return self._writer.write_failure if self._writer is not None else None

    async def _write(self, fn: Callable[..., T], *args: Any, alone: bool = False) -> T:
        if self._writer is None:
            raise StoreError("the store is not open for writing")
        result: T = await self._writer.submit(fn, args, alone=alone)
        return result

    # ------------------------------------------------------------------ reading

    async def _fetchall(self, name: str, **params: Any) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StoreError("the store is not open")
        try:
            self._reader.row_factory = sqlite3.Row
            async with self._reader.execute(Q[name], params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from None

    async def _fetchone(self, name: str, **params: Any) -> sqlite3.Row | None:
        rows = await self._fetchall(name, **params)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ intake

    async def enqueue(
        self,
        issue_key: str,
        payload_json: str,
        *,
        delivery_id: str | None = None,
        request_id: str | None = None,
        priority: int = 0,
        source: str = "",
        event_type: str = "",
    ) -> EnqueueResult:
        """Queue a run for the issue, or coalesce into its queued run; durable on return."""
        return await self._write(
            _op_enqueue,
            issue_key,
            payload_json,
            delivery_id,
            request_id,
            priority,
            source,
            event_type,
        )

    # ------------------------------------------------------------------ workers

    async def claim(self, worker: str, lease_s: float) -> ClaimedRun | None:
        return await self._write(_op_claim, worker, lease_s)

    async def add_event(
        self, run_id: int, message: str, level: str = "info", **meta: Any
    ) -> None:
        await self._write(_op_events, [Event(run_id, message, level, meta, now_s())])

    async def add_events(self, events: Sequence[Event]) -> None:
        now = now_s()
        stamped = [e if e.ts else Event(e.run_id, e.message, e.level, e.meta, now) for e in events]
        await self._write(_op_events, stamped)

    async def renew_leases(self, runs: Sequence[tuple[int, str]], lease_s: float) -> int:
        """Extend the lease of (run_id, worker) pairs and record the process as alive."""
        return await self._write(_op_renew, list(runs), lease_s, self.process_id)

    async def register_process(self) -> None:
        await self._write(_op_register_process, self.process_id)

    async def unregister_process(self) -> None:
        await self._write(_op_stop_process, self.process_id)

    async def set_run_result(self, run_id: int, **fields: Any) -> None:
        """Record what the run produced (action, branch, pr_url, cost_usd, tokens)."""
        await self._write(_op_set_result, run_id, fields)

    async def complete(self, run_id: int, worker: str, message: str = "Run completed",
                       **meta: Any) -> bool:
        return await self._write(_op_finish, run_id, worker, "completed", None, message, meta)

    async def complete_and_claim(
        self, run_id: int, worker: str, events: Sequence[Event], lease_s: float | None
    ) -> tuple[bool, ClaimedRun | None]:
        """Complete a run (with its pending journal events) and, when ``lease_s`` is
        given, claim the worker's next run in the same transaction: one commit per
        run instead of two."""
        return await self._write(_op_complete_and_claim, run_id, worker, list(events), lease_s)

    async def fail(self, run_id: int, worker: str, error: str, **meta: Any) -> bool:
        return await self._write(_op_finish, run_id, worker, "failed", error, "Run failed", meta)

    async def finish_cancelled(self, run_id: int, worker: str, reason: str) -> bool:
        return await self._write(
            _op_finish, run_id, worker, "cancelled", reason, "Run cancelled", {"reason": reason}
        )

    async def retry_later(
        self, run_id: int, issue_key: str, error: str, delay_s: float, attempts: int
    ) -> str:
        """Put a running run back in the queue after ``delay_s``; returns its outcome."""
        return await self._write(
            _op_release, run_id, issue_key, attempts, now_s() + delay_s, error, 0,
            "Retry scheduled", {"error": error, "delay_s": round(delay_s, 3)},
        )

    async def release(self, run_id: int, issue_key: str, attempts: int, reason: str) -> str:
        """Give a running run back to the queue without spending its attempt."""
        return await self._write(
            _op_release, run_id, issue_key, attempts, now_s(), None, -1,
            "Run released", {"reason": reason},
        )

    async def recover_expired(self, max_attempts: int) -> list[LostRun]:
        """Re-queue (or fail) running runs whose lease expired in other processes."""
        return await self._write(_op_recover_expired, self.process_id, max_attempts)

    async def recover_dead_processes(self, max_attempts: int) -> list[LostRun]:
        """At startup: runs of processes on this host that are gone, whatever their lease."""
        return await self._write(_op_recover_dead, self.process_id, max_attempts)

    async def cancel_requests(self) -> list[int]:
        rows = await self._fetchall("cancel_requests", **_prefix_range(self.process_id))
        return [int(row["id"]) for row in rows]

    async def health_counts(self, stuck_after_s: float) -> HealthCounts:
        row = await self._fetchone("health_counts", stuck_before=now_s() - stuck_after_s)
        assert row is not None
        return HealthCounts(
            queued=int(row["queued"]),
            running=int(row["running"]),
            stuck=int(row["stuck"]),
            oldest_queued_at=row["oldest_queued_at"],
        )

    # --------------------------------------------------------------- operators

    async def get_run(self, run_id: int) -> dict[str, Any]:
        row = await self._fetchone("get_run", run_id=run_id)
        if row is None:
            raise RunNotFound(f"no run with id {run_id}: list runs with `mwai runs`")
        return dict(row)

    async def events(
        self, run_id: int, after_id: int = 0, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        rows = await self._fetchall("events_of_run", run_id=run_id, after_id=after_id,
                                    limit=limit)
        return [dict(row) for row in rows]

    async def cancel(self, run_id: int, reason: str = "cancelled by operator") -> str:
        """Cancel a queued run now, or ask the owner of a running run to stop it.

        Returns the status reached: 'cancelled' or 'cancelling'.
        """
        return await self._write(_op_cancel, run_id, reason)

    async def requeue(self, run_id: int, reason: str = "requeued by operator") -> None:
        await self._write(_op_requeue, run_id, reason)

    async def kv_get(self, key: str) -> tuple[str, float] | None:
        row = await self._fetchone("kv_get", key=key)
        return (str(row["value"]), float(row["updated_at"])) if row else None

    async def kv_set(self, key: str, value: str) -> None:
        await self._write(_op_kv_set, key, value)

    async def read_query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run a named read-only query (operator views)."""
        return [dict(row) for row in await self._fetchall(name, **params)]

    async def write_query(self, name: str, **params: Any) -> int:
        """Run a named write statement in the next batch; returns the rows changed."""
        return await self._write(_op_statement, name, params)

    # ------------------------------------------ operator actions (mwai/actions.py)
    # Writes of `mwai prune` / `mwai unlock` that must be atomic across several
    # statements, and VACUUM (which cannot run inside a transaction).

    async def prune_runs(self, run_ids: Sequence[int], before: float) -> tuple[int, int]:
        """Delete these runs and their events, if still finished and older than ``before``.

        One short transaction; returns (runs deleted, events deleted).
        """
        return await self._write(_op_prune_runs, list(run_ids), before)

    async def release_stale_locks(
        self, locks: Sequence[tuple[int, str]], fresh_after: float, max_attempts: int
    ) -> list[LostRun]:
        """Release the (run_id, locked_by) locks whose owner process looks dead.

        Re-checked inside the transaction: a lock that changed meanwhile, or whose
        process heartbeat is newer than ``fresh_after``, is left alone. A running run
        goes back to the queue (or fails when its attempts are spent), like lease
        recovery does.
        """
        return await self._write(_op_release_locks, list(locks), fresh_after, max_attempts)

    async def vacuum(self) -> None:
        """VACUUM then truncate the WAL (blocks other writers while it runs)."""
        await self._write(self._vacuum, alone=True)

    def _vacuum(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            try:
                conn.execute(Q["ops_vacuum"])
                conn.execute(Q["ops_checkpoint"]).fetchall()
            finally:
                conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from None


# --------------------------------------------------------------------------
# Write operations: each runs in the writer thread inside the batch transaction.


def _insert_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    pending = getattr(conn, "pending_events", None)
    if pending is not None:
        pending.extend(events)
        return
    _execute_insert_events(conn, events)


def _flush_events(conn: WriterConnection) -> None:
    if conn.pending_events:
        _execute_insert_events(conn, conn.pending_events)
        conn.pending_events = []


def _execute_insert_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    now = now_s()
    rows = [(e.run_id, e.ts or now, e.level, e.message, dumps(e.meta)) for e in events]
    conn.execute(Q["insert_events"], {"rows": orjson.dumps(rows).decode()})


def _op_enqueue(
    conn: sqlite3.Connection,
    issue_key: str,
    payload_json: str,
    delivery_id: str | None,
    request_id: str | None,
    priority: int,
    source: str,
    event_type: str,
) -> EnqueueResult:
    now = now_s()
    if delivery_id:
        row = conn.execute(Q["find_delivery"], {"delivery_id": delivery_id}).fetchone()
        if row:
            return EnqueueResult(int(row[0]), deduplicated=True, coalesced=False)
    run_id, duplicates = conn.execute(
        Q["enqueue"],
        {
            "issue_key": issue_key,
            "payload_json": payload_json,
            "now": now,
            "priority": priority,
            "delivery_id": delivery_id,
            "request_id": request_id,
        },
    ).fetchone()
    meta = {"source": source, "event_type": event_type, "delivery_id": delivery_id,
            "request_id": request_id}
    if duplicates == 0:
        events = [Event(run_id, "Webhook received", "info", meta, now),
                  Event(run_id, "Run enqueued", "info", {"issue_key": issue_key}, now)]
    else:
        events = [Event(run_id, "Duplicate trigger coalesced into queued run", "info",
                        {**meta, "duplicates": duplicates}, now)]
    _insert_events(conn, events)
    if delivery_id:
        conn.execute(Q["insert_delivery"], {"delivery_id": delivery_id, "run_id": run_id,
                                            "now": now})
    return EnqueueResult(int(run_id), deduplicated=False, coalesced=duplicates > 0)


def _op_claim(conn: sqlite3.Connection, worker: str, lease_s: float) -> ClaimedRun | None:
    now = now_s()
    row = conn.execute(
        Q["claim"], {"worker": worker, "now": now, "lease_expires_at": now + lease_s}
    ).fetchone()
    if row is None:
        return None
    (run_id, issue_key, attempts, payload_json, created_at, available_at, priority,
     request_id, branch, pr_url, action) = row
    run = ClaimedRun(run_id, issue_key, attempts, payload_json, created_at, available_at,
                     priority, request_id, branch, pr_url, action, worker, now)
    _insert_events(conn, [Event(run.id, "Run claimed", "info",
                                {"worker_id": worker, "attempt": run.attempts}, now)])
    return run


def _op_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    _insert_events(conn, events)


def _op_renew(
    conn: sqlite3.Connection, runs: Sequence[tuple[int, str]], lease_s: float, process_id: str
) -> int:
    now = now_s()
    changed = 0
    for run_id, worker in runs:
        cursor = conn.execute(
            Q["renew_lease"],
            {"run_id": run_id, "worker": worker, "now": now, "lease_expires_at": now + lease_s},
        )
        changed += cursor.rowcount
    _op_register_process(conn, process_id)
    return changed


def _op_register_process(conn: sqlite3.Connection, process_id: str) -> None:
    conn.execute(
        Q["upsert_process"],
        {"process_id": process_id, "pid": os.getpid(), "hostname": socket.gethostname(),
         "now": now_s()},
    )


def _op_stop_process(conn: sqlite3.Connection, process_id: str) -> None:
    now = now_s()
    conn.execute(Q["stop_process"], {"process_id": process_id, "now": now})
    conn.execute(Q["forget_old_processes"], {"before": now - 7 * 86400})


def _op_set_result(conn: sqlite3.Connection, run_id: int, fields: dict[str, Any]) -> None:
    allowed = ("action", "branch", "pr_url", "cost_usd", "input_tokens", "output_tokens")
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValueError(f"unknown run result fields: {sorted(unknown)}")
    params = {name: fields.get(name) for name in allowed}
    conn.execute(Q["update_run_result"], {**params, "run_id": run_id, "now": now_s()})


def _op_finish(
    conn: sqlite3.Connection,
    run_id: int,
    worker: str,
    status: str,
    error: str | None,
    message: str,
    meta: dict[str, Any],
) -> bool:
    now = now_s()
    cursor = conn.execute(
        Q["finish_run"],
        {"run_id": run_id, "worker": worker, "status": status, "last_error": error, "now": now},
    )
    if cursor.rowcount == 0:
        return False
    level = {"failed": "error", "cancelled": "warning"}.get(status, "info")
    event_meta = {**meta, "error": error} if error and status == "failed" else meta
    _insert_events(conn, [Event(run_id, message, level, event_meta, now)])
    return True


def _op_complete_and_claim(
    conn: sqlite3.Connection,
    run_id: int,
    worker: str,
    events: Sequence[Event],
    lease_s: float | None,
) -> tuple[bool, ClaimedRun | None]:
    if events:
        _insert_events(conn, events)
    done = _op_finish(conn, run_id, worker, "completed", None, "Run completed", {})
    next_run = _op_claim(conn, worker, lease_s) if lease_s is not None else None
    return done, next_run


def _release(
    conn: sqlite3.Connection,
    run_id: int,
    issue_key: str,
    attempts: int,
    available_at: float,
    error: str | None,
    attempt_delta: int,
) -> str:
    """Put a running run back in the queue, or fold it into the issue's queued run."""
    now = now_s()
    sibling = conn.execute(Q["queued_run_for_issue"], {"issue_key": issue_key}).fetchone()
    if sibling is None:
        conn.execute(
            Q["requeue_running"],
            {"run_id": run_id, "available_at": available_at, "last_error": error,
             "attempt_delta": attempt_delta, "now": now},
        )
        return "queued"
    sibling_id = int(sibling[0])
    reason = f"superseded by queued run {sibling_id} of the same issue"
    if error:
        reason += f" (last error: {error})"
    conn.execute(Q["close_superseded"], {"run_id": run_id, "last_error": reason, "now": now})
    conn.execute(
        Q["inherit_into_queued"],
        {"run_id": sibling_id, "attempts": max(0, attempts + attempt_delta),
         "available_at": available_at, "now": now},
    )
    _insert_events(conn, [
        Event(run_id, "Run superseded", "warning", {"by_run_id": sibling_id}, now),
        Event(sibling_id, "Took over a released run", "info",
              {"from_run_id": run_id, "attempts": attempts}, now),
    ])
    return "superseded"


def _op_release(
    conn: sqlite3.Connection,
    run_id: int,
    issue_key: str,
    attempts: int,
    available_at: float,
    error: str | None,
    attempt_delta: int,
    message: str,
    meta: dict[str, Any],
) -> str:
    outcome = _release(conn, run_id, issue_key, attempts, available_at, error, attempt_delta)
    level = "warning" if error else "info"
    _insert_events(conn, [Event(run_id, message, level, {**meta, "outcome": outcome})])
    return outcome


def _recover(
    conn: sqlite3.Connection, rows: Sequence[Any], max_attempts: int, why: str
) -> list[LostRun]:
    now = now_s()
    lost: list[LostRun] = []
    for run_id, issue_key, attempts, locked_by, cancel_requested in rows:
        meta = {"lost_worker": locked_by, "attempts": attempts, "reason": why}
        if cancel_requested:
            outcome, status = "cancelled", "cancelled"
            error = f"cancelled; its worker {locked_by} was lost ({why})"
        elif attempts >= max_attempts:
            outcome, status = "failed", "failed"
            error = (f"worker {locked_by} was lost ({why}) and the run has used all "
                     f"{max_attempts} attempts")
        else:
            outcome, status, error = "", "", None
        if status:
            conn.execute(Q["fail_lost_run"],
                         {"run_id": run_id, "status": status, "last_error": error, "now": now})
        else:
            outcome = _release(conn, run_id, issue_key, attempts, now,
                               f"worker {locked_by} was lost ({why})", 0)
        _insert_events(conn, [Event(run_id, "Lease expired; worker lost", "warning",
                                    {**meta, "outcome": outcome}, now)])
        lost.append(LostRun(run_id, issue_key, outcome, locked_by))
    return lost


def _op_recover_expired(
    conn: sqlite3.Connection, process_id: str, max_attempts: int
) -> list[LostRun]:
    rows = conn.execute(Q["expired_runs"], {"now": now_s(), "process_id": process_id}).fetchall()
    return _recover(conn, rows, max_attempts, "lease expired")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has that pid; when in doubt, alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _op_recover_dead(
    conn: sqlite3.Connection, process_id: str, max_attempts: int
) -> list[LostRun]:
    host = socket.gethostname()
    lost: list[LostRun] = []
    for other_id, pid, hostname, _started, _beat in conn.execute(Q["live_processes"]).fetchall():
        if other_id == process_id or hostname != host or pid_alive(int(pid)):
            continue
        rows = conn.execute(Q["runs_of_process"], _prefix_range(other_id + "/")).fetchall()
        lost += _recover(conn, rows, max_attempts, f"process {pid} is gone")
        conn.execute(Q["stop_process"], {"process_id": other_id, "now": now_s()})
    return lost


def _op_cancel(conn: sqlite3.Connection, run_id: int, reason: str) -> str:
    row = conn.execute(Q["run_status"], {"run_id": run_id}).fetchone()
    if row is None:
        raise RunNotFound(f"no run with id {run_id}: list runs with `mwai runs`")
    status = row[0]
    now = now_s()
    if status == "queued":
        conn.execute(Q["cancel_queued"], {"run_id": run_id, "last_error": reason, "now": now})
        _insert_events(conn, [Event(run_id, "Run cancelled", "warning", {"reason": reason}, now)])
        return "cancelled"
    if status == "running":
        conn.execute(Q["request_cancel"], {"run_id": run_id, "now": now})
        _insert_events(conn, [Event(run_id, "Cancel requested", "warning",
                                    {"reason": reason}, now)])
        return "cancelling"
    raise InvalidRunState(
        f"run {run_id} is already {status}; only queued or running runs can be cancelled"
    )


def _op_requeue(conn: sqlite3.Connection, run_id: int, reason: str) -> None:
    row = conn.execute(Q["get_run"], {"run_id": run_id}).fetchone()
    if row is None:
        raise RunNotFound(f"no run with id {run_id}: list runs with `mwai runs`")
    issue_key, status = row[1], row[2]
    if status == "queued":
        raise InvalidRunState(f"run {run_id} is already queued")
    if status == "running":
        raise InvalidRunState(
            f"run {run_id} is running; cancel it first (`mwai cancel {run_id}`) or let it finish"
        )
    sibling = conn.execute(Q["queued_run_for_issue"], {"issue_key": issue_key}).fetchone()
    if sibling is not None:
        raise InvalidRunState(
            f"issue {issue_key} already has queued run {sibling[0]}; it will process the issue"
        )
    now = now_s()
    conn.execute(Q["requeue_finished"], {"run_id": run_id, "now": now})
    _insert_events(conn, [Event(run_id, "Run requeued", "info",
                                {"reason": reason, "previous_status": status}, now)])


def _op_kv_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(Q["kv_set"], {"key": key, "value": value, "now": now_s()})


def _op_statement(conn: sqlite3.Connection, name: str, params: dict[str, Any]) -> int:
    return int(conn.execute(Q[name], params).rowcount)


def _split_statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.complete_statement aware)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


# --------------------------------------------------------------------------
# Operator actions (mwai/actions.py): run in the writer thread like the ones above.


def _op_prune_runs(
    conn: sqlite3.Connection, run_ids: Sequence[int], before: float
) -> tuple[int, int]:
    params = [{"run_id": run_id, "before": before} for run_id in run_ids]
    events = conn.executemany(Q["ops_prune_events"], params).rowcount
    conn.executemany(Q["ops_prune_deliveries"], params)
    runs = conn.executemany(Q["ops_prune_run"], params).rowcount
    return int(runs), int(events)


def _op_release_locks(
    conn: sqlite3.Connection, locks: Sequence[tuple[int, str]], fresh_after: float,
    max_attempts: int,
) -> list[LostRun]:
    released: list[LostRun] = []
    now = now_s()
    for run_id, locked_by in locks:
        row = conn.execute(Q["ops_lock_of_run"],
                           {"run_id": run_id, "locked_by": locked_by}).fetchone()
        if row is None:
            continue  # finished or re-claimed meanwhile
        process = conn.execute(Q["ops_process"],
                               {"process_id": locked_by.rpartition("/")[0]}).fetchone()
        if process is not None and process[5] is None and process[4] >= fresh_after:
            continue  # its process heartbeated meanwhile: alive
        why = f"released by mwai unlock: process of {locked_by} is not alive"
        if row[5] == "running":
            released += _recover(conn, [tuple(row[:5])], max_attempts, why)
        else:
            conn.execute(Q["ops_clear_lock"],
                         {"run_id": run_id, "locked_by": locked_by, "now": now})
            _insert_events(conn, [Event(run_id, "Stale lock released", "warning",
                                        {"lost_worker": locked_by, "reason": why}, now)])
            released.append(LostRun(run_id, str(row[1]), str(row[5]), locked_by))
    return released
