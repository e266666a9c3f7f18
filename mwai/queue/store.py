"""The durable run queue and its journal: the store's public API.

Writes are functions of the write connection (mwai/queue/writes.py) handed to
the group-commit writer thread (mwai/queue/writer.py): every write asked for
while the previous batch was being committed goes into the next transaction, so
many webhooks share one fsync, and one bad write still fails alone. Reads
(mwai/queue/reads.py) use a separate aiosqlite connection and never wait for the
writer (WAL). Driver errors are translated to mwai errors.

A PostgreSQL backend would implement the same public methods.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from mwai.errors import NotMwaiDatabase, StoreError, StoreUnavailable
from mwai.model import ClaimedRun, EnqueueResult, Event, LostRun
from mwai.queue import clock, writes
from mwai.queue.health import HealthSnapshot
from mwai.queue.reads import StoreReads
from mwai.queue.schema import SCHEMA_VERSION, Q, migrate, not_mwai
from mwai.queue.writer import BatchWriter, Checkpointer, WriterConnection, translate_error

T = TypeVar("T")

# The kv key whose presence stops every claim (`mwai pause`).
PAUSED_KEY = "claims.paused"

# How often the background checkpoint copies the WAL into the database (after commits).
CHECKPOINT_INTERVAL_S = 0.5
# Tables every mwai schema version has: how a numbered schema is known to be mwai's.
MWAI_TABLES = frozenset({"runs", "events"})


class Store(StoreReads):
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
        self._check_path()
        if Path(self.path).is_file():
            # Before the writer switches the file to WAL or migrates it: another
            # program's database must be refused with not one byte changed.
            await asyncio.to_thread(self.identify)
        if not self.readonly:
            conn = await asyncio.to_thread(self._open_writer)
            self._writer = BatchWriter(conn, self.path, self.busy_timeout_ms, writes.flush_events)
            self._writer.start()
            writer = self._writer
            self._checkpointer = Checkpointer(self._uri(), Q["wal_checkpoint"],
                                              CHECKPOINT_INTERVAL_S,
                                              lambda: writer.batches_committed)
            self._checkpointer.start()
        try:
            self._reader = await self._connect_reader()
            await self._reader.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await self._reader.execute("PRAGMA query_only = 1")
            version = await self._read_version()
        except sqlite3.Error as exc:
            await self.close()
            raise self._not_a_file() or translate_error(exc, self.path) from None
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

    def identify(self) -> None:
        """Refuse a file that is not a mwai database, through a read-only connection
        (mode=ro: nothing is written, no -wal or -shm created for a rollback-journal
        file). An empty file or database is fine: the writer creates the schema."""
        try:
            conn = sqlite3.connect(f"file:{Path(self.path).absolute()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            version = int(conn.execute(Q["ops_schema_version"]).fetchone()[0])
            tables = {row[0] for row in conn.execute(Q["table_names"])}
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from None
        finally:
            conn.close()
        if version > SCHEMA_VERSION:
            raise NotMwaiDatabase(
                f"{self.path} has schema version {version}, newer than this mwai "
                f"({SCHEMA_VERSION}): upgrade mwai"
            )
        # Version 0 with tables, or a version without mwai's tables: another program's.
        if (version == 0 and tables) or (version > 0 and not MWAI_TABLES <= tables):
            raise not_mwai(self.path)

    def _check_path(self) -> None:
        """Bad paths said plainly before any driver sees them (exit 2: bad input)."""
        try:
            self._check_path_parts()
        except PermissionError:
            raise StoreError(f"database {self.path}: its directory is not readable by this "
                             "user: run the command as the service's user (sudo -u mwai ...)"
                             ) from None

    def _check_path_parts(self) -> None:
        path = Path(self.path)
        if path.is_dir():
            raise StoreError(f"database {self.path} is a directory: --db / MWAI_DB must name "
                             "the database file (e.g. /var/lib/mwai/mwai.sqlite3)")
        if not self.create and not path.exists():
            raise StoreError(
                f"database {self.path} does not exist: start `mwai serve` once to create it, "
                "or point --db / MWAI_DB at the right file"
            )
        if self.create and not path.parent.is_dir():
            raise StoreError(f"database {self.path}: directory {path.parent} does not exist: "
                             "create it, or point --db / MWAI_DB at the right file")
        if path.exists() and not os.access(path, os.R_OK):
            raise StoreError(f"database {self.path} is not readable by this user: run the "
                             "command as the service's user (sudo -u mwai ...) or fix its mode")

    def _not_a_file(self) -> StoreError | None:
        """When SQLite could not open an existing path that is no regular file (a
        socket, a pipe, a device): bad input, said plainly."""
        path = Path(self.path)
        if path.exists() and not path.is_file():
            return StoreError(f"database {self.path} is not a regular file (a socket, pipe or "
                              "device): --db / MWAI_DB must name the database file")
        return None

    async def _connect_reader(self) -> aiosqlite.Connection:
        """The read connection. The file is opened here, in a thread we wait for, and
        only an open connection is handed to aiosqlite: when aiosqlite's own connect
        fails, its worker thread later resolves a future of an event loop already
        closed, and prints an "Event loop is closed" traceback (now and then, as the
        thread and the loop's end race)."""
        conn = await asyncio.to_thread(sqlite3.connect, self._uri(), uri=True,
                                       check_same_thread=False)
        return await aiosqlite.Connection(lambda: conn, 64)

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
                raise not_mwai(self.path)
        return version

    def _open_writer(self) -> WriterConnection:
        try:
            conn = sqlite3.connect(
                self._uri(), uri=True, isolation_level=None, check_same_thread=False,
                factory=WriterConnection,
            )
        except sqlite3.Error as exc:
            raise self._not_a_file() or translate_error(exc, self.path) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"database {self.path}: cannot switch to WAL mode")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(Q["wal_backstop"])
            migrate(conn, self.path)
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

    async def on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection that serves writes, in the writer thread,
        between two batches. For tests and diagnostics: a PRAGMA of that connection
        (synchronous) can only be read, or a fault (max_page_count, query_only)
        injected, through the connection itself."""
        return await self._write(fn, alone=True)

    async def _write(self, fn: Callable[..., T], *args: Any, alone: bool = False) -> T:
        if self._writer is None:
            raise StoreError("the store is not open for writing")
        result: T = await self._writer.submit(fn, args, alone=alone)
        return result

    async def health_snapshot(self, stuck_after_s: float, list_stuck: int = 0
                              ) -> HealthSnapshot:
        """What the health assessment (mwai.queue.health) judges, read now; with
        ``list_stuck``, up to that many stuck runs too (read only when some are)."""
        taken_at = clock.now_s()
        counts = await self.health_counts(stuck_after_s)
        stuck = (await self.stuck_runs(stuck_after_s, list_stuck)
                 if counts.stuck and list_stuck > 0 else [])
        paused = await self.paused()
        return HealthSnapshot(taken_at=taken_at, queued=counts.queued, running=counts.running,
                              stuck_count=counts.stuck, stuck_runs=tuple(stuck),
                              oldest_queued_at=counts.oldest_queued_at,
                              write_failure=self.write_failure,
                              paused_by=None if paused is None else str(paused.get("by")))

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
            writes.op_enqueue,
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
        return await self._write(writes.op_claim, worker, lease_s)

    async def add_event(
        self, run_id: int, message: str, level: str = "info", **meta: Any
    ) -> None:
        await self._write(writes.op_events,
                          [Event(run_id, message, level, meta, clock.now_s())])

    async def add_events(self, events: Sequence[Event]) -> None:
        now = clock.now_s()
        stamped = [e if e.ts else Event(e.run_id, e.message, e.level, e.meta, now) for e in events]
        await self._write(writes.op_events, stamped)

    async def renew_leases(self, runs: Sequence[tuple[int, str]], lease_s: float) -> int:
        """Extend the lease of (run_id, worker) pairs and record the process as alive."""
        return await self._write(writes.op_renew, list(runs), lease_s, self.process_id)

    async def register_process(self) -> None:
        await self._write(writes.op_register_process, self.process_id)

    async def unregister_process(self) -> None:
        await self._write(writes.op_stop_process, self.process_id)

    async def set_run_result(self, run_id: int, **fields: Any) -> None:
        """Record what the run produced (action, branch, pr_url)."""
        await self._write(writes.op_set_result, run_id, fields)

    async def add_run_usage(self, run_id: int, cost_usd: float | None,
                            input_tokens: int | None, output_tokens: int | None) -> None:
        """Add what an attempt spent to the run's cost and tokens (None adds nothing)."""
        await self._write(writes.op_add_usage, run_id, cost_usd, input_tokens, output_tokens)

    async def complete(self, run_id: int, worker: str, message: str = "Run completed",
                       **meta: Any) -> bool:
        return await self._write(writes.op_finish, run_id, worker, "completed", None, message,
                                 meta)

    async def complete_and_claim(
        self, run_id: int, worker: str, events: Sequence[Event], lease_s: float | None
    ) -> tuple[bool, ClaimedRun | None]:
        """Complete a run (with its pending journal events) and, when ``lease_s`` is
        given, claim the worker's next run in the same transaction: one commit per
        run instead of two."""
        return await self._write(writes.op_complete_and_claim, run_id, worker, list(events),
                                 lease_s)

    async def fail(self, run_id: int, worker: str, error: str, **meta: Any) -> bool:
        return await self._write(writes.op_finish, run_id, worker, "failed", error,
                                 "Run failed", meta)

    async def finish_cancelled(self, run_id: int, worker: str, reason: str) -> bool:
        return await self._write(writes.op_finish_cancelled, run_id, worker, reason)

    async def retry_later(
        self, run_id: int, issue_key: str, error: str, delay_s: float, attempts: int
    ) -> str:
        """Put a running run back in the queue after ``delay_s``; returns its outcome."""
        return await self._write(
            writes.op_release, run_id, issue_key, attempts, clock.now_s() + delay_s, error, 0,
            "Retry scheduled", {"error": error, "delay_s": round(delay_s, 3)},
        )

    async def release(self, run_id: int, issue_key: str, attempts: int, reason: str) -> str:
        """Give a running run back to the queue without spending its attempt."""
        return await self._write(
            writes.op_release, run_id, issue_key, attempts, clock.now_s(), None, -1,
            "Run released", {"reason": reason},
        )

    async def recover_expired(self, max_attempts: int) -> list[LostRun]:
        """Re-queue (or fail) running runs whose lease expired in other processes."""
        return await self._write(writes.op_recover_expired, self.process_id, max_attempts)

    async def recover_dead_processes(self, max_attempts: int) -> list[LostRun]:
        """Runs of processes on this host whose pid is gone, whatever their lease or last
        heartbeat (each recovery round, at startup first)."""
        return await self._write(writes.op_recover_dead, self.process_id, max_attempts)

    async def cancel(self, run_id: int, *, by: str, reason: str = "") -> str:
        """Cancel a queued run now, or ask the owner of a running run to stop it; ``by``
        (the operator) goes into the event ("Run cancelled by alice").

        Returns the status reached: 'cancelled' or 'cancelling'.
        """
        return await self._write(writes.op_cancel, run_id, by, reason)

    async def requeue(self, run_id: int, *, by: str, reason: str = "") -> None:
        """Queue a finished run again ("Run requeued by alice")."""
        await self._write(writes.op_requeue, run_id, by, reason)

    async def cancel_many(self, run_ids: Sequence[int], *, by: str, reason: str = ""
                          ) -> list[tuple[int, str | None]]:
        """``cancel`` each run, in one transaction: (run id, why it was refused or None)."""
        return await self._write(writes.op_each, writes.op_cancel, list(run_ids), by, reason)

    async def requeue_many(self, run_ids: Sequence[int], *, by: str, reason: str = ""
                           ) -> list[tuple[int, str | None]]:
        """``requeue`` each run, in one transaction: (run id, why it was refused or None)."""
        return await self._write(writes.op_each, writes.op_requeue, list(run_ids), by, reason)

    async def pause(self, *, by: str, reason: str = "") -> None:
        """Stop every claim of every `mwai serve` on this database (webhooks are still
        queued); running runs go on. The state lives in the database (kv)."""
        value = writes.dumps({"by": by, "reason": reason or None, "at": clock.now_s()})
        await self._write(writes.op_kv_set, PAUSED_KEY, value)

    async def resume(self, *, by: str) -> bool:
        """Let claims start again; False when claims were not paused. ``by`` is taken
        like every action's (a resume touches no run, so no run event records it: the
        caller reports it, as `mwai resume` does)."""
        return await self._write(writes.op_kv_delete, PAUSED_KEY)

    async def paused(self) -> dict[str, Any] | None:
        """Who paused claims, when and why (None: not paused)."""
        found = await self.kv_get(PAUSED_KEY)
        if found is None:
            return None
        document = writes.json_object(found[0])
        document.setdefault("at", found[1])
        return document

    async def kv_set(self, key: str, value: str) -> None:
        await self._write(writes.op_kv_set, key, value)

    # --------------------------------------------- operator actions (mwai.cli.actions)
    # Writes of `mwai prune` / `mwai unlock` that must be atomic across several
    # statements, and VACUUM (which cannot run inside a transaction).

    async def prune_runs(self, run_ids: Sequence[int], before: float) -> tuple[int, int]:
        """Delete these runs and their events, if still finished and older than ``before``.

        One short transaction; returns (runs deleted, events deleted).
        """
        return await self._write(writes.op_prune_runs, list(run_ids), before)

    async def release_stale_locks(
        self, locks: Sequence[tuple[int, str]], fresh_after: float, max_attempts: int,
        *, by: str,
    ) -> list[LostRun]:
        """Release the (run_id, locked_by) locks whose owner process looks dead.

        Re-checked inside the transaction: a lock that changed meanwhile, or whose
        process heartbeat is newer than ``fresh_after``, is left alone. A running run
        goes back to the queue (or fails when its attempts are spent), like lease
        recovery does.
        """
        return await self._write(writes.op_release_locks, list(locks), fresh_after, max_attempts,
                                 by)

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

