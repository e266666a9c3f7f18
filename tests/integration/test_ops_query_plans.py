"""Every query behind mwai runs / stats / monitor / alert / unlock / prune uses an index.

At a million runs a full table scan of runs or events makes `mwai stats` or
`mwai runs --status failed` take seconds; EXPLAIN QUERY PLAN shows it.
The plans are checked on a database with some rows and ANALYZE statistics, as
`mwai serve` leaves it (PRAGMA optimize on close).
"""

from __future__ import annotations

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
    "ops_stats_by_status": {"since": 0.0},
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


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plans") / "mwai.sqlite3"

    async def fill() -> None:
        store = Store(str(path), synchronous="OFF")
        await store.open()
        try:
            for n in range(200):
                await store.enqueue(f"A-{n % 40}", "{}")
            while (run := await store.claim("p:1:x/w1", 60)) is not None:
                if run.id % 5 == 0:
                    await store.fail(run.id, run.worker, f"boom {run.id}")
                elif run.id % 7:
                    await store.complete(run.id, run.worker)
                else:
                    break
        finally:
            await store.close()

    import asyncio

    asyncio.run(fill())
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")
    conn.close()
    return path


def plan(db: Path, name: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("EXPLAIN QUERY PLAN " + Q[name], PARAMS[name]).fetchall()
    finally:
        conn.close()
    return [row[3] for row in rows]


def test_every_operator_query_has_parameters_listed_here() -> None:
    ops_queries = {name for name in Q if name.startswith("ops_")}
    not_planned = {"ops_vacuum", "ops_checkpoint", "ops_schema_version", "ops_processes",
                   "ops_page_counts",
                   "ops_process"}  # processes is a handful of rows; the others are not queries
    assert ops_queries - not_planned <= set(PARAMS), ops_queries - not_planned - set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_query_uses_an_index_not_a_full_scan(db: Path, name: str) -> None:
    details = plan(db, name)
    full_scans = [d for d in details
                  if d.startswith(("SCAN runs", "SCAN events", "SCAN r", "SCAN q"))
                  and "INDEX" not in d]
    assert not full_scans, f"{name}: {details}"


@pytest.mark.parametrize("name", ["ops_runs_by_status", "ops_stats_by_status",
                                  "ops_slowest_runs", "ops_error_counts",
                                  "ops_count_status_since", "ops_stuck_runs"])
def test_hot_queries_search_a_range_of_an_index(db: Path, name: str) -> None:
    details = plan(db, name)
    assert any(d.startswith("SEARCH") and "INDEX" in d for d in details), f"{name}: {details}"
    assert not any(d.startswith("SCAN runs") for d in details), f"{name}: {details}"


@pytest.mark.parametrize("name", ["ops_prune_events", "ops_prune_deliveries", "ops_prune_run",
                                  "ops_runs_by_ids", "ops_prune_candidates"])
def test_batch_statements_look_up_their_ids_by_primary_key(db: Path, name: str) -> None:
    # Walking runs_status_updated instead would read every old run for every batch.
    details = plan(db, name)
    assert any("PRIMARY KEY" in d for d in details), f"{name}: {details}"
    assert not any("runs_status_updated" in d for d in details), f"{name}: {details}"


if __name__ == "__main__":  # print every plan: python -m tests.integration.test_ops_query_plans DB
    import sys

    for query in sorted(PARAMS):
        print(query, plan(Path(sys.argv[1]), query))
