"""Operator views: ``mwai runs | show | stats | monitor | health``.

They read through a read-only connection and never block the service: runs and
one run (runs.py), statistics (stats.py), the live monitor and the health
verdict (monitor.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from mwai.cli.inspect import monitor, runs, stats
from mwai.cli.inspect.monitor import monitor_snapshot
from mwai.cli.inspect.stats import error_pattern, group_errors
from mwai.cli.parser import RUN_ID, add_ops_command, arg, count, duration, flag
from mwai.model import STATUSES

__all__ = ["error_pattern", "group_errors", "monitor_snapshot", "register"]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_ops_command(
        subparsers, common, "runs", "list recent runs (all, failed, queued, per issue)",
        "List runs, latest activity first: id, issue, status, attempts, created (local time, "
        "its zone shown; --utc for UTC), queue wait (created -> started), run time (started "
        "-> finished), total (created -> finished) and last error.\n"
        "Examples: mwai runs; mwai runs --status failed; mwai runs --status queued; "
        "mwai runs --issue PROJ-12",
        runs.cmd_runs,
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
        runs.cmd_show,
        RUN_ID,
        arg("--follow", "-f", action="store_true",
            help="keep printing new events until the run is finished (with --json: one "
                 "JSON object per line, NDJSON: the run, each event, the final run)"))
    add_ops_command(
        subparsers, common, "stats",
        "durations by status, slowest runs, failure rate, error patterns",
        "Statistics of the runs created within a window, exact at any size: count, queue "
        "wait (created -> started), run time (started -> finished) and total (created -> "
        "finished) by status, slowest runs, failure rate, every failed run's error grouped "
        "(numbers and ids folded together), the queue and the age of its oldest run.",
        stats.cmd_stats,
        duration("--since", "window: runs created within DURATION (default 7d)", default="7d"),
        count("--top", 10, "how many slowest runs and error patterns (default 10)"))
    add_ops_command(
        subparsers, common, "monitor", "live terminal view of the queue, running runs and health",
        "A live view refreshed every 2 s (like monitor_worker.sh under watch): health (and "
        "'paused'), the queue, each `mwai serve` (alive by its pid on this host, else its "
        "heartbeat), running runs with their queue wait and run time, failures in the last "
        "hour, recent runs; fitted to the terminal's width. Ctrl-C exits.",
        monitor.cmd_monitor,
        duration("--interval", "refresh interval (default 2s)", default="2s"),
        count("--recent", 10, "recent runs shown (default 10)"),
        flag("--once", "print one snapshot and exit"))
    add_ops_command(
        subparsers, common, "health", "the service's health: healthy, degraded or unhealthy",
        "The same assessment as /health/detailed and `mwai monitor`, from the database: "
        "whether a `mwai serve` is alive (pid on this host, else heartbeat), claims paused, "
        "stuck runs, the age of the queue. Exit 0 when healthy, 1 otherwise.",
        monitor.cmd_health)
