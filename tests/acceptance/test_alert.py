"""`mwai alert` as cron runs it: against a live service's database, notifying a real receiver."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.service import Service, free_port
from tests.acceptance.test_cli_ops import mwai, post, rows, start_service, wait_for

pytestmark = pytest.mark.slow

WINDOW_S = 6


class Receiver:
    """An HTTP endpoint on 127.0.0.1 recording the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = start_service(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_alert_fires_notifies_once_then_clears_after_the_window(
        service: Service, receiver: Receiver) -> None:
    env = {**service.env, "MWAI_ALERT_WEBHOOK_URL": receiver.url}
    quiet = mwai(service, "alert", "--window", f"{WINDOW_S}s", env=env)
    assert (quiet.returncode, receiver.bodies) == (0, [])
    assert quiet.stdout.startswith("OK: mwai: no problems")

    run_id = post(service, "FAIL-1")
    wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (run_id,), [("failed",)])
    (failed_at,) = rows(service.db, "SELECT updated_at FROM runs WHERE id = ?", (run_id,))[0]
    fired = mwai(service, "alert", "--window", f"{WINDOW_S}s", env=env)
    assert fired.returncode == 1, fired.stdout + fired.stderr
    assert "1 failed run(s)" in fired.stdout and "FAIL-1" in fired.stdout
    assert len(receiver.bodies) == 1
    alert = receiver.bodies[0]
    assert alert["failed_count"] == 1 and alert["firing"] is True
    assert alert["failed_runs"][0]["id"] == run_id
    assert alert["failed_runs"][0]["last_error"].startswith("RuntimeError: simulated failure")

    repeated = mwai(service, "alert", "--window", f"{WINDOW_S}s", env=env)
    assert repeated.returncode == 1 and "not re-sent" in repeated.stdout
    assert len(receiver.bodies) == 1, "the same alert was sent twice within the cool-down"

    time.sleep(max(0.0, failed_at + WINDOW_S + 0.5 - time.time()))
    cleared = mwai(service, "alert", "--window", f"{WINDOW_S}s", "--json", env=env)
    assert cleared.returncode == 0, cleared.stdout
    assert json.loads(cleared.stdout)["firing"] is False
    assert len(receiver.bodies) == 1


def test_alert_without_notifier_prints_and_exits_1(service: Service) -> None:
    run_id = post(service, "FAIL-2")
    wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (run_id,), [("failed",)])
    result = mwai(service, "alert", "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["firing"] is True and document["notified"] == []
    assert document["failed_runs"][0]["issue_key"] == "FAIL-2"


def test_a_failing_notifier_is_on_stderr_with_its_own_exit_code(service: Service) -> None:
    run_id = post(service, "FAIL-3")
    wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (run_id,), [("failed",)])
    dead_url = f"http://127.0.0.1:{free_port()}/hook-with-token-s3cr3t"
    env = {**service.env, "MWAI_ALERT_WEBHOOK_URL": dead_url}
    result = mwai(service, "alert", env=env)
    assert result.returncode == 3
    assert result.stderr.startswith("mwai: alert notifier MWAI_ALERT_WEBHOOK_URL failed: ")
    assert "s3cr3t" not in result.stderr + result.stdout
    # Not delivered, so not in cool-down: the next run tries again.
    assert mwai(service, "alert", env=env).returncode == 3


def test_unit_failed_sends_the_units_journal(service: Service, receiver: Receiver,
                                             tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    journalctl = bin_dir / "journalctl"
    journalctl.write_text('#!/bin/sh\necho "args: $*"\nfor i in 1 2 3; do '
                          'echo "mwai[42]: line $i"; done\n')
    journalctl.chmod(journalctl.stat().st_mode | stat.S_IXUSR)
    env = {**service.env, "MWAI_ALERT_SLACK_WEBHOOK_URL": receiver.url,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = mwai(service, "alert", "--unit-failed", "mwai.service", env=env)
    assert result.returncode == 0, result.stderr
    (message,) = receiver.bodies
    text = message["text"]
    assert "systemd unit mwai.service failed" in text
    assert "args: -u mwai.service -n 20 --no-pager" in text
    assert "mwai[42]: line 3" in text
