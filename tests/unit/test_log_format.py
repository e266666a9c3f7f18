"""The JSON log line: one object per line whatever the fields hold."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pythonjsonlogger.orjson import OrjsonFormatter

from mwai.logs import JsonFormatter, configure_logging, log_context


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    yield stream
    configure_logging("json")


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_the_fixed_fields_then_extra_and_context(lines: io.StringIO) -> None:
    with log_context(run_id=7, issue_key="PROJ-1"):
        logging.getLogger("mwai.test").warning("took %s", "long", extra={"duration_ms": 3.5})
    (record,) = records(lines)
    assert list(record)[:4] == ["timestamp", "level", "logger", "message"]
    assert record["level"] == "WARNING" and record["logger"] == "mwai.test"
    assert record["message"] == "took long" and record["duration_ms"] == 3.5
    assert record["run_id"] == 7 and record["issue_key"] == "PROJ-1"
    assert str(record["timestamp"]).endswith("+00:00")


def test_odd_values_still_give_one_json_line(lines: io.StringIO) -> None:
    log = logging.getLogger("mwai.test")
    log.info("odd", extra={"path": Path("/srv/mwai"), "keys": {1: "one"}, "huge": 2**70})
    log.info("next")
    first, second = records(lines)
    assert first["path"] == "/srv/mwai" and first["huge"] == str(2**70)
    assert first["keys"] in ({"1": "one"}, str({1: "one"}))
    assert second["message"] == "next"


def test_a_traceback_is_one_field_of_the_line(lines: io.StringIO) -> None:
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        logging.getLogger("mwai.test").exception("failed")
    (record,) = records(lines)
    assert record["level"] == "ERROR"
    assert "RuntimeError: disk on fire" in str(record["exc_info"])


def test_a_traceback_comes_after_the_lines_own_fields(lines: io.StringIO) -> None:
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        with log_context(run_id=2):
            logging.getLogger("mwai.test").exception("Run failed", extra={"event": "Run failed"})
    (record,) = records(lines)
    assert list(record) == ["timestamp", "level", "logger", "message", "event", "run_id",
                            "exc_info"]


def test_the_json_formatter_is_python_json_loggers() -> None:
    # The design names python-json-logger; mwai only subclasses its orjson formatter.
    assert isinstance(JsonFormatter(), OrjsonFormatter)
