"""MWAI_RATE_LIMIT_PER_S against the real app: 429 + Retry-After on the webhook only."""

from __future__ import annotations

from typing import Any

import orjson

from mwai.server.app import create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import count


async def post(client: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/webhook/jira", data=body, headers=headers or secret_headers())


async def test_over_the_limit_is_429_with_retry_after_and_writes_nothing(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(rate_limit_per_s=0.01, rate_limit_burst=2)
    client = await aiohttp_client(create_app(settings))
    for number in (1, 2):
        response = await post(client, orjson.dumps(automation_payload(f"RL-{number}")))
        assert response.status == 200
    response = await post(client, orjson.dumps(automation_payload("RL-3")))
    assert response.status == 429
    document = await response.json()
    assert document["ok"] is False and "MWAI_RATE_LIMIT_PER_S" in document["error"]
    assert int(response.headers["Retry-After"]) >= 1
    assert count(settings.db, "runs") == 2
    # Only the webhook is limited: health and metrics still answer.
    assert (await client.get("/health")).status == 200
    assert (await client.get("/metrics")).status == 200


async def test_the_limit_applies_before_the_body_and_credentials_are_looked_at(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(rate_limit_per_s=0.01, rate_limit_burst=1,
                                max_body_bytes=1024)
    client = await aiohttp_client(create_app(settings))
    assert (await post(client, b"{}", {"Content-Type": "application/json"})).status == 401
    # Wrong secret and a body over the limit: the limiter answers first (no secret
    # guessing at full speed, no body read).
    response = await post(client, b"x" * 100_000, {"Content-Type": "application/json",
                                                   "X-Moveware-Webhook-Secret": "guess"})
    assert response.status == 429


async def test_zero_means_no_limit(aiohttp_client: Any, settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(rate_limit_per_s=0,
                                                              rate_limit_burst=1)))
    for number in range(30):
        response = await post(client, orjson.dumps(automation_payload(f"NL-{number + 1}")))
        assert response.status == 200
