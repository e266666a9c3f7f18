"""Every query behind mwai runs / stats / monitor / alert / unlock / prune uses an index,
and every query of the service's hot path searches one.

At a million runs a full table scan of runs or events makes `mwai stats` or
`mwai runs --status failed` take seconds; EXPLAIN QUERY PLAN shows it. A full
*index* scan (`SCAN runs USING INDEX ...`) reads as many entries as the table
has rows, so it counts as a scan too: only a `SEARCH` (a range of an index) is
accepted. The plans are checked on a database with some rows, once with ANALYZE
statistics, as `mwai serve` leaves it (PRAGMA optimize on close), and once
without, as a new database is.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mwai.queue.schema import Q
from mwai.queue.store import Store

PARAMS: dict[str, dict[str, Any]] = {
    "ops_runs_recent": {"since": 0.0, "limit": 20},
    "ops_runs_by_status": {"status": "failed", "since": 0.0, "limit": 20},
    "ops_runs_by_issue": {"issue_key": "A-1", "status": None, "since": 0.0, "limit": 20},
    "ops_stats_by_status": {"since": 0.0, "now": 1e12},
    "ops_slowest_runs": {"since": 0.0, "limit": 10},
    "ops_error_counts": {"since": 0.0, "limit": 100},
    "ops_count_status_since": {"status": "failed", "since": 0.0},
    "ops_failed_since": {"since": 0.0, "limit": 100},
    "ops_running_runs": {"limit": 50},
    "ops_stuck_runs": {"stuck_before": 1e12, "limit": 1000},
    "ops_locked_runs": {"limit": 100},
    "ops_lock_of_run": {"run_id": 1, "locked_by": "x/w1"},
    "ops_prune_count": {"before": 1e12},
    "ops_prune_events_count": {"before": 1e12},
    "ops_prune_candidates": {"before": 1e12, "after_id": 0, "limit": 500},
    "ops_runs_by_ids": {"ids": "[1, 2]"},
    "ops_events_by_run_ids": {"ids": "[1, 2]"},
    "ops_prune_events": {"run_id": 1, "before": 1e12},
    "ops_prune_deliveries": {"run_id": 1, "before": 1e12},
    "ops_prune_run": {"run_id": 1, "before": 1e12},
    "ops_clear_lock": {"run_id": 1, "locked_by": "x/w1", "now": 1.0},
    "health_counts": {"stuck_before": 1e12},
    "events_of_run": {"run_id": 1, "after_id": 0, "limit": 100},
}


# The service's own statements, run per webhook (the delivery dedup, the
# coalescing lookup), per claim, per lease tick (renew, finish, requeue, lease
# recovery, cancel requests) and per health probe. They must stay flat however
# many finished runs pile up.
HOT_PARAMS: dict[str, dict[str, Any]] = {
    "find_delivery": {"delivery_id": "d-1"},
    "queued_run_for_issue": {"issue_key": "A-1"},
    "claim": {"worker": "p:2:x/w1", "now": 1e12, "lease_expires_at": 1e12},
    "renew_lease": {"run_id": 1, "worker": "p:1:x/w1", "now": 1.0, "lease_expires_at": 2.0},
    "finish_run": {"run_id": 1, "worker": "p:1:x/w1", "status": "completed",
                   "last_error": None, "now": 1.0},
    "requeue_running": {"run_id": 1, "available_at": 1.0, "last_error": None,
                        "attempt_delta": 0, "now": 1.0},
    "close_run": {"run_id": 1, "status": "failed", "last_error": "x", "now": 1.0},
    "inherit_into_queued": {"run_id": 1, "attempts": 1, "available_at": 1.0, "now": 1.0},
    "update_run_result": {"run_id": 1, "action": None, "branch": None, "pr_url": None,
                          "cost_usd": None, "input_tokens": None, "output_tokens": None,
                          "now": 1.0},
    "expired_runs": {"now": 1e12, "process_id": "p:2:x"},
    "runs_of_process": {"prefix_low": "p:1:x/", "prefix_high": "p:1:x/\U0010ffff"},
    "cancel_requests": {"prefix_low": "p:1:x/", "prefix_high": "p:1:x/\U0010ffff"},
    "run_status": {"run_id": 1},
    "get_run": {"run_id": 1},
    "health_counts": {"stuck_before": 1e12},
    "ops_stuck_runs": {"stuck_before": 1e12, "limit": 1000},
    "events_of_run": {"run_id": 1, "after_id": 0, "limit": 100},
}

# A SCAN that is not a scan of a stored table: the constant row of a SELECT
# without FROM, the JSON list of ids of a batch, a materialized subquery.
NOT_TABLE_SCANS = re.compile(r"SCAN (CONSTANT ROW|s)$|SCAN (json_each|j) VIRTUAL TABLE INDEX")
# The claim walks the queue in claim order and stops at the first due run whose
# issue has no running run (ORDER BY priority DESC, id LIMIT 1): a SEARCH on
# available_at would have to sort the whole queue on every claim. The walk is
# over runs_queue, a partial index of the queued runs only (checked below), so
# it follows the queue's length, never the table's.
CLAIM_QUEUE_WALK = "SCAN q USING INDEX runs_queue"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Finished, failed, running and queued runs with events and deliveries."""
    path = tmp_path_factory.mktemp("plans") / "mwai.sqlite3"

    async def fill() -> None:
        store = Store(str(path), synchronous="OFF")
        await store.open()
        try:
            for n in range(200):
                await store.enqueue(f"A-{n % 40}", "{}", delivery_id=f"d-{n}")
            while (run := await store.claim("p:1:x/w1", 60)) is not None:
                if run.id % 5 == 0:
                    await store.fail(run.id, run.worker, f"boom {run.id}")
                elif run.id % 7:
                    await store.complete(run.id, run.worker)
                else:
                    break
        finally:
            await store.close()

    asyncio.run(fill())
    return path


@pytest.fixture(scope="module", params=["analyzed", "no statistics"])
def db(request: pytest.FixtureRequest, filled: Path) -> Path:
    if request.param == "no statistics":
        return filled
    path = filled.with_name("analyzed.sqlite3")
    shutil.copyfile(filled, path)
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")
    conn.close()
    return path


def plan(db: Path, name: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        params = PARAMS[name] if name in PARAMS else HOT_PARAMS[name]
        rows = conn.execute("EXPLAIN QUERY PLAN " + Q[name], params).fetchall()
    finally:
        conn.close()
    return [row[3] for row in rows]


def table_scans(details: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    """The steps that read a whole table or a whole index of it."""
    return [d for d in details if d.startswith("SCAN") and not NOT_TABLE_SCANS.match(d)
            and d not in allowed]


def test_every_operator_query_has_parameters_listed_here() -> None:
    ops_queries = {name for name in Q if name.startswith("ops_")}
    not_planned = {"ops_vacuum", "ops_checkpoint", "ops_schema_version", "ops_processes",
                   "ops_page_counts",
                   "ops_process"}  # processes is a handful of rows; the others are not queries
    assert ops_queries - not_planned <= set(PARAMS), ops_queries - not_planned - set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_query_uses_an_index_not_a_full_scan(db: Path, name: str) -> None:
    details = plan(db, name)
    assert not table_scans(details), f"{name}: {details}"


@pytest.mark.parametrize("name", sorted(HOT_PARAMS))
def test_hot_path_queries_search_an_index(db: Path, name: str) -> None:
    details = plan(db, name)
    allowed = (CLAIM_QUEUE_WALK,) if name == "claim" else ()
    assert not table_scans(details, allowed), f"{name} scans: {details}"
    assert any(d.startswith("SEARCH") for d in details), f"{name}: {details}"
    assert not any("TEMP B-TREE" in d for d in details), f"{name} sorts: {details}"


def test_claim_walks_only_the_queue_and_checks_each_issue_by_lookup(db: Path) -> None:
    details = plan(db, "claim")
    assert details == [
        "SEARCH runs USING INTEGER PRIMARY KEY (rowid=?)",
        "SCALAR SUBQUERY 3",
        CLAIM_QUEUE_WALK,
        "CORRELATED SCALAR SUBQUERY 2",
        "SEARCH r USING INDEX runs_one_running_per_issue (issue_key=?)",
        # `mwai pause`: one primary-key lookup of kv 'claims.paused' per claim.
        "SCALAR SUBQUERY 1",
        "SEARCH kv USING PRIMARY KEY (key=?)",
    ], details
    # The walk is bounded by the queue only because runs_queue holds nothing but
    # queued runs: an index over every run would make it a full scan.
    conn = sqlite3.connect(db)
    try:
        partial = {name: flag for _, name, _, _, flag in
                   conn.execute("PRAGMA index_list(runs)").fetchall()}
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs_queue'"
                              ).fetchone()
    finally:
        conn.close()
    assert partial["runs_queue"] == 1
    assert sql.endswith("WHERE status = 'queued'"), sql


def test_enqueue_and_its_delivery_insert_have_no_scan(db: Path) -> None:
    # An INSERT ... VALUES reads nothing; the coalescing ON CONFLICT (issue_key)
    # WHERE status = 'queued' is the unique partial index's own lookup (SQLite
    # refuses the statement unless such an index exists), the same lookup as
    # queued_run_for_issue, whose plan is a SEARCH (above).
    conn = sqlite3.connect(db)
    try:
        for name in ("enqueue", "insert_delivery"):
            params = {param: None for param in re.findall(r":(\w+)", Q[name])}
            details = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + Q[name], params)]
            assert details == [], f"{name}: {details}"
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["ops_runs_by_status", "ops_stats_by_status",
                                  "ops_slowest_runs", "ops_error_counts",
                                  "ops_count_status_since", "ops_stuck_runs"])
def test_operator_views_search_a_range_of_an_index(db: Path, name: str) -> None:
    details = plan(db, name)
    assert any(d.startswith("SEARCH") and "INDEX" in d for d in details), f"{name}: {details}"
    assert not table_scans(details), f"{name}: {details}"


@pytest.mark.parametrize("name", ["ops_prune_events", "ops_prune_deliveries", "ops_prune_run",
                                  "ops_runs_by_ids", "ops_prune_candidates"])
def test_batch_statements_look_up_their_ids_by_primary_key(db: Path, name: str) -> None:
    # Walking runs_status_updated instead would read every old run for every batch.
    details = plan(db, name)
    assert any("PRIMARY KEY" in d for d in details), f"{name}: {details}"
    assert not any("runs_status_updated" in d for d in details), f"{name}: {details}"


if __name__ == "__main__":  # print every plan: python -m tests.integration.test_ops_query_plans DB
    import sys

    for query in sorted({*PARAMS, *HOT_PARAMS}):
        print(query, plan(Path(sys.argv[1]), query))
