"""Send a study or series to a remote node: the `send_to_node` job and the one way to
start it (`start_send`), shared by the API and the web page.

The job runs the C-STORE SCU (`store_scu.send_to_node`) on one association, reports
instances done/total as progress and ends with per-outcome counts, the peer's statuses
and the failed SOP Instance UIDs. What it sends is chosen again when it runs, through the
creator's facility scope, so a job never sends what its creator may no longer see. An
association that cannot be made is an error (retried with backoff by the job queue);
instances the peer refused are a result, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noctispro.accounts.models import RemoteNode, Role, User
from noctispro.accounts.nodes import UnknownNode, get_node
from noctispro.accounts.scoping import principal_for_user, scope_studies
from noctispro.conf import get_settings
from noctispro.dimse import store_scu
from noctispro.index.models import Series
from noctispro.index.query import Level, Query, matching_instances
from noctispro.jobs import Job, JobContext, PermanentJobError, enqueue, job

SEND_KIND = "send_to_node"
#: Who may send studies out: not referring physicians (they read, they do not route).
SEND_ROLES = frozenset({Role.ADMIN, Role.RADIOLOGIST, Role.TECHNOLOGIST})


class SendRefused(Exception):
    """The send cannot start; `reason` is `forbidden`, `not_found` or `conflict`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AssociationFailed(Exception):
    """No association with the node; the job queue retries."""


@dataclass(frozen=True)
class SendRequest:
    node: str
    study_instance_uid: str
    series_instance_uid: str | None = None


def may_send(user: User) -> bool:
    return user.is_superuser or user.role in SEND_ROLES


def start_send(user: User, request: SendRequest) -> Job:
    """Check the caller, the node and the study (visible to the caller), then enqueue."""
    if not may_send(user):
        raise SendRefused("forbidden", "your role may not send studies to nodes")
    try:
        node = get_node(request.node)
    except UnknownNode as exc:
        raise SendRefused("not_found", str(exc)) from exc
    study = (
        scope_studies(principal_for_user(user))
        .filter(study_instance_uid=request.study_instance_uid)
        .first()
    )
    if study is None:
        raise SendRefused("not_found", "no such study")
    if (
        request.series_instance_uid
        and not Series.objects.filter(
            study=study, series_instance_uid=request.series_instance_uid
        ).exists()
    ):
        raise SendRefused("not_found", "no such series in this study")
    payload: dict[str, Any] = {
        "node": node.name,
        "study_instance_uid": request.study_instance_uid,
        "series_instance_uid": request.series_instance_uid or None,
    }
    return enqueue(SEND_KIND, payload, created_by=user)


def _outgoing(user: User, study_uid: str, series_uid: str | None) -> list[store_scu.Outgoing]:
    filters = {"StudyInstanceUID": study_uid}
    if series_uid:
        filters["SeriesInstanceUID"] = series_uid
    query = Query(level=Level.SERIES if series_uid else Level.STUDY, filters=filters)
    rows = matching_instances(principal_for_user(user), query).values_list(
        "sop_class_uid", "sop_instance_uid", "transfer_syntax_uid", "storage_key"
    )
    return [store_scu.Outgoing(*row) for row in rows]


@job(SEND_KIND)
def send_to_node(
    ctx: JobContext,
    *,
    node: str,
    study_instance_uid: str,
    series_instance_uid: str | None = None,
) -> dict[str, Any]:
    row = Job.objects.select_related("created_by").get(pk=ctx.job_id)
    user = row.created_by
    if user is None:
        raise PermanentJobError("the job has no creator whose facilities decide what is sent")
    try:
        target: RemoteNode = get_node(node)
    except UnknownNode as exc:
        raise PermanentJobError(str(exc)) from exc
    items = _outgoing(user, study_instance_uid, series_instance_uid)
    total = len(items)
    ctx.progress(0.0, f"0/{total} sent")

    def progress(report: store_scu.SendReport) -> None:
        done = report.completed + report.warning + report.failed
        ctx.progress(done / total if total else 1.0, f"{done}/{total} sent")

    settings = get_settings()
    report = store_scu.send_to_node(
        target,
        items,
        calling_ae=settings.ae_title,
        max_pdu=settings.dicom_max_pdu,
        timeout=settings.dicom_network_timeout,
        progress=progress,
    )
    if total and report.failed == total and report.error:
        raise AssociationFailed(report.error)
    return {
        "node": target.name,
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        **report.as_dict(),
    }
