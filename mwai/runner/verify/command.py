"""One check (or setup) command: confined, with a time limit and bounded output.

The command runs with /bin/sh in the worktree inside the sandbox, stdin closed,
stdout and stderr together; only the tail is kept (that is where test runners and
compilers say what failed), scrubbed of mwai's secrets. Past its time limit, or
past MWAI_SANDBOX_MAX_OUTPUT_BYTES of output, its process group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mwai.runner.agent.process import BoundedCapture, kill_group
from mwai.runner.verify.checks import Check
from mwai.runner.verify.sandbox import Sandbox
from mwai.scrub import scrub

POLL_S = 0.05
DRAIN_S = 2.0
KILL_GRACE_S = 2.0
READ_CHUNK_BYTES = 65536
SHELL = "/bin/sh"
_ENV_NAMES = ("PATH", "LANG", "LC_ALL")


@dataclass(frozen=True)
class CheckRun:
    """What one command did: for the events, the fix prompt and the report."""

    name: str
    command: str
    kind: str
    attempt: int
    exit_code: int
    duration_s: float
    output_tail: str
    stopped: str = ""  # why mwai stopped it: "" | "timeout" | "output"

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.stopped

    @property
    def outcome(self) -> str:
        if self.stopped == "timeout":
            return "timed out"
        if self.stopped == "output":
            return "too much output"
        return "passed" if self.exit_code == 0 else f"failed (exit {self.exit_code})"


@dataclass(frozen=True)
class CommandLimits:
    timeout_s: float
    tail_bytes: int
    network: bool  # setup commands get it; checks only with MWAI_CHECKS_NETWORK


async def run_check(sandbox: Sandbox, check: Check, worktree: Path, attempt: int,
                    limits: CommandLimits, secrets: Sequence[str],
                    base_env: Mapping[str, str] | None = None) -> CheckRun:
    """Run ``check`` confined in ``worktree``; never raises for the command's own failure."""
    source = os.environ if base_env is None else base_env
    env = sandbox.environment({n: source[n] for n in _ENV_NAMES if n in source})
    if not sandbox.config.enabled:
        env.setdefault("HOME", str(worktree))
    argv = sandbox.wrap([SHELL, "-c", check.command], cwd=worktree, network=limits.network)
    started = time.monotonic()
    capture = BoundedCapture(limits.tail_bytes * 2)
    async with sandbox.lend(worktree):
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=worktree, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        reader = asyncio.create_task(_drain(proc.stdout, capture))
        stopped = ""
        try:
            deadline = started + limits.timeout_s
            max_output = sandbox.config.max_output_bytes
            while proc.returncode is None:
                if time.monotonic() >= deadline:
                    stopped = "timeout"
                    break
                if capture.total > max_output:
                    stopped = "output"
                    break
                await asyncio.sleep(POLL_S)
            await kill_group(proc.pid, KILL_GRACE_S if stopped else 0.2)
            await asyncio.wait([reader, asyncio.create_task(proc.wait())], timeout=DRAIN_S)
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            reader.cancel()
    tail = capture.tail_text()[-limits.tail_bytes:]
    if stopped == "timeout":
        tail += f"\n[mwai: stopped after {limits.timeout_s:g} s (MWAI_CHECK_TIMEOUT_S)]"
    elif stopped == "output":
        tail += (f"\n[mwai: stopped after more than {sandbox.config.max_output_bytes} bytes "
                 "of output (MWAI_SANDBOX_MAX_OUTPUT_BYTES)]")
    return CheckRun(name=check.name, command=check.command, kind=check.kind, attempt=attempt,
                    exit_code=proc.returncode if proc.returncode is not None else -1,
                    duration_s=time.monotonic() - started,
                    output_tail=scrub(tail, list(secrets)), stopped=stopped)


async def _drain(stream: asyncio.StreamReader | None, capture: BoundedCapture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(READ_CHUNK_BYTES):
        capture.add(chunk)
