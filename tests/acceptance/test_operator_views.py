"""One vocabulary, exact stats, progress and the terminal (issue 19, points 7, 8, 9).

The database is written with the store's clock steered, so the durations are
known: `mwai runs | show | stats | monitor` must show the same queue wait, run
time and total (mwai.model.run_times) with the same JSON field names.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mwai.queue import clock as mwai_clock
from mwai.queue.store import Store
from tests.acceptance.service import service_env
from tests.acceptance.test_cli_ops import make_old_runs

pytestmark = pytest.mark.slow

DAY_S = 86400.0
RUN_KEYS = {"id", "issue_key", "status", "attempts", "created_at", "updated_at", "started_at",
            "finished_at", "locked_by", "action", "pr_url", "last_error", "created_at_iso",
            "updated_at_iso", "started_at_iso", "finished_at_iso", "queue_wait_s", "run_time_s",
            "total_s"}


def mwai(*args: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mwai", *args],
                          env={**service_env(db, 1), **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def on_a_terminal(*args: str, db: Path, **env: str) -> str:
    """`mwai ...` with stdout on a pseudo-terminal, as an operator's shell runs it."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mwai", *args], stdout=follower,
                               stderr=follower, env={**service_env(db, 1), "COLUMNS": "100",
                                                     **env})
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, float, dict[str, int]]]:
    """Runs with known times: DONE waited 10 s, ran 30 s; WAITING queued 100 s ago."""
    db = tmp_path_factory.mktemp("vocab") / "mwai.sqlite3"
    t0 = time.time() - 3600

    async def fill() -> dict[str, int]:
        store = Store(str(db))
        await store.open()
        real = mwai_clock.now_s
        try:
            mwai_clock.now_s = lambda: t0
            done = await store.enqueue("DONE-1", json.dumps({"issue_key": "DONE-1", "n": 1}))
            mwai_clock.now_s = lambda: t0 + 10
            claimed = await store.claim("host:1:abc/w1", 60)
            assert claimed is not None
            mwai_clock.now_s = lambda: t0 + 40
            await store.complete(claimed.id, claimed.worker)
            mwai_clock.now_s = lambda: time.time() - 100
            waiting = await store.enqueue("WAIT-1", "{}")
        finally:
            mwai_clock.now_s = real
            await store.close()
        return {"done": done.run_id, "waiting": waiting.run_id}

    ids = asyncio.run(fill())
    yield db, t0, ids


def test_queue_wait_run_time_and_total_are_the_same_in_every_view(
        timed: tuple[Path, float, dict[str, int]]) -> None:
    db, _, ids = timed
    runs = {run["id"]: run for run in json.loads(mwai("runs", "--json", db=db).stdout)["runs"]}
    show = json.loads(mwai("show", str(ids["done"]), "--json", db=db).stdout)["run"]
    monitor = {run["id"]: run for run in
               json.loads(mwai("monitor", "--once", "--json", db=db).stdout)["recent_runs"]}
    stats = json.loads(mwai("stats", "--json", db=db).stdout)
    completed = next(item for item in stats["by_status"] if item["status"] == "completed")

    for view in (runs[ids["done"]], show, monitor[ids["done"]]):
        assert (view["queue_wait_s"], view["run_time_s"], view["total_s"]) == (10.0, 30.0, 40.0)
    assert (completed["avg_queue_wait_s"], completed["avg_run_time_s"],
            completed["avg_total_s"]) == (10.0, 30.0, 40.0)
    assert stats["slowest_runs"][0]["total_s"] == 40.0
    waiting = runs[ids["waiting"]]
    assert waiting["run_time_s"] is None and 100 <= waiting["queue_wait_s"] == waiting["total_s"]
    # One schema: a run has the same fields in every listing; show adds its details.
    assert set(runs[ids["done"]]) == set(monitor[ids["done"]]) == RUN_KEYS
    assert RUN_KEYS < set(show) and "payload" in show and "payload_json" not in show
    for document in (stats, json.loads(mwai("monitor", "--once", "--json", db=db).stdout),
                     json.loads(mwai("health", "--json", db=db).stdout)):
        assert isinstance(document["stuck_count"], int)
        assert isinstance(document["stuck_runs"], list)
        assert isinstance(document["queued"], int) and "queue_depth" not in document

    human = mwai("runs", db=db).stdout.splitlines()
    assert human[0].split()[:9] == ["ID", "ISSUE", "STATUS", "TRIES", "CREATED", "WAIT", "RUN",
                                    "TOTAL", "LAST"]
    done_line = next(line for line in human if line.split()[0] == str(ids["done"]))
    assert done_line.split()[-3:] == ["10.0s", "30.0s", "40.0s"]
    shown = mwai("show", str(ids["done"]), db=db).stdout
    assert "queue wait    10.0s" in shown and "run time      30.0s" in shown
    assert "total         40.0s" in shown


def test_requeue_json_gives_the_payload_as_show_does(
        timed: tuple[Path, float, dict[str, int]], tmp_path: Path) -> None:
    db = tmp_path / "copy.sqlite3"
    db.write_bytes(timed[0].read_bytes())
    run_id = str(timed[2]["done"])
    shown = json.loads(mwai("show", run_id, "--json", db=db).stdout)["run"]
    requeued = json.loads(mwai("requeue", run_id, "--json", "--by", "eve", db=db).stdout)
    assert requeued["run"]["payload"] == shown["payload"] == {"issue_key": "DONE-1", "n": 1}
    assert set(requeued["run"]) == set(shown) and requeued["by"] == "eve"
    # Requeued, it starts afresh: no run time until it is claimed again.
    assert (requeued["run"]["status"], requeued["run"]["run_time_s"]) == ("queued", None)


def test_times_show_their_zone_local_or_utc(timed: tuple[Path, float, dict[str, int]]) -> None:
    db, _, ids = timed
    # A POSIX TZ string needs no zone database: 9 h east of UTC, called JST.
    local = mwai("show", str(ids["done"]), db=db, TZ="JST-9").stdout
    utc = mwai("show", str(ids["done"]), "--utc", db=db, TZ="JST-9").stdout
    created = [line for line in local.splitlines() if line.strip().startswith("created")][0]
    created_utc = [line for line in utc.splitlines() if line.strip().startswith("created")][0]
    assert created.endswith(" JST") and created_utc.endswith(" UTC")
    assert int(created.split()[2][:2]) == (int(created_utc.split()[2][:2]) + 9) % 24


def test_stats_is_exact_with_more_than_5000_different_errors(tmp_path: Path) -> None:
    db = tmp_path / "mwai.sqlite3"
    asyncio.run(_create(db))
    now = time.time()
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO runs (issue_key, status, attempts, last_error, created_at, updated_at, "
            "available_at, started_at, finished_at) VALUES (?, 'failed', 1, ?, ?, ?, ?, ?, ?)",
            [(f"E-{n}", f"jira answered 503 for E-{n} after {n} ms", now - 60, now - 30,
              now - 60, now - 50, now - 30) for n in range(7000)])
    conn.close()
    stats = json.loads(mwai("stats", "--json", db=db).stdout)
    failed = next(item for item in stats["by_status"] if item["status"] == "failed")
    assert failed["count"] == 7000
    assert stats["top_errors"][0]["count"] == 7000, "every failed run's error is grouped"
    assert stats["error_patterns"] == 1
    assert "7000  jira answered N for E-N after N ms" in mwai("stats", db=db).stdout


async def _create(db: Path) -> None:
    store = Store(str(db))
    await store.open()
    await store.close()


def test_progress_and_colour_only_on_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "mwai.sqlite3"
    make_old_runs(db, 1500, 40 * DAY_S)  # 500 of them failed
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(db.read_bytes())

    requeue = on_a_terminal("requeue", "--status", "failed", "--by", "ops", db=db)
    assert "requeueing: 100/500" in requeue and "\r\x1b[K" in requeue
    assert "500 of 500 run(s) requeued by ops" in requeue
    piped = mwai("requeue", "--status", "failed", "--since", "1h", db=copy)
    assert "requeueing" not in piped.stdout and "\x1b[" not in piped.stdout

    prune = on_a_terminal("prune", "--older-than", "30d", db=copy)
    assert "pruning runs: " in prune and "/1500" in prune
    assert "deleted 1500 finished runs" in prune

    coloured = on_a_terminal("runs", "--limit", "3", db=db)
    assert "\x1b[1m" in coloured  # the header row in bold
    plain = on_a_terminal("runs", "--limit", "3", db=db, NO_COLOR="1")
    assert "\x1b[" not in plain and "LAST ERROR" in plain
    narrow = on_a_terminal("runs", "--limit", "3", db=db, NO_COLOR="1", COLUMNS="60")
    assert max(len(line) for line in narrow.splitlines()) <= 60
    assert "CREATED" not in narrow and "TOTAL" in narrow
