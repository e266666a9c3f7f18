"""Shared fixtures: settings for a temporary database and the app under test."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mwai.settings import Settings

SECRET = "test-webhook-secret-0123456789"


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    """Noop processor, a database under tmp_path, timings fast enough for tests."""
    base = Settings.defaults(
        jira_webhook_secret=SECRET,
        db=str(tmp_path / "mwai.sqlite3"),
        processor="noop",
        workers=2,
        poll_s=0.5,
        heartbeat_s=0.2,
        lease_s=5.0,
        recovery_interval_s=0.5,
        retry_base_s=0.05,
        retry_max_s=0.2,
        shutdown_grace_s=2.0,
        work_dir=str(tmp_path / "work"),
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **changes: make_settings(tmp_path, **changes)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def automation_payload(issue_key: str = "TEST-123", **extra: Any) -> dict[str, Any]:
    return {
        "event_type": "issue_assigned",
        "issue_key": issue_key,
        "issue_type": "Story",
        "status": "Backlog",
        "assignee_account_id": "ai-account",
        **extra,
    }


def secret_headers(**extra: str) -> dict[str, str]:
    return {"X-Moveware-Webhook-Secret": SECRET, "Content-Type": "application/json", **extra}
