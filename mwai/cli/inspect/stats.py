"""``mwai stats``: the runs of a window by status, the slowest, the common errors.

Exact at any size: every failed run's error is grouped (no cap), and durations
are the run_times vocabulary (queue wait, run time, total) computed by SQL over
every run of the window.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mwai.cli.common import (
    colour,
    database_bytes,
    format_bytes,
    format_duration,
    iso_utc,
    local_time,
    one_line,
    open_store,
    ops_settings,
    parse_duration,
    print_json,
    run_async,
    run_row,
    with_iso,
)
from mwai.errors import EXIT_OK
from mwai.model import STATUSES, ErrorCount
from mwai.queue.health import HealthRules, assess
from mwai.queue.store import Store
from mwai.settings import Settings

_NUMBER_RE = re.compile(r"\b(?:0x)?[0-9a-f]*\d[0-9a-f]*\b", re.IGNORECASE)
_DURATIONS = ("queue_wait_s", "run_time_s", "total_s")


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


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def collect_stats(store: Store, settings: Settings, window_s: float,
                        top: int = 10) -> dict[str, Any]:
    now = time.time()
    since = now - window_s
    by_status = {row.status: row for row in await store.status_stats(since, now)}
    statuses: list[dict[str, Any]] = []
    for status in STATUSES:
        row = by_status.get(status)
        item: dict[str, Any] = {"status": status, "count": int(row.count) if row else 0}
        for name in _DURATIONS:
            for agg in ("avg", "max"):
                item[f"{agg}_{name}"] = _rounded(getattr(row, f"{agg}_{name}")) if row else None
        statuses.append(item)
    counts: dict[str, int] = {item["status"]: item["count"] for item in statuses}
    decided = counts["completed"] + counts["failed"]
    slowest = [run_row(row, now) for row in await store.slowest_runs(since, top)]
    error_rows = await store.error_counts(since)
    errors = group_errors(error_rows, top)
    snapshot = await store.health_snapshot(settings.stuck_after_s, list_stuck=20)
    health = assess(snapshot, None, HealthRules.of(settings))
    return {
        "window_s": window_s,
        "since": since,
        "since_iso": iso_utc(since),
        "total": sum(counts.values()),
        "by_status": statuses,
        "failure_rate": round(counts["failed"] / decided, 4) if decided else None,
        "slowest_runs": slowest,
        "top_errors": errors,
        "error_patterns": len(group_errors(error_rows, len(error_rows) or 1)),
        "queued": health.queued,
        "running": health.running,
        "paused": health.paused,
        "stuck_count": health.stuck_count,
        "stuck_runs": [with_iso(run) for run in health.stuck_runs],
        "oldest_queued_age_s": health.oldest_queued_age_s,
        "database_bytes": database_bytes(settings.db),
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


def print_stats(stats: Mapping[str, Any]) -> None:
    print(f"Runs created since {local_time(stats['since'])} "
          f"(last {format_duration(stats['window_s'])}): {stats['total']}")
    print(colour(f"  {'STATUS':<10} {'COUNT':>8}  {'AVG WAIT':>9} {'AVG RUN':>9} "
                 f"{'AVG TOTAL':>9}  {'MAX TOTAL':>9}", "bold"))
    for item in stats["by_status"]:
        print(f"  {item['status']:<10} {item['count']:>8}  "
              f"{format_duration(item['avg_queue_wait_s']):>9} "
              f"{format_duration(item['avg_run_time_s']):>9} "
              f"{format_duration(item['avg_total_s']):>9}  "
              f"{format_duration(item['max_total_s']):>9}")
    print("  (wait: created -> started; run: started -> finished; total: created -> finished)")
    rate = stats["failure_rate"]
    print(f"Failure rate: {'-' if rate is None else f'{rate * 100:.1f}%'} "
          "(failed / (completed + failed))")
    print(f"Queue: {stats['queued']} queued, oldest waiting "
          f"{format_duration(stats['oldest_queued_age_s'])}; {stats['running']} running, "
          f"{stats['stuck_count']} stuck" + ("; claims PAUSED" if stats["paused"] else ""))
    print(f"Database: {format_bytes(stats['database_bytes'])}")
    print("Slowest runs (total):")
    if not stats["slowest_runs"]:
        print("  none")
    for run in stats["slowest_runs"]:
        print(f"  {run['id']:>7}  {run['issue_key']:<14} {run['status']:<10} "
              f"{format_duration(run['total_s']):>9}  {local_time(run['created_at'])}")
    print(f"Most common errors: {stats['error_patterns']} pattern(s) in all")
    if not stats["top_errors"]:
        print("  none")
    for group in stats["top_errors"]:
        print(f"  {group['count']:>7}  {group['pattern']}  (last {local_time(group['last_at'])})")


def cmd_stats(args: argparse.Namespace) -> int:
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
