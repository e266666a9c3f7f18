"""The OpenAPI 3.1 document of mwai's HTTP API, served at ``GET /openapi.json``.

Written by hand next to the handlers it describes; tests/integration/test_openapi.py
keeps the two in sync (every route and every status the code answers is here, and
nothing else), and tests/acceptance/test_schemathesis.py checks the live service's
answers against it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mwai import __version__
from mwai.server import webhook as wh

OPENAPI_PATH = "/openapi.json"
ISSUE_KEY_PATTERN = "^" + wh.ISSUE_KEY_RE.pattern + "$"

_JSON = "application/json"

# ------------------------------------------------------------------- schemas

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}

ERROR = {
    "type": "object",
    "description": "Every error answer: what is wrong and how to fix it.",
    "required": ["ok", "error"],
    "properties": {"ok": {"const": False}, "error": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}

# A smart value that renders empty arrives as "": it counts as missing.
_KEY_OR_EMPTY: dict[str, Any] = {"type": ["string", "null"],
                                 "pattern": "^$|" + ISSUE_KEY_PATTERN}

AUTOMATION_PAYLOAD = {
    "type": "object",
    "title": "Jira Automation 'Send web request' body, custom data (flat)",
    "description": "Only the issue key must be right: the run re-reads the issue from Jira. "
                   "'issueKey' and the other camelCase spellings are accepted too; a smart "
                   "value rendered empty (\"\") counts as missing.",
    "anyOf": [{"required": ["issue_key"]}, {"required": ["issueKey"]}],
    "properties": {
        "issue_key": _KEY_OR_EMPTY,
        "issueKey": _KEY_OR_EMPTY,
        "event_type": _NULLABLE_STRING,
        "issue_type": _NULLABLE_STRING,
        "status": _NULLABLE_STRING,
        "assignee_account_id": _NULLABLE_STRING,
        "parent_key": _KEY_OR_EMPTY,
        "project_key": _NULLABLE_STRING,
    },
    "not": {"anyOf": [{"required": ["webhookEvent"]}, {"required": ["issue"]}]},
}

_NAMED = {"type": ["object", "null"], "properties": {"name": _NULLABLE_STRING}}

# An issue in Jira's JSON: the fields mwai reads (users by accountId on Cloud, by name
# or key on Server and Data Center).
_ISSUE_PROPERTIES: dict[str, Any] = {
    "key": {"type": "string", "pattern": ISSUE_KEY_PATTERN},
    "fields": {
        "type": ["object", "null"],
        "properties": {
            "issuetype": _NAMED,
            "status": _NAMED,
            "assignee": {"type": ["object", "null"],
                         "properties": {"accountId": _NULLABLE_STRING,
                                        "name": _NULLABLE_STRING, "key": _NULLABLE_STRING}},
            "parent": {"type": ["object", "null"], "properties": {"key": _KEY_OR_EMPTY}},
            "project": {"type": ["object", "null"], "properties": {"key": _NULLABLE_STRING}},
        },
    },
}

NATIVE_PAYLOAD = {
    "type": "object",
    "title": "Native Jira webhook body (Cloud, Server, Data Center), or Automation's "
             "'Issue data (Jira format)' (the same without webhookEvent)",
    "required": ["issue"],
    "properties": {
        "webhookEvent": {"type": "string", "examples": ["jira:issue_updated",
                                                        "comment_created"]},
        "issue": {"type": "object", "required": ["key"], "properties": _ISSUE_PROPERTIES},
    },
}

ISSUE_DATA_PAYLOAD = {
    "type": "object",
    "title": "Jira Automation 'Issue data (Automation format)' body: the issue at the top "
             "level",
    "required": ["key"],
    "properties": _ISSUE_PROPERTIES,
    "not": {"anyOf": [{"required": ["webhookEvent"]}, {"required": ["issue"]},
                      {"required": ["issue_key"]}, {"required": ["issueKey"]}]},
}

WEBHOOK_ACCEPTED = {
    "type": "object",
    "required": ["ok", "run_id", "deduplicated", "coalesced"],
    "properties": {
        "ok": {"const": True},
        "run_id": {"type": "integer", "minimum": 1},
        "deduplicated": {"type": "boolean", "description": "true for a redelivery (same "
                         "delivery id) or a trigger merged into the issue's queued run"},
        "coalesced": {"type": "boolean", "description": "merged into the issue's queued run"},
    },
    "additionalProperties": False,
}

HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
    "additionalProperties": False,
}

_OPTIONAL_COUNT = {"type": ["integer", "null"], "minimum": 0}

HEALTH_DETAILED = {
    "type": "object",
    "required": ["status", "paused", "database", "stuck_count", "stuck_runs", "queued",
                 "running", "oldest_queued_age_s", "workers", "problems", "version",
                 "uptime_s", "timestamp"],
    "properties": {
        "status": {"enum": ["healthy", "degraded", "unhealthy"]},
        "paused": {"type": "boolean", "description": "claims paused by `mwai pause`"},
        "database": {"type": "string"},
        "stuck_count": _OPTIONAL_COUNT,
        "stuck_runs": {
            "type": "array", "description": "up to 20 stuck runs, the longest stuck first",
            "items": {
                "type": "object",
                "required": ["id", "issue_key", "locked_by", "updated_at"],
                "properties": {"id": {"type": "integer"}, "issue_key": {"type": "string"},
                               "locked_by": {"type": ["string", "null"]},
                               "updated_at": {"type": "number"}},
            },
        },
        "queued": _OPTIONAL_COUNT,
        "running": _OPTIONAL_COUNT,
        "oldest_queued_age_s": {"type": ["number", "null"], "minimum": 0},
        "workers": {
            "type": "object",
            "required": ["configured", "alive", "busy"],
            "properties": {name: {"type": "integer", "minimum": 0}
                           for name in ("configured", "alive", "busy")},
        },
        "problems": {"type": "array", "items": {"type": "string"}},
        "version": {"type": "string"},
        "uptime_s": {"type": "number", "minimum": 0},
        "timestamp": {"type": "number"},
    },
}

# ------------------------------------------------------------------- answers

_REQUEST_ID = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
_RETRY_AFTER = {**_REQUEST_ID, "Retry-After": {"$ref": "#/components/headers/RetryAfter"}}


def _answer(description: str, schema_ref: str, headers: dict[str, Any] | None = None,
            media_type: str = _JSON) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers or _REQUEST_ID,
        "content": {media_type: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _answer(description, "Error", headers)


WEBHOOK_STATUSES: dict[str, dict[str, Any]] = {
    "200": _answer("Queued (or a redelivery / duplicate trigger of a queued run): durable on "
                   "disk before this answer.", "WebhookAccepted"),
    "400": _error("Malformed: not JSON, not an object, nested too deep, no issue key, a "
                  "credential header sent twice, or a bad delivery id."),
    "401": _error("Missing or wrong credentials (secret header or HMAC signature)."),
    "408": _error("The body did not arrive within MWAI_CLIENT_TIMEOUT_S (a stalled or very "
                  "slow client)."),
    "413": _error("Body over MWAI_MAX_BODY_BYTES (checked on Content-Length and while "
                  "reading a chunked body)."),
    "415": _error("Content-Type is not application/json (or application/*+json)."),
    "422": _error("A field has the wrong type, or the issue key is not like PROJ-123."),
    "429": _error("This client address sends more than MWAI_RATE_LIMIT_PER_S (only when "
                  "that setting is above 0). Retry after Retry-After seconds.", _RETRY_AFTER),
    "503": _error("The database cannot take the webhook now (disk full, locked, read-only). "
                  "Nothing was stored: retry after Retry-After seconds.", _RETRY_AFTER),
}

PATHS: dict[str, dict[str, Any]] = {
    "/webhook/jira": {
        "post": {
            "operationId": "webhookJira",
            "summary": "Trigger a run for a Jira issue",
            "description": "Accepts a Jira Automation 'Send web request' body (custom data, "
                           "or the built-in Issue data bodies) with the "
                           f"{wh.SECRET_HEADER} header, or a native Jira webhook signed with "
                           f"{wh.SIGNATURE_HEADER} (HMAC-SHA256 of the body).",
            "security": [{"webhookSecret": []}, {"hubSignature": []}],
            "parameters": [{
                "name": wh.DELIVERY_HEADER,
                "in": "header",
                "required": False,
                "description": "Delivery id of a native Jira webhook: a redelivery with the "
                               "same id is answered with the first run and stores nothing.",
                "schema": {"type": "string", "maxLength": wh.MAX_DELIVERY_ID_CHARS,
                           "pattern": "^[!-~]([ -~]*[!-~])?$"},
            }],
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": {"anyOf": [
                    {"$ref": "#/components/schemas/AutomationPayload"},
                    {"$ref": "#/components/schemas/NativeWebhook"},
                    {"$ref": "#/components/schemas/IssueDataPayload"},
                ]}}},
            },
            "responses": WEBHOOK_STATUSES,
        },
    },
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness: the process answers",
            "responses": {"200": _answer("The process is up.", "Health")},
        },
    },
    "/health/detailed": {
        "get": {
            "operationId": "healthDetailed",
            "summary": "Readiness: database, workers, queue",
            "responses": {
                "200": _answer("healthy or degraded (see problems).", "HealthDetailed"),
                "503": _answer("unhealthy: the database is unavailable or no worker is "
                               "alive.", "HealthDetailed"),
            },
        },
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format)",
            "security": [{}, {"metricsToken": []}],
            "responses": {
                "200": {
                    "description": "Metrics in the Prometheus text format.",
                    "headers": _REQUEST_ID,
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": _error("MWAI_METRICS_TOKEN is set and the request does not carry it "
                              "as a Bearer token."),
            },
        },
    },
    OPENAPI_PATH: {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {
                "description": "The OpenAPI 3.1 document of this API.",
                "headers": _REQUEST_ID,
                "content": {_JSON: {"schema": {"type": "object", "required": ["openapi"]}}},
            }},
        },
    },
}


# The web dashboard's HTML pages (and /status, which redirects to it) are for people,
# not for API clients: docs/operations.md describes them, this document does not.
UI_PATH_PREFIXES = ("/dashboard", "/status")


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a new dict on each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mwai",
            "version": __version__,
            "description": "Jira webhook intake and health of a mwai service. Every error "
                           "answer is JSON: {\"ok\": false, \"error\": \"...\"}. The web "
                           "dashboard for people is at /dashboard/ (HTML, not described "
                           "here).",
        },
        "paths": PATHS,
        "components": {
            "schemas": {
                "Error": ERROR,
                "AutomationPayload": AUTOMATION_PAYLOAD,
                "IssueDataPayload": ISSUE_DATA_PAYLOAD,
                "NativeWebhook": NATIVE_PAYLOAD,
                "WebhookAccepted": WEBHOOK_ACCEPTED,
                "Health": HEALTH,
                "HealthDetailed": HEALTH_DETAILED,
            },
            "headers": {
                "RequestId": {"description": "The request's id (the client's X-Request-Id if "
                                             "it was valid); it is in every log line.",
                              "schema": {"type": "string"}},
                "RetryAfter": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}},
            },
            "securitySchemes": {
                "webhookSecret": {"type": "apiKey", "in": "header", "name": wh.SECRET_HEADER,
                                  "description": "The JIRA_WEBHOOK_SECRET itself."},
                "hubSignature": {"type": "apiKey", "in": "header",
                                 "name": wh.SIGNATURE_HEADER,
                                 "description": "'sha256=' + hex HMAC-SHA256 of the body "
                                                "keyed with JIRA_WEBHOOK_SECRET."},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "MWAI_METRICS_TOKEN, when set."},
            },
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(document())
