"""The reads of the store: one typed method per named query.

Reads go through their own aiosqlite connection and never wait for the writer
(WAL). Each method returns the records of mwai.model, so no code outside the
queue names a query or reads a column by its string. The operator reads
(``mwai runs | stats | monitor | alert | unlock | prune``) are each answered from
an index (tests/integration/test_ops_query_plans.py): they stay fast on a
million runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

import aiosqlite
import orjson

from mwai.errors import RunNotFound, StoreError
from mwai.model import (
    ActiveRun,
    ChangeMark,
    DayCost,
    DayCount,
    ErrorCount,
    EventRow,
    FailedRun,
    HealthCounts,
    LockedRun,
    PageCounts,
    ProcessRow,
    PruneCounts,
    RunningRun,
    RunRow,
    SlowRun,
    StatusStats,
    TimelineEvent,
)
from mwai.queue import clock
from mwai.queue.schema import Q
from mwai.queue.writer import translate_error
from mwai.queue.writes import prefix_range

R = TypeVar("R")


class StoreReads:
    """The read half of the Store (mwai.queue.store.Store opens the connection)."""

    path: str
    process_id: str
    _reader: aiosqlite.Connection | None

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

    async def _records(self, record: type[R], name: str, **params: Any) -> list[R]:
        """The rows of a query as records whose fields are its columns."""
        return [record(**dict(row)) for row in await self._fetchall(name, **params)]

    # ------------------------------------------------------------ the service

    async def cancel_requests(self) -> list[int]:
        """Running runs of this process whose cancel an operator asked for."""
        rows = await self._fetchall("cancel_requests", **prefix_range(self.process_id))
        return [int(row["id"]) for row in rows]

    async def health_counts(self, stuck_after_s: float) -> HealthCounts:
        row = await self._fetchone("health_counts", stuck_before=clock.now_s() - stuck_after_s)
        assert row is not None
        return HealthCounts(
            queued=int(row["queued"]),
            running=int(row["running"]),
            stuck=int(row["stuck"]),
            oldest_queued_at=row["oldest_queued_at"],
        )

    async def kv_get(self, key: str) -> tuple[str, float] | None:
        row = await self._fetchone("kv_get", key=key)
        return (str(row["value"]), float(row["updated_at"])) if row else None

    # ------------------------------------------------------------ one run

    async def get_run(self, run_id: int) -> dict[str, Any]:
        """Every column of the run, by name (mwai show, --json documents)."""
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

    async def events_since(self, after_id: int, limit: int) -> list[TimelineEvent]:
        """Every event after ``after_id``, in order, with its run's issue key."""
        return await self._records(TimelineEvent, "events_since", after_id=after_id,
                                   limit=limit)

    # ------------------------------------------------------------ listings

    async def recent_runs(self, since: float, limit: int) -> list[RunRow]:
        """Runs changed since ``since`` (epoch s), latest activity first."""
        return await self._records(RunRow, "ops_runs_recent", since=since, limit=limit)

    async def runs_by_status(self, status: str, since: float, limit: int) -> list[RunRow]:
        return await self._records(RunRow, "ops_runs_by_status", status=status, since=since,
                                   limit=limit)

    async def runs_of_issue(self, issue_key: str, status: str | None, since: float,
                            limit: int) -> list[RunRow]:
        """The issue's runs (of that status, when given), newest first."""
        return await self._records(RunRow, "ops_runs_by_issue", issue_key=issue_key,
                                   status=status, since=since, limit=limit)

    async def running_runs(self, limit: int) -> list[RunningRun]:
        """Running runs, the longest without an update first."""
        return await self._records(RunningRun, "ops_running_runs", limit=limit)

    async def stuck_runs(self, stuck_after_s: float, limit: int) -> list[RunningRun]:
        """Running runs without an update for ``stuck_after_s``, the oldest first."""
        return await self._records(RunningRun, "ops_stuck_runs",
                                   stuck_before=clock.now_s() - stuck_after_s, limit=limit)

    async def failed_runs_since(self, since: float, limit: int) -> list[FailedRun]:
        return await self._records(FailedRun, "ops_failed_since", since=since, limit=limit)

    async def count_runs_since(self, status: str, since: float) -> int:
        """Runs of ``status`` updated since ``since``."""
        row = await self._fetchone("ops_count_status_since", status=status, since=since)
        return int(row["count"]) if row else 0

    async def locked_runs(self, limit: int) -> list[LockedRun]:
        """Runs holding a lock, whatever their status (the guide's stale-lock query)."""
        return await self._records(LockedRun, "ops_locked_runs", limit=limit)

    # ------------------------------------------------------------ the dashboard

    async def runs_page(self, *, status: str | None, since: float, before_updated: float,
                        before_id: int, prefixes: tuple[str, str] | None,
                        limit: int) -> list[RunRow]:
        """One page of runs, latest activity first, after the cursor (before_updated,
        before_id); ``prefixes`` (low, high) keeps the issue keys in that range."""
        low, high = prefixes if prefixes is not None else (None, None)
        params = {"since": since, "before_updated": before_updated, "before_id": before_id,
                  "prefix_low": low, "prefix_high": high, "limit": limit}
        if status is None:
            return await self._records(RunRow, "ui_runs_page", **params)
        return await self._records(RunRow, "ui_runs_page_status", status=status, **params)

    async def issue_runs(self, issue_key: str, before_id: int, limit: int) -> list[RunRow]:
        """The issue's runs with an id below ``before_id``, newest first."""
        return await self._records(RunRow, "ui_issue_runs", issue_key=issue_key,
                                   before_id=before_id, limit=limit)

    async def issue_keys_starting(self, prefix: str, limit: int) -> list[str]:
        rows = await self._fetchall("ui_issue_search", **prefix_range(prefix), limit=limit)
        return [str(row["issue_key"]) for row in rows]

    async def active_runs(self, limit: int) -> list[ActiveRun]:
        """Running runs with their latest event's message, the longest without an update
        first."""
        return await self._records(ActiveRun, "ui_active_runs", limit=limit)

    async def daily_counts(self, since: float, until: float) -> list[DayCount]:
        return await self._records(DayCount, "ui_daily_runs", since=since, until=until)

    async def daily_costs(self, since: float, until: float) -> list[DayCost]:
        return await self._records(DayCost, "ui_daily_cost", since=since, until=until)

    async def change_mark(self) -> ChangeMark:
        row = await self._fetchone("ui_change_mark")
        assert row is not None
        return ChangeMark(last_event_id=row["last_event_id"],
                          last_update_at=row["last_update_at"])

    # ------------------------------------------------------------ statistics

    async def status_stats(self, since: float, now: float) -> list[StatusStats]:
        """Count and durations by status of the runs created since ``since`` (runs not
        finished yet count until ``now``)."""
        return await self._records(StatusStats, "ops_stats_by_status", since=since, now=now)

    async def slowest_runs(self, since: float, limit: int) -> list[SlowRun]:
        return await self._records(SlowRun, "ops_slowest_runs", since=since, limit=limit)

    async def error_counts(self, since: float, limit: int = -1) -> list[ErrorCount]:
        """Failed runs created since ``since`` grouped by their exact last error (every
        group: ``limit`` -1 means no limit)."""
        return await self._records(ErrorCount, "ops_error_counts", since=since, limit=limit)

    # ------------------------------------------------------------ processes

    async def processes(self, since: float) -> list[ProcessRow]:
        """Processes still registered, or stopped since ``since``."""
        return await self._records(ProcessRow, "ops_processes", since=since)

    async def process(self, process_id: str) -> ProcessRow | None:
        found = await self._records(ProcessRow, "ops_process", process_id=process_id)
        return found[0] if found else None

    # ------------------------------------------------------------ prune

    async def prune_counts(self, before: float) -> PruneCounts:
        """What a prune of the runs finished before ``before`` would delete."""
        runs = await self._fetchone("ops_prune_count", before=before)
        events = await self._fetchone("ops_prune_events_count", before=before)
        return PruneCounts(runs=int(runs["runs"]) if runs else 0,
                           events=int(events["events"]) if events else 0,
                           oldest_at=runs["oldest_at"] if runs else None)

    async def prune_candidates(self, before: float, after_id: int, limit: int) -> list[int]:
        """The ids of the next batch to prune, in id order after ``after_id``."""
        rows = await self._fetchall("ops_prune_candidates", before=before, after_id=after_id,
                                    limit=limit)
        return [int(row["id"]) for row in rows]

    async def runs_by_ids(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Every column of these runs, by name (like get_run)."""
        rows = await self._fetchall("ops_runs_by_ids", ids=orjson.dumps(list(run_ids)).decode())
        return [dict(row) for row in rows]

    async def events_of_runs(self, run_ids: Sequence[int]) -> list[EventRow]:
        """The events of these runs, by run then in order."""
        return await self._records(EventRow, "ops_events_by_run_ids",
                                   ids=orjson.dumps(list(run_ids)).decode())

    async def page_counts(self) -> PageCounts:
        row = await self._fetchone("ops_page_counts")
        assert row is not None
        return PageCounts(free_pages=int(row["free_pages"]), pages=int(row["pages"]))
