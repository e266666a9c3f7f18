"""The CLIs' streaming output read into tool calls and failure reasons; the presets'
command lines, endpoints, config and environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mwai.errors import PermanentError
from mwai.runner.agent.claude import ClaudeStream
from mwai.runner.agent.codex import CodexStream
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.output import AgentResult, blocking_failures
from mwai.runner.agent.presets import anthropic_base, codex_config, invocation, openai_base
from mwai.runner.agent.run import run_agent
from tests.conftest import make_settings


def claude_tool_use(tool_id: str, name: str, tool_input: dict[str, str]) -> dict[str, object]:
    return {"type": "assistant", "message": {"content": [
        {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}]}}


def claude_tool_result(tool_id: str, text: str, error: bool) -> dict[str, object]:
    return {"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": tool_id, "content": text, "is_error": error}]}}


def test_claude_tool_calls_and_permission_denials() -> None:
    stream = ClaudeStream()
    assert stream.feed(claude_tool_use("t1", "Write", {"file_path": "/w/a.md"})) == []
    [call] = stream.feed(claude_tool_result("t1", "File created", False))
    assert (call.tool, call.target, call.ok) == ("Write", "/w/a.md", True)
    stream.feed(claude_tool_use("t2", "Bash", {"command": "rm -rf /"}))
    [denied] = stream.feed(claude_tool_result("t2", "This command requires approval", True))
    assert not denied.ok and denied.target == "rm -rf /"
    stream.feed({"type": "result", "result": "All good!", "total_cost_usd": 0.5,
                 "usage": {"input_tokens": 7, "output_tokens": 3},
                 "permission_denials": [{"tool_name": "Bash",
                                         "tool_input": {"command": "rm -rf /"}}]})
    result = stream.result()
    assert (result.summary, result.cost_usd, result.input_tokens) == ("All good!", 0.5, 7)
    assert [f.reason for f in result.failures] == ["permission_denied"]  # not also tool_failed
    assert "rm -rf /" in result.failures[0].detail
    assert "MWAI_AGENT_ALLOWED_COMMANDS" in result.failures[0].fix


def test_claude_failed_command_and_auth_error() -> None:
    stream = ClaudeStream()
    stream.feed(claude_tool_use("t1", "Bash", {"command": "make test"}))
    stream.feed(claude_tool_result("t1", "Exit code 2: 3 failed", True))
    stream.feed({"type": "result", "is_error": True, "api_error_status": 401,
                 "result": "Invalid API key · Please run /login"})
    assert [f.reason for f in stream.result().failures] == ["auth_error", "tool_failed"]
    assert "ANTHROPIC_API_KEY" in stream.result().failures[0].fix


def test_codex_sandbox_refusal_failed_command_and_auth_error() -> None:
    events = [
        {"type": "item.completed", "item": {"id": "0", "type": "error",
                                            "message": "Model metadata for `m` not found."}},
        {"type": "item.started", "item": {"id": "1", "type": "command_execution",
                                          "command": "mkdir agent-notes"}},
        {"type": "item.completed", "item": {
            "id": "1", "type": "command_execution", "command": "mkdir agent-notes",
            "aggregated_output": "mkdir: cannot create directory 'agent-notes': Read-only "
                                 "file system\n", "exit_code": 1, "status": "failed"}},
        {"type": "error", "message": "unexpected status 401 Unauthorized: Missing bearer"},
        {"type": "item.completed", "item": {"id": "2", "type": "agent_message",
                                            "text": "Created the notes."}},
        {"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 2}},
    ]
    command_mode, preset = CodexStream(), CodexStream(preset=True)
    calls = [call for event in events for call in command_mode.feed(event)]
    for event in events:
        preset.feed(event)
    assert [(c.tool, c.target, c.ok) for c in calls] == [
        ("command_execution", "mkdir agent-notes", False)]
    result = command_mode.result()
    assert result.summary == "Created the notes." and result.input_tokens == 10
    assert [f.reason for f in result.failures] == ["sandbox_refusal", "auth_error"]
    assert "MWAI_AGENT=codex" in result.failures[0].fix
    assert "CODEX_API_KEY" in result.failures[1].fix
    assert "inside the worktree" in preset.result().failures[0].fix


def test_blocking_failures_put_the_likeliest_cause_first() -> None:
    quiet = AgentResult(0, "done", "", False, 1.0, None, None, None)
    assert [f.reason for f in blocking_failures(quiet)] == ["no_change"]
    crashed = AgentResult(3, "", "", False, 1.0, None, None, None)
    assert [f.reason for f in blocking_failures(crashed)] == ["agent_error"]
    stream = ClaudeStream()
    stream.feed({"type": "result", "result": "x", "permission_denials": [
        {"tool_name": "Write", "tool_input": {"file_path": "/w/a"}}]})
    denied = AgentResult(0, "x", "", False, 1.0, None, None, None, stream.result().failures)
    [failure] = blocking_failures(denied)
    assert failure.reason == "permission_denied" and "MWAI_AGENT=claude-code" in failure.fix


def test_endpoints_with_or_without_v1() -> None:
    assert anthropic_base("https://gw.example.com/v1/") == "https://gw.example.com"
    assert anthropic_base("https://api.anthropic.com") == "https://api.anthropic.com"
    assert openai_base("https://gw.example.com") == "https://gw.example.com/v1"
    assert openai_base("https://api.openai.com/v1/") == "https://api.openai.com/v1"


def preset(tmp_path: Path, kind: str, confined: bool = False, **changes: object) -> AgentConfig:
    program = tmp_path / "cli"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    # Inside bubblewrap (MWAI_SANDBOX=bwrap) the sandbox is the boundary: the CLI's own
    # checks step aside; with MWAI_SANDBOX=off they are the CLI's safest working mode.
    settings = make_settings(tmp_path, agent=kind, agent_program=str(program),
                             sandbox="bwrap" if confined else "off", **changes)
    return AgentConfig.of(settings)


def test_claude_modes_and_keys(tmp_path: Path) -> None:
    config = preset(tmp_path, "claude-code", anthropic_api_key="sk-a",
                    agent_allowed_commands=("make test",))
    call = invocation(config, tmp_path)
    assert call.argv[call.argv.index("--permission-mode") + 1] == "acceptEdits"
    assert call.argv[-2:] == ["Bash(make test)", "Bash(make test *)"]
    assert call.env["ANTHROPIC_API_KEY"] == "sk-a"
    confined = invocation(preset(tmp_path, "claude-code", True, anthropic_api_key="sk-a",
                                 agent_allowed_commands=("make test",)), tmp_path)
    assert confined.argv[confined.argv.index("--permission-mode") + 1] == "bypassPermissions"
    assert "--allowedTools" not in confined.argv
    token = invocation(preset(tmp_path, "claude-code", claude_code_oauth_token="oat"), tmp_path)
    assert token.env["CLAUDE_CODE_OAUTH_TOKEN"] == "oat" and "ANTHROPIC_API_KEY" not in token.env
    with pytest.raises(PermanentError, match="CLAUDE_CODE_OAUTH_TOKEN"):
        invocation(preset(tmp_path, "claude-code"), tmp_path)


def test_codex_modes_key_and_config(tmp_path: Path) -> None:
    config = preset(tmp_path, "codex", codex_api_key="ck", agent_model="gpt-x",
                    openai_base_url="https://gw.example.com")
    call = invocation(config, tmp_path)
    assert call.argv[call.argv.index("--sandbox") + 1] == "workspace-write"
    assert call.argv[-1] == "-" and call.env == {"CODEX_API_KEY": "ck"}
    text = call.home_files[".codex/config.toml"]
    assert 'base_url = "https://gw.example.com/v1"' in text and 'model = "gpt-x"' in text
    assert "[analytics]\nenabled = false" in text and "plugins = false" in text
    confined = invocation(preset(tmp_path, "codex", True, codex_api_key="ck"), tmp_path)
    assert "--dangerously-bypass-approvals-and-sandbox" in confined.argv
    assert "--sandbox" not in confined.argv
    with pytest.raises(PermanentError, match="CODEX_API_KEY"):
        invocation(preset(tmp_path, "codex", openai_api_key="sk-o"), tmp_path)
    assert codex_config(config).count("[model_providers.mwai]") == 1


async def test_a_preset_sees_its_one_key_and_no_other_secret(tmp_path: Path) -> None:
    dump = tmp_path / "env.json"
    program = tmp_path / "claude"
    program.write_text(f"#!/bin/sh\n{json.dumps(str(Path('/usr/bin/env')))} -0 > {dump}\n")
    program.chmod(0o755)
    secrets = {"ANTHROPIC_API_KEY": "sk-ant-1", "OPENAI_API_KEY": "sk-oai-2",
               "CODEX_API_KEY": "ck-3", "GH_TOKEN": "ghp-4", "JIRA_API_TOKEN": "jira-5"}
    settings = make_settings(
        tmp_path, agent="claude-code", agent_program=str(program), anthropic_api_key="sk-ant-1",
        openai_api_key="sk-oai-2", codex_api_key="ck-3", gh_token="ghp-4",
        jira_api_token="jira-5", agent_pass_env=("OPENAI_API_KEY", "CODEX_API_KEY", "GH_TOKEN"))
    await run_agent(AgentConfig.of(settings), tmp_path, "task", None,
                    base_env={"PATH": "/usr/bin:/bin", "HOME": "/root", **secrets})
    env = dict(item.split("=", 1) for item in dump.read_text().split("\0") if "=" in item)
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-1"
    leaked = [name for name, value in secrets.items() if name != "ANTHROPIC_API_KEY"
              and (name in env or value in dump.read_text())]
    assert leaked == []
    assert env["HOME"] != "/root" and env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
