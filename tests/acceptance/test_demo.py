"""`mwai demo`: the README's front door must play the whole story and exit 0, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_mwai_demo_plays_the_whole_story(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MWAI_", "JIRA_", "GH_"))}
    env["PYTHONUNBUFFERED"] = "1"
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "mwai", "demo", "--dir", str(work)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "The story completed" in output
    assert "Pull request: http://127.0.0.1:" in output
    assert "DEMO-2: Add a greet() helper" in output
    assert "DEMO-3: Document greet() in the README" in output
    assert f"Database: {work / 'mwai.sqlite3'}" in output
    assert (work / "mwai.sqlite3").is_file()
    assert "Traceback" not in output


def test_mwai_demo_refuses_a_used_directory(tmp_path: Path) -> None:
    (tmp_path / "mwai.sqlite3").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "mwai", "demo", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "earlier demo" in result.stderr
