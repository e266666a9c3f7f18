"""The published coding-agent CLIs (Claude Code, Codex; pinned in tests/agents/package.json)
driven through mwai's presets against a scripted model API (mwai/demo/fake_agent_api.py).

Stories: the agent writes a file and runs the repository's tests through its shell
tool, mwai commits only that change and records cost and tokens; a denied tool
Blocks the sub-task with a comment naming the tool and the fix; a timeout kills
the whole tree, a command started in its own session included; no request leaves
for any host but the model API. `.ci/run` installs the CLIs (npm ci).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from mwai.demo.fakes.agent_api import FakeAgentApi, Step
from mwai.demo.sample_repo import git_branches, make_sample_origin
from mwai.demo.story import DemoStack
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.output import ToolCall
from mwai.runner.agent.presets import check_cli, invocation
from mwai.runner.agent.process import AgentTimeout
from mwai.runner.agent.run import run_agent
from mwai.runner.git import GitWorkspace
from mwai.runner.repos import RepoConfig
from mwai.settings import Settings
from tests.agents.recording_proxy import RecordingProxy
from tests.conftest import make_settings
from tests.integration.test_flow_e2e import ONE_SUBTASK_PLAN, all_events, all_runs, settle

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
PROGRAMS = {"claude-code": "claude", "codex": "codex"}
MODELS = {"claude-code": "claude-sonnet-4-5", "codex": "gpt-5-codex"}
# Codex runs commands in a login shell (/etc/profile resets PATH): the absolute python.
CHECKS = {"claude-code": "python -m pytest", "codex": f"{sys.executable} -m pytest"}
CHECKS_OPTIONS = " -q -p no:cacheprovider"
# A guard against a hanging CLI, not a speed requirement.
HANG_GUARD_S = 90


def cli(kind: str) -> str:
    path = HERE / "node_modules" / ".bin" / PROGRAMS[kind]
    if not path.exists():
        pytest.fail(f"{path} is missing: install the pinned CLIs with "
                    f"`npm ci --prefix {HERE}` (.ci/run does)")
    return str(path)


@pytest.fixture(autouse=True)
def python_first_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent runs the checks with `python`: this venv's, which has pytest."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}"
                               f"{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


def readme_example() -> tuple[dict[str, str], str]:
    """The settings and the command line README.md's agent example documents."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("<!-- agent-example:start"):text.index("<!-- agent-example:end")]
    env_block, command_block = re.findall(r"```sh\n(.*?)```", block, re.DOTALL)
    env = dict(line.split("=", 1) for line in env_block.splitlines() if "=" in line)
    return env, command_block.strip()


def preset_changes(kind: str, api: FakeAgentApi) -> dict[str, Any]:
    """Settings of a preset run against the scripted API: README's example for Claude."""
    changes: dict[str, Any] = {
        "agent": kind, "agent_program": cli(kind), "agent_model": MODELS[kind],
        "agent_base_url": api.url, "agent_timeout_s": float(HANG_GUARD_S),
        "agent_allowed_commands": (CHECKS[kind],),
        "agent_pass_env": ("PYTHONDONTWRITEBYTECODE",),
    }
    if kind == "claude-code":
        documented, _command = readme_example()
        parsed = Settings.from_env(documented, check_required=False)
        changes.update(agent=parsed.agent, agent_model=parsed.agent_model,
                       agent_allowed_commands=parsed.agent_allowed_commands)
    else:
        changes["codex_api_key"] = api.api_key
    return changes


@pytest.fixture
async def worktree(tmp_path: Path) -> AsyncIterator[Any]:
    origin = make_sample_origin(tmp_path / "origin.git")
    git = GitWorkspace(tmp_path / "work")
    wt = await git.prepare(RepoConfig(str(origin), "main", "acme/sample"), "ai/x", 1)
    yield wt
    await git.remove(wt)


# -- the README documents what runs ------------------------------------------------


def test_readme_agent_example_is_the_command_line_mwai_runs(tmp_path: Path) -> None:
    documented, command = readme_example()
    settings = dataclasses.replace(
        Settings.from_env(documented, check_required=False),
        agent_program=cli("claude-code"))
    call = invocation(AgentConfig.of(settings), tmp_path)
    assert settings.agent == "claude-code"
    assert shlex.join([Path(call.argv[0]).name, *call.argv[1:]]) == command
    assert call.env["ANTHROPIC_API_KEY"] == documented["ANTHROPIC_API_KEY"]
    assert call.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


# -- knowing the CLI -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["claude-code", "codex"])
def test_the_pinned_cli_is_tested_and_knows_every_flag(kind: str, tmp_path: Path) -> None:
    config = AgentConfig.of(make_settings(tmp_path, agent=kind, agent_program=cli(kind),
                                          agent_model=MODELS[kind]))
    report = check_cli(config, str(tmp_path))
    assert report.problems == () and report.tested, report
    assert re.fullmatch(r"\d+\.\d+\.\d+", report.version)
    assert "(tested)" in report.line()


def test_a_cli_without_the_preset_flags_is_refused_before_any_ticket(tmp_path: Path) -> None:
    old = tmp_path / "claude"
    old.write_text("#!/bin/sh\ncase \"$1\" in --version) echo '1.0.3 (Claude Code)';;\n"
                   "*) echo 'Usage: claude [options]'; echo '  -p, --print  print';;\nesac\n")
    old.chmod(0o755)
    config = AgentConfig.of(make_settings(tmp_path, agent="claude-code",
                                          agent_program=str(old)))
    report = check_cli(config, str(tmp_path))
    assert not report.tested and report.version == "1.0.3"
    assert len(report.problems) == 1 and "--permission-mode" in report.problems[0]
    assert "--output-format" in report.problems[0] and "docs/agents.md" in report.problems[0]
    env = {**os.environ, "MWAI_AGENT": "claude-code", "MWAI_AGENT_PROGRAM": str(old),
           "MWAI_DB": str(tmp_path / "db.sqlite3"), "MWAI_PROCESSOR": "noop",
           "JIRA_WEBHOOK_SECRET": "x" * 32}
    done = subprocess.run([sys.executable, "-m", "mwai", "check"], capture_output=True,
                          text=True, env=env, timeout=HANG_GUARD_S, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "version 1.0.3 (NOT in the tested range" in done.stdout
    assert "does not know --output-format" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    # `mwai serve` refuses to start rather than Block every ticket.
    jira_env = {**env, "MWAI_PROCESSOR": "jira", "JIRA_BASE_URL": "http://127.0.0.1:9",
                "JIRA_EMAIL": "ai@example.com", "JIRA_API_TOKEN": "t", "JIRA_AI_ACCOUNT_ID": "a",
                "JIRA_HUMAN_ACCOUNT_ID": "h", "GH_TOKEN": "g", "MWAI_REPO_URL": str(tmp_path),
                "ANTHROPIC_API_KEY": "k", "MWAI_LISTEN": "127.0.0.1:9"}
    served = subprocess.run([sys.executable, "-m", "mwai", "serve"], capture_output=True,
                            text=True, env=jira_env, timeout=HANG_GUARD_S, check=False)
    assert served.returncode == 2, served.stdout + served.stderr
    assert "does not know --output-format" in served.stderr
    assert "Traceback" not in served.stdout + served.stderr


# -- the stories through mwai's whole flow -------------------------------------------


@pytest.mark.parametrize("kind", ["claude-code", "codex"])
async def test_the_agent_writes_a_file_runs_the_tests_and_mwai_commits_only_that(
        kind: str, tmp_path: Path) -> None:
    note = "agent-notes/NOTE.md"
    steps = [Step("write", path=note, content="Greeting notes.\n"),
             Step("shell", command=CHECKS[kind] + CHECKS_OPTIONS),
             Step("finish", text="Wrote the notes; the tests pass.")]
    stack = DemoStack(tmp_path / "stack", plan=ONE_SUBTASK_PLAN)
    async with FakeAgentApi(steps=steps, api_key=stack.llm.anthropic_key) as api:
        stack.settings_changes.update(preset_changes(kind, api))
        await stack.start()
        try:
            jira = stack.jira
            parent = jira.create_issue(project="DEMO", summary="Greet users by name",
                                       description="Users want to be greeted by name.")
            jira.human_assign(parent, jira.ai_account_id)
            await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
            jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
            await settle(stack, "the change", lambda: any(
                "Pull request:" in c for s in jira.subtasks_of(parent)
                for c in jira.comments_of(s.key)), timeout_s=HANG_GUARD_S)
            sub = jira.subtasks_of(parent)[0].key
            assert jira.issue(sub).status == "In Testing"
            branch = next(b for b in git_branches(stack.origin) if b.startswith("ai/"))
            changed = subprocess.run(
                ["git", "--git-dir", str(stack.origin), "show", "--name-only", "--format=",
                 branch], capture_output=True, text=True, check=True).stdout.split()
            assert changed == [note]
            # The checks really ran through the CLI's shell tool, and passed.
            results = str([r.body.get("messages", r.body.get("input"))
                           for r in api.main_requests()])
            assert "2 passed" in results
            assert {r.body.get("model") for r in api.main_requests()} == {MODELS[kind]}
            execute = [r for r in await all_runs(stack) if r["action"] == "execute"][0]
            assert execute["input_tokens"] and execute["output_tokens"]
            if kind == "claude-code":  # Codex reports tokens, not cost
                assert execute["cost_usd"]
            tools = [e for e in await all_events(stack) if e["message"].startswith("Agent tool")]
            assert any(CHECKS[kind] + CHECKS_OPTIONS in e["message"] for e in tools), tools
            assert all('"duration_s"' in e["meta_json"] for e in tools)
        finally:
            await stack.stop()


async def test_a_denied_tool_blocks_the_subtask_naming_the_tool_and_the_fix(
        tmp_path: Path) -> None:
    steps = [Step("shell", command="curl -s http://127.0.0.1:9/"),
             Step("finish", text="All done, everything works!")]
    stack = DemoStack(tmp_path / "stack", plan=ONE_SUBTASK_PLAN)
    async with FakeAgentApi(steps=steps, api_key=stack.llm.anthropic_key) as api:
        # A denial happens in the CLI's own permission mode: unconfined (inside the
        # sandbox Claude runs with bypassPermissions and nothing is denied).
        stack.settings_changes.update({**preset_changes("claude-code", api), "sandbox": "off"})
        await stack.start()
        try:
            jira = stack.jira
            parent = jira.create_issue(project="DEMO", summary="Greet users by name",
                                       description="Users want to be greeted by name.")
            jira.human_assign(parent, jira.ai_account_id)
            await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
            jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
            await settle(stack, "the block", lambda: any(
                s.status == "Blocked" for s in jira.subtasks_of(parent)),
                timeout_s=HANG_GUARD_S)
            sub = jira.subtasks_of(parent)[0].key
            comment = [c for c in jira.comments_of(sub) if "did not commit" in c][0]
            assert "permission_denied" in comment and "Bash" in comment
            assert "curl -s http://127.0.0.1:9/" in comment
            assert "MWAI_AGENT_ALLOWED_COMMANDS" in comment
            blocked = [e for e in await all_events(stack)
                       if e["message"] == "Agent blocked: permission_denied"]
            assert len(blocked) == 1 and "MWAI_AGENT_ALLOWED_COMMANDS" in blocked[0]["meta_json"]
        finally:
            await stack.stop()


# -- the agent process ------------------------------------------------------------------


def processes_with(token: str) -> list[int]:
    """Live processes whose command line holds ``token``, in any PID namespace (/proc of
    the host lists the sandbox's processes too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if token.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def visible_dir() -> Any:
    """A directory both sides see: the sandbox hides /tmp (it gets a private one)."""
    path = Path(tempfile.mkdtemp(prefix="mwai-agent-test-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("kind,sandbox", [("claude-code", "off"), ("codex", "bwrap")])
async def test_a_timeout_kills_the_whole_tree_a_setsid_command_included(
        kind: str, sandbox: str, tmp_path: Path, visible_dir: Path, worktree: Any) -> None:
    # The repository's checks start a daemon in its own session, then hang: unconfined
    # (mwai's tree kill alone), and Codex inside bubblewrap with its own sandbox off
    # (the case the issue saw survive; there the PID namespace ends it too).
    token = f"{secrets_token()}"
    checks = visible_dir / "checks"
    started = Path(worktree.path) / "checks-started"  # the worktree: writable in both
    # Each waiting shell carries the token as its $0, so /proc finds it in any namespace.
    checks.write_text(f"#!/bin/sh\nsetsid sh -c 'sleep 300; :' {token} > /dev/null 2>&1 &\n"
                      f"echo started > {started}\nexec sh -c 'sleep 300; :' {token}-main\n")
    checks.chmod(0o755)
    async with FakeAgentApi(steps=[Step("shell", command=str(checks))]) as api:
        settings = make_settings(tmp_path, **{
            **preset_changes(kind, api), "agent_timeout_s": 12.0, "sandbox": sandbox,
            "agent_allowed_commands": (str(checks),), "anthropic_api_key": api.api_key})
        config = AgentConfig.of(settings)
        assert config.confined_by_sandbox is (sandbox == "bwrap")
        seen: list[ToolCall] = []

        async def observe(call: ToolCall) -> None:
            seen.append(call)

        with pytest.raises(AgentTimeout, match="timed out after 12 s"):
            await run_agent(config, worktree.path, "Run it.", None, kill_grace_s=1.0,
                            on_tool=observe)
    assert started.exists(), f"the scripted command never ran: {seen}"
    for _ in range(100):
        if not processes_with(token):
            break
        await asyncio.sleep(0.05)
    assert processes_with(token) == [], "a process of the timed-out agent survived"


def secrets_token() -> str:
    return f"mwai-test-{os.getpid()}-{os.urandom(4).hex()}"


@pytest.mark.parametrize("kind", ["claude-code", "codex"])
async def test_no_request_leaves_for_any_host_but_the_model_api(
        kind: str, tmp_path: Path, worktree: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [Step("write", path="NOTE.md", content="x\n"), Step("finish", text="Done.")]
    async with FakeAgentApi(steps=steps) as api, \
            RecordingProxy(f"127.0.0.1:{api.port}") as proxy:
        names = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
        for name in names:
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        changes = {**preset_changes(kind, api), "anthropic_api_key": api.api_key,
                   "agent_pass_env": names}
        config = AgentConfig.of(make_settings(tmp_path, **changes))
        result = await run_agent(config, worktree.path, "Write the note.", None)
        assert result.exit_code == 0 and (worktree.path / "NOTE.md").read_text() == "x\n"
        # The CLI used the proxy (it saw the model API) and nothing else.
        assert proxy.hosts and set(proxy.hosts) == {f"127.0.0.1:{api.port}"}, proxy.hosts
        assert [asdict(f) for f in result.failures] == []


async def test_tool_calls_show_in_mwai_show_while_the_agent_works(
        tmp_path: Path, visible_dir: Path) -> None:
    # Inside the sandbox (the default): the checks script and its signal are where the
    # sandbox lets it read (its /tmp is private).
    go = visible_dir / "go"
    checks = visible_dir / "slow-checks"  # the repository's checks, waiting for the test
    checks.write_text(f"#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.05; done\necho checked\n")
    checks.chmod(0o755)
    steps = [Step("write", path="NOTE.md", content="x\n"), Step("shell", command=str(checks)),
             Step("finish", text="Done.")]
    stack = DemoStack(tmp_path / "stack", plan=ONE_SUBTASK_PLAN)
    async with FakeAgentApi(steps=steps, api_key=stack.llm.anthropic_key) as api:
        stack.settings_changes.update({**preset_changes("claude-code", api),
                                       "agent_allowed_commands": (str(checks),)})
        await stack.start()
        try:
            jira = stack.jira
            parent = jira.create_issue(project="DEMO", summary="Greet users by name",
                                       description="Users want to be greeted by name.")
            jira.human_assign(parent, jira.ai_account_id)
            await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
            jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
            write_event: list[dict[str, Any]] = []
            for _ in range(HANG_GUARD_S * 10):
                write_event = [e for e in await all_events(stack)
                               if e["message"].startswith("Agent tool Write")]
                if write_event:
                    break
                await asyncio.sleep(0.1)
            assert write_event, "no tool event while the agent works"
            run_id = write_event[0]["run_id"]
            shown = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "mwai", "show", str(run_id),
                                 "--db", str(stack.db_path)],
                capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
            assert "Agent tool Write: " in shown.stdout and "NOTE.md" in shown.stdout
            # The agent is still at work: its checks wait for the test.
            assert (await stack.store.get_run(run_id))["status"] == "running"
            assert not go.exists()
            go.touch()
            await settle(stack, "the change", lambda: any(
                "Pull request:" in c for s in jira.subtasks_of(parent)
                for c in jira.comments_of(s.key)), timeout_s=HANG_GUARD_S)
        finally:
            go.touch()
            await stack.stop()


async def test_the_old_readme_command_is_told_to_use_the_preset(
        tmp_path: Path, worktree: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`claude -p --output-format json` (no permission mode): every edit is refused, the CLI
    exits 0, and mwai says so with the fix instead of "no change"."""
    steps = [Step("write", path="NOTE.md", content="x\n"),
             Step("finish", text="I wrote NOTE.md.")]
    async with FakeAgentApi(steps=steps) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", api.api_key)
        monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        monkeypatch.setenv("HOME", str(tmp_path))
        config = AgentConfig.of(make_settings(
            tmp_path, agent_command=f"{cli('claude-code')} -p --output-format json",
            agent_pass_env=("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY",
                            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")))
        assert config.kind == "command"
        result = await run_agent(config, worktree.path, "Write the note.", None)
    assert result.exit_code == 0 and not (worktree.path / "NOTE.md").exists()
    assert result.summary == "I wrote NOTE.md."  # the model's claim
    assert [f.reason for f in result.failures] == ["permission_denied"]
    assert "Write" in result.failures[0].detail and "NOTE.md" in result.failures[0].detail
    assert "MWAI_AGENT=claude-code" in result.failures[0].fix


@pytest.mark.parametrize("kind,fix", [("claude-code", "ANTHROPIC_API_KEY"),
                                      ("codex", "CODEX_API_KEY")])
async def test_a_refused_key_is_an_auth_error_with_the_fix_not_minutes_of_retries(
        kind: str, fix: str, tmp_path: Path, worktree: Any) -> None:
    async with FakeAgentApi(steps=[Step("finish", text="Done.")]) as api:
        changes = {**preset_changes(kind, api), "anthropic_api_key": "sk-wrong",
                   "codex_api_key": "wrong"}
        result = await run_agent(AgentConfig.of(make_settings(tmp_path, **changes)),
                                 worktree.path, "Do it.", None, kill_grace_s=1.0)
        refused = len(api.requests)
    assert refused >= 1 and result.failures, result
    assert result.failures[0].reason == "auth_error" and fix in result.failures[0].fix
    assert not result.timed_out and "sk-wrong" not in result.output


async def test_codex_sandbox_refusal_is_named_though_its_events_hide_it(
        tmp_path: Path, worktree: Any) -> None:
    """Codex 0.171 prints no event for a command its sandbox refused; mwai finds it in the
    run's session log and says what was refused."""
    outside = Path(tempfile.mkdtemp(dir="/var/tmp")) / "outside.txt"
    try:
        steps = [Step("shell", command=f"touch {outside}"), Step("finish", text="Done!")]
        async with FakeAgentApi(steps=steps) as api:
            # Codex's own sandbox refuses only when it is on: unconfined by bubblewrap.
            config = AgentConfig.of(make_settings(tmp_path, **preset_changes("codex", api),
                                                  sandbox="off"))
            result = await run_agent(config, worktree.path, "Do it.", None)
        assert result.exit_code == 0 and not outside.exists()
        [failure] = result.failures
        assert failure.reason == "sandbox_refusal" and str(outside) in failure.detail
        assert "Read-only file system" in failure.detail and "worktree" in failure.fix
    finally:
        shutil.rmtree(outside.parent, ignore_errors=True)
