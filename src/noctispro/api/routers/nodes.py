"""Remote DICOM nodes: list, add, remove, C-ECHO. Administrators only.

Nodes are configuration: their hosts and ports map the hospital network, and an echo
makes the server open a connection. So every route here needs the admin role.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from fastapi import APIRouter, Depends, HTTPException, Response, status

from noctispro.accounts import nodes
from noctispro.accounts.models import RemoteNode, Role
from noctispro.api.deps import Caller, CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import Node, NodeCreate, NodeEcho, Problem


def require_admin(caller: CallerDep) -> Caller:
    if not (caller.user.is_superuser or caller.user.role == Role.ADMIN):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only administrators may manage nodes")
    return caller


router = APIRouter(
    prefix="/nodes",
    tags=["nodes"],
    route_class=DjangoRoute,
    dependencies=[Depends(require_admin)],
    responses={401: {"model": Problem}, 403: {"model": Problem}},
)


def _node(node: RemoteNode) -> Node:
    return Node(
        name=node.name,
        ae_title=node.ae_title,
        host=node.host,
        port=node.port,
        facility=node.facility.code if node.facility else None,
        allowed_operations=[op.value for op in node.allowed_operations],
        tls=node.tls,
        description=node.description,
        created_at=node.created_at,
    )


def _invalid(exc: ValidationError) -> HTTPException:
    """Model validation errors in FastAPI's own 422 shape, so clients parse one format."""
    errors = [
        {"loc": ["body", field] if field else ["body"], "msg": message, "type": "value_error"}
        for field, message in nodes.field_problems(exc)
    ]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors)


def _get(name: str) -> RemoteNode:
    try:
        return nodes.get_node(name)
    except nodes.UnknownNode as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("", response_model=list[Node], summary="List the remote DICOM nodes")
def list_nodes() -> list[Node]:
    return [_node(n) for n in nodes.list_nodes()]


@router.post(
    "",
    response_model=Node,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": Problem, "description": "Name or AE title taken"}},
    summary="Add a remote DICOM node",
)
def add_node(body: NodeCreate, response: Response) -> Node:
    try:
        node = nodes.add_node(
            body.name,
            ae_title=body.ae_title,
            host=body.host,
            port=body.port,
            facility_code=body.facility,
            operations=nodes.parse_operations(body.allowed_operations),
            tls=body.tls,
            description=body.description,
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc
    except nodes.NodeConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    response.headers["Location"] = f"/api/v1/nodes/{node.name}"
    return _node(node)


@router.get(
    "/{name}",
    response_model=Node,
    responses={404: {"model": Problem}},
    summary="One remote DICOM node",
)
def get_node(name: str) -> Node:
    return _node(_get(name))


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={404: {"model": Problem}},
    summary="Remove a remote DICOM node",
)
def remove_node(name: str) -> Response:
    try:
        nodes.remove_node(name)
    except nodes.UnknownNode as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/echo",
    response_model=NodeEcho,
    responses={404: {"model": Problem}},
    summary="C-ECHO the node; an unreachable node is a 200 with ok=false",
)
def echo_node(name: str) -> NodeEcho:
    result = nodes.echo_node(_get(name))
    return NodeEcho(
        ok=result.ok, status=result.status, milliseconds=result.milliseconds, detail=result.detail
    )
