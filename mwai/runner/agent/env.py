"""The agent's environment: what of mwai's own environment an agent process may see.

The agent runs code mwai did not write, with ticket text as its instructions: it
gets PATH/HOME/LANG and the names the operator lists (MWAI_AGENT_PASS_ENV), never
mwai's secrets, and mwai makes itself non-dumpable so the agent cannot read them
from /proc either.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Mapping

from mwai.logs import AGENT_LOGGER
from mwai.runner.agent.config import AgentConfig
from mwai.settings import SETTINGS

log = logging.getLogger(AGENT_LOGGER)

BASE_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL")
# The agent needs an LLM key when the operator lists it; everything else secret stays home.
_PASSABLE_SECRETS = {"ANTHROPIC_API_KEY", "OPENAI_API_KEY"}
_ALSO_REFUSED = {"GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"}
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def refused_env_names() -> set[str]:
    """mwai's own secrets (and GitHub tokens): never given to the agent."""
    return {s.name for s in SETTINGS if s.secret} - _PASSABLE_SECRETS | _ALSO_REFUSED


def agent_environment(config: AgentConfig, base_env: Mapping[str, str]) -> dict[str, str]:
    """PATH, HOME, LANG (LC_ALL) and the MWAI_AGENT_PASS_ENV names found in ``base_env``.

    mwai's secrets are refused even when listed, and so is any listed variable
    whose value is one of them (a renamed copy of GH_TOKEN is still GH_TOKEN).
    """
    refused = refused_env_names()
    refused_values = {value for name, value in config.secrets if name in refused}
    env = {name: base_env[name] for name in BASE_ENV_NAMES if name in base_env}
    for name in config.pass_env:
        if name in refused:
            log.warning("MWAI_AGENT_PASS_ENV lists %s, a secret of mwai: not passed to the "
                        "agent", name)
        elif name in base_env and base_env[name] in refused_values:
            log.warning("MWAI_AGENT_PASS_ENV lists %s, whose value is a secret of mwai: not "
                        "passed to the agent", name)
        elif name in base_env:
            env[name] = base_env[name]
    return env


def protect_own_environment() -> bool:
    """Make mwai non-dumpable so an agent of the same user cannot read its secrets.

    Without it the agent could read /proc/<mwai pid>/environ (GH_TOKEN...) or its
    memory even though its own environment is clean. Linux only; a no-op elsewhere.
    Returns True when mwai is now non-dumpable.
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            return False
        return int(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
