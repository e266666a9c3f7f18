"""The wall clock jumps an hour forwards or backwards while runs are running.

Leases are wall-clock times in the database (several processes share it), so a
jump must not make a healthy run look abandoned: its own process never recovers
it, and another live process waits one lease (measured on the monotonic clock)
after seeing a jump, long enough for every live owner to renew its leases.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import orjson
import pytest

import mwai.queue.clock
from mwai.server.app import create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import GateProcessor, db_rows, wait_for

HOUR_S = 3600.0


class WallClock:
    """mwai.queue.clock.now_s with an offset the test moves."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    wall = WallClock()
    monkeypatch.setattr(mwai.queue.clock, "now_s", wall)
    return wall


def fast(settings_factory: Any, **changes: Any) -> Any:
    # Recovery looks far more often than leases are renewed: the worst case for a jump.
    return settings_factory(lease_s=0.8, heartbeat_s=0.25, recovery_interval_s=0.05,
                            workers=1, **changes)


async def post(client: Any, issue_key: str) -> int:
    response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload(issue_key)),
                                 headers=secret_headers())
    assert response.status == 200
    return int((await response.json())["run_id"])


def run_row(settings: Any, run_id: int) -> tuple[str, int]:
    status, attempts = db_rows(settings.db, "SELECT status, attempts FROM runs WHERE id=?",
                               (run_id,))[0]
    return str(status), int(attempts)


def lease_events(settings: Any) -> list[str]:
    return [m for (m,) in db_rows(settings.db, "SELECT message FROM events WHERE message "
                                  "LIKE 'Lease expired%'")]


@pytest.mark.parametrize("jump_s", [HOUR_S, -HOUR_S], ids=["forward", "backward"])
async def test_a_jump_does_not_requeue_the_run_of_the_live_process(
        aiohttp_client: Any, settings_factory: Any, clock: WallClock, jump_s: float) -> None:
    settings = fast(settings_factory)
    gate = GateProcessor()
    client = await aiohttp_client(create_app(settings, processor=gate))
    run_id = await post(client, "CLK-1")
    await wait_for(lambda: gate.started == [run_id], what="run started")
    clock.offset_s = jump_s
    await asyncio.sleep(1.5 * settings.lease_s)  # many recovery rounds, a few heartbeats
    assert run_row(settings, run_id) == ("running", 1)
    clock.offset_s = 0.0  # and back again
    await asyncio.sleep(1.5 * settings.lease_s)
    assert run_row(settings, run_id) == ("running", 1)
    gate.gate.set()
    await wait_for(lambda: run_row(settings, run_id)[0] == "completed", what="completed")
    assert gate.started == [run_id] and run_row(settings, run_id) == ("completed", 1)
    assert lease_events(settings) == []
    later = await post(client, "CLK-2")  # the service goes on working normally
    await wait_for(lambda: run_row(settings, later)[0] == "completed", what="next run")


async def test_another_live_process_does_not_take_a_run_over_after_a_forward_jump(
        aiohttp_client: Any, settings_factory: Any, clock: WallClock) -> None:
    settings = fast(settings_factory)
    owner_gate, other_gate = GateProcessor(), GateProcessor()
    owner = await aiohttp_client(create_app(settings, processor=owner_gate))
    run_id = await post(owner, "CLK-3")
    await wait_for(lambda: owner_gate.started == [run_id], what="owner runs it")
    await aiohttp_client(create_app(settings, processor=other_gate))  # a second process
    await asyncio.sleep(0.3)
    clock.offset_s = HOUR_S
    await asyncio.sleep(2 * settings.lease_s)
    assert run_row(settings, run_id) == ("running", 1)
    assert other_gate.started == [] and lease_events(settings) == []
    owner_gate.gate.set()
    await wait_for(lambda: run_row(settings, run_id)[0] == "completed", what="completed")
    assert run_row(settings, run_id) == ("completed", 1)


async def test_a_really_lost_run_is_still_recovered_after_a_jump(
        aiohttp_client: Any, settings_factory: Any, clock: WallClock) -> None:
    settings = fast(settings_factory)
    gate = GateProcessor()
    gate.gate.set()
    client = await aiohttp_client(create_app(settings, processor=gate))
    run_id = await post(client, "CLK-4")
    await wait_for(lambda: run_row(settings, run_id)[0] == "completed", what="completed")
    # A run owned by a process that is gone without a trace (another host's view).
    lost_id = await post(client, "CLK-5")
    await wait_for(lambda: run_row(settings, lost_id)[0] == "completed", what="completed")
    conn = sqlite3.connect(settings.db, isolation_level=None)
    try:
        conn.execute("UPDATE runs SET status='running', locked_by='elsewhere:1:x/w1', "
                     "lease_expires_at=?, attempts=1 WHERE id=?", (time.time() + 1.0, lost_id))
    finally:
        conn.close()
    clock.offset_s = HOUR_S
    await wait_for(lambda: run_row(settings, lost_id) == ("completed", 2),
                   timeout_s=10 * settings.lease_s, what="lost run recovered and run again")
    assert lease_events(settings) == ["Lease expired; worker lost"]
