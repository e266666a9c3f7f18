"""``mwai monitor`` (a live view) and ``mwai health`` (the verdict, for scripts).

Both judge with the service's own assessment (mwai.queue.health): the workers
are the `mwai serve` processes alive by mwai.queue.health.process_liveness (on
this host the pid first, then the heartbeat), so a killed service is not alive.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any

from mwai.cli.common import (
    colour,
    format_duration,
    fresh_after_s,
    iso_utc,
    local_time,
    on_terminal,
    open_store,
    ops_settings,
    parse_duration,
    print_json,
    run_async,
    run_row,
    terminal_width,
    with_iso,
)
from mwai.cli.inspect.runs import fit, list_runs, runs_table
from mwai.errors import EXIT_OK, EXIT_PROBLEM
from mwai.queue.health import HealthRules, Workers, assess, process_liveness
from mwai.queue.store import Store
from mwai.settings import Settings

HEALTH_COLOURS = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}


async def monitor_snapshot(store: Store, settings: Settings, recent: int) -> dict[str, Any]:
    """The monitor's view; its health is the service's assessment (mwai.queue.health),
    with the `mwai serve` processes alive by pid (this host) then heartbeat as workers."""
    now = time.time()
    snapshot = await store.health_snapshot(settings.stuck_after_s, list_stuck=20)
    fresh_after = fresh_after_s(settings, now)
    processes = []
    for process in await store.processes(since=now - 3600):
        alive, why = process_liveness(process, fresh_after, now)
        processes.append({**with_iso(process), "alive": alive, "state": why,
                          "heartbeat_age_s": round(now - process.heartbeat_at, 3)})
    running = [{**run_row(run, now), "status": "running"}
               for run in await store.running_runs(limit=50)]
    failed_last_hour = await store.count_runs_since("failed", since=now - 3600)
    services = Workers(alive=sum(1 for p in processes if p["alive"]), configured=None,
                       kind="services")
    health = assess(snapshot, services, HealthRules.of(settings))
    paused = await store.paused()
    return {
        "status": health.status,
        "paused": health.paused,
        "paused_by": None if paused is None else paused.get("by"),
        "paused_reason": None if paused is None else paused.get("reason"),
        "problems": list(health.problems),
        "queued": health.queued,
        "running": health.running,
        "stuck_count": health.stuck_count,
        "stuck_runs": [with_iso(run) for run in health.stuck_runs],
        "oldest_queued_age_s": health.oldest_queued_age_s,
        "failed_last_hour": failed_last_hour,
        "processes": processes,
        "running_runs": running,
        "recent_runs": await list_runs(store, None, None, recent, 0.0),
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


def health_line(snap: Mapping[str, Any]) -> str:
    status = snap["status"]
    word = colour(status.upper(), HEALTH_COLOURS[status])
    paused = f", {colour('PAUSED', 'yellow')}" if snap["paused"] else ""
    return (f"health: {word}{paused}"
            + (f" ({'; '.join(snap['problems'])})" if snap["problems"] else ""))


def render_monitor(snap: Mapping[str, Any], width: int = 100) -> str:
    """The monitor's screen, every table line fitted to ``width`` with its header row."""
    lines = [f"mwai monitor — {local_time(snap['timestamp'])}   {health_line(snap)}"]
    lines.append(fit(f"queue: {snap['queued']} queued (oldest "
                     f"{format_duration(snap['oldest_queued_age_s'])})   running: "
                     f"{snap['running']}   stuck: {snap['stuck_count']}   failed last hour: "
                     f"{snap['failed_last_hour']}", width))
    services = [p for p in snap["processes"] if p["stopped_at"] is None]
    for proc in services:
        state = "alive" if proc["alive"] else colour("NOT ALIVE", "red")
        lines.append(f"service: {proc['hostname']} pid {proc['pid']} {state} "
                     f"({proc['state']}; heartbeat {format_duration(proc['heartbeat_age_s'])} "
                     "ago)")
    if not services:
        lines.append("service: none running")
    lines += ["", colour("Running:", "bold")]
    if not snap["running_runs"]:
        lines.append("  none")
    else:
        header = f"  {'ID':>7}  {'ISSUE':<14} {'WAITED':>8} {'RUNNING':>8}  {'TRY':>3}  WORKER"
        lines.append(colour(fit(header, width), "bold"))
    for run in snap["running_runs"]:
        line = (f"  {run['id']:>7}  {run['issue_key']:<14} "
                f"{format_duration(run['queue_wait_s']):>8} "
                f"{format_duration(run['run_time_s']):>8}  {run['attempts']:>3}  "
                f"{run['locked_by']}" + ("  (cancel requested)" if run["cancel_requested"]
                                         else ""))
        lines.append(fit(line, width))
    lines += ["", colour("Recent runs:", "bold")]
    if not snap["recent_runs"]:
        lines.append("  none")
    else:
        lines += runs_table(snap["recent_runs"], width)
    return "\n".join(lines)


def cmd_monitor(args: argparse.Namespace) -> int:
    interval_s = parse_duration(args.interval, "--interval")
    settings = ops_settings(args)
    clear = on_terminal() and not args.once and not args.json

    async def main() -> int:
        async with open_store(settings, readonly=True) as store:
            while True:
                snap = await monitor_snapshot(store, settings, args.recent)
                if args.json:
                    print_json(snap)
                else:
                    text = render_monitor(snap, terminal_width())
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


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when healthy, 1 when degraded or unhealthy (for scripts and timers)."""
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=True) as store:
            snap = await monitor_snapshot(store, settings, 0)
        if args.json:
            keys = ("status", "paused", "paused_by", "paused_reason", "problems", "queued",
                    "running", "stuck_count", "stuck_runs", "oldest_queued_age_s",
                    "processes", "timestamp", "timestamp_iso")
            print_json({key: snap[key] for key in keys})
        else:
            print(health_line(snap))
            if snap["paused"]:
                print(f"claims paused by {snap['paused_by']}"
                      + (f": {snap['paused_reason']}" if snap["paused_reason"] else "")
                      + " (`mwai resume` starts them again)")
        return EXIT_OK if snap["status"] == "healthy" else EXIT_PROBLEM

    return run_async(main())
