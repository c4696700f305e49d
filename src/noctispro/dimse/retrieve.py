"""C-MOVE and C-GET SCP for the Patient Root and Study Root Q/R models (PS3.4 C.4.2, C.4.3).

The identifier's unique keys become an `index.query.Query`; `matching_instances` picks
the instances the calling AE's facility may see; each one is a C-STORE sub-operation
through `store_scu` (to the Move Destination on a new association, or back on the
C-GET requestor's association through the storage contexts it proposed with the SCP
role, PS3.7 D.3.3.4).

pynetdicom's own Q/R service asks a handler for the destination before anything else
and then sends pydicom data sets, so it can neither refuse an AE with a status and an
Error Comment, nor tell a known-but-unreachable destination (0xA702 with every
sub-operation failed) from an unknown one (0xA801), nor stream stored files unchanged.
So these two DIMSE services are served here; `install()` points pynetdicom at this
class for the four SOP classes, everything else keeps pynetdicom's classes.

Statuses (PS3.4 C.4.2.1.5, C.4.3.1.4): pending 0xFF00 after every sub-operation with the
remaining/completed/failed/warning counts; final 0x0000, 0xB000 (some failed or warned,
with the Failed SOP Instance UID List), 0xA702 (all failed), 0xFE00 on C-CANCEL,
0xA801 for a Move Destination that is not a registered node, 0xA900 for an identifier
that is not a retrieve identifier, 0x0124 for an AE not allowed to move or get, 0xA701
past 65535 instances (the counts are US). A study another facility owns matches
nothing, exactly like a study that does not exist: success with no sub-operations.
"""

from __future__ import annotations

import logging
import time
from io import BytesIO
from typing import Any, Literal

from django.db import DatabaseError, close_old_connections
from pydicom.dataset import Dataset
from pynetdicom import association as pynetdicom_association
from pynetdicom import sop_class as pynetdicom_sop_class
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass

from noctispro.accounts.models import Operation
from noctispro.accounts.nodes import node_for_ae_title
from noctispro.accounts.scoping import principal_for_ae
from noctispro.conf import get_settings
from noctispro.dimse import access, statuses, store_scu
from noctispro.dimse.find import BadIdentifier, Key, query_retrieve_level, read_identifier
from noctispro.index.query import (
    DEPTH,
    UNIQUE_KEYS,
    InvalidQuery,
    Level,
    Query,
    matching_instances,
)

log = logging.getLogger(__name__)

Model = Literal["patient", "study"]
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
STUDY_LEVELS = (Level.STUDY, Level.SERIES, Level.IMAGE)
QR_MOVE_MODELS: dict[str, tuple[Model, tuple[Level, ...]]] = {
    PATIENT_ROOT_MOVE: ("patient", PATIENT_LEVELS),
    STUDY_ROOT_MOVE: ("study", STUDY_LEVELS),
}
QR_GET_MODELS: dict[str, tuple[Model, tuple[Level, ...]]] = {
    PATIENT_ROOT_GET: ("patient", PATIENT_LEVELS),
    STUDY_ROOT_GET: ("study", STUDY_LEVELS),
}
RETRIEVE_MODELS = {**QR_MOVE_MODELS, **QR_GET_MODELS}

PENDING = 0xFF00
CANCEL = 0xFE00
SUB_OPERATIONS_WARNING = 0xB000
UNABLE_TO_CALCULATE = 0xA701  # out of resources: unable to calculate number of matches
UNABLE_TO_PERFORM = 0xA702  # out of resources: unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = statuses.DATA_SET_DOES_NOT_MATCH_SOP_CLASS  # 0xA900
UNABLE_TO_PROCESS = statuses.CANNOT_UNDERSTAND  # 0xC000
MAX_SUB_OPERATIONS = 65535
FAILED_LIST_BYTES = 65534


class Refused(Exception):
    """A final response before any sub-operation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def retrieve_query(model: Model, levels: tuple[Level, ...], keys: list[Key]) -> Query:
    """The Query of a retrieve identifier (PS3.4 C.4.2.2.1, C.4.3.2.1).

    The Query/Retrieve Level and the unique key of that level (one UID or a list) are
    required; unique keys above it narrow the match. Other keys are not retrieve keys
    and are ignored, as most SCPs do, so an SCU may send back a C-FIND identifier.
    Wildcards are not allowed in unique keys.
    """
    by_keyword = {k.keyword: k for k in keys if k.keyword}
    level = query_retrieve_level(levels, keys)
    filters: dict[str, str] = {}
    for lv in levels:
        if DEPTH[lv] > DEPTH[level]:
            break
        keyword = UNIQUE_KEYS[lv]
        key = by_keyword.get(keyword)
        value = key.value.strip() if key is not None else ""
        if not value:
            if lv is level:
                raise BadIdentifier(
                    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"no {keyword} for a {level} retrieve"
                )
            continue
        if "*" in value or "?" in value:
            raise BadIdentifier(
                IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} may not hold wildcards"
            )
        if lv is not level and "\\" in value:
            raise BadIdentifier(
                IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} above the level is one value"
            )
        filters[keyword] = value
    return Query(level=level, filters=filters, information_model=model)


def _outgoing(principal_ae: str, query: Query) -> list[store_scu.Outgoing]:
    rows = matching_instances(principal_for_ae(principal_ae), query).values_list(
        "sop_class_uid", "sop_instance_uid", "transfer_syntax_uid", "storage_key"
    )
    items = []
    for row in rows[: MAX_SUB_OPERATIONS + 1]:
        items.append(store_scu.Outgoing(*row))
    return items


class RetrieveServiceClass(QueryRetrieveServiceClass):
    """Serves C-MOVE and C-GET; C-FIND stays with pynetdicom (and `dimse.find`)."""

    def SCP(self, req: Any, context: PresentationContext) -> None:
        uid = str(context.abstract_syntax)
        if isinstance(req, C_MOVE) and uid in QR_MOVE_MODELS:
            self._retrieve(req, context, QR_MOVE_MODELS[uid])
        elif isinstance(req, C_GET) and uid in QR_GET_MODELS:
            self._retrieve(req, context, QR_GET_MODELS[uid])
        else:
            super().SCP(req, context)

    def _retrieve(
        self,
        req: C_MOVE | C_GET,
        context: PresentationContext,
        model: tuple[Model, tuple[Level, ...]],
    ) -> None:
        close_old_connections()
        is_move = isinstance(req, C_MOVE)
        service = "C-MOVE" if is_move else "C-GET"
        rsp: C_MOVE | C_GET = C_MOVE() if is_move else C_GET()
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        context_id = int(context.context_id or 0)
        syntax = context.transfer_syntax[0]
        calling = str(self.assoc.requestor.ae_title).strip()

        def respond(status: int, identifier: Dataset | None = None, comment: str = "") -> None:
            rsp.Status = status
            rsp.ErrorComment = statuses.error_comment(comment) if comment else None  # type: ignore[assignment]
            rsp.Identifier = None
            if identifier is not None:
                raw = encode(
                    identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
                )
                rsp.Identifier = BytesIO(raw or b"")
            self.dimse.send_msg(rsp, context_id)

        try:
            items = self._select(req, model, calling, service, is_move, syntax)
        except Refused as exc:
            log.warning("%s from %s refused (0x%04X): %s", service, calling, exc.status, exc)
            respond(exc.status, comment=str(exc))
            return

        started = time.perf_counter()
        report = store_scu.SendReport(total=len(items))
        remaining = list(items)
        if not items:
            rsp.NumberOfCompletedSuboperations = 0
            rsp.NumberOfFailedSuboperations = 0
            rsp.NumberOfWarningSuboperations = 0
            respond(statuses.SUCCESS)
            return

        settings = get_settings()
        sub_assoc = None
        if is_move:
            assert isinstance(req, C_MOVE)
            node = node_for_ae_title(str(req.MoveDestination))
            assert node is not None  # checked in _select
            try:
                sub_assoc = store_scu.associate(
                    node,
                    store_scu.presentation_contexts(items),
                    calling_ae=settings.ae_title,
                    max_pdu=settings.dicom_max_pdu,
                    timeout=settings.dicom_network_timeout,
                )
            except store_scu.AssociationFailed as exc:
                log.warning("C-MOVE from %s to %s: %s", calling, node.ae_title, exc)
                report.fail_rest(items, str(exc))
                self._counts(rsp, report, final=True)
                respond(UNABLE_TO_PERFORM, _failed_list(report), str(exc))
                return
            sender = store_scu.InstanceSender(
                sub_assoc, originator_ae=calling, originator_message_id=int(req.MessageID or 0)
            )
        else:
            sender = store_scu.InstanceSender(
                self.assoc, first_message_id=int(req.MessageID or 0) % 65535 + 1
            )

        try:
            while remaining:
                if not self.assoc.is_established:
                    log.warning("%s from %s: the requestor went away", service, calling)
                    return
                if self.is_cancelled(int(req.MessageID or 0)):
                    self._counts(rsp, report, final=False, remaining=len(remaining))
                    respond(CANCEL, _failed_list(report, always=True))
                    log.info(
                        "%s from %s cancelled after %d",
                        service,
                        calling,
                        len(items) - len(remaining),
                    )
                    return
                item = remaining.pop(0)
                if sub_assoc is not None and not sub_assoc.is_established:
                    report.fail_rest([item, *remaining], "the destination ended the association")
                    remaining = []
                    break
                report.add(item, sender.send(item))
                self._counts(rsp, report, final=False, remaining=len(remaining))
                respond(PENDING)
        finally:
            if sub_assoc is not None and sub_assoc.is_established:
                sub_assoc.release()

        self._counts(rsp, report, final=True)
        if not report.failed and not report.warning:
            respond(statuses.SUCCESS)
        elif report.failed == report.total:
            respond(
                UNABLE_TO_PERFORM,
                _failed_list(report),
                report.error or "every sub-operation failed",
            )
        else:
            respond(SUB_OPERATIONS_WARNING, _failed_list(report))
        log.info(
            "%s from %s: %d completed, %d warning, %d failed in %.2f s",
            service,
            calling,
            report.completed,
            report.warning,
            report.failed,
            time.perf_counter() - started,
        )

    def _select(
        self,
        req: C_MOVE | C_GET,
        model: tuple[Model, tuple[Level, ...]],
        calling: str,
        service: str,
        is_move: bool,
        syntax: Any,
    ) -> list[store_scu.Outgoing]:
        """The instances to send, or Refused with the final status."""
        operation = Operation.MOVE if is_move else Operation.GET
        if not access.rights_of(calling).allows(operation):
            raise Refused(statuses.NOT_AUTHORIZED, f"this AE title may not {service} here")
        if is_move:
            assert isinstance(req, C_MOVE)
            destination = str(req.MoveDestination or "").strip()
            if node_for_ae_title(destination) is None:
                raise Refused(
                    MOVE_DESTINATION_UNKNOWN, f"move destination {destination!r} is not a node"
                )
        try:
            identifier = decode(
                req.Identifier or BytesIO(),
                syntax.is_implicit_VR,
                syntax.is_little_endian,
                syntax.is_deflated,
            )
            _, keys = read_identifier(identifier)
        except Exception as exc:
            raise Refused(UNABLE_TO_PROCESS, "the identifier cannot be decoded") from exc
        try:
            query = retrieve_query(model[0], model[1], keys)
            items = _outgoing(calling, query)
        except BadIdentifier as exc:
            raise Refused(exc.status, str(exc)) from exc
        except InvalidQuery as exc:
            raise Refused(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from exc
        except DatabaseError as exc:
            log.exception("%s from %s: index unavailable", service, calling)
            raise Refused(UNABLE_TO_PROCESS, "index unavailable") from exc
        if len(items) > MAX_SUB_OPERATIONS:
            raise Refused(
                UNABLE_TO_CALCULATE, f"more than {MAX_SUB_OPERATIONS} instances; retrieve less"
            )
        return items

    @staticmethod
    def _counts(
        rsp: C_MOVE | C_GET, report: store_scu.SendReport, *, final: bool, remaining: int = 0
    ) -> None:
        # Final responses carry no Number of Remaining Sub-operations (PS3.4 C.4.2.1.5).
        rsp.NumberOfRemainingSuboperations = None if final else remaining
        rsp.NumberOfCompletedSuboperations = report.completed
        rsp.NumberOfFailedSuboperations = report.failed
        rsp.NumberOfWarningSuboperations = report.warning


def _failed_list(report: store_scu.SendReport, *, always: bool = False) -> Dataset | None:
    """The Failed SOP Instance UID List identifier (PS3.4 C.4.2.1.4.2)."""
    if not report.failed_sop_instance_uids and not always:
        return None
    # A UI value is at most 65534 bytes in explicit VR (2-byte length): list what fits.
    uids, size = [], 0
    for uid in report.failed_sop_instance_uids:
        size += len(uid) + 1
        if size > FAILED_LIST_BYTES:
            break
        uids.append(uid)
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = uids
    return ds


def install() -> None:
    """Serve the C-MOVE and C-GET SOP classes of our SCP with `RetrieveServiceClass`.

    pynetdicom picks a service class per request with `uid_to_service_class`
    (association.py, `_serve_request`); the Q/R classes are looked up before any
    registered UID, so the lookup itself is wrapped, for these four UIDs and only for
    associations of an AE that says `serves_retrieve` (our PacsAE): any other pynetdicom
    AE in the process keeps pynetdicom's service and its EVT_C_MOVE/EVT_C_GET handlers.
    """
    lookup = pynetdicom_sop_class.uid_to_service_class

    def for_association(assoc: Any) -> ServiceClass:
        if getattr(assoc.ae, "serves_retrieve", False):
            return RetrieveServiceClass(assoc)
        return QueryRetrieveServiceClass(assoc)

    def service_class_for(uid: str) -> Any:
        if uid in RETRIEVE_MODELS:
            return for_association
        return lookup(uid)

    pynetdicom_association.uid_to_service_class = service_class_for
