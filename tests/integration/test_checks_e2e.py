"""The fix loop end to end: the sample repository's tests are the checks (sandboxed).

Three stories a reviewer cares about: a change that passes at once, one fixed on
the second attempt after the failing test's output went back to the agent, and one
that never passes (Blocked, nothing pushed, the failing output in the comment, the
worktree kept). Plus what ``mwai show`` and /metrics say about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.__main__ import main
from mwai.demo.sample_repo import git_branches, git_show, make_sample_origin
from mwai.demo.story import DEMO_PLAN, GITHUB_REPO, DemoStack, demo_agent_command
from mwai.runner.git import GitWorkspace
from mwai.runner.repos import RepoConfig

ONE_SUBTASK_PLAN: dict[str, Any] = {
    **DEMO_PLAN,
    "subtasks": [{"summary": "Add a greet() helper",
                  "description": "Add greet(name) returning 'Hello, <name>!'."}],
}
StackFactory = Callable[..., Awaitable[DemoStack]]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    stacks: list[DemoStack] = []

    async def make(**changes: Any) -> DemoStack:
        stack = DemoStack(tmp_path / f"stack{len(stacks)}", plan=ONE_SUBTASK_PLAN, **changes)
        stacks.append(stack)
        return await stack.start()

    yield make
    for stack in stacks:
        await stack.stop()


async def run_subtask(stack: DemoStack) -> str:
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users by name",
                               description="Users want to be greeted by name.")
    jira.human_assign(parent, jira.ai_account_id)
    assert await stack.wait_for(lambda: jira.issue(parent).status == "Plan Review", 30)
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
    assert await stack.wait_for(lambda: bool(jira.subtasks_of(parent)) and all(
        s.status in ("In Testing", "Blocked") for s in jira.subtasks_of(parent)), 90)
    return jira.subtasks_of(parent)[0].key


async def show(stack: DemoStack, run_id: int) -> str:
    """``mwai show RUN`` as an operator runs it (its own event loop, in a thread here)."""
    printed = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(printed):
            assert main(["show", str(run_id), "--db", str(stack.db_path)]) == 0

    await asyncio.to_thread(run)
    return printed.getvalue()


async def execute_run_id(stack: DemoStack, key: str) -> int:
    rows = await stack.store.recent_runs(since=0, limit=100)
    runs = [await stack.store.get_run(r.id) for r in rows]
    return max(r["id"] for r in runs if r["issue_key"] == key and r["action"] == "execute")


async def metric(stack: DemoStack, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_change_that_passes_at_once_is_pushed_with_only_its_files(
        make_stack: StackFactory) -> None:
    stack = await make_stack()
    key = await run_subtask(stack)
    assert stack.jira.issue(key).status == "In Testing"
    [pr] = stack.github.pulls(GITHUB_REPO)
    body = pr["body"]
    assert "| attempt | check | command | result | duration |" in body
    assert re.search(r"\| 1 \| .*sample_tests.* \| passed \|", body), body
    assert "Checks (configured) passed." in body
    assert f"- `A docs/changes/{key}.md`" in body and "- `M CHANGELOG.md`" in body
    branch = next(b for b in git_branches(stack.origin) if b.startswith("ai/"))
    assert "__pycache__" not in git_show(stack.origin, branch, "tests/")
    comment = stack.jira.comments_of(key)[-1]
    assert "Checks (configured) passed." in comment and "passed" in comment
    assert await metric(stack, 'mwai_checks_total{kind="check",outcome="passed"}') == 1
    assert await metric(stack, "mwai_fix_attempts_total") == 0


async def test_a_change_fixed_on_the_second_attempt(make_stack: StackFactory) -> None:
    stack = await make_stack(agent_command=demo_agent_command("buggy"))
    key = await run_subtask(stack)
    assert stack.jira.issue(key).status == "In Testing", stack.jira.comments_of(key)
    branch = next(b for b in git_branches(stack.origin) if b.startswith("ai/"))
    assert 'f"Hello, {name}!"' in git_show(stack.origin, branch, "sample/greet.py")
    [pr] = stack.github.pulls(GITHUB_REPO)
    assert re.search(r"\| 1 \| .*sample_tests.* \| failed \(exit 1\) \|", pr["body"]), pr["body"]
    assert re.search(r"\| 2 \| .*sample_tests.* \| passed \|", pr["body"])
    assert "passed after 1 fix attempt(s)" in stack.jira.comments_of(key)[-1]
    shown = await show(stack, await execute_run_id(stack, key))
    assert "Fix attempt 1 of 3" in shown
    table = shown.split("\nChecks\n", 1)[1]
    assert re.search(r"1\s+\S.*sample_tests\s+failed \(exit 1\)", table), table
    assert re.search(r"2\s+\S.*sample_tests\s+passed", table), table
    assert await metric(stack, "mwai_fix_attempts_total") == 1
    assert await metric(stack, 'mwai_checks_total{kind="check",outcome="failed"}') == 1


async def test_a_change_that_never_passes_is_blocked_and_not_pushed(
        make_stack: StackFactory) -> None:
    stack = await make_stack(agent_command=demo_agent_command("broken"), max_fix_attempts=1)
    key = await run_subtask(stack)
    issue = stack.jira.issue(key)
    assert issue.status == "Blocked"
    assert issue.assignee_account_id == stack.jira.human_account_id
    assert git_branches(stack.origin) == ["main"]  # nothing pushed
    assert stack.github.pulls(GITHUB_REPO) == []
    comment = stack.jira.comments_of(key)[-1]
    assert "still fails after 2 attempt(s)" in comment
    assert "AssertionError" in comment and "FAILED tests/test_greet.py::test_greet" in comment
    run_id = await execute_run_id(stack, key)
    # Each attempt has its own worktree (run-<id>-<attempt>-<random>): the one kept.
    [kept] = (stack.root / "work" / "worktrees").glob(f"run-{run_id}-*")
    assert (kept / "sample" / "greet.py").is_file()  # kept for inspection
    assert await metric(stack, 'mwai_checks_total{kind="check",outcome="failed"}') == 2


async def test_only_the_change_is_committed_without_a_gitignore(tmp_path: Path) -> None:
    origin = make_sample_origin(tmp_path / "origin.git")
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(RepoConfig(str(origin), "main", "acme/sample"), "ai/x", run_id=1)
    assert not (wt.path / ".gitignore").exists()
    (wt.path / "sample" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    junk = ["sample/__pycache__/calc.cpython-311.pyc", "node_modules/left/index.js",
            ".pytest_cache/v/cache/nodeids", ".coverage", "htmlcov/index.html",
            "sample/.calc.py.swp", "sample/calc.py~", "build/lib/x.py", "dist/x.whl",
            "sample.egg-info/PKG-INFO", ".mypy_cache/3.11/x.json", "target/debug/x"]
    for name in junk:
        (wt.path / name).parent.mkdir(parents=True, exist_ok=True)
        (wt.path / name).write_text("junk")
    (wt.path / "docs").mkdir()
    (wt.path / "docs" / "new.md").write_text("a new source file\n")
    assert await ws.commit_all(wt, "PROJ-2: change\n")
    assert await ws.changed_files(wt) == ["A docs/new.md", "M sample/calc.py"]
