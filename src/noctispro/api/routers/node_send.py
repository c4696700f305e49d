"""Send a study or series to a remote node (C-STORE SCU, as a job).

Not in routers/nodes.py: managing nodes is for administrators, sending is for the
people who work with the studies (admin, radiologist, technologist).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import JobAccepted, Problem, SendToNode
from noctispro.dimse.tasks import SendRefused, SendRequest, start_send

router = APIRouter(
    prefix="/nodes",
    tags=["nodes"],
    route_class=DjangoRoute,
    responses={401: {"model": Problem}},
)

_STATUS = {
    "forbidden": status.HTTP_403_FORBIDDEN,
    "not_found": status.HTTP_404_NOT_FOUND,
    "conflict": status.HTTP_409_CONFLICT,
}


@router.post(
    "/{name}/send",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        403: {"model": Problem, "description": "Your role may not send"},
        404: {"model": Problem, "description": "No such node, or no such study visible to you"},
        409: {"model": Problem, "description": "The node cannot be sent to (TLS)"},
    },
    summary="Send a study or one of its series to the node; follow the job",
)
def send_to_node(name: str, body: SendToNode, caller: CallerDep, response: Response) -> JobAccepted:
    try:
        row = start_send(
            caller.user,
            SendRequest(
                node=name,
                study_instance_uid=body.study_instance_uid,
                series_instance_uid=body.series_instance_uid,
            ),
        )
    except SendRefused as exc:
        raise HTTPException(_STATUS[exc.reason], str(exc)) from exc
    location = f"/api/v1/jobs/{row.pk}"
    response.headers["Location"] = location
    return JobAccepted(job_id=row.pk, state=row.state, location=location)
