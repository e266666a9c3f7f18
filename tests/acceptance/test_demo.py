"""`mwai demo`: the README's front door must play the whole story and exit 0, offline."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mwai.demo.story import demo_sandbox
from mwai.runner.verify.sandbox import SandboxConfig
from mwai.settings import Settings

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
    # The fix loop: the demo agent's first change fails the sample's tests, the fix passes.
    assert "DEMO-2    Check mwai.demo.sample_tests: failed (exit 1)" in output
    assert "FAILED tests/test_greet.py::test_greet" in output and "AssertionError" in output
    assert "Fix attempt 1 of 3" in output
    assert "DEMO-2: Checks (configured) passed after 1 fix attempt(s)." in output
    assert "| 1 | mwai.demo.sample_tests |" in output
    assert (work / "mwai.sqlite3").is_file()
    assert "Traceback" not in output


def test_the_demo_without_bubblewrap_runs_its_own_agent_unconfined_and_says_so(
        tmp_path: Path) -> None:
    # A fresh machine may lack bubblewrap: the front door still plays (the demo's agent
    # and checks are mwai's own scripts) and says so. Here: bwrap looked for in vain.
    lines: list[str] = []
    missing = dataclasses.replace(SandboxConfig.of(Settings.defaults()),
                                  tool_path=str(tmp_path))
    assert demo_sandbox(lines.append, missing) == "off"
    assert len(lines) == 1 and "bwrap, prlimit, setpriv is not installed" in lines[0]
    assert "MWAI_SANDBOX=off" in lines[0]
    # Where bubblewrap works (CI installs it), the demo is sandboxed, and silent about it.
    assert demo_sandbox(lines.append) == "bwrap" and len(lines) == 1


def test_mwai_demo_refuses_a_used_directory(tmp_path: Path) -> None:
    (tmp_path / "mwai.sqlite3").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "mwai", "demo", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "earlier demo" in result.stderr


def test_mwai_serve_demo_answers_the_spec_curl_request(tmp_path: Path) -> None:
    import json
    import re
    import signal
    import threading
    import time
    import urllib.request

    from tests.acceptance.service import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MWAI_", "JIRA_", "GH_"))}
    env.update({"PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwai", "serve", "--demo", "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                              daemon=True)
    reader.start()

    def wait_for(text: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in list(lines) if text in line]
            if found:
                return found[0]
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the output:\n" + "".join(lines))

    try:
        secret_line = wait_for("X-Moveware-Webhook-Secret:")
        match = re.search(r"X-Moveware-Webhook-Secret: ([^\"]+)\"", secret_line)
        assert match, secret_line
        payload = {"event_type": "issue_assigned", "issue_key": "TEST-123",
                   "issue_type": "Story", "status": "Backlog",
                   "assignee_account_id": "ai-account"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhook/jira", data=json.dumps(payload).encode(),
            method="POST", headers={"Content-Type": "application/json",
                                    "X-Moveware-Webhook-Secret": match.group(1)})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["ok"] is True
        wait_for("Plan posted on TEST-123")
        wait_for("TEST-123 moved to Plan Review")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0, "".join(lines)
