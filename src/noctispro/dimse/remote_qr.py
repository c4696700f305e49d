"""Query and retrieve remote nodes for users: the rules the API and the web page share.

- Who: administrators, radiologists and technologists; referring physicians may not.
  A user may use a node only if they can see the facility that node's data is filed
  under (its own facility, else the default one), because a retrieve files the
  studies there and a query shows that facility's patients.
- Query: a C-FIND SCU (`qr_scu.find`), synchronous and bounded by
  NOCTISPRO_REMOTE_QUERY_TIMEOUT and NOCTISPRO_REMOTE_QUERY_MAX_MATCHES.
- Retrieve: a job (`retrieve_from_node`) that asks the node to C-MOVE the study (or a
  series) to our own AE title. The node must know our AE title, host and port, and
  must be allowed to store to us; the instances come in through our C-STORE SCP
  (ingest) like any other, filed under the node's facility (`facility_for_ae`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from noctispro.accounts import nodes
from noctispro.accounts.facilities import facility_for_ae
from noctispro.accounts.models import Facility, Operation, RemoteNode, Role, User
from noctispro.accounts.scoping import principal_for_user
from noctispro.conf import get_settings
from noctispro.dimse import qr_scu, tls
from noctispro.dimse.qr_scu import Caller, FindResult, Level, MoveProgress, Peer, RemoteQuery
from noctispro.jobs import Job, JobContext, PermanentJobError, enqueue, job

log = logging.getLogger(__name__)

QR_ROLES = frozenset({Role.ADMIN, Role.RADIOLOGIST, Role.TECHNOLOGIST})
RETRIEVE_KIND = "retrieve_from_node"
#: A study inventory (the C-FIND before a C-MOVE) lists at most this many instances.
INVENTORY_MAX_INSTANCES = 100_000
#: At most this many UIDs are listed in a job result (missing, failed).
MAX_LISTED_UIDS = 1000
_CHUNK = 500


class NotAllowed(PermissionError):
    """The user may not query or retrieve this node."""


class NodeUnusable(Exception):
    """The node cannot be used for this operation as configured (say why)."""


def may_query_remote(user: User) -> bool:
    return bool(user.is_active and (user.is_superuser or user.role in QR_ROLES))


def filing_facility(node: RemoteNode) -> Facility:
    """Where the instances the node sends us are filed (ingest asks the same function)."""
    return facility_for_ae(node.ae_title)


def usable_nodes(user: User) -> list[RemoteNode]:
    """The nodes a user may query and retrieve from, by name."""
    if not may_query_remote(user):
        return []
    principal = principal_for_user(user)
    return [n for n in nodes.list_nodes() if principal.can_see_facility(filing_facility(n).pk)]


def node_for(user: User, name: str) -> RemoteNode:
    """The node, if the user may use it: UnknownNode, NotAllowed."""
    if not may_query_remote(user):
        raise NotAllowed("your role may not query or retrieve remote nodes")
    node = nodes.get_node(name)
    facility = filing_facility(node)
    if not principal_for_user(user).can_see_facility(facility.pk):
        raise NotAllowed(
            f"node {node.name!r} files into facility {facility.code!r}, which you cannot see"
        )
    return node


def peer_of(node: RemoteNode) -> Peer:
    """The node as a Q/R peer: over DICOM TLS when it is marked `tls` (dimse/tls.py)."""
    try:
        tls_args = tls.tls_args(node, get_settings())
    except tls.TLSSetupError as exc:
        raise NodeUnusable(f"node {node.name!r}: {exc}; nothing sent") from exc
    return Peer(host=node.host, port=node.port, ae_title=node.ae_title, tls_args=tls_args)


def caller(timeout: float) -> Caller:
    settings = get_settings()
    return Caller(ae_title=settings.ae_title, timeout=timeout, max_pdu=settings.dicom_max_pdu)


def query_node(user: User, name: str, query: RemoteQuery) -> FindResult:
    """C-FIND the node for the user. UnknownNode, NotAllowed, NodeUnusable, RemoteError."""
    node = node_for(user, name)
    settings = get_settings()
    return qr_scu.find(
        peer_of(node),
        query,
        caller(settings.remote_query_timeout),
        max_matches=settings.remote_query_max_matches,
    )


def start_retrieve(
    user: User, name: str, study_instance_uid: str, series_instance_uid: str | None = None
) -> Job:
    """Queue a retrieve of a study (or series) from the node; the job id tracks it.

    Refused up front, before anything is queued, when the node could not deliver:
    TLS, or a node our SCP would not accept C-STOREs from.
    """
    node = node_for(user, name)
    peer_of(node)
    if not node.allows(Operation.STORE):
        raise NodeUnusable(
            f"node {node.name!r} may not store to us, so it cannot deliver a retrieve; "
            "allow it the store operation"
        )
    payload: dict[str, Any] = {
        "node": node.name,
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        "requested_by": user.username,
    }
    with transaction.atomic():
        return enqueue(RETRIEVE_KIND, payload, created_by=user)


@job(RETRIEVE_KIND)
def retrieve_from_node(
    ctx: JobContext,
    *,
    node: str,
    study_instance_uid: str,
    series_instance_uid: str | None = None,
    requested_by: str = "",
) -> dict[str, Any]:
    """C-MOVE a study (or series) from a node to us, then check what our index holds.

    1. Inventory: a C-FIND (SERIES, then IMAGE per series) lists the SOP Instance UIDs
       the node has, so we can tell afterwards what did not arrive. A node that will
       not answer it is still asked to move; the result then has no `expected`. A
       node that lists no instances fails the job at once (nothing to move).
    2. C-MOVE with our AE title as destination; progress follows the pending
       responses (completed / failed / warning / remaining sub-operations).
    3. Count in our index which of the expected instances are there now.

    A node that cannot be reached (or stops answering) fails the attempt, so the job
    is retried; a refusal (association rejected, failure status) fails it for good.
    """
    try:
        remote = nodes.get_node(node)
    except nodes.UnknownNode as exc:
        raise PermanentJobError(str(exc)) from None
    try:
        peer = peer_of(remote)
    except NodeUnusable as exc:
        raise PermanentJobError(str(exc)) from None
    settings = get_settings()
    what = f"series {series_instance_uid}" if series_instance_uid else f"study {study_instance_uid}"
    ctx.progress(0.0, f"asking {remote.name} which instances {what} has")
    try:
        expected = _inventory(peer, study_instance_uid, series_instance_uid)
    except qr_scu.RemoteError as exc:
        if exc.kind in ("unreachable", "timeout", "aborted"):
            raise
        log.warning("retrieve from %s: no inventory (%s); moving anyway", remote.name, exc)
        expected = None
    if expected == []:
        raise PermanentJobError(f"{remote.name} has no instances of {what}; nothing to retrieve")
    present_before = _present(expected, study_instance_uid, series_instance_uid)

    def on_pending(progress: MoveProgress) -> None:
        total = (
            progress.done + progress.remaining
            if progress.remaining is not None
            else len(expected or ())
        )
        ctx.progress(
            progress.done / total if total else 0.0,
            f"{progress.completed} completed, {progress.failed} failed, "
            f"{progress.warning} warning"
            + (f", {progress.remaining} remaining" if progress.remaining is not None else ""),
        )

    ctx.progress(0.0, f"C-MOVE from {remote.name} to {settings.ae_title}")
    try:
        result = qr_scu.move(
            peer,
            destination_ae=settings.ae_title,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            caller=caller(settings.remote_query_timeout),
            response_timeout=settings.remote_move_timeout,
            on_pending=on_pending,
        )
    except qr_scu.RemoteError as exc:
        if exc.kind in ("rejected", "failed"):
            raise PermanentJobError(exc.message) from None
        raise
    counts = result.progress
    if result.status not in (qr_scu.SUCCESS, qr_scu.SUBOPERATIONS_FAILED):
        hint = ""
        if result.status == 0xA801:
            hint = (
                f"; the node must know our AE title {settings.ae_title!r} with our host "
                f"and DICOM port {settings.dicom_port}"
            )
        comment = f" ({result.error_comment})" if result.error_comment else ""
        raise PermanentJobError(
            f"{remote.name} answered the C-MOVE with {qr_scu.status_text(result.status)}"
            f"{comment}{hint}; {counts.completed} completed, {counts.failed} failed"
        )
    present_after = _present(expected, study_instance_uid, series_instance_uid)
    missing = sorted(set(expected) - present_after) if expected is not None else []
    return {
        "node": remote.name,
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        "requested_by": requested_by,
        "status": f"0x{result.status:04X}",
        "status_text": qr_scu.status_text(result.status),
        "completed": counts.completed,
        "failed": counts.failed,
        "warning": counts.warning,
        "expected": None if expected is None else len(expected),
        "in_archive": len(present_after),
        "new": len(present_after - present_before),
        "missing": missing[:MAX_LISTED_UIDS],
        "failed_sop_instance_uids": result.failed_sop_instance_uids[:MAX_LISTED_UIDS],
        "seconds": round(result.milliseconds / 1000, 3),
    }


def _inventory(peer: Peer, study_uid: str, series_uid: str | None) -> list[str]:
    """The SOP Instance UIDs the node holds for the study (or series), per PS3.4
    C.4.1.2.2.1: SERIES level under the study, then IMAGE level under each series."""
    call = caller(get_settings().remote_query_timeout)
    if series_uid:
        series = [series_uid]
    else:
        found = qr_scu.find(
            peer,
            RemoteQuery(
                level=Level.SERIES,
                filters={"StudyInstanceUID": study_uid},
                return_keys=("SeriesInstanceUID",),
            ),
            call,
            max_matches=INVENTORY_MAX_INSTANCES,
        )
        series = [str(m["SeriesInstanceUID"]) for m in found.matches if m.get("SeriesInstanceUID")]
    uids: list[str] = []
    for uid in series:
        found = qr_scu.find(
            peer,
            RemoteQuery(
                level=Level.IMAGE,
                filters={"StudyInstanceUID": study_uid, "SeriesInstanceUID": uid},
                return_keys=("SOPInstanceUID",),
            ),
            call,
            max_matches=INVENTORY_MAX_INSTANCES,
        )
        uids.extend(str(m["SOPInstanceUID"]) for m in found.matches if m.get("SOPInstanceUID"))
    return list(dict.fromkeys(uids))


def _present(expected: list[str] | None, study_uid: str, series_uid: str | None) -> set[str]:
    """Which instances our index holds: of the expected ones, else of the study/series."""
    from noctispro.index.models import Instance

    if expected is None:
        rows = Instance.objects.filter(study__study_instance_uid=study_uid)
        if series_uid:
            rows = rows.filter(series__series_instance_uid=series_uid)
        return set(rows.values_list("sop_instance_uid", flat=True))
    present: set[str] = set()
    for i in range(0, len(expected), _CHUNK):
        chunk = expected[i : i + _CHUNK]
        present.update(
            Instance.objects.filter(sop_instance_uid__in=chunk).values_list(
                "sop_instance_uid", flat=True
            )
        )
    return present
