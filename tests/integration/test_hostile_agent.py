"""Hostile agents and checks under the bubblewrap sandbox (MWAI_SANDBOX=bwrap).

Each case runs the whole story (mwai's app and workers, real git, the fakes) with
an agent script, or a check command, that attacks: it reads mwai's database, env
file, /proc/<mwai pid>/environ, ~/.ssh and another run's worktree, writes outside
its worktree, kills mwai, fork-bombs, allocates 10 GB, prints 1 GB, runs past its
time limit, leaves a daemon behind, or opens a connection during the checks. Each
asserts what it could not do, that the run ended with a clear error or Blocked, that
no secret reached a commit, comment, pull request, event or log line, and that
mwai keeps serving. Limits are small here so each case ends in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.demo.sample_repo import git_branches, git_show
from mwai.demo.story import DEMO_PLAN, GITHUB_REPO, DemoStack, demo_agent_command
from mwai.runner.verify.sandbox import Sandbox, SandboxConfig
from tests.conftest import make_settings

ONE_SUBTASK_PLAN: dict[str, Any] = {
    **DEMO_PLAN,
    "subtasks": [{"summary": "Add a greet() helper",
                  "description": "Add greet(name) returning 'Hello, <name>!'."}],
}
MARKER = "hostile-marker-5f0c2a91"  # a secret mwai holds in its own environment
DAEMON_SLEEP_S = "987651"  # an argument no other process on the machine uses
StackFactory = Callable[..., Awaitable[DemoStack]]
SMALL_LIMITS: dict[str, Any] = {
    "agent_timeout_s": 20.0, "sandbox_memory_bytes": 1 << 30, "sandbox_max_processes": 64,
    "sandbox_cpu_s": 30, "sandbox_max_output_bytes": 1 << 20, "max_fix_attempts": 0,
}


@pytest.fixture
async def make_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> AsyncIterator[StackFactory]:
    monkeypatch.setenv("MWAI_HOSTILE_MARKER", MARKER)  # visible in /proc/<pid>/environ
    stacks: list[DemoStack] = []

    async def make(**changes: Any) -> DemoStack:
        # These agents attack the machine: refuse to run them unless bwrap works here.
        assert Sandbox(SandboxConfig.of(make_settings(tmp_path))).problem() is None
        stack = DemoStack(tmp_path / f"stack{len(stacks)}", plan=ONE_SUBTASK_PLAN,
                          sandbox="bwrap", **{**SMALL_LIMITS, **changes})
        stacks.append(stack)
        return await stack.start()

    yield make
    for stack in stacks:
        assert stack.settings is not None and stack.settings.sandbox == "bwrap"
        await stack.stop()


def agent_script(tmp_path: Path, body: str) -> str:
    script = tmp_path / "hostile-agent.sh"
    script.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    script.chmod(0o755)
    return str(script)


async def run_subtask(stack: DemoStack, before_approval: Callable[[], None] = lambda: None
                      ) -> str:
    """Plan, approve, and wait until the sub-task's run is over; its key."""
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users by name",
                               description="Users want to be greeted by name.")
    jira.human_assign(parent, jira.ai_account_id)
    assert await stack.wait_for(lambda: jira.issue(parent).status == "Plan Review", 30)
    before_approval()
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
    assert await stack.wait_for(lambda: bool(jira.subtasks_of(parent)) and all(
        s.status != "In Progress" or s.assignee_account_id != jira.ai_account_id
        for s in jira.subtasks_of(parent)), 60), "the sub-task's run never ended"
    return jira.subtasks_of(parent)[0].key


async def assert_serving_and_clean(stack: DemoStack, caplog: pytest.LogCaptureFixture) -> None:
    """mwai answers, and no secret is in an event, comment, pull request or log line."""
    async with aiohttp.ClientSession() as session, session.get(f"{stack.url}/health") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    assert stack.settings is not None
    texts = [json.dumps(asdict(e)) for e in await stack.store.events_since(0, limit=100_000)]
    for issue in stack.jira.issues.values():
        texts += stack.jira.comments_of(issue.key)
    texts += [json.dumps(pr) for pr in stack.github.pulls(GITHUB_REPO)]
    texts += [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    for secret in [*stack.settings.secret_values(), MARKER]:
        assert not [t[:200] for t in texts if secret in t], f"{secret[:6]}... leaked"


def last_comment(stack: DemoStack, key: str) -> str:
    comments = stack.jira.comments_of(key)
    assert comments, f"no comment on {key}"
    return comments[-1]


async def test_reads_writes_and_kill_are_contained(
        make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    outside = tmp_path / "written-outside.txt"
    env_dir = tmp_path / "etc-mwai"
    env_dir.mkdir()
    (env_dir / "mwai.env").write_text(f"GH_TOKEN={MARKER}\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text(f"PRIVATE KEY {MARKER}\n")
    monkeypatch.setenv("HOME", str(home))  # the service's HOME
    root = tmp_path / "stack0"
    other = root / "work" / "worktrees" / "run-777"
    db = root / "mwai.sqlite3"
    try_read = " ".join(f"echo '== {p}'; cat {shlex.quote(str(p))} 2>&1 | head -c 300;"
                        for p in (db, env_dir / "mwai.env", home / ".ssh" / "id_ed25519",
                                  other / "secret.txt", "/etc/shadow"))
    body = f"""
exec > loot.txt 2>&1
{try_read}
echo '== proc'; cat /proc/{os.getpid()}/environ 2>&1 | tr '\\0' '\\n' | head -c 300
echo '== proc1'; cat /proc/1/environ 2>&1 | tr '\\0' '\\n' | grep -c HOSTILE
echo '== ls root'; ls -A /root 2>&1
echo '== ls work'; ls -A {shlex.quote(str(root / "work"))} 2>&1
echo '== write'; echo pwned > {shlex.quote(str(outside))} 2>&1; echo pwned > /usr/pwned 2>&1
echo '== kill'; kill -9 {os.getpid()} 2>&1; kill -9 $PPID 2>&1; echo "uid=$(id -u)"
"""
    stack = await make_stack(agent_command=agent_script(tmp_path, body),
                             sandbox_hide=(str(env_dir),))

    def other_run_worktree() -> None:
        other.mkdir(parents=True)
        (other / "secret.txt").write_text(f"other run {MARKER}\n")

    key = await run_subtask(stack, other_run_worktree)
    assert stack.jira.issue(key).status == "In Testing", stack.jira.comments_of(key)
    branch = next(b for b in git_branches(stack.origin) if b.startswith("ai/"))
    loot = git_show(stack.origin, branch, "loot.txt")
    assert MARKER not in loot and "PRIVATE KEY" not in loot
    assert loot.count("No such file or directory") >= 4  # db, env file, ssh key, other run
    assert "Permission denied" in loot.split("== /etc/shadow")[1].split("==")[0]
    assert loot.split("== proc1")[1].split("==")[0].strip() == "0"
    assert loot.split("== ls root")[1].split("==")[0].strip() in ("", ".pyenv")
    assert "run-777" not in loot.split("== ls work")[1].split("==")[0]
    assert not outside.exists() and not Path("/usr/pwned").exists()
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    assert f"uid={uid}" in loot
    await assert_serving_and_clean(stack, caplog)


async def test_fork_bomb_and_huge_allocation_end_blocked(
        make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Never as root: should the sandbox fail open, the test fails instead of the machine.
    body = f"""
[ "$(id -u)" = 0 ] && {{ echo "unconfined: running as root"; exit 9; }}
bomb() {{ bomb | bomb & }}
bomb 2>/dev/null
{shlex.quote(sys.executable)} -c 'bytearray(10 * 2**30)' 2>&1 | tail -1
exit 3
"""
    stack = await make_stack(agent_command=agent_script(tmp_path, body))
    key = await run_subtask(stack)
    assert stack.jira.issue(key).status == "Blocked"
    comment = last_comment(stack, key)
    assert "exited with code 3" in comment and "MemoryError" in comment
    assert git_branches(stack.origin) == ["main"]
    await assert_serving_and_clean(stack, caplog)


@pytest.mark.parametrize(("body", "error"), [
    ("head -c 1000000000 /dev/zero | tr '\\0' 'x'", "printed more than 1048576 bytes"),
    ("echo thinking; sleep 600", "agent timed out after 2 s"),
])
async def test_flood_and_timeout_fail_the_run_with_a_clear_error(
        make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        body: str, error: str) -> None:
    stack = await make_stack(agent_command=agent_script(tmp_path, body), agent_timeout_s=2.0)
    key = await run_subtask(stack)
    runs = [await stack.store.get_run(r.id) for r in await stack.store.recent_runs(0, 100)]
    failed = [r for r in runs if r["status"] == "failed"]
    assert [r["issue_key"] for r in failed] == [key]
    assert error in failed[0]["last_error"]
    assert "could not finish" in last_comment(stack, key)
    assert git_branches(stack.origin) == ["main"]
    await assert_serving_and_clean(stack, caplog)


def _daemon_alive() -> bool:
    for proc in Path("/proc").iterdir():
        try:
            if DAEMON_SLEEP_S in (proc / "cmdline").read_bytes().decode("utf-8", "replace"):
                return True
        except OSError:
            continue
    return False


async def test_a_daemon_left_behind_dies_with_the_run(
        make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    body = (f"setsid sh -c 'sleep {DAEMON_SLEEP_S}' < /dev/null > /dev/null 2>&1 &\n"
            "echo change > daemon-was-here.txt; echo done")
    stack = await make_stack(agent_command=agent_script(tmp_path, body))
    key = await run_subtask(stack)
    assert stack.jira.issue(key).status == "In Testing"
    deadline = time.monotonic() + 10
    while _daemon_alive() and time.monotonic() < deadline:
        await stack.wait_for(lambda: True, 0.2)
    assert not _daemon_alive()
    await assert_serving_and_clean(stack, caplog)


async def test_checks_run_without_network_and_a_failing_check_blocks(
        make_stack: StackFactory, caplog: pytest.LogCaptureFixture) -> None:
    accepted: list[object] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    check = shlex.join([sys.executable, "-c", "import socket; "
                        f"socket.create_connection(('127.0.0.1', {port}), timeout=3)"])
    try:
        stack = await make_stack(agent_command=demo_agent_command(), checks=check)
        key = await run_subtask(stack)
    finally:
        stop.set()
        thread.join(5)
        server.close()
    assert accepted == []
    assert stack.jira.issue(key).status == "Blocked"
    assert stack.jira.issue(key).assignee_account_id == stack.jira.human_account_id
    comment = last_comment(stack, key)
    assert "still fails" in comment and "python" in comment
    assert any(e in comment for e in ("Network is unreachable", "Connection refused"))
    assert git_branches(stack.origin) == ["main"]  # nothing pushed
    await assert_serving_and_clean(stack, caplog)


async def test_a_hostile_check_command_is_contained_and_its_output_clean(
        make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "stack0"
    check = f"""echo "== db"; cat {shlex.quote(str(root / "mwai.sqlite3"))} 2>&1 | head -c 200
echo "== proc"; cat /proc/{os.getpid()}/environ 2>&1 | tr '\\0' '\\n' | head -c 200
echo "== kill"; kill -9 {os.getpid()} 2>&1
echo "== write"; echo x > /usr/pwned-by-check 2>&1
echo "== uid=$(id -u)"
exit 1"""
    stack = await make_stack(agent_command=demo_agent_command(), checks=check)
    key = await run_subtask(stack)
    assert stack.jira.issue(key).status == "Blocked"
    comment = last_comment(stack, key)
    assert "still fails" in comment and "No such file or directory" in comment
    assert MARKER not in comment and "SQLite format" not in comment
    assert "Read-only file system" in comment and not Path("/usr/pwned-by-check").exists()
    assert f"== uid={65534 if os.geteuid() == 0 else os.geteuid()}" in comment
    assert git_branches(stack.origin) == ["main"]
    await assert_serving_and_clean(stack, caplog)
