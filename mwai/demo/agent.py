"""A tiny deterministic coding agent for tests and ``mwai demo``.

Run as ``python -m mwai.demo.agent [--mode MODE]`` in a worktree with the
task on stdin (or in $MWAI_TASK_FILE). In the default ``write`` mode it records
the task in ``docs/changes/<KEY>.md`` and a line of ``CHANGELOG.md``, then prints
a result in the shape of ``claude -p --output-format json``.

The mode comes from ``--mode``, else $MWAI_DEMO_AGENT_MODE, else a marker
``[demo-agent:MODE]`` in the task text (so a ticket can steer it in end-to-end
tests):

- ``write``: the change above (default)
- ``nothing``: change nothing, explain why
- ``fail``: print an error and exit 3
- ``hang``: sleep forever (``--spawn-child``: after starting a child that also
  sleeps; ``--pid-file`` receives both pids)
- ``flood``: print ``--flood-bytes`` of noise, then do ``write``
- ``buggy``: add ``greet()`` to the sample project with a bug its new test catches;
  when the task says a check failed (the fix loop), fix it
- ``broken``: like ``buggy`` but never fixes it (the checks never pass)
- ``dump-env``: write the environment as JSON to ``--dump-file`` (default
  ``agent-env.json`` in the worktree), then do ``write``; with
  ``--read-parent-env`` also what it can read of mwai's own environment through
  /proc (as _PARENT_ENVIRON; root can always read it)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

MODES = ("write", "nothing", "fail", "hang", "flood", "dump-env", "buggy", "broken")
FIX_REQUEST = "failed a check"  # in the task when mwai's fix loop sends a check's output
GREET_TEST = ("from sample.greet import greet\n\n\n"
              "def test_greet() -> None:\n    assert greet(\"Ada\") == \"Hello, Ada!\"\n")
_MARKER = re.compile(r"\[demo-agent:([a-z-]+)\]")
_HEADING = re.compile(r"^# Sub-task ([^:\s]+): ?(.*)$", re.MULTILINE)


def read_task() -> str:
    task = sys.stdin.read() if not sys.stdin.isatty() else ""
    if not task.strip() and os.environ.get("MWAI_TASK_FILE"):
        task = Path(os.environ["MWAI_TASK_FILE"]).read_text(encoding="utf-8")
    return task


def choose_mode(explicit: str | None, task: str) -> str:
    if explicit:
        return explicit
    if os.environ.get("MWAI_DEMO_AGENT_MODE") in MODES:
        return os.environ["MWAI_DEMO_AGENT_MODE"]
    match = _MARKER.search(task)
    return match.group(1) if match and match.group(1) in MODES else "write"


def task_key_and_summary(task: str) -> tuple[str, str]:
    match = _HEADING.search(task)
    if not match:
        return "TASK", task.strip().splitlines()[0][:80] if task.strip() else "(empty task)"
    key = re.sub(r"[^A-Za-z0-9-]", "", match.group(1)) or "TASK"
    return key, match.group(2).strip()[:200]


def write_change(worktree: Path, key: str, summary: str, task: str) -> list[str]:
    """Create or extend docs/changes/<key>.md and add a CHANGELOG line."""
    note = worktree / "docs" / "changes" / f"{key}.md"
    note.parent.mkdir(parents=True, exist_ok=True)
    if note.exists():
        revision = note.read_text(encoding="utf-8").count("\n## Revision ") + 2
        feedback = _feedback(task)
        with note.open("a", encoding="utf-8") as out:
            out.write(f"\n## Revision {revision}\n\n{feedback or 'Reworked.'}\n")
    else:
        note.write_text(f"# {key}: {summary}\n\nImplemented by the demo agent.\n",
                        encoding="utf-8")
    changelog = worktree / "CHANGELOG.md"
    with changelog.open("a", encoding="utf-8") as out:
        out.write(f"- {key}: {summary}\n")
    return [str(note.relative_to(worktree)), "CHANGELOG.md"]


def write_greet(worktree: Path, fixed: bool) -> list[str]:
    """sample/greet.py and its test; the first version forgets the comma and the "!"."""
    text = 'f"Hello, {name}!"' if fixed else 'f"Hello {name}"'
    (worktree / "sample" / "greet.py").write_text(
        f'"""Greetings."""\n\n\ndef greet(name: str) -> str:\n    return {text}\n',
        encoding="utf-8")
    (worktree / "tests" / "test_greet.py").write_text(GREET_TEST, encoding="utf-8")
    return ["sample/greet.py", "tests/test_greet.py"]


def _feedback(task: str) -> str:
    _, _, after = task.partition("## Feedback")
    lines = [line for line in after.splitlines()[1:] if line.strip() and not line.startswith("#")]
    return "\n".join(lines[:5])


def print_result(summary: str, task: str, started: float, is_error: bool = False) -> None:
    result = {
        "type": "result",
        "subtype": "error_during_execution" if is_error else "success",
        "is_error": is_error,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "num_turns": 1,
        "result": summary,
        "session_id": "demo-agent",
        "total_cost_usd": 0.0012,
        "usage": {"input_tokens": max(1, len(task) // 4), "output_tokens": 42},
    }
    print(json.dumps(result), flush=True)


def dump_environment(read_parent: bool) -> dict[str, str]:
    """The agent's environment, plus (read_parent) what it can read of mwai's."""
    found = dict(os.environ)
    if not read_parent:
        return found
    try:
        raw = Path(f"/proc/{os.getppid()}/environ").read_bytes()
    except OSError as exc:
        found["_PARENT_ENVIRON"] = f"unreadable: {exc.strerror}"
    else:
        found["_PARENT_ENVIRON"] = raw.replace(b"\0", b"\n").decode("utf-8", "replace")
    return found


def hang(spawn_child: bool, pid_file: str | None) -> None:
    pids = [os.getpid()]
    if spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        pids.append(child.pid)
    if pid_file:
        Path(pid_file).write_text(" ".join(map(str, pids)), encoding="utf-8")
    print("demo agent: thinking very hard...", flush=True)
    while True:
        time.sleep(3600)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mwai.demo.agent")
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--spawn-child", action="store_true")
    parser.add_argument("--pid-file")
    parser.add_argument("--dump-file")
    parser.add_argument("--read-parent-env", action="store_true")
    parser.add_argument("--flood-bytes", type=int, default=4 * 1024 * 1024)
    args = parser.parse_args(argv)
    started = time.monotonic()
    task = read_task()
    mode = choose_mode(args.mode, task)
    worktree = Path.cwd()
    key, summary = task_key_and_summary(task)
    if mode == "fail":
        print("demo agent: failing on purpose", file=sys.stderr, flush=True)
        return 3
    if mode == "hang":
        hang(args.spawn_child, args.pid_file)
    if mode == "nothing":
        print_result(f"Nothing to change for {key}: the code already does this.", task,
                     started)
        return 0
    if mode == "flood":
        chunk = ("x" * 1023 + "\n").encode()
        for _ in range(max(0, args.flood_bytes) // len(chunk)):
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    if mode == "dump-env":
        dump = Path(args.dump_file) if args.dump_file else worktree / "agent-env.json"
        found = dump_environment(args.read_parent_env)
        dump.write_text(json.dumps(found, indent=1, sort_keys=True), encoding="utf-8")
    if mode == "buggy" and (worktree / "sample" / "greet.py").exists() \
            and FIX_REQUEST not in task:
        mode = "write"  # greet() came with an earlier sub-task: a plain change this time
    if mode in ("buggy", "broken"):
        fixing = mode == "buggy" and FIX_REQUEST in task
        changed = write_greet(worktree, fixed=fixing)
        if not fixing:
            changed += write_change(worktree, key, summary, task)
        what = "fixed greet() after the failed check" if fixing else "added greet()"
        print_result(f"{key}: {what} in {', '.join(changed)}.", task, started)
        return 0
    changed = write_change(worktree, key, summary, task)
    print_result(f"{key}: recorded the change in {', '.join(changed)}.", task, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
