"""``mwai bench``: measure the service against its performance targets.

Every section starts the real ``mwai serve`` as a subprocess on 127.0.0.1 with a
fresh temporary database and production settings (MWAI_SYNCHRONOUS=FULL, JSON
logs to a file), with the no-op processor, and drives it over HTTP:

* intake: webhooks/s and ack latency at concurrency 1, 8, 32, next to a bare
  aiohttp endpoint (the framework's ceiling on this machine);
* pickup: webhook -> claim latency with idle workers;
* throughput: no-op runs/s from a pre-filled queue, 1 and 8 workers;
* footprint: RSS idle and under load, time from start to the first /health;
* dashboard: webhooks/s with 20 live dashboard viewers connected, next to none;
* scale: /health/detailed, the dashboard's runs and run pages, ``mwai stats`` and
  ``mwai runs`` at growing database sizes, and webhook latency while ``mwai prune``
  deletes half.

Fixtures are written straight into SQLite by the bench's own SQL (fixtures.py). The
other concepts have a module each: service.py (the subprocesses), targets.py,
report.py, machine.py, loadgen.py, dashboard.py; command.py is ``mwai bench`` itself.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from mwai.bench import dashboard as dash
from mwai.bench import fixtures
from mwai.bench import loadgen as lg
from mwai.bench import sandbox as bench_sandbox
from mwai.bench.service import (
    Child,
    RssSampler,
    has_subcommand,
    rss_mb,
    run_operator_command,
    service_env,
    start_bare,
    start_serve,
)

SECTIONS = ("intake", "pickup", "throughput", "footprint", "dashboard", "scale", "sandbox")
CONCURRENCIES = (1, 8, 32)


@dataclass(frozen=True)
class Sizes:
    """How long and how big every section is; --quick shrinks all of it."""

    intake_s: float
    warmup_s: float
    pickup_count: int
    pickup_gap_s: float
    queue_runs: int
    throughput_s: float
    footprint_s: float
    scale_runs: tuple[int, ...]
    health_s: float
    prune_concurrency: int
    prune_limit_s: float
    sandbox_launches: int = 200


FULL = Sizes(intake_s=10, warmup_s=2, pickup_count=300, pickup_gap_s=0.02, queue_runs=100_000,
             throughput_s=15, footprint_s=10, scale_runs=(10_000, 100_000, 1_000_000),
             health_s=5, prune_concurrency=8, prune_limit_s=90)
QUICK = Sizes(intake_s=1, warmup_s=0, pickup_count=20, pickup_gap_s=0.01, queue_runs=2_000,
              throughput_s=1.5, footprint_s=1, scale_runs=(2_000,), health_s=1,
              prune_concurrency=8, prune_limit_s=20, sandbox_launches=20)


class Bench:
    """The sections of one benchmark, each on fresh databases under ``root``."""

    def __init__(self, root: Path, sizes: Sizes, prefer_wrk: bool,
                 progress: Callable[[str], None], keep: bool = False) -> None:
        self.root = root
        self.keep = keep
        self.sizes = sizes
        self.prefer_wrk = prefer_wrk
        self.progress = progress
        self.secret = secrets.token_urlsafe(24)
        self._counter = 0
        self._key_base = 0
        self._cli_available: dict[str, bool] = {}

    # --------------------------------------------------------- processes

    def new_db(self, name: str) -> Path:
        self._counter += 1
        folder = self.root / f"{self._counter:02d}-{name}"
        folder.mkdir()
        return folder / "mwai.sqlite3"

    def serve(self, db: Path, workers: int | None = None) -> Child:
        return start_serve(db, self.secret, workers)

    def bare(self) -> Child:
        return start_bare(self.root, self.secret)

    def webhook_spec(self, child: Child, concurrency: int, duration_s: float) -> lg.LoadSpec:
        self._key_base += 1_000_000_000  # every load gets keys no other load used
        return lg.LoadSpec(
            url=child.url("/webhook/jira"),
            concurrency=concurrency,
            duration_s=duration_s,
            headers={"Content-Type": "application/json",
                     "X-Moveware-Webhook-Secret": self.secret},
            body_template=orjson.dumps(fixtures.PAYLOAD).decode(),
            key_prefix="BENCH",
            key_base=self._key_base,
        )

    def load(self, spec: lg.LoadSpec) -> lg.LoadResult:
        return lg.run_load(spec, self.prefer_wrk)

    def cli(self, db: Path, *arguments: str, limit_s: float = 1800) -> dict[str, Any]:
        """Wall time of an operator command as a user runs it (interpreter start included).

        A command still running after ``limit_s`` is interrupted (SIGINT, as Ctrl-C).
        """
        name = arguments[0]
        if name not in self._cli_available:
            self._cli_available[name] = has_subcommand(name)
        command = "mwai " + " ".join(arguments)
        if not self._cli_available[name]:
            return {"command": command, "available": False, "wall_s": None,
                    "note": "not available (the subcommand does not exist in this mwai)"}
        return run_operator_command(db, arguments, service_env(db, self.secret, None, None),
                                    limit_s)

    # ---------------------------------------------------------- sections

    def intake(self) -> dict[str, Any]:
        db = self.new_db("intake")
        service = self.serve(db)
        bare = self.bare()
        levels: list[dict[str, Any]] = []
        try:
            if self.sizes.warmup_s:
                self.load(self.webhook_spec(service, 8, self.sizes.warmup_s))
                self.load(self.webhook_spec(bare, 8, self.sizes.warmup_s))
            for concurrency in CONCURRENCIES:
                self.progress(f"intake: concurrency {concurrency}")
                mwai = self.load(self.webhook_spec(service, concurrency, self.sizes.intake_s))
                ceiling = self.load(self.webhook_spec(bare, concurrency, self.sizes.intake_s))
                ratio = mwai.rate_per_s / ceiling.rate_per_s if ceiling.rate_per_s else None
                levels.append({"concurrency": concurrency, "mwai": mwai.as_dict(),
                               "bare_aiohttp": ceiling.as_dict(),
                               "ratio": None if ratio is None else round(ratio, 3)})
        finally:
            bare.stop()
            service.stop()
        sizes = fixtures.table_sizes(db)
        return {
            "duration_s": self.sizes.intake_s,
            "levels": levels,
            "runs_stored": sizes["runs"],
            "errors": sum(level["mwai"]["errors"] for level in levels),
        }

    def pickup(self) -> dict[str, Any]:
        db = self.new_db("pickup")
        service = self.serve(db)
        try:
            acks, errors = asyncio.run(self._paced_webhooks(service))
            rows: list[fixtures.RunTimes] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rows = fixtures.run_times(db)
                if rows and all(row["started_at"] is not None for row in rows):
                    break
                time.sleep(0.1)
        finally:
            service.stop()
        # (run id, enqueued at, claimed at) of every claimed run
        claimed = [(row["id"], row["created_at"], row["started_at"]) for row in rows
                   if row["started_at"] is not None]
        pickup_ms = [(started - created) * 1000 for _, created, started in claimed]
        after_ack_ms = [(started - acks[run_id]) * 1000 for run_id, _, started in claimed
                        if run_id in acks]
        stats = lg.summarize(pickup_ms)
        return {
            "webhooks": self.sizes.pickup_count,
            "gap_s": self.sizes.pickup_gap_s,
            "claimed": len(claimed),
            "p50_ms": _round(stats["p50_ms"]),
            "p99_ms": _round(stats["p99_ms"]),
            "max_ms": _round(stats["max_ms"]),
            "after_ack": {key: _round(value) for key, value in
                          lg.summarize(after_ack_ms).items()},
            "errors": errors + (len(rows) - len(claimed)),
            "definition": "runs.started_at - runs.created_at: from the enqueue (inside the "
                          "webhook's transaction, before its fsync) to the claim; after_ack "
                          "is from the client's receipt of the 200 to the claim (negative: "
                          "claimed before the 200 reached the client)",
        }

    async def _paced_webhooks(self, service: Child) -> tuple[dict[int, float], int]:
        acks: dict[int, float] = {}
        errors = 0
        headers = {"Content-Type": "application/json", "X-Moveware-Webhook-Secret": self.secret}
        async with aiohttp.ClientSession() as session:
            for index in range(self.sizes.pickup_count):
                body = orjson.dumps({**fixtures.PAYLOAD, "issue_key": f"PICKUP-{index + 1}"})
                async with session.post(service.url("/webhook/jira"), data=body,
                                        headers=headers) as response:
                    answer = await response.read()
                    acked = time.time()
                if response.status != 200:
                    errors += 1
                else:
                    acks[int(orjson.loads(answer)["run_id"])] = acked
                await asyncio.sleep(self.sizes.pickup_gap_s)
        return acks, errors

    def throughput(self) -> dict[str, Any]:
        template = self.new_db("queue-template")
        fixtures.create_db(template)
        started = time.monotonic()
        fixtures.fill_queued(template, self.sizes.queue_runs)
        fill_s = time.monotonic() - started
        rows = []
        for workers in (1, 8):
            self.progress(f"throughput: {workers} worker(s)")
            db = self.new_db(f"throughput-{workers}")
            shutil.copyfile(template, db)
            service = self.serve(db, workers)
            try:
                time.sleep(self.sizes.throughput_s)
                progress = fixtures.progress(db)
                sizes = fixtures.table_sizes(db)
            finally:
                service.stop()
            completed = int(progress["completed"])
            first_s, last_s = progress["first_started_at"], progress["last_finished_at"]
            span_s = None
            if completed and first_s is not None and last_s is not None:
                span_s = last_s - first_s
            rows.append({
                "workers": workers,
                "completed": completed,
                "span_s": _round(span_s),
                "runs_per_s": round(completed / span_s, 1) if span_s else None,
                "events_written": sizes["events"],
                "events_per_s": round(sizes["events"] / span_s, 1) if span_s else None,
            })
        return {"queued_runs": self.sizes.queue_runs, "fill_s": round(fill_s, 3),
                "window_s": self.sizes.throughput_s, "workers": rows, "errors": 0}

    def footprint(self) -> dict[str, Any]:
        db = self.new_db("footprint")
        service = self.serve(db)
        try:
            ready_s = service.ready_s
            time.sleep(1.0)
            idle = rss_mb(service.pid)
            sampler = RssSampler(service.pid)
            result = self.load(self.webhook_spec(service, 32, self.sizes.footprint_s))
            peak = sampler.stop()
            after = rss_mb(service.pid)
        finally:
            service.stop()
        hwm = after["VmHWM"] or 0.0
        return {
            "ready_empty_s": round(ready_s, 3),
            "rss_idle_mb": idle["VmRSS"],
            "rss_load_mb": max(peak, hwm) or None,
            "rss_load_sampled_mb": peak or None,
            "load": result.as_dict(),
            "errors": result.errors,
        }

    def dashboard(self) -> dict[str, Any]:
        db = self.new_db("dashboard")
        service = self.serve(db)
        self.progress(f"dashboard: intake with and without {dash.VIEWERS} live viewers")
        try:
            # Full: 3 rounds of 5 s windows; quick: one round of 1 s windows.
            window_s = max(1.0, self.sizes.intake_s / 2)
            return dash.viewers_cost(service.url,
                                     lambda: self.webhook_spec(service, 32, window_s),
                                     self.load, rounds=3 if self.sizes.intake_s >= 4 else 1)
        finally:
            service.stop()

    def scale(self) -> dict[str, Any]:
        sizes: list[dict[str, Any]] = []
        prune: dict[str, Any] | None = None
        previous: Path | None = None
        for index, runs in enumerate(self.sizes.scale_runs):
            # A fresh database per size: ids grow with time, as in a real one.
            if previous is not None and not self.keep:
                shutil.rmtree(previous.parent, ignore_errors=True)
            db = previous = self.new_db(f"scale-{runs}")
            fixtures.create_db(db)
            self.progress(f"scale: filling {runs} runs")
            started = time.monotonic()
            fixtures.fill_finished(db, runs)
            fill_s = time.monotonic() - started
            service = self.serve(db)
            try:
                health = self.load(lg.LoadSpec(url=service.url("/health/detailed"),
                                               concurrency=1, duration_s=self.sizes.health_s,
                                               method="GET"))
                pages = dash.page_latency(service.url, db, runs, self.sizes.health_s,
                                          self.load)
                stats = self.cli(db, "stats", "--since", "7d")
                failed = self.cli(db, "runs", "--status", "failed")
                if index == len(self.sizes.scale_runs) - 1:
                    prune = self._prune_under_load(db, service)
            finally:
                service.stop()
            sizes.append({"runs": runs, "events": runs * 5, "fill_s": round(fill_s, 3),
                          "db_mb": round(db.stat().st_size / 2**20, 1),
                          "ready_s": round(service.ready_s, 3),
                          "health_detailed": health.as_dict(), "dashboard": pages,
                          "stats": stats,
                          "runs_failed": failed})
        errors = sum(size["health_detailed"]["errors"] for size in sizes)
        errors += sum(page["errors"] for size in sizes for page in size["dashboard"].values())
        if prune is not None and prune.get("intake"):
            errors += prune["intake"]["errors"]
        return {"sizes": sizes, "prune": prune, "errors": errors}

    def _prune_under_load(self, db: Path, service: Child) -> dict[str, Any]:
        cutoff = time.time() - 30 * fixtures.DAY_S
        before = fixtures.old_finished_runs(db, cutoff)
        self.progress(f"scale: prune under load ({before} old runs, at most "
                      f"{self.sizes.prune_limit_s:.0f} s)")
        spec = self.webhook_spec(service, self.sizes.prune_concurrency, 3600)
        load = lg.start_load(spec, self.prefer_wrk)
        try:
            time.sleep(max(0.0, load.start_at - time.time()) + 0.5)  # the load is on
            command = self.cli(db, "prune", "--older-than", "30d",
                               limit_s=self.sizes.prune_limit_s)
            if not command["available"]:
                # Still collect the load's numbers: they show the baseline without a prune.
                time.sleep(1.0)
        finally:
            # An hour-long load must not outlive a failed bench.
            load.stop()
        intake = load.result()
        after = fixtures.old_finished_runs(db, cutoff)
        deleted = before - after
        rate = deleted / command["wall_s"] if command.get("wall_s") else None
        return {"old_runs_before": before, "old_runs_after": after, "deleted": deleted,
                "runs_per_s": None if rate is None else round(rate, 1),
                "projected_s": round(before / rate, 1) if rate else None,
                "prune": command,
                "intake": intake.as_dict() if command["available"] else None,
                "baseline_intake": None if command["available"] else intake.as_dict()}

    def sandbox(self) -> dict[str, Any]:
        result = bench_sandbox.measure(self.root, self.sizes.sandbox_launches)
        result["errors"] = 0 if result["available"] else 1
        return result

    def run(self, only: Sequence[str]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name in SECTIONS:
            if name in only:
                self.progress(f"{name} ...")
                started = time.monotonic()
                results[name] = getattr(self, name)()
                results[name]["section_s"] = round(time.monotonic() - started, 1)
        return results


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
