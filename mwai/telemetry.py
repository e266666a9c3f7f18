"""Sentry: initialisation, secret scrubbing, one isolation scope per run, cron check-ins.

sentry_sdk is imported only when SENTRY_DSN is set: without it mwai starts faster
and uses less memory, and every helper here is a no-op.

Enabled when ``SENTRY_DSN`` is set. Log records at ERROR become Sentry events,
lower ones breadcrumbs; the aiohttp integration covers the web routes. Before
anything leaves the process every string in the event is searched for the
configured secrets (``settings.secret_values()``) and the credential headers
are blanked wherever they appear.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from mwai import __version__, logs
from mwai.model import ClaimedRun
from mwai.scrub import Scrubber
from mwai.settings import SETTINGS, Settings

log = logging.getLogger(logs.TELEMETRY_LOGGER)

FILTERED = "[Filtered]"
# Headers that carry credentials: the webhook secret, its HMAC, API auth.
SECRET_HEADERS = ("authorization", "proxy-authorization", "x-moveware-webhook-secret",
                  "x-hub-signature", "x-hub-signature-256", "x-sentry-auth", "cookie")
RUN_TAGS = ("run_id", "issue_key", "action", "worker")
# Lease recovery runs every few seconds; Sentry needs to hear of it only this often.
RECOVERY_CHECKIN_EVERY_S = 60.0


def release() -> str:
    return f"mwai@{__version__}"


def _denylist() -> list[str]:
    from sentry_sdk.scrubber import DEFAULT_DENYLIST

    names = [s.name.lower() for s in SETTINGS if s.secret]
    names += [s.field for s in SETTINGS if s.secret]
    return [*DEFAULT_DENYLIST, *SECRET_HEADERS, *names]


def event_scrubber(secrets: Sequence[str]) -> Scrubber:
    """Blanks secret values and credential headers anywhere in an event, as Sentry would."""
    return Scrubber(secrets, marker=FILTERED, secret_keys=SECRET_HEADERS)


def _add_context_tags(event: dict[str, Any]) -> None:
    """The log context (run_id, issue_key, action, worker, request_id) as tags.

    ``action`` is decided while the run works, after its scope was opened: the
    log context holds the latest value.
    """
    tags = event.get("tags")
    if not isinstance(tags, dict):
        tags = event["tags"] = {}
    for name in (*RUN_TAGS, "request_id"):
        value = logs.current(name)
        if value is not None and (name == "action" or name not in tags):
            tags[name] = str(value)


def make_before_send(settings: Settings) -> Any:
    scrubber = event_scrubber(settings.secret_values())

    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        _add_context_tags(event)
        scrubbed: dict[str, Any] = scrubber.walk(event)
        return scrubbed

    def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = scrubber.walk(crumb)
        return result

    return before_send, before_breadcrumb


def init_sentry(settings: Settings) -> bool:
    """Start Sentry if SENTRY_DSN is set; True when it is on."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.aiohttp import AioHttpIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.scrubber import EventScrubber

    before_send, before_breadcrumb = make_before_send(settings)
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        release=release(),
        traces_sample_rate=settings.sentry_traces_sample_rate,
        # Frame locals hold Settings objects, and the serializer cuts long reprs,
        # which could cut a secret so that no scrubber recognises the rest of it.
        include_local_variables=False,
        max_request_body_size="never",
        default_integrations=True,
        integrations=[
            AioHttpIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        event_scrubber=EventScrubber(denylist=_denylist(), recursive=True),
        before_send=before_send,
        before_send_transaction=before_send,
        before_breadcrumb=before_breadcrumb,
    )
    log.info("Sentry enabled", extra={"sentry_environment": settings.sentry_environment,
                                      "release": release()})
    return True


def sentry_enabled() -> bool:
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None:
        return False
    client = sentry_sdk.get_client()
    # A closed client stays "active" but has lost its transport.
    return bool(client.is_active() and getattr(client, "transport", None) is not None)


def close_sentry(timeout_s: float = 5.0) -> None:
    """Send what is pending and stop Sentry (no-op when it is off)."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None:
        return
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout_s)


@contextlib.contextmanager
def run_scope(run: ClaimedRun, action: str | None = None) -> Iterator[Any]:
    """An isolation scope for one run attempt: its breadcrumbs and tags stay its own."""
    if not sentry_enabled():
        yield None
        return
    import sentry_sdk

    with sentry_sdk.isolation_scope() as scope:
        scope.set_tag("run_id", str(run.id))
        scope.set_tag("issue_key", run.issue_key)
        scope.set_tag("worker", run.worker)
        scope.set_tag("action", action or run.action or "none")
        scope.set_context("run", {"attempt": run.attempts, "created_at": run.created_at,
                                  "request_id": run.request_id})
        if run.request_id:
            scope.set_tag("request_id", run.request_id)
        with sentry_sdk.start_transaction(op="queue.process", name="mwai.run"):
            yield scope


# ------------------------------------------------------------------ cron check-ins


def monitor_slug(settings: Settings, job: str) -> str:
    """Derived, stable slug: ``mwai-<job>-<environment>`` (e.g. mwai-prune-production)."""
    environment = "".join(c if c.isalnum() else "-" for c in settings.sentry_environment.lower())
    return f"mwai-{job}-{environment}".strip("-")


def _interval_config(every_s: float) -> dict[str, Any]:
    minutes = max(1, math.ceil(every_s / 60))
    return {"schedule": {"type": "interval", "value": minutes, "unit": "minute"},
            "checkin_margin": max(1, minutes), "max_runtime": max(5, minutes * 2)}


def _crontab_config(crontab: str) -> dict[str, Any]:
    return {"schedule": {"type": "crontab", "value": crontab}, "checkin_margin": 10,
            "max_runtime": 60, "timezone": "UTC"}


JOB_SCHEDULES: dict[str, dict[str, Any]] = {
    # Match deploy/systemd/mwai-alert.timer and mwai-prune.timer.
    "alert": _interval_config(300),
    "prune": _crontab_config("0 3 * * *"),
}


@contextlib.contextmanager
def cron_job(settings: Settings, job: str) -> Iterator[None]:
    """Report a periodic job (``mwai alert``, ``mwai prune``) to Sentry Crons.

    Sends in_progress, then ok, or error if the block raises. Initialises Sentry
    itself when the command was started without it; no-op without SENTRY_DSN.
    """
    if not sentry_enabled() and not init_sentry(settings):
        yield
        return
    from sentry_sdk.crons import capture_checkin

    slug = monitor_slug(settings, job)
    config: Any = JOB_SCHEDULES.get(job)
    started = time.monotonic()
    check_in_id = capture_checkin(monitor_slug=slug, status="in_progress",
                                  monitor_config=config)
    try:
        yield
    except BaseException:
        capture_checkin(monitor_slug=slug, check_in_id=check_in_id, status="error",
                        duration=time.monotonic() - started, monitor_config=config)
        raise
    capture_checkin(monitor_slug=slug, check_in_id=check_in_id, status="ok",
                    duration=time.monotonic() - started, monitor_config=config)


class PeriodicCheckin:
    """Heartbeat check-ins for an in-process loop (lease recovery), throttled."""

    def __init__(self, settings: Settings, job: str, every_s: float,
                 min_gap_s: float = RECOVERY_CHECKIN_EVERY_S) -> None:
        self.slug = monitor_slug(settings, job)
        self.config: Any = _interval_config(max(every_s, min_gap_s))
        self.min_gap_s = min_gap_s
        self._last_ok_monotonic: float | None = None

    def report(self, ok: bool) -> None:
        if not sentry_enabled():
            return
        now = time.monotonic()
        if ok and self._last_ok_monotonic is not None and \
                now - self._last_ok_monotonic < self.min_gap_s:
            return
        from sentry_sdk.crons import capture_checkin

        capture_checkin(monitor_slug=self.slug, status="ok" if ok else "error",
                        monitor_config=self.config)
        if ok:
            self._last_ok_monotonic = now
