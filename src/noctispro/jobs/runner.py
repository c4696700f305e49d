"""`execute(job_id)`: the one runner both backends use, so behaviour is identical.

A claim is a conditional UPDATE (`... WHERE id = ? AND state = 'pending'`): exactly one
worker sees a row count of 1, on SQLite (writes serialised) and PostgreSQL (the
second UPDATE waits for the first and re-checks the WHERE) alike. The claim is
identified afterwards by (id, locked_by, attempts), so a worker whose lease expired
cannot overwrite the attempt another worker took over.

While a job runs, a small thread renews its lease and watches for cancellation. A
worker that dies stops renewing; `recover_expired_leases` then puts the job back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from noctispro.conf import get_settings
from noctispro.jobs.models import Job, JobState
from noctispro.jobs.queue import dispatch
from noctispro.jobs.registry import (
    JobAbandoned,
    JobCancelled,
    LeaseLost,
    PermanentJobError,
    lookup,
)

log = logging.getLogger(__name__)

# Retry backoff: RETRY_BASE_SECONDS * 2**(attempt - 1), at most RETRY_CAP_SECONDS.
RETRY_BASE_SECONDS = 10.0
RETRY_CAP_SECONDS = 3600.0
# Progress writes at most this often (a final fraction of 1.0 is always written).
PROGRESS_INTERVAL_SECONDS = 0.5
# A Celery message may arrive slightly before run_after (clock skew between hosts).
EARLY_TOLERANCE_SECONDS = 1.0
MAX_ERROR_CHARS = 64 * 1024


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not claimable: finished, cancelled, or running elsewhere
    NOT_DUE = "not-due"  # pending, but run_after is still in the future
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # the worker stopped; lease returned
    LOST = "lost"  # the lease expired under us; someone else owns the job


def make_worker_name() -> str:
    """Unique per process: host, pid and a random tag (pids are reused after restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def retry_delay(attempt: int) -> float:
    return float(min(RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), RETRY_CAP_SECONDS))


@dataclass(frozen=True)
class Claim:
    job_id: int
    worker: str
    attempt: int

    def rows(self) -> QuerySet[Job]:
        return Job.objects.filter(
            pk=self.job_id, state=JobState.RUNNING, locked_by=self.worker, attempts=self.attempt
        )


class JobContext:
    """What a job function gets: its id and attempt, progress reports, cancel checks."""

    def __init__(self, claim: Claim, stop: threading.Event) -> None:
        self._claim = claim
        self._stop = stop
        self._last_write = -math.inf
        self._last_check = -math.inf
        self.cancel_seen = threading.Event()
        self.lease_lost = threading.Event()

    @property
    def job_id(self) -> int:
        return self._claim.job_id

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, ..."""
        return self._claim.attempt

    def progress(self, fraction: float, message: str = "") -> None:
        """Record how far the job is (0..1); raises JobCancelled once a cancel is seen.

        Writes are throttled to one per PROGRESS_INTERVAL_SECONDS so a tight loop can
        report freely; a fraction of 1.0 is always written.
        """
        fraction = 0.0 if math.isnan(fraction) else min(max(float(fraction), 0.0), 1.0)
        self._raise_if_interrupted()
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_write < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_write = now
        updated = self._claim.rows().update(progress=fraction, progress_message=message[:255])
        if not updated:
            self.lease_lost.set()
        self._read_cancel(now)
        self._raise_if_interrupted()

    def check_cancelled(self) -> None:
        """Raise JobCancelled if a cancel was requested (reads the row at most twice a second)."""
        self._raise_if_interrupted()
        now = time.monotonic()
        if now - self._last_check >= PROGRESS_INTERVAL_SECONDS:
            self._read_cancel(now)
            self._raise_if_interrupted()

    def _read_cancel(self, now: float) -> None:
        self._last_check = now
        flags = self._claim.rows().values_list("cancel_requested", flat=True).first()
        if flags is None:
            self.lease_lost.set()
        elif flags:
            self.cancel_seen.set()

    def _raise_if_interrupted(self) -> None:
        if self.lease_lost.is_set():
            raise LeaseLost(f"job {self.job_id} lost its lease")
        if self.cancel_seen.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")
        if self._stop.is_set():
            raise JobAbandoned(f"worker stopping; job {self.job_id} returned to the queue")


class _LeaseKeeper(threading.Thread):
    """Renews the lease while the job runs and notices cancel requests between reports."""

    def __init__(self, claim: Claim, ctx: JobContext, lease_seconds: float) -> None:
        super().__init__(name=f"lease-{claim.job_id}", daemon=True)
        self.claim = claim
        self.ctx = ctx
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3, 0.1)
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(self.interval):
                try:
                    self._renew()
                except Exception:
                    log.warning(
                        "could not renew the lease of job %s", self.claim.job_id, exc_info=True
                    )
                    close_old_connections()
        finally:
            connection.close()

    def _renew(self) -> None:
        expires = timezone.now() + timedelta(seconds=self.lease_seconds)
        rows = self.claim.rows()
        if not rows.update(lease_expires_at=expires):
            self.ctx.lease_lost.set()
            return
        if rows.filter(cancel_requested=True).exists():
            self.ctx.cancel_seen.set()


def claim(job_id: int, worker: str) -> Claim | None:
    """Take a due, pending job for `worker`; None if someone else has it or it is not due."""
    now = timezone.now()
    lease = timedelta(seconds=get_settings().job_lease_seconds)
    won = Job.objects.filter(
        pk=job_id,
        state=JobState.PENDING,
        cancel_requested=False,
        run_after__lte=now + timedelta(seconds=EARLY_TOLERANCE_SECONDS),
    ).update(
        state=JobState.RUNNING,
        attempts=F("attempts") + 1,
        locked_by=worker,
        lease_expires_at=now + lease,
        started_at=now,
        progress=0.0,
        progress_message="",
    )
    if not won:
        return None
    attempt = Job.objects.filter(pk=job_id).values_list("attempts", flat=True).get()
    return Claim(job_id, worker, attempt)


def execute(job_id: int, *, worker: str, stop: threading.Event | None = None) -> Outcome:
    """Claim job `job_id` and run it to an end state (or hand it back if `stop` is set)."""
    claimed = claim(job_id, worker)
    if claimed is None:
        not_due = Job.objects.filter(
            pk=job_id, state=JobState.PENDING, cancel_requested=False, run_after__gt=timezone.now()
        ).exists()
        return Outcome.NOT_DUE if not_due else Outcome.SKIPPED
    return _run(claimed, stop or threading.Event())


def _run(claimed: Claim, stop: threading.Event) -> Outcome:
    job = Job.objects.get(pk=claimed.job_id)
    ctx = JobContext(claimed, stop)
    keeper = _LeaseKeeper(claimed, ctx, get_settings().job_lease_seconds)
    keeper.start()
    log.info("job %s %s: attempt %s/%s", job.pk, job.kind, claimed.attempt, job.max_attempts)
    end: Callable[[], Outcome]
    try:
        try:
            spec = lookup(job.kind)
        except ValueError as exc:
            raise PermanentJobError(str(exc)) from None
        result = spec.fn(ctx, **job.payload)
        try:
            result = json.loads(json.dumps(result, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise PermanentJobError(f"result is not JSON-serialisable: {exc}") from None
        end = partial(_finish, claimed, JobState.SUCCEEDED, result=result)
    except JobCancelled:
        end = partial(_finish, claimed, JobState.CANCELLED)
    except JobAbandoned:
        end = partial(release, claimed)
    except LeaseLost:
        log.warning("job %s lost its lease while running; another worker may run it", job.pk)
        end = _lost
    except PermanentJobError:
        end = partial(_finish, claimed, JobState.FAILED, error=_traceback())
    except Exception:
        end = partial(_fail_or_retry, claimed, job.max_attempts, _traceback())
    finally:
        # Stop renewing before the end state is written, so the two never race.
        keeper.done.set()
        keeper.join()
    return end()


def _lost() -> Outcome:
    return Outcome.LOST


def _traceback() -> str:
    text = traceback.format_exc()
    return text if len(text) <= MAX_ERROR_CHARS else "...\n" + text[-MAX_ERROR_CHARS:]


def _locked(claimed: Claim) -> Job | None:
    """The claimed row, locked until the end of the transaction (so cancel() waits)."""
    return claimed.rows().select_for_update().first()


def _finish(
    claimed: Claim, state: JobState, *, result: Any = None, error: str | None = None
) -> Outcome:
    now = timezone.now()
    with transaction.atomic():
        row = _locked(claimed)
        if row is None:
            log.warning("job %s finished after losing its lease; result dropped", claimed.job_id)
            return Outcome.LOST
        row.state = state
        row.finished_at = now
        row.lease_expires_at = None
        fields = ["state", "finished_at", "lease_expires_at"]
        if state == JobState.SUCCEEDED:
            row.result, row.progress = result, 1.0
            fields += ["result", "progress"]
        if error is not None:
            row.error = error
            fields.append("error")
        row.save(update_fields=fields)
    log.info("job %s %s", claimed.job_id, state)
    return Outcome(state.value)


def _fail_or_retry(claimed: Claim, max_attempts: int, error: str) -> Outcome:
    delay = 0.0
    with transaction.atomic():
        row = _locked(claimed)
        if row is None:
            log.warning("job %s failed after losing its lease", claimed.job_id)
            return Outcome.LOST
        if row.cancel_requested:
            row.state, row.finished_at = JobState.CANCELLED, timezone.now()
        elif claimed.attempt >= max_attempts:
            row.state, row.finished_at = JobState.FAILED, timezone.now()
        else:
            delay = retry_delay(claimed.attempt)
            row.state = JobState.PENDING
            row.run_after = timezone.now() + timedelta(seconds=delay)
        row.error = error
        row.lease_expires_at = None
        row.save(update_fields=["state", "finished_at", "run_after", "error", "lease_expires_at"])
    if row.state == JobState.PENDING:
        log.warning(
            "job %s attempt %s failed; retrying in %.1fs\n%s",
            claimed.job_id,
            claimed.attempt,
            delay,
            error,
        )
        dispatch(claimed.job_id, delay)
        return Outcome.RETRYING
    log.error("job %s %s after %s attempts\n%s", claimed.job_id, row.state, claimed.attempt, error)
    return Outcome(row.state)


def release(claimed: Claim) -> Outcome:
    """Hand a job back unfinished (worker stopping): pending again, the attempt not counted."""
    with transaction.atomic():
        row = _locked(claimed)
        if row is None:
            return Outcome.LOST
        if row.cancel_requested:
            row.state, row.finished_at = JobState.CANCELLED, timezone.now()
        else:
            row.state, row.run_after = JobState.PENDING, timezone.now()
            row.attempts -= 1
        row.lease_expires_at = None
        row.save(
            update_fields=["state", "finished_at", "run_after", "attempts", "lease_expires_at"]
        )
    if row.state == JobState.CANCELLED:
        return Outcome.CANCELLED
    log.info("job %s returned to the queue", claimed.job_id)
    dispatch(claimed.job_id)
    return Outcome.ABANDONED


def recover_expired_leases(now: datetime | None = None) -> list[int]:
    """Put running jobs whose worker stopped renewing back to pending (or end them).

    The lost run counts as an attempt; a job out of attempts fails, one with a cancel
    request is cancelled. The expired lease already delayed it, so no extra backoff.
    Returns the ids made pending again.
    """
    now = now or timezone.now()
    Job.objects.filter(state=JobState.PENDING, cancel_requested=True).update(
        state=JobState.CANCELLED, finished_at=now
    )
    expired = list(
        Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=now).values_list(
            "pk", flat=True
        )[:500]
    )
    requeued = []
    for pk in expired:
        with transaction.atomic():
            row = (
                Job.objects.select_for_update()
                .filter(pk=pk, state=JobState.RUNNING, lease_expires_at__lt=now)
                .first()
            )
            if row is None:
                continue
            note = (
                f"attempt {row.attempts}: lease held by {row.locked_by or '?'} expired at "
                f"{row.lease_expires_at:%Y-%m-%d %H:%M:%S%z} (worker stopped or was killed)"
            )
            row.error = f"{row.error}\n{note}".strip() if row.error else note
            row.lease_expires_at = None
            if row.cancel_requested:
                row.state, row.finished_at = JobState.CANCELLED, now
            elif row.attempts >= row.max_attempts:
                row.state, row.finished_at = JobState.FAILED, now
            else:
                row.state, row.run_after = JobState.PENDING, now
                requeued.append(pk)
            row.save(
                update_fields=["state", "finished_at", "run_after", "error", "lease_expires_at"]
            )
        log.warning("job %s: %s; now %s", pk, note, row.state)
    for pk in requeued:
        dispatch(pk)
    return requeued


def redispatch_overdue(older_than_seconds: float) -> list[int]:
    """Re-send pending jobs overdue by more than the given age (their message was lost).

    Only for Celery. Bumping run_after first means each job is re-sent at most once
    per period; a duplicate message is harmless because only one claim can win.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    overdue = list(
        Job.objects.filter(
            state=JobState.PENDING, cancel_requested=False, run_after__lt=cutoff
        ).values_list("pk", "run_after")[:500]
    )
    sent = []
    for pk, run_after in overdue:
        if Job.objects.filter(pk=pk, state=JobState.PENDING, run_after=run_after).update(
            run_after=now
        ):
            dispatch(pk)
            sent.append(pk)
    if sent:
        log.warning("re-sent %s overdue job(s) to the broker: %s", len(sent), sent)
    return sent
