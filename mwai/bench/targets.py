"""The performance targets of `mwai bench` and how a result document is judged.

A target reads its figure from the JSON document (``None`` when that section did not
run or could not measure it), so a saved document can be judged again later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    unit: str
    op: str  # ">=", "<=", "<", "=="
    limit: float
    read: Callable[[dict[str, Any]], float | None]


def _get(document: dict[str, Any], *path: str | int) -> Any:
    value: Any = document
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or len(value) <= part:
                return None
        elif not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def intake_level(document: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    """The intake section's figures at one concurrency (None: not measured)."""
    for level in _get(document, "sections", "intake", "levels") or []:
        if level.get("concurrency") == concurrency:
            return dict(level)
    return None


def _intake_c32(field: str) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        level = intake_level(document, 32)
        if level is None:
            return None
        value = level.get(field) if field == "ratio" else _get(level, "mwai", field)
        return None if value is None else float(value)

    return read


def _intake_errors(document: dict[str, Any]) -> float | None:
    levels = _get(document, "sections", "intake", "levels")
    if not levels:
        return None
    return float(sum(int(_get(level, "mwai", "errors") or 0) for level in levels))


def _path(*path: str | int) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        value = _get(document, *path)
        return None if value is None else float(value)

    return read


def _throughput(workers: int) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        for row in _get(document, "sections", "throughput", "workers") or []:
            if row.get("workers") == workers and row.get("runs_per_s") is not None:
                return float(row["runs_per_s"])
        return None

    return read


def _largest(field: str, *inner: str) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        sizes = _get(document, "sections", "scale", "sizes") or []
        value = _get(sizes[-1], field, *inner) if sizes else None
        return None if value is None else float(value)

    return read


def _dashboard_pages(*names: str) -> Callable[[dict[str, Any]], float | None]:
    """The worst p99 of these dashboard pages at the largest size."""
    def read(document: dict[str, Any]) -> float | None:
        sizes = _get(document, "sections", "scale", "sizes") or []
        values = [_get(sizes[-1], "dashboard", name, "p99_ms") for name in names] if sizes \
            else []
        found = [float(value) for value in values if value is not None]
        return max(found) if found else None

    return read


TARGETS = (
    Target("intake_ratio", "intake at c=32 / bare aiohttp", "x", ">=", 0.40,
           _intake_c32("ratio")),
    Target("intake_p99", "intake p99 ack latency at c=32", "ms", "<=", 10, _intake_c32("p99_ms")),
    Target("intake_errors", "intake errors (all concurrencies)", "", "==", 0, _intake_errors),
    # The definition: from the webhook's 200 (as the client received it) to
    # the run's claim. p50_ms/p99_ms (from the enqueue, before its fsync) are shown too.
    Target("pickup_p50", "pickup p50 (webhook's 200 -> claim)", "ms", "<=", 2,
           _path("sections", "pickup", "after_ack", "p50_ms")),
    Target("pickup_p99", "pickup p99 (webhook's 200 -> claim)", "ms", "<=", 10,
           _path("sections", "pickup", "after_ack", "p99_ms")),
    Target("throughput_8", "no-op runs/s with 8 workers", "runs/s", ">=", 2000, _throughput(8)),
    Target("health_p99", "/health/detailed p99 at the largest size", "ms", "<=", 5,
           _largest("health_detailed", "p99_ms")),
    Target("stats_s", "`mwai stats --since 7d` at the largest size", "s", "<", 1,
           _largest("stats", "wall_s")),
    Target("prune_p99", "intake p99 while `mwai prune` runs", "ms", "<=", 50,
           _path("sections", "scale", "prune", "intake", "p99_ms")),
    Target("dashboard_runs_p99", "dashboard runs page p99 at the largest size (first and "
           "middle page)", "ms", "<=", 50, _dashboard_pages("runs_page", "runs_page_deep")),
    Target("dashboard_run_p99", "dashboard run page p99 at the largest size", "ms", "<=", 50,
           _dashboard_pages("run_page")),
    Target("dashboard_viewers", "intake with 20 live dashboard viewers / without", "x", ">=",
           0.90, _path("sections", "dashboard", "ratio")),
    Target("rss_idle", "RSS idle", "MB", "<=", 60, _path("sections", "footprint", "rss_idle_mb")),
    Target("rss_load", "RSS under intake load (peak)", "MB", "<=", 120,
           _path("sections", "footprint", "rss_load_mb")),
    Target("ready_empty", "start -> ready, empty database", "s", "<", 1,
           _path("sections", "footprint", "ready_empty_s")),
    Target("ready_largest", "start -> ready at the largest size", "s", "<", 2,
           _largest("ready_s")),
    Target("sandbox_overhead", "sandbox start overhead per launch (p50)", "ms", "<=", 50,
           _path("sections", "sandbox", "overhead_p50_ms")),
)


def evaluate(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured value and PASS/FAIL (None: not measured)."""
    rows = []
    for target in TARGETS:
        value = target.read(document)
        passed: bool | None = None
        if value is not None:
            passed = {
                ">=": value >= target.limit,
                "<=": value <= target.limit,
                "<": value < target.limit,
                "==": value == target.limit,
            }[target.op]
        rows.append({"key": target.key, "target": target.label, "unit": target.unit,
                     "op": target.op, "limit": target.limit, "value": value,
                     "passed": passed})
    return rows
