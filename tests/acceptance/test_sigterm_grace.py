"""SIGTERM: `mwai serve` stops taking webhooks and claims at once; running runs get the grace.

README: "SIGTERM: mwai stops taking webhooks and claims, gives running runs
MWAI_SHUTDOWN_GRACE_S, puts the unfinished ones back to queued ... and exits 0."
The service is a real `mwai serve` process whose run waits for a file the test
creates: the grace lasts exactly as long as the test needs to try both.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.service import HERE, Service
from tests.conftest import automation_payload

pytestmark = pytest.mark.slow


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_until(what: str, condition: Callable[[], bool], service: Service,
               timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{service.output()[-3000:]}")
        time.sleep(0.02)


def events_of(db: Path, run_id: int) -> list[str]:
    return [m for (m,) in rows(db, "SELECT message FROM events WHERE run_id=? ORDER BY id",
                               (run_id,))]


def post_during_grace(service: Service, issue_key: str) -> str:
    """What a webhook sent now meets: 'refused' (the port is closed) or the HTTP status."""
    try:
        status, _ = service.post_webhook(automation_payload(issue_key))
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return "refused"
        raise
    return str(status)


def test_sigterm_stops_taking_webhooks_and_claims_during_the_grace(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    service = Service(tmp_path, name="grace", MWAI_WORKERS="2", MWAI_SHUTDOWN_GRACE_S="60",
                      MWAI_LOG_FORMAT="json")
    service.argv = [sys.executable, str(HERE / "serve_gated.py"), str(gate)]
    service.start()
    db = service.db
    try:
        status, body = service.post_webhook(automation_payload("GRACE-1"))
        assert status == 200
        running = int(body["run_id"])
        wait_until("GRACE-1 running", lambda: "Waiting for the gate" in events_of(db, running),
                   service)

        service.signal(signal.SIGTERM)
        # The pool logs this once it has stopped claiming; the listener closed before.
        wait_until("the grace period", lambda: "Waiting for running runs to finish"
                   in service.output(), service)
        assert post_during_grace(service, "GRACE-2") in ("refused", "503")
        # Another process (an operator's `mwai enqueue`) queues a run during the grace.
        enqueued = subprocess.run(
            [sys.executable, "-m", "mwai", "enqueue", "GRACE-3", "--db", str(db), "--json"],
            capture_output=True, text=True, timeout=60, env=service.env)
        assert enqueued.returncode == 0, enqueued.stderr
        queued = int(json.loads(enqueued.stdout)["run_id"])
        assert service.proc is not None and service.proc.poll() is None, "still in its grace"

        gate.touch()  # GRACE-1 finishes within the grace: its worker could claim next
        assert service.wait(timeout_s=30) == 0
    finally:
        gate.touch()
        service.stop()

    assert rows(db, "SELECT issue_key FROM runs WHERE issue_key='GRACE-2'") == []
    assert rows(db, "SELECT status, attempts FROM runs WHERE id=?", (running,)) == [
        ("completed", 1)]
    # Never claimed: no attempt, no start, no owner, nothing journaled after the enqueue.
    assert rows(db, "SELECT status, attempts, started_at, locked_by FROM runs WHERE id=?",
                (queued,)) == [("queued", 0, None, None)]
    assert events_of(db, queued) == ["Webhook received", "Run enqueued"]
    assert "Stopped" in service.output()
