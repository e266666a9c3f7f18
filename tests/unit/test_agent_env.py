"""The agent's environment, its prompt, and how its output is read (pure parts)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwai.model import Comment, Issue
from mwai.runner.agent.builtin import apply_edits
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.env import agent_environment
from mwai.runner.agent.output import parse_agent_output
from mwai.runner.agent.process import BoundedCapture
from mwai.runner.agent.prompt import build_prompt
from mwai.runner.planner import Plan, PlannedSubtask
from tests.conftest import make_settings

SECRETS = {
    "JIRA_API_TOKEN": "jira-token-abcdef",
    "GH_TOKEN": "ghp_secret_0123456789",
    "JIRA_WEBHOOK_SECRET": "hook-secret-xyz",
    "MWAI_METRICS_TOKEN": "metrics-token-1",
    "SENTRY_DSN": "https://key@sentry.example/1",
    "GITHUB_TOKEN": "ghp_other_token_42",
}
BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/mwai",
    "LANG": "C.UTF-8",
    "ANTHROPIC_API_KEY": "sk-ant-for-the-agent",
    "SOME_TOOL_CONFIG": "on",
    "UNLISTED": "nope",
    **SECRETS,
}


def test_only_base_names_and_listed_names(tmp_path: Path) -> None:
    config = AgentConfig.of(make_settings(
        tmp_path, agent_pass_env=("ANTHROPIC_API_KEY", "SOME_TOOL_CONFIG", "NOT_SET_ANYWHERE")))
    env = agent_environment(config, BASE_ENV)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/mwai",
        "LANG": "C.UTF-8",
        "ANTHROPIC_API_KEY": "sk-ant-for-the-agent",
        "SOME_TOOL_CONFIG": "on",
    }
    assert "LC_ALL" in agent_environment(config, {**BASE_ENV, "LC_ALL": "C"})


def test_mwai_secrets_are_refused_even_when_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = AgentConfig.of(make_settings(
        tmp_path,
        agent_pass_env=tuple(SECRETS),
        jira_api_token=SECRETS["JIRA_API_TOKEN"],
        gh_token=SECRETS["GH_TOKEN"],
    ))
    with caplog.at_level(logging.WARNING, logger="mwai.agent"):
        env = agent_environment(config, BASE_ENV)
    assert not set(SECRETS) & set(env)
    assert not set(SECRETS.values()) & set(env.values())
    for name in ("JIRA_API_TOKEN", "GH_TOKEN", "JIRA_WEBHOOK_SECRET"):
        assert any(name in record.getMessage() for record in caplog.records)
    # The warnings name the variables, never their values.
    assert not any(v in caplog.text for v in SECRETS.values())


def test_a_renamed_copy_of_a_secret_is_refused(tmp_path: Path) -> None:
    config = AgentConfig.of(make_settings(tmp_path, agent_pass_env=("MY_COPY",),
                                          gh_token="ghp_copy_me_123"))
    env = agent_environment(config, {**BASE_ENV, "MY_COPY": "ghp_copy_me_123"})
    assert "MY_COPY" not in env


# -- prompt -----------------------------------------------------------------------


def issue(key: str, summary: str, description: str, parent: str | None = None) -> Issue:
    return Issue(key=key, summary=summary, description=description, status="In Progress",
                 issue_type="Sub-task" if parent else "Story", is_subtask=parent is not None,
                 assignee_account_id="ai", parent_key=parent, project_key=key.split("-")[0],
                 labels=(), subtask_keys=())


PLAN = Plan(overview="Add CSV export to reports.", assumptions=["pandas is not needed"],
            acceptance_criteria=["A CSV button exists", "The CSV has a header row"],
            subtasks=[PlannedSubtask("Backend", "endpoint")])


def test_prompt_holds_subtask_parent_plan_criteria_and_feedback() -> None:
    sub = issue("PROJ-2", "Backend endpoint", "Add GET /reports.csv", parent="PROJ-1")
    parent = issue("PROJ-1", "CSV export", "Users want CSV")
    feedback = [Comment("10", "human-1", "Please also quote commas.", "2024-05-01T10:00:00.000")]
    prompt = build_prompt(sub, parent, PLAN, feedback, max_chars=10_000)
    assert prompt.startswith("# Sub-task PROJ-2: Backend endpoint\n")
    for text in ("Add GET /reports.csv", "PROJ-1", "Users want CSV", "Add CSV export to reports.",
                 "- A CSV button exists", "- The CSV has a header row",
                 "Please also quote commas.", "Do not commit"):
        assert text in prompt, text
    assert "Feedback" in prompt
    without = build_prompt(sub, parent, None, [], max_chars=10_000)
    assert "Feedback" not in without and "Acceptance criteria" not in without


@settings(max_examples=60, deadline=None)
@given(
    description=st.text(max_size=20_000),
    comment=st.text(max_size=20_000),
    max_chars=st.integers(min_value=1000, max_value=8000),
)
def test_prompt_is_bounded_whatever_the_ticket_says(
    description: str, comment: str, max_chars: int
) -> None:
    sub = issue("PROJ-2", "x" * 1000, description, parent="PROJ-1")
    parent = issue("PROJ-1", "parent", description)
    prompt = build_prompt(sub, parent, PLAN, [Comment("1", None, comment, "now")], max_chars)
    assert len(prompt) <= max_chars
    assert prompt.startswith("# Sub-task PROJ-2: ")
    assert "Do not commit" in prompt  # the rules survive any amount of ticket text


def test_long_feedback_is_cut_but_short_sections_are_kept() -> None:
    sub = issue("PROJ-2", "s", "short description", parent="PROJ-1")
    parent = issue("PROJ-1", "p", "short parent")
    huge = Comment("1", "h", "blah " * 10_000, "now")
    prompt = build_prompt(sub, parent, PLAN, [huge], max_chars=4000)
    assert "short description" in prompt and "short parent" in prompt
    assert "cut to fit" in prompt and len(prompt) <= 4000


# -- output parsing ---------------------------------------------------------------


def test_claude_json_result() -> None:
    out = json.dumps({
        "type": "result", "subtype": "success", "is_error": False,
        "result": "Added the endpoint and tests.", "total_cost_usd": 0.0421,
        "usage": {"input_tokens": 1200, "cache_read_input_tokens": 300, "output_tokens": 250},
    })
    parsed = parse_agent_output("some log line\n" + out)
    assert parsed.summary == "Added the endpoint and tests."
    assert parsed.cost_usd == pytest.approx(0.0421)
    assert parsed.input_tokens == 1500 and parsed.output_tokens == 250


def test_claude_stream_json_takes_the_result_line() -> None:
    lines = [
        {"type": "system", "subtype": "init"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "working"}]}},
        {"type": "result", "result": "Done.", "total_cost_usd": 0.01,
         "usage": {"input_tokens": 10, "output_tokens": 5}},
    ]
    parsed = parse_agent_output("\n".join(json.dumps(line) for line in lines))
    assert (parsed.summary, parsed.input_tokens, parsed.output_tokens) == ("Done.", 10, 5)


def test_codex_jsonl_events() -> None:
    events = [
        {"type": "thread.started", "thread_id": "0199a213"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning",
                                            "text": "thinking"}},
        {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution",
                                            "command": "ls", "aggregated_output": "a\n",
                                            "exit_code": 0, "status": "completed"}},
        {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message",
                                            "text": "Updated calc.py with subtract()."}},
        {"type": "turn.completed", "usage": {"input_tokens": 2400, "cached_input_tokens": 1000,
                                             "output_tokens": 310}},
    ]
    parsed = parse_agent_output("\n".join(json.dumps(e) for e in events))
    assert parsed.summary == "Updated calc.py with subtract()."
    assert parsed.input_tokens == 2400 and parsed.output_tokens == 310
    assert parsed.cost_usd is None


def test_plain_output_summary_is_the_last_line() -> None:
    parsed = parse_agent_output("step 1\nstep 2\n\nAll done: 3 files changed.\n\n")
    assert parsed.summary == "All done: 3 files changed."
    assert parsed.cost_usd is None and parsed.input_tokens is None
    assert parse_agent_output("", "fatal: no API key\n").summary == "fatal: no API key"
    assert parse_agent_output('{"not": "a result"}').summary == '{"not": "a result"}'


def test_bounded_capture_keeps_head_and_tail() -> None:
    capture = BoundedCapture(100)
    capture.add(b"HEAD" + b"x" * 1000)
    capture.add(b"y" * 1000 + b"TAIL")
    assert capture.total == 2008
    text = capture.text()
    assert text.startswith("HEAD") and text.endswith("TAIL")
    assert "1908 bytes of output dropped" in text
    assert len(capture.head) + len(capture.tail) == 100


# -- built-in agent edits (filesystem, no LLM) ---------------------------------------


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    root = tmp_path / "wt"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / ".git").write_text("gitdir: /somewhere/else\n")
    return root


def test_edits_inside_the_worktree_are_applied(worktree: Path) -> None:
    outcome = apply_edits(worktree, [
        {"path": "src/app.py", "content": "print('bye')\n"},
        {"path": "./docs/new/readme.md", "content": "# new\n"},
        {"path": "src/../src/app.py", "content": "never"},
    ], max_change_bytes=10_000)
    assert outcome.applied == ["src/app.py", "./docs/new/readme.md"]
    assert outcome.refused == [("src/../src/app.py", "'..' in path")]
    assert (worktree / "src" / "app.py").read_text() == "print('bye')\n"
    assert (worktree / "docs" / "new" / "readme.md").read_text() == "# new\n"
    deleted = apply_edits(worktree, [{"path": "src/app.py", "delete": True}], 10)
    assert deleted.applied == ["src/app.py"] and not (worktree / "src" / "app.py").exists()


def test_escaping_edits_are_refused_and_nothing_outside_is_touched(
    tmp_path: Path, worktree: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("safe\n")
    (worktree / "link-out").symlink_to(outside)
    (worktree / "file-link").symlink_to(outside / "victim.txt")
    (worktree / "gitlink").symlink_to(worktree / ".git")
    edits = [
        {"path": "../outside/victim.txt", "content": "pwned"},
        {"path": str(outside / "victim.txt"), "content": "pwned"},
        {"path": "link-out/victim.txt", "content": "pwned"},
        {"path": "link-out/new.txt", "content": "pwned"},
        {"path": "file-link", "content": "pwned"},
        {"path": "file-link", "delete": True},
        {"path": ".git", "content": "gitdir: /tmp/evil"},
        {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\nrm -rf /\n"},
        {"path": "src/.GIT/config", "content": "x"},
        {"path": "gitlink", "content": "x"},
        {"path": "C:/Windows/x", "content": "x"},
        {"path": "a\\..\\..\\x", "content": "x"},
        {"path": "", "content": "x"},
        {"path": ".", "content": "x"},
        {"path": "nul\x00byte", "content": "x"},
    ]
    outcome = apply_edits(worktree, edits, max_change_bytes=10_000)
    assert outcome.applied == []
    assert len(outcome.refused) == len(edits)
    reasons = dict(outcome.refused)
    assert reasons["../outside/victim.txt"] == "'..' in path"
    assert reasons[str(outside / "victim.txt")] == "absolute path"
    assert "symlink" in reasons["link-out/victim.txt"]
    assert "symlink" in reasons["link-out/new.txt"]
    assert reasons[".git/hooks/pre-commit"] == "inside .git/"
    assert (outside / "victim.txt").read_text() == "safe\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (worktree / ".git").read_text() == "gitdir: /somewhere/else\n"
    assert (worktree / "file-link").is_symlink()


def test_oversize_change_is_refused_as_a_whole(worktree: Path) -> None:
    edits = [{"path": "a.txt", "content": "a" * 600}, {"path": "b.txt", "content": "b" * 600}]
    outcome = apply_edits(worktree, edits, max_change_bytes=1000)
    assert outcome.applied == [] and len(outcome.refused) == 2
    assert "MWAI_AGENT_MAX_CHANGE_BYTES=1000" in outcome.refused[0][1]
    assert not (worktree / "a.txt").exists() and not (worktree / "b.txt").exists()
