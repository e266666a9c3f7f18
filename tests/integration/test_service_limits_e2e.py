"""End to end against the limits of the real services: GitHub's 403 rate limits and its
pull request limits, the LLM's overload and unavailability answers, and a run retried
after it spent (its cost is the sum of its attempts, in the runs table, in ``mwai show``
and on /metrics). The same stack as test_flow_e2e: mwai's app and workers, real git,
the demo agent, the fakes on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.clients.llm import estimate_cost_usd
from mwai.demo.story import GITHUB_REPO, DemoStack
from mwai.runner.planner import PLAN_MARKER
from tests.integration.test_checks_e2e import show
from tests.integration.test_flow_e2e import ONE_SUBTASK_PLAN, StackFactory, all_runs, settle


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    stacks: list[DemoStack] = []

    async def make(**changes: Any) -> DemoStack:
        stack = DemoStack(tmp_path / f"stack{len(stacks)}", **changes)
        stacks.append(stack)
        return await stack.start()

    yield make
    for stack in stacks:
        await stack.stop()


async def metric(stack: DemoStack, name: str) -> float:
    """A sample of /metrics, e.g. 'mwai_agent_cost_usd_total{action="plan"}' (0 if absent)."""
    async with aiohttp.ClientSession() as session, session.get(f"{stack.url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_retried_run_costs_the_sum_of_its_attempts(make_stack: StackFactory) -> None:
    # The first attempt writes the plan (the LLM answers, tokens spent), then Jira refuses
    # the plan comment and the run is retried: the second attempt writes it again.
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, http_retries=0, http_timeout_s=1.0,
                             max_attempts=3)
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users by name",
                               description="Users want to be greeted by name.")
    jira.fail_next(1, 500, match=f"POST /rest/api/3/issue/{parent}/comment")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")

    (run,) = [r for r in await all_runs(stack) if r["action"] == "plan"]
    assert run["status"] == "completed" and run["attempts"] == 2
    answered = [r for r in stack.llm.requests if r.status == 200]
    assert len(answered) == 2  # one plan written by each attempt
    input_tokens = sum(r.input_tokens for r in answered)
    output_tokens = sum(r.output_tokens for r in answered)
    costs = [estimate_cost_usd(r.json["model"], r.input_tokens, r.output_tokens)
             for r in answered]
    cost_usd = sum(c for c in costs if c is not None)
    assert cost_usd > 0
    assert (run["input_tokens"], run["output_tokens"]) == (input_tokens, output_tokens)
    assert run["cost_usd"] == pytest.approx(cost_usd)
    assert len([c for c in jira.comments_of(parent) if PLAN_MARKER in c]) == 1

    shown = await show(stack, int(run["id"]))
    assert f"${cost_usd:.4f}" in shown
    assert await metric(stack, 'mwai_agent_cost_usd_total{action="plan"}') == \
        pytest.approx(cost_usd)
    assert await metric(stack, 'mwai_agent_tokens_total{action="plan",kind="input"}') == \
        input_tokens
    assert await metric(stack, 'mwai_agent_tokens_total{action="plan",kind="output"}') == \
        output_tokens


async def test_rate_limited_github_and_overloaded_llm_still_end_with_one_pr(
        make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, http_retries=1, http_timeout_s=2.0,
                             max_attempts=3)
    jira, github, llm = stack.jira, stack.github, stack.llm
    github.drafts = False  # a repository without draft pull requests
    # The plan's request meets Anthropic's overload, then an unavailable service: the
    # plan run's first attempt runs out of tries, its second writes the plan.
    llm.fail_next("529")
    llm.fail_next("503")
    # The longest summary Jira takes: "KEY: summary" is over GitHub's 256.
    summary = ("Greet users by name " * 13).strip()[:255].strip()
    parent = jira.create_issue(project="DEMO", summary=summary,
                               description="Users want to be greeted by name.")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
    # Opening the pull request, after the push, meets GitHub's primary rate limit until
    # the first attempt runs out of tries, then its secondary one once.
    github.fail_next("403-primary", count=2, retry_after_s=0)
    github.fail_next("403-secondary", retry_after_s=0)
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
    await settle(stack, "the change",
                 lambda: [s.status for s in jira.subtasks_of(parent)] == ["In Testing"],
                 timeout_s=60.0)

    assert [r.status for r in llm.requests][:3] == [529, 503, 200]
    assert [r.status for r in github.requests_to("POST", f"/repos/{GITHUB_REPO}/pulls")] == \
        [403, 403, 403, 422, 201]
    (pull,) = github.pulls(GITHUB_REPO)
    assert pull["draft"] is False and len(pull["title"]) <= 256
    assert pull["title"].startswith(f"{parent}: Greet users by name")
    (sub,) = jira.subtasks_of(parent)
    assert sub.assignee_account_id == jira.human_account_id
    assert len([c for c in jira.comments_of(sub.key) if "Pull request:" in c]) == 1
    assert len([c for c in jira.comments_of(parent) if PLAN_MARKER in c]) == 1
    assert not [c for c in jira.comments_of(sub.key) if "could not finish" in c]
    runs = await all_runs(stack)
    # The retry may run as the same run or as the issue's queued run taking it over.
    executes = [r for r in runs if r["action"] == "execute" and r["status"] != "cancelled"]
    assert [(r["status"], r["pr_url"]) for r in executes] == [("completed", pull["html_url"])]
    assert max(r["attempts"] for r in runs if r["action"] == "execute") == 2
    assert not [r for r in runs if r["status"] not in ("completed", "cancelled")]
