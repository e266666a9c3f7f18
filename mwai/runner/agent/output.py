"""What an agent run gives back, and how the summary, cost and tokens are read.

``claude -p --output-format json`` (or stream-json) ends with a "result"
document; ``codex exec --json`` prints JSONL events: their readers (``claude``,
``codex``) turn them into tool calls, failures with their fix, and the final
usage. Anything else: the summary is the last line of output.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mwai.runner.agent.prompt import cut_text
from mwai.scrub import scrub

SUMMARY_MAX_CHARS = 4000
# The agent's summary quoted in a Jira comment or the journal.
QUOTED_SUMMARY_MAX_CHARS = 1500
# Why an agent run produced no change, each with its own fix (events, Blocked comment).
FAILURE_REASONS = ("permission_denied", "sandbox_refusal", "auth_error", "tool_failed",
                   "no_change", "agent_error")


@dataclass(frozen=True)
class AgentFailure:
    """Why the agent could not do its work: one of FAILURE_REASONS, what, and the fix."""

    reason: str
    detail: str
    fix: str

    def text(self) -> str:
        return f"{self.reason}: {self.detail} Fix: {self.fix}"


@dataclass(frozen=True)
class ToolCall:
    """One tool call of the agent, as its CLI streamed it."""

    tool: str
    target: str  # the file or command, cut short
    duration_s: float | None
    ok: bool
    result: str  # the start of its result, cut short


@dataclass(frozen=True)
class AgentResult:
    exit_code: int
    summary: str
    output: str  # truncated
    timed_out: bool
    duration_s: float
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    failures: tuple[AgentFailure, ...] = ()


def tool_events(emit: Callable[..., Awaitable[None]],
                secrets: list[str]) -> Callable[[ToolCall], Awaitable[None]]:
    """Live progress: each tool call of the agent becomes one run event (``emit``)."""
    async def on_tool(call: ToolCall) -> None:
        target = scrub(call.target, secrets)
        await emit(f"Agent tool {call.tool}: {target}", level="info" if call.ok else "warning",
                   tool=call.tool, target=target, ok=call.ok, duration_s=call.duration_s,
                   result=scrub(call.result, secrets))
    return on_tool


def blocking_failures(result: AgentResult) -> list[AgentFailure]:
    """Why nothing was committed, the likeliest cause first: the failures the CLI's output
    shows, else "no_change" (exit 0) or "agent_error" (another exit code)."""
    order = {reason: index for index, reason in enumerate(FAILURE_REASONS)}
    unique = list(dict.fromkeys(result.failures))
    if unique:
        return sorted(unique, key=lambda f: order.get(f.reason, len(order)))
    if result.exit_code == 0:
        return [AgentFailure("no_change", "the agent finished without changing any file.",
                             "say in a comment what the change should be; if the agent "
                             "claims it changed files, look for refused tools in `mwai show`")]
    return [AgentFailure("agent_error", f"the agent exited with code {result.exit_code}.",
                         "read the agent's output in `mwai show` (the agent journal event)")]


def blocked_comment(key: str, result: AgentResult, failures: list[AgentFailure],
                    status_in_progress: str, summary_max_chars: int) -> str:
    """The Jira comment when the agent left no change: each cause with its fix, then the
    agent's last message (which may claim a success that did not happen)."""
    last = (result.summary or result.output[-summary_max_chars:]).strip() or "(no output)"
    why = ("the agent finished without changing any file" if result.exit_code == 0
           else f"the agent exited with code {result.exit_code}; nothing was committed")
    causes = "\n".join(f"- {f.reason}: {f.detail}\n  Fix: {f.fix}" for f in failures)
    return (f"mwai did not commit anything for {key}: {why}.\n"
            f"Why ({failures[0].reason}):\n{causes}\n\n"
            f"The agent's last message (it may claim success):\n"
            f"{last[:summary_max_chars]}\n\n"
            f"Fix the cause or add what is missing in a comment, then move {key} back "
            f"to {status_in_progress} and assign it to the AI account.")


@dataclass(frozen=True)
class ParsedOutput:
    summary: str
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    failures: tuple[AgentFailure, ...] = ()


def _json_documents(text: str) -> list[dict[str, Any]]:
    """The JSON objects of ``text``: one document (or array), else one per line."""
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            document = json.loads(stripped)
        except ValueError:
            pass
        else:
            items = document if isinstance(document, list) else [document]
            return [item for item in items if isinstance(item, dict)]
    documents = []
    for line in stripped.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if isinstance(document, dict):
                documents.append(document)
    return documents


def cut_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters (event targets and results)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_claude_result(result: dict[str, Any]) -> ParsedOutput:
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    input_parts = [
        _int_or_none(usage.get(name))
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    known = [part for part in input_parts if part is not None]
    cost = result.get("total_cost_usd", result.get("cost_usd"))
    text = result.get("result")
    return ParsedOutput(
        summary=text.strip() if isinstance(text, str) else "",
        cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
        input_tokens=sum(known) if known else None,
        output_tokens=_int_or_none(usage.get("output_tokens")),
    )


def parse_codex_events(events: list[dict[str, Any]]) -> ParsedOutput | None:
    message = None
    input_tokens = output_tokens = 0
    turns = 0
    for event in events:
        kind = event.get("type")
        item = event.get("item")
        if kind == "item.completed" and isinstance(item, dict):
            item_type = item.get("type", item.get("item_type"))
            if item_type in ("agent_message", "assistant_message") and isinstance(
                item.get("text"), str
            ):
                message = item["text"]
        elif kind == "turn.completed" and isinstance(event.get("usage"), dict):
            turns += 1
            input_tokens += _int_or_none(event["usage"].get("input_tokens")) or 0
            output_tokens += _int_or_none(event["usage"].get("output_tokens")) or 0
    if message is None and not turns:
        return None
    return ParsedOutput(
        summary=(message or "").strip(),
        input_tokens=input_tokens if turns else None,
        output_tokens=output_tokens if turns else None,
    )


def parse_agent_output(stdout: str, stderr: str = "") -> ParsedOutput:
    """Summary, cost and tokens from claude JSON, codex JSONL, or the last output line."""
    documents = _json_documents(stdout)
    results = [d for d in documents if d.get("type") == "result"]
    parsed = parse_claude_result(results[-1]) if results else parse_codex_events(documents)
    if parsed is not None and parsed.summary:
        return _bounded(parsed)
    last = last_line(stdout) or last_line(stderr)
    if parsed is not None:
        return _bounded(ParsedOutput(last, parsed.cost_usd, parsed.input_tokens,
                                     parsed.output_tokens))
    return _bounded(ParsedOutput(last))


def _bounded(parsed: ParsedOutput) -> ParsedOutput:
    if len(parsed.summary) <= SUMMARY_MAX_CHARS:
        return parsed
    return ParsedOutput(cut_text(parsed.summary, SUMMARY_MAX_CHARS), parsed.cost_usd,
                        parsed.input_tokens, parsed.output_tokens)


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, stripped; "" when there is none."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
