"""Durations of the operator commands (--since, --older-than, --window) and error grouping."""

from __future__ import annotations

import pytest

from mwai.cli.common import format_duration, parse_duration
from mwai.cli.inspect import error_pattern, group_errors
from mwai.errors import UsageError
from mwai.model import ErrorCount


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("10m", 600), ("1h", 3600), ("7d", 604800), ("2w", 1209600),
    ("1h30m", 5400), ("0.5s", 0.5), ("90M", 5400), (" 2d ", 172800), ("0s", 0),
])
def test_durations_with_units_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3x", "", "10", "h", "-1h", "1h-", "1 h", "1.h", "7days"])
def test_malformed_durations_are_refused_with_the_accepted_units(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration(text, "--since")
    message = str(caught.value)
    assert message.startswith(f"--since {text!r} is not a duration")
    assert "30s, 10m, 1h, 7d" in message
    assert "\n" not in message


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.25, "250ms"), (4.21, "4.2s"), (192, "3m 12s"), (3600, "1h"),
    (7500, "2h 5m"), (273600, "3d 4h"), (-3, "0ms"),
])
def test_durations_are_shown_short(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_errors_differing_only_in_numbers_and_ids_group_together() -> None:
    rows = [
        {"last_error": "RuntimeError: simulated failure of FAIL-1 in run 3", "count": 1,
         "last_at": 10.0},
        {"last_error": "RuntimeError: simulated failure of FAIL-2 in run 4", "count": 2,
         "last_at": 20.0},
        {"last_error": "HttpError: jira GET /rest/api/3/issue/X-9 answered 404: gone\ntrace",
         "count": 1, "last_at": 5.0},
    ]
    groups = group_errors([ErrorCount(**row) for row in rows], limit=10)
    assert [(g["pattern"], g["count"]) for g in groups] == [
        ("RuntimeError: simulated failure of FAIL-N in run N", 3),
        ("HttpError: jira GET /rest/api/N/issue/X-N answered N: gone", 1),
    ]
    assert groups[0]["last_at"] == 20.0
    assert error_pattern(None) == "(no error message)"
