"""Query (C-FIND SCU) and retrieve (C-MOVE SCU) a remote node: /api/v1/nodes/{name}/...

Administrators, radiologists and technologists, for the nodes whose facility they can
see (`dimse.remote_qr`). A query is answered synchronously within
NOCTISPRO_REMOTE_QUERY_TIMEOUT; a retrieve is a job (202 + job id).

Remote trouble is told apart: 502 when the node refused or failed (with its DIMSE
status), 502 when it cannot be reached, 504 when it did not answer in time.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from noctispro.accounts import nodes
from noctispro.api.deps import Caller, CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import Problem
from noctispro.dimse import qr_scu, remote_qr
from noctispro.dimse.qr_scu import Level, RemoteQuery

UID = r"^[0-9]+(\.[0-9]+)*$"


def require_qr_role(caller: CallerDep) -> Caller:
    if not remote_qr.may_query_remote(caller.user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "your role may not query or retrieve remote nodes"
        )
    return caller


router = APIRouter(
    prefix="/nodes",
    tags=["query/retrieve"],
    route_class=DjangoRoute,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem, "description": "No such node"},
        409: {"model": Problem, "description": "The node cannot do this as configured"},
    },
)


class NodeQuery(BaseModel):
    """A C-FIND identifier: filters in DICOM matching syntax, return keys left empty."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["PATIENT", "STUDY", "SERIES", "IMAGE"] = "STUDY"
    information_model: Literal["study", "patient"] = Field(
        "study", description="Study Root (default) or Patient Root; PATIENT level uses Patient Root"
    )
    filters: dict[str, str] = Field(
        default_factory=dict,
        description="DICOM keyword → matching value (`DOE*`, `20240101-20241231`, `CT`)",
        examples=[{"PatientName": "DOE*", "StudyDate": "20240101-", "ModalitiesInStudy": "CT"}],
    )
    return_keys: list[str] = Field(
        default_factory=list, description="Extra keywords to return (the level's usual keys always)"
    )


class NodeQueryResult(BaseModel):
    node: str
    level: str
    count: int
    truncated: bool = Field(
        description="The match cap (NOCTISPRO_REMOTE_QUERY_MAX_MATCHES) was reached; "
        "the query was cancelled and there may be more"
    )
    milliseconds: float
    matches: list[dict[str, Any]] = Field(description="One object per match: keyword → value")


class RemoteProblem(BaseModel):
    detail: str
    kind: Literal["unreachable", "rejected", "timeout", "aborted", "failed"]
    status: str | None = Field(None, description="The remote DIMSE status, e.g. 0xA900")
    error_comment: str = ""


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    study_instance_uid: str = Field(pattern=UID, max_length=64)
    series_instance_uid: str | None = Field(None, pattern=UID, max_length=64)


class RetrieveStarted(BaseModel):
    job_id: int
    kind: str
    state: str
    node: str
    study_instance_uid: str
    series_instance_uid: str | None


def _problem(exc: Exception) -> HTTPException:
    if isinstance(exc, nodes.UnknownNode):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, remote_qr.NotAllowed):
        return HTTPException(status.HTTP_403_FORBIDDEN, str(exc))
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


def _remote_failure(exc: qr_scu.RemoteError) -> JSONResponse:
    code = status.HTTP_504_GATEWAY_TIMEOUT if exc.kind == "timeout" else status.HTTP_502_BAD_GATEWAY
    body = RemoteProblem(
        detail=exc.message,
        kind=exc.kind,
        status=None if exc.status is None else f"0x{exc.status:04X}",
        error_comment=exc.error_comment,
    )
    return JSONResponse(body.model_dump(), status_code=code)


@router.post(
    "/{name}/query",
    response_model=NodeQueryResult,
    responses={
        422: {"description": "Not a valid query"},
        502: {"model": RemoteProblem, "description": "The node refused, failed or is unreachable"},
        504: {"model": RemoteProblem, "description": "The node did not answer in time"},
    },
    summary="C-FIND the node (synchronous, bounded by a timeout and a match cap)",
    dependencies=[Depends(require_qr_role)],
)
def query_node(name: str, body: NodeQuery, caller: CallerDep) -> NodeQueryResult | JSONResponse:
    try:
        query = RemoteQuery(
            level=Level(body.level),
            filters=body.filters,
            return_keys=tuple(body.return_keys),
            information_model=body.information_model,
        )
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body"], "msg": str(exc), "type": "value_error"}],
        ) from exc
    try:
        result = remote_qr.query_node(caller.user, name, query)
    except (nodes.UnknownNode, remote_qr.NotAllowed, remote_qr.NodeUnusable) as exc:
        raise _problem(exc) from exc
    except qr_scu.RemoteError as exc:
        return _remote_failure(exc)
    return NodeQueryResult(
        node=name,
        level=query.level.value,
        count=len(result.matches),
        truncated=result.truncated,
        milliseconds=result.milliseconds,
        matches=result.matches,
    )


@router.post(
    "/{name}/retrieve",
    response_model=RetrieveStarted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Retrieve a study or series from the node into NoctisPro (C-MOVE to us, as a job)",
    dependencies=[Depends(require_qr_role)],
)
def retrieve_from_node(
    name: str, body: RetrieveRequest, caller: CallerDep, response: Response
) -> RetrieveStarted:
    try:
        job = remote_qr.start_retrieve(
            caller.user, name, body.study_instance_uid, body.series_instance_uid
        )
    except (nodes.UnknownNode, remote_qr.NotAllowed, remote_qr.NodeUnusable) as exc:
        raise _problem(exc) from exc
    response.headers["Location"] = f"/api/v1/jobs/{job.pk}"
    return RetrieveStarted(
        job_id=job.pk,
        kind=job.kind,
        state=job.state,
        node=name,
        study_instance_uid=body.study_instance_uid,
        series_instance_uid=body.series_instance_uid,
    )
