"""The coding agent: a known CLI (preset), a configured command, or the built-in LLM edit agent.

Presets (MWAI_AGENT=claude-code | codex): mwai builds the published CLI's
command line (headless, streaming JSON, model, turn limit, permission / sandbox
mode, endpoint, its one key, side traffic off) and gives it its own HOME; see
docs/agents.md. Command (MWAI_AGENT=command): MWAI_AGENT_COMMAND split with
shlex (no shell). Either runs in the worktree in its own process group with the
prompt on stdin and in the file named by $MWAI_TASK_FILE (outside the worktree,
so it is never committed), an environment reduced to PATH/HOME/LANG and
MWAI_AGENT_PASS_ENV (never mwai's own secrets), a time limit after which the
whole process tree is killed, and bounded output capture. Claude Code's
stream-json and Codex's JSONL events are read as they come: tool calls become
run events, and permission denials, sandbox refusals, failed commands and
refused keys become failure reasons with their fix.

Built-in agent: the LLM answers with JSON file edits that are applied inside the
worktree only; anything else is refused and reported.

One concept per module: ``config`` (AgentConfig, from the settings), ``env``
(what of mwai's environment the agent may see), ``prompt`` (the task text),
``presets`` (the known CLIs' command lines, config and version check),
``claude`` and ``codex`` (their streaming output), ``output`` (the result, tool
calls and failure reasons), ``process`` (the subprocess, its output, its time
limit and the kill of its tree), ``builtin`` (the LLM edit agent) and ``run``
(which of them runs).
"""
