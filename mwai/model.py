"""The records every layer shares: runs, events, processes and Jira issues.

Plain frozen values with no behaviour beyond reading themselves: the queue
returns them, the runner, the server and the CLI read them. Times are unix epoch
seconds (``*_at``), durations are seconds (``*_s``). The read records mirror the
columns of the named query that fills them (mwai/queue/sql), field for field and
in order, so a ``--json`` document made from one keeps the column names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class RunTimes:
    """The three durations of a run, the one vocabulary of every view, JSON and doc.

    queue wait: created -> started (its first claim); run time: started -> finished;
    total: created -> finished. Until the run reaches a point, "now" stands for it.
    """

    queue_wait_s: float | None  # None: cancelled before it ever started
    run_time_s: float | None  # None: not started yet
    total_s: float


def run_times(created_at: float, started_at: float | None, finished_at: float | None,
              now: float) -> RunTimes:
    """The durations of a run from its timestamps (rounded to the millisecond, never
    negative: another host's clock may be ahead)."""
    end = finished_at if finished_at is not None else now
    if started_at is None:
        wait = None if finished_at is not None else end - created_at
        return RunTimes(_s(wait), None, _s(end - created_at) or 0.0)
    return RunTimes(_s(started_at - created_at), _s(end - started_at),
                    _s(end - created_at) or 0.0)


def _s(seconds: float | None) -> float | None:
    return None if seconds is None else round(max(0.0, seconds), 3)


# ------------------------------------------------------------------ the write path


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
class LostRun:
    run_id: int
    issue_key: str
    outcome: str  # queued | failed | cancelled | superseded
    worker: str | None
    error: str | None = None  # why it failed or was cancelled


# ------------------------------------------------------------------ reads


@dataclass(frozen=True, slots=True)
class HealthCounts:
    queued: int
    running: int
    stuck: int
    oldest_queued_at: float | None


@dataclass(frozen=True, slots=True)
class RunBrief:
    """What a listing of runs starts with: the run, its issue, status, attempts and age."""

    id: int
    issue_key: str
    status: str
    attempts: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RunRow(RunBrief):
    """A run in a listing (mwai runs, mwai monitor's recent runs)."""

    started_at: float | None
    finished_at: float | None
    locked_by: str | None
    action: str | None
    pr_url: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class RunningRun:
    """A running run with its owner (mwai monitor, stuck runs)."""

    id: int
    issue_key: str
    attempts: int
    locked_by: str | None
    locked_at: float | None
    started_at: float | None
    created_at: float
    updated_at: float
    cancel_requested: int


@dataclass(frozen=True, slots=True)
class ActiveRun(RunningRun):
    """A running run with its stage: the message of its latest event (the dashboard)."""

    stage: str | None


@dataclass(frozen=True, slots=True)
class DayCount:
    """Runs created on one UTC day (``day``: days since the epoch) with one status."""

    day: int
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class DayCost:
    """What the runs created on one UTC day cost (only runs that reported a cost)."""

    day: int
    cost_usd: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ChangeMark:
    """The newest event id and the latest run update: moves whenever anything changes."""

    last_event_id: int | None
    last_update_at: float | None


@dataclass(frozen=True, slots=True)
class FailedRun:
    id: int
    issue_key: str
    attempts: int
    last_error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class LockedRun:
    """A run whose lock (locked_by) is set, whatever its status (mwai unlock)."""

    id: int
    issue_key: str
    status: str
    attempts: int
    locked_by: str
    locked_at: float | None
    lease_expires_at: float | None
    cancel_requested: int


@dataclass(frozen=True, slots=True)
class SlowRun(RunBrief):
    started_at: float | None
    finished_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class StatusStats:
    """Runs of one status created within a window: count and durations (the run_times
    vocabulary: queue wait, run time, total)."""

    status: str
    count: int
    avg_queue_wait_s: float | None
    max_queue_wait_s: float | None
    avg_run_time_s: float | None
    max_run_time_s: float | None
    avg_total_s: float | None
    max_total_s: float | None


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Failed runs with exactly this last error."""

    last_error: str | None
    count: int
    last_at: float | None


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """A `mwai serve` process as it registered itself (its heartbeat says it lives)."""

    process_id: str
    pid: int
    hostname: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    run_id: int
    ts: float
    level: str
    message: str
    meta_json: str


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """An event with its run's issue key (mwai demo's timeline)."""

    id: int
    run_id: int
    issue_key: str
    ts: float
    level: str
    message: str
    meta_json: str


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """What a prune with this cut-off would delete."""

    runs: int
    events: int
    oldest_at: float | None


@dataclass(frozen=True, slots=True)
class PageCounts:
    free_pages: int
    pages: int


# ------------------------------------------------------------------ Jira


@dataclass(frozen=True, slots=True)
class Issue:
    key: str
    summary: str
    description: str  # plain text / markdown
    status: str
    issue_type: str
    is_subtask: bool
    assignee_account_id: str | None
    parent_key: str | None
    project_key: str
    labels: tuple[str, ...]
    subtask_keys: tuple[str, ...]
    updated: str = ""  # ISO 8601 as Jira gives it, when asked for (search)


@dataclass(frozen=True, slots=True)
class Comment:
    id: str
    author_account_id: str | None
    body: str  # plain text / markdown
    created: str  # ISO 8601 as Jira gives it


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One move of an issue to a status, from Jira's history (who did it matters:
    only the reviewer's move to In Progress approves a plan)."""

    history_id: int  # Jira numbers history entries in the order they were made
    author_account_id: str | None
    to_status: str
    # "status", or "assignee" (then to_status is the new assignee's accountId): what
    # changed, so a resumed run can tell whether a person acted since it began.
    field: str = "status"
