"""Operator actions: ``mwai requeue | cancel | unlock | prune``.

Short write transactions that are safe while ``mwai serve`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mwai import telemetry
from mwai.cli.common import (
    database_bytes,
    format_bytes,
    format_duration,
    fresh_after_s,
    iso_utc,
    local_time,
    open_store,
    ops_settings,
    parse_duration,
    parse_run_id,
    print_json,
    process_of,
    process_state,
    run_async,
    run_row,
    with_iso,
)
from mwai.cli.parser import RUN_ID, add_ops_command, arg, count, duration, flag
from mwai.errors import (
    EXIT_OK,
    EXIT_PROBLEM,
    StoreUnavailable,
    UsageError,
)
from mwai.queue.store import Store
from mwai.settings import Settings

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
    for run in await store.locked_runs(limit=100_000):
        process_id = process_of(run.locked_by)
        if process_id not in processes:
            processes[process_id] = process_state(await store.process(process_id),
                                                  fresh_after)
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
            ids = await store.prune_candidates(before, after_id, limit=size)
            if not ids:
                return runs_deleted, events_deleted
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
    events: dict[int, list[dict[str, Any]]] = {}
    for event in await store.events_of_runs(ids):
        events.setdefault(event.run_id, []).append(with_iso(event))
    for run in await store.runs_by_ids(ids):
        document = with_iso(run)
        document["events"] = events.get(int(run["id"]), [])
        handle.write(orjson.dumps(document) + b"\n")
    handle.flush()
    os.fsync(handle.fileno())


VACUUM_MIN_FREE = 0.10  # VACUUM rewrites the whole file: only worth it for real space


async def vacuum_if_worth_it(store: Store) -> str | None:
    """VACUUM when at least VACUUM_MIN_FREE of the file is free pages; else why not."""
    counts = await store.page_counts()
    free = counts.free_pages / max(1, counts.pages)
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
                counts = await store.prune_counts(before)
                result = {"dry_run": True, "runs": counts.runs, "events": counts.events}
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
    with telemetry.cron_job(settings, "prune"):
        return run_async(main())


# ------------------------------------------------------------------ registration


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_ops_command(
        subparsers, common, "requeue", "queue a finished (failed, cancelled, completed) run again",
        "Put a finished run back in the queue with its attempts reset. Refused for a queued or "
        "running run, or when its issue already has a queued run.",
        _cmd_requeue,
        RUN_ID)
    add_ops_command(
        subparsers, common, "cancel", "cancel a queued run, or stop a running one",
        "A queued run is cancelled at once. For a running run the live service's worker is "
        "asked to stop it (it checks every 0.5 s); the command waits until the run is "
        "cancelled. Exit 1 if it is still running after --wait.",
        _cmd_cancel,
        RUN_ID,
        duration("--wait", "how long to wait for a running run to stop (default 30s; 0: only "
                           "request it)", default="30s"))
    add_ops_command(
        subparsers, common, "unlock", "list and release stale locks of dead workers",
        "List runs whose lock (locked_by) belongs to a process that is gone (no fresh "
        "heartbeat, stopped, or its pid no longer exists) and release them: a running run goes "
        "back to the queue (or fails when its attempts are spent). A lock whose process "
        "heartbeat is fresh is never touched.",
        _cmd_unlock,
        duration("--older-than", "only locks taken more than DURATION ago (default 10m)",
                 default="10m"),
        flag("--dry-run", "only list what would be released"))
    add_ops_command(
        subparsers, common, "prune", "delete old finished runs and their events (30-day archive)",
        "Delete finished runs (completed, failed, cancelled) last updated before the cut-off, "
        "events first, in small batches of short transactions so a running service keeps "
        "answering webhooks. Queued and running runs are never deleted.",
        _cmd_prune,
        duration("--older-than", "cut-off age, e.g. 30d", required=True),
        arg("--archive", metavar="FILE.jsonl",
            help="first append each run, with its events, as one JSON line"),
        count("--batch-size", 1000, "at most N runs per transaction (default 1000; batches "
                                    "shrink so that one holds the write lock about 20 ms)"),
        flag("--vacuum", "then VACUUM to give the space back to the disk, when at least 10%% "
                         "of the file is free (VACUUM blocks writes while it runs: webhooks "
                         "get 503 + Retry-After meanwhile)"),
        flag("--dry-run", "only count what would be deleted"))
