"""``mwai bench``: measure the service against its performance targets.

Every section starts the real ``mwai serve`` as a subprocess on 127.0.0.1 with a
fresh temporary database and production settings (MWAI_SYNCHRONOUS=FULL, JSON
logs to a file), with the no-op processor, and drives it over HTTP:

* intake: webhooks/s and ack latency at concurrency 1, 8, 32, next to a bare
  aiohttp endpoint (the framework's ceiling on this machine);
* pickup: webhook -> claim latency with idle workers;
* throughput: no-op runs/s from a pre-filled queue, 1 and 8 workers;
* footprint: RSS idle and under load, time from start to the first /health;
* scale: /health/detailed, ``mwai stats`` and ``mwai runs`` at growing
  database sizes, and webhook latency while ``mwai prune`` deletes half.

Fixtures are written straight into SQLite by the ``bench_*`` named queries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from mwai.bench import loadgen as lg
from mwai.cli import actions, alert, inspect
from mwai.cli.main import build_parser
from mwai.queue.store import Q, Store

SECTIONS = ("intake", "pickup", "throughput", "footprint", "scale")
CONCURRENCIES = (1, 8, 32)
PAYLOAD = {
    "event_type": "issue_assigned",
    "issue_key": lg.KEY_PLACEHOLDER,
    "issue_type": "Story",
    "status": "Backlog",
    "assignee_account_id": "5b10ac8d82e05b22cc7d4ef5",
    "project_key": "BENCH",
    "summary": "Add a retry button to the export dialog",
}
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
INTERRUPT_GRACE_S = 60.0  # after Ctrl-C, how long an operator command may take to stop
DAY_S = 86400.0


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


FULL = Sizes(intake_s=10, warmup_s=2, pickup_count=300, pickup_gap_s=0.02, queue_runs=100_000,
             throughput_s=15, footprint_s=10, scale_runs=(10_000, 100_000, 1_000_000),
             health_s=5, prune_concurrency=8, prune_limit_s=90)
QUICK = Sizes(intake_s=1, warmup_s=0, pickup_count=20, pickup_gap_s=0.01, queue_runs=2_000,
              throughput_s=1.5, footprint_s=1, scale_runs=(2_000,), health_s=1,
              prune_concurrency=8, prune_limit_s=20)


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


def _level(document: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    for level in _get(document, "sections", "intake", "levels") or []:
        if level.get("concurrency") == concurrency:
            return dict(level)
    return None


def _intake_c32(field: str) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        level = _level(document, 32)
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
    Target("rss_idle", "RSS idle", "MB", "<=", 60, _path("sections", "footprint", "rss_idle_mb")),
    Target("rss_load", "RSS under intake load (peak)", "MB", "<=", 120,
           _path("sections", "footprint", "rss_load_mb")),
    Target("ready_empty", "start -> ready, empty database", "s", "<", 1,
           _path("sections", "footprint", "ready_empty_s")),
    Target("ready_largest", "start -> ready at the largest size", "s", "<", 2,
           _largest("ready_s")),
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


# ------------------------------------------------------------------ machinery


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get_status(port: int, path: str, timeout_s: float = 1.0) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def rss_mb(pid: int) -> dict[str, float | None]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB."""
    values: dict[str, float | None] = {"VmRSS": None, "VmHWM": None}
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = round(int(rest.split()[0]) / 1024, 1)
    return values


class Child:
    """A server subprocess (mwai serve or the bare app) with its readiness time."""

    def __init__(self, command: Sequence[str], env: dict[str, str], port: int,
                 log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(list(command), env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.ready_s = self._wait_ready(command, started)

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _wait_ready(self, command: Sequence[str], started: float) -> float:
        while time.monotonic() - started < READY_TIMEOUT_S:
            if self.process.poll() is not None:
                self.stop()
                raise BenchError(f"{' '.join(command)} exited with "
                                 f"{self.process.returncode} before it was ready; "
                                 f"see {self.log_path}")
            if http_get_status(self.port, "/health", 0.5) == 200:
                return time.monotonic() - started
            time.sleep(0.005)
        self.stop()
        raise BenchError(f"no /health answer within {READY_TIMEOUT_S:.0f} s; see {self.log_path}")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def has_subcommand(name: str) -> bool:
    """Whether this mwai has ``mwai NAME`` (operator commands may be missing)."""
    parser = build_parser((inspect.register, actions.register, alert.register))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return name in action.choices
    return False


class BenchError(Exception):
    """The benchmark itself could not run (a server did not start, ...)."""


class RssSampler:
    """Samples a process's VmRSS every 100 ms in a thread, for the peak under load."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            rss = rss_mb(self.pid)["VmRSS"]
            if rss is not None:
                self.peak_mb = max(self.peak_mb, rss)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def _default_sigint() -> None:
    """In the child: Ctrl-C as a user's terminal delivers it. A bench started in the
    background (`mwai bench &` in a script) ignores SIGINT, and children inherit
    that: the operator command would then never see the interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Bench:
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

    def env(self, db: Path, port: int | None, workers: int | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MWAI_") and k != "JIRA_WEBHOOK_SECRET"}
        env.update({
            "MWAI_DB": str(db),
            "MWAI_PROCESSOR": "noop",
            "MWAI_SYNCHRONOUS": "FULL",
            "MWAI_LOG_FORMAT": "json",
            "JIRA_WEBHOOK_SECRET": self.secret,
        })
        if port is not None:
            env["MWAI_LISTEN"] = f"127.0.0.1:{port}"
        if workers is not None:
            env["MWAI_WORKERS"] = str(workers)
        return env

    def new_db(self, name: str) -> Path:
        self._counter += 1
        folder = self.root / f"{self._counter:02d}-{name}"
        folder.mkdir()
        return folder / "mwai.sqlite3"

    def serve(self, db: Path, workers: int | None = None) -> Child:
        port = free_port()
        command = [sys.executable, "-m", "mwai", "serve"]
        return Child(command, self.env(db, port, workers), port, db.parent / "serve.log")

    def bare(self) -> Child:
        port = free_port()
        command = [sys.executable, "-m", "mwai.bench.loadgen", "bare", "--port", str(port)]
        return Child(command, self.env(self.root / "none", port, None), port,
                     self.root / "bare.log")

    def webhook_spec(self, child: Child, concurrency: int, duration_s: float) -> lg.LoadSpec:
        self._key_base += 1_000_000_000  # every load gets keys no other load used
        return lg.LoadSpec(
            url=child.url("/webhook/jira"),
            concurrency=concurrency,
            duration_s=duration_s,
            headers={"Content-Type": "application/json",
                     "X-Moveware-Webhook-Secret": self.secret},
            body_template=orjson.dumps(PAYLOAD).decode(),
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
        env = self.env(db, None, None)
        if name not in self._cli_available:
            self._cli_available[name] = has_subcommand(name)
        command = "mwai " + " ".join(arguments)
        if not self._cli_available[name]:
            return {"command": command, "available": False, "wall_s": None,
                    "note": "not available (the subcommand does not exist in this mwai)"}
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "mwai", *arguments, "--db", str(db)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=_default_sigint)
        interrupted = killed = False
        try:
            stdout, stderr = process.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            interrupted = True
            process.send_signal(signal.SIGINT)
            try:
                stdout, stderr = process.communicate(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                # A finding, not a reason to lose the whole run's figures: keep where
                # it was stuck (mwai dumps its threads on SIGUSR1) with its stderr.
                killed = True
                process.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
                process.kill()
                stdout, stderr = process.communicate()
        wall_s = time.monotonic() - started
        result: dict[str, Any] = {"command": command, "available": True,
                                  "wall_s": round(wall_s, 3), "exit_code": process.returncode,
                                  "output_lines": len(stdout.splitlines())}
        if interrupted:
            result["interrupt_sent_after_s"] = limit_s
        if killed:
            result["killed_after_interrupt_s"] = INTERRUPT_GRACE_S
        if process.returncode != 0:
            # A killed command's thread dump is long; keep all of it.
            result["stderr"] = stderr.strip()[-(20_000 if killed else 500):]
        return result

    # ---------------------------------------------------------- fixtures

    def create_db(self, db: Path) -> None:
        async def create() -> None:
            store = Store(str(db))
            await store.open()
            await store.close()

        asyncio.run(create())

    @contextlib.contextmanager
    def fixture_connection(self, db: Path) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(db, isolation_level=None)
        try:
            connection.execute(Q["bench_fixture_cache"])
            yield connection
            connection.execute(Q["bench_checkpoint"]).fetchall()
        finally:
            connection.close()

    def fill_finished(self, db: Path, count: int, span_s: float = 60 * DAY_S) -> None:
        """``count`` more finished runs over the last ``span_s``, five events each."""
        with self.fixture_connection(db) as connection:
            after_id = connection.execute(Q["bench_max_run_id"]).fetchone()[0]
            payload = orjson.dumps({**PAYLOAD, "issue_key": "SCALE-1"}).decode()
            connection.execute(Q["bench_fill_finished_runs"], {
                "count": count, "payload_json": payload, "newest": time.time() - 60,
                "span_s": span_s})
            connection.execute(Q["bench_fill_events"], {"after_id": after_id})

    def fill_queued(self, db: Path, count: int) -> None:
        with self.fixture_connection(db) as connection:
            payload = orjson.dumps({**PAYLOAD, "issue_key": "FILL-1"}).decode()
            connection.execute(Q["bench_fill_queued_runs"], {
                "count": count, "payload_json": payload, "now": time.time()})

    def read(self, db: Path, name: str, **params: Any) -> list[dict[str, Any]]:
        async def query() -> list[dict[str, Any]]:
            store = Store(str(db), readonly=True)
            await store.open()
            try:
                return await store.read_query(name, **params)
            finally:
                await store.close()

        return asyncio.run(query())

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
        sizes = self.read(db, "bench_table_sizes")[0]
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
            rows: list[dict[str, Any]] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rows = self.read(db, "bench_run_times", after_id=0)
                if rows and all(row["started_at"] is not None for row in rows):
                    break
                time.sleep(0.1)
        finally:
            service.stop()
        claimed = [row for row in rows if row["started_at"] is not None]
        pickup_ms = [(row["started_at"] - row["created_at"]) * 1000 for row in claimed]
        after_ack_ms = [(row["started_at"] - acks[row["id"]]) * 1000 for row in claimed
                        if row["id"] in acks]
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
        import aiohttp

        acks: dict[int, float] = {}
        errors = 0
        headers = {"Content-Type": "application/json", "X-Moveware-Webhook-Secret": self.secret}
        async with aiohttp.ClientSession() as session:
            for index in range(self.sizes.pickup_count):
                body = orjson.dumps({**PAYLOAD, "issue_key": f"PICKUP-{index + 1}"})
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
        self.create_db(template)
        started = time.monotonic()
        self.fill_queued(template, self.sizes.queue_runs)
        fill_s = time.monotonic() - started
        rows = []
        for workers in (1, 8):
            self.progress(f"throughput: {workers} worker(s)")
            db = self.new_db(f"throughput-{workers}")
            shutil.copyfile(template, db)
            service = self.serve(db, workers)
            try:
                time.sleep(self.sizes.throughput_s)
                progress = self.read(db, "bench_progress")[0]
                sizes = self.read(db, "bench_table_sizes")[0]
            finally:
                service.stop()
            completed = int(progress["completed"])
            span_s = None
            if completed and progress["last_finished_at"] is not None:
                span_s = progress["last_finished_at"] - progress["first_started_at"]
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

    def scale(self) -> dict[str, Any]:
        sizes: list[dict[str, Any]] = []
        prune: dict[str, Any] | None = None
        previous: Path | None = None
        for index, runs in enumerate(self.sizes.scale_runs):
            # A fresh database per size: ids grow with time, as in a real one.
            if previous is not None and not self.keep:
                shutil.rmtree(previous.parent, ignore_errors=True)
            db = previous = self.new_db(f"scale-{runs}")
            self.create_db(db)
            self.progress(f"scale: filling {runs} runs")
            started = time.monotonic()
            self.fill_finished(db, runs)
            fill_s = time.monotonic() - started
            service = self.serve(db)
            try:
                health = self.load(lg.LoadSpec(url=service.url("/health/detailed"),
                                               concurrency=1, duration_s=self.sizes.health_s,
                                               method="GET"))
                stats = self.cli(db, "stats", "--since", "7d")
                failed = self.cli(db, "runs", "--status", "failed")
                if index == len(self.sizes.scale_runs) - 1:
                    prune = self._prune_under_load(db, service)
            finally:
                service.stop()
            sizes.append({"runs": runs, "events": runs * 5, "fill_s": round(fill_s, 3),
                          "db_mb": round(db.stat().st_size / 2**20, 1),
                          "ready_s": round(service.ready_s, 3),
                          "health_detailed": health.as_dict(), "stats": stats,
                          "runs_failed": failed})
        errors = sum(size["health_detailed"]["errors"] for size in sizes)
        if prune is not None and prune.get("intake"):
            errors += prune["intake"]["errors"]
        return {"sizes": sizes, "prune": prune, "errors": errors}

    def _prune_under_load(self, db: Path, service: Child) -> dict[str, Any]:
        cutoff = time.time() - 30 * DAY_S
        before = self.read(db, "bench_old_finished_runs", before=cutoff)[0]["runs"]
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
        after = self.read(db, "bench_old_finished_runs", before=cutoff)[0]["runs"]
        deleted = before - after
        rate = deleted / command["wall_s"] if command.get("wall_s") else None
        return {"old_runs_before": before, "old_runs_after": after, "deleted": deleted,
                "runs_per_s": None if rate is None else round(rate, 1),
                "projected_s": round(before / rate, 1) if rate else None,
                "prune": command,
                "intake": intake.as_dict() if command["available"] else None,
                "baseline_intake": None if command["available"] else intake.as_dict()}

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


# ---------------------------------------------------------------- the machine


def _mount_fstype(path: Path) -> str | None:
    best, fstype = "", None
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and target.startswith(parts[1]) and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype


def machine(root: Path) -> dict[str, Any]:
    import aiohttp

    cpu_model = None
    memory_mb = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    return {
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "memory_mb": memory_mb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": aiohttp.__version__,
        "db_filesystem": _mount_fstype(root),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# ------------------------------------------------------------------ rendering


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "not measured"}[passed]


def _rows(document: dict[str, Any]) -> Iterator[tuple[str, list[tuple[str, ...]]]]:
    """(section title, table rows) for the figures of every section that ran."""
    sections = document.get("sections", {})
    if "intake" in sections:
        rows: list[tuple[str, ...]] = [
            ("concurrency", "mwai webhooks/s", "p50 ms", "p99 ms", "max ms", "errors",
             "bare aiohttp req/s", "bare p99 ms", "ratio")]
        for level in sections["intake"]["levels"]:
            mwai, bare = level["mwai"], level["bare_aiohttp"]
            rows.append((str(level["concurrency"]), _fmt(mwai["rate_per_s"]),
                         _fmt(mwai["p50_ms"]), _fmt(mwai["p99_ms"]), _fmt(mwai["max_ms"]),
                         _fmt(mwai["errors"]), _fmt(bare["rate_per_s"]), _fmt(bare["p99_ms"]),
                         _fmt(level["ratio"])))
        yield f"Intake ({sections['intake']['duration_s']} s per level)", rows
    if "pickup" in sections:
        pickup = sections["pickup"]
        rows = [("webhooks", "claimed", "p50 ms", "p99 ms", "max ms", "after-ack p50 ms",
                 "after-ack p99 ms")]
        rows.append((_fmt(pickup["webhooks"]), _fmt(pickup["claimed"]), _fmt(pickup["p50_ms"]),
                     _fmt(pickup["p99_ms"]), _fmt(pickup["max_ms"]),
                     _fmt(pickup["after_ack"]["p50_ms"]), _fmt(pickup["after_ack"]["p99_ms"])))
        yield "Pickup (webhook -> claim, idle workers)", rows
    if "throughput" in sections:
        part = sections["throughput"]
        rows = [("workers", "completed", "runs/s", "events written", "events/s")]
        for row in part["workers"]:
            rows.append((str(row["workers"]), _fmt(row["completed"]), _fmt(row["runs_per_s"]),
                         _fmt(row["events_written"]), _fmt(row["events_per_s"])))
        yield (f"No-op run throughput ({_fmt(part['queued_runs'])} runs pre-queued, "
               f"{part['window_s']} s window)"), rows
    if "footprint" in sections:
        part = sections["footprint"]
        rows = [("ready (empty db)", "RSS idle", "RSS under load (peak)")]
        rows.append((_fmt(part["ready_empty_s"], "s"), _fmt(part["rss_idle_mb"], "MB"),
                     _fmt(part["rss_load_mb"], "MB")))
        yield "Footprint", rows
    if "scale" in sections:
        rows = [("runs", "events", "db MB", "ready s", "/health/detailed p50 ms", "p99 ms",
                 "mwai stats --since 7d s", "mwai runs --status failed s")]
        for size in sections["scale"]["sizes"]:
            health = size["health_detailed"]
            rows.append((_fmt(size["runs"]), _fmt(size["events"]), _fmt(size["db_mb"]),
                         _fmt(size["ready_s"]), _fmt(health["p50_ms"]), _fmt(health["p99_ms"]),
                         _cli_cell(size["stats"]), _cli_cell(size["runs_failed"])))
        yield "Scale", rows
        prune = sections["scale"].get("prune")
        if prune:
            intake = prune["intake"] or {}
            rows = [("old runs", "deleted", "prune wall s", "deleted/s", "projected s",
                     "webhooks/s", "p99 ms", "max ms", "errors")]
            rows.append((_fmt(prune["old_runs_before"]), _fmt(prune["deleted"]),
                         _cli_cell(prune["prune"]), _fmt(prune["runs_per_s"]),
                         _fmt(prune["projected_s"]), _fmt(intake.get("rate_per_s")),
                         _fmt(intake.get("p99_ms")), _fmt(intake.get("max_ms")),
                         _fmt(intake.get("errors"))))
            yield "Webhooks during `mwai prune --older-than 30d`", rows


def _cli_cell(result: dict[str, Any]) -> str:
    if not result.get("available"):
        return "not available"
    text = _fmt(result["wall_s"])
    if result.get("killed_after_interrupt_s"):
        return f"{text} (Ctrl-C ignored, killed {result['killed_after_interrupt_s']} s later)"
    if result.get("interrupt_sent_after_s"):
        stopped = result.get("exit_code") != 0
        return f"{text} ({'stopped' if stopped else 'finished despite Ctrl-C'})"
    return text if result.get("exit_code") == 0 else f"{text} (exit {result['exit_code']})"


def _target_rows(document: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("target", "limit", "measured", "verdict")]
    for row in document.get("targets", []):
        limit = f"{row['op']} {_fmt(row['limit'], row['unit'])}"
        rows.append((row["target"], limit, _fmt(row["value"], row["unit"]),
                     _verdict(row["passed"])))
    return rows


def render_table(document: dict[str, Any]) -> str:
    def table(rows: Sequence[Sequence[str]]) -> list[str]:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                .rstrip() for row in rows]

    lines = [f"mwai bench {document['mwai_version']} ({document['mode']}), {document['date']}",
             f"load generator: {document['load_generator']}", ""]
    for title, rows in _rows(document):
        lines += [title, *table(rows), ""]
    lines += ["Targets", *table(_target_rows(document))]
    return "\n".join(lines) + "\n"


def render_markdown(document: dict[str, Any]) -> str:
    def table(rows: Sequence[Sequence[str]]) -> list[str]:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                for row in rows[1:]]
        return out

    info = document["machine"]
    lines = [
        "# mwai benchmarks",
        "",
        f"Generated by `mwai bench --json` ({document['mode']} mode) on {document['date']} "
        f"with mwai {document['mwai_version']}; rendered with `mwai bench --from-json FILE "
        "--markdown`.",
        "",
        "> These figures must be regenerated on a quiet machine before they are quoted: "
        "`mwai bench --json > bench.json && mwai bench --from-json bench.json --markdown "
        "> docs/benchmarks.md`. " + document.get("note", ""),
        "",
        "## Machine",
        "",
        *table([("what", "value"),
                ("CPU", f"{info['cpu']} x {info['cpus']}"),
                ("memory", _fmt(info["memory_mb"], "MB")),
                ("OS", str(info["os"])),
                ("Python / SQLite / aiohttp",
                 f"{info['python']} / {info['sqlite']} / {info['aiohttp']}"),
                ("database filesystem", str(info["db_filesystem"])),
                ("load average at start", ", ".join(str(x) for x in info["load_average"])),
                ("load generator", document["load_generator"]),
                ("service settings", "MWAI_PROCESSOR=noop, MWAI_SYNCHRONOUS=FULL, "
                                     "JSON logs to a file")]),
        "",
        "## Targets",
        "",
        *table(_target_rows(document)),
        "",
    ]
    for title, rows in _rows(document):
        lines += [f"## {title}", "", *table(rows), ""]
    missed = missed_targets(document)
    if missed:
        lines += ["## Missed targets", "",
                  *[f"- {line}" for line in missed], "",
                  "Where the time goes, with the profiles: "
                  "[performance.md](performance.md#where-the-time-goes-profiles).", ""]
    return "\n".join(lines)


def missed_targets(document: dict[str, Any]) -> list[str]:
    """One line per missed target saying by how much."""
    lines = []
    for row in document.get("targets", []):
        if row["passed"] is not False:
            continue
        value, limit = float(row["value"]), float(row["limit"])
        if row["op"] == "==":
            how = f"{_fmt(value)} instead of {_fmt(limit)}"
        elif row["op"] == ">=":
            how = f"{value / limit:.0%} of the target" if limit else "below the target"
        else:
            how = f"{value / limit:.1f}x the limit" if limit else "over the limit"
        line = (f"{row['target']}: {_fmt(value, row['unit'])} "
                f"(target {row['op']} {_fmt(limit, row['unit'])}; {how})")
        if row["key"] == "intake_p99":
            line += _closed_loop_note(document)
        lines.append(line)
    return lines


def _closed_loop_note(document: dict[str, Any]) -> str:
    """Little's law: with 32 requests always in flight, mean latency = 32 / rate."""
    level = _level(document, 32)
    if level is None:
        return ""
    bare = level["bare_aiohttp"]
    return (f". The generator keeps 32 requests in flight, so the mean latency is 32 / rate: "
            f"a 10 ms mean needs 3,200 webhooks/s; the bare aiohttp endpoint itself did "
            f"{_fmt(bare['rate_per_s'])} req/s with p99 {_fmt(bare['p99_ms'], 'ms')} here")
