"""Job status: `GET /api/v1/jobs/{id}` for the jobs a user started (admins: every job)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import JobStatus, Problem
from noctispro.jobs.selectors import job_status, visible_job

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    route_class=DjangoRoute,
    responses={401: {"model": Problem}},
)


@router.get(
    "/{job_id}",
    response_model=JobStatus,
    responses={404: {"model": Problem, "description": "No such job, or not yours"}},
    summary="A job's state, progress, result and error",
)
def get_job(job_id: int, caller: CallerDep) -> JobStatus:
    row = visible_job(caller.user, job_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
    return JobStatus(**job_status(row))
