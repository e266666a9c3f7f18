"""What one git command runs with: its environment and its credentials.

Nothing of the service's environment reaches git but PATH, HOME, TMPDIR (and the
ssh agent's socket); the push token travels only as a per-command config entry.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

AUTHOR_NAME = "mwai"
AUTHOR_EMAIL = "mwai@localhost"


def basic_credential(token: str) -> str:
    """The Basic credential GitHub accepts for a token over git https (a secret too)."""
    return base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")


def auth_header_value(token: str) -> str:
    """The HTTP Authorization header GitHub accepts for a token over git https."""
    return "Authorization: Basic " + basic_credential(token)


def git_environment(
    base_env: Mapping[str, str], url: str = "", token: str = ""
) -> dict[str, str]:
    """Environment of one git command: no prompts, C locale, fixed identity.

    With a token and an https URL, the auth header is added as a per-command
    config entry (GIT_CONFIG_COUNT...), which git never writes to disk.
    """
    env = {name: base_env[name] for name in ("PATH", "HOME", "TMPDIR") if name in base_env}
    env.update({
        "LC_ALL": "C",
        "LANG": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GCM_INTERACTIVE": "never",
        # No remote helpers that run commands (ext::) whatever the URL says.
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
    })
    if "SSH_AUTH_SOCK" in base_env:  # ssh remotes authenticate with the service's agent
        env["SSH_AUTH_SOCK"] = base_env["SSH_AUTH_SOCK"]
    if token and url.lower().startswith("https://"):
        env.update({
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": auth_header_value(token),
        })
    return env
