"""What the operator commands share: durations, times, the settings and the store.

The commands themselves: ``mwai runs | show | stats | monitor`` (read-only
views, mwai/cli/inspect.py), ``mwai requeue | cancel | unlock | prune``
(actions, mwai/cli/actions.py) and ``mwai check`` (mwai/cli/check.py).

Human output uses local time; ``--json`` prints one document with epoch seconds
and ISO-8601 (UTC) times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

import orjson

from mwai import advice, sources
from mwai.errors import UsageError
from mwai.model import FINISHED, ProcessRow
from mwai.queue.store import Store
from mwai.queue.writes import pid_alive
from mwai.settings import SETTINGS, Settings


def load_settings(args: argparse.Namespace, overrides: Mapping[str, Any] | None = None,
                  require_secret: bool = False,
                  environ: Mapping[str, str] | None = None,
                  used: Collection[str] | None = None,
                  report: Callable[[str], None] | None = None) -> Settings:
    """Settings from the env file, the environment and the command line, the later
    winning (mwai/sources.py); warnings (misspelt names, unsafe combinations, bad
    values of settings outside ``used``) go to ``report`` (default: stderr).

    ``require_secret=True`` for commands that run the service: every setting the
    chosen processor needs is then required (the webhook secret first of all).
    """
    sourced = gather_sources(args, overrides, environ)
    notes = sourced.notes + advice.unknown_names(sourced.given)
    settings = Settings.from_env(sourced.values, check_required=require_secret, used=used,
                                 notes=notes)
    notes += advice.unsafe_combinations(settings)
    for note in notes:
        (report or warn)(note)
    return settings


def gather_sources(args: argparse.Namespace, overrides: Mapping[str, Any] | None = None,
                   environ: Mapping[str, str] | None = None) -> sources.Sourced:
    """Every setting's raw value and source: command-line options (``overrides``,
    --db) over the environment over the env file."""
    command_line = {name: str(value) for name, value in (overrides or {}).items()
                    if value is not None}
    if getattr(args, "db", None):
        command_line["MWAI_DB"] = args.db
    return sources.gather(os.environ if environ is None else environ,
                          getattr(args, "env_file", None), command_line)


def warn(message: str) -> None:
    sys.stderr.write(f"mwai: warning: {message}\n")


def print_json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")


def fail(message: str) -> None:
    """One clear line on stderr."""
    sys.stderr.write(f"mwai: {message}\n")


# ------------------------------------------------------------------ durations

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, option: str = "duration") -> float:
    """'30s', '10m', '1h', '7d', '2w' or combinations ('1h30m') -> seconds."""
    value = text.strip().lower()
    if not _DURATION_RE.fullmatch(value):
        raise UsageError(
            f"{option} {text!r} is not a duration: use a number with a unit, "
            "s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. 30s, 10m, 1h, 7d"
        )
    return sum(float(number) * _UNITS_S[unit] for number, unit in _PART_RE.findall(value))


def format_duration(seconds: float | None) -> str:
    """Short human duration: '850ms', '4.2s', '3m 12s', '2h 5m', '3d 4h'."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit_s, unit, sub_s, sub in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"),
                                     (60, "m", 1, "s")):
        if whole >= unit_s:
            rest = (whole % unit_s) // sub_s
            return f"{whole // unit_s}{unit} {rest}{sub}" if rest else f"{whole // unit_s}{unit}"
    return f"{seconds:.0f}s"  # pragma: no cover - unreachable


def local_time(epoch_s: float | None, with_ms: bool = False) -> str:
    if epoch_s is None:
        return "-"
    moment = dt.datetime.fromtimestamp(epoch_s)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if with_ms else text


def iso_utc(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_run_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"RUN_ID {text!r} is not a run id: give the number shown by `mwai runs`")
    return int(text)


def one_line(text: str | None, limit: int = 80) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ------------------------------------------------------------------ settings / store

_TIME_FIELDS = ("created_at", "updated_at", "started_at", "finished_at", "locked_at",
                "lease_expires_at", "available_at", "ts", "last_at", "heartbeat_at",
                "stopped_at")


# A run, event or process: a record of mwai.model, or a mapping of column -> value
# (Store.get_run). Either way a --json document gets the same field names.
Row = Any


def as_dict(row: Row) -> dict[str, Any]:
    """A record of mwai.model (or a mapping) as a fresh dict of its fields, in order."""
    if is_dataclass(row) and not isinstance(row, type):
        return asdict(row)
    return dict(row)


def with_iso(row: Row) -> dict[str, Any]:
    """A row for --json: every epoch time gets an ISO twin (``created_at_iso``)."""
    document = as_dict(row)
    for name in _TIME_FIELDS:
        if name in document:
            document[f"{name}_iso"] = iso_utc(document[name])
    if "meta_json" in document:
        document["meta"] = json_or_text(document.pop("meta_json"))
    return document


def json_or_text(text: Any) -> Any:
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return text


# What the operator commands use: a bad value of any other setting is only a
# warning for them (the service refuses it), so a typo cannot lock the operator out.
OPS_USES = frozenset({"MWAI_DB", "MWAI_SYNCHRONOUS", "MWAI_DB_BUSY_TIMEOUT_MS",
                      "MWAI_HEARTBEAT_S", "MWAI_LEASE_S", "MWAI_STUCK_AFTER_S",
                      "MWAI_QUEUE_AGE_ALERT_S", "MWAI_MAX_ATTEMPTS"})
ALERT_USES = OPS_USES | {s.name for s in SETTINGS if s.group == "alerts"}


def ops_settings(args: argparse.Namespace) -> Settings:
    """Settings for commands that never process runs: Jira/LLM settings are not required."""
    uses = ALERT_USES if getattr(args, "command", None) == "alert" else OPS_USES
    return load_settings(args, used=uses)


@contextlib.asynccontextmanager
async def open_store(settings: Settings, readonly: bool) -> AsyncIterator[Store]:
    """The existing database (never created here); read-only views use only a reader.

    Before writing, the file is checked through a read-only connection first:
    opening the writer switches the file to WAL mode, which must never happen
    to a database that turns out not to be mwai's.
    """
    if not readonly:
        probe = Store(settings.db, busy_timeout_ms=settings.db_busy_timeout_ms, readonly=True,
                      create=False)
        await probe.open()
        await probe.close()
    store = Store(settings.db, settings.synchronous, settings.db_busy_timeout_ms,
                  readonly=readonly, create=False)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def run_async(coro: Any) -> int:
    result: int = asyncio.run(coro)
    return result


def fresh_after_s(settings: Settings, now: float) -> float:
    """Heartbeats newer than this mean the process is alive (3 beats or a lease)."""
    return now - max(3 * settings.heartbeat_s, settings.lease_s)


def process_state(process: ProcessRow | None, fresh_after: float) -> tuple[bool, str]:
    """(alive, why) for a registered process; conservative: when in doubt, alive."""
    if process is None:
        return False, "no process record"
    if process.stopped_at is not None:
        return False, "its service stopped"
    if process.heartbeat_at >= fresh_after:
        return True, "heartbeat is fresh"
    if process.hostname == socket.gethostname():
        if pid_alive(int(process.pid)):
            return True, f"pid {process.pid} is still running on this host"
        return False, f"pid {process.pid} is gone"
    return False, "no heartbeat since " + local_time(process.heartbeat_at)


def process_of(locked_by: str) -> str:
    return locked_by.rpartition("/")[0]


# ------------------------------------------------------------------ run rows and sizes


def run_row(row: Row, now: float) -> dict[str, Any]:
    """A run for listings, with ``duration_s``: until it finished, or until now."""
    document = with_iso(row)
    end = document.get("finished_at") or document["updated_at"]
    if document["status"] not in FINISHED:
        end = now
    document["duration_s"] = round(max(0.0, end - document["created_at"]), 3)
    return document


def database_bytes(path: str) -> int:
    """The database with its WAL: what `du` would count."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.stat(path + suffix).st_size
    return total


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
