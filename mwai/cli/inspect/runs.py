"""``mwai runs`` and ``mwai show``: runs listed, one run with its event timeline.

Durations are the three of mwai.model.run_times: WAIT (queue wait, created ->
started), RUN (run time, started -> finished) and TOTAL (created -> finished).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from mwai.cli.common import (
    colour,
    format_duration,
    json_or_text,
    local_time,
    one_line,
    open_store,
    ops_settings,
    parse_duration,
    parse_run_id,
    print_json,
    print_json_line,
    run_async,
    run_row,
    terminal_width,
    with_iso,
)
from mwai.errors import EXIT_OK, UsageError
from mwai.model import FINISHED
from mwai.queue.store import Store
from mwai.runner.verify import report

STATUS_COLOURS = {"failed": "red", "completed": "green", "running": "yellow",
                  "cancelled": "dim", "queued": "bold"}


def status_text(status: str, width: int = 10) -> str:
    """A status padded to ``width``, coloured on a terminal."""
    return colour(f"{status:<{width}}", STATUS_COLOURS.get(status, "bold"))


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


# The runs table's columns: title, width, right-aligned, the cell. The last error
# takes what is left of the terminal's width.
_Column = tuple[str, int, bool, Callable[[Mapping[str, Any]], str]]
RUN_COLUMNS: tuple[_Column, ...] = (
    ("ID", 7, True, lambda r: str(r["id"])),
    ("ISSUE", 14, False, lambda r: str(r["issue_key"])),
    ("STATUS", 10, False, lambda r: str(r["status"])),
    ("TRIES", 5, True, lambda r: str(r["attempts"])),
    ("CREATED", 23, False, lambda r: local_time(r["created_at"])),
    ("WAIT", 8, True, lambda r: format_duration(r["queue_wait_s"])),
    ("RUN", 8, True, lambda r: format_duration(r["run_time_s"])),
    ("TOTAL", 8, True, lambda r: format_duration(r["total_s"])),
)
# On a narrow terminal these columns go first, in this order.
DROPPED_FIRST = ("CREATED", "TRIES", "WAIT", "RUN")
MIN_ERROR_WIDTH = 20


def fit(line: str, width: int) -> str:
    """A line cut to the terminal's width (an ellipsis shows the cut)."""
    return line if len(line) <= width else line[: max(1, width - 1)] + "…"


def _columns_for(width: int) -> list[_Column]:
    columns = list(RUN_COLUMNS)
    for title in DROPPED_FIRST:
        if sum(c[1] + 1 for c in columns) + 2 + MIN_ERROR_WIDTH <= width:
            break
        columns = [c for c in columns if c[0] != title]
    return columns


def _cells(values: Sequence[str], columns: Sequence[_Column]) -> str:
    return " ".join(f"{v:>{c[1]}}" if c[2] else f"{v:<{c[1]}}"
                    for v, c in zip(values, columns, strict=True)) + "  "


def runs_table(runs: Sequence[Mapping[str, Any]], width: int) -> list[str]:
    """The runs table with its header row, fitted to ``width``: on a narrow terminal
    the least needed columns go, and the last error fills what is left."""
    columns = _columns_for(width)
    header = _cells([c[0] for c in columns], columns)
    error_width = max(10, width - len(header))
    lines = [colour(fit(header + "LAST ERROR", width), "bold")]
    for run in runs:
        row = _cells([c[3](run) for c in columns], columns)
        lines.append(fit(row + one_line(run["last_error"], error_width), width))
    return lines


def cmd_runs(args: argparse.Namespace) -> int:
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
            print("\n".join(runs_table(runs, terminal_width())))
        return EXIT_OK

    return run_async(main())


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
    times = run_row(run, now)
    fields: list[tuple[str, Any]] = [
        ("issue", run["issue_key"]),
        ("status", status_text(run["status"], 0)
         + (" (cancel requested)" if run.get("cancel_requested")
            and run["status"] == "running" else "")),
        ("attempts", run["attempts"]),
        ("action", run.get("action")),
        ("created", local_time(run["created_at"])),
        ("started", local_time(run.get("started_at")) if run.get("started_at") else None),
        ("finished", local_time(run.get("finished_at")) if run.get("finished_at") else None),
        ("updated", local_time(run["updated_at"])),
        ("queue wait", format_duration(times["queue_wait_s"])),
        ("run time", format_duration(times["run_time_s"])),
        ("total", format_duration(times["total_s"])),
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
    return {"run": run_row(run, now), "events": [with_iso(event) for event in events]}


async def follow_events(store: Store, run_id: int, after_id: int, poll_s: float,
                        print_new: Any) -> dict[str, Any]:
    """Poll until the run is finished, handing each new event to ``print_new``;
    returns the final run."""
    while True:
        run = await store.get_run(run_id)
        for event in await store.events(run_id, after_id):
            print_new(event)
            after_id = int(event["id"])
        if run["status"] in FINISHED:
            return run
        await asyncio.sleep(poll_s)


def ndjson_event(event: Mapping[str, Any]) -> None:
    print_json_line({"kind": "event", "event": with_iso(event)})


def cmd_show(args: argparse.Namespace) -> int:
    run_id = parse_run_id(args.run_id)
    settings = ops_settings(args)
    # --follow --json streams NDJSON: the run, each event as it comes, the final run.
    stream = args.follow and args.json

    async def main() -> int:
        async with open_store(settings, readonly=True) as store:
            run = await store.get_run(run_id)
            events = await store.events(run_id)
            if stream:
                print_json_line({"kind": "run", "run": run_row(run, time.time())})
                for event in events:
                    ndjson_event(event)
            elif not args.json:
                print_run(run, time.time())
                for event in events:
                    print_event(event)
                print_checks(events)
            if args.follow and run["status"] not in FINISHED:
                last_id = int(events[-1]["id"]) if events else 0
                run = await follow_events(store, run_id, last_id, 0.5,
                                          ndjson_event if stream else print_event)
                if stream:
                    print_json_line({"kind": "run", "run": run_row(run, time.time())})
                elif not args.json:
                    print(f"Run {run_id} {run['status']}"
                          + (f": {run['last_error']}" if run.get("last_error") and
                             run["status"] != "completed" else ""))
            if args.json and not stream:
                print_json(run_document(run, await store.events(run_id), time.time()))
        return EXIT_OK

    try:
        return run_async(main())
    except KeyboardInterrupt:
        return EXIT_OK
