"""`mwai serve` as a real process: crash, restart, signals, logs, the spec's SQL and curl."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.service import Service
from tests.conftest import SECRET, automation_payload

pytestmark = pytest.mark.slow


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_until_idle(db: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (pending,) = rows(db, "SELECT count(*) FROM runs WHERE status IN ('queued','running')")[0]
        if pending == 0:
            return
        time.sleep(0.1)
    raise AssertionError("runs still pending: " + repr(rows(
        db, "SELECT id, status FROM runs WHERE status IN ('queued','running')")))


def test_kill_9_during_intake_loses_nothing_and_runs_each_once(tmp_path: Path) -> None:
    service = Service(tmp_path, name="first", MWAI_WORKERS="2").start()
    acked: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def poster(worker: int) -> None:
        sequence = 0
        while not stop.is_set() and sequence < 2000:
            sequence += 1
            try:
                status, document = service.post_webhook(
                    automation_payload(f"K{worker}-{sequence}"))
            except OSError as exc:  # the service died under us
                errors.append(str(exc))
                return
            if status == 200:
                with lock:
                    acked.append(int(document["run_id"]))

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    assert service.proc is not None
    service.proc.kill()  # SIGKILL: no cleanup at all
    service.wait()
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(acked) > 50, "too few webhooks acknowledged before the kill"
    restarted = Service(tmp_path, name="second", db=service.db, MWAI_WORKERS="2").start()
    try:
        wait_until_idle(service.db)
    finally:
        assert restarted.stop() == 0
    stored = dict(rows(service.db, "SELECT id, status FROM runs"))
    missing = [run_id for run_id in acked if run_id not in stored]
    assert missing == [], f"acknowledged runs lost: {missing[:10]}"
    assert set(stored.values()) == {"completed"}
    completions = dict(rows(service.db, "SELECT run_id, count(*) FROM events "
                                        "WHERE message='Run completed' GROUP BY run_id"))
    assert all(completions.get(run_id) == 1 for run_id in stored), "a run completed twice"
    # A run claimed twice was claimed by two different processes, never at once.
    claims = rows(service.db, "SELECT run_id, json_extract(meta_json, '$.worker_id') FROM events "
                              "WHERE message='Run claimed' ORDER BY id")
    by_run: dict[int, list[str]] = {}
    for run_id, worker in claims:
        by_run.setdefault(run_id, []).append(worker.split("/")[0])
    for run_id, owners in by_run.items():
        assert len(owners) == len(set(owners)), f"run {run_id} claimed twice by one process"


def test_sigterm_with_runs_in_flight_exits_cleanly(tmp_path: Path) -> None:
    service = Service(tmp_path, processor="slow:30", MWAI_SHUTDOWN_GRACE_S="1",
                      MWAI_WORKERS="3").start()
    for n in range(1, 6):
        status, _ = service.post_webhook(automation_payload(f"TERM-{n}"))
        assert status == 200
    deadline = time.monotonic() + 10
    while rows(service.db, "SELECT count(*) FROM runs WHERE status='running'")[0][0] < 3:
        assert time.monotonic() < deadline, "runs did not start"
        time.sleep(0.05)
    service.signal(signal.SIGTERM)
    # The grace period is 1 s; the process must be gone well before 10 s.
    assert service.wait(timeout_s=10) == 0
    assert rows(service.db, "SELECT count(*) FROM runs WHERE status='running'") == [(0,)]
    assert rows(service.db, "SELECT status, attempts, count(*) FROM runs GROUP BY 1, 2") == [
        ("queued", 0, 5)]
    assert "Stopped" in service.output()


def test_every_log_line_is_json_with_context_and_no_secret(tmp_path: Path) -> None:
    service = Service(tmp_path, name="logs").start()
    status, _ = service.post_webhook(automation_payload("LOG-1"))
    assert status == 200
    status, _ = service.post_webhook(automation_payload("LOG-2"), secret="wrong-secret")
    assert status == 401
    status, _ = service.post_webhook({"issue_key": "bad key"})
    assert status == 422
    wait_until_idle(service.db)
    service.get("/health/detailed")
    assert service.stop() == 0
    output = service.output()
    assert SECRET not in output
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines, "no output"
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line), line
        assert line["timestamp"].endswith(("Z", "+00:00"))
    run_lines = [line for line in lines if line.get("logger") in ("mwai.workers", "mwai.run")
                 and line.get("event")]
    assert run_lines, "no run lines"
    for line in run_lines:
        assert line["run_id"] and line["issue_key"] == "LOG-1" and line["worker"]
    access = [line for line in lines if line["logger"] == "aiohttp.access"]
    assert {line["status"] for line in access} >= {200, 401, 422}
    assert all({"method", "path", "duration_ms", "request_id"} <= set(line) for line in access)


def test_text_log_format_for_humans(tmp_path: Path) -> None:
    service = Service(tmp_path, name="text", MWAI_LOG_FORMAT="text").start()
    assert service.stop() == 0
    first = service.output().splitlines()[0]
    assert not first.startswith("{") and "Workers started" in first


def test_serve_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MWAI_DB": str(tmp_path / "x.sqlite3"),
           "MWAI_PROCESSOR": "noop", "MWAI_WORKERS": "zero"}
    result = subprocess.run([sys.executable, "-m", "mwai", "serve"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "JIRA_WEBHOOK_SECRET is required" in result.stderr
    assert "MWAI_WORKERS='zero': expected an integer" in result.stderr
    assert not (tmp_path / "x.sqlite3").exists()


def test_jira_processor_names_its_missing_settings(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "JIRA_WEBHOOK_SECRET": "s", "MWAI_PROCESSOR": "jira"}
    result = subprocess.run([sys.executable, "-m", "mwai", "serve"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    for name in ("JIRA_BASE_URL", "JIRA_API_TOKEN", "GH_TOKEN", "ANTHROPIC_API_KEY",
                 "MWAI_REPO_URL"):
        assert name in result.stderr


def test_env_file_and_command_line_options(tmp_path: Path) -> None:
    env_file = tmp_path / "mwai.env"
    env_file.write_text(f'# secrets\nJIRA_WEBHOOK_SECRET="{SECRET}"\nMWAI_PROCESSOR=noop\n'
                        f"MWAI_DB={tmp_path / 'from-env-file.sqlite3'}\n")
    service = Service(tmp_path, name="envfile")
    service.env.pop("JIRA_WEBHOOK_SECRET")
    service.env.pop("MWAI_DB")
    service.argv += ["--env-file", str(env_file), "--listen", f"127.0.0.1:{service.port}",
                     "--workers", "1"]
    service.start()
    status, document = service.get("/health/detailed")
    assert status == 200 and document["workers"]["configured"] == 1
    assert service.stop() == 0
    assert (tmp_path / "from-env-file.sqlite3").exists()


def test_spec_curl_request_works_as_written(tmp_path: Path) -> None:
    service = Service(tmp_path, name="curl").start()
    # The command from the operations guide, with only host and port changed.
    command = f"""curl -X POST {service.url}/webhook/jira \\
  -H "Content-Type: application/json" \\
  -H "X-Moveware-Webhook-Secret: $JIRA_WEBHOOK_SECRET" \\
  -d '{{
    "event_type": "issue_assigned",
    "issue_key": "TEST-123",
    "issue_type": "Story",
    "status": "Backlog",
    "assignee_account_id": "$JIRA_AI_ACCOUNT_ID"
  }}'"""
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "JIRA_WEBHOOK_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ok": True, "run_id": 1, "deduplicated": False,
                                         "coalesced": False}
    wait_until_idle(service.db)
    assert service.stop() == 0
    assert rows(service.db, "SELECT issue_key, status FROM runs") == [("TEST-123", "completed")]


def test_enqueue_command_queues_a_run_for_the_live_service(tmp_path: Path) -> None:
    service = Service(tmp_path, name="enqueue").start()
    result = subprocess.run([sys.executable, "-m", "mwai", "enqueue", "MAN-1", "--db",
                             str(service.db)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "queued run 1 for MAN-1" in result.stdout
    wait_until_idle(service.db)
    assert service.stop() == 0
    bad = subprocess.run([sys.executable, "-m", "mwai", "enqueue", "man 1", "--db",
                          str(service.db)], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "not a Jira issue key" in bad.stderr
    assert rows(service.db, "SELECT count(*) FROM runs") == [(1,)]


def test_sigusr1_shows_where_every_thread_is_and_the_service_goes_on(tmp_path: Path) -> None:
    service = Service(tmp_path, name="usr1").start()
    service.signal(signal.SIGUSR1)
    # The dump is written thread by thread: wait until it names the writer thread
    # and the event loop's (waiting in asyncio), whichever comes last.
    deadline = time.monotonic() + 10
    while not ("writer.py" in service.output() and "asyncio" in service.output()):
        assert time.monotonic() < deadline, "no complete thread dump:\n" + service.output()
        time.sleep(0.05)
    output = service.output()
    assert "Current thread" in output or "Thread 0x" in output
    status, _ = service.post_webhook(automation_payload("USR1-1"))
    assert status == 200
    assert service.stop() == 0
