"""The wall clock jumps an hour forwards or backwards while runs are running.

Leases are wall-clock times in the database (several processes share it), so a
jump must not make a healthy run look abandoned: its own process never recovers
it, and another live process waits one lease (measured on the monotonic clock)
after seeing a jump, long enough for every live owner to renew its leases.

Both clocks are injected (``mwai.queue.clock``): the test moves time on instead of
waiting for it, and waits for recovery rounds of the pool to pass, not for seconds.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson
import pytest

import mwai.queue.clock
from mwai.queue.pool import WorkerPool
from mwai.queue.store import Store
from mwai.server.app import POOL_KEY, create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import GateProcessor, db_rows, wait_for

HOUR_S = 3600.0
# Long enough that no pause ends and no lease runs out by itself while a test runs:
# only the test's Clocks.advance() moves time on.
LEASE_S = 60.0


class Clocks:
    """mwai.queue.clock's wall and monotonic clocks, with offsets the test moves."""

    def __init__(self) -> None:
        self.wall_offset_s = 0.0
        self.monotonic_offset_s = 0.0

    def now_s(self) -> float:
        return time.time() + self.wall_offset_s

    def monotonic_s(self) -> float:
        return time.monotonic() + self.monotonic_offset_s

    def jump(self, to_offset_s: float) -> None:
        """The wall clock is set (NTP step, an operator): the monotonic one goes on."""
        self.wall_offset_s = to_offset_s

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move on together."""
        self.wall_offset_s += seconds
        self.monotonic_offset_s += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clocks:
    clocks = Clocks()
    monkeypatch.setattr(mwai.queue.clock, "now_s", clocks.now_s)
    monkeypatch.setattr(mwai.queue.clock, "monotonic_s", clocks.monotonic_s)
    return clocks


def fast(settings_factory: Any, **changes: Any) -> Any:
    # Recovery looks far more often than leases are renewed: the worst case for a jump.
    # No heartbeat renews a lease unless a test says so: a jumped lease stays expired.
    return settings_factory(**{"lease_s": LEASE_S, "heartbeat_s": HOUR_S,
                               "recovery_interval_s": 0.02, "workers": 1, **changes})


async def rounds(pool: WorkerPool, count: int = 2) -> None:
    """Wait until the pool's recovery loop has looked ``count`` more times.

    A round that was under way when the test moved a clock may have read it before;
    two more rounds include at least one that saw the move.
    """
    target = pool.recovery_rounds + count
    await wait_for(lambda: pool.recovery_rounds >= target, what=f"{count} recovery rounds")


async def post(client: Any, issue_key: str) -> int:
    response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload(issue_key)),
                                 headers=secret_headers())
    assert response.status == 200
    return int((await response.json())["run_id"])


def run_row(settings: Any, run_id: int) -> tuple[str, int]:
    status, attempts = db_rows(settings.db, "SELECT status, attempts FROM runs WHERE id=?",
                               (run_id,))[0]
    return str(status), int(attempts)


def lease_of(settings: Any, run_id: int) -> float:
    return float(db_rows(settings.db, "SELECT lease_expires_at FROM runs WHERE id=?",
                         (run_id,))[0][0])


def lease_events(settings: Any) -> list[str]:
    return [m for (m,) in db_rows(settings.db, "SELECT message FROM events WHERE message "
                                  "LIKE 'Lease expired%'")]


# "forward": the clock jumps an hour ahead while the run runs. "corrected": the run
# was claimed while the clock was an hour behind, then NTP sets it right. Either way
# the run's lease looks an hour expired, and no heartbeat renews it.
@pytest.mark.parametrize(("claimed_at_offset_s", "jump_to_s"), [(0.0, HOUR_S), (-HOUR_S, 0.0)],
                         ids=["forward", "corrected"])
async def test_a_jump_does_not_requeue_the_run_of_the_live_process(
        aiohttp_client: Any, settings_factory: Any, clock: Clocks,
        claimed_at_offset_s: float, jump_to_s: float) -> None:
    settings = fast(settings_factory)
    gate = GateProcessor()
    app = create_app(settings, processor=gate)
    client = await aiohttp_client(app)
    pool = app[POOL_KEY]
    clock.jump(claimed_at_offset_s)
    run_id = await post(client, "CLK-1")
    await wait_for(lambda: gate.started == [run_id], what="run started")
    clock.jump(jump_to_s)
    assert lease_of(settings, run_id) < clock.now_s() - HOUR_S / 2, "the lease looks expired"
    await rounds(pool)  # the pool saw the jump: recovery pauses for one lease
    assert run_row(settings, run_id) == ("running", 1)
    # The pause is over and the lease still looks an hour expired: only the rule
    # that a process never recovers its own runs keeps this one.
    clock.advance(LEASE_S + 1)
    await rounds(pool)
    assert run_row(settings, run_id) == ("running", 1)
    clock.jump(claimed_at_offset_s + LEASE_S + 1)  # and an hour back again
    clock.advance(LEASE_S + 1)  # past that pause too: the lease has run out by now
    await rounds(pool)
    assert run_row(settings, run_id) == ("running", 1)
    gate.gate.set()
    await wait_for(lambda: run_row(settings, run_id)[0] == "completed", what="completed")
    assert gate.started == [run_id] and run_row(settings, run_id) == ("completed", 1)
    assert lease_events(settings) == []
    later = await post(client, "CLK-2")  # the service goes on working normally
    await wait_for(lambda: run_row(settings, later)[0] == "completed", what="next run")


async def test_another_live_process_waits_one_lease_after_a_forward_jump(
        aiohttp_client: Any, settings_factory: Any, clock: Clocks) -> None:
    settings = fast(settings_factory)
    # The owner: another live process (registered, its pid alive) that claimed a run
    # and renews its lease when the test says so, as its heartbeat would.
    owner = Store(settings.db)
    await owner.open()
    try:
        await owner.register_process()
        await owner.enqueue("CLK-3", "{}")
        claimed = await owner.claim(f"{owner.process_id}/w1", lease_s=LEASE_S)
        assert claimed is not None
        other_gate = GateProcessor()
        other = create_app(settings, processor=other_gate)
        await aiohttp_client(other)  # the process that might take the run over
        pool = other[POOL_KEY]
        await rounds(pool)
        assert run_row(settings, claimed.id) == ("running", 1)

        clock.jump(HOUR_S)  # the owner's lease looks an hour expired to everyone
        await rounds(pool)
        assert run_row(settings, claimed.id) == ("running", 1), "taken over during the pause"
        # The owner's heartbeat renews its lease (twice within the pause, as it does
        # every MWAI_HEARTBEAT_S < MWAI_LEASE_S); then the pause is over.
        await owner.renew_leases([(claimed.id, claimed.worker)], LEASE_S)
        clock.advance(LEASE_S / 2)
        await rounds(pool)
        assert run_row(settings, claimed.id) == ("running", 1)
        await owner.renew_leases([(claimed.id, claimed.worker)], LEASE_S)
        clock.advance(LEASE_S / 2 + 1)
        await rounds(pool)
        assert run_row(settings, claimed.id) == ("running", 1)
        assert other_gate.started == [] and lease_events(settings) == []

        # The owner stops renewing (it hung, or its host is gone): one lease later the
        # other process does take the run over. The pause is one lease, not forever.
        clock.advance(LEASE_S + 1)
        await wait_for(lambda: other_gate.started == [claimed.id], what="run taken over")
        assert run_row(settings, claimed.id) == ("running", 2)
        assert lease_events(settings) == ["Lease expired; worker lost"]
        other_gate.gate.set()
        await wait_for(lambda: run_row(settings, claimed.id) == ("completed", 2),
                       what="completed by the other process")
    finally:
        await owner.close()


async def test_a_really_lost_run_is_still_recovered_after_a_jump(
        aiohttp_client: Any, settings_factory: Any, clock: Clocks) -> None:
    settings = fast(settings_factory)
    gate = GateProcessor()
    gate.gate.set()
    app = create_app(settings, processor=gate)
    client = await aiohttp_client(app)
    pool = app[POOL_KEY]
    run_id = await post(client, "CLK-4")
    await wait_for(lambda: run_row(settings, run_id)[0] == "completed", what="completed")
    # A run owned by a process that is gone without a trace (another host's view).
    lost_id = await post(client, "CLK-5")
    await wait_for(lambda: run_row(settings, lost_id)[0] == "completed", what="completed")
    conn = sqlite3.connect(settings.db, isolation_level=None)
    try:
        conn.execute("UPDATE runs SET status='running', locked_by='elsewhere:1:x/w1', "
                     "lease_expires_at=?, attempts=1 WHERE id=?",
                     (clock.now_s() + LEASE_S, lost_id))
    finally:
        conn.close()
    clock.jump(HOUR_S)
    await rounds(pool)
    assert run_row(settings, lost_id) == ("running", 1)  # one lease of pause first
    clock.advance(LEASE_S + 1)
    await wait_for(lambda: run_row(settings, lost_id) == ("completed", 2),
                   what="lost run recovered and run again")
    assert lease_events(settings) == ["Lease expired; worker lost"]
