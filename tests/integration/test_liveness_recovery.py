"""Lease recovery judges a process of this host by its pid first (issue 19, point 3).

A service already running sees another `mwai serve` of this host die (kill -9:
its heartbeat still fresh, its lease still long) and takes the dead process's
run back in its next recovery round, without waiting for the lease to expire.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

from mwai.queue.store import Store
from mwai.server.app import POOL_KEY, create_app
from tests.integration.helpers import GateProcessor, db_rows, wait_for

DAY_S = 86400.0


def _gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_a_running_service_recovers_a_dead_local_process_run_in_its_next_round(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(recovery_interval_s=0.05, lease_s=DAY_S)
    gate = GateProcessor()
    client = await aiohttp_client(create_app(settings, processor=gate))
    pool = client.app[POOL_KEY]
    await wait_for(lambda: pool.alive == settings.workers, what="workers alive")

    # Another process of this host claimed a run with a day-long lease and a fresh
    # heartbeat, then was killed.
    pid = _gone_pid()
    dead = f"{socket.gethostname()}:{pid}:kill09"
    store = Store(settings.db, synchronous="OFF")
    await store.open()
    try:
        await store.enqueue("KILLED-1", "{}")
        claimed = await store.claim(f"{dead}/w1", DAY_S)
        assert claimed is not None
        now = time.time()
        await store.on_writer(lambda conn: conn.execute(
            "INSERT INTO processes (process_id, pid, hostname, started_at, heartbeat_at) "
            "VALUES (?, ?, ?, ?, ?)", (dead, pid, socket.gethostname(), now, now)))
    finally:
        await store.close()

    await wait_for(lambda: claimed.id in gate.started, what="the run taken back")
    gate.gate.set()
    reasons = db_rows(settings.db, "SELECT json_extract(meta_json, '$.reason') FROM events "
                                   "WHERE run_id = ? AND message = 'Lease expired; worker lost'",
                      (claimed.id,))
    assert reasons == [(f"process {pid} is gone",)]
    assert db_rows(settings.db, "SELECT stopped_at IS NOT NULL FROM processes "
                                "WHERE process_id = ?", (dead,)) == [(1,)]
