"""The names mwai gives to git things: a run's branch and a repository's mirror directory.

Both are made from text mwai does not control (ticket summaries, repository
URLs), so both keep only a safe alphabet: the result can go on a git command
line or into a file path whatever the ticket or the URL says.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

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
