"""The checks table: in the pull request body, the Jira comments and ``mwai show``.

Rows are plain dicts (as journaled in the run's events), so the same table can be
printed from the database after the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mwai.runner.agent.output import QUOTED_SUMMARY_MAX_CHARS
from mwai.runner.verify.command import CheckRun
from mwai.runner.verify.loop import Verification
from mwai.scrub import scrub

TAIL_IN_COMMENT_CHARS = 3000
AGENT_OUTPUT_TAIL_CHARS = 2000


def journal_fields(verification: Verification, secrets: Sequence[str]) -> dict[str, Any]:
    """What the run's "agent" journal entry keeps: the last agent result and the checks."""
    result, secret_list = verification.agent, list(secrets)
    return {"exit_code": result.exit_code, "duration_s": round(result.duration_s, 3),
            "summary": scrub(result.summary[:QUOTED_SUMMARY_MAX_CHARS], secret_list),
            "output_tail": scrub(result.output[-AGENT_OUTPUT_TAIL_CHARS:], secret_list),
            "cost_usd": result.cost_usd, "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens, "attempts": verification.attempts,
            "checks": check_rows(verification.runs),
            "checks_summary": summary_line(verification),
            "failures": [dataclasses.asdict(f) for f in result.failures]}


def check_rows(runs: Iterable[CheckRun]) -> list[dict[str, Any]]:
    """One row per command run, for the journal and the tables."""
    return [{"attempt": r.attempt, "check": r.name, "command": r.command, "kind": r.kind,
             "result": r.outcome, "exit_code": r.exit_code,
             "duration_s": round(r.duration_s, 2)} for r in runs]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub markdown table of the check runs ("" when none ran)."""
    if not rows:
        return ""
    lines = ["| attempt | check | command | result | duration |", "|---|---|---|---|---|"]
    for row in rows:
        command = str(row.get("command", "")).replace("|", "\\|").replace("`", "'")
        lines.append(f"| {row.get('attempt')} | {row.get('check')} | `{command}` | "
                     f"{row.get('result')} | {float(row.get('duration_s') or 0):.1f} s |")
    return "\n".join(lines)


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The same table in aligned plain text (Jira comments, ``mwai show``)."""
    if not rows:
        return ""
    cells = [("attempt", "check", "result", "duration")] + [
        (str(r.get("attempt")), str(r.get("check")), str(r.get("result")),
         f"{float(r.get('duration_s') or 0):.1f} s") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip()
                     for row in cells)


def summary_line(verification: Verification) -> str:
    plan = verification.plan
    if plan is None or not (plan.checks or plan.setup):
        return "No checks are configured or detected for this repository."
    fixes = verification.attempts - 1
    tail = f" after {fixes} fix attempt(s)" if fixes else ""
    state = "passed" if verification.passed else "failed"
    return f"Checks ({plan.source}) {state}{tail}."


def blocked_text(key: str, verification: Verification, in_progress: str) -> str:
    """The Jira comment when the checks still fail: the failing check and its output."""
    failed = verification.failing
    assert failed is not None
    output = failed.output_tail[-TAIL_IN_COMMENT_CHARS:].strip() or "(no output)"
    return "\n".join([
        f"mwai did not push a change for {key}: the check '{failed.name}' still fails after "
        f"{verification.attempts} attempt(s) of the agent.",
        f"Command: {failed.command}",
        f"Result: {failed.outcome}",
        "The end of its output:", output, "",
        text_table(check_rows(verification.runs)), "",
        "The worktree is kept on the mwai host for inspection. Fix the check or add what is "
        f"missing in a comment, then move {key} back to {in_progress} and assign it to the "
        "AI account.",
    ])


def result_comment(branch: str, pr: Mapping[str, Any], pushed: Mapping[str, Any],
                   agent: Mapping[str, Any]) -> str:
    """The sub-task's Jira comment once its change is pushed: where it is, the agent's
    summary, the checks table, time, tokens and cost."""
    lines = [
        "mwai pushed a change for this sub-task.",
        f"Branch: {branch}",
        f"Pull request: {pr['pr_url']}",
        f"Commit: {pushed['commit']}",
    ]
    if agent.get("summary"):
        lines += ["Agent summary:", str(agent["summary"])]
    if agent.get("checks_summary"):
        lines += [str(agent["checks_summary"]), text_table(agent.get("checks", []))]
    if agent.get("duration_s") is not None:
        lines.append(f"Duration: {float(agent['duration_s']):.1f} s")
    if agent.get("input_tokens") is not None or agent.get("output_tokens") is not None:
        lines.append(f"Tokens: {agent.get('input_tokens') or 0} in, "
                     f"{agent.get('output_tokens') or 0} out")
    if agent.get("cost_usd") is not None:
        lines.append(f"Cost: ${float(agent['cost_usd']):.4f}")
    lines.append("Review it, then move this sub-task to Done, or back to In Progress "
                 "with a comment for a rework.")
    return "\n".join(lines)
