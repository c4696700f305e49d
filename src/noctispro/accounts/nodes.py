"""Remote DICOM nodes: writes and reads shared by the CLI, the API and the DIMSE side.

Validation lives on the model (`full_clean`), so the admin, the CLI and the API refuse
the same input. Duplicates are told apart from invalid input (`NodeConflict`), because
the API answers them with 409, not 422.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from noctispro.accounts.models import DEFAULT_OPERATIONS, Facility, Operation, RemoteNode

if TYPE_CHECKING:
    from noctispro.dimse.scu import EchoResult

#: Each phase of a C-ECHO (connect, associate, echo) waits at most this long: an echo is
#: a quick "is it there?", not a transfer, so the long DIMSE network timeout is wrong here.
ECHO_TIMEOUT_SECONDS = 5.0


class NodeConflict(Exception):
    """A node with this name or AE title exists already."""


class UnknownNode(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no such node {name!r}")
        self.name = name


def field_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, message) pairs of a validation error; field "" when it is about the whole."""
    if not hasattr(exc, "error_dict"):
        return [("", message) for message in exc.messages]
    return [
        ("" if field == NON_FIELD_ERRORS else field, message)
        for field, messages in exc.message_dict.items()
        for message in messages
    ]


def parse_operations(values: Iterable[str]) -> frozenset[Operation]:
    """`store`, `find`, `move`, `get` (any case), or `none` alone for the empty set.

    ValueError names the unknown ones.
    """
    wanted = {v.strip().lower() for v in values if v.strip()}
    if wanted == {"none"}:
        return frozenset()
    unknown = wanted - set(Operation.values)
    if unknown:
        raise ValueError(
            f"unknown operation {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(Operation.values)}"
        )
    return frozenset(Operation(v) for v in wanted)


def add_node(
    name: str,
    *,
    ae_title: str,
    host: str,
    port: int,
    facility_code: str | None = None,
    operations: Iterable[Operation] = DEFAULT_OPERATIONS,
    tls: bool = False,
    description: str = "",
) -> RemoteNode:
    """Add a node. ValidationError for bad input, NodeConflict for a taken name or AE title."""
    facility = None
    if facility_code:
        facility = Facility.objects.filter(code=facility_code).first()
        if facility is None:
            raise ValidationError({"facility": f"no such facility {facility_code!r}"})
    node = RemoteNode(
        name=name.strip(),
        ae_title=ae_title.strip(),
        host=host.strip(),
        port=port,
        facility=facility,
        tls=tls,
        description=description.strip(),
    )
    node.set_allowed_operations(frozenset(operations))
    node.full_clean(validate_unique=False)
    _refuse_duplicates(node)
    try:
        with transaction.atomic():
            node.save()
    except IntegrityError as exc:
        # Another process added the same name or AE title since the check above.
        raise NodeConflict(f"node {node.name!r} or AE title {node.ae_title!r} exists") from exc
    return node


def _refuse_duplicates(node: RemoteNode) -> None:
    taken = RemoteNode.objects.filter(name=node.name).first()
    if taken is not None:
        raise NodeConflict(f"a node named {node.name!r} exists already")
    taken = RemoteNode.objects.filter(ae_title=node.ae_title).first()
    if taken is not None:
        raise NodeConflict(f"AE title {node.ae_title!r} is used by node {taken.name!r}")


def remove_node(name: str) -> None:
    deleted, _ = RemoteNode.objects.filter(name=name).delete()
    if not deleted:
        raise UnknownNode(name)


def list_nodes() -> QuerySet[RemoteNode]:
    return RemoteNode.objects.select_related("facility").order_by("name")


def get_node(name: str) -> RemoteNode:
    node = list_nodes().filter(name=name).first()
    if node is None:
        raise UnknownNode(name)
    return node


def node_for_ae_title(ae_title: str) -> RemoteNode | None:
    """The node of a calling AE title or C-MOVE destination (None: not a known node)."""
    return list_nodes().filter(ae_title=ae_title.strip()).first()


def echo_node(node: RemoteNode, *, timeout: float = ECHO_TIMEOUT_SECONDS) -> EchoResult:
    """C-ECHO the node as our own AE title, over DICOM TLS if the node is marked `tls`."""
    from noctispro.conf import get_settings
    from noctispro.dimse import tls
    from noctispro.dimse.scu import EchoResult, verify

    settings = get_settings()
    try:
        tls_args = tls.tls_args(node, settings)
    except tls.TLSSetupError as exc:
        return EchoResult(
            ok=False,
            status=None,
            milliseconds=0.0,
            detail=f"cannot set up DICOM TLS for the node ({exc}); nothing sent",
        )
    return verify(
        node.host,
        node.port,
        node.ae_title,
        calling_ae=settings.ae_title,
        timeout=timeout,
        tls_args=tls_args,
    )
