"""What mwai gives git: the names it makes (a run's branch, a mirror's directory) and
the environment and credentials of one command.

Names are made from text mwai does not control (ticket summaries, repository
URLs), so they keep only a safe alphabet: the result can go on a git command line
or into a file path whatever the ticket or the URL says. Nothing of the service's
environment reaches git but PATH, HOME, TMPDIR (and the ssh agent's socket); the
push token travels only as a per-command config entry.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Mapping

# Never committed, even in a repository without a .gitignore: what the agent, the setup
# and the checks leave behind that is not source (untracked files only; tracked stay).
JUNK_PATTERNS = (
    "__pycache__/", "*.py[cod]", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".tox/",
    ".nox/", ".coverage", ".coverage.*", "coverage.xml", "htmlcov/", "coverage/",
    ".nyc_output/", "node_modules/", ".next/", ".cache/", "dist/", "build/", "target/",
    "*.egg-info/", ".eggs/", ".venv/", "*.swp", "*.swo", "*~", ".#*", ".DS_Store",
)

SLUG_MAX_CHARS = 40


def _slug(text: str, max_chars: int) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_chars].strip("-")


def branch_name(parent_key: str, parent_summary: str) -> str:
    """``ai/<PARENT-KEY>-<slug>``: a valid, safe ref whatever the ticket says.

    Only ``[A-Za-z0-9-]`` survive in the key and ``[a-z0-9-]`` in the slug, so
    no "..", "@{", "~^:?*[\\", spaces, control characters or ".lock" can appear.
    """
    key = re.sub(r"[^A-Za-z0-9]+", "-", parent_key).strip("-")[:32].strip("-").upper()
    slug = _slug(parent_summary, SLUG_MAX_CHARS) or "work"
    return f"ai/{key or 'ISSUE'}-{slug}"


def mirror_name(url: str) -> str:
    """A file name for the mirror of ``url``: readable part + hash of the whole URL."""
    last = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git")
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{_slug(last, 40) or 'repo'}-{digest}.git"


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
