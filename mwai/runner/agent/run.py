"""Running the agent: a preset CLI (MWAI_AGENT=claude-code|codex), the configured command
(MWAI_AGENT=command: MWAI_AGENT_COMMAND), or the built-in one.

A command is split with shlex (no shell), its program resolved outside the
worktree, and the prompt also written to $MWAI_TASK_FILE, in a directory outside
the worktree so it is never committed. A preset also gets its own HOME there
(with the CLI's config file), holding the one key it needs and nothing else.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mwai.clients.llm import LlmClient
from mwai.errors import ConfigError, PermanentError
from mwai.logs import AGENT_LOGGER
from mwai.runner.agent.builtin import run_builtin_agent
from mwai.runner.agent.claude import ClaudeStream
from mwai.runner.agent.codex import CodexStream
from mwai.runner.agent.config import PRESETS, AgentConfig
from mwai.runner.agent.env import agent_environment, protect_own_environment
from mwai.runner.agent.output import AgentResult
from mwai.runner.agent.presets import invocation
from mwai.runner.agent.process import (
    KILL_GRACE_S,
    RUN_MARKER,
    ToolObserver,
    resolve_program,
    run_command,
)
from mwai.runner.verify.sandbox import Sandbox
from mwai.settings import SETTINGS

log = logging.getLogger(AGENT_LOGGER)
_SECRET_NAMES = {s.name for s in SETTINGS if s.secret}


async def run_agent(
    config: AgentConfig,
    worktree: Path,
    prompt: str,
    llm: LlmClient | None,
    *,
    base_env: Mapping[str, str] | None = None,
    kill_grace_s: float = KILL_GRACE_S,
    on_tool: ToolObserver | None = None,
) -> AgentResult:
    """Run the configured agent in ``worktree``.

    Raises AgentTimeout (a PermanentError) after killing the agent's process
    tree when it runs past MWAI_AGENT_TIMEOUT_S. ``on_tool`` is awaited with each
    tool call the CLI reports while it works.
    """
    if config.kind == "builtin" or (config.kind == "command" and not config.command.strip()):
        if llm is None:
            raise PermanentError(
                "the built-in agent runs and no LLM is configured (MWAI_LLM_PROVIDER and its "
                "key); or set MWAI_AGENT=claude-code or codex"
            )
        return await run_builtin_agent(config, worktree, prompt, llm)
    env = agent_environment(config, os.environ if base_env is None else base_env)
    if not protect_own_environment():
        log.debug("could not make mwai non-dumpable; the agent may read /proc/<pid>/environ")
    sandbox = Sandbox(config.sandbox) if config.sandbox and config.sandbox.enabled else None
    if sandbox is not None:
        sandbox.require()
    task_dir = Path(tempfile.mkdtemp(prefix="mwai-task-"))
    try:
        stream: ClaudeStream | CodexStream | None = None
        if config.kind in PRESETS:
            try:
                call = invocation(config, worktree)
            except ConfigError as exc:
                raise PermanentError("; ".join(exc.problems)) from None
            argv = call.argv
            home = task_dir / "home"
            for relative, text in {".keep": "", **call.home_files}.items():
                (home / relative).parent.mkdir(parents=True, exist_ok=True)
                (home / relative).write_text(text, encoding="utf-8")
            # The one key the CLI needs; no other secret, even one listed to pass.
            env = {name: value for name, value in env.items() if name not in _SECRET_NAMES}
            env.update(call.env)
            env["HOME"] = str(home)
            if config.kind == "codex":
                env["CODEX_HOME"] = str(home / ".codex")
                # Codex installs its sandbox helper under CODEX_HOME but refuses to when
                # that is inside the temporary directory (then every command fails with
                # "execvp codex-linux-sandbox"): its temporary directory is in the HOME.
                (home / "tmp").mkdir()
                env["TMPDIR"] = str(home / "tmp")
                stream = CodexStream(config.confined_by_sandbox, preset=True,
                                     codex_home=home / ".codex")
            else:
                stream = ClaudeStream(config.confined_by_sandbox)
        else:
            try:
                argv = shlex.split(config.command)
            except ValueError as exc:
                raise PermanentError(
                    f"MWAI_AGENT_COMMAND cannot be split into arguments: {exc}") from None
            argv[0] = resolve_program(argv[0], env.get("PATH", ""))
        task_file = task_dir / "task.md"
        task_file.write_text(prompt, encoding="utf-8")
        env["MWAI_TASK_FILE"] = str(task_file)
        env[RUN_MARKER] = secrets.token_hex(8)
        if sandbox is None:
            return await run_command(config, argv, worktree, prompt, env, kill_grace_s,
                                     stream=stream, on_tool=on_tool)
        # The agent keeps the network: it must reach its model API. A preset's CLI
        # keeps its own HOME (its config, session log and temporary files), writable.
        home = task_dir / "home"
        writable = [home] if config.kind in PRESETS else []
        confined = sandbox.wrap(argv, cwd=worktree, network=True, readable=[task_dir],
                                writable=writable)
        inner = sandbox.environment(env)
        if writable:
            inner.update({name: env[name] for name in ("HOME", "TMPDIR") if name in env})
        async with sandbox.lend(worktree, task_dir):
            return await run_command(config, confined, worktree, prompt, inner, kill_grace_s,
                                     sandbox.config.max_output_bytes,
                                     stream=stream, on_tool=on_tool)
    finally:
        shutil.rmtree(task_dir, ignore_errors=True)
