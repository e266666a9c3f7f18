"""The worker pool: N coroutines that claim runs and hand them to the processor.

* claim: one atomic UPDATE ... RETURNING in the store; idle workers sleep until
  an enqueue wakes exactly as many of them as there are new runs (a slow
  safety poll covers runs queued by other processes or coming due later);
* heartbeat: the leases of running runs are renewed while their task lives;
* recovery: runs of other processes that are dead go back to the queue, or fail
  once their attempts are spent: at once for a process of this host whose pid is
  gone (mwai.queue.health.process_liveness), after its lease for any other;
* pause: `mwai pause` stops every claim (the claim query reads it), nothing else;
* retry: a TransientError re-queues the run with exponential backoff + jitter;
* cancel: an operator's cancel request (a flag in the database) cancels the
  run's task here;
* stop: no more claims, running runs get a grace period, then they are put
  back to queued without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mwai import telemetry
from mwai.backoff import backoff_s
from mwai.errors import StoreError, TransientError
from mwai.logs import WORKERS_LOGGER, log_context
from mwai.model import ClaimedRun, LostRun
from mwai.queue import clock
from mwai.queue.processor import Processor, RunContext, RunObserver
from mwai.queue.store import Store
from mwai.settings import Settings
from mwai.telemetry import PeriodicCheckin

log = logging.getLogger(WORKERS_LOGGER)
T = TypeVar("T")

CANCEL_POLL_S = 0.5
STORE_RETRY_S = 1.0
SETTLE_TRIES_AT_SHUTDOWN = 5
# A wall-clock step larger than this (NTP step, manual change) pauses lease recovery.
CLOCK_JUMP_TOLERANCE_S = 1.0


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class PoolConfig:
    """What the pool needs of the settings (MWAI_WORKERS, MWAI_LEASE_S, ...)."""

    workers: int
    lease_s: float
    heartbeat_s: float
    poll_s: float
    recovery_interval_s: float
    max_attempts: int
    retry_base_s: float
    retry_max_s: float
    shutdown_grace_s: float

    @classmethod
    def of(cls, settings: Settings) -> PoolConfig:
        return cls(workers=settings.workers, lease_s=settings.lease_s,
                   heartbeat_s=settings.heartbeat_s, poll_s=settings.poll_s,
                   recovery_interval_s=settings.recovery_interval_s,
                   max_attempts=settings.max_attempts, retry_base_s=settings.retry_base_s,
                   retry_max_s=settings.retry_max_s,
                   shutdown_grace_s=settings.shutdown_grace_s)


@dataclass
class _Active:
    run: ClaimedRun
    task: asyncio.Task[ClaimedRun | None]
    cancel_reason: str | None = None


class WorkerPool:
    def __init__(
        self,
        store: Store,
        processor: Processor,
        config: PoolConfig,
        recovery_checkin: PeriodicCheckin,
        observer: RunObserver | None = None,
        on_lost_failed: Callable[[LostRun], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.processor = processor
        self.config = config
        self.size = config.workers
        self.observer = observer
        # Told of a run lease recovery failed for good (the composition root wires the
        # processor's report: a run never fails without saying so where people look).
        self._on_lost_failed = on_lost_failed
        # Sentry's cron monitor of lease recovery (a no-op without SENTRY_DSN).
        self._recovery_checkin = recovery_checkin
        self._workers: list[asyncio.Task[None]] = []
        self._background: list[asyncio.Task[None]] = []
        self._active: dict[int, _Active] = {}
        self._idle: list[asyncio.Future[None]] = []
        self._wake_seq = 0
        self._stopping = False
        self._timers: set[asyncio.TimerHandle] = set()
        self.last_heartbeat_monotonic = time.monotonic()
        self._clock_marks = (clock.now_s(), clock.monotonic_s())
        self._recovery_paused_until_monotonic = 0.0
        # Rounds of the recovery loop so far, paused ones included: a test waits for
        # rounds to pass instead of sleeping a guessed number of intervals.
        self.recovery_rounds = 0

    # ------------------------------------------------------------------ status

    @property
    def alive(self) -> int:
        return sum(1 for task in self._workers if not task.done())

    @property
    def busy(self) -> int:
        return len(self._active)

    @property
    def idle(self) -> int:
        """Workers parked until an enqueue (or the slow safety poll) wakes them."""
        return len(self._idle)

    def active_runs(self) -> list[ClaimedRun]:
        return [active.run for active in self._active.values()]

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.store.register_process()
        await self._recover_once()
        # Optional hook: the Jira flow removes worktrees a crash left behind.
        processor_start = getattr(self.processor, "start", None)
        if processor_start is not None:
            await processor_start()
        for index in range(self.size):
            worker_id = f"{self.store.process_id}/w{index + 1}"
            self._workers.append(asyncio.create_task(self._worker(worker_id), name=worker_id))
        self._background = [
            asyncio.create_task(self._heartbeat_loop(), name="mwai-heartbeat"),
            asyncio.create_task(self._recovery_loop(), name="mwai-recovery"),
            asyncio.create_task(self._cancel_loop(), name="mwai-cancel-poll"),
        ]
        log.info("Workers started", extra={"workers": self.size,
                                            "process_id": self.store.process_id})
        paused = await self.store.paused()
        if paused is not None:
            # A service started during maintenance: say why it takes no run.
            log.warning("Claims are paused; no run starts until `mwai resume`", extra={
                "paused_by": paused.get("by"), "reason": paused.get("reason")})

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming; let running runs finish for ``grace_s``, then release them."""
        grace_s = self.config.shutdown_grace_s if grace_s is None else grace_s
        self._stopping = True
        self.notify(len(self._idle))
        for handle in self._timers:
            handle.cancel()
        running = [active.task for active in self._active.values()]
        if running:
            log.info("Waiting for running runs to finish", extra={
                "running": len(running), "grace_s": grace_s})
            await asyncio.wait(running, timeout=grace_s)
        for active in list(self._active.values()):
            if not active.task.done():
                active.cancel_reason = "shutdown"
                active.task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(StoreError):
            await self.store.unregister_process()
        log.info("Workers stopped")

    # ------------------------------------------------------------------ wakeup

    def notify(self, count: int = 1) -> None:
        """Wake up to ``count`` idle workers (new runs were queued)."""
        self._wake_seq += 1
        for _ in range(min(count, len(self._idle))):
            waiter = self._idle.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    def _notify_later(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.notify(1)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    async def _wait_for_work(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout=self.config.poll_s)
        except TimeoutError:
            pass
        finally:
            if waiter in self._idle:
                self._idle.remove(waiter)

    # ------------------------------------------------------------------ workers

    async def _worker(self, worker_id: str) -> None:
        # A completed run hands back the worker's next run, claimed in the same
        # transaction; only an idle worker claims on its own.
        run: ClaimedRun | None = None
        while not self._stopping:
            if run is None:
                run = await self._claim(worker_id)
                if run is None:
                    continue
            run_id = run.id
            task = asyncio.create_task(self._run(run), name=f"run-{run_id}")
            self._active[run_id] = _Active(run, task)
            try:
                run = await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    raise
                run = None
            finally:
                self._active.pop(run_id, None)
        if run is not None:  # claimed together with a completion as the pool stopped
            await self._give_back(run)

    async def _claim(self, worker_id: str) -> ClaimedRun | None:
        seq = self._wake_seq
        try:
            run = await self.store.claim(worker_id, self.config.lease_s)
        except StoreError as exc:
            log.error("Claim failed; retrying", extra={"worker": worker_id, "error": str(exc)})
            await asyncio.sleep(STORE_RETRY_S)
            return None
        if run is None and seq == self._wake_seq and not self._stopping:
            await self._wait_for_work()
        return run

    async def _give_back(self, run: ClaimedRun) -> None:
        await self._settle(lambda: self.store.release(
            run.id, run.issue_key, run.attempts, "service shutting down"))

    async def _run(self, run: ClaimedRun) -> ClaimedRun | None:
        # action: "none" until the run decides (ctx.record(action=...) rebinds it).
        with log_context(run_id=run.id, issue_key=run.issue_key, worker=run.worker,
                         action=run.action or "none"), telemetry.run_scope(run):
            queue_wait_s = round(run.claimed_at - run.available_at, 6)
            # The outcome line below repeats attempt and queue wait: at DEBUG here, so a
            # run costs one INFO line, not two.
            if log.isEnabledFor(logging.DEBUG):
                log.debug("Run claimed", extra={"event": "Run claimed",
                                                "attempt": run.attempts,
                                                "queue_wait_s": queue_wait_s})
            if self.observer is not None:
                self.observer.run_claimed(run)
            ctx = RunContext(run=run, store=self.store, notify=self.notify,
                             observer=self.observer)
            started = time.monotonic()
            outcome, next_run = await self._process(ctx)
            duration_s = time.monotonic() - started
            log.info(f"Run {outcome}", extra={
                "event": f"Run {outcome}", "duration_s": round(duration_s, 6),
                "attempt": run.attempts, "queue_wait_s": queue_wait_s})
            if self.observer is not None:
                self.observer.run_finished(run, outcome, duration_s)
            return next_run

    async def _process(self, ctx: RunContext) -> tuple[str, ClaimedRun | None]:
        """Run the processor and record the outcome; returns it and the next run."""
        run = ctx.run
        try:
            await self.processor.process(ctx)
        except asyncio.CancelledError:
            await self._flush_notes(ctx)
            reason = self._active[run.id].cancel_reason if run.id in self._active else None
            if reason == "cancel":
                await self._settle(lambda: self.store.finish_cancelled(
                    run.id, run.worker, "cancelled while running"))
                return "cancelled", None
            await self._give_back(run)
            return "released", None
        except TransientError as exc:
            await self._flush_notes(ctx)
            return await self._retry_or_fail(run, exc), None
        except Exception as exc:
            log.exception("Run failed", extra={"event": "Run failed"})
            await self._flush_notes(ctx)
            error = describe_error(exc)
            await self._settle(lambda: self.store.fail(run.id, run.worker, error))
            return "failed", None
        notes = ctx.take_notes()
        lease_s = None if self._stopping else self.config.lease_s
        written = await self._settle(lambda: self.store.complete_and_claim(
            run.id, run.worker, notes, lease_s))
        return "completed", written[1] if written else None

    async def _flush_notes(self, ctx: RunContext) -> None:
        notes = ctx.take_notes()
        if notes:
            await self._settle(lambda: self.store.add_events(notes))

    async def _retry_or_fail(self, run: ClaimedRun, exc: TransientError) -> str:
        error = describe_error(exc)
        if run.attempts >= self.config.max_attempts:
            message = f"gave up after {run.attempts} attempts: {error}"
            log.error("Run failed", extra={"event": "Run failed", "error": message})
            await self._settle(lambda: self.store.fail(run.id, run.worker, message))
            return "failed"
        # A Retry-After longer than MWAI_RETRY_MAX_S waits MWAI_RETRY_MAX_S: the operator's bound.
        delay_s = backoff_s(run.attempts, base_s=self.config.retry_base_s,
                            max_s=self.config.retry_max_s, retry_after_s=exc.retry_after_s,
                            retry_after_max_s=self.config.retry_max_s)
        log.warning("Transient error; retry scheduled", extra={
            "event": "Retry scheduled", "error": error, "delay_s": round(delay_s, 3)})
        await self._settle(lambda: self.store.retry_later(
            run.id, run.issue_key, error, delay_s, run.attempts))
        self._notify_later(delay_s)
        return "retried"

    async def _settle(self, write: Callable[[], Awaitable[T]]) -> T | None:
        """Write a run's final state, retrying while the database is unavailable.

        While the pool runs, it keeps trying (the worker waits; the database is down
        anyway): lease recovery skips the runs of its own live process, so a run left
        'running' here would stay stuck until a restart. Only at shutdown does it give
        up after a few tries; the next start then recovers the run (its process is
        gone): nothing is lost, at worst the run is done again.
        """
        attempt = 0
        while True:
            try:
                return await write()
            except StoreError as exc:
                attempt += 1
                if self._stopping and attempt >= SETTLE_TRIES_AT_SHUTDOWN:
                    log.error("Gave up recording the run's outcome at shutdown; the next "
                              "start recovers the run", extra={"error": str(exc)})
                    return None
                log.error("Could not record the run's outcome; retrying", extra={
                    "error": str(exc), "attempt": attempt})
                await asyncio.sleep(STORE_RETRY_S * min(attempt, 5))

    # --------------------------------------------------------------- background

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            self.last_heartbeat_monotonic = time.monotonic()
            pairs = [(active.run.id, active.run.worker) for active in self._active.values()]
            try:
                await self.store.renew_leases(pairs, self.config.lease_s)
            except StoreError as exc:
                log.error("Lease renewal failed", extra={"error": str(exc)})

    async def _recovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.recovery_interval_s)
            if not self._paused_by_clock_jump():
                await self._recover_once()
            self.recovery_rounds += 1

    def _paused_by_clock_jump(self) -> bool:
        """True for one lease (monotonic) after the wall clock jumped.

        Leases are wall-clock times shared with other processes: right after a
        forward jump every lease looks expired until its live owner renews it, which
        it does within one lease. Until then, recovering would take healthy runs away.
        """
        wall_s, monotonic_s = clock.now_s(), clock.monotonic_s()
        last_wall_s, last_monotonic_s = self._clock_marks
        self._clock_marks = (wall_s, monotonic_s)
        jump_s = (wall_s - last_wall_s) - (monotonic_s - last_monotonic_s)
        if abs(jump_s) > CLOCK_JUMP_TOLERANCE_S:
            self._recovery_paused_until_monotonic = monotonic_s + self.config.lease_s
            log.warning("Wall clock jumped; lease recovery waits one lease so live "
                        "processes renew theirs first", extra={
                            "jump_s": round(jump_s, 3), "wait_s": self.config.lease_s})
        return monotonic_s < self._recovery_paused_until_monotonic

    async def _recover_once(self) -> None:
        try:
            # A process of this host whose pid is gone is dead at once (mwai.queue.health):
            # its runs come back without waiting for their lease to expire.
            dead = await self.store.recover_dead_processes(self.config.max_attempts)
            for item in dead:
                log.warning("Recovered run of a dead process", extra={
                    "run_id": item.run_id, "issue_key": item.issue_key,
                    "outcome": item.outcome, "lost_worker": item.worker})
            lost = await self.store.recover_expired(self.config.max_attempts)
        except StoreError as exc:
            log.error("Lease recovery failed", extra={"error": str(exc)})
            self._recovery_checkin.report(ok=False)
            return
        self._recovery_checkin.report(ok=True)
        for item in lost:
            log.warning("Lease expired; worker lost", extra={
                "run_id": item.run_id, "issue_key": item.issue_key, "outcome": item.outcome,
                "lost_worker": item.worker})
        requeued = sum(1 for item in lost if item.outcome == "queued")
        if requeued:
            self.notify(requeued)
        await self._report_lost_failed([*dead, *lost])

    async def _report_lost_failed(self, lost: list[LostRun]) -> None:
        for item in lost:
            if item.outcome != "failed" or self._on_lost_failed is None:
                continue
            try:
                await self._on_lost_failed(item)
            except Exception as exc:  # reporting must not stop recovery
                log.error("Could not report a run failed by lease recovery", extra={
                    "run_id": item.run_id, "error": describe_error(exc)})

    async def _cancel_loop(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            if not self._active:
                continue
            try:
                wanted = await self.store.cancel_requests()
            except StoreError as exc:
                log.error("Reading cancel requests failed", extra={"error": str(exc)})
                continue
            for run_id in wanted:
                active = self._active.get(run_id)
                if active is not None and active.cancel_reason is None:
                    log.warning("Cancelling run on operator request", extra={"run_id": run_id})
                    active.cancel_reason = "cancel"
                    active.task.cancel()

