"""The Celery backend, used when NOCTISPRO_BROKER_URL is set (Celery is an optional extra).

The broker carries only job ids; the Job row keeps state, progress, result, error and
the cancel flag, and `execute` is the same runner the database backend uses. Messages
are acknowledged on receipt: a worker that dies mid-job leaves a running row whose
lease expires, and the survivors put it back and re-send it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django.utils import timezone

from noctispro.conf import get_settings
from noctispro.jobs.models import Job
from noctispro.jobs.runner import Outcome, execute, make_worker_name

if TYPE_CHECKING:
    from celery import Celery

TASK_NAME = "noctispro.run_job"
# Our own queue, so a broker shared with other Celery apps does not mix messages.
QUEUE = "noctispro.jobs"


@dataclass
class _WorkerIdentity:
    name: str = field(default_factory=make_worker_name)
    stop: threading.Event = field(default_factory=threading.Event)


_identity = _WorkerIdentity()


def set_worker_identity(name: str, stop: threading.Event) -> None:
    """Name and stop event that jobs run by this process's Celery worker get."""
    _identity.name, _identity.stop = name, stop


@lru_cache(maxsize=1)
def get_celery_app() -> Celery:
    try:
        from celery import Celery
    except ImportError as exc:
        raise ImproperlyConfigured(
            "NOCTISPRO_BROKER_URL is set but Celery is not installed "
            "(pip install 'noctispro[celery]')"
        ) from exc
    settings = get_settings()
    # fixups=[]: no Django fixup; connections are handled around each job below.
    app = Celery("noctispro", broker=settings.broker_url, fixups=[], set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5},
        enable_utc=True,
        timezone="UTC",
    )
    app.task(name=TASK_NAME, ignore_result=True)(run_job)
    return app


def reset_celery_app() -> None:
    """Forget the app (tests change NOCTISPRO_BROKER_URL between cases)."""
    get_celery_app.cache_clear()


def send_job(job_id: int, countdown: float = 0) -> None:
    get_celery_app().send_task(
        TASK_NAME, args=[job_id], countdown=countdown if countdown > 0 else None, queue=QUEUE
    )


def run_job(job_id: int) -> None:
    """The Celery task: run one job by id; re-send it if the message came too early."""
    if _identity.stop.is_set():
        # Shutting down: the message was already taken off the queue, so pass it on
        # instead of claiming a job only to hand it back.
        send_job(job_id)
        return
    close_old_connections()
    try:
        outcome = execute(job_id, worker=_identity.name, stop=_identity.stop)
        if outcome is Outcome.NOT_DUE:
            run_after = Job.objects.filter(pk=job_id).values_list("run_after", flat=True).first()
            if run_after is not None:
                send_job(job_id, max((run_after - timezone.now()).total_seconds(), 0.0))
    finally:
        close_old_connections()
