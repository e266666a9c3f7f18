"""MWAI_RATE_LIMIT_PER_S against the real app: 429 + Retry-After on the webhook only."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from mwai.server.app import create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import count


async def post(client: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/webhook/jira", data=body, headers=headers or secret_headers())


async def scrape(client: Any) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return str(await response.text())


def webhooks(exposition: str, outcome: str, status: int) -> float:
    """mwai_webhooks_received_total{outcome, status} (0 when absent)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if (sample.name == "mwai_webhooks_received_total"
                    and sample.labels == {"outcome": outcome, "status": str(status)}):
                return float(sample.value)
    return 0.0


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


async def raw_request(port: int, head: bytes, deadline_s: float = 10.0
                      ) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Send only ``head`` (request line and headers) and read the answer; the body
    announced in Content-Length is never sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        try:
            async with asyncio.timeout(deadline_s):
                status_line = await reader.readline()
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers["content-length"]))
        except TimeoutError:
            raise AssertionError("no answer while the body was held back: the request "
                                 "waits for its body before the limiter") from None
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, orjson.loads(body)


def webhook_head(announced_bytes: int, **headers: str) -> bytes:
    lines = [b"POST /webhook/jira HTTP/1.1", b"Host: 127.0.0.1",
             f"Content-Length: {announced_bytes}".encode()]
    lines += [f"{name}: {value}".encode() for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_over_the_limit_is_answered_without_waiting_for_the_body(
        aiohttp_server: Any, settings_factory: Any) -> None:
    # A slow body would only end in 408 after an hour: an answer now is the limiter's.
    settings = settings_factory(rate_limit_per_s=0.01, rate_limit_burst=1,
                                client_timeout_s=3600)
    server = await aiohttp_server(create_app(settings))
    head = webhook_head(50_000, **secret_headers())  # under MWAI_MAX_BODY_BYTES (256 KiB)
    async with aiohttp.ClientSession() as session:
        first = await session.post(server.make_url("/webhook/jira"),
                                   data=orjson.dumps(automation_payload("RB-1")),
                                   headers=secret_headers())
        assert first.status == 200
    status, headers, document = await raw_request(server.port, head)
    assert status == 429, document
    assert int(headers["retry-after"]) >= 1
    assert "MWAI_RATE_LIMIT_PER_S" in document["error"]
    assert count(settings.db, "runs") == 1


async def test_over_the_limit_wrong_credentials_get_429_and_no_auth_failure(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(rate_limit_per_s=0.01, rate_limit_burst=1)
    client = await aiohttp_client(create_app(settings))
    wrong_secret = {"Content-Type": "application/json", "X-Moveware-Webhook-Secret": "guess"}
    body = orjson.dumps(automation_payload("RC-1"))
    assert (await post(client, body, wrong_secret)).status == 401  # takes the one token
    before = await scrape(client)
    assert webhooks(before, "rejected", 401) == 1
    wrong_signature = {"Content-Type": "application/json", "X-Hub-Signature": "sha256=00"}
    for headers in (wrong_secret, wrong_signature, {"Content-Type": "application/json"}):
        response = await post(client, body, headers)
        assert response.status == 429, await response.text()
        assert "WWW-Authenticate" not in response.headers
    after = await scrape(client)
    # No credential was judged: not one more authentication failure, three 429s.
    assert webhooks(after, "rejected", 401) == 1
    assert webhooks(after, "rejected", 429) == 3
    assert count(settings.db, "runs") == 0


async def test_x_forwarded_for_does_not_open_a_new_bucket(aiohttp_client: Any,
                                                          settings_factory: Any) -> None:
    # mwai keys on the TCP peer: a client that forges a new source address per
    # request (docs/security.md) stays in its one bucket. No setting trusts a proxy
    # header; behind a proxy the proxy limits the rate.
    settings = settings_factory(rate_limit_per_s=0.01, rate_limit_burst=2)
    client = await aiohttp_client(create_app(settings))
    statuses = []
    for number in range(1, 5):
        forged = secret_headers(**{"X-Forwarded-For": f"203.0.113.{number}",
                                   "X-Real-IP": f"203.0.113.{number}",
                                   "Forwarded": f"for=203.0.113.{number}"})
        response = await post(client, orjson.dumps(automation_payload(f"XF-{number}")),
                              forged)
        statuses.append(response.status)
    assert statuses == [200, 200, 429, 429]
    assert count(settings.db, "runs") == 2


async def test_zero_means_no_limit(aiohttp_client: Any, settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(rate_limit_per_s=0,
                                                              rate_limit_burst=1)))
    for number in range(30):
        response = await post(client, orjson.dumps(automation_payload(f"NL-{number + 1}")))
        assert response.status == 200
