"""kill -9 of `mwai serve` in the middle of EXECUTE, after the push, then a restart.

The fakes of Jira, GitHub and the LLM run in this test's process; mwai runs as a
real `mwai serve` subprocess with real git and the demo agent. A slow answer of
the fake (to the first pull-request request, or to the sub-task's result comment)
gives the test a moment where the push is done and the next side effect is in
flight: the service is killed right then. After the restart the run is taken
over and finished: one pull request, one commit, one result comment.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mwai.demo.fakes.github import FakeGitHub
from mwai.demo.fakes.jira import FakeJira
from mwai.demo.fakes.llm import FakeLlm
from mwai.demo.sample_repo import git_log, make_sample_origin
from mwai.demo.story import (
    DEMO_PLAN,
    GITHUB_REPO,
    demo_agent_command,
    plan_script,
    sample_checks_command,
)
from tests.acceptance.service import Service, free_port
from tests.conftest import SECRET

pytestmark = pytest.mark.slow

PLAN = {**DEMO_PLAN, "subtasks": DEMO_PLAN["subtasks"][:1]}


async def wait_until(what: str, condition: Callable[[], bool | Awaitable[bool]],
                     timeout_s: float = 30.0, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        met = condition()
        if met if isinstance(met, bool) else await met:
            return
        await asyncio.sleep(0.05)
    log = service.output()[-3000:] if service else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")


def idle(service: Service) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status, report = await asyncio.to_thread(service.get, "/health/detailed")
        return bool(status == 200 and report["queued"] == 0 and report["running"] == 0)

    return check


@pytest.mark.parametrize("kill_during", ["pull request", "result comment"])
async def test_kill_9_after_push_then_restart_makes_nothing_twice(
        tmp_path: Path, kill_during: str) -> None:
    origin = make_sample_origin(tmp_path / "origin.git")
    port = free_port()
    async with FakeJira(webhook_url=f"http://127.0.0.1:{port}/webhook/jira",
                        webhook_secret=SECRET) as jira, \
            FakeGitHub((GITHUB_REPO,)) as github, FakeLlm(plan_script(PLAN)) as llm:
        env = {
            "MWAI_PROCESSOR": "jira", "MWAI_WORKERS": "2", "MWAI_LOG_FORMAT": "json",
            "MWAI_RETRY_BASE_S": "0.2", "MWAI_RETRY_MAX_S": "1",
            "JIRA_BASE_URL": jira.url, "JIRA_EMAIL": jira.email,
            "JIRA_API_TOKEN": jira.api_token, "JIRA_AI_ACCOUNT_ID": jira.ai_account_id,
            "JIRA_HUMAN_ACCOUNT_ID": jira.human_account_id,
            "GH_TOKEN": github.token, "GITHUB_API_URL": github.api_url, "GH_REPO": GITHUB_REPO,
            "MWAI_REPO_URL": str(origin), "BASE_BRANCH": "main",
            "MWAI_WORK_DIR": str(tmp_path / "work"),
            "ANTHROPIC_API_KEY": llm.anthropic_key, "ANTHROPIC_BASE_URL": llm.anthropic_base_url,
            "MWAI_AGENT_COMMAND": demo_agent_command(), "MWAI_AGENT_TIMEOUT_S": "60",
            # The sample's own tests: auto-detection would pick `python3 -m pytest`,
            # which needs pytest in whichever python3 is first on PATH.
            "MWAI_CHECKS": sample_checks_command(),
        }
        first = Service(tmp_path, name="first", port=port, **env)
        await asyncio.to_thread(first.start)
        try:
            parent = jira.create_issue(project="DEMO", summary="Greet users by name")
            sub = f"DEMO-{int(parent.split('-')[1]) + 1}"  # the plan's only sub-task
            jira.human_assign(parent, jira.ai_account_id)
            await wait_until("the plan handed to the human", lambda: (
                jira.issue(parent).status, jira.issue(parent).assignee_account_id) == (
                "Plan Review", jira.human_account_id), service=first)
            await wait_until("the service idle after planning", idle(first), service=first)
            # The slow request: the fakes record it when it comes in and set its status
            # once answered, after acting on it (the pull request made, the comment kept).
            slow_request: Callable[[], list[Any]]
            if kill_during == "pull request":
                github.fail_next("slow", delay_s=3.0)
                slow_request = lambda: github.requests[:1]  # noqa: E731
            else:
                jira.slow_next(1, delay_s=3.0, match=f"POST /rest/api/3/issue/{sub}/comment")
                slow_request = lambda: jira.calls("POST", f"/issue/{sub}/comment")[:1]  # noqa: E731
            in_flight = lambda: bool(slow_request())  # noqa: E731
            jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
            await wait_until(f"the {kill_during} request", in_flight, service=first)
            first.signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait)
        finally:
            if first.proc is not None and first.proc.poll() is None:
                first.proc.kill()
        branch_commits = [s for s in git_log(origin, "--all") if s.startswith(f"{sub}: ")]
        assert len(branch_commits) == 1, "the push happened before the kill"

        # The fake still answers the dead service's slow request, and acts on it: the
        # restart comes after that, as it would after a real crash.
        await wait_until(f"the fake answered the {kill_during} request",
                         lambda: slow_request()[0].status != 0)
        second = Service(tmp_path, name="second", port=port, **env)
        await asyncio.to_thread(second.start)
        try:
            await wait_until("the sub-task in testing",
                             lambda: jira.issue(sub).status == "In Testing", service=second)
            await wait_until("the restarted service idle", idle(second), service=second)
            await jira.wait_webhooks()
        finally:
            second.stop()

        pulls = github.pulls(GITHUB_REPO)
        assert len(pulls) == 1
        branch = pulls[0]["head"]["ref"]
        assert git_log(origin, branch) == [f"{sub}: {PLAN['subtasks'][0]['summary']}",
                                           "Initial sample project"]
        results = [c for c in jira.comments_of(sub) if "Pull request:" in c]
        assert len(results) == 1, jira.comments_of(sub)
        assert not [c for c in jira.comments_of(sub) if "could not finish" in c]
        assert len([c for c in jira.comments_of(parent) if "[mwai-plan" in c]) == 1
        assert "recovered run of a dead process" in second.output().lower()
