"""Claude Code's ``--output-format stream-json``, read line by line as the agent works.

Each ``assistant`` message's tool_use block starts a tool call; the ``user``
message carrying its tool_result ends it (one ToolCall: tool, target, duration,
result). The final ``result`` document gives the summary, cost and tokens, and
its ``permission_denials`` (a tool the CLI refused: the run's failure reason,
with the fix). ``--output-format json`` gives only the result document.
"""

from __future__ import annotations

import time
from typing import Any

from mwai.runner.agent.output import (
    AgentFailure,
    ParsedOutput,
    ToolCall,
    cut_line,
    parse_claude_result,
)

_FILE_TOOLS = {"Write", "Edit", "MultiEdit", "NotebookEdit", "Read"}
_AUTH_MARKS = ("authentication_error", "invalid x-api-key", "invalid api key", "401",
               "oauth token", "please run /login")


def tool_target(name: str, tool_input: dict[str, Any]) -> str:
    """What a tool call works on: the file of a file tool, the command of Bash."""
    if name in _FILE_TOOLS:
        return cut_line(str(tool_input.get("file_path") or tool_input.get("notebook_path", "")))
    if name == "Bash":
        return cut_line(str(tool_input.get("command", "")))
    for value in tool_input.values():
        if isinstance(value, str):
            return cut_line(value)
    return ""


def denial_fix(tool: str, confined: bool) -> str:
    """How the operator lets ``tool`` through."""
    if tool in ("Write", "Edit", "MultiEdit", "NotebookEdit"):
        return ("run with MWAI_AGENT=claude-code: mwai then grants file edits in the "
                "worktree (--permission-mode acceptEdits)")
    if tool == "Bash" and not confined:
        return ("add the command's prefix to MWAI_AGENT_ALLOWED_COMMANDS (the repository's "
                "checks), or run the agent inside the sandbox (MWAI_SANDBOX=bwrap), where "
                "every command is allowed")
    return f"the {tool} tool is not needed for a code change; mwai does not grant it"


class ClaudeStream:
    """Reads Claude Code's stream-json documents; ``feed`` returns finished tool calls."""

    def __init__(self, confined_by_sandbox: bool = False) -> None:
        self.confined = confined_by_sandbox
        self._open: dict[str, tuple[str, str, float]] = {}  # id -> (tool, target, started)
        self._result: dict[str, Any] | None = None
        self._failed_tools: list[ToolCall] = []
        # The model API refused the credentials: Claude Code would retry for minutes.
        self.fatal: AgentFailure | None = None

    @staticmethod
    def recognises(document: dict[str, Any]) -> bool:
        return document.get("type") in ("system", "assistant", "user", "result")

    def feed(self, document: dict[str, Any]) -> list[ToolCall]:
        kind = document.get("type")
        if kind == "result":
            self._result = document
            return []
        if (kind == "system" and document.get("subtype") == "api_retry"
                and document.get("error_status") in (401, 403)):
            self.fatal = self.fatal or _auth_failure(
                f"HTTP {document.get('error_status')} {document.get('error', '')}".strip())
            return []
        message = document.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return []
        calls = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if kind == "assistant" and block.get("type") == "tool_use":
                name = str(block.get("name", "?"))
                tool_input = block.get("input") if isinstance(block.get("input"), dict) else {}
                assert isinstance(tool_input, dict)
                self._open[str(block.get("id"))] = (name, tool_target(name, tool_input),
                                                    time.monotonic())
            elif kind == "user" and block.get("type") == "tool_result":
                opened = self._open.pop(str(block.get("tool_use_id")), None)
                if opened is None:
                    continue
                name, target, started = opened
                call = ToolCall(name, target, round(time.monotonic() - started, 3),
                                block.get("is_error") is not True,
                                cut_line(_result_text(block.get("content"))))
                if not call.ok:
                    self._failed_tools.append(call)
                calls.append(call)
        return calls

    def seen_result(self) -> bool:
        return self._result is not None or self.fatal is not None

    def result(self) -> ParsedOutput:
        """Summary, cost, tokens and the failures; call after the CLI exited."""
        if self._result is None:
            fatal = (self.fatal,) if self.fatal else ()
            return ParsedOutput(fatal[0].detail if fatal else "", failures=fatal)
        parsed = parse_claude_result(self._result)
        return ParsedOutput(parsed.summary, parsed.cost_usd, parsed.input_tokens,
                            parsed.output_tokens, tuple(self._failures(parsed.summary)))

    def _failures(self, summary: str) -> list[AgentFailure]:
        assert self._result is not None
        failures = [self.fatal] if self.fatal else []
        denials = self._result.get("permission_denials")
        for denial in denials if isinstance(denials, list) else []:
            if not isinstance(denial, dict):
                continue
            tool = str(denial.get("tool_name", "?"))
            tool_input = denial.get("tool_input") if isinstance(denial.get("tool_input"),
                                                                  dict) else {}
            assert isinstance(tool_input, dict)
            target = tool_target(tool, tool_input)
            failures.append(AgentFailure(
                "permission_denied",
                f"Claude Code refused the {tool} tool" + (f" ({target})." if target else "."),
                denial_fix(tool, self.confined)))
        status = self._result.get("api_error_status")
        lowered = summary.lower()
        if not self.fatal and (status in (401, 403) or (
                self._result.get("is_error") is True
                and any(mark in lowered for mark in _AUTH_MARKS))):
            failures.append(_auth_failure(cut_line(summary) or str(status)))
        denied = {(f.detail) for f in failures}
        for call in self._failed_tools:
            refused = any(call.target and call.target in detail for detail in denied)
            if call.tool == "Bash" and not refused:
                failures.append(AgentFailure(
                    "tool_failed", f"the command {call.target!r} failed: {call.result}",
                    "read the agent's output in `mwai show`; fix the repository's checks or "
                    "say in the ticket how to run them"))
        return failures


def _auth_failure(what: str) -> AgentFailure:
    return AgentFailure(
        "auth_error", f"the model API refused Claude Code's credentials ({what}).",
        "set ANTHROPIC_API_KEY (or CLAUDE_CODE_OAUTH_TOKEN for a subscription) and, for a "
        "gateway, MWAI_AGENT_BASE_URL")


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
