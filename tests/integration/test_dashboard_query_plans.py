"""Every dashboard query is a range of an index, and the pages need no sort: the
runs page, the run page and the issue page cost the same at a million runs as at a
hundred (keyset pagination, never OFFSET). Same databases and rules as
test_ops_query_plans.py: with and without ANALYZE statistics."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mwai.queue.schema import Q
from tests.integration.test_ops_query_plans import (  # noqa: F401 (fixtures)
    NOT_TABLE_SCANS,
    db,
    filled,
)

PAGE = {"since": 0.0, "before_updated": 1e18, "before_id": 2**62, "limit": 51}
PARAMS: dict[str, dict[str, Any]] = {
    "ui_runs_page": {**PAGE, "prefix_low": None, "prefix_high": None},
    "ui_runs_page_status": {**PAGE, "status": "failed", "prefix_low": "A-",
                            "prefix_high": "A-\U0010ffff"},
    "ui_issue_runs": {"issue_key": "A-1", "before_id": 2**62, "limit": 51},
    "ui_issue_search": {"prefix_low": "A-1", "prefix_high": "A-1\U0010ffff", "limit": 20},
    "ui_active_runs": {"limit": 50},
    "ui_daily_runs": {"since": 0.0, "until": 1e18},
    "ui_daily_cost": {"since": 0.0, "until": 1e18},
    "ui_change_mark": {},
}
# The pages a person pages through: no sort at all (the index gives the order).
PAGED = ("ui_runs_page", "ui_runs_page_status", "ui_issue_runs", "ui_issue_search")
# The charts group a range of a covering index by day: the grouping's own b-tree
# holds at most 30 days x 5 statuses, whatever the table size.
GROUPED = ("ui_daily_runs", "ui_daily_cost")


def plan(path: Path, name: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + Q[name], PARAMS[name])]
    finally:
        conn.close()


def test_every_dashboard_query_is_checked_here() -> None:
    assert {name for name in Q if name.startswith("ui_")} == set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_dashboard_query_searches_an_index(db: Path, name: str) -> None:  # noqa: F811
    details = plan(db, name)
    scans = [d for d in details if d.startswith("SCAN") and not NOT_TABLE_SCANS.match(d)]
    assert not scans, f"{name}: {details}"
    assert any(d.startswith("SEARCH") for d in details), f"{name}: {details}"
    if name in PAGED:
        assert not any("TEMP B-TREE" in d for d in details), f"{name} sorts: {details}"
    if name in GROUPED:
        assert any("COVERING INDEX" in d for d in details), f"{name}: {details}"


def test_the_cost_index_holds_only_runs_with_a_cost(db: Path) -> None:  # noqa: F811
    # The intake inserts runs without a cost: a partial index costs it nothing.
    conn = sqlite3.connect(db)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs_created_cost'"
                              ).fetchone()
    finally:
        conn.close()
    assert sql.endswith("WHERE cost_usd IS NOT NULL"), sql
