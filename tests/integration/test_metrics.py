"""GET /metrics after a known sequence of webhooks and runs: exact counters and gauges."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from mwai.clients.http import ApiClient, new_session
from mwai.errors import TransientError
from mwai.queue.processor import RunContext
from mwai.server.app import create_app
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import GateProcessor, db_rows, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: Any, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await response.text())


class KnownProcessor:
    """What each issue's run does, so the expected metrics are known exactly."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.retried: set[str] = set()

    async def process(self, ctx: RunContext) -> None:
        key = ctx.run.issue_key
        if key == "OK-1":
            await ctx.record(action="plan")
            await ctx.add_usage(0.25, 60, 20)
            await ctx.add_usage(0.25, 40, None)  # spent twice in an attempt: both count
            async with new_session() as session:
                # No observer given: the app's metrics count it anyway.
                await ApiClient("fakejira", self.api_url, session).request("GET", "/ok")
            await ctx.enqueue("FOLLOW-1", orjson.dumps({"issue_key": "FOLLOW-1"}).decode(),
                              "followup")
        elif key == "BAD-1":
            await ctx.record(action="execute")
            raise RuntimeError("the agent crashed")
        elif key == "RETRY-1":
            await ctx.record(action="start")
            if key not in self.retried:
                self.retried.add(key)
                raise TransientError("jira answered 503")

    async def close(self) -> None:
        return None


async def fake_api(aiohttp_server: Any) -> str:
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/ok", ok)
    server = await aiohttp_server(app)
    return str(server.make_url(""))


def all_settled(db: str, runs: int) -> bool:
    rows = db_rows(db, "SELECT status FROM runs")
    return len(rows) == runs and all(s in ("completed", "failed") for (s,) in rows)


async def test_counters_after_known_webhooks_and_runs(
        aiohttp_client: Any, aiohttp_server: Any, settings_factory: Any) -> None:
    settings = settings_factory(metrics_token="metrics-token-abc")
    client = await aiohttp_client(create_app(settings, KnownProcessor(
        await fake_api(aiohttp_server))))
    auth = {"Authorization": "Bearer metrics-token-abc"}

    for key in ("OK-1", "BAD-1", "RETRY-1"):
        response = await client.post(
            "/webhook/jira", data=orjson.dumps(automation_payload(key)),
            headers=secret_headers(**{"X-Atlassian-Webhook-Identifier": f"d-{key}"}))
        assert response.status == 200
    redelivery = await client.post(
        "/webhook/jira", data=orjson.dumps(automation_payload("OK-1")),
        headers=secret_headers(**{"X-Atlassian-Webhook-Identifier": "d-OK-1"}))
    assert (await redelivery.json())["deduplicated"] is True
    bad_secret = await client.post("/webhook/jira", data=orjson.dumps(automation_payload()),
                                   headers=secret_headers(**{
                                       "X-Moveware-Webhook-Secret": "wrong"}))
    assert bad_secret.status == 401
    not_json = await client.post("/webhook/jira", data=b"{", headers=secret_headers())
    assert not_json.status == 400
    await wait_for(lambda: all_settled(settings.db, 4), what="4 runs settled")

    samples = await scrape(client, **auth)
    assert value(samples, "mwai_webhooks_received_total", outcome="queued", status="200") == 3
    assert value(samples, "mwai_webhooks_received_total", outcome="deduplicated",
                 status="200") == 1
    assert value(samples, "mwai_webhooks_received_total", outcome="rejected", status="401") == 1
    assert value(samples, "mwai_webhooks_received_total", outcome="rejected", status="400") == 1
    assert value(samples, "mwai_runs_enqueued_total", source="webhook") == 3
    assert value(samples, "mwai_runs_enqueued_total", source="followup") == 1

    assert value(samples, "mwai_runs_completed_total", action="plan") == 1
    assert value(samples, "mwai_runs_completed_total", action="start") == 1
    assert value(samples, "mwai_runs_completed_total", action="none") == 1
    assert value(samples, "mwai_runs_failed_total", action="execute") == 1
    assert value(samples, "mwai_runs_retried_total", action="start") == 1
    assert value(samples, "mwai_runs_cancelled_total", action="start") == 0
    assert value(samples, "mwai_run_duration_seconds_count", action="start") == 2
    assert value(samples, "mwai_run_duration_seconds_count", action="plan") == 1
    assert value(samples, "mwai_run_queue_wait_seconds_count") == 5

    assert value(samples, "mwai_agent_cost_usd_total", action="plan") == 0.5
    assert value(samples, "mwai_agent_tokens_total", action="plan", kind="input") == 100
    assert value(samples, "mwai_agent_tokens_total", action="plan", kind="output") == 20
    assert value(samples, "mwai_api_calls_total", service="fakejira", status="200") == 1
    assert value(samples, "mwai_last_success_timestamp_seconds") > 0

    assert value(samples, "mwai_queue_depth") == 0
    assert value(samples, "mwai_runs_running") == 0
    assert value(samples, "mwai_workers_total") == 2
    assert value(samples, "mwai_workers_alive") == 2
    assert value(samples, "mwai_workers_busy") == 0
    assert value(samples, "mwai_database_up") == 1
    # Low cardinality: no issue key appears in any label.
    assert not any("OK-1" in str(labels) for (_, labels) in samples)


async def test_gauges_while_runs_wait_and_work(aiohttp_client: Any, settings: Any) -> None:
    gate = GateProcessor()
    client = await aiohttp_client(create_app(settings, gate))
    for key in ("G-1", "G-2", "G-3"):
        response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload(key)),
                                     headers=secret_headers())
        assert response.status == 200
    await wait_for(lambda: len(gate.started) == 2, what="both workers busy")

    samples = await scrape(client)
    assert value(samples, "mwai_queue_depth") == 1
    assert value(samples, "mwai_runs_running") == 2
    assert value(samples, "mwai_workers_busy") == 2
    assert value(samples, "mwai_oldest_queued_age_seconds") >= 0
    assert value(samples, "mwai_last_success_timestamp_seconds") == 0

    gate.gate.set()
    await wait_for(lambda: len(gate.finished) == 3, what="all runs finished")
    await wait_for(lambda: all_settled(settings.db, 3), what="runs settled")
    samples = await scrape(client)
    assert value(samples, "mwai_queue_depth") == 0
    assert value(samples, "mwai_runs_running") == 0
    assert value(samples, "mwai_runs_completed_total", action="none") == 3


async def test_metrics_token_is_required_when_set(aiohttp_client: Any,
                                                  settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(metrics_token="s3cret-metrics")))
    assert (await client.get("/metrics")).status == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert "MWAI_METRICS_TOKEN" in (await wrong.json())["error"]
    await scrape(client, Authorization="Bearer s3cret-metrics")


async def test_two_apps_do_not_share_counters(aiohttp_client: Any, settings_factory: Any,
                                              tmp_path: Any) -> None:
    first = await aiohttp_client(create_app(settings_factory()))
    second = await aiohttp_client(create_app(settings_factory(db=str(tmp_path / "b.db"))))
    response = await first.post("/webhook/jira", data=orjson.dumps(automation_payload()),
                                headers=secret_headers())
    assert response.status == 200
    assert value(await scrape(first), "mwai_webhooks_received_total", outcome="queued",
                 status="200") == 1
    assert value(await scrape(second), "mwai_webhooks_received_total", outcome="queued",
                 status="200") == 0


async def test_a_webhook_the_database_cannot_take_counts_as_unavailable(
        aiohttp_client: Any, settings_factory: Any) -> None:
    # docs/security.md: operators alert on mwai_webhooks_received_total{outcome="unavailable"}.
    settings = settings_factory(db_busy_timeout_ms=100)
    client = await aiohttp_client(create_app(settings))
    blocker = sqlite3.connect(settings.db, isolation_level=None, timeout=0.1)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for number in (1, 2):
            response = await client.post(
                "/webhook/jira", data=orjson.dumps(automation_payload(f"UNA-{number}")),
                headers=secret_headers())
            assert response.status == 503, await response.text()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    response = await client.get("/metrics")
    lines = (await response.text()).splitlines()
    assert 'mwai_webhooks_received_total{outcome="unavailable",status="503"} 2.0' in lines
    assert not [line for line in lines if line.startswith("mwai_webhooks_received_total{")
                and "unavailable" not in line]
    assert value(parse("\n".join(lines)), "mwai_runs_enqueued_total", source="webhook") == 0
