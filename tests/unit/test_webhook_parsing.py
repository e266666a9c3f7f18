"""Pure webhook functions: authentication, both payload shapes, validation."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mwai.errors import WebhookError
from mwai.server import webhook as wh

SECRET = "s3cret"


def test_shared_secret_header() -> None:
    wh.authenticate(SECRET, SECRET, None, None)
    for wrong in ("", "s3cre", "s3cret ", "S3CRET", "s3cret\x00"):
        with pytest.raises(WebhookError) as caught:
            wh.authenticate(SECRET, wrong, None, None)
        assert caught.value.status == 401


def test_hmac_signature_of_the_raw_body() -> None:
    body = b'{"issue": {"key": "A-1"}}'
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    wh.authenticate(SECRET, None, f"sha256={digest}", body)
    wh.authenticate(SECRET, None, f"SHA256={digest.upper()}", body)
    with pytest.raises(WebhookError):
        wh.authenticate(SECRET, None, f"sha256={digest}", body + b" ")
    with pytest.raises(WebhookError):
        wh.authenticate(SECRET, None, f"sha1={digest}", body)
    with pytest.raises(WebhookError, match="missing credentials"):
        wh.authenticate(SECRET, None, None, body)


@pytest.mark.parametrize("key", ["A-1", "PROJ-123", "AB_C2-99999", "X1-10"])
def test_valid_issue_keys(key: str) -> None:
    assert wh.validate_issue_key(key, "issue_key") == key


@pytest.mark.parametrize("key", ["", "A", "A-", "-1", "a-1", "1A-1", "A-01", "A-1 ", " A-1",
                                 "A-1\n", "A-1;rm", "Ä-1", "A--1", "A-1-2", "A" * 60 + "-1"])
def test_invalid_issue_keys(key: str) -> None:
    with pytest.raises(WebhookError) as caught:
        wh.validate_issue_key(key, "issue_key")
    assert caught.value.status == 422


@given(st.text())
def test_any_text_is_either_a_clean_key_or_a_422(text: str) -> None:
    try:
        key = wh.validate_issue_key(text, "issue_key")
    except WebhookError as exc:
        assert exc.status == 422
    else:
        assert key.isascii() and key.isprintable() and " " not in key


def test_automation_shape() -> None:
    trigger = wh.to_trigger({"event_type": "issue_assigned", "issue_key": "T-1",
                             "issue_type": "Sub-task", "status": "In Progress",
                             "assignee_account_id": "acc", "parent_key": "T-5",
                             "project_key": "T"})
    assert trigger == wh.Trigger("T-1", "automation", "issue_assigned", "Sub-task",
                                 "In Progress", "acc", "T-5", "T")


def test_native_shape() -> None:
    trigger = wh.to_trigger({
        "webhookEvent": "jira:issue_created",
        "issue": {"key": "P-2", "fields": {
            "issuetype": {"name": "Sub-task"}, "status": {"name": "Backlog"},
            "assignee": None, "parent": {"key": "P-1"}, "project": {"key": "P"}}}})
    assert trigger == wh.Trigger("P-2", "jira", "jira:issue_created", "Sub-task", "Backlog",
                                 None, "P-1", "P")


def test_deeply_nested_body_is_refused_without_recursion() -> None:
    body = b'{"a":' * 5000 + b"1" + b"}" * 5000
    with pytest.raises(WebhookError) as caught:
        wh.parse_body(body)
    assert caught.value.status == 400


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.api+json"])
def test_json_content_types(content_type: str) -> None:
    wh.check_content_type(content_type)


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data"])
def test_other_content_types_are_415(content_type: str) -> None:
    with pytest.raises(WebhookError) as caught:
        wh.check_content_type(content_type)
    assert caught.value.status == 415
