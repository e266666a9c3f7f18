"""The processes the benchmark measures: `mwai serve` (or the bare aiohttp app) as a
subprocess until it answers /health, its memory, and operator commands timed as a
user runs them."""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from mwai.cli import actions, alert, inspect, prune
from mwai.cli.main import build_parser
from mwai.errors import MwaiError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
INTERRUPT_GRACE_S = 60.0  # after Ctrl-C, how long an operator command may take to stop


class BenchError(MwaiError):
    """The benchmark itself could not run (a server did not start, ...)."""


def free_port() -> int:
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


def service_env(db: Path, secret: str, port: int | None,
                workers: int | None) -> dict[str, str]:
    """Production settings with the no-op processor; nothing inherited from the caller's
    MWAI_* settings, so every section measures the same service."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MWAI_") and k != "JIRA_WEBHOOK_SECRET"}
    env.update({
        "MWAI_DB": str(db),
        "MWAI_PROCESSOR": "noop",
        "MWAI_SYNCHRONOUS": "FULL",
        "MWAI_LOG_FORMAT": "json",
        "JIRA_WEBHOOK_SECRET": secret,
    })
    if port is not None:
        env["MWAI_LISTEN"] = f"127.0.0.1:{port}"
    if workers is not None:
        env["MWAI_WORKERS"] = str(workers)
    return env


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


def start_serve(db: Path, secret: str, workers: int | None = None) -> Child:
    """`mwai serve` on a free port, logging next to its database."""
    port = free_port()
    command = [sys.executable, "-m", "mwai", "serve"]
    return Child(command, service_env(db, secret, port, workers), port,
                 db.parent / "serve.log")


def start_bare(root: Path, secret: str) -> Child:
    """The bare aiohttp app: the framework's ceiling the intake is compared with."""
    port = free_port()
    command = [sys.executable, "-m", "mwai.bench.loadgen", "bare", "--port", str(port)]
    return Child(command, service_env(root / "none", secret, port, None), port,
                 root / "bare.log")


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


def has_subcommand(name: str) -> bool:
    """Whether this mwai has ``mwai NAME`` (operator commands may be missing)."""
    parser = build_parser((inspect.register, actions.register, prune.register, alert.register))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return name in action.choices
    return False


def _default_sigint() -> None:
    """In the child: Ctrl-C as a user's terminal delivers it. A bench started in the
    background (`mwai bench &` in a script) ignores SIGINT, and children inherit
    that: the operator command would then never see the interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_operator_command(db: Path, arguments: Sequence[str], env: dict[str, str],
                         limit_s: float) -> dict[str, Any]:
    """Wall time of ``mwai ARGUMENTS --db DB`` as a user runs it (interpreter start
    included). A command still running after ``limit_s`` is interrupted (SIGINT, as
    Ctrl-C)."""
    command = "mwai " + " ".join(arguments)
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
