"""The exceptions mwai raises across module boundaries.

Each carries a message meant for the operator: what is wrong and how to fix it,
and the exit code the ``mwai`` command ends with when it reaches the top. The
exit codes of every ``mwai`` command (docs/operations.md, "Exit codes"):

====  ===================================================================
0     success
1     runtime failure, or the thing asked about is wrong: an alert fired, a
      check failed, the service is not healthy, the database is busy or
      unavailable, a run still runs after ``cancel --wait``
2     bad input: usage, a flag's value, configuration, a path that is a
      directory or not a mwai database, a run that does not exist or is in
      the wrong state; nothing was changed
3     ``mwai alert``: the alert was due but a notifier failed
130   interrupted (Ctrl-C)
====  ===================================================================
"""

from __future__ import annotations

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_NOTIFY_FAILED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130


class MwaiError(Exception):
    """Base class of every error mwai raises on purpose."""

    exit_code: int = EXIT_PROBLEM


class UsageError(MwaiError):
    """Bad command-line input; nothing was changed."""

    exit_code = EXIT_USAGE


class ConfigError(MwaiError):
    """One or more settings are missing or invalid; all problems are listed."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class StoreError(MwaiError):
    """The database refused an operation for a reason the caller cannot retry."""

    exit_code = EXIT_USAGE


class StoreUnavailable(StoreError):
    """The database is locked, full, read-only or unreachable; retry later."""

    exit_code = EXIT_PROBLEM


class NotMwaiDatabase(StoreError):
    """The file exists but is not a mwai database (or is from a newer version)."""


class RunNotFound(MwaiError):
    """No run has the given id."""

    exit_code = EXIT_USAGE


class InvalidRunState(MwaiError):
    """The run exists but the requested change makes no sense in its state."""

    exit_code = EXIT_USAGE


class TransientError(MwaiError):
    """A failure that may go away by itself (429, 5xx, timeout): retry the run later.

    ``retry_after_s`` is a hint from the remote service (Retry-After).
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(MwaiError):
    """A failure that retrying will not fix: the run fails with this message."""


class WebhookError(MwaiError):
    """A request the webhook refuses; ``status`` is the HTTP status to answer."""

    exit_code = EXIT_USAGE

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
