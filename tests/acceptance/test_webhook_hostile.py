"""Property-based tests of POST /webhook/jira against a live `mwai serve`.

Whatever a client sends, the answer is a JSON 4xx (never 5xx, never a hang),
a rejected request writes nothing, and the service stays healthy.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mwai.server.webhook import MAX_DEPTH
from tests.acceptance.service import Service
from tests.acceptance.test_serve_core import wait_until_idle
from tests.conftest import SECRET

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("hostile")
    running = Service(tmp_path, MWAI_MAX_BODY_BYTES="4096").start()
    yield running
    assert running.stop() == 0
    assert SECRET not in running.output()


def counts(db: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(str(db))
    try:
        return tuple(conn.execute(  # type: ignore[return-value]
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events), "
            "(SELECT count(*) FROM deliveries)").fetchone())
    finally:
        conn.close()


def send(service: Service, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
    try:
        conn.putrequest("POST", "/webhook/jira")
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        raw = answer.read()
        assert answer.getheader("Content-Type", "").startswith("application/json"), raw[:200]
        return answer.status, json.loads(raw)
    finally:
        conn.close()


def settled_counts(db: Path) -> tuple[int, int, int]:
    """Counts once earlier accepted runs are done (their workers write events)."""
    wait_until_idle(db)
    return counts(db)


def assert_rejected(service: Service, body: bytes, headers: list[tuple[str, str]]) -> None:
    before = settled_counts(service.db)
    status, document = send(service, body, headers)
    assert 400 <= status < 500, (status, document)
    assert document["ok"] is False and document["error"]
    assert counts(service.db) == before


JSON_HEADERS = [("Content-Type", "application/json"), ("X-Moveware-Webhook-Secret", SECRET)]


@FUZZ
@given(body=st.binary(max_size=2048))
def test_arbitrary_bytes(service: Service, body: bytes) -> None:
    before = settled_counts(service.db)
    status, document = send(service, body, JSON_HEADERS)
    if status == 200:  # only if the bytes happen to be a valid webhook
        assert json.loads(body)
        return
    assert 400 <= status < 500, document
    assert counts(service.db) == before


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=20)


@FUZZ
@given(fields=st.fixed_dictionaries({}, optional={
    "event_type": json_values, "issue_type": json_values, "status": json_values,
    "assignee_account_id": json_values, "parent_key": json_values,
    "project_key": json_values}),
    key=json_values.filter(lambda v: not isinstance(v, str)))
def test_wrong_types_for_every_field(service: Service, fields: dict[str, Any], key: Any) -> None:
    body = json.dumps({"issue_key": key, **fields}).encode()
    assert_rejected(service, body, JSON_HEADERS)


@FUZZ
@given(key=st.text(min_size=1, max_size=80).filter(
    lambda k: not k.isascii() or not k.isprintable() or " " in k or "-" not in k))
def test_unicode_and_control_characters_in_issue_keys(service: Service, key: str) -> None:
    body = json.dumps({"issue_key": key, "event_type": "x"}).encode()
    assert_rejected(service, body, JSON_HEADERS)


@FUZZ
@given(data=st.data())
def test_secrets_that_differ_in_one_byte_or_length(service: Service, data: Any) -> None:
    choice = data.draw(st.sampled_from(["flip", "shorter", "longer", "empty"]))
    if choice == "flip":
        index = data.draw(st.integers(0, len(SECRET) - 1))
        wrong = SECRET[:index] + chr((ord(SECRET[index]) + 1) % 126 or 33) + SECRET[index + 1:]
    elif choice == "shorter":
        wrong = SECRET[: data.draw(st.integers(0, len(SECRET) - 1))]
    elif choice == "longer":
        wrong = SECRET + data.draw(st.text(alphabet="abcxyz019", min_size=1, max_size=8))
    else:
        wrong = ""
    body = json.dumps({"issue_key": "SEC-1"}).encode()
    assert_rejected(service, body, [("Content-Type", "application/json"),
                                    ("X-Moveware-Webhook-Secret", wrong)])


def nested(levels: int, kind: str = "list") -> bytes:
    """A valid webhook whose document is ``levels`` deep (the object itself is level 1)."""
    if kind == "list":
        inner = b"[" * (levels - 1) + b"]" * (levels - 1)
    else:
        inner = b'{"a": ' * (levels - 2) + b"{}" + b"}" * (levels - 2)
    return b'{"issue_key": "NEST-1", "x": ' + inner + b"}"


def is_valid_json(body: bytes) -> bool:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))  # the json module recurses per level
    try:
        json.loads(body)
    except ValueError:
        return False
    finally:
        sys.setrecursionlimit(limit)
    return True


def assert_too_deep(service: Service, body: bytes) -> None:
    assert is_valid_json(body)  # refused for its depth, not as malformed
    before = settled_counts(service.db)
    status, document = send(service, body, JSON_HEADERS)
    assert (status, document) == (400, {
        "ok": False, "error": f"body is nested deeper than {MAX_DEPTH} levels"})
    assert counts(service.db) == before


def test_json_nested_deeper_than_the_limit_is_refused_and_stores_nothing(
        service: Service) -> None:
    assert_too_deep(service, nested(MAX_DEPTH + 1))
    assert_too_deep(service, nested(MAX_DEPTH + 1, "object"))
    # Past orjson's own limit (1024) too: still "too deep", never "not valid JSON".
    assert_too_deep(service, nested(2000))
    assert len(nested(2000)) < 4096  # under MWAI_MAX_BODY_BYTES: the depth is what fails


def test_json_nested_exactly_to_the_limit_is_accepted(service: Service) -> None:
    before = settled_counts(service.db)
    for kind in ("list", "object"):
        status, document = send(service, nested(MAX_DEPTH, kind), JSON_HEADERS)
        assert status == 200 and document["ok"] is True, (kind, document)
    # Both deliveries name NEST-1: the second joins the first run or queues the next.
    assert counts(service.db)[0] in (before[0] + 1, before[0] + 2)


def test_huge_json_is_refused(service: Service) -> None:
    huge = json.dumps({"issue_key": "HUGE-1", "x": "y" * 10_000}).encode()
    assert_rejected(service, huge, JSON_HEADERS)


def test_duplicate_json_keys_take_the_last_value(service: Service) -> None:
    before = settled_counts(service.db)
    status, document = send(service, b'{"issue_key": "bad key", "issue_key": "DUPK-1"}',
                            JSON_HEADERS)
    assert status == 200 and document["ok"] is True
    assert counts(service.db)[0] == before[0] + 1


def test_header_names_are_case_insensitive(service: Service) -> None:
    status, _ = send(service, b'{"issue_key": "CASE-1"}',
                     [("content-TYPE", "application/json"),
                      ("x-moveware-WEBHOOK-secret", SECRET)])
    assert status == 200


def test_repeated_secret_headers_are_refused(service: Service) -> None:
    assert_rejected(service, b'{"issue_key": "REP-1"}', [
        ("Content-Type", "application/json"), ("X-Moveware-Webhook-Secret", "wrong"),
        ("X-Moveware-Webhook-Secret", SECRET)])
    assert_rejected(service, b'{"issue_key": "REP-1"}', [
        ("Content-Type", "application/json"), ("X-Moveware-Webhook-Secret", SECRET),
        ("X-Moveware-Webhook-Secret", SECRET)])


def test_service_is_still_healthy(service: Service) -> None:
    status, report = service.get("/health/detailed")
    assert status == 200 and report["status"] == "healthy"
