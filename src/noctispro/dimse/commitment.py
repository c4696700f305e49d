"""Storage Commitment Push Model SCP (PS3.4 J.3).

N-ACTION (action type 1, "Request Storage Commitment", on the well-known instance
1.2.840.10008.1.20.1.1) is answered at once once the request is understood and
recorded; the instances are then checked (core/commitment.py) off the association's
thread and the result goes back as an N-EVENT-REPORT: event type 1 when every instance
is committed, 2 with a Failed SOP Sequence (Failure Reason 0x0112 no such object
instance, 0x0119 class/instance conflict, 0x0110 processing failure: the stored file
is missing or damaged) otherwise (J.3.3).

Where the report goes (J.3.3): on the requester's association while it is still open,
else on a new association to the requester, which must then be a registered node
(host and port come from `noctispro nodes add`); we propose the SCP role for it with
SCP/SCU Role Selection. If neither is possible the outcome is logged and kept on the
StorageCommitment row.

Why a thread and not a job: the report should go back on the requester's association,
which only this process holds; the check reads the index and hashes files, so it must
not hold up the association's reactor (other requests on it wait while a handler
runs). A small pool bounds how many run at once; requests are recorded before the
N-ACTION response, so none is forgotten silently.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from django.db import close_old_connections, connection
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.presentation import build_role

from noctispro import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctispro.accounts.models import Operation
from noctispro.accounts.nodes import node_for_ae_title
from noctispro.accounts.scoping import principal_for_ae
from noctispro.conf import get_settings
from noctispro.core import commitment as core
from noctispro.core.attributes import UID_PATTERN
from noctispro.dimse import access, statuses, tls
from noctispro.index.models import StorageCommitment

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

# N-ACTION statuses (PS3.7 10.1.4.1.10).
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_SOP_CLASS = 0x0118
NO_SUCH_ACTION = 0x0123
RESOURCE_LIMITATION = 0x0213

# Failure Reason (0008,1197) per verdict (PS3.3 C.14.1.1).
FAILURE_REASON = {
    core.Verdict.NO_SUCH_INSTANCE: 0x0112,
    core.Verdict.CLASS_INSTANCE_CONFLICT: 0x0119,
    core.Verdict.DAMAGED: 0x0110,
}
# More references than this in one request are refused (0x0213), not half-checked.
MAX_REFERENCES = 100_000
# How long the report waits for our N-ACTION response to have gone out first.
RESPONSE_WAIT_SECONDS = 30.0
# A requester that does not wait for the report releases right after the N-ACTION
# response; one still connected after this long is taken to be waiting for it.
RELEASE_GRACE_SECONDS = 2.0
# The answer to our N-EVENT-REPORT on the requester's association: a peer that began
# releasing meanwhile never answers, and then the report goes on a new association.
SAME_ASSOCIATION_TIMEOUT = 10.0

SAME_ASSOCIATION = "same-association"
NEW_ASSOCIATION = "new-association"
UNDELIVERED = "undelivered"

_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="commitment")
_message_ids = itertools.count(1)


class BadRequest(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def handle_n_action(event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_ACTION: validate and record the request, answer, check it in the pool."""
    close_old_connections()
    calling = str(event.assoc.requestor.ae_title).strip()
    request = event.request
    try:
        references, transaction_uid = read_request(event)
    except BadRequest as exc:
        log.warning("storage commitment from %s refused (0x%04X): %s", calling, exc.status, exc)
        return _failure(exc.status, str(exc)), None
    if not access.rights_of(calling).allows(Operation.STORE):
        log.warning("storage commitment from %s refused: not allowed to store", calling)
        return _failure(statuses.NOT_AUTHORIZED, "this AE title may not store here"), None
    try:
        principal = principal_for_ae(calling)
        record = core.record_request(transaction_uid, calling, principal, references)
    except Exception:
        log.exception("storage commitment from %s could not be recorded", calling)
        return _failure(statuses.PROCESSING_FAILURE, "the request could not be recorded"), None
    responded = threading.Event()
    message_id = request.MessageID

    def on_sent(sent: evt.Event) -> None:
        message = sent.message
        if (
            isinstance(message, N_ACTION_RSP)
            and message.command_set.MessageIDBeingRespondedTo == message_id
        ):
            responded.set()

    event.assoc.bind(evt.EVT_DIMSE_SENT, on_sent)
    _pool.submit(_commit, record.pk, event.assoc, responded, on_sent)
    log.info(
        "storage commitment %s from %s: %d instances to check",
        transaction_uid,
        calling,
        len(references),
    )
    return statuses.SUCCESS, None


def read_request(event: evt.Event) -> tuple[list[core.Reference], str]:
    """The references and Transaction UID of an N-ACTION, or BadRequest (PS3.4 J.3.2)."""
    request = cast(N_ACTION, event.request)
    if str(request.RequestedSOPClassUID) != STORAGE_COMMITMENT_PUSH_MODEL:
        raise BadRequest(NO_SUCH_SOP_CLASS, f"no N-ACTION for {request.RequestedSOPClassUID}")
    if str(request.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_INSTANCE:
        raise BadRequest(
            NO_SUCH_SOP_INSTANCE, f"the instance must be {STORAGE_COMMITMENT_INSTANCE}"
        )
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        raise BadRequest(NO_SUCH_ACTION, f"no action type {event.action_type}")
    try:
        info = event.action_information
        transaction_uid = str(info.get("TransactionUID", "") or "").strip()
        items = list(info.get("ReferencedSOPSequence", None) or [])
        pairs = [
            (
                str(item.get("ReferencedSOPClassUID", "") or "").strip(),
                str(item.get("ReferencedSOPInstanceUID", "") or "").strip(),
            )
            for item in items
        ]
    except Exception as exc:
        raise BadRequest(INVALID_ARGUMENT_VALUE, "the action information cannot be read") from exc
    if not _is_uid(transaction_uid):
        raise BadRequest(INVALID_ARGUMENT_VALUE, "no valid Transaction UID")
    if not pairs:
        raise BadRequest(INVALID_ARGUMENT_VALUE, "empty Referenced SOP Sequence")
    if len(pairs) > MAX_REFERENCES:
        raise BadRequest(RESOURCE_LIMITATION, f"more than {MAX_REFERENCES} references")
    for number, (sop_class, sop_instance) in enumerate(pairs, start=1):
        if not (_is_uid(sop_class) and _is_uid(sop_instance)):
            raise BadRequest(
                INVALID_ARGUMENT_VALUE, f"Referenced SOP Sequence item {number}: invalid UIDs"
            )
    return [core.Reference(c, i) for c, i in pairs], transaction_uid


def _commit(
    record_id: int,
    assoc: Association,
    responded: threading.Event,
    on_sent: Callable[[evt.Event], None],
) -> None:
    try:
        record = StorageCommitment.objects.get(pk=record_id)
        checks = core.check_stored(
            principal_for_ae(record.calling_ae_title), core.references_of(record)
        )
        core.record_outcome(record, checks)
        event_type, info = event_information(record.transaction_uid, checks)
        deadline = time.monotonic() + RESPONSE_WAIT_SECONDS
        while not responded.wait(0.05) and assoc.is_established:
            if time.monotonic() > deadline:
                break
        assoc.unbind(evt.EVT_DIMSE_SENT, on_sent)
        delivery, detail = report(
            assoc, responded.is_set(), record.calling_ae_title, event_type, info
        )
        core.record_delivery(record, delivery, detail)
        log_outcome = log.info if delivery != UNDELIVERED else log.error
        log_outcome(
            "storage commitment %s from %s: event type %d (%d of %d failed), %s%s",
            record.transaction_uid,
            record.calling_ae_title,
            event_type,
            sum(1 for c in checks if not c.stored),
            len(checks),
            delivery,
            f": {detail}" if detail else "",
        )
    except Exception:
        log.exception("storage commitment request #%s failed", record_id)
    finally:
        connection.close()


def event_information(transaction_uid: str, checks: list[core.Check]) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's event type and Event Information (PS3.4 J.3.3.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.RetrieveAETitle = get_settings().ae_title
    committed = [c for c in checks if c.stored]
    failed = [c for c in checks if not c.stored]
    if committed:
        ds.ReferencedSOPSequence = [_item(c) for c in committed]
    if failed:
        items = []
        for check in failed:
            item = _item(check)
            item.FailureReason = FAILURE_REASON[check.verdict]
            items.append(item)
        ds.FailedSOPSequence = items
        return EVENT_FAILURES_EXIST, ds
    return EVENT_ALL_COMMITTED, ds


def _item(check: core.Check) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = check.reference.sop_class_uid
    item.ReferencedSOPInstanceUID = check.reference.sop_instance_uid
    return item


def report(
    assoc: Association, responded: bool, calling: str, event_type: int, info: Dataset
) -> tuple[str, str]:
    """Send the N-EVENT-REPORT: (how it went, why it did not)."""
    problem = ""
    if responded and _stays(assoc):
        status = _send(assoc, event_type, info, timeout=SAME_ASSOCIATION_TIMEOUT)
        if status == statuses.SUCCESS:
            return SAME_ASSOCIATION, ""
        problem = _status_text(status) + " on the requester's association; "
    node = node_for_ae_title(calling)
    if node is None:
        return UNDELIVERED, problem + f"{calling} is gone and is not a registered node"
    settings = get_settings()
    try:
        tls_args = tls.tls_args(node, settings)
    except tls.TLSSetupError as exc:
        return UNDELIVERED, problem + f"node {node.name}: {exc}"
    ae = AE(ae_title=settings.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.connection_timeout = 10
    ae.acse_timeout = 30
    ae.dimse_timeout = settings.dicom_network_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
    # We initiate, yet act as the SCP of the SOP class (PS3.4 J.3.3, PS3.7 D.3.3.4).
    role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scp_role=True)
    new = ae.associate(
        node.host, node.port, ae_title=node.ae_title, ext_neg=[role], tls_args=tls_args
    )
    if not new.is_established:
        return UNDELIVERED, problem + f"no association with {node.ae_title}@{node.host}:{node.port}"
    try:
        if not any(
            cx.abstract_syntax == STORAGE_COMMITMENT_PUSH_MODEL for cx in new.accepted_contexts
        ):
            return UNDELIVERED, problem + f"{node.ae_title} accepted no Storage Commitment context"
        status = _send(new, event_type, info)
    finally:
        if new.is_established:
            new.release()
    if status == statuses.SUCCESS:
        return NEW_ASSOCIATION, problem.removesuffix("; ")
    return UNDELIVERED, problem + _status_text(status) + f" from {node.ae_title}"


def _stays(assoc: Association) -> bool:
    """Whether the requester is still connected once it had time to go, and not leaving."""
    deadline = time.monotonic() + RELEASE_GRACE_SECONDS
    while time.monotonic() < deadline:
        if not assoc.is_established:
            return False
        time.sleep(0.05)
    return assoc.is_established and not isinstance(assoc.dul.peek_next_pdu(), A_RELEASE)


def _send(
    assoc: Association, event_type: int, info: Dataset, *, timeout: float | None = None
) -> int | None:
    default_timeout = assoc.dimse_timeout
    if timeout is not None:
        assoc.dimse_timeout = min(timeout, default_timeout or timeout)
    try:
        status, _ = assoc.send_n_event_report(
            info,
            event_type,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_INSTANCE,
            msg_id=next(_message_ids) % 65536 or 1,
        )
    except (RuntimeError, ValueError) as exc:  # association gone, no usable context
        log.warning("N-EVENT-REPORT not sent: %s", exc)
        return None
    finally:
        assoc.dimse_timeout = default_timeout
    return int(status.Status) if "Status" in status else None


def _status_text(status: int | None) -> str:
    return "no N-EVENT-REPORT response" if status is None else f"status 0x{status:04X}"


def _is_uid(value: str) -> bool:
    return len(value) <= 64 and bool(UID_PATTERN.fullmatch(value))


def _failure(status: int, message: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = statuses.error_comment(message)
    return ds
