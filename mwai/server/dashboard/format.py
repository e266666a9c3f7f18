"""How the dashboard writes times, durations, money and JSON: the template filters.

Pure functions; the templates escape whatever they return (autoescape), so a value
from a ticket can never become markup.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import orjson


def utc(ts: float | None) -> str:
    """``2026-12-05 07:14:08 UTC``; an em dash when unknown."""
    if ts is None:
        return "\u2014"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def iso(ts: float | None) -> str:
    """The machine-readable form for <time datetime=...>."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def duration(seconds: float | None) -> str:
    """``850 ms``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``, ``3 d 4 h``."""
    if seconds is None:
        return "\u2014"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    minutes, sec = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def money(usd: float | None) -> str:
    if usd is None:
        return "\u2014"
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def count(value: int | None) -> str:
    return "\u2014" if value is None else f"{value:,}"


def pretty_json(text: str | None) -> str:
    """A meta_json document indented for reading; the raw text when it is not JSON."""
    if not text:
        return ""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if value in ({}, [], None):
        return ""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def safe_url(url: str | None) -> str | None:
    """The URL when it is http(s) (a pull request, a Jira issue); None otherwise, so a
    stored ``javascript:`` URL never becomes a link."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return url


def meta(text: str | None) -> dict[str, Any]:
    """An event's meta_json as a dict (empty when it is not a JSON object)."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


FILTERS = {"utc": utc, "iso": iso, "duration": duration, "money": money, "count": count,
           "pretty_json": pretty_json, "safe_url": safe_url}
