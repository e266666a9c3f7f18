"""What the operator commands share: durations, times, the settings and the store.

The commands themselves: ``mwai runs | show | stats | monitor | health``
(read-only views, mwai/cli/inspect/), ``mwai requeue | cancel | unlock | pause |
resume`` (actions, mwai/cli/actions.py), ``mwai prune`` (mwai/cli/prune.py) and
``mwai check`` (mwai/cli/check.py).

Human output shows local time with its zone (``--utc``: UTC); ``--json`` prints
one document with epoch seconds and ISO-8601 (UTC) times. Durations of runs are
the three of mwai.model.run_times (queue wait, run time, total) everywhere.
Colour and progress only when stdout is a terminal (NO_COLOR turns colour off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

import orjson

from mwai import advice, sources
from mwai.errors import UsageError
from mwai.model import FINISHED, run_times
from mwai.queue import health
from mwai.queue.store import Store
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


def print_json_line(document: Any) -> None:
    """One compact JSON document on one line (NDJSON), flushed at once."""
    sys.stdout.write(orjson.dumps(document, default=str).decode() + "\n")
    sys.stdout.flush()


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


# The zone human output is shown in: None is the local zone (`--utc` sets UTC).
_ZONE: list[dt.tzinfo | None] = [None]


def show_times_in_utc(utc: bool) -> None:
    """`--utc`: every human time of this command in UTC (set once by mwai.cli.main)."""
    _ZONE[0] = dt.UTC if utc else None


def local_time(epoch_s: float | None, with_ms: bool = False) -> str:
    """A time for people: local (or UTC with --utc), always with its zone shown."""
    if epoch_s is None:
        return "-"
    moment = dt.datetime.fromtimestamp(epoch_s, tz=_ZONE[0]).astimezone(_ZONE[0])
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if with_ms:
        text = f"{text}.{moment.microsecond // 1000:03d}"
    return f"{text} {moment.strftime('%Z') or moment.strftime('%z')}"


def iso_utc(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_run_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"RUN_ID {text!r} is not a run id: give the number shown by `mwai runs`")
    return int(text)


def operator_name(args: argparse.Namespace) -> str:
    """``--by NAME``, or the login name: who did an operator action (in its events)."""
    name = getattr(args, "by", None)
    if name is None:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry, no LOGNAME: a container's uid
            name = f"uid {os.getuid()}"
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise UsageError("--by must be a name of 1 to 64 printable characters")
    return name


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
    """Heartbeats newer than this mean the process is alive (mwai.queue.health's rule)."""
    return health.fresh_after_s(settings.heartbeat_s, settings.lease_s, now)


def process_of(locked_by: str) -> str:
    return locked_by.rpartition("/")[0]


# ------------------------------------------------------------------ run rows and sizes


def run_row(row: Row, now: float) -> dict[str, Any]:
    """A run for --json, the same fields in every command: its columns, *_iso twins,
    and the three durations (queue_wait_s, run_time_s, total_s; mwai.model.run_times),
    until now for a run not finished yet."""
    document = with_iso(row)
    finished_at = document.get("finished_at")
    if finished_at is None and document.get("status") in FINISHED:
        finished_at = document.get("updated_at")  # finished before finished_at was kept
    times = run_times(document["created_at"], document.get("started_at"), finished_at, now)
    document.update(asdict(times))
    if "payload_json" in document:
        document["payload"] = json_or_text(document.pop("payload_json"))
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


# ------------------------------------------------------------------ the terminal


def on_terminal() -> bool:
    """Whether stdout is a terminal (a person reads it, not a pipe or a file)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


_COLOURS = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def colour(text: str, name: str) -> str:
    """``text`` in a colour, only on a terminal and unless NO_COLOR is set
    (https://no-color.org: any non-empty value)."""
    if not on_terminal() or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return text
    return f"\x1b[{_COLOURS[name]}m{text}\x1b[0m"


def terminal_width(default: int = 160) -> int:
    """Columns of the terminal (COLUMNS wins); ``default`` when not on one (a pipe or a
    file: lines are not cut to a screen)."""
    if not on_terminal() and not os.environ.get("COLUMNS"):
        return default
    return max(40, shutil.get_terminal_size((default, 24)).columns)


class Progress:
    """``label: done/total`` rewritten in place on a terminal; silent otherwise (a
    pipe, a file, cron), so only people see it. At most ten updates a second."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.shown = on_terminal()
        self._last_s = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now_s = time.monotonic()
        if self.shown and now_s - self._last_s >= 0.1:
            self._last_s = now_s
            of = f"/{self.total}" if self.total is not None else ""
            sys.stdout.write(f"\r{self.label}: {self.done}{of}\x1b[K")
            sys.stdout.flush()

    def close(self) -> None:
        """Clear the line, so that the result printed next stands alone."""
        if self.shown and self._last_s:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
