"""Two `mwai serve` processes on one database, hammered with webhooks for the same issues.

README: "at most one queued and at most one running run per issue", and nothing a
200 acknowledged is lost. Both services take webhooks and claim runs of the same
few issues at once; afterwards the database itself shows that the invariants held
all along (times are wall-clock seconds of one host, shared by both processes):

* one running run: two runs of an issue never overlap (start..finish);
* one queued run: the next run of an issue was created only after the previous
  one had started (while one is queued, a new trigger coalesces into it);
* nothing lost, nothing twice: every acknowledged webhook is a run or a counted
  duplicate of one, and every run completed once, in one process, on its first attempt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.service import Service
from tests.conftest import automation_payload

pytestmark = pytest.mark.slow

ISSUES = [f"RACE-{n}" for n in range(1, 7)]
SENDERS = 4
WEBHOOKS_PER_SENDER = 40


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_until_idle(db: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while rows(db, "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")[0][0]:
        if time.monotonic() > deadline:
            raise AssertionError("runs still pending: " + repr(rows(
                db, "SELECT id, issue_key, status FROM runs "
                    "WHERE status IN ('queued', 'running')")))
        time.sleep(0.05)


def completed_in_log(service: Service) -> list[int]:
    """Run ids of the service's "Run completed" log lines (one JSON object per line)."""
    done = []
    for line in service.output().splitlines():
        record = json.loads(line)
        if record.get("message") == "Run completed":
            done.append(int(record["run_id"]))
    return done


OVERLAPS = """
SELECT a.id, b.id FROM runs AS a JOIN runs AS b ON a.issue_key = b.issue_key AND a.id < b.id
WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at
"""
# b: the next run of a's issue. It may only exist once a left the queue (was claimed).
CREATED_WHILE_QUEUED = """
SELECT a.id, b.id FROM runs AS a JOIN runs AS b ON b.issue_key = a.issue_key
 AND b.id = (SELECT min(c.id) FROM runs AS c WHERE c.issue_key = a.issue_key AND c.id > a.id)
WHERE b.created_at < a.started_at
"""


def test_two_services_racing_keep_one_queued_and_one_running_run_per_issue(
        tmp_path: Path) -> None:
    db = tmp_path / "mwai.sqlite3"
    # Runs take a moment, so that a run of every issue is often running while
    # another is queued; fewer workers than issues and a fast safety poll, so that
    # both processes claim runs of every issue (not each its own few).
    services = [Service(tmp_path, processor="slow:0.02", name=f"serve{n}", db=db,
                        MWAI_WORKERS="2", MWAI_POLL_S="0.01", MWAI_LOG_FORMAT="json")
                for n in (1, 2)]
    answers: list[tuple[str, int, Any]] = []
    errors: list[BaseException] = []

    def sender(index: int) -> None:
        try:
            for n in range(WEBHOOKS_PER_SENDER):
                issue_key = ISSUES[(index + n) % len(ISSUES)]
                service = services[index % len(services)]
                status, body = service.post_webhook(automation_payload(issue_key))
                answers.append((issue_key, status, body))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    try:
        for service in services:
            service.start()
        threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)
        wait_until_idle(db)
    finally:
        codes = [service.stop() for service in services]
    assert codes == [0, 0]

    assert len(answers) == SENDERS * WEBHOOKS_PER_SENDER
    assert {status for _, status, _ in answers} == {200}
    runs = {run_id: (issue_key, status, attempts) for run_id, issue_key, status, attempts
            in rows(db, "SELECT id, issue_key, status, attempts FROM runs")}
    # Every acknowledged webhook is in a run of its issue...
    for issue_key, _, body in answers:
        assert runs[int(body["run_id"])][0] == issue_key
    # ...and counted once: a run of its own, or a duplicate coalesced into one.
    (duplicates,) = rows(db, "SELECT sum(duplicates) FROM runs")[0]
    assert len(runs) + duplicates == len(answers)
    assert {(status, attempts) for _, status, attempts in runs.values()} == {("completed", 1)}

    assert rows(db, OVERLAPS) == []
    assert rows(db, CREATED_WHILE_QUEUED) == []
    assert rows(db, "SELECT run_id, count(*) FROM events WHERE message = 'Run completed' "
                    "GROUP BY run_id HAVING count(*) != 1") == []
    by_process = [completed_in_log(service) for service in services]
    assert sorted(by_process[0] + by_process[1]) == sorted(runs), "each run done once"

    # The race was real: both processes ran runs of the same issues, and triggers
    # met a queued run often enough to coalesce.
    assert all(by_process), "one process ran nothing"
    per_process_issues = [{runs[r][0] for r in done} for done in by_process]
    assert per_process_issues[0] & per_process_issues[1], "no issue ran in both processes"
    assert duplicates > 0
    assert min(Counter(issue for issue, _, _ in runs.values()).values()) > 1
