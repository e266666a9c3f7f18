"""`mwai bench --quick --json` end to end, and the built-in load generator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from mwai.bench import fixtures, targets
from mwai.bench import loadgen as lg
from mwai.bench import run as bench

pytestmark = pytest.mark.slow


def test_quick_bench_measures_every_section_without_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MWAI_")}
    done = subprocess.run(
        [sys.executable, "-m", "mwai", "bench", "--quick", "--json", "--silent",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    document = orjson.loads(done.stdout)

    assert document["mode"] == "quick"
    assert document["machine"]["cpus"] >= 1 and document["machine"]["sqlite"]
    # .ci/run installs wrk, and the bench must pick it over its built-in generator.
    assert document["load_generator"].startswith("wrk"), (
        f"{document['load_generator']}: install wrk (apt-get install wrk, as .ci/run does)")
    assert set(document["sections"]) == set(bench.SECTIONS)
    assert document["errors"] == 0, orjson.dumps(document["sections"]).decode()

    intake = document["sections"]["intake"]
    assert [level["concurrency"] for level in intake["levels"]] == [1, 8, 32]
    for level in intake["levels"]:
        assert level["mwai"]["requests"] > 0 and level["mwai"]["errors"] == 0
        assert level["bare_aiohttp"]["requests"] > 0
        assert level["ratio"] > 0 and level["mwai"]["p99_ms"] >= level["mwai"]["p50_ms"]
    # Every acknowledged webhook is a stored run (distinct keys: nothing coalesced).
    assert intake["runs_stored"] >= sum(level["mwai"]["requests"] for level in intake["levels"])

    pickup = document["sections"]["pickup"]
    assert pickup["claimed"] == pickup["webhooks"] > 0
    assert pickup["p50_ms"] is not None and pickup["p99_ms"] >= pickup["p50_ms"]

    throughput = document["sections"]["throughput"]["workers"]
    assert [row["workers"] for row in throughput] == [1, 8]
    for row in throughput:
        assert row["completed"] > 0 and row["runs_per_s"] > 0
        assert row["events_written"] >= row["completed"] * 3  # claimed, processed, completed

    footprint = document["sections"]["footprint"]
    assert 0 < footprint["rss_idle_mb"] <= footprint["rss_load_mb"]
    assert footprint["ready_empty_s"] > 0

    # The dashboard: 20 live viewers connected and were sent updates while the
    # webhooks came in; the intake was measured without, with and without them again.
    viewers = document["sections"]["dashboard"]
    assert viewers["viewers_connected"] == viewers["viewers"] == 20
    assert viewers["updates_received"] > 0
    windows = viewers["without"]["windows"] + viewers["with_viewers"]["windows"]
    assert len(windows) == 2 * viewers["rounds"] + 1
    assert all(window["requests"] > 0 and window["errors"] == 0 for window in windows)
    assert viewers["ratio"] > 0

    scale = document["sections"]["scale"]
    largest = scale["sizes"][-1]
    for page in ("runs_page", "runs_page_deep", "run_page"):
        assert largest["dashboard"][page]["requests"] > 0, page
        assert largest["dashboard"][page]["errors"] == 0, page
    assert largest["health_detailed"]["requests"] > 0 and largest["ready_s"] > 0
    # This mwai has every operator command the bench times: each one ran and exited 0.
    for command in (largest["stats"], largest["runs_failed"], scale["prune"]["prune"]):
        assert command["available"] is True and command["exit_code"] == 0, command
    prune = scale["prune"]
    # Half of the fixture runs are older than 30 days: the prune deletes them all
    # while webhooks keep being acknowledged.
    assert abs(prune["old_runs_before"] - largest["runs"] // 2) <= largest["runs"] // 100
    assert prune["deleted"] == prune["old_runs_before"] > 0 and prune["old_runs_after"] == 0
    assert prune["intake"]["requests"] > 0 and prune["intake"]["errors"] == 0

    assert {row["key"] for row in document["targets"]} == {t.key for t in targets.TARGETS}
    assert all(row["passed"] in (True, False, None) for row in document["targets"])
    assert not list(tmp_path.iterdir()), "the temporary databases were not removed"


def test_builtin_generator_sends_distinct_keys_and_counts_refusals(tmp_path: Path) -> None:
    runner = bench.Bench(tmp_path, bench.QUICK, prefer_wrk=False, progress=lambda _: None)
    db = runner.new_db("builtin")
    service = runner.serve(db, workers=1)
    try:
        accepted = lg.run_load(runner.webhook_spec(service, 2, 0.5), prefer_wrk=False)
        wrong = runner.webhook_spec(service, 1, 0.3)
        wrong = lg.LoadSpec(**{**wrong.__dict__,
                               "headers": {**wrong.headers, "X-Moveware-Webhook-Secret": "no"}})
        refused = lg.run_load(wrong, prefer_wrk=False)
    finally:
        service.stop()
    assert accepted.generator.startswith("builtin")
    assert accepted.requests > 0 and accepted.errors == 0
    assert refused.requests == 0 and refused.errors > 0
    stored = fixtures.table_sizes(db)["runs"]
    assert stored == accepted.requests  # one run per webhook: every key was new


def test_an_operator_command_gets_ctrl_c_even_when_the_bench_ignores_it(tmp_path: Path) -> None:
    # A bench started in the background (`mwai bench &` in a script) runs with SIGINT
    # ignored; its operator commands must still be interruptible like a user's.
    runner = bench.Bench(tmp_path, bench.QUICK, prefer_wrk=False, progress=lambda _: None)
    db = runner.new_db("follow")
    fixtures.create_db(db)
    fixtures.fill_queued(db, 1)  # never runs: no service is started
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = runner.cli(db, "show", "1", "--follow", limit_s=2.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result["interrupt_sent_after_s"] == 2.0
    assert "killed_after_interrupt_s" not in result, result
    assert result["exit_code"] in (0, 130), result  # --follow ends quietly on Ctrl-C
    assert result["wall_s"] < 2.0 + 10, result
