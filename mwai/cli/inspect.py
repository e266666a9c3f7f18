"""Operator views: ``mwai runs | show | stats | monitor``.

They read through a read-only connection and never block the service.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from mwai.cli.common import (
    database_bytes,
    format_bytes,
    format_duration,
    fresh_after_s,
    iso_utc,
    json_or_text,
    local_time,
    one_line,
    open_store,
    ops_settings,
    parse_duration,
    parse_run_id,
    print_json,
    process_state,
    run_async,
    run_row,
    with_iso,
)
from mwai.cli.parser import RUN_ID, add_ops_command, arg, count, duration, flag
from mwai.errors import EXIT_OK, UsageError
from mwai.model import FINISHED, STATUSES, ErrorCount
from mwai.queue.health import HealthRules, Workers, assess
from mwai.queue.store import Store
from mwai.runner.verify import report
from mwai.settings import Settings

# ------------------------------------------------------------------ mwai runs


async def list_runs(store: Store, status: str | None, issue_key: str | None, limit: int,
                    since: float) -> list[dict[str, Any]]:
    if issue_key:
        rows = await store.runs_of_issue(issue_key, status, since, limit)
    elif status:
        rows = await store.runs_by_status(status, since, limit)
    else:
        rows = await store.recent_runs(since, limit)
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
    meta = format_meta(json_or_text(event["meta_json"]))
    line = f"  {local_time(event['ts'], with_ms=True)}  {event['level']:<7}  {event['message']}"
    print(f"{line}  {meta}" if meta else line, flush=True)


def print_checks(events: Iterable[Mapping[str, Any]]) -> None:
    """The table of the check commands the run's events recorded (nothing when none ran)."""
    rows = []
    for event in events:
        meta = json_or_text(event["meta_json"])
        if isinstance(meta, dict) and "check" in meta and "exit_code" in meta:
            rows.append({**meta, "result": str(event["message"]).partition(": ")[2]})
    if rows:
        print("Checks")
        print("\n".join("  " + line for line in report.text_table(rows).splitlines()))


def run_document(run: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                 now: float) -> dict[str, Any]:
    document = run_row(run, now)
    document["payload"] = json_or_text(document.pop("payload_json", None))
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
                print_checks(events)
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


def group_errors(rows: Iterable[ErrorCount], limit: int) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        pattern = error_pattern(row.last_error)
        new: dict[str, Any] = {"pattern": pattern, "count": 0, "last_at": 0.0,
                               "example": row.last_error}
        group = groups.setdefault(pattern, new)
        group["count"] += int(row.count)
        group["last_at"] = max(group["last_at"], float(row.last_at or 0))
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_at"]))[:limit]
    return [with_iso(group) for group in ordered]


async def collect_stats(store: Store, settings: Settings, window_s: float,
                        top: int = 10) -> dict[str, Any]:
    now = time.time()
    since = now - window_s
    by_status = {row.status: row for row in await store.status_stats(since)}
    statuses: list[dict[str, Any]] = []
    for status in STATUSES:
        row = by_status.get(status)
        statuses.append({
            "status": status,
            "count": int(row.count) if row else 0,
            "avg_duration_s": round(row.avg_s, 3) if row and row.avg_s is not None else None,
            "max_duration_s": round(row.max_s, 3) if row and row.max_s is not None else None,
        })
    counts: dict[str, int] = {item["status"]: item["count"] for item in statuses}
    decided = counts["completed"] + counts["failed"]
    slowest = [run_row(row, now) for row in await store.slowest_runs(since, top)]
    errors = group_errors(await store.error_counts(since, 5000), top)
    health = assess(await store.health_snapshot(settings.stuck_after_s), None,
                    HealthRules.of(settings))
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
        "stuck_runs": health.stuck_count,
        "oldest_queued_age_s": health.oldest_queued_age_s,
        "database_bytes": database_bytes(settings.db),
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


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
    """The monitor's view; its health is the service's assessment (mwai.queue.health),
    with the heartbeats of the `mwai serve` processes as the workers."""
    now = time.time()
    snapshot = await store.health_snapshot(settings.stuck_after_s)
    fresh_after = fresh_after_s(settings, now)
    processes = []
    for process in await store.processes(since=now - 3600):
        alive, why = process_state(process, fresh_after)
        processes.append({**with_iso(process), "alive": alive, "state": why,
                          "heartbeat_age_s": round(now - process.heartbeat_at, 3)})
    running = []
    for run in await store.running_runs(limit=50):
        running.append({**with_iso(run), "age_s": round(now - (run.started_at or
                                                               run.created_at), 3),
                        "since_update_s": round(now - run.updated_at, 3)})
    failed_last_hour = await store.count_runs_since("failed", since=now - 3600)
    services = Workers(alive=sum(1 for p in processes if p["alive"]), configured=None,
                       kind="services")
    health = assess(snapshot, services, HealthRules.of(settings))
    return {
        "status": health.status,
        "problems": list(health.problems),
        "queued": health.queued,
        "running": health.running,
        "stuck_runs": health.stuck_count,
        "oldest_queued_age_s": health.oldest_queued_age_s,
        "failed_last_hour": failed_last_hour,
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


# ------------------------------------------------------------------ registration


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_ops_command(
        subparsers, common, "runs", "list recent runs (all, failed, queued, per issue)",
        "List runs, latest activity first: id, issue, status, attempts, created (local time), "
        "duration and last error.\nExamples: mwai runs; mwai runs --status failed; mwai runs "
        "--status queued; mwai runs --issue PROJ-12",
        _cmd_runs,
        arg("--status", choices=STATUSES, help="only runs with this status"),
        arg("--issue", metavar="KEY", help="only runs of this Jira issue"),
        count("--limit", 20, "show at most N runs (default 20)"),
        duration("--since", "only runs created or changed within DURATION (30s, 10m, 1h, 7d, "
                            "2w)"))
    add_ops_command(
        subparsers, common, "show",
        "show one run: fields, branch, PR, error and its event timeline",
        "Everything about one run (what check_run_status.sh printed): its fields, branch, pull "
        "request, last error and the timeline of its events with their metadata, in local "
        "time.",
        _cmd_show,
        RUN_ID,
        arg("--follow", "-f", action="store_true",
            help="keep printing new events until the run is finished"))
    add_ops_command(
        subparsers, common, "stats",
        "durations by status, slowest runs, failure rate, error patterns",
        "Statistics of the runs created within a window: count, average and max duration "
        "(updated_at - created_at) by status, slowest runs, failure rate, the most common "
        "errors (numbers and ids folded together), queue depth and the age of the oldest "
        "queued run.",
        _cmd_stats,
        duration("--since", "window: runs created within DURATION (default 7d)", default="7d"),
        count("--top", 10, "how many slowest runs and error patterns (default 10)"))
    add_ops_command(
        subparsers, common, "monitor", "live terminal view of the queue, running runs and health",
        "A live view refreshed every 2 s (like monitor_worker.sh under watch): health, queue "
        "depth, running runs with their age and worker, failures in the last hour, recent "
        "runs. Ctrl-C exits.",
        _cmd_monitor,
        duration("--interval", "refresh interval (default 2s)", default="2s"),
        count("--recent", 10, "recent runs shown (default 10)"),
        flag("--once", "print one snapshot and exit"))
