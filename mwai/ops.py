"""Operator commands: the views and actions of the operations guide.

``mwai runs | show | stats | monitor`` read through a read-only connection and
never block the service; ``requeue | cancel | unlock | prune`` are short write
transactions that are safe while ``mwai serve`` runs; ``mwai check`` validates
the configuration, the database and (``--connect``) the remote services.

Human output uses local time; ``--json`` prints one document with epoch seconds
and ISO-8601 (UTC) times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mwai.cli import (
    EXIT_OK,
    EXIT_PROBLEM,
    UsageError,
    load_settings,
    print_json,
)
from mwai.errors import ConfigError, StoreError, StoreUnavailable
from mwai.settings import SETTINGS_BY_NAME, Settings, read_env_file
from mwai.store import FINISHED, SCHEMA_VERSION, STATUSES, Store, pid_alive

# ------------------------------------------------------------------ durations

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, option: str = "duration") -> float:
    """'30s', '10m', '1h', '7d', '2w' or combinations ('1h30m') -> seconds."""
    value = text.strip().lower()
    if not _DURATION_RE.fullmatch(value):
        raise UsageError(
            f"{option} {text!r} is not a duration: use a number with a unit, "
            "s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. 30s, 10m, 1h, 7d"
        )
    return sum(float(number) * _UNITS_S[unit] for number, unit in _PART_RE.findall(value))


def format_duration(seconds: float | None) -> str:
    """Short human duration: '850ms', '4.2s', '3m 12s', '2h 5m', '3d 4h'."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit_s, unit, sub_s, sub in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"),
                                     (60, "m", 1, "s")):
        if whole >= unit_s:
            rest = (whole % unit_s) // sub_s
            return f"{whole // unit_s}{unit} {rest}{sub}" if rest else f"{whole // unit_s}{unit}"
    return f"{seconds:.0f}s"  # pragma: no cover - unreachable


def local_time(epoch_s: float | None, with_ms: bool = False) -> str:
    if epoch_s is None:
        return "-"
    moment = dt.datetime.fromtimestamp(epoch_s)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if with_ms else text


def iso_utc(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_run_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"RUN_ID {text!r} is not a run id: give the number shown by `mwai runs`")
    return int(text)


def one_line(text: str | None, limit: int = 80) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ------------------------------------------------------------------ settings / store

_TIME_FIELDS = ("created_at", "updated_at", "started_at", "finished_at", "locked_at",
                "lease_expires_at", "available_at", "ts", "last_at", "heartbeat_at",
                "stopped_at")


def with_iso(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row for --json: every epoch time gets an ISO twin (``created_at_iso``)."""
    document = dict(row)
    for name in _TIME_FIELDS:
        if name in document:
            document[f"{name}_iso"] = iso_utc(document[name])
    if "meta_json" in document:
        document["meta"] = _loads(document.pop("meta_json"))
    return document


def _loads(text: Any) -> Any:
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return text


def ops_settings(args: argparse.Namespace) -> Settings:
    """Settings for commands that never process runs: Jira/LLM settings are not required."""
    return load_settings(args)


@contextlib.asynccontextmanager
async def open_store(settings: Settings, readonly: bool) -> AsyncIterator[Store]:
    """The existing database (never created here); read-only views use only a reader.

    Before writing, the file is checked through a read-only connection first:
    opening the writer switches the file to WAL mode, which must never happen
    to a database that turns out not to be mwai's.
    """
    if not readonly:
        probe = Store(settings.db, busy_timeout_ms=settings.db_busy_timeout_ms, readonly=True,
                      create=False)
        await probe.open()
        await probe.close()
    store = Store(settings.db, settings.synchronous, settings.db_busy_timeout_ms,
                  readonly=readonly, create=False)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def run_async(coro: Any) -> int:
    result: int = asyncio.run(coro)
    return result


def fresh_after_s(settings: Settings, now: float) -> float:
    """Heartbeats newer than this mean the process is alive (3 beats or a lease)."""
    return now - max(3 * settings.heartbeat_s, settings.lease_s)


def process_state(process: Mapping[str, Any] | None, fresh_after: float) -> tuple[bool, str]:
    """(alive, why) for a processes row; conservative: when in doubt, alive."""
    if process is None:
        return False, "no process record"
    if process["stopped_at"] is not None:
        return False, "its service stopped"
    if process["heartbeat_at"] >= fresh_after:
        return True, "heartbeat is fresh"
    if process["hostname"] == socket.gethostname():
        if pid_alive(int(process["pid"])):
            return True, f"pid {process['pid']} is still running on this host"
        return False, f"pid {process['pid']} is gone"
    return False, "no heartbeat since " + local_time(process["heartbeat_at"])


def process_of(locked_by: str) -> str:
    return locked_by.rpartition("/")[0]


# ------------------------------------------------------------------ mwai runs


def run_row(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A run for listings, with ``duration_s``: until it finished, or until now."""
    end = row.get("finished_at") or row["updated_at"]
    if row["status"] not in FINISHED:
        end = now
    document = with_iso(row)
    document["duration_s"] = round(max(0.0, end - row["created_at"]), 3)
    return document


async def list_runs(store: Store, status: str | None, issue_key: str | None, limit: int,
                    since: float) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"since": since, "limit": limit}
    if issue_key:
        rows = await store.read_query("ops_runs_by_issue", issue_key=issue_key, status=status,
                                      **params)
    elif status:
        rows = await store.read_query("ops_runs_by_status", status=status, **params)
    else:
        rows = await store.read_query("ops_runs_recent", **params)
    now = time.time()
    return [run_row(row, now) for row in rows]


def print_runs_table(runs: Sequence[Mapping[str, Any]], error_width: int = 60) -> None:
    print(f"{'ID':>7}  {'ISSUE':<14} {'STATUS':<10} {'TRIES':>5}  {'CREATED':<19}  "
          f"{'DURATION':>9}  LAST ERROR")
    for run in runs:
        print(f"{run['id']:>7}  {run['issue_key']:<14} {run['status']:<10} "
              f"{run['attempts']:>5}  {local_time(run['created_at']):<19}  "
              f"{format_duration(run['duration_s']):>9}  "
              f"{one_line(run['last_error'], error_width)}")


def _cmd_runs(args: argparse.Namespace) -> int:
    since = time.time() - parse_duration(args.since, "--since") if args.since else 0.0
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=True) as store:
            runs = await list_runs(store, args.status, args.issue, args.limit, since)
        if args.json:
            print_json({"runs": runs})
        elif not runs:
            print("no runs match")
        else:
            print_runs_table(runs)
        return EXIT_OK

    return run_async(main())


# ------------------------------------------------------------------ mwai show


def format_meta(meta: Any) -> str:
    if not meta:
        return ""
    if not isinstance(meta, dict):
        return str(meta)
    parts = []
    for key, value in meta.items():
        if value is None or value == "":
            continue
        shown = value if isinstance(value, str | int | float) else orjson.dumps(value).decode()
        parts.append(f"{key}={shown}")
    return "  ".join(parts)


def print_run(run: Mapping[str, Any], now: float) -> None:
    fields: list[tuple[str, Any]] = [
        ("issue", run["issue_key"]),
        ("status", run["status"] + (" (cancel requested)" if run.get("cancel_requested")
                                    and run["status"] == "running" else "")),
        ("attempts", run["attempts"]),
        ("action", run.get("action")),
        ("created", local_time(run["created_at"])),
        ("started", local_time(run.get("started_at")) if run.get("started_at") else None),
        ("finished", local_time(run.get("finished_at")) if run.get("finished_at") else None),
        ("updated", local_time(run["updated_at"])),
        ("duration", format_duration(run_row(run, now)["duration_s"])),
        ("worker", f"{run['locked_by']} (since {local_time(run.get('locked_at'))})"
         if run.get("locked_by") else None),
        ("branch", run.get("branch")),
        ("pull request", run.get("pr_url")),
        ("cost", f"${run['cost_usd']:.4f}" if run.get("cost_usd") is not None else None),
        ("tokens", f"{run.get('input_tokens') or 0} in / {run.get('output_tokens') or 0} out"
         if run.get("input_tokens") or run.get("output_tokens") else None),
        ("request id", run.get("request_id")),
        ("last error", run.get("last_error")),
    ]
    print(f"Run {run['id']}")
    for label, value in fields:
        if value is not None and value != "":
            print(f"  {label:<13} {value}")
    print("Events")


def print_event(event: Mapping[str, Any]) -> None:
    meta = format_meta(_loads(event["meta_json"]))
    line = f"  {local_time(event['ts'], with_ms=True)}  {event['level']:<7}  {event['message']}"
    print(f"{line}  {meta}" if meta else line, flush=True)


def run_document(run: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                 now: float) -> dict[str, Any]:
    document = run_row(run, now)
    document["payload"] = _loads(document.pop("payload_json", None))
    return {"run": document, "events": [with_iso(event) for event in events]}


async def follow_events(store: Store, run_id: int, after_id: int, poll_s: float,
                        print_new: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll until the run is finished; returns the final run and the new events."""
    collected: list[dict[str, Any]] = []
    while True:
        run = await store.get_run(run_id)
        events = await store.events(run_id, after_id)
        for event in events:
            if print_new:
                print_event(event)
            after_id = int(event["id"])
        collected += events
        if run["status"] in FINISHED:
            return run, collected
        await asyncio.sleep(poll_s)


def _cmd_show(args: argparse.Namespace) -> int:
    run_id = parse_run_id(args.run_id)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=True) as store:
            run = await store.get_run(run_id)
            events = await store.events(run_id)
            if not args.json:
                print_run(run, time.time())
                for event in events:
                    print_event(event)
            if args.follow and run["status"] not in FINISHED:
                last_id = int(events[-1]["id"]) if events else 0
                run, more = await follow_events(store, run_id, last_id, 0.5, not args.json)
                events += more
                if not args.json:
                    print(f"Run {run_id} {run['status']}"
                          + (f": {run['last_error']}" if run.get("last_error") and
                             run["status"] != "completed" else ""))
        if args.json:
            print_json(run_document(run, events, time.time()))
        return EXIT_OK

    try:
        return run_async(main())
    except KeyboardInterrupt:
        return EXIT_OK


# ------------------------------------------------------------------ mwai stats

_NUMBER_RE = re.compile(r"\b(?:0x)?[0-9a-f]*\d[0-9a-f]*\b", re.IGNORECASE)


def error_pattern(error: str | None) -> str:
    """An error with its numbers and ids replaced by N: errors that differ only
    in a run id, an issue number or a time group together (the guide's
    ``grep error | sort | uniq -c``)."""
    first_line = (error or "(no error message)").strip().splitlines()[0] if error else \
        "(no error message)"
    return one_line(_NUMBER_RE.sub("N", first_line), 160)


def group_errors(rows: Iterable[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        pattern = error_pattern(row["last_error"])
        new: dict[str, Any] = {"pattern": pattern, "count": 0, "last_at": 0.0,
                               "example": row["last_error"]}
        group = groups.setdefault(pattern, new)
        group["count"] += int(row["count"])
        group["last_at"] = max(group["last_at"], float(row["last_at"] or 0))
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_at"]))[:limit]
    return [with_iso(group) for group in ordered]


async def collect_stats(store: Store, settings: Settings, window_s: float,
                        top: int = 10) -> dict[str, Any]:
    now = time.time()
    since = now - window_s
    by_status = {row["status"]: row for row in
                 await store.read_query("ops_stats_by_status", since=since)}
    statuses: list[dict[str, Any]] = []
    for status in STATUSES:
        row = by_status.get(status)
        statuses.append({
            "status": status,
            "count": int(row["count"]) if row else 0,
            "avg_duration_s": round(row["avg_s"], 3) if row and row["avg_s"] is not None
            else None,
            "max_duration_s": round(row["max_s"], 3) if row and row["max_s"] is not None
            else None,
        })
    counts: dict[str, int] = {item["status"]: item["count"] for item in statuses}
    decided = counts["completed"] + counts["failed"]
    slowest = [run_row(row, now) for row in
               await store.read_query("ops_slowest_runs", since=since, limit=top)]
    errors = group_errors(await store.read_query("ops_error_counts", since=since, limit=5000),
                          top)
    health = await store.health_counts(settings.stuck_after_s)
    oldest_age = None if health.oldest_queued_at is None else round(
        now - health.oldest_queued_at, 3)
    return {
        "window_s": window_s,
        "since": since,
        "since_iso": iso_utc(since),
        "total": sum(counts.values()),
        "by_status": statuses,
        "failure_rate": round(counts["failed"] / decided, 4) if decided else None,
        "slowest_runs": slowest,
        "top_errors": errors,
        "queue_depth": health.queued,
        "running": health.running,
        "stuck_runs": health.stuck,
        "oldest_queued_age_s": oldest_age,
        "database_bytes": database_bytes(settings.db),
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


def database_bytes(path: str) -> int:
    """The database with its WAL: what `du` would count."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.stat(path + suffix).st_size
    return total


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def print_stats(stats: Mapping[str, Any]) -> None:
    print(f"Runs created since {local_time(stats['since'])} "
          f"(last {format_duration(stats['window_s'])}): {stats['total']}")
    print(f"  {'STATUS':<10} {'COUNT':>8}  {'AVG DURATION':>12}  {'MAX DURATION':>12}")
    for item in stats["by_status"]:
        print(f"  {item['status']:<10} {item['count']:>8}  "
              f"{format_duration(item['avg_duration_s']):>12}  "
              f"{format_duration(item['max_duration_s']):>12}")
    rate = stats["failure_rate"]
    print(f"Failure rate: {'-' if rate is None else f'{rate * 100:.1f}%'} "
          "(failed / (completed + failed))")
    print(f"Queue: {stats['queue_depth']} queued, oldest waiting "
          f"{format_duration(stats['oldest_queued_age_s'])}; {stats['running']} running, "
          f"{stats['stuck_runs']} stuck")
    print(f"Database: {format_bytes(stats['database_bytes'])}")
    print("Slowest runs:")
    if not stats["slowest_runs"]:
        print("  none")
    for run in stats["slowest_runs"]:
        print(f"  {run['id']:>7}  {run['issue_key']:<14} {run['status']:<10} "
              f"{format_duration(run['duration_s']):>9}  {local_time(run['created_at'])}")
    print("Most common errors:")
    if not stats["top_errors"]:
        print("  none")
    for group in stats["top_errors"]:
        print(f"  {group['count']:>7}  {group['pattern']}  (last {local_time(group['last_at'])})")


def _cmd_stats(args: argparse.Namespace) -> int:
    window_s = parse_duration(args.since, "--since")
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=True) as store:
            stats = await collect_stats(store, settings, window_s, args.top)
        if args.json:
            print_json(stats)
        else:
            print_stats(stats)
        return EXIT_OK

    return run_async(main())


# ------------------------------------------------------------------ mwai monitor


async def monitor_snapshot(store: Store, settings: Settings, recent: int) -> dict[str, Any]:
    now = time.time()
    health = await store.health_counts(settings.stuck_after_s)
    fresh_after = fresh_after_s(settings, now)
    processes = []
    for row in await store.read_query("ops_processes", since=now - 3600):
        alive, why = process_state(row, fresh_after)
        processes.append({**with_iso(row), "alive": alive, "state": why,
                          "heartbeat_age_s": round(now - row["heartbeat_at"], 3)})
    running = []
    for row in await store.read_query("ops_running_runs", limit=50):
        running.append({**with_iso(row), "age_s": round(now - (row["started_at"] or
                                                               row["created_at"]), 3),
                        "since_update_s": round(now - row["updated_at"], 3)})
    failed = await store.read_query("ops_count_status_since", status="failed",
                                    since=now - 3600)
    oldest_age = None if health.oldest_queued_at is None else round(
        now - health.oldest_queued_at, 3)
    problems = []
    if not any(p["alive"] for p in processes):
        problems.append("no live `mwai serve` (no fresh heartbeat)")
    if health.stuck:
        problems.append(f"{health.stuck} stuck run(s)")
    if oldest_age is not None and oldest_age > settings.queue_age_alert_s:
        problems.append(f"oldest queued run waits for {format_duration(oldest_age)}")
    status = "healthy"
    if problems:
        status = "unhealthy" if not any(p["alive"] for p in processes) else "degraded"
    return {
        "status": status,
        "problems": problems,
        "queued": health.queued,
        "running": health.running,
        "stuck_runs": health.stuck,
        "oldest_queued_age_s": oldest_age,
        "failed_last_hour": int(failed[0]["count"]),
        "processes": processes,
        "running_runs": running,
        "recent_runs": await list_runs(store, None, None, recent, 0.0),
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


def render_monitor(snap: Mapping[str, Any]) -> str:
    lines = [f"mwai monitor — {local_time(snap['timestamp'])}   health: {snap['status'].upper()}"
             + (f" ({'; '.join(snap['problems'])})" if snap["problems"] else "")]
    lines.append(f"queue: {snap['queued']} queued (oldest "
                 f"{format_duration(snap['oldest_queued_age_s'])})   running: "
                 f"{snap['running']}   stuck: {snap['stuck_runs']}   failed last hour: "
                 f"{snap['failed_last_hour']}")
    services = [p for p in snap["processes"] if p["stopped_at"] is None]
    if services:
        for proc in services:
            lines.append(f"service: {proc['hostname']} pid {proc['pid']} "
                         f"{'alive' if proc['alive'] else 'NOT ALIVE'} (heartbeat "
                         f"{format_duration(proc['heartbeat_age_s'])} ago)")
    else:
        lines.append("service: none running")
    lines.append("")
    lines.append("Running:")
    if not snap["running_runs"]:
        lines.append("  none")
    for run in snap["running_runs"]:
        lines.append(f"  {run['id']:>7}  {run['issue_key']:<14} age "
                     f"{format_duration(run['age_s']):>8}  attempt {run['attempts']}  "
                     f"worker {run['locked_by']}"
                     + ("  (cancel requested)" if run["cancel_requested"] else ""))
    lines.append("")
    lines.append("Recent runs:")
    for run in snap["recent_runs"]:
        lines.append(f"  {run['id']:>7}  {run['issue_key']:<14} {run['status']:<10} "
                     f"{local_time(run['updated_at'])}  "
                     f"{format_duration(run['duration_s']):>8}  "
                     f"{one_line(run['last_error'], 50)}")
    return "\n".join(lines)


def _cmd_monitor(args: argparse.Namespace) -> int:
    interval_s = parse_duration(args.interval, "--interval")
    settings = ops_settings(args)
    clear = sys.stdout.isatty() and not args.once and not args.json

    async def main() -> int:
        async with open_store(settings, readonly=True) as store:
            while True:
                snap = await monitor_snapshot(store, settings, args.recent)
                if args.json:
                    print_json(snap)
                else:
                    text = render_monitor(snap)
                    sys.stdout.write(("\x1b[H\x1b[2J" if clear else "") + text + "\n")
                    sys.stdout.flush()
                if args.once:
                    return EXIT_OK
                await asyncio.sleep(interval_s)

    try:
        return run_async(main())
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return EXIT_OK


# ------------------------------------------------------------------ requeue / cancel


def _cmd_requeue(args: argparse.Namespace) -> int:
    run_id = parse_run_id(args.run_id)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=False) as store:
            await store.requeue(run_id)
            run = await store.get_run(run_id)
        if args.json:
            print_json({"ok": True, "run": run_row(run, time.time())})
        else:
            print(f"run {run_id} ({run['issue_key']}) is queued again; a running `mwai serve` "
                  "picks it up within MWAI_POLL_S")
        return EXIT_OK

    return run_async(main())


async def cancel_run(store: Store, run_id: int, wait_s: float,
                     poll_s: float = 0.25) -> tuple[str, dict[str, Any]]:
    """Cancel; for a running run, wait for its worker to stop it. Returns (outcome, run)."""
    outcome = await store.cancel(run_id)
    deadline = time.monotonic() + wait_s
    run = await store.get_run(run_id)
    while outcome == "cancelling" and run["status"] == "running" and \
            time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
        run = await store.get_run(run_id)
    if outcome == "cancelling":
        outcome = "cancelled" if run["status"] == "cancelled" else (
            "cancelling" if run["status"] == "running" else f"finished as {run['status']}")
    return outcome, run


def _cmd_cancel(args: argparse.Namespace) -> int:
    run_id = parse_run_id(args.run_id)
    wait_s = parse_duration(args.wait, "--wait") if args.wait not in ("0", "") else 0.0
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=False) as store:
            outcome, run = await cancel_run(store, run_id, wait_s)
        ok = outcome == "cancelled" or (outcome == "cancelling" and wait_s == 0)
        if args.json:
            print_json({"ok": ok, "outcome": outcome, "run": run_row(run, time.time())})
        elif outcome == "cancelled":
            print(f"run {run_id} ({run['issue_key']}) cancelled")
        elif outcome == "cancelling" and wait_s == 0:
            print(f"run {run_id} ({run['issue_key']}) is running: cancel requested; its "
                  f"worker stops it within a second (`mwai show {run_id} --follow`)")
        elif outcome == "cancelling":
            print(f"run {run_id} ({run['issue_key']}) is still running after "
                  f"{format_duration(wait_s)}: cancel is requested but its worker "
                  f"({run['locked_by']}) has not stopped it; is its `mwai serve` alive? "
                  "(`mwai monitor`, `mwai unlock`)")
        else:
            print(f"run {run_id} ({run['issue_key']}) {outcome} before the cancel reached "
                  "its worker")
        return EXIT_OK if ok else EXIT_PROBLEM

    return run_async(main())


# ------------------------------------------------------------------ mwai unlock


@dataclass(frozen=True)
class StaleLock:
    run: dict[str, Any]
    process_id: str
    reason: str


async def find_locks(store: Store, settings: Settings, older_than_s: float
                     ) -> tuple[list[StaleLock], list[dict[str, Any]]]:
    """(stale locks, locks held by live processes) — the guide's stale-lock query."""
    now = time.time()
    fresh_after = fresh_after_s(settings, now)
    stale: list[StaleLock] = []
    alive: list[dict[str, Any]] = []
    processes: dict[str, tuple[bool, str]] = {}
    for run in await store.read_query("ops_locked_runs", limit=100_000):
        process_id = process_of(run["locked_by"])
        if process_id not in processes:
            rows = await store.read_query("ops_process", process_id=process_id)
            processes[process_id] = process_state(rows[0] if rows else None, fresh_after)
        is_alive, why = processes[process_id]
        lock_age = now - (run["locked_at"] or 0)
        if is_alive or lock_age < older_than_s:
            alive.append({**with_iso(run), "process_id": process_id, "reason": why
                          if is_alive else f"locked only {format_duration(lock_age)} ago"})
        else:
            stale.append(StaleLock(with_iso(run), process_id, why))
    return stale, alive


def _cmd_unlock(args: argparse.Namespace) -> int:
    older_than_s = parse_duration(args.older_than, "--older-than")
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=args.dry_run) as store:
            stale, kept = await find_locks(store, settings, older_than_s)
            released = []
            if stale and not args.dry_run:
                locks = [(lock.run["id"], lock.run["locked_by"]) for lock in stale]
                released = await store.release_stale_locks(
                    locks, fresh_after_s(settings, time.time()), settings.max_attempts)
        outcomes = {item.run_id: item.outcome for item in released}
        if args.json:
            print_json({
                "dry_run": args.dry_run,
                "stale": [{**lock.run, "process_id": lock.process_id, "reason": lock.reason,
                           "outcome": outcomes.get(lock.run["id"])} for lock in stale],
                "kept": kept,
            })
            return EXIT_OK
        if not stale:
            print("no stale locks")
        for lock in stale:
            run = lock.run
            verb = "would release" if args.dry_run else (
                f"released -> {outcomes[run['id']]}" if run["id"] in outcomes
                else "left alone (changed meanwhile)")
            print(f"run {run['id']} ({run['issue_key']}, {run['status']}) locked by "
                  f"{run['locked_by']} since {local_time(run['locked_at'])}: {lock.reason}; "
                  f"{verb}")
        for run in kept:
            print(f"run {run['id']} ({run['issue_key']}) locked by {run['locked_by']}: kept "
                  f"({run['reason']})")
        return EXIT_OK

    return run_async(main())


# ------------------------------------------------------------------ mwai prune


# How long one delete transaction may hold the write lock: webhooks that arrive
# meanwhile wait for it, so it bounds their latency during a prune.
PRUNE_TARGET_S = 0.02


async def prune(store: Store, before: float, batch_size: int, archive: Path | None,
                pause_min_s: float = 0.05) -> tuple[int, int]:
    """Delete finished runs updated before ``before`` and their events, batch by batch.

    Each batch is one short write transaction: the batch size adapts (up to
    ``batch_size``) so that a transaction takes about PRUNE_TARGET_S, and between
    batches the write lock stays free for at least as long, so a live
    service keeps acknowledging webhooks (its writes wait at most one batch,
    well within MWAI_DB_BUSY_TIMEOUT_MS). With ``archive``, the batch is
    appended (one JSON line per run, with its events) and flushed to disk
    before it is deleted.
    """
    runs_deleted = events_deleted = 0
    after_id = 0
    size = min(batch_size, 100)
    handle = archive.open("ab") if archive is not None else None
    try:
        while True:
            rows = await store.read_query("ops_prune_candidates", before=before,
                                          after_id=after_id, limit=size)
            if not rows:
                return runs_deleted, events_deleted
            ids = [int(row["id"]) for row in rows]
            after_id = ids[-1]
            if handle is not None:
                await _archive_batch(store, ids, handle)
            started = time.monotonic()
            runs, events = await _prune_batch(store, ids, before)
            took_s = time.monotonic() - started
            runs_deleted += runs
            events_deleted += events
            if took_s > PRUNE_TARGET_S * 1.25:
                size = max(1, int(size * PRUNE_TARGET_S / took_s))
            elif took_s < PRUNE_TARGET_S * 0.5 and len(ids) == size:
                size = min(batch_size, size * 2)
            await asyncio.sleep(max(pause_min_s, took_s))
    finally:
        if handle is not None:
            handle.close()


PRUNE_LOCKED_TRIES = 60


async def _prune_batch(store: Store, ids: list[int], before: float) -> tuple[int, int]:
    """Delete one batch; while a busy service keeps the write lock, wait and retry.

    A service under load commits back to back, and SQLite's busy handler only
    probes the lock now and then, so one batch may miss every gap: that is a
    reason to wait, not to give up the whole prune.
    """
    for attempt in range(1, PRUNE_LOCKED_TRIES + 1):
        try:
            return await store.prune_runs(ids, before)
        except StoreUnavailable:
            if attempt == PRUNE_LOCKED_TRIES:
                raise
            await asyncio.sleep(min(1.0, 0.05 * attempt))
    raise AssertionError("unreachable")


async def _archive_batch(store: Store, ids: list[int], handle: Any) -> None:
    ids_json = orjson.dumps(ids).decode()
    events: dict[int, list[dict[str, Any]]] = {}
    for event in await store.read_query("ops_events_by_run_ids", ids=ids_json):
        events.setdefault(int(event["run_id"]), []).append(with_iso(event))
    for run in await store.read_query("ops_runs_by_ids", ids=ids_json):
        document = with_iso(run)
        document["events"] = events.get(int(run["id"]), [])
        handle.write(orjson.dumps(document) + b"\n")
    handle.flush()
    os.fsync(handle.fileno())


VACUUM_MIN_FREE = 0.10  # VACUUM rewrites the whole file: only worth it for real space


async def vacuum_if_worth_it(store: Store) -> str | None:
    """VACUUM when at least VACUUM_MIN_FREE of the file is free pages; else why not."""
    counts = (await store.read_query("ops_page_counts"))[0]
    free = counts["free_pages"] / max(1, counts["pages"])
    if free < VACUUM_MIN_FREE:
        return (f"only {free * 100:.1f}% of the file is free space (VACUUM runs from "
                f"{VACUUM_MIN_FREE * 100:.0f}%)")
    await store.vacuum()
    return None


def _cmd_prune(args: argparse.Namespace) -> int:
    older_than_s = parse_duration(args.older_than, "--older-than")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    archive = Path(args.archive) if args.archive else None
    if archive is not None and not archive.parent.is_dir():
        raise UsageError(f"--archive {archive}: directory {archive.parent} does not exist")
    settings = ops_settings(args)
    before = time.time() - older_than_s

    async def main() -> int:
        size_before = database_bytes(settings.db)
        async with open_store(settings, readonly=args.dry_run) as store:
            result: dict[str, Any]
            if args.dry_run:
                count = (await store.read_query("ops_prune_count", before=before))[0]
                events = (await store.read_query("ops_prune_events_count", before=before))[0]
                result = {"dry_run": True, "runs": count["runs"], "events": events["events"]}
            else:
                runs_deleted, events_deleted = await prune(store, before, args.batch_size,
                                                           archive)
                result = {"dry_run": False, "runs": runs_deleted, "events": events_deleted}
                if args.vacuum:
                    result["vacuum_skipped"] = await vacuum_if_worth_it(store)
        result.update({"before": before, "before_iso": iso_utc(before),
                       "vacuum": bool(args.vacuum and not args.dry_run
                                      and not result.get("vacuum_skipped")),
                       "archive": str(archive) if archive else None,
                       "database_bytes_before": size_before,
                       "database_bytes_after": database_bytes(settings.db)})
        if args.json:
            print_json(result)
            return EXIT_OK
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {result['runs']} finished runs last updated before "
              f"{local_time(before)} and their {result['events']} events")
        if archive is not None and not args.dry_run:
            print(f"archived them to {archive}")
        if result["vacuum"]:
            print(f"vacuumed: database {format_bytes(size_before)} -> "
                  f"{format_bytes(result['database_bytes_after'])}")
        elif result.get("vacuum_skipped"):
            print(f"vacuum skipped: {result['vacuum_skipped']}")
        else:
            print(f"database size: {format_bytes(result['database_bytes_after'])}"
                  + ("" if args.dry_run else " (use --vacuum to give the space back)"))
        return EXIT_OK

    if args.dry_run:
        return run_async(main())
    from mwai import telemetry

    with telemetry.cron_job(settings, "prune"):
        return run_async(main())


# ------------------------------------------------------------------ mwai check


_URL_SETTINGS = ("JIRA_BASE_URL", "GITHUB_API_URL", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL",
                 "MWAI_ALERT_WEBHOOK_URL", "MWAI_ALERT_SLACK_WEBHOOK_URL")


def extra_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(problems, warnings) that Settings.from_env does not look for."""
    problems: list[str] = []
    warnings: list[str] = []
    for name in _URL_SETTINGS:
        value = getattr(settings, SETTINGS_BY_NAME[name].field)
        if value and not re.match(r"https?://[^/\s]+", value):
            shown = "<hidden>" if SETTINGS_BY_NAME[name].secret else repr(value)
            problems.append(f"{name}={shown}: expected an http:// or https:// URL")
    if settings.alert_email_to and not settings.alert_smtp_host:
        problems.append("MWAI_ALERT_EMAIL_TO is set but MWAI_ALERT_SMTP_HOST is empty: "
                        "say which SMTP server sends the alert mail")
    if settings.repos_file and not Path(settings.repos_file).is_file():
        problems.append(f"MWAI_REPOS_FILE={settings.repos_file!r}: no such file")
    if settings.jira_webhook_secret and len(settings.jira_webhook_secret) < 16:
        warnings.append("JIRA_WEBHOOK_SECRET is shorter than 16 characters: use a long "
                        "random value (e.g. `openssl rand -hex 32`)")
    if settings.agent_command:
        program = settings.agent_command.split()[0]
        if shutil.which(program) is None:
            problems.append(f"MWAI_AGENT_COMMAND: {program!r} is not found on PATH")
    if settings.lease_s <= settings.heartbeat_s:
        problems.append(f"MWAI_LEASE_S={settings.lease_s:g} must be longer than "
                        f"MWAI_HEARTBEAT_S={settings.heartbeat_s:g}, or live runs lose "
                        "their lease")
    return problems, warnings


async def check_database(path: str) -> tuple[bool, str]:
    if not Path(path).exists():
        parent = Path(path).absolute().parent
        if not parent.is_dir():
            return False, f"MWAI_DB={path}: directory {parent} does not exist"
        if not os.access(parent, os.W_OK):
            return False, f"MWAI_DB={path}: directory {parent} is not writable"
        return True, f"MWAI_DB={path} does not exist yet; `mwai serve` creates it"
    store = Store(path, readonly=True, create=False)
    try:
        await store.open()
        health = await store.health_counts(3600)
    except StoreError as exc:
        return False, f"MWAI_DB: {exc}"
    finally:
        await store.close()
    return True, (f"database {path}: opens, schema version {SCHEMA_VERSION} (current), "
                  f"{health.queued} queued, {health.running} running, "
                  f"{format_bytes(database_bytes(path))}")


def _raw_source(args: argparse.Namespace) -> dict[str, str]:
    source = dict(os.environ)
    if getattr(args, "env_file", None):
        source.update(read_env_file(args.env_file))
    if getattr(args, "db", None):
        source["MWAI_DB"] = args.db
    return source


def _cmd_check(args: argparse.Namespace) -> int:
    source = _raw_source(args)
    problems: list[str] = []
    warnings: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.from_env(source, check_required=True)
    except ConfigError as exc:
        problems += exc.problems
        # Still check what can be checked when only required values are missing.
        with contextlib.suppress(ConfigError):
            settings = Settings.from_env(source, check_required=False)
    if settings is not None:
        more, warnings = extra_problems(settings)
        problems += more
    db_path = settings.db if settings else source.get("MWAI_DB",
                                                      SETTINGS_BY_NAME["MWAI_DB"].default)
    db_ok, db_line = run_async_value(check_database(db_path))
    report: dict[str, Any] = {"configuration": {"ok": not problems, "problems": problems,
                                                "warnings": warnings},
                              "database": {"ok": db_ok, "detail": db_line}}
    connect_ok = True
    if args.connect:
        if settings is None:
            report["connect"] = []
            problems.append("--connect skipped: fix the configuration first")
        else:
            from mwai.alerts import check_connections

            results = run_async_value(check_connections(settings))
            report["connect"] = results
            connect_ok = all(item["ok"] is not False for item in results)
    ok = not problems and db_ok and connect_ok
    report["ok"] = ok
    if args.json:
        print_json(report)
        return EXIT_OK if ok else EXIT_PROBLEM
    print("configuration: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    for problem in problems:
        print(f"  PROBLEM {problem}")
    for warning in warnings:
        print(f"  warning {warning}")
    print(f"database: {'ok' if db_ok else 'PROBLEM'}: {db_line}")
    for item in report.get("connect", []):
        state = {True: "ok", False: "FAILED", None: "skipped"}[item["ok"]]
        print(f"{item['service']}: {state}: {item['detail']}")
    return EXIT_OK if ok else EXIT_PROBLEM


def run_async_value(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------ registration


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (stable field names; times as epoch "
                             "seconds plus *_iso UTC strings)")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            name, parents=[common], help=help_text, description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        return parser

    runs = add("runs", "list recent runs (all, failed, queued, per issue)",
               "List runs, latest activity first: id, issue, status, attempts, created "
               "(local time), duration and last error.\nExamples: mwai runs; mwai runs "
               "--status failed; mwai runs --status queued; mwai runs --issue PROJ-12")
    runs.add_argument("--status", choices=STATUSES, help="only runs with this status")
    runs.add_argument("--issue", metavar="KEY", help="only runs of this Jira issue")
    runs.add_argument("--limit", type=int, default=20, metavar="N",
                      help="show at most N runs (default 20)")
    runs.add_argument("--since", metavar="DURATION",
                      help="only runs created or changed within DURATION (30s, 10m, 1h, 7d, "
                           "2w)")
    _json_flag(runs)
    runs.set_defaults(handler=_cmd_runs)

    show = add("show", "show one run: fields, branch, PR, error and its event timeline",
               "Everything about one run (what check_run_status.sh printed): its fields, "
               "branch, pull request, last error and the timeline of its events with their "
               "metadata, in local time.")
    show.add_argument("run_id", metavar="RUN_ID", help="the run id (see `mwai runs`)")
    show.add_argument("--follow", "-f", action="store_true",
                      help="keep printing new events until the run is finished")
    _json_flag(show)
    show.set_defaults(handler=_cmd_show)

    stats = add("stats", "durations by status, slowest runs, failure rate, error patterns",
                "Statistics of the runs created within a window: count, average and max "
                "duration (updated_at - created_at) by status, slowest runs, failure rate, "
                "the most common errors (numbers and ids folded together), queue depth and "
                "the age of the oldest queued run.")
    stats.add_argument("--since", default="7d", metavar="DURATION",
                       help="window: runs created within DURATION (default 7d)")
    stats.add_argument("--top", type=int, default=10, metavar="N",
                       help="how many slowest runs and error patterns (default 10)")
    _json_flag(stats)
    stats.set_defaults(handler=_cmd_stats)

    monitor = add("monitor", "live terminal view of the queue, running runs and health",
                  "A live view refreshed every 2 s (like monitor_worker.sh under watch): "
                  "health, queue depth, running runs with their age and worker, failures in "
                  "the last hour, recent runs. Ctrl-C exits.")
    monitor.add_argument("--interval", default="2s", metavar="DURATION",
                         help="refresh interval (default 2s)")
    monitor.add_argument("--recent", type=int, default=10, metavar="N",
                         help="recent runs shown (default 10)")
    monitor.add_argument("--once", action="store_true", help="print one snapshot and exit")
    _json_flag(monitor)
    monitor.set_defaults(handler=_cmd_monitor)

    requeue = add("requeue", "queue a finished (failed, cancelled, completed) run again",
                  "Put a finished run back in the queue with its attempts reset. Refused for "
                  "a queued or running run, or when its issue already has a queued run.")
    requeue.add_argument("run_id", metavar="RUN_ID", help="the run id (see `mwai runs`)")
    _json_flag(requeue)
    requeue.set_defaults(handler=_cmd_requeue)

    cancel = add("cancel", "cancel a queued run, or stop a running one",
                 "A queued run is cancelled at once. For a running run the live service's "
                 "worker is asked to stop it (it checks every 0.5 s); the command waits until "
                 "the run is cancelled. Exit 1 if it is still running after --wait.")
    cancel.add_argument("run_id", metavar="RUN_ID", help="the run id (see `mwai runs`)")
    cancel.add_argument("--wait", default="30s", metavar="DURATION",
                        help="how long to wait for a running run to stop (default 30s; 0: "
                             "only request it)")
    _json_flag(cancel)
    cancel.set_defaults(handler=_cmd_cancel)

    unlock = add("unlock", "list and release stale locks of dead workers",
                 "List runs whose lock (locked_by) belongs to a process that is gone (no "
                 "fresh heartbeat, stopped, or its pid no longer exists) and release them: a "
                 "running run goes back to the queue (or fails when its attempts are spent). "
                 "A lock whose process heartbeat is fresh is never touched.")
    unlock.add_argument("--older-than", default="10m", metavar="DURATION",
                        help="only locks taken more than DURATION ago (default 10m)")
    unlock.add_argument("--dry-run", action="store_true",
                        help="only list what would be released")
    _json_flag(unlock)
    unlock.set_defaults(handler=_cmd_unlock)

    prune_cmd = add("prune", "delete old finished runs and their events (30-day archive)",
                    "Delete finished runs (completed, failed, cancelled) last updated before "
                    "the cut-off, events first, in small batches of short transactions so a "
                    "running service keeps answering webhooks. Queued and running runs are "
                    "never deleted.")
    prune_cmd.add_argument("--older-than", required=True, metavar="DURATION",
                           help="cut-off age, e.g. 30d")
    prune_cmd.add_argument("--archive", metavar="FILE.jsonl",
                           help="first append each run, with its events, as one JSON line")
    prune_cmd.add_argument("--batch-size", type=int, default=1000, metavar="N",
                           help="at most N runs per transaction (default 1000; batches "
                                "shrink so that one holds the write lock about 20 ms)")
    prune_cmd.add_argument("--vacuum", action="store_true",
                           help="then VACUUM to give the space back to the disk, when at "
                                "least 10%% of the file is free (VACUUM blocks writes while "
                                "it runs: webhooks get 503 + Retry-After meanwhile)")
    prune_cmd.add_argument("--dry-run", action="store_true",
                           help="only count what would be deleted")
    _json_flag(prune_cmd)
    prune_cmd.set_defaults(handler=_cmd_prune)

    check = add("check", "validate the configuration, the database and (--connect) the APIs",
                "Report every configuration problem with the setting's name, check that the "
                "database opens and its schema is current, and with --connect call Jira "
                "(GET /myself), GitHub (GET /user) and the LLM provider (list models). "
                "Exit 1 if anything is wrong.")
    check.add_argument("--connect", action="store_true",
                       help="also call the configured Jira, GitHub and LLM endpoints")
    _json_flag(check)
    check.set_defaults(handler=_cmd_check)



