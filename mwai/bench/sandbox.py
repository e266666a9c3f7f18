"""The sandbox's start overhead: the same command launched plain and under bubblewrap.

Each launch is ``/bin/true`` in a scratch worktree, timed from the spawn to its
exit; the sandboxed launch has what an agent or a check gets (the whole bwrap
command line with its hidden directories, prlimit and, as root, setpriv to an
unprivileged uid; the worktree lent to that uid and taken back). The overhead is
the difference of the medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from mwai.runner.verify.sandbox import Sandbox, SandboxConfig
from mwai.settings import Settings

COMMAND = ["/bin/true"]


def _time_launches(argv: list[str], env: dict[str, str], count: int, sandbox: Sandbox | None,
                   cwd: Path) -> list[float]:
    times: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        if sandbox is None:
            subprocess.run(argv, cwd=cwd, env=env, check=True)
        else:
            sandbox.hand_over(cwd)
            try:
                subprocess.run(argv, cwd=cwd, env=env, check=True)
            finally:
                sandbox.take_back(cwd)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _summary(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max_ms": round(ordered[-1], 2)}


def measure(root: Path, launches: int) -> dict[str, Any]:
    """Plain and sandboxed launch times; ``available`` False when bwrap cannot start."""
    with tempfile.TemporaryDirectory(dir=root, prefix="sandbox-") as scratch:
        base = Path(scratch)
        settings = Settings.defaults(db=str(base / "mwai.sqlite3"), work_dir=str(base / "work"))
        sandbox = Sandbox(SandboxConfig.of(settings))
        problem = sandbox.problem()
        if problem:
            return {"available": False, "problem": problem, "launches": 0,
                    "overhead_p50_ms": None}
        worktree = base / "work" / "worktrees" / "run-1"
        worktree.mkdir(parents=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        argv = sandbox.wrap(COMMAND, cwd=worktree, network=False)
        inner_env = sandbox.environment(env)
        plain = _time_launches(COMMAND, env, launches, None, worktree)
        confined = _time_launches(argv, inner_env, launches, sandbox, worktree)
    plain_s, confined_s = _summary(plain), _summary(confined)
    return {"available": True, "launches": launches, "plain": plain_s,
            "sandboxed": confined_s, "drops_root": sandbox.config.drops_root,
            "overhead_p50_ms": round(confined_s["p50_ms"] - plain_s["p50_ms"], 2)}
