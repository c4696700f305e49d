"""Reads of the job table for people: who may see a job, and what they see of it."""

from __future__ import annotations

from typing import Any

from noctispro.accounts.models import Role, User
from noctispro.jobs.models import Job


def job_status(row: Job) -> dict[str, Any]:
    """What the jobs API and the web page show of a job."""
    error = row.error.strip().splitlines()[-1] if row.error.strip() else ""
    return {
        "id": row.pk,
        "kind": row.kind,
        "state": row.state,
        "progress": row.progress,
        "progress_message": row.progress_message,
        "result": row.result,
        "error": error,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }


def visible_job(user: User, job_id: int) -> Job | None:
    """A job the user created, or any job for an admin."""
    rows = Job.objects.filter(pk=job_id)
    if not (user.is_superuser or user.role == Role.ADMIN):
        rows = rows.filter(created_by=user)
    return rows.first()
