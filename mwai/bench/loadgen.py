"""HTTP load for `mwai bench`: wrk when installed, else aiohttp clients in N processes.

Both generators run a fixed number of connections for a fixed time (or until
``stop()``), give every POST a distinct Jira issue key (``__KEY__`` in the body
template becomes ``PREFIX-<n>``), and report requests, errors and ack latency.

``python -m mwai.bench.loadgen bare --port N`` is the ceiling the benchmark compares
mwai with: a bare aiohttp app that reads the body and answers a fixed JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import multiprocessing.synchronize
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

KEY_PLACEHOLDER = "__KEY__"
# Keys of one run: PREFIX-(base + slot * KEY_STRIDE + counter); slots never overlap.
KEY_STRIDE = 10_000_000
WRK_MARKER = "MWAI_WRK "


@dataclass(frozen=True)
class LoadSpec:
    url: str
    concurrency: int
    duration_s: float
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body_template: str | None = None  # with KEY_PLACEHOLDER where the issue key goes
    key_prefix: str = "BENCH"
    key_base: int = 0
    timeout_s: float = 10.0


@dataclass(frozen=True)
class LoadResult:
    generator: str
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 3),
            "rate_per_s": round(self.rate_per_s, 1),
            "p50_ms": _round(self.p50_ms),
            "p99_ms": _round(self.p99_ms),
            "max_ms": _round(self.max_ms),
            "mean_ms": _round(self.mean_ms),
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; None if empty.

    Nearest rank never invents a value that was not measured: p99 of 100
    samples is the 99th smallest, p100 the largest, p0 the smallest.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p99/max/mean of latencies in milliseconds (None for an empty list)."""
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else None,
        "mean_ms": sum(ordered) / len(ordered) if ordered else None,
    }


def issue_key(prefix: str, base: int, slot: int, counter: int) -> str:
    """The n-th key of a generator slot: distinct across slots and across runs (bases)."""
    return f"{prefix}-{base + slot * KEY_STRIDE + counter}"


# ----------------------------------------------------------------------- wrk


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal holding ``text`` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script: headers, a distinct issue key per request, JSON summary at the end."""
    lines = [f"wrk.method = {_lua_string(spec.method)}"]
    for name, value in spec.headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    lines += [
        "local slots = 0",
        "function setup(thread)",
        "  thread:set('slot', slots)",
        "  slots = slots + 1",
        "end",
    ]
    if spec.body_template is not None:
        lines += [
            f"local template = {_lua_string(spec.body_template)}",
            "local counter = 0",
            "function request()",
            "  counter = counter + 1",
            f"  local key = string.format('{spec.key_prefix}-%d', "
            f"{spec.key_base} + slot * {KEY_STRIDE} + counter)",
            f"  local body = (template:gsub('{KEY_PLACEHOLDER}', key))",
            "  return wrk.format(nil, nil, nil, body)",
            "end",
        ]
    lines += [
        "function done(summary, latency, requests)",
        "  local e = summary.errors",
        "  io.write(string.format('" + WRK_MARKER + "{\"requests\": %d, \"duration_us\": %d, '",
        "    .. '\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d, '",
        "    .. '\"p50_us\": %d, \"p99_us\": %d, \"max_us\": %d, \"mean_us\": %.1f}\\n',",
        "    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,",
        "    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def parse_wrk_output(text: str, concurrency: int) -> LoadResult:
    """The summary line written by the script's done(); raises ValueError without it."""
    for line in text.splitlines():
        if line.startswith(WRK_MARKER):
            data = orjson.loads(line[len(WRK_MARKER):])
            break
    else:
        raise ValueError(f"wrk printed no summary line; its output was:\n{text[-2000:]}")
    requests = int(data["requests"])
    errors = sum(int(data[name]) for name in ("connect", "read", "write", "status", "timeout"))
    have = requests > 0
    return LoadResult(
        generator="wrk",
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        duration_s=int(data["duration_us"]) / 1e6,
        p50_ms=data["p50_us"] / 1000 if have else None,
        p99_ms=data["p99_us"] / 1000 if have else None,
        max_ms=data["max_us"] / 1000 if have else None,
        mean_ms=data["mean_us"] / 1000 if have else None,
    )


class WrkLoad:
    """One wrk process; ``stop()`` (SIGINT) ends it early and it still reports."""

    def __init__(self, spec: LoadSpec, wrk: str) -> None:
        self.spec = spec
        self._dir = tempfile.TemporaryDirectory(prefix="mwai-wrk-")
        script = Path(self._dir.name) / "load.lua"
        script.write_text(wrk_script(spec), encoding="utf-8")
        threads = max(1, min(spec.concurrency, os.cpu_count() or 1))
        command = [wrk, "-t", str(threads), "-c", str(spec.concurrency),
                   "-d", f"{max(1, math.ceil(spec.duration_s))}s",
                   "--timeout", f"{max(1, math.ceil(spec.timeout_s))}s",
                   "-s", str(script), spec.url]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        self.start_at = time.time() + 0.1  # wrk connects within milliseconds

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)

    def result(self) -> LoadResult:
        try:
            output, _ = self._process.communicate(timeout=self.spec.duration_s + 60)
        finally:
            self._dir.cleanup()
        return parse_wrk_output(output, self.spec.concurrency)


# ---------------------------------------------------------- built-in generator


def _builtin_worker(spec: LoadSpec, slot_first: int, connections: int, start_at: float,
                    stop: multiprocessing.synchronize.Event,
                    results: multiprocessing.Queue[tuple[list[float], int]]) -> None:
    latencies, errors = asyncio.run(_builtin_clients(spec, slot_first, connections, start_at,
                                                     stop))
    results.put((latencies, errors))


async def _builtin_clients(spec: LoadSpec, slot_first: int, connections: int, start_at: float,
                           stop: multiprocessing.synchronize.Event) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = start_at + spec.duration_s
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(slot: int) -> None:
            nonlocal errors
            counter = 0
            while time.time() < deadline and not stop.is_set():
                counter += 1
                body = None
                if spec.body_template is not None:
                    key = issue_key(spec.key_prefix, spec.key_base, slot, counter)
                    body = spec.body_template.replace(KEY_PLACEHOLDER, key).encode()
                started = time.perf_counter()
                try:
                    async with session.request(spec.method, spec.url, data=body,
                                               headers=spec.headers) as response:
                        await response.read()
                        ok = response.status < 400
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                if not ok:
                    errors += 1

        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(client(slot_first + index) for index in range(connections)))
    return latencies, errors


class BuiltinLoad:
    """aiohttp clients in min(concurrency, CPUs) processes (spawned, so nothing is shared)."""

    SPAWN_BUDGET_S = 1.5  # time given to the processes to import aiohttp before the start

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results: multiprocessing.Queue[tuple[list[float], int]] = context.Queue()
        count = max(1, min(spec.concurrency, os.cpu_count() or 1))
        shares = [spec.concurrency // count + (1 if i < spec.concurrency % count else 0)
                  for i in range(count)]
        self._start_at = self.start_at = time.time() + self.SPAWN_BUDGET_S
        self._processes = []
        first = 0
        for share in shares:
            process = context.Process(
                target=_builtin_worker,
                args=(spec, first, share, self._start_at, self._stop, self._results),
                daemon=True)
            process.start()
            self._processes.append(process)
            first += share
        self._stopped_at: float | None = None

    def stop(self) -> None:
        self._stopped_at = time.time()
        self._stop.set()

    def result(self) -> LoadResult:
        latencies: list[float] = []
        errors = 0
        for _ in self._processes:
            part, part_errors = self._results.get(timeout=self.spec.duration_s + 60)
            latencies += part
            errors += part_errors
        for process in self._processes:
            process.join(timeout=10)
        end = min(time.time(), self._start_at + self.spec.duration_s)
        if self._stopped_at is not None:
            end = min(end, self._stopped_at)
        stats = summarize(latencies)
        return LoadResult(
            generator=f"builtin ({len(self._processes)} aiohttp processes)",
            concurrency=self.spec.concurrency,
            requests=len(latencies) - errors,
            errors=errors,
            duration_s=max(0.001, end - self._start_at),
            **stats,
        )


def start_load(spec: LoadSpec, prefer_wrk: bool = True) -> WrkLoad | BuiltinLoad:
    wrk = wrk_path() if prefer_wrk else None
    return WrkLoad(spec, wrk) if wrk else BuiltinLoad(spec)


def run_load(spec: LoadSpec, prefer_wrk: bool = True) -> LoadResult:
    return start_load(spec, prefer_wrk).result()


def generator_name(prefer_wrk: bool = True) -> str:
    wrk = wrk_path() if prefer_wrk else None
    if wrk is None:
        return "builtin (aiohttp clients in min(concurrency, CPUs) processes)"
    try:
        banner = subprocess.run([wrk, "--version"], capture_output=True, text=True,
                                timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        banner = ""
    match = re.search(r"wrk (\S+)", banner)
    return f"wrk {match.group(1)}" if match else "wrk"


# ---------------------------------------------------------------- bare server

BARE_ANSWER = orjson.dumps({"ok": True, "run_id": 1, "deduplicated": False, "coalesced": False})


def bare_app() -> web.Application:
    """aiohttp with no middleware, no logging, no database: the framework's ceiling."""

    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BARE_ANSWER, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status": "ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhook/jira", webhook)
    app.router.add_get("/health", health)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mwai.bench.loadgen")
    sub = parser.add_subparsers(dest="command", required=True)
    bare = sub.add_parser("bare", help="serve the bare aiohttp ceiling endpoint")
    bare.add_argument("--host", default="127.0.0.1")
    bare.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(bare_app(), host=args.host, port=args.port, access_log=None, print=None,
                backlog=1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
