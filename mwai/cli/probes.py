"""``mwai check --connect``: call each configured remote service once.

Jira (GET /myself), GitHub (GET /user) and the LLM provider (list its models),
each through the same ApiClient as the service, with a short timeout and one
retry. A service that is not configured is skipped and says which settings are
empty; a failure says what the service answered, without the secrets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp

from mwai.clients.http import ApiClient, new_session
from mwai.clients.jira import JiraConfig
from mwai.clients.llm import api_base
from mwai.errors import MwaiError
from mwai.scrub import scrub
from mwai.settings import Settings


async def check_connections(settings: Settings,
                            session: aiohttp.ClientSession | None = None
                            ) -> list[dict[str, Any]]:
    """Call each configured remote service once; one result per service."""
    own = session is None
    session = session or new_session()
    try:
        return list(await asyncio.gather(
            _probe(settings, "jira", _jira_probe(settings, session)),
            _probe(settings, "github", _github_probe(settings, session)),
            _probe(settings, f"llm ({settings.llm_provider})", _llm_probe(settings, session)),
        ))
    finally:
        if own:
            await session.close()


Probe = Callable[[], Awaitable[str]] | str


async def _probe(settings: Settings, service: str, probe: Probe) -> dict[str, Any]:
    if isinstance(probe, str):
        return {"service": service, "ok": None, "detail": probe}
    try:
        detail = await probe()
    except (MwaiError, aiohttp.ClientError, OSError, ValueError) as exc:
        return {"service": service, "ok": False,
                "detail": scrub(str(exc), settings.secret_values())}
    return {"service": service, "ok": True, "detail": detail}


def _client(settings: Settings, name: str, base_url: str, session: aiohttp.ClientSession,
            headers: Mapping[str, str]) -> ApiClient:
    return ApiClient(name, base_url, session, headers=headers,
                     timeout_s=min(settings.http_timeout_s, 15.0), retries=1, max_wait_s=5)


def _missing(names: Sequence[tuple[str, str]]) -> str | None:
    empty = [name for name, value in names if not value]
    return f"not configured ({', '.join(empty)} empty): skipped" if empty else None


def _jira_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    needed = [("JIRA_BASE_URL", settings.jira_base_url),
              ("JIRA_API_TOKEN", settings.jira_api_token)]
    if settings.jira_auth != "bearer":
        needed.append(("JIRA_EMAIL", settings.jira_email))
    skip = _missing(needed)
    if skip:
        return skip
    auth = JiraConfig.of(settings).authorization()
    client = _client(settings, "jira", settings.jira_base_url, session,
                     {"Authorization": auth})

    async def probe() -> str:
        answer = await client.request("GET", f"/rest/api/{settings.jira_api_version}/myself")
        me = answer.json() or {}
        who = me.get("displayName") or me.get("emailAddress") or me.get("accountId")
        # Cloud names the account by accountId, Data Center by name (username).
        id_field = "name" if settings.jira_api_version == "2" else "accountId"
        note = ""
        if settings.jira_ai_account_id and me.get(id_field) and \
                me[id_field] != settings.jira_ai_account_id:
            note = (f" (warning: {id_field} {me[id_field]} is not JIRA_AI_ACCOUNT_ID "
                    f"{settings.jira_ai_account_id})")
        return f"authenticated as {who}{note}"

    return probe


def _github_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    skip = _missing([("GH_TOKEN", settings.gh_token)])
    if skip:
        return skip
    client = _client(settings, "github", settings.github_api_url, session, {
        "Authorization": f"Bearer {settings.gh_token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28"})

    async def probe() -> str:
        answer = await client.request("GET", "/user")
        me = answer.json() or {}
        return f"authenticated as {me.get('login')}"

    return probe


def _llm_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    if settings.llm_provider == "anthropic":
        skip = _missing([("ANTHROPIC_API_KEY", settings.anthropic_api_key)])
        if skip:
            return skip
        root = api_base("anthropic", settings.anthropic_base_url)
        client = _client(settings, "anthropic", root, session, {
            "x-api-key": settings.anthropic_api_key, "anthropic-version": "2023-06-01"})
        path, model = "/v1/models", settings.anthropic_model
    else:
        skip = _missing([("OPENAI_API_KEY", settings.openai_api_key)])
        if skip:
            return skip
        root = api_base("openai", settings.openai_base_url)
        client = _client(settings, "openai", root, session, {
            "Authorization": f"Bearer {settings.openai_api_key}"})
        path, model = "/models", settings.openai_model

    async def probe() -> str:
        answer = await client.request("GET", path)
        document = answer.json() or {}
        ids = [item.get("id") for item in document.get("data", []) if isinstance(item, dict)]
        listed = "listed" if model in ids else "not in the first page of the list"
        return f"key accepted, {len(ids)} models; model {model} {listed}"

    return probe
