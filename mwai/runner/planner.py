"""Plans: the LLM turns a Jira ticket into a JSON plan; the plan travels as a Jira comment.

The comment is readable text for the human reviewer followed by PLAN_MARKER and a
```json code block with the machine-readable plan; ``find_latest_plan`` reads that
block back when the plan is approved. The JSON is one line inside a code block so it
survives the text -> ADF -> text round trip through Jira unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mwai.clients.llm import LlmClient, LlmReply
from mwai.errors import PermanentError
from mwai.model import Comment, Issue

PLAN_MARKER = "[mwai-plan v1]"
JIRA_SUMMARY_MAX_CHARS = 255
LIST_KEYS = ("assumptions", "risks", "acceptance_criteria", "questions")

SYSTEM_PROMPT = """\
You are a senior software engineer planning work on a Jira ticket for an AI coding agent.
Answer with ONLY a JSON object (no prose before or after it) with exactly these keys:
{
  "overview": "what will be done and why, in a few sentences",
  "assumptions": ["assumption", ...],
  "risks": ["risk", ...],
  "acceptance_criteria": ["verifiable criterion", ...],
  "subtasks": [{"summary": "short imperative title (max 255 characters, one line)",
                "description": "what to change, where, and how to verify it"}, ...],
  "questions": ["question for the humans", ...]
}
Each sub-task is one reviewable commit, in execution order. Keep the list short (1 to 6).
If the ticket is too unclear to plan, return an empty "subtasks" list and put what you
need to know in "questions". All values are strings or lists of strings as shown."""

REPAIR_PROMPT = """\
Your answer could not be used as a plan: {error}
Answer again with ONLY the corrected JSON object, with the keys overview, assumptions, \
risks, acceptance_criteria, subtasks (objects with summary and description) and questions."""


class PlanError(PermanentError):
    """The plan JSON is missing, malformed or has the wrong shape."""


@dataclass(frozen=True)
class PlannedSubtask:
    summary: str
    description: str


@dataclass(frozen=True)
class Plan:
    overview: str
    assumptions: list[str] = field(default_factory=list)
    risks: list[str] = field(default_factory=list)
    acceptance_criteria: list[str] = field(default_factory=list)
    subtasks: list[PlannedSubtask] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)

    @property
    def only_questions(self) -> bool:
        return bool(self.questions) and not self.subtasks

    def to_json(self) -> dict[str, Any]:
        return {
            "overview": self.overview,
            "assumptions": list(self.assumptions),
            "risks": list(self.risks),
            "acceptance_criteria": list(self.acceptance_criteria),
            "subtasks": [{"summary": s.summary, "description": s.description}
                         for s in self.subtasks],
            "questions": list(self.questions),
        }

    @classmethod
    def from_json(cls, document: Any) -> Plan:
        """Validate the shape; PlanError names the first problem found."""
        if not isinstance(document, dict):
            raise PlanError(f"the plan must be a JSON object, not {_type_name(document)}")
        overview = document.get("overview")
        if not isinstance(overview, str):
            raise PlanError(f"'overview' must be a string, not {_type_name(overview)}")
        lists = {key: _string_list(document, key) for key in LIST_KEYS}
        subtasks = _subtasks(document.get("subtasks"))
        if not subtasks and not lists["questions"]:
            raise PlanError("the plan has neither sub-tasks nor questions: give at least one")
        return cls(overview=overview.strip(), subtasks=subtasks, **lists)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null/missing"}.get(
                type(value), type(value).__name__)


def _string_list(document: dict[str, Any], key: str) -> list[str]:
    value = document.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise PlanError(f"'{key}' must be a list of strings, not {_type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise PlanError(f"'{key}[{index}]' must be a string, not {_type_name(item)}")
    return [item.strip() for item in value if item.strip()]


def _subtasks(value: Any) -> list[PlannedSubtask]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PlanError(f"'subtasks' must be a list of objects, not {_type_name(value)}")
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise PlanError(f"'subtasks[{index}]' must be an object, not {_type_name(item)}")
        summary, description = item.get("summary"), item.get("description", "")
        if not isinstance(summary, str) or not summary.strip():
            raise PlanError(f"'subtasks[{index}].summary' must be a non-empty string")
        if not isinstance(description, str):
            raise PlanError(f"'subtasks[{index}].description' must be a string, not "
                            f"{_type_name(description)}")
        summary = " ".join(summary.split())  # Jira summaries are one line
        if len(summary) > JIRA_SUMMARY_MAX_CHARS:
            raise PlanError(f"'subtasks[{index}].summary' is {len(summary)} characters; Jira "
                            f"allows at most {JIRA_SUMMARY_MAX_CHARS}")
        result.append(PlannedSubtask(summary=summary, description=description.strip()))
    return result


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)


def parse_plan(text: str) -> Plan:
    """The plan in an LLM answer: a bare JSON object, or one inside a ``` fence."""
    fenced = _FENCE.search(text)
    candidate = fenced.group(1) if fenced else text
    start, end = candidate.find("{"), candidate.rfind("}")
    if start < 0:
        raise PlanError(f"no JSON object found in the answer (it starts: {text[:80]!r})")
    try:
        # A cut-off answer has no closing brace: let the JSON parser say where it ends.
        document = json.loads(candidate[start:end + 1] if end > start else candidate[start:])
    except json.JSONDecodeError as exc:
        raise PlanError(f"the answer is not valid JSON: {exc}") from None
    return Plan.from_json(document)


# -- prompt -------------------------------------------------------------------------------


def _cut(text: str, limit: int, keep_end: bool = False) -> str:
    """Text bounded to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    note = f"[... {len(text) - limit} characters cut ...]"
    keep = max(0, limit - len(note) - 1)
    return f"{note}\n{text[len(text) - keep:]}" if keep_end else f"{text[:keep]}\n{note}"


def _share(sections: dict[str, str], budget: int) -> dict[str, int]:
    """Split ``budget`` over the sections: short ones whole, the rest share equally."""
    limits: dict[str, int] = {}
    remaining = max(0, budget)
    for position, name in enumerate(sorted(sections, key=lambda n: len(sections[n]))):
        fair = remaining // (len(sections) - position)
        limits[name] = min(len(sections[name]), fair)
        remaining -= limits[name]
    return limits


def _render_comments(comments: list[Comment]) -> str:
    return "\n\n".join(
        f"--- comment by {c.author_account_id or 'unknown'} at {c.created} ---\n{c.body.strip()}"
        for c in comments
    )


def _is_plan_comment(comment: Comment, ai_account_id: str | None) -> bool:
    """A comment carrying a plan: the marker followed by a JSON block (a human merely
    mentioning the marker does not count), by the AI account when it is known."""
    position = comment.body.find(PLAN_MARKER)
    if position < 0 or "{" not in comment.body[position:]:
        return False
    return ai_account_id is None or comment.author_account_id == ai_account_id


def _last_plan_index(comments: list[Comment], ai_account_id: str | None) -> int | None:
    for index in range(len(comments) - 1, -1, -1):
        if _is_plan_comment(comments[index], ai_account_id):
            return index
    return None


def _readable_part(comment: Comment) -> str:
    """A plan comment without its machine-readable block (the LLM needs it only once)."""
    return comment.body.split(PLAN_MARKER, 1)[0].strip()


def build_plan_prompt(
    issue: Issue,
    comments: list[Comment],
    max_prompt_chars: int,
    ai_account_id: str | None = None,
) -> str:
    """The user prompt: the ticket, its discussion and, after a plan, the feedback on it."""
    plan_index = _last_plan_index(comments, ai_account_id)
    earlier = comments if plan_index is None else comments[:plan_index]
    feedback = [] if plan_index is None else [
        c for c in comments[plan_index + 1:]
        if not _is_plan_comment(c, None) and (ai_account_id is None
                                              or c.author_account_id != ai_account_id)
    ]
    sections = {
        "description": issue.description.strip() or "(no description)",
        "comments": _render_comments(earlier) or "(no comments)",
        "previous_plan": "" if plan_index is None else _readable_part(comments[plan_index]),
        "feedback": _render_comments(feedback) or "(no new comments since the plan)",
    }
    # The head is prepended after format(): the summary may hold braces.
    head = (f"Plan the Jira ticket {issue.key} ({issue.issue_type}).\n"
            f"Summary: {_cut(issue.summary.strip(), 500)}\n")
    if plan_index is None:
        template = "\n## Description\n{description}\n\n## Comments\n{comments}\n"
        del sections["previous_plan"], sections["feedback"]
    else:
        template = (
            "\nA plan was already posted for this ticket and the humans sent it back with "
            "feedback. Write a NEW plan that takes the feedback below into account.\n"
            "\n## Description\n{description}\n\n## Comments before the previous plan\n"
            "{comments}\n\n## Previous plan\n{previous_plan}\n\n"
            "## Feedback: human comments after the previous plan (take these into account)\n"
            "{feedback}\n"
        )
    fixed_chars = len(head) + len(template.format(**{name: "" for name in sections}))
    limits = _share(sections, max_prompt_chars - fixed_chars)
    bounded = {
        name: _cut(text, limits[name], keep_end=name in ("comments", "feedback"))
        for name, text in sections.items()
    }
    return (head + template.format(**bounded))[:max_prompt_chars]


async def write_plan(
    llm: LlmClient,
    issue: Issue,
    comments: list[Comment],
    max_prompt_chars: int,
    ai_account_id: str | None = None,
) -> tuple[Plan, list[LlmReply]]:
    """Ask for a plan; on an unusable answer ask once more with the error, then give up."""
    messages = [{"role": "user",
                 "content": build_plan_prompt(issue, comments, max_prompt_chars, ai_account_id)}]
    reply = await llm.complete(SYSTEM_PROMPT, messages)
    replies = [reply]
    try:
        return parse_plan(reply.text), replies
    except PlanError as first:
        error = str(first)
        if reply.stop_reason in ("max_tokens", "length"):
            error += " (the answer was cut at the token limit: make it shorter)"
        messages += [
            {"role": "assistant", "content": _cut(reply.text, max_prompt_chars) or "(empty)"},
            {"role": "user", "content": REPAIR_PROMPT.format(error=error)},
        ]
    repaired = await llm.complete(SYSTEM_PROMPT, messages)
    replies.append(repaired)
    try:
        return parse_plan(repaired.text), replies
    except PlanError as second:
        raise PermanentError(
            f"the LLM did not return a usable plan for {issue.key}, even after a repair "
            f"attempt: {second}. Move the ticket back to Backlog to try again, or clarify it."
        ) from None


# -- the plan comment ---------------------------------------------------------------------


def _bullets(items: list[str]) -> list[str]:
    return [f"- {item}" for item in items] or ["- (none)"]


def format_plan_comment(plan: Plan) -> str:
    """Readable plan for the reviewer + PLAN_MARKER + the plan as a ```json block."""
    lines: list[str] = []
    if plan.only_questions:
        lines += ["## Questions before this ticket can be planned", *_bullets(plan.questions),
                  "", "How to continue: answer in a comment, then move the ticket back to "
                  "Backlog assigned to the AI Runner; a new plan will take your answers into "
                  "account."]
        if plan.overview:
            lines += ["", "## Overview", plan.overview]
    else:
        lines += ["## Overview", plan.overview or "(none)", "", "## Sub-tasks"]
        for number, subtask in enumerate(plan.subtasks, start=1):
            lines.append(f"{number}. {subtask.summary}")
            lines += [f"   {line}" for line in subtask.description.splitlines() if line.strip()]
        lines += ["", "## Acceptance criteria", *_bullets(plan.acceptance_criteria),
                  "", "## Risks", *_bullets(plan.risks),
                  "", "## Assumptions", *_bullets(plan.assumptions)]
        if plan.questions:
            lines += ["", "## Questions", *_bullets(plan.questions)]
        lines += ["", "How to approve: move to In Progress and assign to the AI Runner "
                  "(only the plan reviewer's move counts); to change it, comment and move "
                  "back to Backlog."]
    payload = json.dumps(plan.to_json(), ensure_ascii=False, separators=(",", ":"))
    # A ``` inside a string would end the code block early: escape every backtick.
    payload = payload.replace("`", "\\u0060")
    lines += ["", f"{PLAN_MARKER} machine-readable plan, read when the plan is approved "
              "(do not edit):", "```json", payload, "```"]
    return "\n".join(lines)


def find_latest_plan(
    comments: list[Comment], ai_account_id: str | None = None
) -> Plan | None:
    """The plan of the newest plan comment (by ``ai_account_id`` when given), or None.

    A plan comment whose JSON was damaged (edited by hand) is an error, not skipped:
    silently falling back to an older plan would execute something nobody approved.
    """
    for comment in reversed(comments):
        if not _is_plan_comment(comment, ai_account_id):
            continue
        block = comment.body[comment.body.find(PLAN_MARKER) + len(PLAN_MARKER):]
        try:
            return parse_plan(block)
        except PlanError as exc:
            raise PlanError(
                f"comment {comment.id} carries {PLAN_MARKER} but its plan cannot be read "
                f"({exc}); move the ticket back to Backlog to get a new plan"
            ) from None
    return None
