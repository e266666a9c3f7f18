"""Verified changes: the sandbox the agent and the checks run in, the checks, the fix loop.

One concept per module: ``sandbox`` (the bubblewrap command line: what a confined
process sees and its limits), ``checks`` (which commands prove a change: configured
or detected), ``command`` (one confined command with its time limit and bounded
output), ``loop`` (agent -> checks -> the failure back to the agent, up to
MWAI_MAX_FIX_ATTEMPTS) and ``report`` (the checks table of the pull request, the
Jira comment and ``mwai show``).
"""
