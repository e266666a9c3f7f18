"""Bulk actions with a dry run, pause/resume and who did it (issue 19, point 9), as an
operator runs them against a live `mwai serve` (tests/acceptance/ops_serve.py:
FAIL-* fails, SLOW-* runs until cancelled, anything else completes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_cli_ops import (
    make_old_runs,
    mwai,
    post,
    rows,
    start_service,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.slow

HOUR_S = 3600.0


def events_of(db: Path, run_id: int) -> list[tuple[str, dict[str, Any]]]:
    return [(message, json.loads(meta)) for message, meta in rows(
        db, "SELECT message, meta_json FROM events WHERE run_id = ? ORDER BY id", (run_id,))]


def test_pause_stops_claims_everywhere_while_webhooks_are_queued_then_resume(
        tmp_path: Path) -> None:
    service = start_service(tmp_path)
    try:
        paused = mwai(service, "pause", "--by", "alice", "--reason", "db maintenance")
        assert paused.returncode == 0, paused.stderr
        assert "claims paused by alice" in paused.stdout

        run_id = post(service, "OK-1")  # acknowledged and queued
        status, report = service.get("/health/detailed")
        assert (status, report["paused"], report["status"]) == (200, True, "degraded")
        assert any("paused" in problem and "alice" in problem for problem in report["problems"])
        health = mwai(service, "health", "--json")
        document = json.loads(health.stdout)
        assert health.returncode == 1
        assert (document["paused"], document["paused_by"], document["paused_reason"]) == (
            True, "alice", "db maintenance")
        assert "PAUSED" in mwai(service, "monitor", "--once").stdout
        assert "PAUSED" in mwai(service, "health").stdout
        # Two polls of the service (MWAI_POLL_S=0.2) later the run still waits.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert status_of(service.db, run_id) == "queued"
            time.sleep(0.1)

        # A service started while claims are paused says so, and takes no run either.
        second = start_service(tmp_path, MWAI_LOG_FORMAT="json")
        try:
            assert "Claims are paused; no run starts until `mwai resume`" in second.output()
            assert '"paused_by":"alice"' in second.output().replace(" ", "")
            assert status_of(service.db, run_id) == "queued"
        finally:
            second.stop()

        resumed = mwai(service, "resume", "--by", "alice")
        assert resumed.returncode == 0 and "claims resumed by alice" in resumed.stdout
        wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (run_id,), [("completed",)])
        assert json.loads(mwai(service, "health", "--json").stdout)["paused"] is False
        again = mwai(service, "resume")
        assert again.returncode == 0 and "were not paused" in again.stdout
    finally:
        service.stop()


def test_bulk_requeue_of_the_last_hours_failures_with_dry_run_and_by(tmp_path: Path) -> None:
    make_old_runs(tmp_path / "mwai.sqlite3", 3, 2 * HOUR_S)  # run 3 failed 2 h ago
    service = start_service(tmp_path)
    try:
        failed = [post(service, key) for key in ("FAIL-1", "FAIL-2")]
        ok = post(service, "OK-1")
        wait_for(service.db, "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')",
                 (), [(0,)])
        before = rows(service.db, "SELECT id, status, updated_at FROM runs ORDER BY id")

        dry = mwai(service, "requeue", "--status", "failed", "--since", "1h", "--dry-run",
                   "--json")
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        assert (plan["dry_run"], plan["matched"]) == (True, 2)
        assert [run["id"] for run in plan["runs"]] == failed
        assert rows(service.db, "SELECT id, status, updated_at FROM runs ORDER BY id") == before
        text = mwai(service, "requeue", "--status", "failed", "--since", "1h", "--dry-run")
        assert "2 run(s) would be requeued (dry run: nothing changed)" in text.stdout

        one_issue = mwai(service, "requeue", "--status", "failed", "--since", "1h", "--issue",
                         "FAIL-2", "--by", "alice", "--json")
        assert json.loads(one_issue.stdout)["requeued"] == [failed[1]]
        wait_for(service.db, "SELECT status, attempts FROM runs WHERE id = ?", (failed[1],),
                 [("failed", 1)])
        done = mwai(service, "requeue", "--status", "failed", "--since", "1h", "--by", "bob")
        assert done.returncode == 0, done.stderr
        assert "2 of 2 run(s) requeued by bob" in done.stdout
        wait_for(service.db, "SELECT count(*) FROM runs WHERE status = 'queued'", (), [(0,)])
        requeued_by = [meta["by"] for message, meta in events_of(service.db, failed[1])
                       if message.startswith("Run requeued")]
        assert requeued_by == ["alice", "bob"]
        assert [m for m, _ in events_of(service.db, failed[0])].count("Run requeued by bob") == 1
        assert status_of(service.db, 3) == "failed" and status_of(service.db, ok) == "completed"
    finally:
        service.stop()


def test_cancel_every_run_of_one_issue_with_dry_run_and_by(tmp_path: Path) -> None:
    service = start_service(tmp_path)
    try:
        running = post(service, "SLOW-1")
        wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (running,), [("running",)])
        queued = post(service, "SLOW-1")  # a second webhook while it runs: queued behind it
        other = post(service, "SLOW-2")
        wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (other,), [("running",)])
        assert status_of(service.db, queued) == "queued"

        dry = mwai(service, "cancel", "--issue", "SLOW-1", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"run {running} (SLOW-1, running" in dry.stdout
        assert f"run {queued} (SLOW-1, queued" in dry.stdout
        assert "2 run(s) would be cancelled (dry run: nothing changed)" in dry.stdout
        assert (status_of(service.db, running), status_of(service.db, queued)) == (
            "running", "queued")

        # `show --follow --json` streams NDJSON while the run goes on: the run, its
        # events as they come, the final run.
        follower = subprocess.Popen([sys.executable, "-m", "mwai", "show", str(running),
                                     "--follow", "--json"], env=service.env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert (first["kind"], first["run"]["status"]) == ("run", "running")

        done = mwai(service, "cancel", "--issue", "SLOW-1", "--by", "carol", "--json")
        assert done.returncode == 0, done.stderr
        assert sorted(json.loads(done.stdout)["cancelled"]) == [running, queued]
        wait_for(service.db, "SELECT status FROM runs WHERE id IN (?, ?) ORDER BY id",
                 (running, queued), [("cancelled",), ("cancelled",)])
        assert ("Cancel requested by carol", {"by": "carol", "reason": None}) in events_of(
            service.db, running)
        assert ("Run cancelled by carol", {"by": "carol", "reason": None}) in events_of(
            service.db, queued)
        out, err = follower.communicate(timeout=30)
        assert follower.returncode == 0 and "Traceback" not in err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["kind"] for line in lines[-1:]] == ["run"]
        assert lines[-1]["run"]["status"] == "cancelled"
        streamed = [line["event"]["message"] for line in lines if line["kind"] == "event"]
        assert "Cancel requested by carol" in streamed
        assert status_of(service.db, other) == "running", "another issue's run is untouched"
        mwai(service, "cancel", str(other), "--wait", "0")
    finally:
        service.stop()


def test_the_login_name_is_recorded_when_by_is_not_given(tmp_path: Path) -> None:
    service = start_service(tmp_path)
    try:
        run_id = post(service, "SLOW-9")
        wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (run_id,), [("running",)])
        env = {**service.env, "LOGNAME": "dave", "USER": "dave"}
        result = mwai(service, "cancel", str(run_id), env=env)
        assert result.returncode == 0 and "cancelled by dave" in result.stdout, result.stdout
    finally:
        service.stop()
