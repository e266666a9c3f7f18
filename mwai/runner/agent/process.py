"""The external agent as a subprocess: its own process group, bounded output, a time limit.

The agent runs with the prompt on stdin, its stdout and stderr captured within
MWAI_AGENT_MAX_OUTPUT_BYTES (and drained past it, so it never blocks), until it
exits or MWAI_AGENT_TIMEOUT_S passes; then its whole process tree is killed, so
no child it started outlives the run: its process group, every descendant (a
command started in its own session with setsid included), and every process that
carries the run's marker variable (one whose parent already exited).
Its stdout is read line by line as it comes: the CLI's JSON events become tool
calls (``on_tool``) while the agent works.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mwai.errors import PermanentError
from mwai.runner.agent.claude import ClaudeStream
from mwai.runner.agent.codex import CodexStream
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.output import (
    AgentResult,
    ParsedOutput,
    ToolCall,
    last_line,
    parse_agent_output,
)
from mwai.scrub import scrub

ToolObserver = Callable[[ToolCall], Awaitable[None]]
RUN_MARKER = "MWAI_AGENT_RUN"  # in the agent's environment: finds its orphans
LINE_MAX_BYTES = 1024 * 1024  # a longer JSON line is not read as an event

KILL_GRACE_S = 5.0
READER_DRAIN_S = 2.0
EXIT_POLL_S = 0.05
READ_CHUNK_BYTES = 65536


class AgentStopped(PermanentError):
    """mwai stopped the agent (its process group was killed); ``result`` has its output."""

    def __init__(self, message: str, result: AgentResult) -> None:
        super().__init__(message)
        self.result = result


class AgentTimeout(AgentStopped):
    """The agent ran past MWAI_AGENT_TIMEOUT_S; its process group was killed."""


class AgentFlood(AgentStopped):
    """The agent printed more than MWAI_SANDBOX_MAX_OUTPUT_BYTES; its group was killed."""


class BoundedCapture:
    """Keeps the first and last ``limit // 2`` bytes of a stream; counts the rest."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if self.dropped:
            return f"{head}\n[... {self.dropped} bytes of output dropped ...]\n{tail}"
        return head + tail

    def tail_text(self) -> str:
        """The end of the stream (where results are printed), whole when nothing dropped."""
        if self.dropped:
            return self.tail.decode("utf-8", "replace")
        return self.text()


class EventLines:
    """Splits the agent's stdout into lines and feeds the JSON ones to the CLI's reader
    (Claude Code's or Codex's, recognised on the first event, or the one given)."""

    def __init__(self, stream: ClaudeStream | CodexStream | None, confined: bool,
                 on_tool: ToolObserver | None) -> None:
        self.stream = stream
        self.confined = confined
        self.on_tool = on_tool
        self._partial = bytearray()

    async def add(self, chunk: bytes) -> None:
        self._partial += chunk
        while (end := self._partial.find(b"\n")) >= 0:
            line = bytes(self._partial[:end])
            del self._partial[: end + 1]
            await self._line(line)
        if len(self._partial) > LINE_MAX_BYTES:
            self._partial.clear()

    async def _line(self, line: bytes) -> None:
        if not line.lstrip().startswith(b"{"):
            return
        try:
            document = json.loads(line)
        except ValueError:
            return
        if not isinstance(document, dict):
            return
        if self.stream is None:
            for kind in (ClaudeStream, CodexStream):
                if kind.recognises(document):
                    self.stream = kind(self.confined)
                    break
            else:
                return
        for call in self.stream.feed(document):
            if self.on_tool is not None:
                await self.on_tool(call)

    @property
    def fatal(self) -> bool:
        """The CLI reported a failure it would only retry (refused credentials)."""
        return self.stream is not None and self.stream.fatal is not None

    def result(self) -> ParsedOutput | None:
        if self.stream is None or not self.stream.seen_result():
            return None
        return self.stream.result()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """What the agent's child runs before exec: ask Linux for SIGKILL when mwai dies.

    The agent is in its own session, so a killed mwai would leave it running (and
    writing into a worktree a new attempt may use). The libc handle is taken here,
    in mwai, not between fork and exec; None where there is no prctl (not Linux).
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # mwai died before the signal was armed
            os._exit(1)
    return arm


async def _drain(stream: asyncio.StreamReader | None, capture: BoundedCapture,
                 lines: EventLines | None = None) -> None:
    # Keep reading past the bound (discarding) so the agent never blocks on a full pipe.
    if stream is None:
        return
    while chunk := await stream.read(READ_CHUNK_BYTES):
        capture.add(chunk)
        if lines is not None:
            await lines.add(chunk)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    if stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _proc_ppids() -> dict[int, int]:
    """pid -> parent pid of every process (Linux /proc; empty elsewhere)."""
    parents = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _marked(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def tree_pids(leader: int, marker: str | None) -> set[int]:
    """The agent's descendants (whatever their session) and the processes carrying its
    run marker (children whose parent exited were re-parented away from the tree)."""
    parents = _proc_ppids()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [leader]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    if marker:
        wanted = marker.encode()
        found |= {pid for pid in parents if pid != os.getpid() and _marked(pid, wanted)}
    found.discard(os.getpid())
    return found


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


async def kill_group(pgid: int, grace_s: float, marker: str | None = None) -> None:
    """SIGTERM the process group and the agent's tree, wait up to ``grace_s`` for the
    group to go, then SIGKILL everything of the tree that is left (setsid escapees too)."""
    escaped = tree_pids(pgid, marker)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    _signal_all(escaped, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    escaped |= tree_pids(pgid, marker)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _signal_all(escaped, signal.SIGKILL)


def resolve_program(program: str, path_env: str) -> str:
    """Absolute path of the agent program, never a file of the worktree.

    The agent runs with the worktree as its cwd, so a relative program path or a
    relative PATH entry ("." or empty) could run a file committed to the repository.
    """
    if os.sep in program:
        return os.path.abspath(program)  # relative to mwai's directory, not the worktree
    for directory in path_env.split(os.pathsep):
        if not os.path.isabs(directory):
            continue
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise PermanentError(
        f"cannot start the agent {program!r} (MWAI_AGENT_COMMAND): not found on PATH "
        f"({path_env or 'empty'}); give its absolute path"
    )


async def _wait_exit(proc: asyncio.subprocess.Process, timeout_s: float,
                     flooded: Callable[[], bool] = lambda: False,
                     stop: Callable[[], bool] = lambda: False) -> bool:
    """True when the agent exited within ``timeout_s`` or ``stop()`` said to end it;
    False when the time ran out or it ``flooded``.

    Polls the return code: Process.wait() of Python 3.11 also waits until every
    holder of the output pipes is gone, which a leftover child can delay forever.
    """
    deadline = time.monotonic() + timeout_s
    while proc.returncode is None and not stop():
        if time.monotonic() >= deadline or flooded():
            return False
        await asyncio.sleep(min(EXIT_POLL_S, max(0.0, deadline - time.monotonic())))
    return True


async def run_command(
    config: AgentConfig,
    argv: list[str],
    worktree: Path,
    prompt: str,
    env: dict[str, str],
    kill_grace_s: float,
    max_total_output_bytes: int = 0,
    *,
    stream: ClaudeStream | CodexStream | None = None,
    on_tool: ToolObserver | None = None,
) -> AgentResult:
    """Run ``argv`` in ``worktree`` in its own process group, the prompt on stdin.

    Raises AgentTimeout after killing the tree when it runs past
    MWAI_AGENT_TIMEOUT_S; the summary and output are scrubbed of mwai's secrets.
    ``stream`` reads the CLI's events (recognised from the output when None);
    ``on_tool`` is awaited with each finished tool call.
    """
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=worktree,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # own process group: a timeout kills its children too
            preexec_fn=die_with_parent(),
        )
    except OSError as exc:
        raise PermanentError(
            f"cannot start the agent {argv[0]!r} (MWAI_AGENT_COMMAND): {exc.strerror or exc}"
        ) from None
    pgid = proc.pid  # leader of its own session and group
    marker = f"{RUN_MARKER}={env[RUN_MARKER]}" if RUN_MARKER in env else None
    out = BoundedCapture(config.max_output_bytes)
    err = BoundedCapture(config.max_output_bytes)
    lines = EventLines(stream, config.confined_by_sandbox, on_tool)
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(_feed(proc.stdin, prompt.encode("utf-8"))),
        asyncio.create_task(_drain(proc.stdout, out, lines)),
        asyncio.create_task(_drain(proc.stderr, err)),
    ]
    try:
        def flooded() -> bool:
            return 0 < max_total_output_bytes < out.total + err.total

        timed_out = not await _wait_exit(proc, config.timeout_s, flooded, lambda: lines.fatal)
        # Whatever the agent left running (or everything, on timeout) goes now.
        await kill_group(pgid, kill_grace_s if timed_out else min(kill_grace_s, 1.0), marker)
        # The pipes close once every holder is dead (one that escaped the group with
        # setsid could keep them open: stop waiting for it after a moment).
        tasks.append(asyncio.create_task(proc.wait()))
        await asyncio.wait(tasks, timeout=READER_DRAIN_S)
    except asyncio.CancelledError:
        escaped = tree_pids(pgid, marker)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _signal_all(escaped, signal.SIGKILL)
        raise
    finally:
        for task in tasks:
            task.cancel()
    duration_s = time.monotonic() - started
    secrets = config.secret_values()
    stdout_text, stderr_text = out.tail_text(), err.tail_text()
    parsed = lines.result() or parse_agent_output(stdout_text, stderr_text)
    if not parsed.summary:
        parsed = ParsedOutput(last_line(stdout_text) or last_line(stderr_text), parsed.cost_usd,
                              parsed.input_tokens, parsed.output_tokens, parsed.failures)
    output = out.text()
    if err.total:
        output += "\n[stderr]\n" + err.text()
    result = AgentResult(
        exit_code=proc.returncode if proc.returncode is not None else -1,
        summary=scrub(parsed.summary, secrets),
        output=scrub(output, secrets),
        timed_out=timed_out,
        duration_s=duration_s,
        cost_usd=parsed.cost_usd,
        input_tokens=parsed.input_tokens,
        output_tokens=parsed.output_tokens,
        failures=tuple(dataclasses.replace(f, detail=scrub(f.detail, secrets))
                       for f in parsed.failures),
    )
    if timed_out and flooded():
        raise AgentFlood(
            f"the agent printed more than {max_total_output_bytes} bytes "
            "(MWAI_SANDBOX_MAX_OUTPUT_BYTES); its process group was killed", result)
    if timed_out:
        last = last_line(result.output)
        raise AgentTimeout(
            f"agent timed out after {config.timeout_s:g} s (MWAI_AGENT_TIMEOUT_S); "
            f"its process group was killed. Last output: {last[:300] or '(none)'}",
            result,
        )
    return result
