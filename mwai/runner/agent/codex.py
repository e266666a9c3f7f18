"""Codex's ``codex exec --json`` events (JSONL), read line by line as the agent works.

``item.started`` / ``item.completed`` of a command_execution, file_change,
mcp_tool_call or web_search item is one ToolCall; the agent_message items and
``turn.completed`` usage give the summary and tokens (Codex prints no cost). A
command its sandbox refused (a read-only file system), a failed command, and an
``error`` / ``turn.failed`` of the model API (401: the key) are the failures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mwai.runner.agent.output import (
    AgentFailure,
    ParsedOutput,
    ToolCall,
    cut_line,
    parse_codex_events,
)

_TOOL_ITEMS = ("command_execution", "file_change", "mcp_tool_call", "web_search")
_SANDBOX_MARKS = ("read-only file system", "operation not permitted", "permission denied")
SESSION_LOG_MAX_CHARS = 8 * 1024 * 1024
_AUTH_MARKS = ("401", "unauthorized", "missing bearer", "invalid api key", "incorrect api key")


def _target(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "command_execution":
        return cut_line(str(item.get("command", "")))
    if kind == "file_change":
        changes = item.get("changes") if isinstance(item.get("changes"), list) else []
        assert isinstance(changes, list)
        return cut_line(", ".join(str(c.get("path", "")) for c in changes if isinstance(c, dict)))
    if kind == "mcp_tool_call":
        return cut_line(f"{item.get('server', '')}/{item.get('tool', '')}")
    return cut_line(str(item.get("query", "")))


def _response_item(line: str) -> dict[str, Any] | None:
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("type") != "response_item":
        return None
    payload = document.get("payload")
    return payload if isinstance(payload, dict) else None


def _command_of(call: dict[str, Any]) -> str:
    try:
        arguments = json.loads(str(call.get("arguments") or "{}"))
    except ValueError:
        arguments = {}
    command = arguments.get("cmd", arguments.get("command")) if isinstance(arguments,
                                                                          dict) else None
    if isinstance(command, list):
        return " ".join(str(part) for part in command)
    return str(command or call.get("name", "?"))


class CodexStream:
    """Reads Codex's JSONL events; ``feed`` returns finished tool calls."""

    def __init__(self, confined_by_sandbox: bool = False, preset: bool = False,
                 codex_home: Path | None = None) -> None:
        self.confined = confined_by_sandbox
        self.preset = preset  # started by MWAI_AGENT=codex (else a command of the operator)
        self.codex_home = codex_home  # the run's own: its session log is read at the end
        self._started: dict[str, float] = {}
        self._kept: list[dict[str, Any]] = []  # agent messages and usage, for the result
        self._failures: list[AgentFailure] = []
        # The model API refused the key: Codex would only retry it.
        self.fatal: AgentFailure | None = None

    @staticmethod
    def recognises(document: dict[str, Any]) -> bool:
        kind = document.get("type")
        return isinstance(kind, str) and (kind.startswith(("thread.", "turn.", "item."))
                                          or kind == "error")

    def feed(self, document: dict[str, Any]) -> list[ToolCall]:
        kind = document.get("type")
        item = document.get("item") if isinstance(document.get("item"), dict) else None
        if kind in ("error", "turn.failed"):
            error = document.get("error")
            message = str(error.get("message", "") if isinstance(error, dict)
                          else document.get("message", ""))
            self._api_error(message)
            return []
        if kind == "turn.completed":
            self._kept.append(document)
            return []
        if item is None:
            return []
        item_id, item_type = str(item.get("id")), item.get("type")
        if kind == "item.started" and item_type in _TOOL_ITEMS:
            self._started[item_id] = time.monotonic()
            return []
        if kind != "item.completed":
            return []
        if item_type in ("agent_message", "assistant_message"):
            self._kept.append(document)
            return []
        if item_type not in _TOOL_ITEMS:
            return []
        started = self._started.pop(item_id, None)
        exit_code = item.get("exit_code")
        ok = item.get("status") in ("completed", None) and exit_code in (0, None)
        output = str(item.get("aggregated_output", "") or "")
        call = ToolCall(str(item_type), _target(item),
                        round(time.monotonic() - started, 3) if started is not None else None,
                        ok, cut_line(output or str(item.get("status", ""))))
        if not ok:
            self._failed(call, output)
        return [call]

    def _failed(self, call: ToolCall, output: str) -> None:
        lowered = output.lower()
        if not self.confined and any(mark in lowered for mark in _SANDBOX_MARKS):
            fix = ("the change must stay inside the worktree: Codex's workspace-write sandbox "
                   "lets it write nothing else (run it inside mwai's sandbox, "
                   "MWAI_SANDBOX=bwrap, for more)" if self.preset else
                   "run with MWAI_AGENT=codex: mwai then starts Codex with --sandbox "
                   "workspace-write, which lets it write the worktree")
            self._failures.append(AgentFailure(
                "sandbox_refusal", f"Codex's sandbox refused {call.target!r}: {call.result}",
                fix))
        else:
            self._failures.append(AgentFailure(
                "tool_failed", f"the command {call.target!r} failed: {call.result}",
                "read the agent's output in `mwai show`; fix the repository's checks or say "
                "in the ticket how to run them"))

    def _api_error(self, message: str) -> None:
        if self.fatal is None and any(mark in message.lower() for mark in _AUTH_MARKS):
            self.fatal = AgentFailure(
                "auth_error", f"the model API refused Codex's credentials: {cut_line(message)}",
                "set CODEX_API_KEY (Codex ignores OPENAI_API_KEY) and, for a gateway, "
                "MWAI_AGENT_BASE_URL")
            self._failures.append(self.fatal)

    def seen_result(self) -> bool:
        return bool(self._kept or self._failures or self.codex_home)

    def read_session_log(self, codex_home: Path) -> None:
        """Commands Codex's sandbox refused are not in its --json events (0.171): its
        session log (under the run's own CODEX_HOME) has every call and its output."""
        commands: dict[str, str] = {}
        for path in sorted(codex_home.glob("sessions/**/*.jsonl")):
            try:
                with path.open(encoding="utf-8", errors="replace") as log:
                    lines = log.read(SESSION_LOG_MAX_CHARS).splitlines()
            except OSError:
                continue
            for line in lines:
                payload = _response_item(line)
                if payload is None:
                    continue
                call_id = str(payload.get("call_id"))
                if payload.get("type") == "function_call":
                    commands[call_id] = _command_of(payload)
                elif payload.get("type") == "function_call_output":
                    output = str(payload.get("output", ""))
                    refused = [text for text in output.splitlines()
                               if any(mark in text.lower() for mark in _SANDBOX_MARKS)]
                    target = cut_line(commands.get(call_id, "?"))
                    known = any(target in f.detail for f in self._failures)
                    if refused and not known:
                        self._failed(ToolCall("command_execution", target, None, False,
                                              cut_line(refused[0])), refused[0])

    def result(self) -> ParsedOutput:
        if self.codex_home is not None:
            self.read_session_log(self.codex_home)
            self.codex_home = None
        parsed = parse_codex_events(self._kept) or ParsedOutput("")
        summary = parsed.summary or (self.fatal.detail if self.fatal else "")
        return ParsedOutput(summary, None, parsed.input_tokens, parsed.output_tokens,
                            tuple(self._failures))
