"""/health/detailed, `mwai monitor` and `mwai alert` read one database the same way.

A real service (its worker pool alive) shares the database with a worker that
died on another host holding a run: the run is stuck, and the issue's next run
waits behind it longer than the queue may. The three views are taken at one
instant of the store's clock and must agree on the verdict and the numbers.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import mwai.queue.clock
from mwai.cli.alert import collect_alert
from mwai.cli.inspect import monitor_snapshot
from mwai.queue.store import Store
from mwai.server.app import POOL_KEY, create_app
from mwai.settings import Settings
from tests.integration.helpers import GateProcessor, wait_for

HOUR_S = 3600.0
DEAD_PROCESS = "other-host:4242:dead01"  # another host: this service cannot see it is gone


@contextlib.contextmanager
def clock_at(monkeypatch: pytest.MonkeyPatch, epoch_s: float) -> Iterator[None]:
    monkeypatch.setattr(mwai.queue.clock, "now_s", lambda: epoch_s)
    try:
        yield
    finally:
        monkeypatch.setattr(mwai.queue.clock, "now_s", time.time)


@contextlib.asynccontextmanager
async def opened(settings: Settings, readonly: bool = False) -> AsyncIterator[Store]:
    store = Store(settings.db, synchronous="OFF", readonly=readonly, create=not readonly)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def record_dead_process(db: str, heartbeat_at: float) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("INSERT INTO processes (process_id, pid, hostname, started_at, "
                         "heartbeat_at) VALUES (?, 4242, 'other-host', ?, ?)",
                         (DEAD_PROCESS, heartbeat_at, heartbeat_at))
    finally:
        conn.close()


async def stuck_behind_a_dead_worker(settings: Settings, monkeypatch: pytest.MonkeyPatch
                                     ) -> tuple[int, int]:
    """Two hours ago a worker of another host claimed STUCK-1 and died; the issue's
    next trigger has waited since. Returns (stuck run id, queued run id)."""
    two_hours_ago = time.time() - 2 * HOUR_S
    async with opened(settings) as store:
        with clock_at(monkeypatch, two_hours_ago):
            await store.enqueue("STUCK-1", "{}")
            # A lease long enough that lease recovery leaves it to the operator.
            stuck = await store.claim(f"{DEAD_PROCESS}/w1", 10 * 24 * HOUR_S)
            assert stuck is not None
            queued = await store.enqueue("STUCK-1", "{}")
    record_dead_process(settings.db, two_hours_ago)
    return stuck.id, queued.run_id


async def three_views(client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
                      ) -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(HTTP status, /health/detailed, monitor snapshot, alert), at one store instant."""
    async with opened(settings, readonly=True) as reader:
        with clock_at(monkeypatch, time.time()):
            response = await client.get("/health/detailed")
            report = await response.json()
            snapshot = await monitor_snapshot(reader, settings, recent=5)
            alert = await collect_alert(reader, settings, window_s=HOUR_S, threshold=1)
    return response.status, report, snapshot, alert


async def test_a_stuck_run_of_a_dead_worker_and_an_old_queue_look_the_same_everywhere(
        aiohttp_client: Any, settings_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_factory(stuck_after_s=600.0, queue_age_alert_s=900.0)
    stuck_id, queued_id = await stuck_behind_a_dead_worker(settings, monkeypatch)
    gate = GateProcessor()
    client = await aiohttp_client(create_app(settings, processor=gate))
    pool = client.app[POOL_KEY]
    await wait_for(lambda: pool.alive == settings.workers, what="workers alive")

    status, report, snapshot, alert = await three_views(client, settings, monkeypatch)

    assert status == 200
    assert report["status"] == snapshot["status"] == "degraded"
    assert report["problems"] == snapshot["problems"]
    assert report["problems"][0] == "1 stuck run(s)"
    assert report["problems"][1].startswith("oldest queued run waits for 7")
    assert report["stuck_count"] == snapshot["stuck_count"] == alert["stuck_count"] == 1
    # One schema: stuck_runs is the same list of runs in all three.
    assert [run["id"] for run in alert["stuck_runs"]] == [stuck_id]
    assert [run["id"] for run in report["stuck_runs"]] == [stuck_id]
    assert [run["id"] for run in snapshot["stuck_runs"]] == [stuck_id]
    assert alert["stuck_runs"][0]["locked_by"] == f"{DEAD_PROCESS}/w1"
    assert report["queued"] == snapshot["queued"] == alert["queued"] == 1
    assert report["running"] == snapshot["running"] == 1
    assert report["oldest_queued_age_s"] == snapshot["oldest_queued_age_s"] == \
        alert["oldest_queued_age_s"]
    assert report["oldest_queued_age_s"] > settings.queue_age_alert_s
    # The alert fires on what the health calls degraded: the stuck run and the old queue.
    assert alert["firing"] is True
    assert alert["problems"] == 2 and alert["failed_count"] == 0
    # The dead worker is seen as dead; the service itself keeps the verdict at degraded.
    alive = {p["process_id"]: p["alive"] for p in snapshot["processes"]}
    assert alive[DEAD_PROCESS] is False
    assert alive[client.app[POOL_KEY].store.process_id] is True

    # The operator releases the dead worker's lock (`mwai unlock`): the queued run takes
    # the issue over and the service works on it. Everyone agrees it is healthy again.
    async with opened(settings) as store:
        released = await store.release_stale_locks([(stuck_id, f"{DEAD_PROCESS}/w1")],
                                                   fresh_after=time.time() - 60,
                                                   max_attempts=settings.max_attempts,
                                                   by="test")
    assert [(lost.run_id, lost.outcome) for lost in released] == [(stuck_id, "superseded")]
    await wait_for(lambda: queued_id in gate.started, what="the queued run to start")

    status, report, snapshot, alert = await three_views(client, settings, monkeypatch)

    assert status == 200
    assert report["status"] == snapshot["status"] == "healthy"
    assert report["problems"] == snapshot["problems"] == []
    assert report["stuck_count"] == snapshot["stuck_count"] == alert["stuck_count"] == 0
    assert report["queued"] == snapshot["queued"] == alert["queued"] == 0
    assert report["oldest_queued_age_s"] is snapshot["oldest_queued_age_s"] is None
    assert alert["oldest_queued_age_s"] is None
    assert alert["firing"] is False
    gate.gate.set()


async def test_a_stuck_run_is_one_that_has_not_moved_for_longer_than_the_limit(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    claimed_at = time.time() - HOUR_S
    async with opened(settings) as store:
        with clock_at(monkeypatch, claimed_at):
            await store.enqueue("EDGE-1", "{}")
            run = await store.claim(f"{socket.gethostname()}:1:edge/w1", 10 * HOUR_S)
            assert run is not None
        with clock_at(monkeypatch, claimed_at + 600.0):
            at_the_limit = await store.health_snapshot(600.0, list_stuck=10)
            past_the_limit = await store.health_snapshot(599.999, list_stuck=10)
    assert (at_the_limit.stuck_count, at_the_limit.stuck_runs) == (0, ())
    assert past_the_limit.stuck_count == 1
    assert [stuck.id for stuck in past_the_limit.stuck_runs] == [run.id]
    # Only listed when asked for: /health/detailed counts them, the alert lists them.
    async with opened(settings, readonly=True) as reader:
        with clock_at(monkeypatch, claimed_at + 600.0):
            counted = await reader.health_snapshot(599.999)
    assert (counted.stuck_count, counted.stuck_runs) == (1, ())
