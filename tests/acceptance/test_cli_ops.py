"""The operator commands as real subprocesses against a database filled by `mwai serve`.

The service runs tests/acceptance/ops_serve.py: the real serve() with a
processor where FAIL-* runs fail, SLOW-* runs block until cancelled and the
others complete. Old runs (40 days) are written before it starts, with the
store's clock set back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mwai.__main__ import COMMAND_GROUPS
from mwai.cli.common import local_time
from mwai.cli.main import build_parser
from mwai.queue import clock as mwai_clock
from mwai.queue.schema import SCHEMA_VERSION
from mwai.queue.store import Store
from tests.acceptance.service import Service
from tests.conftest import automation_payload

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
DAY_S = 86400.0


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_for(db: Path, sql: str, params: tuple[Any, ...], expected: Any,
             timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rows(db, sql, params) == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{sql} {params}: {rows(db, sql, params)} != {expected}")


def status_of(db: Path, run_id: int) -> str:
    return str(rows(db, "SELECT status FROM runs WHERE id = ?", (run_id,))[0][0])


def mwai(service: Service, *args: str, env: dict[str, str] | None = None,
         timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mwai", *args], env=env or service.env,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def make_old_runs(db: Path, count: int, age_s: float, queued_too: bool = False) -> None:
    """Finished runs (every third failed) written with the store's clock ``age_s`` back."""

    async def fill() -> None:
        store = Store(str(db), synchronous="OFF")
        await store.open()
        real_now = mwai_clock.now_s
        mwai_clock.now_s = lambda: time.time() - age_s
        try:
            await asyncio.gather(*(store.enqueue(f"OLD-{n}", "{}", delivery_id=f"old-{n}")
                                   for n in range(count)))
            claimed = await asyncio.gather(*(store.claim(f"old:1:x/w{n}", 60)
                                             for n in range(count)))
            await asyncio.gather(*(
                store.fail(run.id, run.worker, "old failure") if run.id % 3 == 0
                else store.complete(run.id, run.worker) for run in claimed if run))
            if queued_too:  # old, but due in the future: stays queued
                await store.enqueue("OLDQ-1", "{}")
                run = await store.claim("old:1:x/w0", 60)
                assert run is not None
                await store.retry_later(run.id, run.issue_key, "later", 2 * age_s, 1)
        finally:
            mwai_clock.now_s = real_now
            await store.close()

    asyncio.run(fill())


def start_service(tmp: Path, **env: str) -> Service:
    service = Service(tmp, MWAI_HEARTBEAT_S="0.2", MWAI_POLL_S="0.2", **env)
    service.argv = [sys.executable, str(HERE / "ops_serve.py")]
    return service.start()


def post(service: Service, issue_key: str) -> int:
    status, document = service.post_webhook(automation_payload(issue_key))
    assert status == 200, document
    return int(document["run_id"])


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, int]]]:
    tmp = tmp_path_factory.mktemp("ops")
    make_old_runs(tmp / "mwai.sqlite3", 3, 40 * DAY_S)
    service = start_service(tmp)
    ids = {key: post(service, key) for key in ("OK-1", "OK-2", "OK-3", "FAIL-1", "FAIL-2")}
    wait_for(service.db, "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')",
             (), [(0,)])
    try:
        yield service, ids
    finally:
        service.stop()


# ------------------------------------------------------------------ views


def test_runs_lists_recent_failed_and_per_issue_runs(svc: tuple[Service, dict[str, int]]
                                                     ) -> None:
    service, ids = svc
    listed = mwai(service, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)["runs"]
    keys = {run["issue_key"] for run in runs}
    assert {"OK-1", "OK-2", "OK-3", "FAIL-1", "FAIL-2", "OLD-0"} <= keys
    one = next(run for run in runs if run["id"] == ids["FAIL-1"])
    assert one["status"] == "failed" and one["attempts"] == 1
    assert one["created_at_iso"].endswith("Z") and one["total_s"] >= 0

    failed = mwai(service, "runs", "--status", "failed")
    assert failed.returncode == 0
    lines = failed.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "ISSUE", "STATUS"]
    failed_keys = {line.split()[1] for line in lines[1:]}
    assert {"FAIL-1", "FAIL-2"} <= failed_keys and "OK-1" not in failed_keys
    assert f"simulated failure of FAIL-1 in run {ids['FAIL-1']}" in failed.stdout
    assert local_time(json.loads(mwai(service, "show", str(ids["FAIL-1"]), "--json").stdout)
                      ["run"]["created_at"]) in failed.stdout

    per_issue = json.loads(mwai(service, "runs", "--issue", "OK-2", "--json").stdout)["runs"]
    assert [run["id"] for run in per_issue] == [ids["OK-2"]]
    recent = json.loads(mwai(service, "runs", "--since", "1h", "--json").stdout)["runs"]
    assert not any(run["issue_key"].startswith("OLD-") for run in recent)
    assert len(json.loads(mwai(service, "runs", "--limit", "2", "--json").stdout)["runs"]) == 2
    queued = mwai(service, "runs", "--status", "queued")
    assert queued.returncode == 0 and queued.stdout.strip() == "no runs match"


def test_show_prints_the_run_and_its_event_timeline_in_local_time(
        svc: tuple[Service, dict[str, int]]) -> None:
    service, ids = svc
    run_id = ids["FAIL-2"]
    shown = mwai(service, "show", str(run_id))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert text.startswith(f"Run {run_id}\n")
    assert "issue         FAIL-2" in text and "status        failed" in text
    assert f"last error    RuntimeError: simulated failure of FAIL-2 in run {run_id}" in text
    document = json.loads(mwai(service, "show", str(run_id), "--json").stdout)
    messages = [event["message"] for event in document["events"]]
    assert messages == ["Webhook received", "Run enqueued", "Run claimed", "Processing",
                        "Run failed"]
    for event in document["events"]:  # every event, in local time, with its metadata
        assert local_time(event["ts"], with_ms=True) in text
        assert event["ts_iso"].endswith("Z")
    assert document["events"][3]["meta"] == {"step": "test", "issue": "FAIL-2"}
    assert "step=test  issue=FAIL-2" in text
    assert document["run"]["payload"]["issue_key"] == "FAIL-2"


def test_stats_reports_durations_failure_rate_errors_and_queue(
        svc: tuple[Service, dict[str, int]]) -> None:
    service, ids = svc
    result = mwai(service, "stats", "--since", "7d", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    by_status = {item["status"]: item for item in stats["by_status"]}
    assert by_status["failed"]["count"] == 2  # the 40-day-old runs are outside the window
    assert by_status["completed"]["count"] >= 3
    assert by_status["failed"]["max_total_s"] >= by_status["failed"]["avg_total_s"] > 0
    assert 0 < stats["failure_rate"] < 1
    assert stats["top_errors"][0]["pattern"] == \
        "RuntimeError: simulated failure of FAIL-N in run N"
    assert stats["top_errors"][0]["count"] == 2
    assert stats["queued"] == 0 and stats["oldest_queued_age_s"] is None
    assert {run["id"] for run in stats["slowest_runs"]} <= set(ids.values()) | {
        run_id for (run_id,) in rows(service.db, "SELECT id FROM runs")}
    human = mwai(service, "stats").stdout
    assert "Failure rate:" in human and "Most common errors:" in human
    assert "simulated failure of FAIL-N in run N" in human
    everything = json.loads(mwai(service, "stats", "--since", "8w", "--json").stdout)
    assert {i["status"]: i["count"] for i in everything["by_status"]}["failed"] == 3


def test_monitor_once_shows_health_queue_and_recent_runs(svc: tuple[Service, dict[str, int]]
                                                         ) -> None:
    service, _ = svc
    result = mwai(service, "monitor", "--once")
    assert result.returncode == 0, result.stderr
    assert "health: HEALTHY" in result.stdout
    assert "failed last hour: 2" in result.stdout
    assert "alive (heartbeat" in result.stdout
    assert "FAIL-1" in result.stdout and "OK-3" in result.stdout
    snapshot = json.loads(mwai(service, "monitor", "--once", "--json").stdout)
    assert snapshot["status"] == "healthy"
    assert any(p["alive"] for p in snapshot["processes"])


def test_monitor_refreshes_until_ctrl_c_and_exits_cleanly(svc: tuple[Service, dict[str, int]]
                                                          ) -> None:
    service, _ = svc
    process = subprocess.Popen([sys.executable, "-m", "mwai", "monitor", "--interval", "0.2s"],
                               env=service.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 20
        assert process.stdout is not None
        seen = 0
        while seen < 2 and time.monotonic() < deadline:
            if "mwai monitor" in process.stdout.readline():
                seen += 1
        assert seen == 2, "monitor did not refresh"
        process.send_signal(2)  # SIGINT, what Ctrl-C sends
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "Traceback" not in stderr


# ------------------------------------------------------------------ actions


def test_cancel_stops_a_running_run_in_the_live_service(svc: tuple[Service, dict[str, int]]
                                                        ) -> None:
    service, _ = svc
    run_id = post(service, "SLOW-1")
    wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (run_id,), [("running",)])
    follower = subprocess.Popen([sys.executable, "-m", "mwai", "show", str(run_id), "--follow"],
                                env=service.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        unlock = mwai(service, "unlock", "--older-than", "0s")  # its worker is alive
        assert unlock.returncode == 0, unlock.stderr
        assert "no stale locks" in unlock.stdout and "kept (heartbeat is fresh)" in unlock.stdout
        assert status_of(service.db, run_id) == "running"

        cancelled = mwai(service, "cancel", str(run_id), "--wait", "20s", "--by", "alice")
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert cancelled.stdout.strip() == f"run {run_id} (SLOW-1) cancelled by alice"
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert status_of(service.db, run_id) == "cancelled"
    assert follower.returncode == 0, err
    assert "Cancel requested" in out and "Run cancelled" in out
    assert out.rstrip().endswith(f"Run {run_id} cancelled: cancelled while running (asked by "
                                 "alice)")

    again = mwai(service, "cancel", str(run_id))
    assert again.returncode == 2
    assert again.stderr == f"mwai: run {run_id} is already cancelled; only queued or running " \
                           "runs can be cancelled\n"


def test_requeue_runs_a_finished_run_again(svc: tuple[Service, dict[str, int]]) -> None:
    service, ids = svc
    run_id = ids["OK-1"]
    result = mwai(service, "requeue", str(run_id), "--json", "--by", "bob")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run"]["status"] in ("queued", "running", "completed")
    wait_for(service.db, "SELECT status, attempts FROM runs WHERE id = ?", (run_id,),
             [("completed", 1)])
    messages = [m for (m,) in rows(service.db, "SELECT message FROM events WHERE run_id = ? "
                                   "ORDER BY id", (run_id,))]
    assert messages.count("Run claimed") == 2 and "Run requeued by bob" in messages

    slow = post(service, "SLOW-2")
    wait_for(service.db, "SELECT status FROM runs WHERE id = ?", (slow,), [("running",)])
    refused = mwai(service, "requeue", str(slow))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and f"mwai cancel {slow}" in refused.stderr
    assert mwai(service, "cancel", str(slow)).returncode == 0


# ------------------------------------------------------------------ bad input


def snapshot(db: Path) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events), "
                    "(SELECT max(updated_at) FROM runs), (SELECT count(*) FROM kv)")


@pytest.mark.parametrize("args", [
    ["show", "999999"], ["cancel", "999999"], ["requeue", "999999"], ["show", "abc"],
    ["runs", "--since", "3x"], ["unlock", "--older-than", "5y"], ["prune", "--older-than", "30"],
])
def test_bad_input_is_one_clear_line_exit_2_and_changes_nothing(
        svc: tuple[Service, dict[str, int]], args: list[str]) -> None:
    service, _ = svc
    before = snapshot(service.db)
    result = mwai(service, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("mwai: ") and result.stderr.count("\n") == 1
    assert "999999" in result.stderr or "abc" in result.stderr or "is not a duration" in \
        result.stderr
    assert snapshot(service.db) == before


@pytest.mark.parametrize("command", [["runs"], ["cancel", "1"], ["prune", "--older-than", "30d"],
                                     ["alert"]])
def test_missing_or_foreign_database_is_one_line_exit_2_and_untouched(
        tmp_path: Path, svc: tuple[Service, dict[str, int]], command: list[str]) -> None:
    service, _ = svc
    missing = tmp_path / "nowhere" / "mwai.sqlite3"
    foreign = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a database at all\n" * 100)
    for path, expected in ((missing, "does not exist"), (foreign, "not a mwai one"),
                           (text_file, "not a mwai database")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        result = mwai(service, *command, "--db", str(path))
        assert result.returncode == 2, (path, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        if digest is None:
            assert not path.exists() and not path.parent.exists()
        else:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
            assert not Path(f"{path}-wal").exists()


@pytest.mark.parametrize(("command", "options"), [
    ("runs", ["--status", "--issue", "--limit", "--since", "--json", "--db"]),
    ("show", ["RUN_ID", "--follow", "--json", "--db"]),
    ("stats", ["--since", "--top", "--json"]),
    ("monitor", ["--interval", "--recent", "--once", "--json"]),
    ("requeue", ["RUN_ID", "--json"]),
    ("cancel", ["RUN_ID", "--wait", "--json"]),
    ("unlock", ["--older-than", "--dry-run", "--json"]),
    ("prune", ["--older-than", "--archive", "--batch-size", "--vacuum", "--dry-run", "--json"]),
    ("alert", ["--window", "--threshold", "--unit-failed", "--json"]),
    ("check", ["--connect", "--json"]),
])
def test_help_explains_every_option(command: str, options: list[str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The real parser of `mwai`, in-process (one subprocess per command would only add time).
    with pytest.raises(SystemExit) as exited:
        build_parser(COMMAND_GROUPS).parse_args([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    for option in options:
        at = [n for n, line in enumerate(lines) if line.strip().startswith(option)]
        assert at, f"`mwai {command} --help` does not list {option}"
        line = lines[at[-1]].strip()
        explanation = line.split("  ", 1)[1].strip() if "  " in line else lines[at[-1] + 1]
        assert len(explanation.strip()) > 5, f"{command} {option} is not explained"


def test_check_reports_each_problem_with_the_setting_name(svc: tuple[Service, dict[str, int]]
                                                          ) -> None:
    service, _ = svc
    good = mwai(service, "check")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "configuration: ok" in good.stdout
    assert f"schema version {SCHEMA_VERSION} (current)" in good.stdout
    env = {**service.env, "MWAI_WORKERS": "many", "MWAI_PROCESSOR": "jira",
           "MWAI_ALERT_EMAIL_TO": "ops@example.com", "JIRA_BASE_URL": "jira.example.com"}
    bad = mwai(service, "check", "--json", env=env)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    problems = "\n".join(report["configuration"]["problems"])
    assert "MWAI_WORKERS='many': expected an integer" in problems
    assert report["database"]["ok"] is True
    human = mwai(service, "check", env={**env, "MWAI_WORKERS": "2"})
    assert human.returncode == 1
    for name in ("JIRA_EMAIL", "JIRA_API_TOKEN", "GH_TOKEN", "MWAI_REPO_URL",
                 "ANTHROPIC_API_KEY", "MWAI_ALERT_EMAIL_TO", "JIRA_BASE_URL="):
        assert f"PROBLEM {name}" in human.stdout, (name, human.stdout)


# ------------------------------------------------------------------ prune


def test_prune_removes_old_finished_runs_while_webhooks_are_acknowledged(tmp_path: Path
                                                                         ) -> None:
    db = tmp_path / "mwai.sqlite3"
    make_old_runs(db, 600, 40 * DAY_S, queued_too=True)
    old_ids = [run_id for (run_id,) in rows(db, "SELECT id FROM runs WHERE issue_key LIKE "
                                                "'OLD-%'")]
    service = Service(tmp_path, MWAI_HEARTBEAT_S="0.2").start()  # the plain `mwai serve`
    statuses: list[int] = []
    done = threading.Event()

    def keep_posting() -> None:
        n = 0
        while not done.is_set():
            n += 1
            status, _ = service.post_webhook(automation_payload(f"NEW-{n}"))
            statuses.append(status)
            time.sleep(0.02)

    poster = threading.Thread(target=keep_posting)
    archive = tmp_path / "old-runs.jsonl"
    try:
        post(service, "NEW-100000")
        poster.start()
        posted_before = len(statuses)
        result = mwai(service, "prune", "--older-than", "30d", "--batch-size", "25",
                      "--archive", str(archive), "--json", timeout_s=120)
        posted_during = len(statuses) - posted_before
        done.set()
        poster.join(timeout=10)
        wait_for(db, "SELECT count(*) FROM runs WHERE status IN ('queued', 'running') "
                     "AND issue_key LIKE 'NEW-%'", (), [(0,)])
    finally:
        done.set()
        service.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["runs"] == 600 and report["events"] == 600 * 4
    assert posted_during >= 5, "no webhook was posted while the prune ran"
    assert statuses and set(statuses) == {200}
    remaining = dict(rows(db, "SELECT issue_key, status FROM runs WHERE issue_key NOT LIKE "
                              "'NEW-%'"))
    assert remaining == {"OLDQ-1": "queued"}
    new_runs = rows(db, "SELECT count(*) FROM runs WHERE issue_key LIKE 'NEW-%'")[0][0]
    assert new_runs == len(statuses) + 1
    old_list = ",".join(map(str, old_ids))
    assert rows(db, f"SELECT count(*) FROM events WHERE run_id IN ({old_list})")[0][0] == 0
    archived = [json.loads(line) for line in archive.read_text().splitlines()]
    assert sorted(item["id"] for item in archived) == sorted(old_ids)
    assert all(len(item["events"]) == 4 for item in archived)

    again = mwai(service, "prune", "--older-than", "30d", "--vacuum", "--dry-run")
    assert again.returncode == 0
    assert again.stdout.startswith("would delete 0 finished runs")
    vacuumed = mwai(service, "prune", "--older-than", "30d", "--vacuum")
    assert vacuumed.returncode == 0 and "vacuumed: database" in vacuumed.stdout
