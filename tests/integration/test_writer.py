"""Group commit against a real SQLite file: writes asked for together share one
transaction, one bad write fails alone, results reach the right callers."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mwai.errors import StoreError
from mwai.model import Event
from mwai.queue.store import Store
from tests.integration.helpers import db_rows, wait_for


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store(str(tmp_path / "mwai.sqlite3")).open()
    yield opened
    await opened.close()


async def test_writes_asked_for_together_share_one_commit(store: Store) -> None:
    """The writer's promise: everything asked for while it is busy goes into its
    next transaction. Held busy while 100 writes are asked for, it commits them in
    exactly one batch."""
    writer = store._writer
    assert writer is not None
    busy, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        busy.set()
        assert release.wait(timeout=30), "the test never let the writer go"

    holding = asyncio.ensure_future(store.on_writer(hold))
    try:
        assert await asyncio.to_thread(busy.wait, 10), "the writer never ran the hold"
        batches_before = writer.batches_committed
        pending = [asyncio.ensure_future(store.enqueue(f"GC-{n}", "{}", source="test"))
                   for n in range(1, 101)]
        await asyncio.sleep(0)  # one loop step: each task asks for its write
        assert not any(task.done() for task in pending)
    finally:
        release.set()
    await holding
    results = await asyncio.gather(*pending)
    assert writer.batches_committed - batches_before == 1
    assert [r.run_id for r in results] == list(range(1, 101))  # callers' order, each its own
    assert db_rows(store.path, "SELECT count(*) FROM runs")[0][0] == 100


async def test_a_bad_write_fails_alone_and_its_batch_neighbours_commit(store: Store) -> None:
    first = await store.enqueue("GC-1", "{}")
    outcomes = await asyncio.gather(
        store.enqueue("GC-2", "{}"),
        store.set_run_result(first.run_id, colour="blue"),  # not a result field
        store.enqueue("GC-3", "{}"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ValueError) and "colour" in str(outcomes[1])
    assert [type(o).__name__ for o in (outcomes[0], outcomes[2])] == ["EnqueueResult"] * 2
    keys = [k for (k,) in db_rows(store.path, "SELECT issue_key FROM runs ORDER BY id")]
    assert keys == ["GC-1", "GC-2", "GC-3"]
    # The replayed batch kept each good write's journal lines, and only those.
    received = db_rows(store.path, "SELECT count(*) FROM events WHERE message = 'Run enqueued'")
    assert received[0][0] == 3


async def test_events_are_stored_in_order_with_their_fields(store: Store) -> None:
    run = await store.enqueue("GC-1", "{}")
    meta = {"quote": 'say "hi"', "unicode": "é ✓", "nested": {"n": [1, 2.5, None]}}
    await store.add_events([Event(run.run_id, f"step {n}", "warning", {**meta, "n": n},
                                  1_800_000_000.123456 + n) for n in range(5)])
    rows = await store.events(run.run_id)
    steps = [r for r in rows if r["message"].startswith("step")]
    assert [r["message"] for r in steps] == [f"step {n}" for n in range(5)]
    assert [r["ts"] for r in steps] == [1_800_000_000.123456 + n for n in range(5)]
    assert {r["level"] for r in steps} == {"warning"}
    assert steps[0]["meta_json"] == ('{"quote":"say \\"hi\\"","unicode":"é ✓",'
                                     '"nested":{"n":[1,2.5,null]},"n":0}')


def file_pages(path: str) -> tuple[int, int]:
    """(free pages, size of the database file in bytes) as another connection sees them."""
    return (db_rows(path, "PRAGMA freelist_count")[0][0], os.path.getsize(path))


async def test_vacuum_gives_the_free_pages_back_outside_its_neighbours_transactions(
        store: Store) -> None:
    await asyncio.gather(*(store.enqueue(f"OLD-{n}", "x" * 4000) for n in range(200)))
    await store.on_writer(lambda conn: conn.executescript(
        "DELETE FROM events; DELETE FROM runs;"))
    await store.on_writer(lambda conn: conn.execute(
        "PRAGMA wal_checkpoint(TRUNCATE)").fetchall())  # the file holds every page now
    free_before, size_before = file_pages(store.path)
    assert free_before > 200, "the deleted runs left free pages"

    outcomes = await asyncio.gather(store.enqueue("GC-1", "{}"), store.vacuum(),
                                    store.enqueue("GC-2", "{}"))
    assert outcomes[1] is None
    free_after, size_after = file_pages(store.path)
    assert free_after == 0
    # The file lost (at least half of) the free pages' bytes: the space went back.
    page_size = db_rows(store.path, "PRAGMA page_size")[0][0]
    assert size_after < size_before - free_before * page_size // 2, (size_before, size_after)
    assert db_rows(store.path, "SELECT issue_key FROM runs ORDER BY id") == [("GC-1",),
                                                                              ("GC-2",)]


async def test_writes_queued_before_close_are_committed_and_later_ones_refused(
        tmp_path: Path) -> None:
    path = str(tmp_path / "mwai.sqlite3")
    store = await Store(path).open()
    pending = [asyncio.ensure_future(store.enqueue(f"GC-{n}", "{}")) for n in range(1, 21)]
    await asyncio.sleep(0)  # the writes are asked for, not yet committed
    await store.close()
    assert all(task.done() and not task.exception() for task in pending)
    assert db_rows(path, "SELECT count(*) FROM runs")[0][0] == 20
    with pytest.raises(StoreError, match="not open for writing"):
        await store.enqueue("GC-99", "{}")


async def test_the_wal_is_copied_into_the_database_file_in_the_background(
        store: Store, tmp_path: Path) -> None:
    checkpointer = store._checkpointer
    assert checkpointer is not None
    before = checkpointer.checkpoints
    await asyncio.gather(*(store.enqueue(f"GC-{n}", "{}") for n in range(1, 201)))
    await wait_for(lambda: checkpointer.checkpoints > before, timeout_s=10,
                   what="a background checkpoint")
    # The main file alone (no -wal beside it) already holds every committed run.
    alone = tmp_path / "copy.sqlite3"
    shutil.copyfile(store.path, alone)
    assert db_rows(alone, "SELECT count(*) FROM runs")[0][0] == 200
