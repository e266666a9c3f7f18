"""Operator actions: ``mwai requeue | cancel | unlock | pause | resume``.

Short write transactions that are safe while ``mwai serve`` runs. ``requeue``
and ``cancel`` act on one run, or on many (``--status``/``--since``/``--issue``,
``--issue``) with ``--dry-run`` first; every action records who did it
(``--by``, default the login name) in the run's events.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from mwai.cli.common import (
    Progress,
    format_duration,
    fresh_after_s,
    local_time,
    open_store,
    operator_name,
    ops_settings,
    parse_duration,
    parse_run_id,
    print_json,
    process_of,
    run_async,
    run_row,
    with_iso,
)
from mwai.cli.parser import (
    BY,
    DRY_RUN,
    OPTIONAL_RUN_ID,
    add_ops_command,
    arg,
    duration,
    flag,
)
from mwai.errors import (
    EXIT_OK,
    EXIT_PROBLEM,
    UsageError,
)
from mwai.model import RunRow
from mwai.queue.health import process_liveness
from mwai.queue.store import Store
from mwai.settings import Settings

# ------------------------------------------------------------------ requeue / cancel

# Runs per transaction of a bulk action: short, so a live service keeps writing.
BULK_BATCH = 100
REQUEUABLE = ("failed", "cancelled", "completed")


def _no_filters_with_run_id(args: argparse.Namespace, filters: tuple[str, ...]) -> None:
    given = [f"--{name.replace('_', '-')}" for name in filters if getattr(args, name, None)]
    if given:
        raise UsageError(f"give either RUN_ID or {', '.join(given)}, not both")


def _cmd_requeue(args: argparse.Namespace) -> int:
    if args.run_id is None:
        return _bulk_requeue(args)
    _no_filters_with_run_id(args, ("status", "since", "issue", "dry_run"))
    run_id = parse_run_id(args.run_id)
    by = operator_name(args)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=False) as store:
            await store.requeue(run_id, by=by)
            run = await store.get_run(run_id)
        if args.json:
            print_json({"ok": True, "by": by, "run": run_row(run, time.time())})
        else:
            print(f"run {run_id} ({run['issue_key']}) is queued again (by {by}); a running "
                  "`mwai serve` picks it up within MWAI_POLL_S")
        return EXIT_OK

    return run_async(main())


async def apply_in_batches(runs: list[RunRow], action: Any, label: str, by: str
                           ) -> list[tuple[int, str | None]]:
    """``action`` (Store.requeue_many / cancel_many) on the runs, BULK_BATCH per
    transaction, with progress on a terminal."""
    progress = Progress(label, len(runs))
    outcomes: list[tuple[int, str | None]] = []
    try:
        for start in range(0, len(runs), BULK_BATCH):
            batch = [run.id for run in runs[start:start + BULK_BATCH]]
            outcomes += await action(batch, by=by)
            progress.advance(len(batch))
    finally:
        progress.close()
    return outcomes


def _report_bulk(args: argparse.Namespace, verb: str, by: str, runs: list[RunRow],
                 outcomes: list[tuple[int, str | None]]) -> int:
    now = time.time()
    refused = {run_id: why for run_id, why in outcomes if why is not None}
    done = [run_id for run_id, why in outcomes if why is None]
    if args.json:
        print_json({"dry_run": args.dry_run, "by": by, "matched": len(runs),
                    verb: done, "refused": [{"id": run_id, "reason": why}
                                            for run_id, why in refused.items()],
                    "runs": [run_row(run, now) for run in runs]})
        return EXIT_OK
    if not runs:
        print("no runs match")
        return EXIT_OK
    for run in runs:
        outcome = ("would be " + verb if args.dry_run else
                   f"refused: {refused[run.id]}" if run.id in refused else verb)
        print(f"run {run.id} ({run.issue_key}, {run.status}, updated "
              f"{local_time(run.updated_at)}): {outcome}")
    if args.dry_run:
        print(f"{len(runs)} run(s) would be {verb} (dry run: nothing changed)")
    else:
        print(f"{len(done)} of {len(runs)} run(s) {verb} by {by}"
              + (f"; {len(refused)} refused" if refused else ""))
    return EXIT_OK


def _bulk_requeue(args: argparse.Namespace) -> int:
    if not args.status:
        raise UsageError("give a RUN_ID, or --status failed|cancelled|completed (with --since "
                         "DURATION and --issue KEY to narrow it) to requeue many runs")
    if args.status not in REQUEUABLE:
        raise UsageError(f"--status {args.status}: only finished runs can be requeued "
                         f"({', '.join(REQUEUABLE)})")
    since = time.time() - parse_duration(args.since, "--since") if args.since else 0.0
    by = operator_name(args)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=args.dry_run) as store:
            if args.issue:
                found = await store.runs_of_issue(args.issue, args.status, since, -1)
            else:
                found = await store.runs_by_status(args.status, since, -1)
            # One run per issue, its latest: the issue needs one queued run, not several.
            latest: dict[str, RunRow] = {}
            for run in sorted(found, key=lambda r: r.id):
                latest[run.issue_key] = run
            runs = sorted(latest.values(), key=lambda r: r.id)
            outcomes = [] if args.dry_run else await apply_in_batches(
                runs, store.requeue_many, "requeueing", by)
        return _report_bulk(args, "requeued", by, runs, outcomes)

    return run_async(main())


async def cancel_run(store: Store, run_id: int, wait_s: float, by: str,
                     poll_s: float = 0.25) -> tuple[str, dict[str, Any]]:
    """Cancel; for a running run, wait for its worker to stop it. Returns (outcome, run)."""
    outcome = await store.cancel(run_id, by=by)
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


def _bulk_cancel(args: argparse.Namespace) -> int:
    """`mwai cancel --issue KEY`: every queued and running run of the issue."""
    by = operator_name(args)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=args.dry_run) as store:
            found = await store.runs_of_issue(args.issue, None, 0.0, -1)
            runs = sorted((run for run in found if run.status in ("queued", "running")),
                          key=lambda r: r.id)
            outcomes = [] if args.dry_run else await apply_in_batches(
                runs, store.cancel_many, "cancelling", by)
        return _report_bulk(args, "cancelled", by, runs, outcomes)

    return run_async(main())


def _cmd_cancel(args: argparse.Namespace) -> int:
    if args.run_id is None:
        if not args.issue:
            raise UsageError("give a RUN_ID, or --issue KEY to cancel every queued and "
                             "running run of an issue")
        return _bulk_cancel(args)
    _no_filters_with_run_id(args, ("issue", "dry_run"))
    run_id = parse_run_id(args.run_id)
    wait_s = parse_duration(args.wait, "--wait") if args.wait not in ("0", "") else 0.0
    by = operator_name(args)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=False) as store:
            outcome, run = await cancel_run(store, run_id, wait_s, by)
        ok = outcome == "cancelled" or (outcome == "cancelling" and wait_s == 0)
        if args.json:
            print_json({"ok": ok, "outcome": outcome, "by": by,
                        "run": run_row(run, time.time())})
        elif outcome == "cancelled":
            print(f"run {run_id} ({run['issue_key']}) cancelled by {by}")
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
    for run in await store.locked_runs(limit=100_000):
        process_id = process_of(run.locked_by)
        if process_id not in processes:
            processes[process_id] = process_liveness(await store.process(process_id),
                                                     fresh_after, now)
        is_alive, why = processes[process_id]
        lock_age = now - (run.locked_at or 0)
        if is_alive or lock_age < older_than_s:
            alive.append({**with_iso(run), "process_id": process_id, "reason": why
                          if is_alive else f"locked only {format_duration(lock_age)} ago"})
        else:
            stale.append(StaleLock(with_iso(run), process_id, why))
    return stale, alive


def _cmd_unlock(args: argparse.Namespace) -> int:
    older_than_s = parse_duration(args.older_than, "--older-than")
    by = operator_name(args)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=args.dry_run) as store:
            stale, kept = await find_locks(store, settings, older_than_s)
            released = []
            if stale and not args.dry_run:
                locks = [(lock.run["id"], lock.run["locked_by"]) for lock in stale]
                released = await store.release_stale_locks(
                    locks, fresh_after_s(settings, time.time()), settings.max_attempts, by=by)
        outcomes = {item.run_id: item.outcome for item in released}
        if args.json:
            print_json({
                "dry_run": args.dry_run,
                "by": by,
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


# ------------------------------------------------------------------ pause / resume


def _cmd_pause(args: argparse.Namespace) -> int:
    by = operator_name(args)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=False) as store:
            await store.pause(by=by, reason=args.reason or "")
            state = await store.paused()
        if args.json:
            print_json({"paused": True, **(state or {})})
        else:
            print(f"claims paused by {by}: no new run starts in any `mwai serve` on this "
                  "database; running runs go on and webhooks are still queued. "
                  "`mwai resume` starts them again.")
        return EXIT_OK

    return run_async(main())


def _cmd_resume(args: argparse.Namespace) -> int:
    by = operator_name(args)
    settings = ops_settings(args)

    async def main() -> int:
        async with open_store(settings, readonly=False) as store:
            was_paused = await store.resume(by=by)
        if args.json:
            print_json({"paused": False, "was_paused": was_paused, "by": by})
        elif was_paused:
            print(f"claims resumed by {by}: queued runs start within MWAI_POLL_S")
        else:
            print("claims were not paused: nothing to resume")
        return EXIT_OK

    return run_async(main())


# ------------------------------------------------------------------ registration


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_ops_command(
        subparsers, common, "requeue", "queue finished runs again: one, or many with --status",
        "Put a finished run back in the queue with its attempts reset. Refused for a queued or "
        "running run, or when its issue already has a queued run.\n"
        "Many at once: --status failed [--since 1h] [--issue KEY] requeues the latest such run "
        "of each issue; --dry-run lists them first.\n"
        "Examples: mwai requeue 42; mwai requeue --status failed --since 1h --dry-run",
        _cmd_requeue,
        OPTIONAL_RUN_ID,
        arg("--status", choices=REQUEUABLE, help="requeue every run with this status"),
        duration("--since", "with --status: only runs changed within DURATION (e.g. 1h)"),
        arg("--issue", metavar="KEY", help="with --status: only runs of this Jira issue"),
        DRY_RUN, BY)
    add_ops_command(
        subparsers, common, "cancel", "cancel a queued run or stop a running one; --issue: all",
        "A queued run is cancelled at once. For a running run the live service's worker is "
        "asked to stop it (it checks every 0.5 s); the command waits until the run is "
        "cancelled. Exit 1 if it is still running after --wait.\n"
        "Many at once: --issue KEY cancels every queued and running run of the issue "
        "(running ones are asked to stop; no wait); --dry-run lists them first.",
        _cmd_cancel,
        OPTIONAL_RUN_ID,
        arg("--issue", metavar="KEY", help="cancel every queued and running run of this issue"),
        duration("--wait", "how long to wait for a running run to stop (default 30s; 0: only "
                           "request it)", default="30s"),
        DRY_RUN, BY)
    add_ops_command(
        subparsers, common, "unlock", "list and release stale locks of dead workers",
        "List runs whose lock (locked_by) belongs to a process that is gone and release "
        "them: a running run goes back to the queue (or fails when its attempts are spent). "
        "A process of this host is gone as soon as its pid no longer exists (kill -9 included, "
        "whatever its last heartbeat); one of another host when its heartbeat is old; a "
        "stopped one always. A live process's lock is never touched.",
        _cmd_unlock,
        duration("--older-than", "only locks taken more than DURATION ago (default 10m)",
                 default="10m"),
        flag("--dry-run", "only list what would be released"), BY)
    add_ops_command(
        subparsers, common, "pause", "stop claims for maintenance (webhooks are still queued)",
        "No new run starts in any `mwai serve` using this database until `mwai resume`; "
        "running runs go on, webhooks are still acknowledged and queued. The state is kept "
        "in the database: every process sees it, a restart keeps it. /health/detailed, "
        "`mwai monitor` and `mwai health` show 'paused'.",
        _cmd_pause,
        arg("--reason", metavar="TEXT", help="why (shown by `mwai health`)"), BY)
    add_ops_command(
        subparsers, common, "resume", "let claims start again after `mwai pause`",
        "Queued runs start again within MWAI_POLL_S.",
        _cmd_resume,
        BY)
