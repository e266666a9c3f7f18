"""A story under kill -9: `mwai serve` as a subprocess, the fakes in the test's process.

``CrashStack`` starts fake Jira, GitHub and LLM, a sample origin, and hands out
``mwai serve`` processes on one port and one database, so a test can kill one
(SIGKILL: no cleanup at all) and start the next as a restart would.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from mwai.demo.fakes.github import FakeGitHub
from mwai.demo.fakes.jira import FakeJira
from mwai.demo.fakes.llm import FakeLlm
from mwai.demo.sample_repo import make_sample_origin
from mwai.demo.story import (
    DEMO_PLAN,
    GITHUB_REPO,
    demo_agent_command,
    plan_script,
    sample_checks_command,
)
from tests.acceptance.service import Service, free_port
from tests.conftest import SECRET

ONE_SUBTASK_PLAN = {**DEMO_PLAN, "subtasks": DEMO_PLAN["subtasks"][:1]}


async def wait_until(what: str, condition: Callable[[], bool | Awaitable[bool]],
                     timeout_s: float = 40.0, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        met = condition()
        if met if isinstance(met, bool) else await met:
            return
        await asyncio.sleep(0.05)
    log = service.output()[-4000:] if service else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")


class CrashStack:
    def __init__(self, tmp_path: Path, plan: dict[str, Any] | None = None,
                 **env: str) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.origin = make_sample_origin(tmp_path / "origin.git")
        self.jira = FakeJira(webhook_url=f"http://127.0.0.1:{self.port}/webhook/jira",
                             webhook_secret=SECRET)
        self.github = FakeGitHub((GITHUB_REPO,))
        self.llm = FakeLlm(plan_script(plan or ONE_SUBTASK_PLAN))
        self.extra_env = env
        self.services: list[Service] = []

    async def __aenter__(self) -> Self:
        await self.jira.start()
        await self.github.start()
        await self.llm.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for service in self.services:
            if service.proc is not None and service.proc.poll() is None:
                service.proc.kill()
                service.wait()
        await self.jira.stop()
        await self.github.stop()
        await self.llm.stop()

    def env(self) -> dict[str, str]:
        jira, github, llm = self.jira, self.github, self.llm
        return {
            "MWAI_PROCESSOR": "jira", "MWAI_WORKERS": "2", "MWAI_LOG_FORMAT": "json",
            "MWAI_RETRY_BASE_S": "0.2", "MWAI_RETRY_MAX_S": "1",
            "MWAI_LEASE_S": "5", "MWAI_RECOVERY_INTERVAL_S": "0.5",
            "MWAI_HTTP_TIMEOUT_S": "4", "MWAI_RECONCILE_INTERVAL_S": "2",
            "JIRA_BASE_URL": jira.url, "JIRA_EMAIL": jira.email,
            "JIRA_API_TOKEN": jira.api_token, "JIRA_AI_ACCOUNT_ID": jira.ai_account_id,
            "JIRA_HUMAN_ACCOUNT_ID": jira.human_account_id,
            "GH_TOKEN": github.token, "GITHUB_API_URL": github.api_url, "GH_REPO": GITHUB_REPO,
            "MWAI_REPO_URL": str(self.origin), "BASE_BRANCH": "main",
            "MWAI_WORK_DIR": str(self.tmp_path / "work"),
            "ANTHROPIC_API_KEY": llm.anthropic_key, "ANTHROPIC_BASE_URL": llm.anthropic_base_url,
            "MWAI_AGENT_COMMAND": demo_agent_command(), "MWAI_AGENT_TIMEOUT_S": "60",
            # The sample's own tests (auto-detection would want pytest in python3), and
            # unconfined: these agents are the tests' scripts under tmp_path, and they
            # report their pid and cwd there (the sandbox hides /tmp; the sandbox's own
            # crash behaviour is in tests/integration/test_hostile_agent.py).
            "MWAI_CHECKS": sample_checks_command(), "MWAI_SANDBOX": "off",
            **self.extra_env,
        }

    async def start(self) -> Service:
        service = Service(self.tmp_path, name=f"serve{len(self.services)}", port=self.port,
                          **self.env())
        self.services.append(service)
        await asyncio.to_thread(service.start)
        return service

    async def kill(self, service: Service) -> None:
        service.signal(signal.SIGKILL)
        await asyncio.to_thread(service.wait)

    async def idle(self, service: Service) -> bool:
        status, report = await asyncio.to_thread(service.get, "/health/detailed")
        return bool(status == 200 and report["queued"] == 0 and report["running"] == 0)

    def state(self, key: str) -> tuple[str, str | None]:
        issue = self.jira.issue(key)
        return issue.status, issue.assignee_account_id

    async def planned_parent(self, service: Service) -> str:
        """A parent assigned to AI, planned, handed to the human, mwai idle."""
        jira = self.jira
        parent = jira.create_issue(project="DEMO", summary="Greet users by name")
        jira.human_assign(parent, jira.ai_account_id)
        await wait_until("the plan handed to the human", lambda: self.state(parent) == (
            "Plan Review", jira.human_account_id), service=service)
        await wait_until("mwai idle", lambda: self.idle(service), service=service)
        return parent

    def human_undone(self) -> list[str]:
        """Every change of a person that the AI account reverted later (same field)."""
        undone = []
        for issue in self.jira.issues.values():
            for index, change in enumerate(issue.history):
                if change.author_account_id == self.jira.ai_account_id:
                    continue
                later = [h for h in issue.history[index + 1:] if h.field == change.field]
                if later and later[0].author_account_id == self.jira.ai_account_id \
                        and later[0].after == change.before:
                    undone.append(f"{issue.key} {change.field} {change.before}->"
                                  f"{change.after} undone")
        return undone
