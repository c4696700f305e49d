"""`noctispro worker`: runs jobs from the database queue, or a Celery worker in-process.

Either way the main thread only waits for a stop (SIGTERM, SIGINT or the `stop`
event) while threads do the work: job runners, and a maintenance thread that writes
the heartbeat, puts jobs of dead workers back and flags stable studies. On stop,
running jobs are abandoned at their next progress check (lease returned, attempt not
counted); a job that does not check in time is handed back when the grace period ends.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from datetime import timedelta
from types import FrameType
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone

from noctispro.conf import Settings, get_settings
from noctispro.jobs.models import Job, JobState, WorkerBackend, WorkerHeartbeat
from noctispro.jobs.registry import load_task_modules
from noctispro.jobs.runner import (
    Claim,
    Outcome,
    execute,
    make_worker_name,
    recover_expired_leases,
    redispatch_overdue,
    release,
)

log = logging.getLogger(__name__)

# How long a stopping worker waits for running jobs before handing them back.
SHUTDOWN_GRACE_SECONDS = 5.0
# Heartbeat rows of workers that vanished without a clean stop are pruned after this.
HEARTBEAT_RETENTION = timedelta(days=1)
SWEEP_EVERY = 600.0  # seconds between stale-spool sweeps
_WAIT_SLICE = 0.2


def latest_heartbeat() -> WorkerHeartbeat | None:
    """The most recently seen worker, for the health check."""
    return WorkerHeartbeat.objects.order_by("-last_seen").first()


def worker_alive(max_age_seconds: float | None = None) -> bool:
    """True if some worker wrote its heartbeat within the age (default: the health setting)."""
    beat = latest_heartbeat()
    if beat is None:
        return False
    max_age = (
        get_settings().health_worker_max_age_seconds
        if max_age_seconds is None
        else (max_age_seconds)
    )
    return (timezone.now() - beat.last_seen).total_seconds() <= max_age


class DatabaseWorker:
    """Polls the job table for due jobs; one per runner thread."""

    def __init__(self, name: str, stop: threading.Event | None = None, batch: int = 10) -> None:
        self.name = name
        self.stop = stop or threading.Event()
        self.batch = batch

    def run_once(self) -> int | None:
        """Run one due job to its end; return its id, or None if nothing was due."""
        due = (
            Job.objects.filter(
                state=JobState.PENDING, cancel_requested=False, run_after__lte=timezone.now()
            )
            .order_by("run_after", "id")
            .values_list("pk", flat=True)[: self.batch]
        )
        for pk in list(due):
            if self.stop.is_set():
                return None
            if execute(pk, worker=self.name, stop=self.stop) not in (
                Outcome.SKIPPED,
                Outcome.NOT_DUE,
            ):
                return pk
        return None

    def loop(self, poll_seconds: float) -> None:
        try:
            while not self.stop.is_set():
                close_old_connections()
                try:
                    ran = self.run_once()
                except Exception:
                    log.exception("job loop error; retrying in %.1fs", poll_seconds)
                    ran = None
                if ran is None:
                    self.stop.wait(poll_seconds)
        finally:
            connection.close()


class _Maintenance(threading.Thread):
    """Heartbeat, lease recovery, lost-message re-sends, the stable-study scan and the
    change-log listeners."""

    def __init__(self, name: str, backend: WorkerBackend, settings: Settings) -> None:
        super().__init__(name="jobs-maintenance", daemon=True)
        self.worker_name = name
        self.backend = backend
        self.settings = settings
        self.started_at = timezone.now()
        self.halt = threading.Event()
        self.next_sweep = 0.0

    def run(self) -> None:
        try:
            while True:
                self.tick()
                if self.halt.wait(self.settings.worker_heartbeat_seconds):
                    return
        finally:
            connection.close()

    def tick(self) -> None:
        from noctispro.core.events import dispatch_pending
        from noctispro.core.spool import sweep_spool
        from noctispro.index.services import mark_stable_studies

        close_old_connections()
        steps: list[tuple[str, Any]] = [
            ("heartbeat", self.beat),
            ("lease recovery", recover_expired_leases),
            ("stable-study scan", lambda: mark_stable_studies(self.settings.stable_age_seconds)),
            ("change-log listeners", dispatch_pending),
        ]
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + SWEEP_EVERY
            steps.append(("spool sweep", sweep_spool))
        if self.backend is WorkerBackend.CELERY:
            steps.append(
                ("re-send", lambda: redispatch_overdue(max(self.settings.job_lease_seconds, 1)))
            )
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception("worker %s failed", what)
                close_old_connections()

    def beat(self) -> None:
        now = timezone.now()
        WorkerHeartbeat.objects.update_or_create(
            name=self.worker_name,
            defaults={"last_seen": now},
            create_defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "backend": self.backend,
                "started_at": self.started_at,
                "last_seen": now,
            },
        )
        WorkerHeartbeat.objects.filter(last_seen__lt=now - HEARTBEAT_RETENTION).delete()


class _StopSignals:
    """SIGTERM/SIGINT set a flag that the main loop turns into `stop`.

    The handler only assigns an attribute: calling Event.set() from a handler can
    deadlock if the signal lands while the main thread holds the Event's lock.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _wait(stop: threading.Event, signals: _StopSignals, alive: list[threading.Thread]) -> None:
    """Block the main thread until a stop is asked for or every runner has died."""
    while not stop.wait(_WAIT_SLICE):
        if signals.received is not None:
            log.info("worker got %s; stopping", signal.Signals(signals.received).name)
            stop.set()
        elif not any(t.is_alive() for t in alive):
            stop.set()
            raise RuntimeError("every job runner thread has stopped")


def _hand_back(name: str) -> None:
    """Return the leases of jobs this worker still runs after the grace period."""
    for pk, attempts in Job.objects.filter(state=JobState.RUNNING, locked_by=name).values_list(
        "pk", "attempts"
    ):
        outcome = release(Claim(pk, name, attempts))
        log.warning("job %s did not stop within the grace period: %s", pk, outcome)


def _join(threads: list[threading.Thread], name: str) -> None:
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0.0))
    if any(t.is_alive() for t in threads):
        _hand_back(name)


def run(*, concurrency: int = 1, stop: threading.Event | None = None) -> None:
    """Run jobs until SIGTERM/SIGINT (main thread only) or until `stop` is set."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    settings = get_settings()
    stop = stop or threading.Event()
    name = make_worker_name()
    backend = WorkerBackend.CELERY if settings.broker_url else WorkerBackend.DATABASE
    load_task_modules()
    signals = _StopSignals()
    signals.install()
    maintenance = _Maintenance(name, backend, settings)
    maintenance.start()
    log.info("worker %s started: %s backend, concurrency %s", name, backend, concurrency)
    try:
        if backend is WorkerBackend.CELERY:
            _run_celery(name, concurrency, stop, signals)
        else:
            _run_database(name, concurrency, stop, signals, settings.worker_poll_seconds)
    finally:
        stop.set()
        maintenance.halt.set()
        maintenance.join()
        try:
            WorkerHeartbeat.objects.filter(name=name).delete()
        except Exception:
            log.exception("could not remove the heartbeat of worker %s", name)
        signals.restore()
        close_old_connections()
        log.info("worker %s stopped", name)


def _run_database(
    name: str, concurrency: int, stop: threading.Event, signals: _StopSignals, poll: float
) -> None:
    threads = [
        threading.Thread(
            target=DatabaseWorker(name, stop).loop, args=(poll,), name=f"jobs-{i}", daemon=True
        )
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    try:
        _wait(stop, signals, threads)
    finally:
        stop.set()
        _join(threads, name)


def _run_celery(name: str, concurrency: int, stop: threading.Event, signals: _StopSignals) -> None:
    from celery.worker import state as celery_state

    from noctispro.jobs.celery_app import QUEUE, get_celery_app, set_worker_identity

    set_worker_identity(name, stop)
    app = get_celery_app()
    controller = app.WorkController(
        hostname=f"noctispro-{os.getpid()}@{socket.gethostname()}",
        pool="threads",
        concurrency=concurrency,
        queues=[QUEUE],
        loglevel=logging.INFO,
        ready_callback=None,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=controller.start, name="celery-worker", daemon=True)
    celery_state.should_stop = None
    thread.start()
    try:
        _wait(stop, signals, [thread])
    finally:
        stop.set()
        # Warm shutdown: the consumer stops taking messages, running jobs abandon.
        celery_state.should_stop = 0
        _join([thread], name)
        celery_state.should_stop = None
