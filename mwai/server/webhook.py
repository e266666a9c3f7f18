"""Pure functions of the webhook: authenticate, parse, validate -> ``Trigger``.

These body shapes arrive at ``POST /webhook/jira`` (real examples, with their
sources, are in tests/contracts/jira_webhooks):

* Jira Automation "Send web request", custom data, flat:
  ``{"event_type", "issue_key" | "issueKey", "issue_type", "status",
  "assignee_account_id", "parent_key", "project_key", ...}``; a smart value
  without a value renders as ``""``, which counts as missing;
* Automation's "Issue data (Automation format)": the issue itself at the top
  level, ``{"self", "id", "key", "fields": {...}}``; "Issue data (Jira
  format)": the same issue in ``{"issue": {...}}``, without ``webhookEvent``;
* native Jira webhooks: ``{"webhookEvent": "jira:issue_updated" |
  "comment_created" | ..., "issue": {"key", "fields": {...}}, "changelog",
  "user", "comment"}``, users by ``accountId`` (Cloud) or ``name``/``key``
  (Server and Data Center).

The webhook is only a trigger: the run re-reads the issue from Jira, so only
the key must be right; the other fields are kept for the journal.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

import orjson

from mwai.errors import WebhookError

SECRET_HEADER = "X-Moveware-Webhook-Secret"
SIGNATURE_HEADER = "X-Hub-Signature"
DELIVERY_HEADER = "X-Atlassian-Webhook-Identifier"

ISSUE_KEY_RE = re.compile(r"[A-Z][A-Z0-9_]{0,49}-[1-9][0-9]{0,14}")
MAX_DEPTH = 64
MAX_DELIVERY_ID_CHARS = 200


@dataclass(frozen=True, slots=True)
class Trigger:
    issue_key: str
    source: str  # automation | jira
    event_type: str
    issue_type: str | None = None
    status: str | None = None
    assignee_account_id: str | None = None
    parent_key: str | None = None
    project_key: str | None = None


def authenticate(
    secret: str, header_secret: str | None, signature: str | None, body: bytes | None
) -> None:
    """Accept the shared-secret header or an HMAC-SHA256 signature of the body.

    Both comparisons take constant time. Raises WebhookError(401).
    """
    expected = secret.encode()
    if header_secret is not None:
        if hmac.compare_digest(header_secret.encode("utf-8", "surrogateescape"), expected):
            return
        raise WebhookError(401, f"the {SECRET_HEADER} header does not match the secret")
    if signature is not None:
        if body is None:
            raise WebhookError(401, "signature given but no body to check it against")
        algorithm, _, digest = signature.partition("=")
        if algorithm.strip().lower() != "sha256" or not digest:
            raise WebhookError(401, f"{SIGNATURE_HEADER} must be 'sha256=<hex digest>'")
        computed = hmac.new(expected, body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(digest.strip().lower().encode("ascii", "replace"),
                               computed.encode()):
            return
        raise WebhookError(401, f"the {SIGNATURE_HEADER} signature does not match the body")
    raise WebhookError(
        401, f"missing credentials: send the {SECRET_HEADER} header or a {SIGNATURE_HEADER} "
        "HMAC-SHA256 signature"
    )


def check_content_type(content_type: str) -> None:
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime != "application/json" and not (mime.startswith("application/") and
                                           mime.endswith("+json")):
        shown = mime or "none"
        raise WebhookError(415, f"Content-Type must be application/json (got {shown})")


def check_delivery_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_DELIVERY_ID_CHARS or not value.isprintable() or not value.isascii():
        raise WebhookError(400, f"{DELIVERY_HEADER} must be printable ASCII of at most "
                                f"{MAX_DELIVERY_ID_CHARS} characters")
    return value


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson refuses valid JSON nested past its own limit (1024) with this
        # message: it is too deep, not malformed, so say what the limit is.
        if str(exc).startswith("depth limit exceeded"):
            raise WebhookError(400, f"body is nested deeper than {MAX_DEPTH} levels") from None
        raise WebhookError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise WebhookError(400, "body must be a JSON object")
    # Walking the document costs more than parsing it; only a body with enough
    # brackets can be too deep.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _depth(document) > MAX_DEPTH:
        raise WebhookError(400, f"body is nested deeper than {MAX_DEPTH} levels")
    return document


def _depth(value: Any) -> int:
    """Nesting depth, computed without recursion (hostile bodies nest deeply)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


NO_KEY = ("no issue key: send 'issue_key' (a custom Automation body), the issue itself "
          "('key', Automation's Issue data bodies) or 'issue.key' (a native Jira webhook); "
          "a smart value that rendered empty ('') counts as missing")


def to_trigger(document: dict[str, Any]) -> Trigger:
    """Read any accepted body shape; raise WebhookError(400/422) naming the bad field."""
    if "webhookEvent" in document or isinstance(document.get("issue"), dict):
        return _native(document)
    flat_key = any(_given(document.get(name)) for name in ("issue_key", "issueKey"))
    if not flat_key and (_given(document.get("key")) or isinstance(document.get("fields"), dict)):
        # Automation's "Issue data" body options send the issue itself, at the top level.
        return _issue_trigger(document, "", "automation", "automation")
    return _automation(document)


def _given(value: Any) -> bool:
    """Automation renders a smart value without a value as "", not null: both are missing."""
    return value is not None and value != ""


def _optional_str(document: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = document.get(name)
        if _given(value):
            if not isinstance(value, str):
                raise WebhookError(422, f"field {name!r} must be a string")
            return value
    return None


def validate_issue_key(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise WebhookError(422, f"field {field_name!r} must be a string like PROJ-123")
    if not ISSUE_KEY_RE.fullmatch(value):
        shown = value if len(value) <= 40 and value.isprintable() else repr(value[:40])
        raise WebhookError(
            422, f"field {field_name!r} is not a Jira issue key like PROJ-123 (got {shown})"
        )
    return value


def _automation(document: dict[str, Any]) -> Trigger:
    raw_key = None
    key_field = "issue_key"
    for name in ("issue_key", "issueKey"):
        if _given(document.get(name)):
            raw_key, key_field = document[name], name
            break
    if raw_key is None:
        raise WebhookError(400, NO_KEY)
    issue_key = validate_issue_key(raw_key, key_field)
    parent = _optional_str(document, "parent_key", "parentKey")
    if parent:
        validate_issue_key(parent, "parent_key")
    return Trigger(
        issue_key=issue_key,
        source="automation",
        event_type=_optional_str(document, "event_type", "eventType") or "automation",
        issue_type=_optional_str(document, "issue_type", "issueType"),
        status=_optional_str(document, "status"),
        assignee_account_id=_optional_str(document, "assignee_account_id", "assigneeAccountId"),
        parent_key=parent,
        project_key=_optional_str(document, "project_key", "projectKey"),
    )


def _field(container: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(container, dict):
            return None
        container = container.get(name)
    return container


def _native_str(container: Any, label: str, *path: str) -> str | None:
    value = _field(container, *path)
    if not _given(value):
        return None
    if not isinstance(value, str):
        raise WebhookError(422, f"field {label!r} must be a string")
    return str(value)


def _user_id(fields: Any, label: str) -> str | None:
    """The assignee's id: ``accountId`` on Cloud, ``name`` (else ``key``) on Data Center."""
    for name in ("accountId", "name", "key"):
        value = _native_str(fields, f"{label}.{name}", "assignee", name)
        if value is not None:
            return value
    return None


def _native(document: dict[str, Any]) -> Trigger:
    """A native webhook, or Automation's "Issue data (Jira format)" (no webhookEvent)."""
    event = document.get("webhookEvent", "")
    if not isinstance(event, str):
        raise WebhookError(422, "field 'webhookEvent' must be a string")
    issue = document.get("issue")
    if not isinstance(issue, dict) or not _given(issue.get("key")):
        raise WebhookError(400, f"no issue key: a native {event or 'Jira'} webhook needs "
                                "'issue.key'")
    if "webhookEvent" not in document:
        return _issue_trigger(issue, "issue.", "automation", "automation")
    return _issue_trigger(issue, "issue.", "jira", event or "jira:webhook")


def _issue_trigger(issue: dict[str, Any], label: str, source: str, event: str) -> Trigger:
    """A trigger from an issue in Jira's JSON (``label``: where it sits in the body)."""
    if not _given(issue.get("key")):
        raise WebhookError(400, NO_KEY)
    issue_key = validate_issue_key(issue.get("key"), f"{label}key")
    fields = issue.get("fields")
    if fields is not None and not isinstance(fields, dict):
        raise WebhookError(422, f"field '{label}fields' must be an object")
    prefix = f"{label}fields"
    parent = _native_str(fields, f"{prefix}.parent.key", "parent", "key")
    if parent:
        validate_issue_key(parent, f"{prefix}.parent.key")
    return Trigger(
        issue_key=issue_key,
        source=source,
        event_type=event,
        issue_type=_native_str(fields, f"{prefix}.issuetype.name", "issuetype", "name"),
        status=_native_str(fields, f"{prefix}.status.name", "status", "name"),
        assignee_account_id=_user_id(fields, f"{prefix}.assignee"),
        parent_key=parent,
        project_key=_native_str(fields, f"{prefix}.project.key", "project", "key"),
    )
