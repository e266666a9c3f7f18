"""Group commit: one thread owns the SQLite write connection and commits in batches.

The event loop hands each write (a function of the connection) to the writer
thread and awaits its future. The thread takes everything queued while it was
committing the previous batch, runs it in one transaction (one fsync) and gives
the results back to the loop with one call. The thread starts the next batch
as soon as a commit returns: the loop, busy answering requests, is never a
step between two batches.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mwai.errors import NotMwaiDatabase, StoreError, StoreUnavailable
from mwai.logs import STORE_LOGGER

# The writer is the store's write path: operators read its lines as the store's.
log = logging.getLogger(STORE_LOGGER)

Outcome = tuple[bool, Any]  # (True, value) or (False, exception)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def translate_error(exc: sqlite3.Error, path: str) -> StoreError:
    """A driver error as a mwai error that says what to do about it."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        lowered = text.lower()
        if is_busy(exc):
            hint = "another process holds the write lock; retry shortly"
        elif "full" in lowered:
            hint = "the disk is full; free space (mwai prune --vacuum) and it recovers by itself"
        elif "readonly" in lowered or "read-only" in lowered:
            hint = "the file or its directory is not writable by mwai; fix the permissions"
        elif "unable to open" in lowered:
            hint = "check that the directory exists and is writable"
        else:
            hint = "the database is unavailable"
        return StoreUnavailable(f"database {path}: {text} ({hint})")
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        return NotMwaiDatabase(f"{path} is not a mwai database (it is not SQLite at all)")
    return StoreUnavailable(f"database {path}: {text}")


class WriterConnection(sqlite3.Connection):
    """The writer's connection. During a batch, events are collected here and
    inserted with one executemany just before the commit (``before_commit``)."""

    pending_events: list[Any] | None = None


@dataclass(slots=True)
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    alone: bool  # runs outside any transaction (VACUUM)


class _WriteFailed(Exception):
    """A write of the batch failed on its own: replay the batch write by write."""


class BatchWriter:
    """The writer thread: ``submit`` from the loop, ``stop`` to drain and close."""

    def __init__(self, conn: WriterConnection, path: str, busy_timeout_ms: int,
                 before_commit: Callable[[WriterConnection], None]) -> None:
        self._conn = conn
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._before_commit = before_commit
        self._queue: deque[_Write] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.batches_committed = 0
        self.writes_committed = 0
        # The error of the last failed batch; None again once a batch changing rows commits.
        self.write_failure: str | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, name="mwai-db-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...],
               alone: bool = False) -> asyncio.Future[Any]:
        if self._loop is None or self._closing:
            raise StoreError("the store is not open for writing")
        future = self._loop.create_future()
        self._queue.append(_Write(fn, args, future, alone))
        self._wake.set()
        return future

    async def stop(self) -> None:
        """Commit what is queued, then close the connection (the thread does both)."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        # The last batch's results were handed to the loop just before the thread
        # ended: let those callbacks run before the caller goes on.
        await asyncio.sleep(0)

    # ------------------------------------------------------------ the thread

    def _serve(self) -> None:
        try:
            while True:
                self._wake.wait()
                # Cleared before draining: a write queued after the drain sets it again.
                self._wake.clear()
                # Read before draining: once closing is seen, every write asked for
                # before it is already queued and this drain commits it.
                closing = self._closing
                while self._queue:
                    batch = [self._queue.popleft() for _ in range(len(self._queue))]
                    for group in _split_alone(batch):
                        self._hand_back(group, self._apply(group))
                if closing:
                    return
        finally:
            self._close()

    def _hand_back(self, group: list[_Write], outcomes: list[Outcome]) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_deliver, group, outcomes)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for these results any more

    def _close(self) -> None:
        try:
            # Statistics for the query planner, as SQLite advises at close; the limit
            # keeps it to a sample, so stopping stays quick on a database of millions
            # of rows.
            self._conn.execute("PRAGMA analysis_limit = 1000")
            self._conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self._conn.close()

    def _apply(self, group: list[_Write]) -> list[Outcome]:
        try:
            if group[0].alone:
                return [(True, group[0].fn(self._conn, *group[0].args))]
            return self._apply_batch(group)
        except StoreError as exc:
            self.write_failure = str(exc)
            return [(False, exc)] * len(group)
        except Exception as exc:  # a defect: fail these writes, keep the writer alive
            return [(False, exc)] * len(group)

    def _apply_batch(self, batch: Sequence[_Write]) -> list[Outcome]:
        """One transaction for the whole batch (one fsync).

        Fast path: the writes run back to back. If one of them fails on its own (a
        constraint, an invalid state), the transaction is rolled back and the batch
        is replayed with a SAVEPOINT around each write, so only that write fails.
        """
        conn = self._conn
        changes_before = conn.total_changes
        try:
            outcomes = self._run_batch(batch, isolate=False)
        except _WriteFailed:
            outcomes = self._run_batch(batch, isolate=True)
        self.batches_committed += 1
        if conn.total_changes != changes_before:
            # A batch that changed nothing (an empty claim) writes no page: no proof.
            self.write_failure = None
        self.writes_committed += len(batch)
        return outcomes

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, retrying every millisecond or so while another process
        (mwai prune, mwai requeue...) holds the write lock, for up to the busy
        timeout: the lock is taken within a millisecond of being released."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay_s = 0.0005
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise translate_error(exc, self._path) from None
            time.sleep(delay_s)
            delay_s = min(delay_s * 1.5, 0.004)

    def _run_batch(self, batch: Sequence[_Write], isolate: bool) -> list[Outcome]:
        conn = self._conn
        outcomes: list[Outcome] = []
        self._begin()
        conn.pending_events = []
        try:
            for write in batch:
                if isolate:
                    conn.execute("SAVEPOINT w")
                    events_before = len(conn.pending_events)
                try:
                    value = write.fn(conn, *write.args)
                except Exception as exc:
                    if isinstance(exc, sqlite3.Error) and \
                            not isinstance(exc, sqlite3.IntegrityError):
                        raise  # the database itself failed: the whole batch fails
                    if not isolate:
                        raise _WriteFailed from exc
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    del conn.pending_events[events_before:]
                    failure = StoreError(str(exc)) if isinstance(exc, sqlite3.Error) else exc
                    outcomes.append((False, failure))
                    continue
                if isolate:
                    conn.execute("RELEASE w")
                outcomes.append((True, value))
            self._before_commit(conn)
            conn.execute("COMMIT")
        except _WriteFailed:
            conn.execute("ROLLBACK")
            raise
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise translate_error(exc, self._path) from None
        finally:
            conn.pending_events = None
        return outcomes


def _split_alone(batch: list[_Write]) -> list[list[_Write]]:
    """Consecutive transactional writes share a batch; a write run alone stays alone."""
    groups: list[list[_Write]] = []
    for write in batch:
        if write.alone or not groups or groups[-1][0].alone:
            groups.append([write])
        else:
            groups[-1].append(write)
    return groups


def _deliver(group: list[_Write], outcomes: list[Outcome]) -> None:
    """On the loop: resolve the futures of a committed (or failed) batch."""
    for write, (ok, value) in zip(group, outcomes, strict=True):
        if write.future.done():
            continue  # its awaiter was cancelled
        if ok:
            write.future.set_result(value)
        else:
            write.future.set_exception(value)


class Checkpointer:
    """Copies the WAL back into the database file from its own thread and connection.

    By default the commit that takes the WAL past 1,000 pages also copies it into
    the database and fsyncs the file, and the webhooks of that batch wait tens of
    milliseconds for it. The writer connection leaves that to this thread (its own
    auto-checkpoint stays only as a far backstop): every ``interval_s`` after a
    commit, a PASSIVE checkpoint, which never takes the write lock, so commits go
    on while it copies.
    """

    def __init__(self, uri: str, checkpoint_sql: str, interval_s: float,
                 commits: Callable[[], int]) -> None:
        self._uri = uri
        self._sql = checkpoint_sql
        self._interval_s = interval_s
        self._commits = commits
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="mwai-db-checkpoint",
                                        daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _serve(self) -> None:
        conn = sqlite3.connect(self._uri, uri=True, isolation_level=None)
        try:
            seen = self._commits()
            while not self._stop.wait(self._interval_s):
                commits = self._commits()
                if commits != seen:
                    seen = commits
                    self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(self._sql).fetchall()
        except sqlite3.Error as exc:
            # The writer's own auto-checkpoint still bounds the WAL meanwhile.
            if str(exc) != self.last_error:
                log.warning("WAL checkpoint failed; retrying", extra={"error": str(exc)})
            self.last_error = str(exc)
            return
        self.checkpoints += 1
        self.last_error = None
