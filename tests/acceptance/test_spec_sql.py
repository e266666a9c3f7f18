"""The operations guide's SQL runs unchanged, with the sqlite3 shell, on mwai's database."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mwai.queue.store import Store
from tests.acceptance.service import Service
from tests.acceptance.test_serve_core import rows, wait_until_idle
from tests.conftest import automation_payload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sqlite3") is None,
                       reason="the sqlite3 shell is not installed (.ci/run installs it)"),
]

# Verbatim from ../shared/spec/monitoring-and-logging.md.
RECENT = """SELECT id, issue_key, status, datetime(created_at, 'unixepoch', 'localtime') 
   FROM runs ORDER BY id DESC LIMIT 10;"""
FAILED = """SELECT id, issue_key, last_error, datetime(updated_at, 'unixepoch', 'localtime') 
   FROM runs WHERE status='failed' ORDER BY id DESC LIMIT 5;"""
EVENTS = """SELECT datetime(ts, 'unixepoch', 'localtime'), level, message 
   FROM events WHERE run_id=1 ORDER BY ts;"""
QUEUED = """SELECT id, issue_key, datetime(created_at, 'unixepoch', 'localtime') 
   FROM runs WHERE status='queued' ORDER BY created_at;"""
DURATIONS = """SELECT issue_key, (updated_at - created_at) as duration_seconds 
   FROM runs WHERE status='completed' ORDER BY id DESC LIMIT 10;"""
LATEST = "SELECT * FROM runs ORDER BY id DESC LIMIT 1;"
WATCH = "SELECT id, issue_key, status FROM runs ORDER BY id DESC LIMIT 5;"
AVERAGE = """SELECT 
  status,
  COUNT(*) as count,
  AVG(updated_at - created_at) as avg_duration_seconds,
  MAX(updated_at - created_at) as max_duration_seconds
FROM runs 
WHERE created_at > strftime('%s', 'now', '-7 days')
GROUP BY status;"""
SLOWEST = """SELECT 
  issue_key,
  status,
  (updated_at - created_at) as duration_seconds,
  datetime(created_at, 'unixepoch', 'localtime') as started
FROM runs 
ORDER BY duration_seconds DESC 
LIMIT 10;"""
ALL_QUEUED = "SELECT * FROM runs WHERE status='queued';"
STALE_LOCKS = "SELECT * FROM runs WHERE locked_by IS NOT NULL;"
FAILURES_LAST_HOUR = ("SELECT COUNT(*) FROM runs WHERE status='failed' AND updated_at > "
                      "strftime('%s', 'now', '-1 hour');")
ARCHIVE_EVENTS = """DELETE FROM events WHERE run_id IN (
    SELECT id FROM runs WHERE updated_at < strftime('%s', 'now', '-30 days')
  );"""
ARCHIVE_RUNS = "DELETE FROM runs WHERE updated_at < strftime('%s', 'now', '-30 days');"


def sqlite3_shell(db: Path, sql: str) -> list[list[str]]:
    result = subprocess.run(["sqlite3", str(db), sql], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [line.split("|") for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("spec-sql")
    service = Service(tmp_path, processor="failing").start()
    for key in ("OK-1", "OK-2", "FAIL-1", "OK-3", "FAIL-2"):
        status, _ = service.post_webhook(automation_payload(key))
        assert status == 200
    wait_until_idle(service.db)
    assert service.stop() == 0

    async def leave_queued_and_stale() -> None:
        store = Store(str(service.db))
        await store.open()
        await store.enqueue("WAIT-1", '{"issue_key": "WAIT-1"}')
        await store.enqueue("WAIT-2", '{"issue_key": "WAIT-2"}')
        # A run whose worker died: claimed, never finished.
        await store.claim(f"{store.process_id}/w1", lease_s=3600)
        await store.close()

    asyncio.run(leave_queued_and_stale())
    return service.db


def test_recent_failed_events_queued_and_durations(filled_db: Path) -> None:
    recent = sqlite3_shell(filled_db, RECENT)
    assert [r[1] for r in recent] == ["WAIT-2", "WAIT-1", "FAIL-2", "OK-3", "FAIL-1", "OK-2",
                                      "OK-1"]
    assert all(len(r[3]) == 19 for r in recent)  # datetime() of a REAL epoch works
    failed = sqlite3_shell(filled_db, FAILED)
    assert [(r[1], r[2]) for r in failed] == [
        ("FAIL-2", "RuntimeError: simulated failure for FAIL-2"),
        ("FAIL-1", "RuntimeError: simulated failure for FAIL-1")]
    events = [r[2] for r in sqlite3_shell(filled_db, EVENTS)]
    assert events[0] == "Webhook received" and events[-1] == "Run completed"
    queued = sqlite3_shell(filled_db, QUEUED)
    assert [r[1] for r in queued] == ["WAIT-2"]  # WAIT-1 was claimed by the "dead" worker
    durations = sqlite3_shell(filled_db, DURATIONS)
    assert [r[0] for r in durations] == ["OK-3", "OK-2", "OK-1"]
    assert all(0 < float(r[1]) < 30 for r in durations)  # sub-second, yet visible


def test_latest_run_and_watch_query(filled_db: Path) -> None:
    (latest,) = sqlite3_shell(filled_db, LATEST)
    assert latest[1] == "WAIT-2" and latest[2] == "queued"
    assert [r[2] for r in sqlite3_shell(filled_db, WATCH)] == [
        "queued", "running", "failed", "completed", "failed"]


def test_performance_queries(filled_db: Path) -> None:
    by_status = {r[0]: r for r in sqlite3_shell(filled_db, AVERAGE)}
    assert {k: int(v[1]) for k, v in by_status.items()} == {
        "completed": 3, "failed": 2, "queued": 1, "running": 1}
    slowest = sqlite3_shell(filled_db, SLOWEST)
    assert len(slowest) == 7
    durations = [float(r[2]) for r in slowest]
    assert durations == sorted(durations, reverse=True)


def test_troubleshooting_queries(filled_db: Path) -> None:
    assert [r[1] for r in sqlite3_shell(filled_db, ALL_QUEUED)] == ["WAIT-2"]
    stale = sqlite3_shell(filled_db, STALE_LOCKS)
    assert [(r[1], r[2]) for r in stale] == [("WAIT-1", "running")]
    assert sqlite3_shell(filled_db, FAILURES_LAST_HOUR) == [["2"]]
    now = time.time()
    stuck = rows(filled_db, f"SELECT COUNT(*) FROM runs WHERE status='running' AND "
                            f"updated_at < {now - 3600}")
    assert stuck == [(0,)]
    stuck_later = rows(filled_db, f"SELECT COUNT(*) FROM runs WHERE status='running' AND "
                                  f"updated_at < {now + 3600}")
    assert stuck_later == [(1,)]


def test_thirty_day_archive_deletes(filled_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "archive.sqlite3"
    shutil.copy(filled_db, copy)
    old_ids = rows(copy, "SELECT id FROM runs WHERE issue_key IN ('OK-1', 'FAIL-1')")
    sqlite3_shell(copy, "UPDATE runs SET updated_at = updated_at - 40*86400, "
                        "created_at = created_at - 40*86400 WHERE issue_key IN ('OK-1','FAIL-1');")
    sqlite3_shell(copy, ARCHIVE_EVENTS)
    sqlite3_shell(copy, ARCHIVE_RUNS)
    sqlite3_shell(copy, "VACUUM;")
    remaining = [key for (key,) in rows(copy, "SELECT issue_key FROM runs ORDER BY id")]
    assert remaining == ["OK-2", "OK-3", "FAIL-2", "WAIT-1", "WAIT-2"]
    for (run_id,) in old_ids:
        assert rows(copy, f"SELECT count(*) FROM events WHERE run_id={run_id}") == [(0,)]
    assert rows(copy, "PRAGMA integrity_check") == [("ok",)]
