"""`mwai stats` computes the durations in SQL over every run of the window; the views
compute them per run with mwai.model.run_times. The two must agree, for runs in
every state (issue 19, point 7: queue wait, run time and total defined once)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable

import pytest

from mwai.model import run_times
from mwai.queue import clock
from mwai.queue.store import Store
from mwai.settings import Settings

T0 = 1_800_000_000.0
NOW = T0 + 1000.0


async def test_stats_sql_agrees_with_run_times_for_every_state(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    at: list[float] = [T0]
    monkeypatch.setattr(clock, "now_s", lambda: at[0])

    def step(seconds: float) -> None:
        at[0] += seconds

    store = Store(settings.db, synchronous="OFF")
    await store.open()
    try:
        await store.enqueue("DONE-1", "{}")             # waits 5, runs 20: completed
        step(5)
        done = await store.claim("h:1:a/w1", 60)
        step(20)
        assert done is not None and await store.complete(done.id, done.worker)
        await store.enqueue("FAIL-1", "{}")             # waits 7, runs 3: failed
        step(7)
        failed = await store.claim("h:1:a/w1", 60)
        step(3)
        assert failed is not None and await store.fail(failed.id, failed.worker, "boom")
        never = await store.enqueue("GONE-1", "{}")     # cancelled before it started
        step(11)
        await store.cancel(never.run_id, by="test")
        await store.enqueue("RUN-1", "{}")              # still running at NOW
        step(2)
        assert await store.claim("h:1:a/w2", 10_000) is not None
        await store.enqueue("WAIT-1", "{}")             # still queued at NOW
        await store.enqueue("WAIT-2", "{}")
        step(13)
        runs = [await store.get_run(run.id) for run in await store.recent_runs(0.0, 100)]
        stats = {row.status: row for row in await store.status_stats(0.0, NOW)}
    finally:
        await store.close()

    by_status: dict[str, list[tuple[float | None, float | None, float]]] = defaultdict(list)
    for run in runs:
        times = run_times(run["created_at"], run["started_at"], run["finished_at"], NOW)
        by_status[run["status"]].append((times.queue_wait_s, times.run_time_s, times.total_s))
    assert set(stats) == set(by_status) == {"completed", "failed", "cancelled", "running",
                                            "queued"}

    def agg(fn: Callable[[list[float]], float], status: str, index: int) -> float | None:
        values = [v[index] for v in by_status[status] if v[index] is not None]
        return round(fn(values), 3) if values else None

    for status, row in stats.items():
        assert row.count == len(by_status[status])
        for index, name in enumerate(("queue_wait_s", "run_time_s", "total_s")):
            for fn, prefix in ((statistics.fmean, "avg"), (max, "max")):
                got = getattr(row, f"{prefix}_{name}")
                assert (None if got is None else round(got, 3)) == agg(fn, status, index), \
                    (status, prefix, name)
    # The known cases, by hand.
    assert by_status["completed"] == [(5.0, 20.0, 25.0)]
    assert by_status["failed"] == [(7.0, 3.0, 10.0)]
    assert by_status["cancelled"] == [(None, None, 11.0)]
