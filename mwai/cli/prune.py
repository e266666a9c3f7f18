"""``mwai prune``: delete old finished runs and their events, in short batches.

Safe while ``mwai serve`` runs: each batch is one short write transaction and the
write lock stays free between batches. Progress is shown on a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from mwai import telemetry
from mwai.cli.common import (
    Progress,
    database_bytes,
    format_bytes,
    iso_utc,
    local_time,
    on_terminal,
    open_store,
    ops_settings,
    parse_duration,
    print_json,
    run_async,
    with_iso,
)
from mwai.cli.parser import add_ops_command, arg, count, duration, flag
from mwai.errors import EXIT_OK, StoreUnavailable, UsageError
from mwai.queue.store import Store

# How long one delete transaction may hold the write lock: webhooks that arrive
# meanwhile wait for it, so it bounds their latency during a prune.
PRUNE_TARGET_S = 0.02


async def prune(store: Store, before: float, batch_size: int, archive: Path | None,
                pause_min_s: float = 0.05, progress: Progress | None = None
                ) -> tuple[int, int]:
    """Delete finished runs updated before ``before`` and their events, batch by batch.

    Each batch is one short write transaction: the batch size adapts (up to
    ``batch_size``) so that a transaction takes about PRUNE_TARGET_S, and between
    batches the write lock stays free for at least as long, so a live
    service keeps acknowledging webhooks (its writes wait at most one batch,
    well within MWAI_DB_BUSY_TIMEOUT_MS). With ``archive`` (a file open for
    appending), the batch is appended (one JSON line per run, with its events)
    and flushed to disk before it is deleted.
    """
    runs_deleted = events_deleted = 0
    after_id = 0
    size = min(batch_size, 100)
    handle = open_archive(archive)
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
            if progress is not None:
                progress.advance(runs)
            if took_s > PRUNE_TARGET_S * 1.25:
                size = max(1, int(size * PRUNE_TARGET_S / took_s))
            elif took_s < PRUNE_TARGET_S * 0.5 and len(ids) == size:
                size = min(batch_size, size * 2)
            await asyncio.sleep(max(pause_min_s, took_s))
    finally:
        if handle is not None:
            handle.close()
        if progress is not None:
            progress.close()


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


async def _archive_batch(store: Store, ids: list[int], handle: BinaryIO) -> None:
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


def open_archive(archive: Path | None) -> BinaryIO | None:
    """The archive open for appending (None when there is none); a file that cannot
    be written is bad input, said before anything is deleted."""
    if archive is None:
        return None
    try:
        return archive.open("ab")
    except OSError as exc:
        raise UsageError(f"--archive {archive}: cannot write it ({exc.strerror}); choose a "
                         "file you may write") from None


def _cmd_prune(args: argparse.Namespace) -> int:
    older_than_s = parse_duration(args.older_than, "--older-than")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    archive = Path(args.archive) if args.archive else None
    if archive is not None and not archive.parent.is_dir():
        raise UsageError(f"--archive {archive}: directory {archive.parent} does not exist")
    if archive is not None and archive.is_dir():
        raise UsageError(f"--archive {archive} is a directory: name a file in it, e.g. "
                         f"{archive / 'runs.jsonl'}")
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
                total = (await store.prune_counts(before)).runs if on_terminal() else None
                runs_deleted, events_deleted = await prune(
                    store, before, args.batch_size, archive,
                    progress=Progress("pruning runs", total))
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
