"""The producer side: enqueue, cancel, get, and handing job ids to the backend.

A job row is written in the caller's transaction and only handed to the backend once
that transaction commits (DESIGN §6.9), so a worker never sees a job whose data
was rolled back. The database backend needs no hand-off (workers poll the table);
Celery gets the job id and nothing else.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from noctispro.conf import get_settings
from noctispro.jobs.models import Job, JobState
from noctispro.jobs.registry import lookup

log = logging.getLogger(__name__)


def enqueue(
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    max_attempts: int = 3,
    delay_seconds: float = 0,
    created_by: Any = None,
) -> Job:
    """Create a pending job now and dispatch it when the current transaction commits.

    `created_by`: the user who asked for it, so they (and admins) can follow it.
    """
    spec = lookup(kind)
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise ValueError("payload must be a dict of keyword arguments")
    try:
        # Round-trip so the function sees exactly what a worker will read back.
        payload = json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload must be JSON-serialisable: {exc}") from None
    spec.check_payload(payload)
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if delay_seconds < 0:
        raise ValueError("delay_seconds must not be negative")
    using = router.db_for_write(Job)
    row = Job.objects.using(using).create(
        kind=kind,
        payload=payload,
        max_attempts=max_attempts,
        run_after=timezone.now() + timedelta(seconds=delay_seconds),
        created_by=created_by,
    )
    job_id = row.pk
    transaction.on_commit(lambda: dispatch(job_id, delay_seconds), using=using)
    return row


def get(job_id: int) -> Job | None:
    return Job.objects.filter(pk=job_id).first()


def cancel(job_id: int) -> bool:
    """Cancel a job: a pending one at once, a running one at its next progress check.

    Returns False if the job does not exist or has already finished. The flag is set
    first and claims skip flagged jobs, so a job cannot slip from pending to running
    between the two updates.
    """
    flagged = Job.objects.filter(pk=job_id, state__in=[JobState.PENDING, JobState.RUNNING]).update(
        cancel_requested=True
    )
    if not flagged:
        return False
    Job.objects.filter(pk=job_id, state=JobState.PENDING).update(
        state=JobState.CANCELLED, finished_at=timezone.now(), lease_expires_at=None
    )
    return True


def dispatch(job_id: int, countdown: float = 0) -> None:
    """Tell the backend that a job is due (after `countdown` seconds).

    Failures are logged, not raised: the row is already committed, and workers
    re-dispatch pending jobs whose message went missing.
    """
    if not get_settings().broker_url:
        return  # database workers poll the table
    try:
        from noctispro.jobs.celery_app import send_job

        send_job(job_id, countdown)
    except Exception:
        log.exception("could not send job %s to the broker; a worker will re-send it", job_id)
