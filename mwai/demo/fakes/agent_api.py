"""FakeAgentApi: the streaming model APIs the coding-agent CLIs call, scripted, on 127.0.0.1.

Claude Code calls the Anthropic Messages API (``POST /v1/messages`` with
``"stream": true``; answered with the server-sent events message_start,
content_block_start/delta/stop, message_delta, message_stop), Codex the OpenAI
Responses API (``POST /v1/responses``; answered with response.created,
response.output_item.added/done, response.function_call_arguments.delta/done,
response.output_text.delta/done and response.completed). The event shapes follow
the official descriptions vendored under tests/contracts/ (their source and
version are written there).

The model's side is a script of steps, replayed in the main conversation (the
request that offers the CLI's file and shell tools): step N is answered once N
tool results are in the conversation. A step writes a file, runs a shell command,
or finishes with a text. Any other request (a title, a quota probe) gets a short
text. Every request is recorded: path, headers, JSON body.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mwai.demo.fakes.loopback import LoopbackServer

INPUT_TOKENS_PER_REQUEST = 1200
OUTPUT_TOKENS_PER_STEP = 40
# Claude Code's file and shell tools; Codex's shell tools (by the version's name).
CLAUDE_WRITE, CLAUDE_SHELL = "Write", "Bash"
CODEX_SHELLS = ("exec_command", "shell_command", "shell", "local_shell")


@dataclass(frozen=True)
class Step:
    """One model turn: ``write`` (path, content), ``shell`` (command) or ``finish`` (text)."""

    kind: str
    path: str = ""
    content: str = ""
    command: str = ""
    text: str = ""


@dataclass
class AgentApiRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeAgentApi(LoopbackServer):
    """``async with FakeAgentApi(steps) as api``: Claude Code uses ``api.url``
    (ANTHROPIC_BASE_URL), Codex ``api.url + "/v1"`` (its provider's base_url)."""

    steps: list[Step] = field(default_factory=list)
    api_key: str = "fake-agent-key"
    requests: list[AgentApiRequest] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    # ------------------------------------------------------------ helpers

    def main_requests(self) -> list[AgentApiRequest]:
        """Requests of the scripted conversation (the ones offering the tools)."""
        return [r for r in self.requests if _tool_names(r.body) & {CLAUDE_WRITE, *CODEX_SHELLS}]

    async def _record(self, request: web.Request) -> AgentApiRequest:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        recorded = AgentApiRequest(request.path, dict(request.headers),
                                   body if isinstance(body, dict) else {})
        self.requests.append(recorded)
        return recorded

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("x-api-key", "")
        bearer = request.headers.get("Authorization", "")
        return self.api_key in (given, bearer.removeprefix("Bearer ").strip())

    def _step(self, done: int) -> Step:
        return self.steps[done] if done < len(self.steps) else Step("finish", text="Done.")

    async def _other(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"error": {"type": "not_found_error",
                                            "message": f"no route {request.path}"}}, status=404)

    # ------------------------------------------------------------ Anthropic Messages

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if not self._authorized(request):
            return web.json_response({"type": "error", "error": {
                "type": "authentication_error", "message": "invalid x-api-key"}}, status=401)
        body = recorded.body
        tools = _tool_names(body)
        blocks: list[dict[str, Any]]
        if CLAUDE_WRITE in tools:
            done = sum(1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
                       for b in m["content"] if isinstance(b, dict)
                       and b.get("type") == "tool_result")
            blocks = self._claude_blocks(self._step(done), _working_directory(body))
        else:
            blocks = [{"type": "text", "text": "OK"}]
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        if not body.get("stream"):
            return web.json_response({
                "id": f"msg_{next(self._ids)}", "type": "message", "role": "assistant",
                "model": body.get("model", ""), "content": blocks, "stop_reason": stop,
                "stop_sequence": None, "usage": {"input_tokens": INPUT_TOKENS_PER_REQUEST,
                                                 "output_tokens": OUTPUT_TOKENS_PER_STEP}})
        return await self._sse(request, self._anthropic_events(body, blocks, stop))

    def _claude_blocks(self, step: Step, cwd: str) -> list[dict[str, Any]]:
        if step.kind == "write":
            # Claude Code's Write takes an absolute path: the model reads the working
            # directory from the system prompt, and so does this script.
            path = step.path if step.path.startswith("/") or not cwd else f"{cwd}/{step.path}"
            return [{"type": "text", "text": f"I will write {step.path}."},
                    {"type": "tool_use", "id": f"toolu_{next(self._ids):06d}",
                     "name": CLAUDE_WRITE,
                     "input": {"file_path": path, "content": step.content}}]
        if step.kind == "shell":
            return [{"type": "tool_use", "id": f"toolu_{next(self._ids):06d}",
                     "name": CLAUDE_SHELL,
                     "input": {"command": step.command, "description": "Run a command"}}]
        return [{"type": "text", "text": step.text}]

    def _anthropic_events(self, body: dict[str, Any], blocks: list[dict[str, Any]],
                          stop: str) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {
            "type": "message_start", "message": {
                "id": f"msg_{next(self._ids)}", "type": "message", "role": "assistant",
                "model": body.get("model", ""), "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": {"input_tokens": INPUT_TOKENS_PER_REQUEST,
                                                 "output_tokens": 1}}})]
        for index, block in enumerate(blocks):
            start: dict[str, Any]
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"],
                         "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            events += [
                ("content_block_start", {"type": "content_block_start", "index": index,
                                         "content_block": start}),
                ("content_block_delta", {"type": "content_block_delta", "index": index,
                                         "delta": delta}),
                ("content_block_stop", {"type": "content_block_stop", "index": index}),
            ]
        events += [
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop, "stop_sequence": None},
                               "usage": {"output_tokens": OUTPUT_TOKENS_PER_STEP}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return events

    # ------------------------------------------------------------ OpenAI Responses

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if not self._authorized(request):
            return web.json_response({"error": {
                "message": "Missing bearer or basic authentication in header",
                "type": "invalid_request_error", "param": None, "code": None}}, status=401)
        body = recorded.body
        shells = [name for name in CODEX_SHELLS if name in _tool_names(body)]
        inputs = body.get("input", [])
        done = sum(1 for item in inputs if isinstance(item, dict)
                   and item.get("type") in ("function_call_output", "custom_tool_call_output"))
        step = self._step(done) if shells else Step("finish", text="OK")
        item: dict[str, Any]
        if step.kind in ("write", "shell"):
            command = step.command or _write_command(step.path, step.content)
            item = {"type": "function_call", "id": f"fc_{next(self._ids)}",
                    "call_id": f"call_{next(self._ids)}", "name": shells[0],
                    "arguments": json.dumps(_shell_arguments(shells[0], command)),
                    "status": "completed"}
        else:
            item = {"type": "message", "id": f"msg_{next(self._ids)}", "role": "assistant",
                    "status": "completed", "content": [
                        {"type": "output_text", "text": step.text, "annotations": [],
                         "logprobs": []}]}
        return await self._sse(request, self._openai_events(body, item))

    def _openai_events(self, body: dict[str, Any],
                       item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        response = {"id": f"resp_{next(self._ids)}", "object": "response", "created_at": 0,
                    "status": "in_progress", "model": body.get("model", ""), "output": [],
                    "error": None, "incomplete_details": None, "instructions": None,
                    "tools": [], "parallel_tool_calls": True, "metadata": {},
                    "tool_choice": "auto", "temperature": 1.0, "top_p": 1.0}
        seq = itertools.count()
        pending = dict(item, status="in_progress")
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"type": "response.created", "sequence_number": next(seq),
                                  "response": response}),
        ]
        if item["type"] == "function_call":
            events += [
                ("response.output_item.added", {
                    "type": "response.output_item.added", "sequence_number": next(seq),
                    "output_index": 0, "item": dict(pending, arguments="")}),
                ("response.function_call_arguments.delta", {
                    "type": "response.function_call_arguments.delta",
                    "sequence_number": next(seq), "item_id": item["id"], "output_index": 0,
                    "delta": item["arguments"]}),
                ("response.function_call_arguments.done", {
                    "type": "response.function_call_arguments.done",
                    "sequence_number": next(seq), "item_id": item["id"], "output_index": 0,
                    "name": item["name"], "arguments": item["arguments"]}),
            ]
        else:
            text = item["content"][0]["text"]
            events += [
                ("response.output_item.added", {
                    "type": "response.output_item.added", "sequence_number": next(seq),
                    "output_index": 0, "item": dict(pending, content=[])}),
                ("response.output_text.delta", {
                    "type": "response.output_text.delta", "sequence_number": next(seq),
                    "item_id": item["id"], "output_index": 0, "content_index": 0,
                    "delta": text, "logprobs": []}),
                ("response.output_text.done", {
                    "type": "response.output_text.done", "sequence_number": next(seq),
                    "item_id": item["id"], "output_index": 0, "content_index": 0,
                    "text": text, "logprobs": []}),
            ]
        events += [
            ("response.output_item.done", {"type": "response.output_item.done",
                                           "sequence_number": next(seq), "output_index": 0,
                                           "item": item}),
            ("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                    "response": dict(response, status="completed",
                                                     output=[item], usage={
                "input_tokens": INPUT_TOKENS_PER_REQUEST,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": OUTPUT_TOKENS_PER_STEP,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": INPUT_TOKENS_PER_REQUEST + OUTPUT_TOKENS_PER_STEP})}),
        ]
        return events

    # ------------------------------------------------------------ streaming

    @staticmethod
    async def _sse(request: web.Request,
                   events: list[tuple[str, dict[str, Any]]]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "request-id": "req_fake"})
        await response.prepare(request)
        for name, data in events:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        await response.write_eof()
        return response


def _tool_names(body: dict[str, Any]) -> set[str]:
    names = set()
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.add(name)
            elif tool.get("type") == "local_shell":
                names.add("local_shell")
    return names


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for part in value for text in _texts(part)]
    if isinstance(value, dict):
        return [text for part in value.values() for text in _texts(part)]
    return []


def _working_directory(body: dict[str, Any]) -> str:
    """The working directory Claude Code states in its system prompt ("" if none)."""
    for text in _texts(body.get("system")) + _texts(body.get("messages")):
        match = re.search(r"working directory: (\S+)", text, re.IGNORECASE)
        if match:
            return match.group(1)
    return ""


def _write_command(path: str, content: str) -> str:
    directory = path.rsplit("/", 1)[0] if "/" in path else "."
    quoted = "'" + content.replace("'", "'\"'\"'") + "'"
    return f"mkdir -p '{directory}' && printf '%s' {quoted} > '{path}'"


def _shell_arguments(tool: str, command: str) -> dict[str, Any]:
    if tool == "exec_command":
        # Wait for the command to end (Codex returns a still-running one after ~10 s).
        return {"cmd": command, "yield_time_ms": 30_000}
    if tool == "shell_command":
        return {"command": command}
    return {"command": ["bash", "-lc", command]}
