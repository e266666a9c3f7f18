"""The planner: prompt, parsing, the repair attempt, and the plan comment round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mwai.clients.adf import adf_to_text, text_to_adf
from mwai.clients.llm import LlmReply
from mwai.errors import PermanentError
from mwai.model import Comment, Issue
from mwai.runner.planner import (
    PLAN_MARKER,
    Plan,
    PlanError,
    PlannedSubtask,
    build_plan_prompt,
    find_latest_plan,
    format_plan_comment,
    parse_plan,
    write_plan,
)

PLAN_JSON: dict[str, Any] = {
    "overview": "Add a health endpoint.",
    "assumptions": ["aiohttp is the web framework"],
    "risks": ["breaking the router"],
    "acceptance_criteria": ["GET /healthz answers 200"],
    "subtasks": [
        {"summary": "Add /healthz route", "description": "In web.py, add the route."},
        {"summary": "Document it", "description": "README section."},
    ],
    "questions": [],
}


class ScriptedLlm:
    """An LlmClient answering from a list, recording what it was asked."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.calls: list[tuple[str, list[dict[str, str]]]] = []

    async def complete(self, system: str, messages: list[dict[str, str]],
                       max_tokens: int | None = None) -> LlmReply:
        self.calls.append((system, [dict(m) for m in messages]))
        text = self.texts.pop(0)
        return LlmReply(text=text, input_tokens=10, output_tokens=5, cost_usd=0.001,
                        model="fake")


def issue(description: str = "We need a health endpoint for the load balancer.",
          summary: str = "Health endpoint") -> Issue:
    return Issue(key="PROJ-7", summary=summary, description=description, status="Backlog",
                 issue_type="Story", is_subtask=False, assignee_account_id="ai",
                 parent_key=None, project_key="PROJ", labels=(), subtask_keys=())


def comment(cid: str, body: str, author: str = "human") -> Comment:
    return Comment(id=cid, author_account_id=author, body=body,
                   created=f"2026-01-0{cid}T10:00:00.000+0000")


async def test_valid_json_answer_gives_the_plan() -> None:
    llm = ScriptedLlm(json.dumps(PLAN_JSON))
    plan, replies = await write_plan(llm, issue(), [], 20_000)
    assert plan.subtasks == [
        PlannedSubtask("Add /healthz route", "In web.py, add the route."),
        PlannedSubtask("Document it", "README section."),
    ]
    assert plan.acceptance_criteria == ["GET /healthz answers 200"]
    assert not plan.only_questions
    assert len(replies) == 1 and len(llm.calls) == 1
    system, messages = llm.calls[0]
    assert "ONLY a JSON object" in system
    assert "PROJ-7" in messages[0]["content"]
    assert "health endpoint for the load balancer" in messages[0]["content"]


async def test_answer_in_a_json_fence_with_prose_around_it_is_accepted() -> None:
    text = "Here is the plan:\n```json\n" + json.dumps(PLAN_JSON, indent=2) + "\n```\nDone."
    plan, _ = await write_plan(ScriptedLlm(text), issue(), [], 20_000)
    assert plan.overview == "Add a health endpoint."


async def test_invalid_answer_is_repaired_once_with_the_parse_error() -> None:
    llm = ScriptedLlm('{"overview": "x", "subtasks": [', json.dumps(PLAN_JSON))
    plan, replies = await write_plan(llm, issue(), [], 20_000)
    assert len(plan.subtasks) == 2
    assert len(replies) == 2
    _, repair_messages = llm.calls[1]
    assert [m["role"] for m in repair_messages] == ["user", "assistant", "user"]
    assert repair_messages[1]["content"] == '{"overview": "x", "subtasks": ['
    assert "not valid JSON" in repair_messages[2]["content"]


async def test_wrong_types_are_named_in_the_repair_request() -> None:
    bad = dict(PLAN_JSON, subtasks=[{"summary": 3, "description": "d"}])
    llm = ScriptedLlm(json.dumps(bad), json.dumps(PLAN_JSON))
    await write_plan(llm, issue(), [], 20_000)
    assert "'subtasks[0].summary' must be a non-empty string" in llm.calls[1][1][2]["content"]


async def test_invalid_twice_is_a_permanent_error() -> None:
    llm = ScriptedLlm("I cannot do that", '{"overview": 5}')
    with pytest.raises(PermanentError, match="even after a repair attempt.*'overview' must be"):
        await write_plan(llm, issue(), [], 20_000)
    assert len(llm.calls) == 2


async def test_plan_with_only_questions() -> None:
    only = {"overview": "Unclear.", "subtasks": [], "questions": ["Which endpoint path?"]}
    plan, _ = await write_plan(ScriptedLlm(json.dumps(only)), issue(), [], 20_000)
    assert plan.only_questions
    assert plan.questions == ["Which endpoint path?"]
    text = format_plan_comment(plan)
    assert "Which endpoint path?" in text
    assert "answer in a comment" in text
    assert find_latest_plan([comment("1", text, "ai")]) == plan


@pytest.mark.parametrize("document, message", [
    ([], "must be a JSON object"),
    ({"subtasks": []}, "'overview' must be a string"),
    ({"overview": "o", "risks": "none"}, "'risks' must be a list of strings"),
    ({"overview": "o", "risks": [1]}, r"'risks\[0\]' must be a string"),
    ({"overview": "o", "subtasks": {}}, "'subtasks' must be a list"),
    ({"overview": "o", "subtasks": ["x"]}, r"'subtasks\[0\]' must be an object"),
    ({"overview": "o", "subtasks": [{"summary": "s" * 300, "description": ""}]},
     "300 characters; Jira allows at most 255"),
    ({"overview": "o", "subtasks": [], "questions": []}, "neither sub-tasks nor questions"),
])
def test_plan_validation_names_the_problem(document: Any, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        Plan.from_json(document)


def test_answer_without_json_is_rejected() -> None:
    with pytest.raises(PlanError, match="no JSON object found"):
        parse_plan("Sure! I will plan this.")


async def test_feedback_after_a_previous_plan_is_in_the_prompt() -> None:
    old_plan = Plan.from_json(PLAN_JSON)
    comments = [
        comment("1", "Please keep it small.", "human"),
        comment("2", format_plan_comment(old_plan), "ai"),
        comment("3", "Use /health instead of /healthz, and skip the docs.", "human"),
        comment("4", "Run 12 failed: something (automatic note)", "ai"),
    ]
    llm = ScriptedLlm(json.dumps(PLAN_JSON))
    await write_plan(llm, issue(), comments, 20_000, ai_account_id="ai")
    prompt = llm.calls[0][1][0]["content"]
    feedback = prompt.split("## Feedback", 1)[1]
    assert "Use /health instead of /healthz" in feedback
    assert "automatic note" not in feedback  # the AI's own comments are not feedback
    assert "Please keep it small." in prompt.split("## Previous plan", 1)[0]
    assert "Add /healthz route" in prompt.split("## Previous plan", 1)[1]
    assert "take these into account" in prompt


async def test_first_plan_prompt_has_no_feedback_section() -> None:
    llm = ScriptedLlm(json.dumps(PLAN_JSON))
    await write_plan(llm, issue(), [comment("1", "Also log it.")], 20_000)
    prompt = llm.calls[0][1][0]["content"]
    assert "Also log it." in prompt
    assert "Feedback" not in prompt and "Previous plan" not in prompt


def test_long_ticket_is_cut_to_the_budget_and_says_so() -> None:
    long_description = "lorem ipsum " * 5000
    comments = [comment("1", "x" * 30_000), comment("2", format_plan_comment(
        Plan.from_json(PLAN_JSON)), "ai"), comment("3", "The feedback that matters.")]
    prompt = build_plan_prompt(issue(long_description, summary="Braces {x} in {summary}"),
                               comments, 8_000)
    assert len(prompt) <= 8_000
    assert "characters cut" in prompt
    assert "The feedback that matters." in prompt  # short sections are kept whole
    assert "Braces {x} in {summary}" in prompt


def test_comment_round_trip_through_text() -> None:
    plan = Plan.from_json(dict(PLAN_JSON, questions=["Is /healthz fine?"],
                               overview='Quotes " and ``` and {braces}\nsecond line'))
    text = format_plan_comment(plan)
    for heading in ("Overview", "Sub-tasks", "Acceptance criteria", "Risks", "Assumptions",
                    "Questions"):
        assert f"## {heading}" in text
    assert "1. Add /healthz route" in text and "2. Document it" in text
    assert ("How to approve: move to In Progress and assign to the AI Runner (only the plan "
            "reviewer's move counts)") in text
    assert PLAN_MARKER in text
    assert find_latest_plan([comment("1", text, "ai")]) == plan


def test_comment_round_trip_through_adf() -> None:
    plan = Plan.from_json(dict(PLAN_JSON, overview="Tricky: *stars*, `ticks`, [link](x)"))
    body = adf_to_text(text_to_adf(format_plan_comment(plan)))
    assert find_latest_plan([comment("1", body, "ai")]) == plan


def test_latest_plan_wins_and_none_without_a_plan() -> None:
    first = Plan.from_json(PLAN_JSON)
    second = Plan.from_json(dict(PLAN_JSON, overview="Second version."))
    assert find_latest_plan([comment("1", "just talk")]) is None
    comments = [comment("1", format_plan_comment(first), "ai"), comment("2", "change it"),
                comment("3", format_plan_comment(second), "ai"), comment("4", "ok")]
    assert find_latest_plan(comments) == second


def test_damaged_plan_comment_is_an_error_naming_the_comment() -> None:
    text = format_plan_comment(Plan.from_json(PLAN_JSON)).replace('"overview"', '"overvie')
    with pytest.raises(PlanError, match="comment 1 carries"):
        find_latest_plan([comment("1", text, "ai")])


def test_a_comment_merely_mentioning_the_marker_is_not_a_plan() -> None:
    plan = Plan.from_json(PLAN_JSON)
    comments = [comment("1", format_plan_comment(plan), "ai"),
                comment("2", f"What does {PLAN_MARKER} mean?", "human")]
    assert find_latest_plan(comments) == plan
    prompt = build_plan_prompt(issue(), comments, 20_000, ai_account_id="ai")
    assert f"What does {PLAN_MARKER} mean?" in prompt.split("## Feedback", 1)[1]


def test_only_plans_by_the_ai_account_count_when_it_is_given() -> None:
    ai_plan = Plan.from_json(PLAN_JSON)
    pasted = Plan.from_json(dict(PLAN_JSON, overview="A human pasted this."))
    comments = [comment("1", format_plan_comment(ai_plan), "ai"),
                comment("2", format_plan_comment(pasted), "human")]
    assert find_latest_plan(comments, ai_account_id="ai") == ai_plan
    assert find_latest_plan(comments) == pasted


async def test_repair_request_mentions_an_answer_cut_at_the_token_limit() -> None:
    class CutLlm(ScriptedLlm):
        async def complete(self, system: str, messages: list[dict[str, str]],
                           max_tokens: int | None = None) -> LlmReply:
            reply = await super().complete(system, messages, max_tokens)
            stop = "max_tokens" if len(self.calls) == 1 else "end_turn"
            return LlmReply(reply.text, 1, 1, None, "fake", stop_reason=stop)

    llm = CutLlm('{"overview": "a very long', json.dumps(PLAN_JSON))
    await write_plan(llm, issue(), [], 20_000)
    assert "cut at the token limit" in llm.calls[1][1][2]["content"]
