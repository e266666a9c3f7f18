"""The write path: every write of the queue, run in the writer thread.

Each ``op_*`` function takes the write connection first and runs inside the
batch transaction of the group-commit writer (mwai/queue/writer.py): the Store
hands it over with ``Store._write`` and awaits its result. Events written during
a batch are collected on the connection and inserted in one statement just
before the commit (``flush_events``).
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from mwai.errors import InvalidRunState, RunNotFound
from mwai.model import ClaimedRun, EnqueueResult, Event, LostRun, ProcessRow
from mwai.queue import clock
from mwai.queue.health import process_liveness
from mwai.queue.schema import Q
from mwai.queue.writer import WriterConnection

# A run whose workers were lost this many times (mwai killed while running it) fails
# for good: it may be what brings the service down.
MAX_LOST_ATTEMPTS = 10

def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def json_object(text: str) -> dict[str, Any]:
    """A JSON object written by ``dumps`` (anything else: empty)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def prefix_range(prefix: str) -> dict[str, str]:
    """Bounds that select every locked_by starting with ``prefix`` using an index."""
    return {"prefix_low": prefix, "prefix_high": prefix + "\U0010ffff"}


def _insert_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    pending = getattr(conn, "pending_events", None)
    if pending is not None:
        pending.extend(events)
        return
    _execute_insert_events(conn, events)


def flush_events(conn: WriterConnection) -> None:
    if conn.pending_events:
        _execute_insert_events(conn, conn.pending_events)
        conn.pending_events = []


def _execute_insert_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    now = clock.now_s()
    rows = [(e.run_id, e.ts or now, e.level, e.message, dumps(e.meta)) for e in events]
    conn.execute(Q["insert_events"], {"rows": orjson.dumps(rows).decode()})


def op_enqueue(
    conn: sqlite3.Connection,
    issue_key: str,
    payload_json: str,
    delivery_id: str | None,
    request_id: str | None,
    priority: int,
    source: str,
    event_type: str,
) -> EnqueueResult:
    now = clock.now_s()
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


def op_claim(conn: sqlite3.Connection, worker: str, lease_s: float) -> ClaimedRun | None:
    now = clock.now_s()
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


def op_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    _insert_events(conn, events)


def op_renew(
    conn: sqlite3.Connection, runs: Sequence[tuple[int, str]], lease_s: float, process_id: str
) -> int:
    now = clock.now_s()
    changed = 0
    for run_id, worker in runs:
        cursor = conn.execute(
            Q["renew_lease"],
            {"run_id": run_id, "worker": worker, "now": now, "lease_expires_at": now + lease_s},
        )
        changed += cursor.rowcount
    op_register_process(conn, process_id)
    return changed


def op_register_process(conn: sqlite3.Connection, process_id: str) -> None:
    conn.execute(
        Q["upsert_process"],
        {"process_id": process_id, "pid": os.getpid(), "hostname": socket.gethostname(),
         "now": clock.now_s()},
    )


def op_stop_process(conn: sqlite3.Connection, process_id: str) -> None:
    now = clock.now_s()
    conn.execute(Q["stop_process"], {"process_id": process_id, "now": now})
    conn.execute(Q["forget_old_processes"], {"before": now - 7 * 86400})


def op_set_result(conn: sqlite3.Connection, run_id: int, fields: dict[str, Any]) -> None:
    allowed = ("action", "branch", "pr_url")  # cost and tokens: op_add_usage
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValueError(f"unknown run result fields: {sorted(unknown)}")
    params = {name: fields.get(name) for name in allowed}
    conn.execute(Q["update_run_result"], {**params, "run_id": run_id, "now": clock.now_s()})


def op_add_usage(conn: sqlite3.Connection, run_id: int, cost_usd: float | None,
                 input_tokens: int | None, output_tokens: int | None) -> None:
    conn.execute(Q["add_run_usage"], {"run_id": run_id, "cost_usd": cost_usd,
                                      "input_tokens": input_tokens,
                                      "output_tokens": output_tokens, "now": clock.now_s()})


def op_finish(
    conn: sqlite3.Connection,
    run_id: int,
    worker: str,
    status: str,
    error: str | None,
    message: str,
    meta: dict[str, Any],
) -> bool:
    now = clock.now_s()
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


def op_finish_cancelled(conn: sqlite3.Connection, run_id: int, worker: str,
                        reason: str) -> bool:
    """The worker stopped a run whose cancel was asked for: the event names who asked."""
    row = conn.execute(Q["cancel_requester"], {"run_id": run_id}).fetchone()
    by = row[0] if row is not None and row[0] else None
    if by is None:
        return op_finish(conn, run_id, worker, "cancelled", reason, "Run cancelled",
                         {"reason": reason})
    return op_finish(conn, run_id, worker, "cancelled", f"{reason} (asked by {by})",
                     f"Run cancelled by {by}", {"reason": reason, "by": by})


def op_complete_and_claim(
    conn: sqlite3.Connection,
    run_id: int,
    worker: str,
    events: Sequence[Event],
    lease_s: float | None,
) -> tuple[bool, ClaimedRun | None]:
    if events:
        _insert_events(conn, events)
    done = op_finish(conn, run_id, worker, "completed", None, "Run completed", {})
    next_run = op_claim(conn, worker, lease_s) if lease_s is not None else None
    return done, next_run


def op_release(
    conn: sqlite3.Connection,
    run_id: int,
    issue_key: str,
    attempts: int,
    available_at: float,
    error: str | None,
    attempt_delta: int,
    message: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    """Put a running run back in the queue, or fold it into the issue's queued run; then
    journal ``message`` with ``meta`` and the outcome (no message: the caller does)."""
    now = clock.now_s()
    sibling = conn.execute(Q["queued_run_for_issue"], {"issue_key": issue_key}).fetchone()
    if sibling is None:
        outcome = "queued"
        conn.execute(
            Q["requeue_running"],
            {"run_id": run_id, "available_at": available_at, "last_error": error,
             "attempt_delta": attempt_delta, "now": now},
        )
    else:
        outcome = "superseded"
        sibling_id = int(sibling[0])
        reason = f"superseded by queued run {sibling_id} of the same issue"
        if error:
            reason += f" (last error: {error})"
        conn.execute(Q["close_run"],
                     {"run_id": run_id, "status": "cancelled", "last_error": reason, "now": now})
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
    if message is not None:
        level = "warning" if error else "info"
        _insert_events(conn, [Event(run_id, message, level, {**(meta or {}), "outcome": outcome})])
    return outcome


def _recover(
    conn: sqlite3.Connection, rows: Sequence[Any], max_attempts: int, why: str,
    by: str | None = None,
) -> list[LostRun]:
    """Runs of a lost worker back to the queue (or failed/cancelled); ``by``: the
    operator who released them (mwai unlock), None for the service's own recovery."""
    now = clock.now_s()
    lost: list[LostRun] = []
    message = "Lease expired; worker lost" if by is None else f"Stale lock released by {by}"
    for run_id, issue_key, attempts, locked_by, cancel_requested, lost_attempts in rows:
        # The lost worker's attempt was spent by the crash, not by the run: it does not
        # count against MWAI_MAX_ATTEMPTS, only against MAX_LOST_ATTEMPTS (a run that
        # takes mwai down with it every time must stop some day).
        lost_attempts += 1
        own = attempts - lost_attempts
        conn.execute(Q["count_lost_attempt"], {"run_id": run_id})
        meta: dict[str, Any] = {"lost_worker": locked_by, "attempts": own,
                                "lost_attempts": lost_attempts, "reason": why}
        if by is not None:
            meta["by"] = by
        if cancel_requested:
            outcome, status = "cancelled", "cancelled"
            error = f"cancelled; its worker {locked_by} was lost ({why})"
        elif lost_attempts >= MAX_LOST_ATTEMPTS:
            outcome, status = "failed", "failed"
            error = (f"worker {locked_by} was lost ({why}); the run's workers were lost "
                     f"{lost_attempts} times (service crashes), the most mwai allows")
        else:
            outcome, status, error = "", "", None
        if status:
            conn.execute(Q["close_run"],
                         {"run_id": run_id, "status": status, "last_error": error, "now": now})
        else:
            outcome = op_release(conn, run_id, issue_key, own, now,
                                 f"worker {locked_by} was lost ({why})", 0)
        _insert_events(conn, [Event(run_id, message, "warning", {**meta, "outcome": outcome},
                                    now)])
        lost.append(LostRun(run_id, issue_key, outcome, locked_by, error))
    return lost


def op_recover_expired(
    conn: sqlite3.Connection, process_id: str, max_attempts: int
) -> list[LostRun]:
    rows = conn.execute(Q["expired_runs"],
                        {"now": clock.now_s(), "process_id": process_id}).fetchall()
    return _recover(conn, rows, max_attempts, "lease expired")


def op_recover_dead(
    conn: sqlite3.Connection, process_id: str, max_attempts: int
) -> list[LostRun]:
    host = socket.gethostname()
    lost: list[LostRun] = []
    for other_id, pid, hostname, started, beat in conn.execute(Q["live_processes"]).fetchall():
        if other_id == process_id or hostname != host:
            continue
        process = ProcessRow(other_id, int(pid), hostname, started, beat, None)
        # No heartbeat counts as fresh here: on this host only the pid decides.
        if process_liveness(process, math.inf, clock.now_s(), host)[0]:
            continue
        rows = conn.execute(Q["runs_of_process"], prefix_range(other_id + "/")).fetchall()
        lost += _recover(conn, rows, max_attempts, f"process {pid} is gone")
        conn.execute(Q["stop_process"], {"process_id": other_id, "now": clock.now_s()})
    return lost


def op_cancel(conn: sqlite3.Connection, run_id: int, by: str, reason: str = "") -> str:
    row = conn.execute(Q["run_status"], {"run_id": run_id}).fetchone()
    if row is None:
        raise RunNotFound(f"no run with id {run_id}: list runs with `mwai runs`")
    status = row[0]
    now = clock.now_s()
    meta = {"by": by, "reason": reason or None}
    if status == "queued":
        conn.execute(Q["cancel_queued"], {"run_id": run_id, "last_error": f"cancelled by {by}"
                                          + (f": {reason}" if reason else ""), "now": now})
        _insert_events(conn, [Event(run_id, f"Run cancelled by {by}", "warning", meta, now)])
        return "cancelled"
    if status == "running":
        conn.execute(Q["request_cancel"], {"run_id": run_id, "now": now})
        _insert_events(conn, [Event(run_id, f"Cancel requested by {by}", "warning", meta, now)])
        return "cancelling"
    raise InvalidRunState(
        f"run {run_id} is already {status}; only queued or running runs can be cancelled"
    )


def op_requeue(conn: sqlite3.Connection, run_id: int, by: str, reason: str = "") -> None:
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
    now = clock.now_s()
    conn.execute(Q["requeue_finished"], {"run_id": run_id, "now": now})
    _insert_events(conn, [Event(run_id, f"Run requeued by {by}", "info",
                                {"by": by, "reason": reason or None,
                                 "previous_status": status}, now)])


def op_each(conn: sqlite3.Connection, op: Any, run_ids: Sequence[int], by: str,
            reason: str) -> list[tuple[int, str | None]]:
    """``op`` (op_cancel, op_requeue) on each run in one transaction: (run id, what
    it refused, or None). A refusal is raised before its run is changed, so the
    others go on."""
    outcomes: list[tuple[int, str | None]] = []
    for run_id in run_ids:
        try:
            op(conn, run_id, by, reason)
        except (InvalidRunState, RunNotFound) as exc:
            outcomes.append((run_id, str(exc)))
        else:
            outcomes.append((run_id, None))
    return outcomes


def op_kv_delete(conn: sqlite3.Connection, key: str) -> bool:
    return conn.execute(Q["kv_delete"], {"key": key}).rowcount > 0


def op_kv_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(Q["kv_set"], {"key": key, "value": value, "now": clock.now_s()})


# --------------------------------------------------------------------------
# Operator actions (mwai prune, mwai unlock): several statements that must be atomic.


def op_prune_runs(
    conn: sqlite3.Connection, run_ids: Sequence[int], before: float
) -> tuple[int, int]:
    params = [{"run_id": run_id, "before": before} for run_id in run_ids]
    events = conn.executemany(Q["ops_prune_events"], params).rowcount
    conn.executemany(Q["ops_prune_deliveries"], params)
    runs = conn.executemany(Q["ops_prune_run"], params).rowcount
    return int(runs), int(events)


def op_release_locks(
    conn: sqlite3.Connection, locks: Sequence[tuple[int, str]], fresh_after: float,
    max_attempts: int, by: str,
) -> list[LostRun]:
    released: list[LostRun] = []
    now = clock.now_s()
    for run_id, locked_by in locks:
        row = conn.execute(Q["ops_lock_of_run"],
                           {"run_id": run_id, "locked_by": locked_by}).fetchone()
        if row is None:
            continue  # finished or re-claimed meanwhile
        process = conn.execute(Q["ops_process"],
                               {"process_id": locked_by.rpartition("/")[0]}).fetchone()
        if process_liveness(None if process is None else ProcessRow(*process),
                            fresh_after, now)[0]:
            continue  # alive (it heartbeated meanwhile, or its pid runs on this host)
        why = f"released by {by} (mwai unlock): process of {locked_by} is not alive"
        if row[5] == "running":
            released += _recover(conn, [(*row[:5], row[6])], max_attempts, why, by)
        else:
            conn.execute(Q["ops_clear_lock"],
                         {"run_id": run_id, "locked_by": locked_by, "now": now})
            _insert_events(conn, [Event(run_id, f"Stale lock released by {by}", "warning",
                                        {"lost_worker": locked_by, "reason": why, "by": by},
                                        now)])
            released.append(LostRun(run_id, str(row[1]), str(row[5]), locked_by))
    return released
