"""Running the agent: the configured command (MWAI_AGENT_COMMAND), or the built-in one.

The command is split with shlex (no shell), its program resolved outside the
worktree, and the prompt also written to $MWAI_TASK_FILE, in a directory outside
the worktree so it is never committed.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mwai.clients.llm import LlmClient
from mwai.errors import PermanentError
from mwai.logs import AGENT_LOGGER
from mwai.runner.agent.builtin import run_builtin_agent
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.env import agent_environment, protect_own_environment
from mwai.runner.agent.output import AgentResult
from mwai.runner.agent.process import KILL_GRACE_S, resolve_program, run_command
from mwai.runner.verify.sandbox import Sandbox

log = logging.getLogger(AGENT_LOGGER)


async def run_agent(
    config: AgentConfig,
    worktree: Path,
    prompt: str,
    llm: LlmClient | None,
    *,
    base_env: Mapping[str, str] | None = None,
    kill_grace_s: float = KILL_GRACE_S,
) -> AgentResult:
    """Run the configured agent in ``worktree``; the built-in LLM agent without a command.

    Raises AgentTimeout (a PermanentError) after killing the agent's process
    group when it runs past MWAI_AGENT_TIMEOUT_S.
    """
    if not config.command.strip():
        if llm is None:
            raise PermanentError(
                "MWAI_AGENT_COMMAND is empty and no LLM is configured for the built-in agent"
            )
        return await run_builtin_agent(config, worktree, prompt, llm)
    try:
        argv = shlex.split(config.command)
    except ValueError as exc:
        raise PermanentError(f"MWAI_AGENT_COMMAND cannot be split into arguments: {exc}") from None
    env = agent_environment(config, os.environ if base_env is None else base_env)
    argv[0] = resolve_program(argv[0], env.get("PATH", ""))
    if not protect_own_environment():
        log.debug("could not make mwai non-dumpable; the agent may read /proc/<pid>/environ")
    sandbox = Sandbox(config.sandbox) if config.sandbox and config.sandbox.enabled else None
    if sandbox is not None:
        sandbox.require()
    task_dir = Path(tempfile.mkdtemp(prefix="mwai-task-"))
    try:
        task_file = task_dir / "task.md"
        task_file.write_text(prompt, encoding="utf-8")
        env["MWAI_TASK_FILE"] = str(task_file)
        if sandbox is None:
            return await run_command(config, argv, worktree, prompt, env, kill_grace_s)
        # The agent keeps the network: it must reach its model API.
        confined = sandbox.wrap(argv, cwd=worktree, network=True, readable=[task_dir])
        async with sandbox.lend(worktree, task_dir):
            return await run_command(config, confined, worktree, prompt,
                                     sandbox.environment(env), kill_grace_s,
                                     sandbox.config.max_output_bytes)
    finally:
        shutil.rmtree(task_dir, ignore_errors=True)
