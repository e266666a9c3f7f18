"""The coding agent: an external CLI in the worktree, or the built-in LLM edit agent.

External agent (MWAI_AGENT_COMMAND): split with shlex (no shell), run in the
worktree in its own process group with the prompt on stdin and in the file
named by $MWAI_TASK_FILE (outside the worktree, so it is never committed), an
environment reduced to PATH/HOME/LANG and MWAI_AGENT_PASS_ENV (never mwai's own
secrets), a time limit after which the whole group is killed, and bounded output
capture. ``claude -p --output-format json`` results and ``codex exec --json``
events are recognised for the summary, cost and tokens.

Built-in agent (empty command): the LLM answers with JSON file edits that are
applied inside the worktree only; anything else is refused and reported.

One concept per module: ``config`` (what the agent takes of the settings: AgentConfig),
``env`` (what of mwai's environment the agent may see),
``prompt`` (the task text), ``output`` (the result, read from the two CLIs'
output), ``process`` (the subprocess, its output capture, its time limit and the
kill of its process group), ``builtin`` (the LLM edit agent) and ``run`` (which of
the two runs).
"""
