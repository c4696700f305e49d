"""Query/Retrieve SCU: C-FIND and C-MOVE to a remote node (PS3.4 C.4.1, C.4.2).

Plain protocol, no database: a `Peer` and a `RemoteQuery` in, plain data out.
Matches come back as dicts of DICOM keyword → value (PersonName as its DICOM string,
multi-valued elements as lists, IS/DS as numbers, empty as None), decoded with the
Specific Character Set of each response.

Every failure is a `RemoteError` whose `kind` says what went wrong (unreachable,
rejected, timeout, aborted, failed), with the DIMSE status when the peer sent one, so
the API can tell a node that is down from one that refused.

Bounds: a C-FIND has one deadline for connect, association and every response; a
C-FIND that reaches the cap on matches sends C-CANCEL (PS3.7 9.3.2.3) and keeps what it
has. A C-MOVE waits at most `response_timeout` for each response, because moves of big
studies legitimately take minutes while the peer reports pending sub-operations.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from pynetdicom import AE, evt
from pynetdicom.association import Association

from noctispro import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctispro.dimse.server import set_nodelay
from noctispro.index.query import UNIQUE_KEYS, Level

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"

# Status codes (PS3.4 C.4.1.1.4, C.4.2.1.5; PS3.7 C).
SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00
SUBOPERATIONS_FAILED = 0xB000

STATUS_MEANING = {
    0x0000: "success",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0xA700: "out of resources",
    0xA701: "out of resources: unable to calculate number of matches",
    0xA702: "out of resources: unable to perform sub-operations",
    0xA801: "move destination unknown",
    0xA900: "identifier does not match SOP class",
    0xB000: "sub-operations complete, one or more failures",
    0xFE00: "cancelled",
}


LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)

#: Return keys asked for when the caller names none: what a study browser shows.
DEFAULT_RETURN_KEYS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
    ),
    Level.STUDY: (
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    ),
    Level.IMAGE: (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    ),
}

#: VRs a filter may carry: string VRs, whose matching PS3.4 C.2.2.2 defines.
FILTER_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI", "UC", "LT", "ST"}
)
_UID_LIST = re.compile(r"^[0-9.]{1,64}(\\[0-9.]{1,64})*$")
_DATE_RANGE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")
_TIME_RANGE = re.compile(r"^([\d.]{2,13})?(-([\d.]{2,13})?)?$")
#: Not matching or return keys of the identifier: we set them ourselves.
RESERVED_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


class RemoteError(Exception):
    """The peer could not be asked, or said no. `kind` is one of:

    unreachable (no TCP connection), rejected (A-ASSOCIATE-RJ or no acceptable
    presentation context), timeout (no answer in time), aborted (the peer went away
    mid-operation), failed (the peer answered a failure status).
    """

    def __init__(
        self,
        kind: Literal["unreachable", "rejected", "timeout", "aborted", "failed"],
        message: str,
        *,
        status: int | None = None,
        error_comment: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.error_comment = error_comment


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    ae_title: str
    #: pynetdicom's (context, server host name) for DICOM TLS (dimse/tls.py); None: TCP.
    tls_args: tuple[ssl.SSLContext, str] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Caller:
    """How we associate: our AE title, the PDU we accept, the time we give each phase."""

    ae_title: str
    timeout: float = 30.0
    max_pdu: int = 262_144


@dataclass(frozen=True)
class RemoteQuery:
    """A C-FIND identifier in plain terms.

    `filters` maps keywords to matching values in DICOM syntax (`DOE*`,
    `20200101-20201231`, `1.2.3\\1.2.4`); `return_keys` are added empty. Study Root
    serves STUDY, SERIES and IMAGE; Patient Root is used for PATIENT (and on request).
    """

    level: Level
    filters: Mapping[str, str] = field(default_factory=dict)
    return_keys: tuple[str, ...] = ()
    information_model: Literal["patient", "study"] = "study"

    def __post_init__(self) -> None:
        if self.level is Level.PATIENT and self.information_model != "patient":
            object.__setattr__(self, "information_model", "patient")
        check_query(self)

    @property
    def sop_class(self) -> str:
        return PATIENT_ROOT_FIND if self.information_model == "patient" else STUDY_ROOT_FIND

    def identifier(self) -> Dataset:
        """The request identifier: filters with their values, return keys empty."""
        ds = Dataset()
        texts = [v for v in self.filters.values() if v]
        if any(not v.isascii() for v in texts):
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = self.level.value
        keys = [*DEFAULT_RETURN_KEYS[self.level], *self.return_keys, *self.filters]
        for keyword in dict.fromkeys(keys):
            tag = tag_for_keyword(keyword)
            assert tag is not None
            vr = dictionary_VR(tag)
            value = self.filters.get(keyword) or None
            if vr == "SQ":
                ds[tag] = DataElement(tag, vr, [])
            else:
                ds[tag] = DataElement(tag, vr, value)
        return ds


def check_query(query: RemoteQuery) -> None:
    """Refuse what a peer could not answer correctly (ValueError names the key).

    Keys must be DICOM keywords; filters must be string VRs with the syntax their VR
    allows; hierarchical search (PS3.4 C.4.1.2.2.1) needs the unique keys of every
    level above the query level, with single values.
    """
    if query.level is Level.PATIENT and query.information_model == "study":
        raise ValueError("the Study Root model has no PATIENT level")
    for keyword in [*query.filters, *query.return_keys]:
        tag = tag_for_keyword(keyword) if keyword else None
        if tag is None or keyword_for_tag(tag) != keyword:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        if keyword in RESERVED_KEYS:
            raise ValueError(f"{keyword} is set by NoctisPro, not by the query")
    for keyword, value in query.filters.items():
        _check_filter(keyword, value)
    depth = LEVELS.index(query.level)
    top = 0 if query.information_model == "patient" else 1
    for above in LEVELS[top:depth]:
        key = UNIQUE_KEYS[above]
        value = query.filters.get(key, "")
        if not value or "\\" in value or "*" in value or "?" in value:
            raise ValueError(
                f"a {query.level} query needs one {key} (the unique key of the "
                f"{above} level, PS3.4 C.4.1.2.2.1)"
            )


def _check_filter(keyword: str, value: str) -> None:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    vr = dictionary_VR(tag)
    if vr not in FILTER_VRS:
        raise ValueError(f"{keyword} ({vr}) cannot be matched; ask for it as a return key")
    if not isinstance(value, str):
        raise ValueError(f"{keyword}: the value must be a string")
    if len(value) > 1024 or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"{keyword}: too long or holds control characters")
    if not value:
        return
    if vr == "UI" and not _UID_LIST.match(value):
        raise ValueError(f"{keyword}: {value!r} is not a UID or a backslash-separated UID list")
    if vr == "DA" and not (_DATE_RANGE.match(value) and value != "-"):
        raise ValueError(f"{keyword}: {value!r} is not a date (YYYYMMDD) or a date range")
    if vr == "TM" and not (_TIME_RANGE.match(value) and value != "-"):
        raise ValueError(f"{keyword}: {value!r} is not a time (HHMMSS) or a time range")


@dataclass(frozen=True)
class FindResult:
    matches: list[dict[str, Any]]
    truncated: bool  # the cap was reached and C-CANCEL sent: there may be more
    status: int  # the final status (0x0000, or 0xFE00 after our cancel)
    milliseconds: float


@dataclass(frozen=True)
class MoveProgress:
    """The sub-operation counts of a C-MOVE response (PS3.4 C.4.2.1.5)."""

    remaining: int | None
    completed: int
    failed: int
    warning: int

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.warning


@dataclass(frozen=True)
class MoveResult:
    status: int
    progress: MoveProgress
    failed_sop_instance_uids: list[str]
    error_comment: str
    milliseconds: float

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


def status_text(status: int) -> str:
    meaning = STATUS_MEANING.get(status)
    if meaning is None:
        if 0xC000 <= status <= 0xCFFF:
            meaning = "unable to process"
        elif 0xA000 <= status <= 0xAFFF:
            meaning = "failure"
    return f"0x{status:04X}" + (f" ({meaning})" if meaning else "")


def _new_ae(caller: Caller) -> AE:
    ae = AE(ae_title=caller.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.connection_timeout = caller.timeout
    ae.acse_timeout = caller.timeout
    ae.dimse_timeout = caller.timeout
    ae.network_timeout = caller.timeout
    ae.maximum_pdu_size = caller.max_pdu
    return ae


@contextmanager
def associate(peer: Peer, caller: Caller, sop_classes: list[str]) -> Iterator[Association]:
    """An established association with Nagle off, released (or aborted) afterwards.

    Raises RemoteError telling apart: no connection, rejected, no context accepted, no
    answer. pynetdicom does not say why a connection failed, so it is told by the time
    taken, as `scu.verify` does.
    """
    ae = _new_ae(caller)
    for uid in sop_classes:
        ae.add_requested_context(uid)
    seen: set[str] = set()

    def on_open(event: evt.Event) -> None:
        seen.add("connected")
        set_nodelay(event.assoc.dul.socket.socket if event.assoc.dul.socket else None)

    def on_accepted(event: evt.Event) -> None:
        seen.add("accepted")

    start = time.perf_counter()
    try:
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_ACCEPTED, on_accepted)],
            tls_args=peer.tls_args,
        )
    except OSError as exc:
        raise RemoteError("unreachable", f"cannot resolve {peer.host!r}: {exc}") from exc
    timed_out = time.perf_counter() - start >= caller.timeout * 0.95
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        why = f"{rsp.result_str}, {rsp.source_str}: {rsp.reason_str}" if rsp else "no reason"
        raise RemoteError("rejected", f"{peer} rejected the association ({why})")
    if not assoc.is_established:
        if "connected" not in seen:
            if timed_out:
                raise RemoteError(
                    "timeout",
                    f"no TCP connection to {peer.host}:{peer.port} in {caller.timeout:g} s",
                )
            raise RemoteError(
                "unreachable", f"TCP connection to {peer.host}:{peer.port} refused or unreachable"
            )
        if timed_out:
            raise RemoteError(
                "timeout", f"{peer} did not answer the association in {caller.timeout:g} s"
            )
        raise RemoteError("aborted", f"{peer} aborted the association")
    try:
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        if not accepted.intersection(sop_classes):
            raise RemoteError(
                "rejected", f"{peer} accepted none of the presentation contexts we proposed"
            )
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        if assoc.is_established:
            assoc.abort()


def find(peer: Peer, query: RemoteQuery, caller: Caller, *, max_matches: int) -> FindResult:
    """C-FIND `query` at `peer`; at most `max_matches`, all within `caller.timeout`.

    When the cap is reached the operation is cancelled (C-CANCEL) and the matches so
    far are returned with `truncated` set. A peer still sending after the deadline is
    aborted and RemoteError("timeout") raised.
    """
    start = time.perf_counter()
    deadline = start + caller.timeout
    matches: list[dict[str, Any]] = []
    cancelled = False
    with associate(peer, caller, [query.sop_class]) as assoc:
        _set_remaining(assoc, deadline)
        responses = assoc.send_c_find(query.identifier(), query.sop_class, msg_id=1)
        for status_ds, identifier in responses:
            if "Status" not in status_ds:
                _raise_no_response(assoc, peer, deadline, "C-FIND")
            status = int(status_ds.Status)
            if status in PENDING:
                if identifier is not None and len(matches) < max_matches:
                    matches.append(plain(identifier))
                if len(matches) >= max_matches and not cancelled:
                    assoc.send_c_cancel(1, query_model=query.sop_class)
                    cancelled = True
                _set_remaining(assoc, deadline)
                continue
            if status in (SUCCESS, CANCEL):
                return FindResult(
                    matches=matches,
                    truncated=cancelled,
                    status=status,
                    milliseconds=round(1000 * (time.perf_counter() - start), 2),
                )
            raise RemoteError(
                "failed",
                f"{peer} answered the C-FIND with {status_text(status)}" + _comment(status_ds),
                status=status,
                error_comment=str(status_ds.get("ErrorComment", "")),
            )
    raise RemoteError("aborted", f"{peer} ended the C-FIND without a final response")


def _set_remaining(assoc: Association, deadline: float) -> None:
    """The next response must come before the deadline (pynetdicom reads this per message)."""
    assoc.dimse_timeout = max(deadline - time.perf_counter(), 0.01)


def _raise_no_response(assoc: Association, peer: Peer, deadline: float, what: str) -> None:
    """pynetdicom yields an empty status for silence, an abort and a bad response alike
    (and aborts itself on silence): tell them apart by the clock."""
    if time.perf_counter() >= deadline - 0.05:
        raise RemoteError("timeout", f"{peer} did not finish the {what} in time")
    raise RemoteError("aborted", f"{peer} aborted or sent an invalid {what} response")


def _comment(status_ds: Dataset) -> str:
    comment = str(status_ds.get("ErrorComment", "") or "").strip()
    return f": {comment}" if comment else ""


def move(
    peer: Peer,
    *,
    destination_ae: str,
    study_instance_uid: str,
    series_instance_uid: str | None,
    caller: Caller,
    response_timeout: float,
    on_pending: Callable[[MoveProgress], None] | None = None,
) -> MoveResult:
    """Ask `peer` to C-MOVE a study (or one series) to `destination_ae` (Study Root).

    The peer opens its own association to the destination, so it must know that AE
    title's host and port. `on_pending` sees each pending response; if it raises, the
    move is cancelled (C-CANCEL), the final response awaited briefly, and the
    exception propagates. A final failure status is returned, not raised: the caller
    decides what partial success means.
    """
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES" if series_instance_uid else "STUDY"
    identifier.StudyInstanceUID = study_instance_uid
    if series_instance_uid:
        identifier.SeriesInstanceUID = series_instance_uid
    start = time.perf_counter()
    last = MoveProgress(remaining=None, completed=0, failed=0, warning=0)
    with associate(peer, caller, [STUDY_ROOT_MOVE]) as assoc:
        assoc.dimse_timeout = response_timeout
        responses = assoc.send_c_move(identifier, destination_ae, STUDY_ROOT_MOVE, msg_id=1)
        try:
            waiting_since = time.perf_counter()
            for status_ds, failed_list in responses:
                if "Status" not in status_ds:
                    _raise_no_response(
                        assoc, peer, waiting_since + response_timeout, "C-MOVE sub-operations"
                    )
                waiting_since = time.perf_counter()
                status = int(status_ds.Status)
                last = _progress(status_ds, last)
                if status in PENDING:
                    if on_pending is not None:
                        on_pending(last)
                    continue
                return MoveResult(
                    status=status,
                    progress=last,
                    failed_sop_instance_uids=_failed_uids(failed_list),
                    error_comment=str(status_ds.get("ErrorComment", "") or ""),
                    milliseconds=round(1000 * (time.perf_counter() - start), 2),
                )
        except BaseException:
            _cancel(assoc, responses, min(response_timeout, 10.0))
            raise
    raise RemoteError("aborted", f"{peer} ended the C-MOVE without a final response")


def _cancel(assoc: Association, responses: Iterator[Any], timeout: float) -> None:
    """C-CANCEL the move and wait a little for its final response; abort if none."""
    if not assoc.is_established:
        return
    try:
        assoc.send_c_cancel(1, query_model=STUDY_ROOT_MOVE)
        assoc.dimse_timeout = timeout
        for status_ds, _ in responses:
            if "Status" not in status_ds or int(status_ds.Status) not in PENDING:
                break
    except Exception:
        assoc.abort()


def _progress(status_ds: Dataset, last: MoveProgress) -> MoveProgress:
    """Counts of this response; a final response may leave some out (keep the last seen)."""

    def count(keyword: str, previous: int) -> int:
        value = status_ds.get(keyword)
        return previous if value is None else int(value)

    remaining = status_ds.get("NumberOfRemainingSuboperations")
    return MoveProgress(
        remaining=None if remaining is None else int(remaining),
        completed=count("NumberOfCompletedSuboperations", last.completed),
        failed=count("NumberOfFailedSuboperations", last.failed),
        warning=count("NumberOfWarningSuboperations", last.warning),
    )


def _failed_uids(identifier: Dataset | None) -> list[str]:
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return []
    value = identifier.FailedSOPInstanceUIDList
    if not value:
        return []
    values = value if isinstance(value, MultiValue | list) else [value]
    return [str(v) for v in values if str(v)]


def plain(ds: Dataset) -> dict[str, Any]:
    """A response identifier as keyword → JSON-ready value (private and unknown tags out)."""
    out: dict[str, Any] = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or elem.tag.is_private or elem.tag.group == 0x0002:
            continue
        if keyword == "SpecificCharacterSet":
            continue
        out[keyword] = _plain_value(elem)
    return out


def _plain_value(elem: DataElement) -> Any:
    if elem.VR == "SQ":
        return [plain(item) for item in elem.value] or None
    if elem.VR in {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}:
        return None
    value = elem.value
    if value is None or value == "" or (isinstance(value, MultiValue | list) and not value):
        return None
    if isinstance(value, MultiValue | list):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)
