"""POST /webhook/jira against the real app and a real SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import sqlite3
from typing import Any

import orjson
import pytest

from mwai.server.app import create_app
from tests.conftest import SECRET, automation_payload, secret_headers
from tests.integration.helpers import GateProcessor, count, db_rows, wait_for

NATIVE = {
    "timestamp": 1732800000000,
    "webhookEvent": "jira:issue_updated",
    "issue_event_type_name": "issue_assigned",
    "user": {"accountId": "557058:human", "displayName": "Hu Man"},
    "issue": {
        "id": "10001",
        "key": "PROJ-42",
        "fields": {
            "summary": "Add a health page",
            "status": {"name": "Backlog", "id": "10000"},
            "issuetype": {"name": "Story", "subtask": False},
            "assignee": {"accountId": "ai-account"},
            "project": {"key": "PROJ"},
        },
    },
    "changelog": {"items": [{"field": "assignee", "to": "ai-account"}]},
}


@pytest.fixture
async def client(aiohttp_client: Any, settings: Any) -> Any:
    return await aiohttp_client(create_app(settings))


async def post(client: Any, payload: Any, headers: dict[str, str] | None = None,
               raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    body = raw if raw is not None else orjson.dumps(payload)
    response = await client.post("/webhook/jira", data=body,
                                 headers=headers if headers is not None else secret_headers())
    document = await response.json(content_type=None)
    return response.status, document


async def test_automation_payload_is_queued_and_processed(client: Any, settings: Any) -> None:
    status, document = await post(client, automation_payload("TEST-123"))
    assert status == 200
    assert document == {"ok": True, "run_id": 1, "deduplicated": False, "coalesced": False}
    await wait_for(lambda: db_rows(settings.db, "SELECT status FROM runs")[0][0] == "completed",
                   what="run completed")
    messages = [m for (m,) in db_rows(settings.db,
                                      "SELECT message FROM events WHERE run_id=1 ORDER BY id")]
    assert messages[:3] == ["Webhook received", "Run enqueued", "Run claimed"]
    assert messages[-1] == "Run completed"
    payload = db_rows(settings.db, "SELECT payload_json FROM runs WHERE id=1")[0][0]
    assert orjson.loads(payload)["issue_key"] == "TEST-123"


async def test_camel_case_issue_key_is_accepted(client: Any, settings: Any) -> None:
    status, document = await post(client, {"issueKey": "ABC-7", "event_type": "x"})
    assert status == 200 and document["run_id"] == 1
    assert db_rows(settings.db, "SELECT issue_key FROM runs") == [("ABC-7",)]


async def test_native_jira_webhook_with_hmac_signature(client: Any, settings: Any) -> None:
    body = orjson.dumps(NATIVE)
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, document = await post(client, None, raw=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature": signature,
        "X-Atlassian-Webhook-Identifier": "delivery-1"})
    assert status == 200 and document["ok"] is True
    rows = db_rows(settings.db, "SELECT issue_key, delivery_id FROM runs")
    assert rows == [("PROJ-42", "delivery-1")]
    meta = db_rows(settings.db, "SELECT meta_json FROM events WHERE message='Webhook received'")
    assert orjson.loads(meta[0][0])["event_type"] == "jira:issue_updated"


async def test_native_comment_created_webhook(client: Any, settings: Any) -> None:
    payload = {"webhookEvent": "comment_created", "comment": {"id": "1", "body": "go"},
               "issue": {"key": "PROJ-43", "fields": {"status": {"name": "In Progress"}}}}
    status, _ = await post(client, payload)
    assert status == 200
    assert db_rows(settings.db, "SELECT issue_key FROM runs") == [("PROJ-43",)]


BAD_REQUESTS = [
    # (description, headers, body, expected status, error fragment)
    ("no secret", {"Content-Type": "application/json"}, b'{"issue_key": "A-1"}', 401,
     "missing credentials"),
    ("wrong secret", {"Content-Type": "application/json",
                      "X-Moveware-Webhook-Secret": SECRET[:-1] + "x"},
     b'{"issue_key": "A-1"}', 401, "does not match"),
    ("secret of other length", {"Content-Type": "application/json",
                                "X-Moveware-Webhook-Secret": SECRET + "extra"},
     b'{"issue_key": "A-1"}', 401, "does not match"),
    ("bad signature", {"Content-Type": "application/json", "X-Hub-Signature": "sha256=00"},
     b'{"issue_key": "A-1"}', 401, "signature"),
    ("not json content type", {**secret_headers(), "Content-Type": "text/plain"},
     b'{"issue_key": "A-1"}', 415, "application/json"),
    ("malformed json", secret_headers(), b'{"issue_key": ', 400, "not valid JSON"),
    ("json array", secret_headers(), b'["A-1"]', 400, "JSON object"),
    ("no issue key", secret_headers(), b'{"event_type": "issue_assigned"}', 400,
     "no issue key"),
    ("invalid issue key", secret_headers(), b'{"issue_key": "not a key"}', 422,
     "not a Jira issue key"),
    ("lowercase key", secret_headers(), b'{"issue_key": "abc-1"}', 422, "PROJ-123"),
    ("numeric key", secret_headers(), b'{"issue_key": 123}', 422, "must be a string"),
    ("wrong type field", secret_headers(), b'{"issue_key": "A-1", "status": 5}', 422,
     "'status' must be a string"),
    ("native without key", secret_headers(), b'{"webhookEvent": "jira:issue_updated"}', 400,
     "issue.key"),
    ("bad delivery id", {**secret_headers(), "X-Atlassian-Webhook-Identifier": "x" * 500},
     b'{"issue_key": "A-1"}', 400, "X-Atlassian-Webhook-Identifier"),
]


@pytest.mark.parametrize(("label", "headers", "body", "status", "fragment"), BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
async def test_rejected_requests_write_nothing(
    client: Any, settings: Any, label: str, headers: dict[str, str], body: bytes, status: int,
    fragment: str,
) -> None:
    got, document = await post(client, None, headers=headers, raw=body)
    assert got == status, document
    assert document["ok"] is False
    assert fragment in document["error"]
    assert count(settings.db, "runs") == 0
    assert count(settings.db, "events") == 0
    assert count(settings.db, "deliveries") == 0


async def test_body_over_the_limit_is_413(aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(max_body_bytes=2048)
    client = await aiohttp_client(create_app(settings))
    body = orjson.dumps(automation_payload("BIG-1", filler="x" * 4096))
    status, document = await post(client, None, raw=body)
    assert status == 413 and "over the limit" in document["error"]
    assert count(settings.db, "runs") == 0


async def test_unknown_route_is_json_404(client: Any) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    assert (await response.json())["ok"] is False


async def test_redelivery_returns_the_same_run_and_creates_nothing(
    client: Any, settings: Any
) -> None:
    headers = secret_headers(**{"X-Atlassian-Webhook-Identifier": "abc-123"})
    first_status, first = await post(client, automation_payload("DUP-1"), headers)
    await wait_for(lambda: count(settings.db, "events") >= 4, what="run processed")
    events_before = count(settings.db, "events")
    second_status, second = await post(client, automation_payload("DUP-1"), headers)
    assert first_status == second_status == 200
    assert second["run_id"] == first["run_id"]
    assert second["deduplicated"] is True and first["deduplicated"] is False
    assert count(settings.db, "runs") == 1
    await asyncio.sleep(0.2)
    assert count(settings.db, "events") == events_before


async def test_ten_triggers_for_a_queued_issue_coalesce(aiohttp_client: Any,
                                                         settings: Any) -> None:
    gate = GateProcessor()
    client = await aiohttp_client(create_app(settings, processor=gate))
    # The first run starts and blocks, so the next triggers find a queued run.
    _, first = await post(client, automation_payload("CO-1"))
    await wait_for(lambda: gate.started == [first["run_id"]], what="first run started")
    answers = [await post(client, automation_payload("CO-1", status=f"S{i}"))
               for i in range(10)]
    run_ids = {doc["run_id"] for _, doc in answers}
    assert len(run_ids) == 1 and first["run_id"] not in run_ids
    assert [doc["coalesced"] for _, doc in answers] == [False] + [True] * 9
    (second_id,) = run_ids
    rows = db_rows(settings.db, "SELECT status, duplicates, payload_json FROM runs WHERE id=?",
                   (second_id,))
    status, duplicates, payload = rows[0]
    assert status == "queued" and duplicates == 9
    assert orjson.loads(payload)["status"] == "S9"  # the latest payload wins
    coalesced = db_rows(settings.db, "SELECT count(*) FROM events WHERE run_id=? AND "
                        "message LIKE 'Duplicate trigger%'", (second_id,))[0][0]
    assert coalesced == 9
    gate.gate.set()
    await wait_for(lambda: len(gate.finished) == 2, what="both runs done")
    assert count(settings.db, "runs") == 2


async def test_locked_database_answers_503_and_recovers(aiohttp_client: Any,
                                                         settings_factory: Any) -> None:
    settings = settings_factory(db_busy_timeout_ms=100)
    client = await aiohttp_client(create_app(settings))
    blocker = sqlite3.connect(settings.db, isolation_level=None, timeout=0.1)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        response = await client.post("/webhook/jira", data=orjson.dumps(
            automation_payload("LOCK-1")), headers=secret_headers())
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["ok"] is False
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert count(settings.db, "runs") == 0
    status, document = await post(client, automation_payload("LOCK-1"))
    assert status == 200 and document["ok"] is True


async def test_request_id_is_echoed_and_stored(client: Any, settings: Any) -> None:
    response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload("RQ-1")),
                                 headers=secret_headers(**{"X-Request-Id": "req-42"}))
    assert response.status == 200
    assert response.headers["X-Request-Id"] == "req-42"
    assert db_rows(settings.db, "SELECT request_id FROM runs") == [("req-42",)]


NEW_REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # docs/logging.md: a new 32-hex-digit id


@pytest.mark.parametrize("given", [
    None, "", "has space", "a" * 129, "semi;colon", "slash/id", "<script>", "quote\"d"],
    ids=["absent", "empty", "space", "129 chars", "semicolon", "slash", "markup", "quote"])
async def test_a_missing_or_invalid_request_id_is_replaced_by_a_new_one(
        client: Any, settings: Any, given: str | None) -> None:
    extra = {} if given is None else {"X-Request-Id": given}
    response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload("RQ-2")),
                                 headers=secret_headers(**extra))
    assert response.status == 200
    request_id = response.headers["X-Request-Id"]
    assert NEW_REQUEST_ID.fullmatch(request_id), request_id
    assert db_rows(settings.db, "SELECT request_id FROM runs") == [(request_id,)]
    meta = db_rows(settings.db, "SELECT meta_json FROM events WHERE message='Webhook received'")
    assert orjson.loads(meta[0][0])["request_id"] == request_id


async def test_new_request_ids_differ_and_every_answer_carries_one(client: Any) -> None:
    answers = [await client.post("/webhook/jira", data=b"{}", headers=secret_headers()),
               await client.post("/webhook/jira", data=b"{}",
                                 headers={"Content-Type": "application/json"}),
               await client.get("/health"), await client.get("/nope")]
    assert [a.status for a in answers] == [400, 401, 200, 404]
    ids = [a.headers["X-Request-Id"] for a in answers]
    assert all(NEW_REQUEST_ID.fullmatch(request_id) for request_id in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("given", ["a" * 128, "A-z.0_9:x", "1"],
                         ids=["128 chars", "every kind of character", "one character"])
async def test_a_valid_request_id_is_kept(client: Any, settings: Any, given: str) -> None:
    response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload("RQ-3")),
                                 headers=secret_headers(**{"X-Request-Id": given}))
    assert response.status == 200
    assert response.headers["X-Request-Id"] == given
    assert db_rows(settings.db, "SELECT request_id FROM runs") == [(given,)]
    rejected = await client.post("/webhook/jira", data=b"[]",
                                 headers=secret_headers(**{"X-Request-Id": given}))
    assert rejected.status == 400 and rejected.headers["X-Request-Id"] == given
