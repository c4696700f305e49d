"""The job queue: one interface over a database backend (default) and Celery.

    @job("verify_study")
    def verify_study(ctx: JobContext, *, study_instance_uid: str) -> dict: ...

    enqueue("verify_study", {"study_instance_uid": uid})   # dispatched on commit

Names that need the ORM load on first use, because Django imports this package
before the app registry is ready.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from noctispro.jobs.registry import (
    TASK_MODULES,
    JobAbandoned,
    JobCancelled,
    JobInterrupted,
    PermanentJobError,
    job,
    registered_kinds,
)

if TYPE_CHECKING:
    from noctispro.jobs.models import Job, JobState, WorkerHeartbeat
    from noctispro.jobs.queue import cancel, enqueue, get
    from noctispro.jobs.runner import JobContext, execute
    from noctispro.jobs.worker import latest_heartbeat, worker_alive

_LAZY = {
    "Job": "noctispro.jobs.models",
    "JobState": "noctispro.jobs.models",
    "WorkerHeartbeat": "noctispro.jobs.models",
    "cancel": "noctispro.jobs.queue",
    "enqueue": "noctispro.jobs.queue",
    "get": "noctispro.jobs.queue",
    "JobContext": "noctispro.jobs.runner",
    "execute": "noctispro.jobs.runner",
    "latest_heartbeat": "noctispro.jobs.worker",
    "worker_alive": "noctispro.jobs.worker",
}

__all__ = [
    "TASK_MODULES",
    "Job",
    "JobAbandoned",
    "JobCancelled",
    "JobContext",
    "JobInterrupted",
    "JobState",
    "PermanentJobError",
    "WorkerHeartbeat",
    "cancel",
    "enqueue",
    "execute",
    "get",
    "job",
    "latest_heartbeat",
    "registered_kinds",
    "worker_alive",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
