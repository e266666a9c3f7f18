"""The HTTP side: webhook intake and health routes, and ``serve()``.

The store, the processor and the worker pool are opened and closed in the
app's ``cleanup_ctx``, so the test client and ``mwai serve`` share one life
cycle: open store -> start workers -> serve ... stop workers -> close store.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from functools import partial
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from mwai import __version__, telemetry
from mwai.clients import http
from mwai.errors import MwaiError, StoreError, StoreUnavailable, WebhookError
from mwai.logs import AIOHTTP_SERVER_LOGGER, WEB_LOGGER, log_context
from mwai.queue.health import HealthRules, Workers, assess
from mwai.queue.pool import PoolConfig, WorkerPool
from mwai.queue.processor import NoopProcessor, Processor
from mwai.queue.store import Store
from mwai.runner.flow import JiraProcessor
from mwai.server import metrics, openapi, ratelimit, sdnotify
from mwai.server import webhook as wh
from mwai.server.dashboard import Deps as DashboardDeps
from mwai.server.dashboard import create_dashboard
from mwai.server.reconcile import Reconciler
from mwai.server.reload import LiveSettings, reload_settings
from mwai.settings import Settings

log = logging.getLogger(WEB_LOGGER)

SETTINGS_KEY = web.AppKey("settings", Settings)
# What SIGHUP may change while running (mwai/server/reload.py): thresholds, log levels.
LIVE_KEY = web.AppKey("live_settings", LiveSettings)
STORE_KEY = web.AppKey("store", Store)
POOL_KEY = web.AppKey("pool", WorkerPool)
RECONCILER_KEY = web.AppKey("reconciler", Reconciler)
STARTED_KEY = web.AppKey("started_monotonic", float)
RATE_LIMIT_KEY = web.AppKey("rate_limiter", ratelimit.RateLimiter)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
ACCESS_FIELDS_KEY = web.RequestKey("access_fields", dict[str, Any])

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
RETRY_AFTER_S = 1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientErrorLogFilter(logging.Filter):
    """Malformed HTTP from a client is the client's fault: a WARNING line, not an ERROR.

    aiohttp logs every request it cannot parse (oversized headers, garbage bytes) at
    ERROR with a traceback; anyone on the internet could then fill the log and the
    Sentry quota at will. Errors of mwai itself keep their level and traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            # Formatted here: the client's bytes may hold '%' that must not be format codes.
            record.msg, record.args = f"{record.getMessage()}: {str(exc)[:200]!r}", None
            record.exc_info, record.exc_text = None, None
        return True


CLIENT_ERROR_LOG_FILTER = ClientErrorLogFilter()


def json_response(data: dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> web.Response:
    return json_response({"ok": False, "error": message}, status, headers)


# A random prefix per process and a counter: unique, and cheaper than uuid4 (no
# syscall per request). 24 + 8 hex digits: the 32 that docs/logging.md promises.
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:24]
_request_counter = itertools.count(1)


def _new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter):08x}"


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (X-Request-Id or a new one) and JSON errors; count
    webhook answers (one middleware: each one costs a coroutine per request)."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _REQUEST_ID_RE.fullmatch(given) else _new_request_id()
    request[REQUEST_ID_KEY] = request_id
    with log_context(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Keep what the exception says beyond its text (Allow on a 405,
            # WWW-Authenticate on a 401); the body becomes our JSON error.
            kept = {name: value for name, value in exc.headers.items()
                    if name.lower() not in ("content-type", "content-length")}
            response = error_response(exc.status, exc.reason, kept)
        except Exception:
            log.exception("Unhandled error while answering a request")
            response = error_response(500, "internal error; see the service log for "
                                           f"request id {request_id}")
    response.headers[REQUEST_ID_HEADER] = request_id
    metrics.count_webhook(request, response.status)
    return response


async def _read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most ``limit`` bytes, within ``timeout_s`` (a slow client gets 408)."""
    if request.content.is_eof():
        # Already all in the buffer (the usual case): reading cannot wait on the
        # client, so skip the timer a timeout costs.
        return await _read_limited(request, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_limited(request, limit)
    except TimeoutError:
        raise WebhookError(408, f"the body was not received within {timeout_s:g} s "
                                   "(MWAI_CLIENT_TIMEOUT_S)") from None


async def _read_limited(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None:
        if length > limit:
            raise WebhookError(413, f"body of {length} bytes is over the limit of "
                                       f"{limit} bytes (MWAI_MAX_BODY_BYTES)")
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise WebhookError(400, f"the body ended before its Content-Length of "
                                       f"{length} bytes") from None
    # Chunked: no length announced, count as it comes.
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise WebhookError(413, f"body is over the limit of {limit} bytes "
                                       "(MWAI_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


async def webhook_jira(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    limited = _rate_limited(request)
    if limited is not None:
        return limited
    try:
        return await _accept_webhook(request, settings)
    except WebhookError as exc:
        log.warning("Webhook rejected", extra={"status": exc.status, "error": exc.message})
        return error_response(exc.status, exc.message)


def _rate_limited(request: web.Request) -> web.Response | None:
    """429 when this client address is over MWAI_RATE_LIMIT_PER_S (before the body is read)."""
    limiter = request.app.get(RATE_LIMIT_KEY)
    if limiter is None:
        return None
    wait_s = limiter.take(request.remote or "unknown")
    if wait_s is None:
        return None
    log.warning("Webhook rate limited", extra={"remote": request.remote,
                                               "retry_after_s": round(wait_s, 3)})
    return error_response(429, "too many webhooks from this address (MWAI_RATE_LIMIT_PER_S); "
                               "retry after the Retry-After seconds",
                          {"Retry-After": ratelimit.retry_after_header(wait_s)})


def _single_header(request: web.Request, name: str) -> str | None:
    """A credential header sent twice is ambiguous: refuse rather than pick one."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise WebhookError(400, f"the {name} header was sent {len(values)} times; send it "
                                   "once")
    return values[0] if values else None


async def _accept_webhook(request: web.Request, settings: Settings) -> web.Response:
    header_secret = _single_header(request, wh.SECRET_HEADER)
    signature = _single_header(request, wh.SIGNATURE_HEADER)
    if header_secret is not None or signature is None:
        wh.authenticate(settings.jira_webhook_secret, header_secret, signature, None)
    wh.check_content_type(request.headers.get("Content-Type", ""))
    delivery_id = wh.check_delivery_id(request.headers.get(wh.DELIVERY_HEADER))
    body = await _read_body(request, settings.max_body_bytes, settings.client_timeout_s)
    if header_secret is None:
        wh.authenticate(settings.jira_webhook_secret, None, signature, body)
    trigger = wh.to_trigger(wh.parse_body(body))
    request_id = request[REQUEST_ID_KEY]
    try:
        result = await request.app[STORE_KEY].enqueue(
            trigger.issue_key,
            body.decode("utf-8"),
            delivery_id=delivery_id,
            request_id=request_id,
            source=trigger.source,
            event_type=trigger.event_type,
        )
    except StoreError as exc:
        log.error("Webhook not stored; answering 503", extra={
            "issue_key": trigger.issue_key, "error": str(exc)})
        message = "the database cannot take the webhook right now; retry later"
        if not isinstance(exc, StoreUnavailable):
            message = "the database refused the webhook; retry later"
        return error_response(503, message, {"Retry-After": str(RETRY_AFTER_S)})
    if not result.deduplicated and not result.coalesced:
        request.app[POOL_KEY].notify(1)
    request[metrics.WEBHOOK_OUTCOME_KEY] = ("deduplicated" if result.deduplicated else
                                            "coalesced" if result.coalesced else "queued")
    # One line per webhook: the access line carries what was accepted.
    request[ACCESS_FIELDS_KEY] = {
        "issue_key": trigger.issue_key, "run_id": result.run_id,
        "deduplicated": result.deduplicated, "coalesced": result.coalesced,
        "source": trigger.source, "event_type": trigger.event_type}
    return json_response({
        "ok": True,
        "run_id": result.run_id,
        "deduplicated": result.deduplicated or result.coalesced,
        "coalesced": result.coalesced,
    })


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def health_detailed(request: web.Request) -> web.Response:
    report = await health_report(request.app)
    status = 503 if report["status"] == "unhealthy" else 200
    return json_response(report, status)


async def health_report(app: web.Application) -> dict[str, Any]:
    """The service's health: the assessment of mwai.queue.health, as `mwai monitor` and
    `mwai alert` make it, with this process's worker pool as the workers."""
    settings = app[LIVE_KEY].current
    pool = app[POOL_KEY]
    now = time.time()
    database = "healthy"
    snapshot = None
    try:
        snapshot = await app[STORE_KEY].health_snapshot(settings.stuck_after_s, list_stuck=20)
    except StoreError as exc:
        database = f"unhealthy: {exc}"
    workers = Workers(alive=pool.alive, configured=pool.size, kind="workers")
    health = assess(snapshot, workers, HealthRules.of(settings))
    return {
        "status": health.status,
        "paused": health.paused,
        "database": database,
        # The same field names and types as `mwai monitor --json` / `mwai health --json`.
        "stuck_count": health.stuck_count,
        "stuck_runs": [asdict(run) for run in health.stuck_runs],
        "queued": health.queued,
        "running": health.running,
        "oldest_queued_age_s": health.oldest_queued_age_s,
        "workers": {"configured": pool.size, "alive": pool.alive, "busy": pool.busy},
        "problems": list(health.problems),
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[STARTED_KEY], 3),
        "timestamp": now,
    }


def make_processor(settings: Settings) -> Processor:
    """The processor MWAI_PROCESSOR names: the AI Runner flow, or noop."""
    if settings.processor == "noop":
        return NoopProcessor()
    return JiraProcessor(settings)


def _service_ctx(processor: Processor | None) -> Callable[[web.Application],
                                                          AsyncIterator[None]]:
    async def service(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        store = Store(settings.db, settings.synchronous, settings.db_busy_timeout_ms)
        await store.open()
        chosen = processor or make_processor(settings)
        app_metrics = app[metrics.METRICS_KEY]
        checkin = telemetry.PeriodicCheckin(settings, "lease-recovery",
                                            settings.recovery_interval_s)
        jira_flow = chosen if isinstance(chosen, JiraProcessor) else None
        pool = WorkerPool(store, chosen, PoolConfig.of(settings), checkin,
                          observer=app_metrics,
                          on_lost_failed=partial(jira_flow.report_lost, store)
                          if jira_flow else None)
        app_metrics.bind_pool(pool)
        # Tasks started from here on (the workers, their runs) inherit it: the API
        # clients of the processor count their calls without being handed the metrics.
        http.DEFAULT_OBSERVER.set(app_metrics.api_call)
        app[STORE_KEY] = store
        app[POOL_KEY] = pool
        try:
            await pool.start()
        except BaseException:
            await chosen.close()
            await store.close()
            raise
        catch_up = None
        if jira_flow is not None and settings.reconcile_interval_s > 0:
            reconciler = Reconciler(settings, store, jira_flow.jira, pool.notify)
            app[RECONCILER_KEY] = reconciler
            catch_up = asyncio.create_task(reconciler.run_forever(), name="mwai-reconcile")
        yield
        if catch_up is not None:
            catch_up.cancel()
            await asyncio.gather(catch_up, return_exceptions=True)
        await pool.stop()
        await chosen.close()
        await store.close()

    return service


def create_app(settings: Settings, processor: Processor | None = None) -> web.Application:
    """The aiohttp application; ``processor`` overrides MWAI_PROCESSOR (tests)."""
    app = web.Application(
        middlewares=[request_context],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS_KEY] = settings
    app[LIVE_KEY] = LiveSettings(settings)
    app[metrics.METRICS_KEY] = metrics.Metrics()
    app[STARTED_KEY] = time.monotonic()
    limiter = ratelimit.make_limiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    if limiter is not None:
        app[RATE_LIMIT_KEY] = limiter
    app.cleanup_ctx.append(_service_ctx(processor))
    app.router.add_post("/webhook/jira", webhook_jira)
    app.router.add_get("/health", health)
    app.router.add_get("/health/detailed", health_detailed)
    app.router.add_get(openapi.OPENAPI_PATH, openapi.openapi_handler)
    app.router.add_get("/metrics", metrics.metrics_handler(settings.metrics_token,
                                                           _refresh_metrics))
    # The web dashboard (mwai/server/dashboard): its own access rules, CSRF and headers.
    app.add_subapp("/dashboard/", create_dashboard(DashboardDeps(
        settings=settings, store=lambda: app[STORE_KEY], health=lambda: health_report(app),
        wake_workers=lambda count: app[POOL_KEY].notify(count))))
    app.router.add_get("/status", _to_dashboard)
    app.router.add_get("/dashboard", _to_dashboard)
    return app


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    """The seed's /status page lives on as the dashboard."""
    raise web.HTTPMovedPermanently("/dashboard/")


async def _refresh_metrics(app: web.Application) -> None:
    await app[metrics.METRICS_KEY].refresh(app[STORE_KEY], app[LIVE_KEY].current.stuck_after_s)


# Paths whose successful requests are logged at DEBUG: health checks and scrapes.
PROBE_PATHS = frozenset({"/health", "/health/detailed", "/metrics"})


class AccessLogger(AbstractAccessLogger):
    """One structured line per request: method, path, status, duration, and for an
    accepted webhook what it became (issue_key, run_id, deduplicated, coalesced...)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # A probe or a scrape every few seconds would drown the journal: DEBUG,
        # unless it answered an error.
        quiet = request.path in PROBE_PATHS and response.status < 400
        self.logger.log(
            logging.DEBUG if quiet else logging.INFO, "%s %s %s",
            request.method, request.path, response.status,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 3),
                "remote": request.remote,
                "request_id": response.headers.get(REQUEST_ID_HEADER),
                "bytes": response.body_length,
                **request.get(ACCESS_FIELDS_KEY, {}),
            },
        )


async def serve(settings: Settings, processor: Processor | None = None,
                ready: Callable[[], None] | None = None,
                notifier: sdnotify.Notifier | None = None,
                reload: Callable[[], Settings] | None = None) -> None:
    """Run until SIGTERM/SIGINT: listen, work, then stop in order. SIGHUP calls
    ``reload`` for new settings and applies what can change live.

    ``notifier`` tells systemd (Type=notify) READY=1 once listening with the
    workers running, WATCHDOG=1 while workers live, STOPPING=1 at shutdown.
    """
    notifier = notifier or sdnotify.Notifier()
    watchdog: asyncio.Task[None] | None = None
    app = create_app(settings, processor)
    logging.getLogger(AIOHTTP_SERVER_LOGGER).addFilter(CLIENT_ERROR_LOG_FILTER)  # idempotent
    runner = web.AppRunner(app, access_log_class=AccessLogger, handle_signals=False,
                           shutdown_timeout=5,
                           # aiohttp's default keeps a connection that never sends a
                           # request for an hour: idle clients could pile up sockets.
                           keepalive_timeout=settings.client_timeout_s)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_settings, app[LIVE_KEY], reload)
    try:
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port,
                           backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise MwaiError(f"cannot listen on {settings.listen}: {exc.strerror}; is another "
                            "service using that port? Set MWAI_LISTEN or --listen") from None
        log.info("Listening", extra={"listen": settings.listen, "db": settings.db,
                                     "processor": settings.processor,
                                     "workers": settings.workers, "version": __version__})
        if ready is not None:
            ready()
        notifier.ready(f"listening on {settings.listen}, {settings.workers} workers")
        watchdog = sdnotify.start_watchdog(notifier, lambda: app[POOL_KEY].alive > 0)
        await stop.wait()
        log.info("Stopping: no new webhooks or claims; running runs get the grace period",
                 extra={"grace_s": settings.shutdown_grace_s})
    finally:
        notifier.stopping()
        await sdnotify.stop_watchdog(watchdog)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
        log.info("Stopped")
