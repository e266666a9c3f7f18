"""Logging: one JSON object per line on stdout (or text for humans).

Context that belongs to the work at hand (run_id, issue_key, worker, action,
request_id) lives in contextvars and is added to every record written while it
is set, so a worker's lines can be filtered by run without passing ids around.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

import orjson

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (ISO 8601, UTC), level, logger, message,
    then the record's own fields (extra=, context) and a traceback as exc_info.

    Every webhook's access line goes through here, so it builds the object
    directly instead of going through a generic formatter's field pipeline.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(fields, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            # Beyond what default= can mend (an int over 64 bits, a cycle): the line
            # still goes out, each odd value as its text.
            plain = {key: value if isinstance(value, str) else str(value)
                     for key, value in fields.items()}
            return orjson.dumps(plain).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = record_fields(record)
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return line


def configure_logging(
    log_format: str = "json", debug: bool = False, stream: IO[str] | None = None
) -> None:
    """Route every logger (mwai, aiohttp, asyncio...) to one stdout handler."""
    handler = logging.StreamHandler(stream or sys.stdout)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Lines never show the caller's file, thread or process: skip computing them
    # (the logging HOWTO's "Optimization"); it halves the cost of a log call.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiohttp.access lines are written by our own AccessLogger; keep the rest quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
