"""A killed `mwai serve` is dead at once for every view (issue 19, point 3).

kill -9 leaves a fresh heartbeat behind for up to a lease; on the same host the
pid decides first (mwai.queue.health.process_liveness), so `mwai unlock
--dry-run`, `mwai monitor`, `mwai health` and another service's lease recovery
all see it dead without waiting.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.acceptance.test_cli_ops import mwai, post, rows, start_service, wait_for

pytestmark = pytest.mark.slow


def test_kill_9_makes_the_service_dead_at_once_for_unlock_monitor_health_and_recovery(
        tmp_path: Path) -> None:
    # Long lease and stuck limit: without the pid rule, nothing would look dead for 10 min.
    victim = start_service(tmp_path, MWAI_LEASE_S="600", MWAI_STUCK_AFTER_S="600")
    try:
        run_id = post(victim, "SLOW-1")
        wait_for(victim.db, "SELECT status FROM runs WHERE id = ?", (run_id,), [("running",)])
        before = mwai(victim, "monitor", "--once", "--json")
        assert json.loads(before.stdout)["status"] == "healthy", before.stdout
        alive = mwai(victim, "health")
        assert (alive.returncode, alive.stdout.strip()) == (0, "health: HEALTHY")
        assert victim.proc is not None
        victim_pid = victim.proc.pid
        victim.signal(signal.SIGKILL)
        victim.wait()

        unlock = mwai(victim, "unlock", "--dry-run", "--older-than", "0s", "--json")
        assert unlock.returncode == 0, unlock.stderr
        stale = json.loads(unlock.stdout)["stale"]
        assert [(lock["id"], lock["reason"]) for lock in stale] == [
            (run_id, f"pid {victim_pid} is gone")]
        text = mwai(victim, "unlock", "--dry-run", "--older-than", "0s")
        assert f"run {run_id} (SLOW-1, running)" in text.stdout and "would release" in text.stdout

        monitor = mwai(victim, "monitor", "--once", "--json")
        snapshot = json.loads(monitor.stdout)
        assert snapshot["status"] == "unhealthy", snapshot
        assert [p["alive"] for p in snapshot["processes"] if p["stopped_at"] is None] == [False]
        screen = mwai(victim, "monitor", "--once")
        assert "HEALTHY" not in screen.stdout.replace("UNHEALTHY", "")
        assert "NOT ALIVE" in screen.stdout

        health = mwai(victim, "health", "--json")
        assert health.returncode == 1, health.stdout + health.stderr
        assert json.loads(health.stdout)["status"] == "unhealthy"
        assert rows(victim.db, "SELECT status FROM runs WHERE id = ?", (run_id,)) == [
            ("running",)], "the dry runs changed nothing"

        # Another live service on this host takes the run back in its next recovery
        # round, long before the 600 s lease would expire.
        # It claims SLOW-1 again, which runs until stopped: a short grace at its stop.
        rescuer = start_service(tmp_path, MWAI_LEASE_S="600", MWAI_SHUTDOWN_GRACE_S="0.5")
        try:
            wait_for(victim.db, "SELECT count(*) FROM events WHERE run_id = ? AND "
                                "meta_json LIKE '%is gone%'", (run_id,), [(1,)])
        finally:
            rescuer.stop()
    finally:
        victim.stop()
