"""A local bare git repository with a small Python project, used as ``origin``.

Tests and ``mwai demo`` point MWAI_REPO_URL at it (a plain file path works as a
git URL), so pushes and branches are real git without any network.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

SAMPLE_FILES: dict[str, str] = {
    "README.md": (
        "# sample\n\nA tiny calculator used by the mwai demo and tests.\n\n"
        "Run the tests with `python -m pytest`.\n"
    ),
    "sample/__init__.py": '"""A tiny calculator."""\n',
    "sample/calc.py": (
        '"""Arithmetic helpers."""\n\n\n'
        "def add(a: int, b: int) -> int:\n    return a + b\n\n\n"
        "def multiply(a: int, b: int) -> int:\n    return a * b\n"
    ),
    "tests/test_calc.py": (
        "from sample.calc import add, multiply\n\n\n"
        "def test_add() -> None:\n    assert add(2, 3) == 5\n\n\n"
        "def test_multiply() -> None:\n    assert multiply(2, 3) == 6\n"
    ),
    "CHANGELOG.md": "# Changelog\n",
}


def _git_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    env.update({
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Sample Author",
        "GIT_AUTHOR_EMAIL": "sample@example.invalid",
        "GIT_COMMITTER_NAME": "Sample Author",
        "GIT_COMMITTER_EMAIL": "sample@example.invalid",
        # Fixed dates: the sample commit has the same sha every time.
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
    })
    return env


def _git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        env=_git_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def make_sample_origin(path: str | Path, branch: str = "main") -> Path:
    """Create a bare repository at ``path`` holding the sample project on ``branch``.

    Returns the absolute path (usable as a git URL). Fails if ``path`` is not empty.
    """
    origin = Path(path).absolute()
    if origin.exists() and any(origin.iterdir()):
        raise FileExistsError(f"{origin} exists and is not empty")
    origin.mkdir(parents=True, exist_ok=True)
    _git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(origin), cwd=origin)
    with tempfile.TemporaryDirectory(prefix="mwai-sample-") as scratch:
        work = Path(scratch)
        _git("init", "--quiet", f"--initial-branch={branch}", str(work), cwd=work)
        for name, text in SAMPLE_FILES.items():
            file = work / name
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text, encoding="utf-8")
        _git("add", "--all", cwd=work)
        _git("commit", "--quiet", "-m", "Initial sample project", cwd=work)
        _git("push", "--quiet", str(origin), f"HEAD:refs/heads/{branch}", cwd=work)
    return origin


def git_log(origin: str | Path, ref: str) -> list[str]:
    """Subjects of the commits of ``ref`` in ``origin``, newest first (for assertions)."""
    out = _git("log", "--format=%s", ref, cwd=Path(origin))
    return [line for line in out.splitlines() if line]


def git_show(origin: str | Path, ref: str, path: str) -> str:
    """Content of ``path`` at ``ref`` in ``origin`` (for assertions)."""
    return _git("show", f"{ref}:{path}", cwd=Path(origin))


def git_branches(origin: str | Path) -> list[str]:
    out = _git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=Path(origin))
    return [line for line in out.splitlines() if line]
