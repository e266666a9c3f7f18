"""GET /openapi.json describes exactly what the app serves and answers.

* the document's (method, path) pairs are the app's routes, no more, no less;
* every status the webhook code can answer is documented, and nothing else is;
* real answers of each documented status validate against the document's schemas.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest

import mwai.server.app
import mwai.server.webhook
from mwai.server import openapi
from mwai.server.app import create_app
from tests.conftest import SECRET, automation_payload, secret_headers

MWAI_DIR = Path(mwai.server.app.__file__).parent


def app_routes(settings: Any) -> set[tuple[str, str]]:
    """The API routes: every route but the dashboard's HTML pages for people."""
    app = create_app(settings)
    return {(route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None
            and not route.resource.canonical.startswith(openapi.UI_PATH_PREFIXES)}


def test_only_the_dashboard_is_left_out_of_the_document(settings: Any) -> None:
    app = create_app(settings)
    left_out = {route.resource.canonical for route in app.router.routes()
                if route.resource is not None
                and route.resource.canonical.startswith(openapi.UI_PATH_PREFIXES)}
    assert {"/status", "/dashboard", "/dashboard/", "/dashboard/runs"} <= left_out
    assert "/dashboard/" in openapi.document()["info"]["description"]


def documented_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, item in openapi.document()["paths"].items()
            for method in item}


def test_document_lists_exactly_the_app_routes(settings: Any) -> None:
    assert documented_routes() == app_routes(settings)


def test_document_is_openapi_3_1_with_resolvable_refs() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1")
    text = orjson.dumps(document).decode()
    for ref in set(re.findall(r'"\$ref":"([^"]+)"', text)):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # KeyError: a dangling $ref
        assert node


def statuses_in_code() -> set[str]:
    """Statuses the webhook path can answer, read from the code that answers them."""
    source = (MWAI_DIR / "app.py").read_text() + (MWAI_DIR / "webhook.py").read_text()
    found = set(re.findall(r"WebhookError\(\s*(\d{3})", source))
    found |= set(re.findall(r"error_response\(\s*(\d{3})", source))
    found.discard("500")  # the catch-all of a bug: never part of the contract
    return found | {"200"}


def test_every_webhook_status_in_the_code_is_documented_and_no_other() -> None:
    documented = set(openapi.document()["paths"]["/webhook/jira"]["post"]["responses"])
    assert statuses_in_code() == documented
    assert documented == {"200", "400", "401", "408", "413", "415", "422", "429",
                          "503"}


def validator(ref: str) -> Any:
    document = openapi.document()
    return jsonschema_rs.validator_for({"$ref": ref, "components": document["components"]})


def assert_matches(path: str, method: str, status: int, headers: Any, body: bytes) -> None:
    operation = openapi.document()["paths"][path][method]
    answer = operation["responses"].get(str(status))
    assert answer is not None, f"{method.upper()} {path} answered undocumented {status}"
    media_type = headers["Content-Type"].split(";")[0]
    schema = answer["content"][media_type]["schema"]
    if "$ref" in schema:
        validator(schema["$ref"]).validate(orjson.loads(body))
    for name in answer.get("headers", {}):
        assert name in headers, f"{status} of {path} lacks documented header {name}"
    if "Retry-After" in answer.get("headers", {}):
        assert re.fullmatch(r"[0-9]+", headers["Retry-After"])


@pytest.fixture
async def client(aiohttp_client: Any, settings_factory: Any) -> Any:
    settings = settings_factory(max_body_bytes=2048, rate_limit_per_s=0.001,
                                rate_limit_burst=30)
    return await aiohttp_client(create_app(settings))


WEBHOOK_CASES = [
    (200, secret_headers(), orjson.dumps(automation_payload())),
    (400, secret_headers(), b"{"),
    (401, {"Content-Type": "application/json"}, orjson.dumps(automation_payload())),
    (413, secret_headers(), b'{"issue_key": "' + b"A" * 4096 + b'"}'),
    (415, {**secret_headers(), "Content-Type": "text/plain"}, b"{}"),
    (422, secret_headers(), b'{"issue_key": "nope"}'),
]


async def test_each_webhook_status_matches_the_document(client: Any, settings: Any) -> None:
    for status, headers, body in WEBHOOK_CASES:
        response = await client.post("/webhook/jira", data=body, headers=headers)
        raw = await response.read()
        assert response.status == status, raw
        assert_matches("/webhook/jira", "post", status, response.headers, raw)


async def test_429_matches_the_document(aiohttp_client: Any, settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(rate_limit_per_s=0.001,
                                                              rate_limit_burst=1)))
    first = await client.post("/webhook/jira", data=b"{", headers=secret_headers())
    assert first.status == 400
    response = await client.post("/webhook/jira", data=b"{", headers=secret_headers())
    assert response.status == 429
    assert_matches("/webhook/jira", "post", 429, response.headers, await response.read())


async def test_503_matches_the_document(aiohttp_client: Any, settings_factory: Any,
                                        tmp_path: Path) -> None:
    settings = settings_factory(db_busy_timeout_ms=50)
    client = await aiohttp_client(create_app(settings))
    blocker = sqlite3.connect(settings.db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload()),
                                     headers=secret_headers())
        raw = await response.read()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert response.status == 503, raw
    assert_matches("/webhook/jira", "post", 503, response.headers, raw)


async def test_health_metrics_and_document_answers_match(client: Any) -> None:
    for path in ("/health", "/health/detailed", "/metrics", openapi.OPENAPI_PATH):
        response = await client.get(path)
        raw = await response.read()
        assert_matches(path, "get", response.status, response.headers, raw)
    served = await (await client.get(openapi.OPENAPI_PATH)).json()
    assert served == orjson.loads(orjson.dumps(openapi.document()))


async def test_metrics_401_matches_the_document(aiohttp_client: Any,
                                                settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(metrics_token="tok-123")))
    response = await client.get("/metrics")
    assert response.status == 401
    assert_matches("/metrics", "get", 401, response.headers, await response.read())
    assert response.headers.get("WWW-Authenticate") == "Bearer"


async def test_wrong_method_is_a_json_405_naming_the_allowed_method(client: Any) -> None:
    response = await client.get("/webhook/jira")
    assert response.status == 405
    assert (await response.json())["ok"] is False
    assert response.headers.get("Allow") == "POST"


def test_secret_is_not_in_the_document() -> None:
    assert SECRET not in orjson.dumps(openapi.document()).decode()
    assert mwai.server.webhook.SECRET_HEADER in orjson.dumps(openapi.document()).decode()


async def test_408_for_a_body_that_stalls_matches_the_document(
        aiohttp_client: Any, settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(client_timeout_s=0.3)))

    async def stalling_body() -> Any:
        yield b'{"issue_key": '
        await asyncio.sleep(3)
        yield b'"A-1"}'

    response = await client.post("/webhook/jira", data=stalling_body(),
                                 headers=secret_headers())
    raw = await response.read()
    assert response.status == 408, raw
    assert b"MWAI_CLIENT_TIMEOUT_S" in raw
    assert_matches("/webhook/jira", "post", 408, response.headers, raw)


def test_every_real_webhook_body_is_described_by_the_document() -> None:
    """The request schema of POST /webhook/jira admits each real-shaped body mwai accepts
    (tests/contracts/jira_webhooks): the document describes what Jira really sends."""
    document = openapi.document()
    schema = document["paths"]["/webhook/jira"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    check = jsonschema_rs.validator_for({**schema, "components": document["components"]})
    bodies = sorted((Path(__file__).parents[1] / "contracts" / "jira_webhooks").glob("*.json"))
    assert len(bodies) >= 7
    for path in bodies:
        errors = [error.message for error in check.iter_errors(orjson.loads(path.read_bytes()))]
        assert errors == [], path.name
