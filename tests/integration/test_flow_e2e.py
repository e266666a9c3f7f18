"""End to end: mwai's app, workers and SQLite file, real git with a local bare origin,
the demo agent as a real subprocess, and in-process fakes of Jira, GitHub and the LLM.

Each test drives the story the way people do in Jira (assign, approve, comment,
move) and checks what they would look at: Jira statuses and comments, the pull
request, the commits on the branch, the runs table.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.clients.llm import LlmClient
from mwai.demo.sample_repo import git_branches, git_log, git_show, make_sample_origin
from mwai.demo.story import DEMO_PLAN, GITHUB_REPO, DemoStack, demo_agent_command, play_story
from mwai.errors import PermanentError
from mwai.runner.agent import run as agent_run
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.output import AgentResult
from mwai.runner.flow import JiraProcessor
from mwai.runner.planner import PLAN_MARKER
from mwai.settings import Settings

ONE_SUBTASK_PLAN: dict[str, Any] = {
    **DEMO_PLAN,
    "subtasks": [{"summary": "Add a greet() helper",
                  "description": "Add greet(name) returning 'Hello, <name>!'."}],
}

StackFactory = Callable[..., Awaitable[DemoStack]]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    stacks: list[DemoStack] = []

    async def make(*, make_processor: Callable[[Settings], Any] | None = None,
                   **changes: Any) -> DemoStack:
        stack = DemoStack(tmp_path / f"stack{len(stacks)}", **changes)
        stacks.append(stack)
        return await stack.start(make_processor)

    yield make
    for stack in stacks:
        await stack.stop()


async def settle(stack: DemoStack, what: str, condition: Callable[[], bool],
                 timeout_s: float = 30.0) -> None:
    if not await stack.wait_for(condition, timeout_s):
        runs = await all_runs(stack)
        pytest.fail(f"timed out waiting for {what}; runs: {runs}")


async def all_runs(stack: DemoStack) -> list[dict[str, Any]]:
    rows = await stack.store.recent_runs(since=0, limit=500)
    return [await stack.store.get_run(row.id) for row in rows]


async def all_events(stack: DemoStack) -> list[dict[str, Any]]:
    return [asdict(event) for event in await stack.store.events_since(0, limit=100_000)]


async def approved_parent(stack: DemoStack, project: str = "DEMO") -> str:
    """A parent ticket assigned to AI, planned, and approved by the human."""
    jira = stack.jira
    parent = jira.create_issue(project=project, summary="Greet users by name",
                               description="Users want to be greeted by name.")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
    return parent


def statuses(stack: DemoStack, parent: str) -> list[str]:
    return [sub.status for sub in stack.jira.subtasks_of(parent)]


@pytest.mark.parametrize("site", ["cloud", "data-center"])
async def test_whole_story(make_stack: StackFactory, tmp_path: Path, site: str) -> None:
    """The story against Jira Cloud, and against Jira Data Center (REST v2, a personal
    access token, users by username: assignments send {"name": ...})."""
    stale = tmp_path / "stack0" / "work" / "worktrees" / "run-999"
    stale.mkdir(parents=True)  # left by a crash: removed when the processor starts
    (stale / "half-done.txt").write_text("x")
    stack = await make_stack(data_center=site == "data-center")
    lines: list[str] = []
    result = await play_story(stack, lines.append)
    jira = stack.jira
    parent = result["parent"]
    subs = result["subtasks"]

    assert jira.issue(parent).status == "Done"
    assert [jira.issue(key).status for key in subs] == ["Done", "Done"]
    assert [jira.issue(key).summary for key in subs] == [
        "Add a greet() helper", "Document greet() in the README"]
    plan_comments = [c for c in jira.comments_of(parent) if PLAN_MARKER in c]
    assert len(plan_comments) == 1
    assert "Add a greet() helper" in plan_comments[0]

    pulls = stack.github.pulls(GITHUB_REPO)
    assert len(pulls) == 1
    pr = pulls[0]
    branch = pr["head"]["ref"]
    assert branch.startswith(f"ai/{parent}-greet-users")
    assert pr["base"]["ref"] == "main" and pr["draft"] is False
    assert git_log(stack.origin, branch) == [
        f"{subs[1]}: Document greet() in the README", f"{subs[0]}: Add a greet() helper",
        "Initial sample project"]
    assert f"- {subs[0]}: Add a greet() helper" in git_show(stack.origin, branch,
                                                             "CHANGELOG.md")

    for key in subs:
        results = [c for c in jira.comments_of(key) if "Pull request:" in c]
        assert len(results) == 1, jira.comments_of(key)
        assert branch in results[0] and pr["html_url"] in results[0]
    assert any("ready for review" in c for c in jira.comments_of(parent))

    runs = await all_runs(stack)
    assert not [r for r in runs if r["status"] != "completed"]
    executed = [r for r in runs if r["action"] == "execute"]
    assert {r["issue_key"] for r in executed} == set(subs)
    for run in executed:
        assert run["branch"] == branch and run["pr_url"] == pr["html_url"]
        assert run["cost_usd"] is not None and run["input_tokens"]
    pushes = [e for e in await all_events(stack) if '"step":"push"' in e["meta_json"]]
    assert len(pushes) == 2
    assert any("Action: plan" in line for line in lines)
    assert list((tmp_path / "stack0" / "work" / "worktrees").iterdir()) == []
    assignments = [call.json for call in jira.calls("PUT", "/assignee")]
    assert assignments and all(set(body) == {"name" if jira.data_center else "accountId"}
                               for body in assignments)
    assert all(call.auth_ok for call in jira.requests)
    if jira.data_center:
        assert not jira.calls(path_contains="/rest/api/3/")
        assert {sub.assignee_account_id for sub in jira.subtasks_of(parent)} == {"jsmith"}


async def test_rework_gets_a_second_commit_on_the_same_branch_and_pr(
        make_stack: StackFactory) -> None:
    prompts: list[str] = []

    async def recording_agent(config: AgentConfig, worktree: Path, prompt: str,
                              llm: LlmClient | None, **options: Any) -> AgentResult:
        prompts.append(prompt)
        return await agent_run.run_agent(config, worktree, prompt, llm, **options)

    stack = await make_stack(
        plan=ONE_SUBTASK_PLAN,
        make_processor=lambda s: JiraProcessor(s, run_agent=recording_agent))
    jira = stack.jira
    parent = await approved_parent(stack)
    await settle(stack, "the first change", lambda: statuses(stack, parent) == ["In Testing"])
    sub = jira.subtasks_of(parent)[0].key
    feedback = "Please also greet an empty name as 'Hello, friend!'"
    jira.human_comment(sub, feedback)
    jira.human_transition(sub, "In Progress", assignee=jira.ai_account_id)
    await settle(stack, "the rework", lambda: len(
        [c for c in jira.comments_of(sub) if "Pull request:" in c]) == 2)

    assert jira.issue(sub).status == "In Testing"
    assert jira.issue(sub).assignee_account_id == jira.human_account_id
    assert len(prompts) == 2
    assert feedback not in prompts[0]
    assert feedback in prompts[1]
    pulls = stack.github.pulls(GITHUB_REPO)
    assert len(pulls) == 1
    branch = pulls[0]["head"]["ref"]
    assert git_log(stack.origin, branch)[:2] == [f"{sub}: Add a greet() helper"] * 2
    assert "Revision 2" in git_show(stack.origin, branch, f"docs/changes/{sub}.md")


async def test_multi_repo_routing_by_project_key(make_stack: StackFactory,
                                                 tmp_path: Path) -> None:
    other = make_sample_origin(tmp_path / "other.git")
    first = tmp_path / "stack0" / "origin.git"
    repos_file = tmp_path / "repos.toml"
    repos_file.write_text(
        f'[projects.DEMO]\nrepo_url = "{first}"\nbase_branch = "main"\n'
        f'github_repo = "{GITHUB_REPO}"\n\n'
        f'[projects.OTHER]\nrepo_url = "{other}"\nbase_branch = "main"\n'
        'github_repo = "acme/other"\n', encoding="utf-8")
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, github_repos=(GITHUB_REPO, "acme/other"),
                             repos_file=str(repos_file), repo_url="", gh_repo="")
    parent = await approved_parent(stack, project="OTHER")
    await settle(stack, "the change", lambda: statuses(stack, parent) == ["In Testing"])

    assert stack.github.pulls(GITHUB_REPO) == []
    pulls = stack.github.pulls("acme/other")
    assert len(pulls) == 1
    branch = pulls[0]["head"]["ref"]
    assert branch.startswith(f"ai/{parent}-")
    assert git_log(other, branch)[0].startswith(f"{stack.jira.subtasks_of(parent)[0].key}: ")
    assert git_branches(stack.origin) == ["main"]


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return True


async def test_agent_timeout_kills_the_group_fails_the_run_and_tells_jira(
        make_stack: StackFactory, tmp_path: Path) -> None:
    pid_file = tmp_path / "agent.pids"
    command = shlex.join([sys.executable, "-m", "mwai.demo.agent", "--mode", "hang",
                          "--spawn-child", "--pid-file", str(pid_file)])
    # The pid file is written outside the worktree and the pids are read from outside:
    # unconfined (the sandboxed timeout is in tests/integration/test_hostile_agent.py).
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, agent_command=command,
                             agent_timeout_s=1.0, sandbox="off")
    jira = stack.jira
    parent = await approved_parent(stack)
    await settle(stack, "the failure comment", lambda: any(
        "could not finish" in c for s in jira.subtasks_of(parent) for c in
        jira.comments_of(s.key)))

    sub = jira.subtasks_of(parent)[0].key
    failed = [r for r in await all_runs(stack) if r["status"] == "failed"]
    assert [r["issue_key"] for r in failed] == [sub]
    assert "run the agent" in failed[0]["last_error"]
    assert "timed out" in failed[0]["last_error"]
    comments = [c for c in jira.comments_of(sub) if "could not finish" in c]
    assert len(comments) == 1
    assert f"mwai requeue {failed[0]['id']}" in comments[0]
    assert jira.issue(sub).assignee_account_id == jira.human_account_id
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    assert all(_process_gone(pid) for pid in pids)
    assert stack.github.pulls(GITHUB_REPO) == []


async def test_agent_that_changes_nothing_blocks_the_subtask(make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, agent_command=demo_agent_command("nothing"))
    jira = stack.jira
    parent = await approved_parent(stack)
    await settle(stack, "the blocked sub-task", lambda: statuses(stack, parent) == ["Blocked"])

    sub = jira.issue(jira.subtasks_of(parent)[0].key)
    assert sub.assignee_account_id == jira.human_account_id
    comments = jira.comments_of(sub.key)
    assert len(comments) == 1
    assert "without changing any file" in comments[0]
    assert "Nothing to change for" in comments[0]  # the agent's last message
    assert stack.github.pulls(GITHUB_REPO) == []
    assert git_branches(stack.origin) == ["main"]
    assert all(r["status"] == "completed" for r in await all_runs(stack))


async def test_jira_429_then_success(make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN)
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users by name")
    jira.fail_next(2, 429, retry_after_s=0.2, match="/rest/api/3/issue/")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")

    assert len([r for r in jira.requests if r.status == 429]) == 2
    assert len([c for c in jira.comments_of(parent) if PLAN_MARKER in c]) == 1
    plan_runs = [r for r in await all_runs(stack) if r["action"] == "plan"]
    assert [(r["status"], r["attempts"]) for r in plan_runs] == [("completed", 1)]


async def test_jira_500_until_attempts_run_out(make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, max_attempts=2, http_retries=1)
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users by name")
    jira.fail_next(50, 500, match=f"GET /rest/api/3/issue/{parent}")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the failed run", lambda: any(
        "could not finish" in c for c in jira.comments_of(parent)))
    jira.faults.clear()

    runs = await all_runs(stack)
    assert len(runs) == 1
    run = runs[0]
    assert (run["status"], run["attempts"]) == ("failed", 2)
    assert "read the issue" in run["last_error"] and "500" in run["last_error"]
    failures = [c for c in jira.comments_of(parent) if "could not finish" in c]
    assert len(failures) == 1
    assert f"mwai requeue {run['id']}" in failures[0]
    assert jira.issue(parent).status == "Backlog"


async def test_no_secret_in_events_logs_comments_or_agent_environment(
        make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The sandboxed agent writes its environment into the worktree (agent-env.json),
    # so what it saw is also what was committed and pushed.
    command = shlex.join([sys.executable, "-m", "mwai.demo.agent", "--mode", "dump-env"])
    stack = await make_stack(agent_command=command)
    result = await play_story(stack, lambda line: None)
    assert stack.settings is not None
    secrets = stack.settings.secret_values()
    assert len(secrets) >= 4  # webhook secret, Jira token, GitHub token, LLM key

    texts = [json.dumps(dict(e)) for e in await all_events(stack)]
    texts += [json.dumps({k: v for k, v in r.items()}) for r in await all_runs(stack)]
    for issue in stack.jira.issues.values():
        texts += stack.jira.comments_of(issue.key)
    texts += [json.dumps(pr) for pr in stack.github.pulls(GITHUB_REPO)]
    texts += [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    agent_env = json.loads(git_show(stack.origin, result["branch"], "agent-env.json"))
    texts += [f"{name}={value}" for name, value in agent_env.items()]
    texts += git_log(stack.origin, result["branch"])
    assert texts
    for secret in secrets:
        leaks = [text[:200] for text in texts if secret in text]
        assert not leaks, f"a secret leaked into: {leaks}"
    assert "JIRA_API_TOKEN" not in agent_env and "GH_TOKEN" not in agent_env
    assert os.environ.get("PATH") is None or "PATH" in agent_env


async def test_retried_run_skips_the_steps_it_already_did(make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, http_retries=1, max_attempts=3)
    jira = stack.jira
    stack.github.fail_next("500", count=2)  # the first attempt's PR step runs out of tries
    parent = await approved_parent(stack)
    await settle(stack, "the change", lambda: statuses(stack, parent) == ["In Testing"])

    sub = jira.subtasks_of(parent)[0].key
    # The retry may run as the same run or as the issue's queued run taking it over.
    runs = [r for r in await all_runs(stack) if r["action"] == "execute"]
    assert [r["status"] for r in runs if r["status"] != "cancelled"] == ["completed"]
    assert max(r["attempts"] for r in runs) == 2
    events = [e for r in runs for e in await stack.store.events(r["id"])]
    assert len([e for e in events if e["message"].startswith("Agent finished")]) == 1
    assert len([e for e in events if '"step":"push"' in e["meta_json"]]) == 1
    assert [r.status for r in stack.github.requests][:2] == [500, 500]
    pulls = stack.github.pulls(GITHUB_REPO)
    assert len(pulls) == 1
    assert git_log(stack.origin, pulls[0]["head"]["ref"])[0] == f"{sub}: Add a greet() helper"
    assert len(git_log(stack.origin, pulls[0]["head"]["ref"])) == 2
    assert len([c for c in jira.comments_of(sub) if "Pull request:" in c]) == 1


async def test_plan_with_only_questions_blocks_the_parent(make_stack: StackFactory) -> None:
    questions = {"overview": "Unclear.", "subtasks": [],
                 "questions": ["Which languages must the greeting support?"]}
    stack = await make_stack(plan=questions)
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the questions", lambda: jira.issue(parent).status == "Blocked")

    assert jira.issue(parent).assignee_account_id == jira.human_account_id
    comments = jira.comments_of(parent)
    assert len(comments) == 1
    assert "Which languages must the greeting support?" in comments[0]
    assert jira.subtasks_of(parent) == []


async def test_replanning_takes_the_new_human_comments_into_account(
        make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN)
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users by name")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the first plan", lambda: jira.issue(parent).status == "Plan Review")
    jira.human_comment(parent, "Please greet in French too: 'Bonjour'.")
    jira.human_transition(parent, "Backlog", assignee=jira.ai_account_id)
    await settle(stack, "the second plan", lambda: len(
        [c for c in jira.comments_of(parent) if PLAN_MARKER in c]) == 2
        and jira.issue(parent).status == "Plan Review")

    prompts = [json.dumps(r.json) for r in stack.llm.requests]
    assert len(prompts) == 2
    assert "Bonjour" not in prompts[0]
    assert "Bonjour" in prompts[1]


async def test_requeue_of_a_failed_run_retries_it_as_the_failure_comment_says(
        make_stack: StackFactory) -> None:
    calls: list[str] = []

    async def flaky_agent(config: AgentConfig, worktree: Path, prompt: str,
                          llm: LlmClient | None, **options: Any) -> AgentResult:
        calls.append(prompt)
        if len(calls) == 1:
            raise PermanentError("agent crashed: out of credits")
        return await agent_run.run_agent(config, worktree, prompt, llm, **options)

    stack = await make_stack(plan=ONE_SUBTASK_PLAN,
                             make_processor=lambda s: JiraProcessor(s, run_agent=flaky_agent))
    jira = stack.jira
    parent = await approved_parent(stack)
    await settle(stack, "the failure", lambda: any(
        "could not finish" in c for s in jira.subtasks_of(parent) for c in
        jira.comments_of(s.key)))
    sub = jira.subtasks_of(parent)[0].key
    failed = [r for r in await all_runs(stack) if r["status"] == "failed"]
    assert len(failed) == 1 and "out of credits" in failed[0]["last_error"]
    assert jira.issue(sub).assignee_account_id == jira.human_account_id

    await stack.store.requeue(int(failed[0]["id"]), by="test")
    await settle(stack, "the retried change", lambda: jira.issue(sub).status == "In Testing")
    assert (await stack.store.get_run(int(failed[0]["id"])))["status"] == "completed"
    assert len(stack.github.pulls(GITHUB_REPO)) == 1
    assert len([c for c in jira.comments_of(sub) if "could not finish" in c]) == 1


async def test_builtin_llm_agent_through_an_openai_compatible_api(
        make_stack: StackFactory) -> None:
    plan_text = json.dumps(ONE_SUBTASK_PLAN)
    edits = json.dumps({"summary": "Added greet() to sample/calc.py.", "edits": [
        {"path": "sample/greet.py", "content": "def greet(name: str) -> str:\n"
                                               "    return f'Hello, {name}!'\n"},
        {"path": "../outside.txt", "content": "must not be written"},
    ]})

    def script(request: dict[str, Any]) -> str:
        return edits if "careful coding agent" in json.dumps(request) else plan_text

    stack = await make_stack(plan=ONE_SUBTASK_PLAN, llm_script=script, llm_provider="openai",
                             agent_command="")
    parent = await approved_parent(stack)
    await settle(stack, "the change", lambda: statuses(stack, parent) == ["In Testing"])

    assert stack.llm.requests_to("/v1/chat/completions")
    assert not stack.llm.requests_to("/v1/messages")
    branch = stack.github.pulls(GITHUB_REPO)[0]["head"]["ref"]
    assert "Hello, {name}!" in git_show(stack.origin, branch, "sample/greet.py")
    assert not list(stack.root.rglob("outside.txt"))
    sub = stack.jira.subtasks_of(parent)[0].key
    result = [c for c in stack.jira.comments_of(sub) if "Pull request:" in c][0]
    assert "Added greet() to sample/calc.py." in result
    assert "Refused edits" in result


async def test_a_repeated_start_trigger_creates_nothing_twice(make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN)
    jira = stack.jira
    parent = await approved_parent(stack)
    await settle(stack, "the change", lambda: statuses(stack, parent) == ["In Testing"])
    comments_before = jira.comments_of(parent)

    jira.human_assign(parent, jira.human_account_id)  # someone fiddles with the assignee
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the repeated START", lambda: True)

    assert len(jira.subtasks_of(parent)) == 1
    assert statuses(stack, parent) == ["In Testing"]
    assert jira.comments_of(parent) == comments_before
    starts = [r for r in await all_runs(stack) if r["action"] == "start"]
    assert len(starts) >= 2 and all(r["status"] == "completed" for r in starts)


async def test_jira_data_center_rest_v2(make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, data_center=True)
    parent = await approved_parent(stack)
    await settle(stack, "the change", lambda: statuses(stack, parent) == ["In Testing"])

    assert stack.jira.calls(path_contains="/rest/api/2/")
    assert not stack.jira.calls(path_contains="/rest/api/3/")
    sub = stack.jira.subtasks_of(parent)[0].key
    assert isinstance(stack.jira.comment_records(sub)[0].body, str)  # plain text in v2


async def post_webhook(stack: DemoStack, body: dict[str, Any]) -> int:
    """A webhook as a caller with the secret sends it; 200 means the run is on disk."""
    async with aiohttp.ClientSession() as session, session.post(
            f"{stack.url}/webhook/jira", json=body,
            headers={"X-Moveware-Webhook-Secret": stack.secret}) as answer:
        await answer.read()
        return answer.status


async def test_the_run_decides_from_jira_never_from_the_webhook_body(
        make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN)
    jira = stack.jira
    key = jira.create_issue(project="DEMO", summary="Shipped long ago", status="Done",
                            assignee=jira.human_account_id)
    forged = {"event_type": "issue_assigned", "issue_key": key, "issue_type": "Story",
              "status": "Backlog", "assignee_account_id": jira.ai_account_id,
              "project_key": "DEMO"}
    assert await post_webhook(stack, forged) == 200
    await settle(stack, "the run", lambda: True)

    runs = await all_runs(stack)
    assert [(r["issue_key"], r["status"], r["action"]) for r in runs] == [
        (key, "completed", "noop")]
    events = await all_events(stack)
    noop = [json.loads(e["meta_json"]) for e in events if e["message"] == "Nothing to do"]
    assert [meta["reason"] for meta in noop] == [
        f"parent {key} is assigned to {jira.human_account_id}, not to the AI account "
        "(JIRA_AI_ACCOUNT_ID)"]
    issue = jira.issue(key)
    assert (issue.status, issue.assignee_account_id) == ("Done", jira.human_account_id)
    assert jira.comments_of(key) == [] and issue.history == []
    # The run reads the issue and writes nothing (the catch-up's search at start aside).
    assert [(r.method, r.path) for r in jira.requests if not r.path.endswith("/search/jql")
            ] == [("GET", f"/rest/api/3/issue/{key}")]
    assert stack.llm.requests == [] and stack.github.requests == []


async def test_only_the_human_reviewer_approves_a_plan(make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN)
    jira = stack.jira
    colleague = "colleague-account"
    jira.accounts[colleague] = "A Colleague"
    parent = jira.create_issue(project="DEMO", summary="Greet users by name")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
    comments = jira.comments_of(parent)
    llm_calls = len(stack.llm.requests)

    # Someone who may edit the ticket, but is not the reviewer, "approves" it.
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id, author=colleague)
    await settle(stack, "the refused approval", lambda: True)
    refused = [r for r in await all_runs(stack) if r["action"] == "noop"]
    assert refused and all(r["status"] == "completed" for r in refused)
    reasons = [json.loads(e["meta_json"]).get("reason", "") for r in refused
               for e in await stack.store.events(r["id"])]
    assert any(f"{parent} was moved to In Progress by {colleague}, not by the plan reviewer "
               f"({jira.human_account_id})" in reason for reason in reasons), reasons
    assert jira.subtasks_of(parent) == []
    assert jira.comments_of(parent) == comments
    assert len(stack.llm.requests) == llm_calls
    assert [r for r in await all_runs(stack) if r["action"] == "start"] == []

    # The reviewer approves: out of In Progress and back, by the reviewer's own hand.
    jira.human_transition(parent, "Plan Review", assignee=jira.human_account_id)
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
    await settle(stack, "the change", lambda: statuses(stack, parent) == ["In Testing"])
    starts = [r for r in await all_runs(stack) if r["action"] == "start"]
    assert starts and all(r["status"] == "completed" for r in starts)
    assert [s.summary for s in jira.subtasks_of(parent)] == ["Add a greet() helper"]
