"""`mwai bench` arithmetic, load-generator plumbing, fixtures and query plans."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from mwai.bench import command as bench_command
from mwai.bench import fixtures, report, targets
from mwai.bench import loadgen as lg
from mwai.bench import run as bench
from mwai.errors import UsageError
from mwai.queue.schema import Q
from mwai.queue.store import Store

# ------------------------------------------------------------------ percentiles


def test_percentile_nearest_rank_of_one_to_hundred() -> None:
    values = [float(n) for n in range(1, 101)]
    assert lg.percentile(values, 50) == 50.0
    assert lg.percentile(values, 99) == 99.0
    assert lg.percentile(values, 100) == 100.0
    assert lg.percentile(values, 0) == 1.0


def test_percentile_never_invents_a_value() -> None:
    values = [1.0, 2.0, 10.0]
    assert lg.percentile(values, 50) == 2.0
    assert lg.percentile(values, 99) == 10.0
    assert lg.percentile([7.5], 99) == 7.5


def test_percentile_of_nothing_is_none_and_bad_q_is_refused() -> None:
    assert lg.percentile([], 50) is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        lg.percentile([1.0], 101)


def test_summarize_sorts_and_reports_max_and_mean() -> None:
    stats = lg.summarize([3.0, 1.0, 2.0, 100.0])
    assert stats == {"p50_ms": 2.0, "p99_ms": 100.0, "max_ms": 100.0, "mean_ms": 26.5}
    assert lg.summarize([]) == {"p50_ms": None, "p99_ms": None, "max_ms": None,
                                "mean_ms": None}


def test_load_result_rate_and_dict() -> None:
    result = lg.LoadResult("wrk", 8, requests=5000, errors=0, duration_s=2.0, p50_ms=1.0,
                           p99_ms=4.0, max_ms=9.0, mean_ms=1.5)
    assert result.rate_per_s == 2500.0
    assert result.as_dict()["rate_per_s"] == 2500.0
    assert result.as_dict()["concurrency"] == 8


# ---------------------------------------------------------- issue keys and wrk


def test_issue_keys_are_distinct_across_slots_and_runs_and_valid() -> None:
    from mwai.server.webhook import ISSUE_KEY_RE

    keys = {lg.issue_key("BENCH", base, slot, counter)
            for base in (1_000_000_000, 2_000_000_000)
            for slot in range(4) for counter in range(1, 200)}
    assert len(keys) == 2 * 4 * 199
    assert all(ISSUE_KEY_RE.fullmatch(key) for key in keys)


def test_wrk_script_sets_headers_body_and_summary() -> None:
    spec = lg.LoadSpec(url="http://127.0.0.1:1/webhook/jira", concurrency=8, duration_s=1,
                       headers={"X-Moveware-Webhook-Secret": "s3cr]]et"},
                       body_template='{"issue_key": "__KEY__"}', key_base=42)
    script = lg.wrk_script(spec)
    # The value holds "]]", so the long bracket must use a level that does not close early.
    assert 'wrk.headers[ [[X-Moveware-Webhook-Secret]] ] = [=[s3cr]]et]=]' in script
    assert "wrk.method = [[POST]]" in script
    assert "function request()" in script and "42 + slot * 10000000 + counter" in script
    assert lg.WRK_MARKER in script


def test_wrk_script_for_get_has_no_request_function() -> None:
    spec = lg.LoadSpec(url="http://127.0.0.1:1/health", concurrency=1, duration_s=1,
                       method="GET")
    assert "function request()" not in lg.wrk_script(spec)


def test_parse_wrk_output_sums_every_error_kind() -> None:
    line = (lg.WRK_MARKER + '{"requests": 1000, "duration_us": 2000000, "connect": 1, '
            '"read": 2, "write": 0, "status": 3, "timeout": 4, "p50_us": 800, '
            '"p99_us": 4500, "max_us": 12000, "mean_us": 950.5}')
    result = lg.parse_wrk_output("Running 2s test\n" + line + "\nRequests/sec: 500\n", 8)
    assert result.requests == 1000 and result.errors == 10
    assert result.duration_s == 2.0 and result.rate_per_s == 500.0
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (0.8, 4.5, 12.0)


def test_parse_wrk_output_without_summary_shows_wrk_output() -> None:
    with pytest.raises(ValueError, match="unexpected symbol"):
        lg.parse_wrk_output("load.lua:2: unexpected symbol near ']'\n", 1)


# ------------------------------------------------------------------- targets


def _document(**overrides: Any) -> dict[str, Any]:
    level = {"concurrency": 32, "ratio": 0.5,
             "mwai": {"rate_per_s": 3000.0, "p50_ms": 2.0, "p99_ms": 8.0, "max_ms": 12.0,
                      "errors": 0},
             "bare_aiohttp": {"rate_per_s": 6000.0, "p99_ms": 3.0}}
    document: dict[str, Any] = {
        "mwai_version": "0.1.0", "date": "2026-11-29T12:00:00+00:00", "mode": "full",
        "load_generator": "wrk 4.1.0",
        "machine": {"cpu": "Test CPU", "cpus": 2, "memory_mb": 4096, "os": "Linux",
                    "python": "3.11", "sqlite": "3.40", "aiohttp": "3.9",
                    "db_filesystem": "ext4", "load_average": [0.1, 0.1, 0.1]},
        "sections": {
            "intake": {"duration_s": 10, "levels": [level], "errors": 0},
            "pickup": {"webhooks": 300, "claimed": 300, "p50_ms": 1.0, "p99_ms": 3.0,
                       "max_ms": 4.0, "after_ack": {"p50_ms": 0.5, "p99_ms": 2.0}},
            "throughput": {"queued_runs": 100000, "window_s": 15, "workers": [
                {"workers": 1, "completed": 9000, "runs_per_s": 900.0,
                 "events_written": 27000, "events_per_s": 2700.0},
                {"workers": 8, "completed": 30000, "runs_per_s": 2500.0,
                 "events_written": 90000, "events_per_s": 7500.0}]},
            "footprint": {"ready_empty_s": 0.6, "rss_idle_mb": 45.0, "rss_load_mb": 130.0},
            "dashboard": {"viewers": 20, "viewers_connected": 20, "updates_received": 400,
                          "updates_per_viewer_per_s": 2.0, "rounds": 3,
                          "without": {"rate_per_s": 1000.0, "windows": []},
                          "with_viewers": {"rate_per_s": 950.0, "p99_ms": 33.0,
                                           "windows": []},
                          "ratio": 0.95, "errors": 0},
            "scale": {"sizes": [
                {"runs": 10000, "events": 50000, "db_mb": 5.0, "ready_s": 0.7,
                 "health_detailed": {"p50_ms": 1.0, "p99_ms": 9.0},
                 "dashboard": {"runs_page": {"p50_ms": 5.0, "p99_ms": 80.0},
                               "runs_page_deep": {"p50_ms": 5.0, "p99_ms": 9.0},
                               "run_page": {"p50_ms": 2.0, "p99_ms": 90.0}},
                 "stats": {"available": True, "wall_s": 0.4, "exit_code": 0},
                 "runs_failed": {"available": False, "wall_s": None}},
                {"runs": 1000000, "events": 5000000, "db_mb": 500.0, "ready_s": 1.5,
                 "health_detailed": {"p50_ms": 1.0, "p99_ms": 2.0},
                 "dashboard": {"runs_page": {"p50_ms": 5.0, "p99_ms": 12.0},
                               "runs_page_deep": {"p50_ms": 6.0, "p99_ms": 61.0},
                               "run_page": {"p50_ms": 2.0, "p99_ms": 10.0}},
                 "stats": {"available": True, "wall_s": 0.8, "exit_code": 0},
                 "runs_failed": {"available": True, "wall_s": 0.5, "exit_code": 0}}],
                "prune": {"old_runs_before": 500000, "old_runs_after": 0, "deleted": 500000,
                          "runs_per_s": 16666.7, "projected_s": 30.0,
                          "prune": {"available": True, "wall_s": 30.0, "exit_code": 0},
                          "intake": {"rate_per_s": 1000.0, "p99_ms": 60.0, "max_ms": 80.0,
                                     "errors": 0}}},
            "sandbox": {"available": True, "launches": 200, "overhead_p50_ms": 62.0,
                        "plain": {"p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0},
                        "sandboxed": {"p50_ms": 63.0, "p99_ms": 80.0, "max_ms": 90.0}},
        },
    }
    document.update(overrides)
    return document


def _verdicts(document: dict[str, Any]) -> dict[str, bool | None]:
    return {row["key"]: row["passed"] for row in targets.evaluate(document)}


def test_evaluate_reads_every_target_from_the_document() -> None:
    verdicts = _verdicts(_document())
    assert verdicts == {
        "intake_ratio": True, "intake_p99": True, "intake_errors": True, "pickup_p50": True,
        "pickup_p99": True, "throughput_8": True,
        "health_p99": True,  # the largest size counts, not the 9 ms at 10k runs
        "stats_s": True, "prune_p99": False, "rss_idle": True, "rss_load": False,
        "ready_empty": True, "ready_largest": True,
        "sandbox_overhead": False,  # 62 ms per launch, over the 50 ms target
        # The largest size counts, and the worst of the first and the middle runs page.
        "dashboard_runs_p99": False, "dashboard_run_p99": True, "dashboard_viewers": True,
    }


def test_evaluate_marks_sections_that_did_not_run_as_not_measured() -> None:
    verdicts = _verdicts(_document(sections={}))
    assert set(verdicts.values()) == {None}


def test_evaluate_counts_intake_errors_at_any_concurrency() -> None:
    document = _document()
    level = {**document["sections"]["intake"]["levels"][0], "concurrency": 8}
    level["mwai"] = {**level["mwai"], "errors": 3}
    document["sections"]["intake"]["levels"].append(level)
    assert _verdicts(document)["intake_errors"] is False


def test_unavailable_command_is_not_measured() -> None:
    document = _document()
    document["sections"]["scale"]["sizes"][-1]["stats"] = {"available": False, "wall_s": None}
    assert _verdicts(document)["stats_s"] is None


def test_renderers_show_figures_verdicts_and_unavailable_commands() -> None:
    document = _document()
    document["targets"] = targets.evaluate(document)
    table = report.render_table(document)
    assert "PASS" in table and "FAIL" in table and "not available" in table
    markdown = report.render_markdown(document)
    assert markdown.startswith("# mwai benchmarks")
    assert "Test CPU x 2" in markdown and "wrk 4.1.0" in markdown
    assert "quiet machine" in markdown
    assert "| intake at c=32 / bare aiohttp | >= 0.4 x | 0.5 x | PASS |" in markdown
    assert "| 1,000,000 | 5,000,000 |" in markdown
    # Missed targets say by how much.
    assert "- intake p99 while `mwai prune` runs: 60 ms (target <= 50 ms; 1.2x the limit)" \
        in markdown
    assert "RSS under intake load (peak): 130 MB (target <= 120 MB; 1.1x the limit)" in markdown
    assert "| 20 | 20 | 2 | 1,000 | 950 | 33 | 0.95 |" in markdown
    assert "| 1,000,000 | 5 | 12 | 6 | 61 | 2 | 10 |" in markdown


def test_parse_only_accepts_sections_and_refuses_others() -> None:
    assert bench_command.parse_only(None) == list(bench.SECTIONS)
    assert bench_command.parse_only("intake, pickup") == ["intake", "pickup"]
    with pytest.raises(UsageError, match="--only takes"):
        bench_command.parse_only("intake,speed")


def test_bench_from_json_renders_markdown(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from mwai.__main__ import main

    saved = tmp_path / "bench.json"
    saved.write_bytes(orjson.dumps(_document()))
    assert main(["bench", "--from-json", str(saved), "--markdown",
                 "--note", "Measured on a shared machine."]) == 0
    markdown = capsys.readouterr().out
    assert "# mwai benchmarks" in markdown and "Measured on a shared machine." in markdown
    assert main(["bench", "--from-json", str(saved), "--check"]) == 1
    assert main(["bench", "--from-json", str(tmp_path / "missing.json")]) == 2


# ------------------------------------------------------------------- fixtures


def test_finished_fill_spreads_runs_over_sixty_days_with_five_events(tmp_path: Path) -> None:
    db = tmp_path / "scale.sqlite3"
    fixtures.create_db(db)
    fixtures.fill_finished(db, 1000)
    fixtures.fill_finished(db, 3000)
    with sqlite3.connect(db) as connection:
        statuses = dict(connection.execute(
            "SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        cutoff = time.time() - 30 * fixtures.DAY_S
        old = connection.execute(
            "SELECT count(*) FROM runs WHERE updated_at < ?", (cutoff,)).fetchone()[0]
        events = connection.execute(
            "SELECT count(*), count(DISTINCT run_id) FROM events").fetchone()
    assert statuses == {"completed": 3720, "failed": 200, "cancelled": 80}
    assert 1900 <= old <= 2100  # half is older than 30 days: what prune deletes
    assert fixtures.old_finished_runs(db, cutoff) == old
    assert events == (20000, 4000)
    assert not (tmp_path / "scale.sqlite3-wal").exists() or \
        (tmp_path / "scale.sqlite3-wal").stat().st_size == 0


def test_queued_fill_is_claimable_by_the_store(tmp_path: Path) -> None:
    db = tmp_path / "queue.sqlite3"
    fixtures.create_db(db)
    fixtures.fill_queued(db, 50)
    assert fixtures.table_sizes(db) == {"runs": 50, "events": 0, "open_runs": 50}

    async def claim() -> Any:
        store = Store(str(db))
        await store.open()
        try:
            return await store.claim("bench-test/w1", 60)
        finally:
            await store.close()

    run = asyncio.run(claim())
    assert run is not None and run.issue_key == "FILL-1"
    assert orjson.loads(run.payload_json)["event_type"] == "issue_assigned"


# ---------------------------------------------------------------- query plans

# Queries run on every webhook, claim, health probe or lease tick: none may scan
# a whole table (they must stay flat at a million runs). The enqueue INSERT has
# no plan to check: its ON CONFLICT target is the unique partial index itself.
HOT_QUERIES = (
    "find_delivery", "claim", "renew_lease", "finish_run", "requeue_running",
    "queued_run_for_issue", "expired_runs", "runs_of_process", "cancel_requests",
    "get_run", "run_status", "events_of_run", "health_counts",
)


def _plan(connection: sqlite3.Connection, name: str) -> list[str]:
    sql = Q[name]
    params = {param: None for param in re.findall(r":(\w+)", sql)}
    return [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


@pytest.mark.parametrize("name", HOT_QUERIES)
def test_hot_query_uses_an_index(tmp_path: Path, name: str) -> None:
    db = tmp_path / "plans.sqlite3"
    fixtures.create_db(db)
    with sqlite3.connect(db) as connection:
        plan = _plan(connection, name)
    # A SCAN reads a whole table or a whole index, USING INDEX or not. The one
    # scan allowed is the claim's walk of runs_queue: a partial index holding only
    # queued runs, so its size is the queue's, not the table's.
    scans = [step for step in plan
             if step.startswith("SCAN ") and step not in ("SCAN CONSTANT ROW", CLAIM_QUEUE_WALK)]
    assert plan and not scans, f"{name} scans a table or a whole index: {plan}"
    if name == "claim":
        assert CLAIM_QUEUE_WALK in plan


CLAIM_QUEUE_WALK = "SCAN q USING INDEX runs_queue"
