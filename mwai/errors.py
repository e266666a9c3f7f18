"""The exceptions mwai raises across module boundaries.

Each carries a message meant for the operator: what is wrong and how to fix it.
"""

from __future__ import annotations


class MwaiError(Exception):
    """Base class of every error mwai raises on purpose."""


class ConfigError(MwaiError):
    """One or more settings are missing or invalid; all problems are listed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class StoreError(MwaiError):
    """The database refused an operation for a reason the caller cannot retry."""


class StoreUnavailable(StoreError):
    """The database is locked, full, read-only or unreachable; retry later."""


class NotMwaiDatabase(StoreError):
    """The file exists but is not a mwai database (or is from a newer version)."""


class RunNotFound(MwaiError):
    """No run has the given id."""


class InvalidRunState(MwaiError):
    """The run exists but the requested change makes no sense in its state."""


class TransientError(MwaiError):
    """A failure that may go away by itself (429, 5xx, timeout): retry the run later.

    ``retry_after_s`` is a hint from the remote service (Retry-After).
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(MwaiError):
    """A failure that retrying will not fix: the run fails with this message."""
