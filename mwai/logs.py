"""Logging: one JSON object per line on stdout (or text for humans).

Context that belongs to the work at hand (run_id, issue_key, worker, action,
request_id) lives in contextvars and is added to every record written while it
is set, so a worker's lines can be filtered by run without passing ids around.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from pythonjsonlogger.orjson import OrjsonFormatter

from mwai.settings import Settings

# Logger names: the `logger` field of every line. Operators filter on them
# (docs/logging.md, deploy/), so they name a role, not a module path, and stay
# the same when a module moves; every getLogger in mwai takes one of these
# (tests/unit/test_logger_names.py holds the docs and the code to that).
WEB_LOGGER = "mwai.web"  # inbound HTTP: webhooks, the API, the server's lifecycle
WORKERS_LOGGER = "mwai.workers"  # claim, outcome, retries, recovery of runs
RUN_LOGGER = "mwai.run"  # the steps a run journals
HTTP_LOGGER = "mwai.http"  # retries of outgoing calls (Jira, GitHub, the LLMs)
FLOW_LOGGER = "mwai.flow"  # the AI Runner's flow
AGENT_LOGGER = "mwai.agent"  # the coding agent's process
GIT_LOGGER = "mwai.git"  # the runner's git workspaces
STORE_LOGGER = "mwai.store"  # the store, its writer thread included
SDNOTIFY_LOGGER = "mwai.sdnotify"
TELEMETRY_LOGGER = "mwai.telemetry"
METRICS_LOGGER = "mwai.metrics"
DEMO_JIRA_LOGGER = "mwai.demo.fake_jira"  # `mwai demo`'s fake Jira only
# Libraries' loggers mwai configures.
AIOHTTP_ACCESS_LOGGER = "aiohttp.access"
AIOHTTP_SERVER_LOGGER = "aiohttp.server"
ASYNCIO_LOGGER = "asyncio"

CONTEXT_FIELDS = ("run_id", "issue_key", "worker", "action", "request_id")
_context: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(f"mwai_{name}", default=None) for name in CONTEXT_FIELDS
}

# Attributes every LogRecord has; anything else passed via extra= is a field.
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Set context fields for the duration of the block (and tasks it creates)."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind(**fields: Any) -> None:
    """Set context fields for the rest of the current task."""
    for name, value in fields.items():
        _context[name].set(value)


def current(name: str) -> Any:
    return _context[name].get()


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a record carries beyond the standard attributes: extra= and context."""
    return {key: value for key, value in vars(record).items()
            if key not in _RESERVED and key[0] != "_"}


class JsonFormatter(OrjsonFormatter):
    """One JSON object per line: timestamp (ISO 8601, UTC), level, logger, message,
    then the record's own fields (extra=, context) and a traceback as exc_info.

    python-json-logger does the record handling (message, exc_info, stack_info,
    the fields beyond the standard attributes); mwai only fixes the names and
    the order of its four leading fields (docs/logging.md is a stable interface)
    and keeps a line going out whatever a field holds.
    """

    def __init__(self) -> None:
        # str for what orjson cannot encode (a Path, an exception...): the value's
        # own text, as mwai's lines always had, not the library's richer rendering.
        super().__init__(json_default=str)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        # The fixed fields first, then extra= and context, then the traceback
        # (message_dict: exc_info, stack_info): the order of docs/logging.md.
        # record_fields, not the library's merge_record_extra: the same fields as
        # the text format's, and 0.5 us a line cheaper (it renames nothing).
        log_data["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data.update(record_fields(record))
        log_data.update(message_dict)

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        try:
            return super().jsonify_log_record(log_data)
        except TypeError:
            # Beyond what json_default can mend (an int over 64 bits, a cycle): the
            # line still goes out, each odd value as its text.
            plain = {key: value if isinstance(value, str) else str(value)
                     for key, value in log_data.items()}
            return orjson.dumps(plain).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = record_fields(record)
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return line


# syslog priorities (sd-daemon(3)): the `<N>` prefix journald reads from a line.
JOURNAL_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                    logging.CRITICAL: 2}
# Loggers given their own level by MWAI_LOG_LEVEL: reset when it is re-read (SIGHUP).
_leveled_loggers: set[str] = set()


class _JournalPriority(logging.Formatter):
    """Prefixes each line with ``<N>``, its level as a syslog priority, so that
    `journalctl -p err` finds mwai's errors (journald strips the prefix)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelno
        priority = next((p for at, p in sorted(JOURNAL_PRIORITY.items(), reverse=True)
                         if level >= at), 7)
        return f"<{priority}>{self.inner.format(record)}"


def stream_is_journal(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journal: $JOURNAL_STREAM (set by systemd) names
    its device and inode. A pipe or file taking over stdout does not match."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def log_levels(settings: Settings) -> tuple[tuple[str, str], ...]:
    """MWAI_LOG_LEVEL's (logger, LEVEL) pairs, '' the root; DEBUG=true makes the root
    DEBUG (the old switch, kept as an alias)."""
    levels = (("", "INFO"), *settings.log_level)
    return (*levels, ("", "DEBUG")) if settings.debug else levels


def apply_levels(levels: Sequence[tuple[str, str]]) -> None:
    """Set the root's and the named loggers' levels; a logger no longer named goes
    back to following the root. The last pair for a logger wins."""
    # The operator names these loggers (MWAI_LOG_LEVEL), hence getChild of the root.
    for name in _leveled_loggers:
        logging.root.getChild(name).setLevel(logging.NOTSET)
    _leveled_loggers.clear()
    logging.getLogger(AIOHTTP_ACCESS_LOGGER).setLevel(logging.NOTSET)
    # aiohttp.access lines are written by our own AccessLogger; keep asyncio quiet.
    logging.getLogger(ASYNCIO_LOGGER).setLevel(logging.WARNING)
    for name, level in levels:
        (logging.root.getChild(name) if name else logging.root).setLevel(level)
        if name:
            _leveled_loggers.add(name)


def configure_logging(
    log_format: str = "json", debug: bool = False, stream: IO[str] | None = None,
    levels: Sequence[tuple[str, str]] = (), environ: Mapping[str, str] | None = None,
) -> None:
    """Route every logger (mwai, aiohttp, asyncio...) to one stdout handler, each
    line prefixed with its journald priority when stdout is the journal."""
    out = stream or sys.stdout
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if stream_is_journal(out, os.environ if environ is None else environ):
        formatter = _JournalPriority(formatter)
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Lines never show the caller's file, thread or process: skip computing them
    # (the logging HOWTO's "Optimization"); it halves the cost of a log call.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    apply_levels([("", "DEBUG" if debug else "INFO"), *levels])
