"""The scripted model API the agent CLIs are tested against speaks the official streams.

Every server-sent event of mwai/demo/fake_agent_api.py is checked against the
vendored descriptions next to this file (their source, version and commit are
written in them): Anthropic Messages streaming events from the SDK's models, OpenAI
Responses streaming events from the OpenAPI document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from mwai.demo.fakes.agent_api import FakeAgentApi, Step

HERE = Path(__file__).resolve().parent
ANTHROPIC = json.loads((HERE / "anthropic_messages_stream.json").read_text())
OPENAI = json.loads((HERE / "openai_responses_stream.json").read_text())
ANTHROPIC_EVENTS = {"message_start": "RawMessageStartEvent",
                    "content_block_start": "RawContentBlockStartEvent",
                    "content_block_delta": "RawContentBlockDeltaEvent",
                    "content_block_stop": "RawContentBlockStopEvent",
                    "message_delta": "RawMessageDeltaEvent",
                    "message_stop": "RawMessageStopEvent"}
BLOCKS = {"text": "TextBlock", "tool_use": "ToolUseBlock", "text_delta": "TextDelta",
          "input_json_delta": "InputJSONDelta"}
OPENAI_EVENTS = {"response.created": "ResponseCreatedEvent",
                 "response.output_item.added": "ResponseOutputItemAddedEvent",
                 "response.function_call_arguments.delta":
                     "ResponseFunctionCallArgumentsDeltaEvent",
                 "response.function_call_arguments.done":
                     "ResponseFunctionCallArgumentsDoneEvent",
                 "response.output_text.delta": "ResponseTextDeltaEvent",
                 "response.output_text.done": "ResponseTextDoneEvent",
                 "response.output_item.done": "ResponseOutputItemDoneEvent",
                 "response.completed": "ResponseCompletedEvent"}
ITEMS = {"function_call": "FunctionToolCall", "message": "OutputMessage",
         "output_text": "OutputTextContent"}


def missing(document: dict[str, Any], required: list[str] | dict[str, str]) -> list[str]:
    return [name for name in required if name not in document]


async def sse(url: str, body: dict[str, Any], headers: dict[str, str]
              ) -> list[tuple[str, dict[str, Any]]]:
    async with aiohttp.ClientSession() as session, \
            session.post(url, json=body, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = await response.text()
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def check_anthropic(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    models = ANTHROPIC["models"]
    problems = []
    for name, data in events:
        model = ANTHROPIC_EVENTS[name]
        problems += [f"{name}.{f}" for f in missing(data, models[model]["required"])]
        if data["type"] != name:
            problems.append(f"{name}: type {data['type']}")
        inner = {"message_start": [("message", "Message")],
                 "message_delta": [("usage", "MessageDeltaUsage")]}.get(name, [])
        if name == "message_start":
            problems += [f"usage.{f}" for f in missing(data["message"]["usage"],
                                                       models["Usage"]["required"])]
        for key, inner_model in inner:
            problems += [f"{name}.{key}.{f}" for f in missing(data[key],
                                                              models[inner_model]["required"])]
        for key in ("content_block", "delta"):
            if key in data and "type" in data[key]:
                kind = data[key]["type"]
                if kind in BLOCKS:
                    problems += [f"{name}.{key}.{f}"
                                 for f in missing(data[key], models[BLOCKS[kind]]["required"])]
        if name == "message_delta" and data["delta"]["stop_reason"] not in \
                ANTHROPIC["stop_reasons"]:
            problems.append(f"stop_reason {data['delta']['stop_reason']}")
    return problems


def check_openai(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    schemas = OPENAI["schemas"]
    problems = []
    numbers = [data["sequence_number"] for _name, data in events]
    if numbers != sorted(numbers):
        problems.append("sequence numbers out of order")
    for name, data in events:
        schema = schemas[OPENAI_EVENTS[name]]
        problems += [f"{name}.{f}" for f in missing(data, schema["required"])]
        if data["type"] != schema["type"] or name != schema["type"]:
            problems.append(f"{name}: type {data['type']}")
        if "response" in data:
            problems += [f"{name}.response.{f}"
                         for f in missing(data["response"], schemas["Response"]["required"])]
            if data["response"].get("usage") is not None:
                problems += [f"usage.{f}" for f in missing(data["response"]["usage"],
                                                           schemas["ResponseUsage"]["required"])]
        item = data.get("item")
        if item is not None:
            problems += [f"{name}.item.{f}"
                         for f in missing(item, schemas[ITEMS[item["type"]]]["required"])]
            for part in item.get("content", []):
                problems += [f"{name}.content.{f}"
                             for f in missing(part, schemas[ITEMS[part["type"]]]["required"])]
    return problems


async def test_anthropic_messages_stream_follows_the_sdk_models() -> None:
    steps = [Step("write", path="/w/NOTE.md", content="x"), Step("finish", text="Done.")]
    async with FakeAgentApi(steps=steps) as api:
        headers = {"x-api-key": api.api_key, "anthropic-version": "2023-06-01"}
        body: dict[str, Any] = {"model": "m", "max_tokens": 100, "stream": True,
                                "tools": [{"name": "Write"}, {"name": "Bash"}],
                                "messages": [{"role": "user", "content": "go"}]}
        first = await sse(f"{api.url}/v1/messages", body, headers)
        body["messages"] += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Write",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": "ok"}]}]
        second = await sse(f"{api.url}/v1/messages", body, headers)
        async with aiohttp.ClientSession() as session, session.post(
                f"{api.url}/v1/messages", json=body, headers={"x-api-key": "wrong"}) as denied:
            assert denied.status == 401
            assert (await denied.json())["error"]["type"] == "authentication_error"
    assert check_anthropic(first) == [] and check_anthropic(second) == []
    tool = json.loads("".join(d["delta"].get("partial_json", "") for n, d in first
                              if n == "content_block_delta"))
    assert tool == {"file_path": "/w/NOTE.md", "content": "x"}
    assert [d["delta"]["stop_reason"] for n, d in first + second if n == "message_delta"] == [
        "tool_use", "end_turn"]


async def test_openai_responses_stream_follows_the_openapi_document() -> None:
    steps = [Step("shell", command="ls"), Step("finish", text="Done.")]
    async with FakeAgentApi(steps=steps) as api:
        headers = {"Authorization": f"Bearer {api.api_key}"}
        body: dict[str, Any] = {"model": "m", "stream": True, "input": [],
                                "tools": [{"type": "function", "name": "exec_command"}]}
        first = await sse(f"{api.url}/v1/responses", body, headers)
        body["input"] = [{"type": "function_call_output", "call_id": "c", "output": "a"}]
        second = await sse(f"{api.url}/v1/responses", body, headers)
        async with aiohttp.ClientSession() as session, session.post(
                f"{api.url}/v1/responses", json=body) as denied:
            assert denied.status == 401
    assert check_openai(first) == [] and check_openai(second) == []
    done = [d for n, d in first if n == "response.output_item.done"][0]["item"]
    assert done["type"] == "function_call" and json.loads(done["arguments"])["cmd"] == "ls"
    assert [n for n, _d in second][-1] == "response.completed"
