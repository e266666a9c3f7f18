"""The worker pool against a real SQLite file: ordering, retries, cancel, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import orjson
import pytest

import mwai.queue.clock
from mwai.errors import PermanentError
from mwai.queue.processor import RunContext
from mwai.queue.store import Store
from mwai.queue.writes import MAX_LOST_ATTEMPTS
from mwai.server.app import POOL_KEY, STORE_KEY, create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import (
    GateProcessor,
    ScriptedProcessor,
    db_rows,
    transient,
    wait_for,
)


async def post(client: Any, issue_key: str) -> int:
    response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload(issue_key)),
                                 headers=secret_headers())
    assert response.status == 200
    return int((await response.json())["run_id"])


def status_of(settings: Any, run_id: int) -> str:
    return str(db_rows(settings.db, "SELECT status FROM runs WHERE id=?", (run_id,))[0][0])


def messages(settings: Any, run_id: int) -> list[str]:
    return [m for (m,) in db_rows(settings.db, "SELECT message FROM events WHERE run_id=? "
                                  "ORDER BY id", (run_id,))]


async def test_runs_of_one_issue_never_overlap_while_issues_run_in_parallel(
    aiohttp_client: Any, settings_factory: Any
) -> None:
    settings = settings_factory(workers=4)
    gate = GateProcessor()
    app = create_app(settings, processor=gate)
    client = await aiohttp_client(app)
    pool = app[POOL_KEY]
    first_a = await post(client, "SER-1")
    await wait_for(lambda: first_a in gate.started, what="SER-1 started")
    second_a = await post(client, "SER-1")  # queued behind the running one
    other = await post(client, "SER-2")
    await wait_for(lambda: other in gate.started, what="SER-2 started in parallel")
    # Each enqueue woke a parked worker; once both idle workers are parked again,
    # the one woken for SER-1's second run has tried to claim it and let it be.
    await wait_for(lambda: pool.busy == 2 and pool.idle == 2, what="idle workers parked again")
    assert second_a not in gate.started
    assert gate.max_running == 2
    gate.gate.set()
    await wait_for(lambda: {status_of(settings, r) for r in (first_a, second_a, other)}
                   == {"completed"}, what="all runs completed")
    intervals = sorted((b, e) for key, b, e in gate.intervals if key == "SER-1")
    assert intervals[0][1] <= intervals[1][0], "two runs of SER-1 overlapped"


async def test_transient_errors_are_retried_with_backoff_then_succeed(
    aiohttp_client: Any, settings_factory: Any
) -> None:
    settings = settings_factory(max_attempts=3)
    processor = ScriptedProcessor([transient("jira 503"), transient("jira 429", 0.1)])
    client = await aiohttp_client(create_app(settings, processor=processor))
    run_id = await post(client, "RET-1")
    await wait_for(lambda: status_of(settings, run_id) == "completed", what="completed")
    assert processor.attempts == [1, 2, 3]
    rows = db_rows(settings.db, "SELECT attempts, last_error FROM runs WHERE id=?", (run_id,))
    assert rows[0][0] == 3
    assert "jira 429" in rows[0][1]  # the last error stays visible after success
    retries = db_rows(settings.db, "SELECT meta_json FROM events WHERE run_id=? AND "
                      "message='Retry scheduled' ORDER BY id", (run_id,))
    delays = [orjson.loads(meta)["delay_s"] for (meta,) in retries]
    assert len(delays) == 2
    assert delays[1] >= 0.1  # Retry-After honoured


async def test_attempts_run_out_and_the_run_fails_with_last_error(
    aiohttp_client: Any, settings_factory: Any
) -> None:
    settings = settings_factory(max_attempts=2)
    processor = ScriptedProcessor([transient("jira 500 (1)"), transient("jira 500 (2)"),
                                   transient("never reached")])
    client = await aiohttp_client(create_app(settings, processor=processor))
    run_id = await post(client, "MAX-1")
    await wait_for(lambda: status_of(settings, run_id) == "failed", what="failed")
    (last_error,) = db_rows(settings.db, "SELECT last_error FROM runs WHERE id=?", (run_id,))[0]
    assert last_error == "gave up after 2 attempts: TransientError: jira 500 (2)"
    assert messages(settings, run_id)[-1] == "Run failed"
    assert processor.attempts == [1, 2]


async def test_permanent_error_fails_at_once(aiohttp_client: Any, settings: Any) -> None:
    processor = ScriptedProcessor([PermanentError("no transition to 'In Testing'")])
    client = await aiohttp_client(create_app(settings, processor=processor))
    run_id = await post(client, "PERM-1")
    await wait_for(lambda: status_of(settings, run_id) == "failed", what="failed")
    (last_error,) = db_rows(settings.db, "SELECT last_error FROM runs WHERE id=?", (run_id,))[0]
    assert last_error == "PermanentError: no transition to 'In Testing'"
    assert processor.attempts == [1]


async def test_cancel_queued_and_running_runs(aiohttp_client: Any, settings: Any) -> None:
    gate = GateProcessor()
    app = create_app(settings, processor=gate)
    client = await aiohttp_client(app)
    running = await post(client, "CAN-1")
    await wait_for(lambda: running in gate.started, what="started")
    queued = await post(client, "CAN-1")
    store = app[STORE_KEY]
    assert await store.cancel(queued, by="test") == "cancelled"
    assert status_of(settings, queued) == "cancelled"
    assert await store.cancel(running, by="test") == "cancelling"
    await wait_for(lambda: status_of(settings, running) == "cancelled", what="running cancelled")
    assert running not in gate.finished
    await wait_for(lambda: app[POOL_KEY].busy == 0, what="the worker let go of the run")
    assert "Run cancelled by test" in messages(settings, running)


async def test_expired_lease_of_a_dead_worker_is_recovered(aiohttp_client: Any,
                                                            settings: Any) -> None:
    # Another "process" claims a run and dies without heartbeating.
    dead = Store(settings.db)
    await dead.open()
    await dead.enqueue("LOST-1", "{}")
    claimed = await dead.claim(f"{dead.process_id}/w1", lease_s=0.3)
    assert claimed is not None
    await dead.close()
    client = await aiohttp_client(create_app(settings))
    assert client is not None
    await wait_for(lambda: status_of(settings, claimed.id) == "completed", what="recovered")
    meta = db_rows(settings.db, "SELECT meta_json FROM events WHERE run_id=? AND "
                   "message='Lease expired; worker lost'", (claimed.id,))
    assert orjson.loads(meta[0][0])["lost_worker"] == f"{dead.process_id}/w1"
    (attempts,) = db_rows(settings.db, "SELECT attempts FROM runs WHERE id=?", (claimed.id,))[0]
    assert attempts == 2


async def test_a_lost_worker_does_not_spend_the_runs_own_attempts(
        aiohttp_client: Any, settings_factory: Any) -> None:
    # Its one attempt was spent by a crash of mwai, not by the run: it runs again.
    settings = settings_factory(max_attempts=1)
    dead = Store(settings.db)
    await dead.open()
    await dead.enqueue("LOST-2", "{}")
    claimed = await dead.claim(f"{dead.process_id}/w1", lease_s=0.2)
    assert claimed is not None
    await dead.close()
    await aiohttp_client(create_app(settings))
    await wait_for(lambda: status_of(settings, claimed.id) == "completed", what="completed")
    rows = db_rows(settings.db, "SELECT attempts, lost_attempts FROM runs WHERE id=?",
                   (claimed.id,))
    assert rows == [(2, 1)]


async def test_a_run_whose_workers_keep_getting_lost_fails_in_the_end(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(max_attempts=3)
    dead = Store(settings.db)
    await dead.open()
    await dead.enqueue("LOST-3", "{}")
    claimed = await dead.claim(f"{dead.process_id}/w1", lease_s=0.2)
    assert claimed is not None
    await dead.close()
    with sqlite3.connect(settings.db) as conn:  # lost nine times before this one
        conn.execute("UPDATE runs SET lost_attempts = ?, attempts = attempts + ? WHERE id = ?",
                     (MAX_LOST_ATTEMPTS - 1, MAX_LOST_ATTEMPTS - 1, claimed.id))
    await aiohttp_client(create_app(settings))
    await wait_for(lambda: status_of(settings, claimed.id) == "failed", what="failed")
    (error,) = db_rows(settings.db, "SELECT last_error FROM runs WHERE id=?", (claimed.id,))[0]
    assert "was lost" in error and f"lost {MAX_LOST_ATTEMPTS} times" in error


async def test_shutdown_gives_back_running_runs_without_spending_an_attempt(
    aiohttp_client: Any, settings_factory: Any
) -> None:
    settings = settings_factory(shutdown_grace_s=0.2)
    gate = GateProcessor()  # never released: the grace period runs out
    app = create_app(settings, processor=gate)
    client = await aiohttp_client(app)
    run_id = await post(client, "SHUT-1")
    await wait_for(lambda: run_id in gate.started, what="started")
    await client.close()  # runs the app's cleanup: stop workers, close store
    rows = db_rows(settings.db, "SELECT status, attempts, locked_by FROM runs WHERE id=?",
                   (run_id,))
    assert rows == [("queued", 0, None)]
    assert "Run released" in messages(settings, run_id)


class Recorder:
    """Completes every run at once, except those of HOLD-* issues, held until released."""

    def __init__(self) -> None:
        self.done: list[int] = []
        self.release = asyncio.Event()

    async def process(self, ctx: RunContext) -> None:
        if ctx.run.issue_key.startswith("HOLD-"):
            await self.release.wait()
        self.done.append(ctx.run.id)

    async def close(self) -> None:
        return None


# The safety poll is an hour: a parked worker claims again within the test only if
# an enqueue wakes it (removing the notify of the webhook makes these tests time out).
NO_POLL_S = 3600.0


async def test_enqueue_wakes_parked_workers(aiohttp_client: Any, settings_factory: Any
                                            ) -> None:
    settings = settings_factory(poll_s=NO_POLL_S, workers=2)
    recorder = Recorder()
    app = create_app(settings, processor=recorder)
    client = await aiohttp_client(app)
    pool = app[POOL_KEY]
    # Both workers found the queue empty at start and parked: their claim at start
    # is behind them, so whatever they take now, an enqueue woke them up for.
    await wait_for(lambda: pool.idle == 2, what="both workers parked")
    run_ids = [await post(client, f"WAKE-{i}") for i in range(1, 6)]
    await wait_for(lambda: sorted(recorder.done) == run_ids, what="all runs picked up")
    await wait_for(lambda: pool.idle == 2, what="both workers parked again")
    assert {status_of(settings, r) for r in run_ids} == {"completed"}


async def test_enqueue_during_a_run_of_another_issue_wakes_the_idle_worker(
    aiohttp_client: Any, settings_factory: Any
) -> None:
    settings = settings_factory(poll_s=NO_POLL_S, workers=2)
    recorder = Recorder()
    app = create_app(settings, processor=recorder)
    client = await aiohttp_client(app)
    pool = app[POOL_KEY]
    held = await post(client, "HOLD-1")
    await wait_for(lambda: pool.busy == 1 and pool.idle == 1,
                   what="one worker on HOLD-1, the other parked")
    other = await post(client, "WAKE-9")
    await wait_for(lambda: recorder.done == [other], what="the parked worker ran WAKE-9")
    assert status_of(settings, held) == "running"
    recorder.release.set()
    await wait_for(lambda: status_of(settings, held) == "completed", what="HOLD-1 completed")


async def test_health_detailed_reports_queue_and_workers(aiohttp_client: Any,
                                                         settings: Any) -> None:
    gate = GateProcessor()
    client = await aiohttp_client(create_app(settings, processor=gate))
    await post(client, "HEA-1")
    await wait_for(lambda: len(gate.started) == 1, what="running")
    await post(client, "HEA-1")
    response = await client.get("/health/detailed")
    report = await response.json()
    assert response.status == 200
    assert report["status"] == "healthy"
    assert report["database"] == "healthy"
    assert (report["stuck_count"], report["stuck_runs"]) == (0, [])
    assert report["queued"] == 1 and report["running"] == 1
    assert report["workers"] == {"configured": 2, "alive": 2, "busy": 1}
    assert report["oldest_queued_age_s"] >= 0
    assert isinstance(report["timestamp"], float)
    assert await (await client.get("/health")).json() == {"status": "ok"}
    gate.gate.set()


async def test_health_detailed_is_degraded_with_stuck_runs(
        aiohttp_client: Any, settings_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_factory(stuck_after_s=1.0, heartbeat_s=60.0, lease_s=60.0)
    gate = GateProcessor()
    client = await aiohttp_client(create_app(settings, processor=gate))
    await post(client, "STK-1")
    await wait_for(lambda: len(gate.started) == 1, what="running")
    report = await (await client.get("/health/detailed")).json()
    assert (report["status"], report["stuck_count"]) == ("healthy", 0)
    # Two seconds pass on both of the queue's clocks (no heartbeat touches updated_at).
    passed_s = 2.0
    monkeypatch.setattr(mwai.queue.clock, "now_s", lambda: time.time() + passed_s)
    monkeypatch.setattr(mwai.queue.clock, "monotonic_s", lambda: time.monotonic() + passed_s)
    report = await (await client.get("/health/detailed")).json()
    assert report["status"] == "degraded"
    assert report["stuck_count"] == 1 and len(report["stuck_runs"]) == 1
    gate.gate.set()
