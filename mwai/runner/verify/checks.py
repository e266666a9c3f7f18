"""Which commands prove a change: configured per repository, or detected from its files.

Configured: the repos file's ``checks`` and ``setup`` lists, or MWAI_CHECKS and
MWAI_SETUP (commands separated by ``;;``) for a single repository; ``none`` means no
checks. Otherwise they are detected from the worktree, in this order:

- package.json scripts ``lint``, ``typecheck``, ``build``, ``test`` run with the
  package manager its lock file names (pnpm-lock.yaml: pnpm, yarn.lock: yarn, else npm);
- Python: ``ruff check .`` when ruff is configured (ruff.toml, .ruff.toml or
  [tool.ruff]), ``python -m pytest -q`` when pytest is (pytest.ini, conftest.py,
  [tool.pytest...], a tests/ directory), else ``tox`` when there is a tox.ini;
- ``go test ./...`` (go.mod), ``cargo test`` (Cargo.toml), ``make test`` (a Makefile
  with a ``test:`` target).

Each command runs with /bin/sh in the worktree, sandboxed (mwai.runner.verify.sandbox).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

SEPARATOR = ";;"
NO_CHECKS = "none"
_MAKE_TEST = re.compile(r"^test\s*:", re.MULTILINE)
_NPM_SCRIPTS = ("lint", "typecheck", "build", "test")


@dataclass(frozen=True)
class Check:
    """One command: a check (proves the change) or a setup step (prepares for the checks)."""

    name: str
    command: str
    kind: str = "check"  # check | setup


@dataclass(frozen=True)
class CheckPlan:
    """What runs after each change of the agent: setup (with network), then the checks."""

    setup: tuple[Check, ...]
    checks: tuple[Check, ...]
    source: str  # configured | detected | none


def split_commands(raw: str) -> tuple[str, ...] | None:
    """MWAI_CHECKS / MWAI_SETUP: None when unset (detect), () for ``none``."""
    if not raw.strip():
        return None
    if raw.strip().lower() == NO_CHECKS:
        return ()
    return tuple(part.strip() for part in raw.split(SEPARATOR) if part.strip())


def check_name(command: str) -> str:
    """A short readable name: the first words of the command."""
    words = command.split()
    if len(words) > 2 and words[1] == "-m" and os.path.basename(words[0]).startswith("python"):
        words = words[2:]
    return " ".join(words[:3])[:40] or "check"


def _checks(commands: tuple[str, ...], kind: str) -> tuple[Check, ...]:
    return tuple(Check(check_name(c), c, kind) for c in commands)


def plan_checks(worktree: Path, checks: tuple[str, ...] | None,
                setup: tuple[str, ...] | None) -> CheckPlan:
    """The configured commands, or those detected in ``worktree`` when none are."""
    set_up = _checks(setup or (), "setup")
    if checks is not None:
        return CheckPlan(set_up, _checks(checks, "check"), "configured" if checks else "none")
    detected = detect_checks(worktree)
    return CheckPlan(set_up, _checks(detected, "check"), "detected" if detected else "none")


def detect_checks(worktree: Path) -> tuple[str, ...]:
    """The usual check commands of the stacks found in ``worktree`` (see the module doc)."""
    found: list[str] = []
    found += _node(worktree)
    found += _python(worktree)
    if (worktree / "go.mod").is_file():
        found.append("go test ./...")
    if (worktree / "Cargo.toml").is_file():
        found.append("cargo test")
    makefile = worktree / "Makefile"
    if not found and makefile.is_file() and _MAKE_TEST.search(_read(makefile)):
        found.append("make test")
    return tuple(found)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _node(worktree: Path) -> list[str]:
    package = worktree / "package.json"
    if not package.is_file():
        return []
    try:
        scripts = json.loads(_read(package)).get("scripts") or {}
    except (ValueError, AttributeError):
        return []
    if not isinstance(scripts, dict):
        return []
    manager = ("pnpm" if (worktree / "pnpm-lock.yaml").is_file()
               else "yarn" if (worktree / "yarn.lock").is_file() else "npm")
    return [f"{manager} test" if name == "test" and manager != "yarn"
            else f"{manager} run {name}" for name in _NPM_SCRIPTS if name in scripts]


def _python(worktree: Path) -> list[str]:
    pyproject = _read(worktree / "pyproject.toml")
    setup_cfg = _read(worktree / "setup.cfg")
    found: list[str] = []
    if ((worktree / "ruff.toml").is_file() or (worktree / ".ruff.toml").is_file()
            or "[tool.ruff" in pyproject):
        found.append("ruff check .")
    pytest = ((worktree / "pytest.ini").is_file() or (worktree / "conftest.py").is_file()
              or "[tool.pytest" in pyproject or "[tool:pytest]" in setup_cfg
              or (worktree / "tests").is_dir() and any((worktree / "tests").glob("test_*.py")))
    if pytest:
        found.append("python3 -m pytest -q")
    elif (worktree / "tox.ini").is_file():
        found.append("tox")
    return found
