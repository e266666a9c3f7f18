"""Schemathesis against a live `mwai serve`, driven by the service's own /openapi.json.

For every operation, schemathesis generates requests from the document (valid
ones, and ones that break the schema: its default modes) and checks each
answer: never a 5xx, a documented status, the documented content type, headers
and body schema. Bounded: a fixed number of examples per operation.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from tests.acceptance.service import Service
from tests.acceptance.test_serve_core import wait_until_idle
from tests.conftest import SECRET

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
BOUNDED = settings(max_examples=40, deadline=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = Service(tmp_path_factory.mktemp("schemathesis"),
                      MWAI_MAX_BODY_BYTES="8192").start()
    yield running
    wait_until_idle(running.db)
    assert running.stop() == 0
    output = running.output()
    assert SECRET not in output
    assert "Unhandled error" not in output


def operations(service: Service) -> list[Any]:
    """The operations of the document the live service serves."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_the_live_document_has_every_operation(service: Service) -> None:
    names = {f"{op.method.upper()} {op.path}" for op in operations(service)}
    # schemathesis leaves out the document's own URL (/openapi.json); the integration
    # test checks that route against the app.
    assert names == {"POST /webhook/jira", "GET /health", "GET /health/detailed",
                     "GET /metrics"}


# Built per operation and mode inside the test (schemathesis' lazy pytest fixture
# loader does not work with pytest 9), each a bounded hypothesis run.
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_every_answer_matches_the_document(service: Service, mode: GenerationMode) -> None:
    seen: dict[str, set[int]] = {}
    for operation in operations(service):
        name = f"{operation.method.upper()} {operation.path}"
        if mode is GenerationMode.NEGATIVE and name != "POST /webhook/jira":
            continue  # the GET routes take no input that could break the schema

        @BOUNDED
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            response = case.call_and_validate(
                base_url=service.url, headers={"X-Moveware-Webhook-Secret": SECRET},
                checks=CHECKS, timeout=10)
            seen.setdefault(name, set()).add(response.status_code)

        check()
    print(f"statuses seen ({mode.value}):", {k: sorted(v) for k, v in seen.items()})
    if mode is GenerationMode.POSITIVE:
        assert 200 in seen["POST /webhook/jira"]
    else:
        assert seen["POST /webhook/jira"] & {400, 413, 415, 422}


def test_the_valid_webhooks_it_sends_are_stored_and_processed(service: Service) -> None:
    """Self-contained: its own bounded run of valid webhooks; every one answered 200
    is a run in the database, and every such run completes."""
    (webhook,) = [op for op in operations(service)
                  if f"{op.method.upper()} {op.path}" == "POST /webhook/jira"]
    answered: set[int] = set()  # the run ids of the answers 200

    @BOUNDED
    @given(case=webhook.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def send(case: Any) -> None:
        response = case.call(base_url=service.url, headers={"X-Moveware-Webhook-Secret": SECRET},
                             timeout=10)
        if response.status_code == 200:
            answered.add(response.json()["run_id"])

    send()
    assert answered, "no generated webhook was accepted: nothing to check"
    wait_until_idle(service.db)
    conn = sqlite3.connect(Path(service.db))
    try:
        marks = ",".join("?" * len(answered))
        stored = dict(conn.execute(f"SELECT id, status FROM runs WHERE id IN ({marks})",
                                   sorted(answered)))
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    assert integrity == "ok"
    assert stored == dict.fromkeys(answered, "completed")
    status, health = service.get("/health/detailed")
    assert status == 200 and health["status"] == "healthy"
