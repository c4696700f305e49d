"""C-STORE requests received and answered beside pynetdicom's DIMSE machinery.

pynetdicom turns every C-STORE-RQ into pydicom Datasets and validated primitives
(command set decoded through pydicom, a dozen UID validations, a service class, an
event object): about a millisecond of CPU per instance here, whatever its size. A
C-STORE-RQ command set is a handful of implicit VR little endian elements (PS3.7
9.3.1.1, E.1), so it is read by hand, the data set fragments go straight to a spool
file as they arrive (PS3.8 E.2 message control header), and the reactor answers with
a hand-encoded C-STORE-RSP. Every other message, and any command set this code does
not recognise, is handed to pynetdicom unchanged.

Handlers bound to EVT_C_STORE are called with a `StoreEvent`: `assoc`, `context`,
`request` (a `StoreRequest`) and `dataset_path` (a Part 10 file whose file meta we
wrote), which is what `dimse.server.handle_store` uses. EVT_DIMSE_RECV/SENT are not
triggered for these messages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from noctispro.core.ingest import Handover, encode_file_meta
from noctispro.dimse import statuses
from noctispro.dimse.fastpath import LAST_COMMAND_FRAGMENT, encode_c_store_rsp_fields
from noctispro.storage.writeback import WRITEBACK_STEP, start_writeback

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

log = logging.getLogger(__name__)

COMMAND_FRAGMENT = 0x01  # PS3.8 E.2 message control header bits
LAST_FRAGMENT = 0x02
C_STORE_RQ = 0x0001
NO_DATA_SET = 0x0101
SOP_CLASS_NOT_SUPPORTED = 0x0122
PREAMBLE = b"\x00" * 128 + b"DICM"

AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
AFFECTED_SOP_INSTANCE_UID = 0x1000
MOVE_ORIGINATOR_AE_TITLE = 0x1030
MOVE_ORIGINATOR_MESSAGE_ID = 0x1031


class MalformedPDU(ValueError):
    pass


def parse_command_set(data: bytes | bytearray) -> dict[int, bytes] | None:
    """Group 0000 elements (implicit VR LE) as element number → value; None if malformed."""
    elements: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if offset + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            return None
        elements[element] = bytes(data[offset : offset + length])
        offset += length
    return elements


def _us(value: bytes | None) -> int | None:
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def _text(value: bytes | None) -> str:
    return value.decode("ascii", "replace").strip(" \x00") if value else ""


@dataclass
class StoreRequest:
    """One received C-STORE-RQ (PS3.7 Table 9.3-1) and where its data set was spooled."""

    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_ae_title: str
    move_originator_message_id: int | None
    dataset_path: Path | None = None
    #: Why the request is answered with a failure without calling the handler.
    problem: str = ""
    #: The spool file offered to ingest, with the data set's digest once complete.
    handover: Handover | None = None
    _fd: int | None = field(default=None, repr=False)
    _written: int = field(default=0, repr=False)
    _flushed: int = field(default=0, repr=False)
    _sha256: Any = field(default=None, repr=False)

    # What pynetdicom's primitives offer, for code that logs requests.
    @property
    def AffectedSOPInstanceUID(self) -> str:
        return self.sop_instance_uid

    @property
    def AffectedSOPClassUID(self) -> str:
        return self.sop_class_uid

    @property
    def MessageID(self) -> int:
        return self.message_id

    def write(self, pdv: bytes | memoryview) -> None:
        """Append a data set fragment (a PDV, its message control header skipped)."""
        if self._fd is None:
            return  # refused already: the data set is read and dropped
        fragment = memoryview(pdv)[1:]
        self._sha256.update(fragment)
        self._write(fragment)

    def _write(self, view: memoryview) -> None:
        assert self._fd is not None
        self._written += len(view)
        while view:
            view = view[os.write(self._fd, view) :]
        flushed = self._written & ~(WRITEBACK_STEP - 1)
        if flushed > self._flushed:
            start_writeback(self._fd, self._flushed, flushed - self._flushed)
            self._flushed = flushed

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def complete(self) -> None:
        """The last fragment arrived: close the spool file, note the data set's digest."""
        self.close()
        if self.handover is not None:
            self.handover.dataset_sha256 = self._sha256.hexdigest()

    def discard(self) -> None:
        self.close()
        if self.dataset_path is not None:
            if not (self.handover and self.handover.consumed):  # else it is a blob now
                self.dataset_path.unlink(missing_ok=True)
            self.dataset_path = None


class StoreEvent:
    """What an EVT_C_STORE handler gets for a request received on this path."""

    event = evt.EVT_C_STORE

    def __init__(self, assoc: Association, context: PresentationContext, request: StoreRequest):
        self.assoc = assoc
        self.context = context
        self.request = request

    @property
    def dataset_path(self) -> Path:
        assert self.request.dataset_path is not None
        return self.request.dataset_path

    @property
    def handover(self) -> Handover:
        """The spool file for `store_instance`, which may keep it as the blob."""
        assert self.request.handover is not None
        return self.request.handover

    @property
    def is_cancelled(self) -> bool:
        return False


def start_request(
    assoc: Association, context_id: int, command: dict[int, bytes]
) -> StoreRequest | None:
    """A StoreRequest for a C-STORE-RQ command set with a data set; None: not one."""
    if _us(command.get(COMMAND_FIELD)) != C_STORE_RQ:
        return None
    data_set_type = _us(command.get(COMMAND_DATA_SET_TYPE))
    message_id = _us(command.get(MESSAGE_ID))
    if data_set_type is None or data_set_type == NO_DATA_SET or message_id is None:
        return None  # pynetdicom judges what is not a well-formed C-STORE-RQ
    request = StoreRequest(
        context_id=context_id,
        message_id=message_id,
        sop_class_uid=_text(command.get(AFFECTED_SOP_CLASS_UID)),
        sop_instance_uid=_text(command.get(AFFECTED_SOP_INSTANCE_UID)),
        priority=_us(command.get(PRIORITY)) or 0,
        move_originator_ae_title=_text(command.get(MOVE_ORIGINATOR_AE_TITLE)),
        move_originator_message_id=_us(command.get(MOVE_ORIGINATOR_MESSAGE_ID)),
    )
    context = assoc._accepted_cx.get(context_id)
    if not request.sop_class_uid or not request.sop_instance_uid:
        request.problem = "the C-STORE request has no Affected SOP Class/Instance UID"
    elif context is None or not context.transfer_syntax:
        request.problem = f"presentation context {context_id} was not accepted"
    elif context.abstract_syntax != request.sop_class_uid:
        request.problem = (
            f"SOP class {request.sop_class_uid[:64]} sent on the context of "
            f"{context.abstract_syntax}"
        )
    if request.problem:
        return request
    assert context is not None
    fd, name = tempfile.mkstemp(suffix=".dcm")
    request._fd, request.dataset_path = fd, Path(name)
    request.handover = Handover(request.dataset_path)
    request._sha256 = hashlib.sha256()
    try:
        # The file meta ingest writes for this calling AE (`ingest.file_meta_bytes`),
        # so that the spool file can become the blob as it is.
        meta = encode_file_meta(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax_uid=str(context.transfer_syntax[0]),
            source_ae_title=str(assoc.requestor.ae_title).strip(),
        )
        request._write(memoryview(PREAMBLE + meta))
    except BaseException:
        request.discard()
        raise
    return request


class StoreFastDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, with C-STORE requests received by `StoreRequest`."""

    #: The command fragments of the message being received, (context, PDV) each.
    _command_pdvs: list[tuple[int, bytes]]
    #: The C-STORE whose data set is arriving.
    incoming: StoreRequest | None

    def _add_fast_store(self) -> None:
        self._command_pdvs = []
        self.incoming = None

    def receive_primitive(self, primitive: P_DATA) -> None:
        if self.message is not None:  # pynetdicom is receiving this message
            super().receive_primitive(primitive)
            return
        pdvs = primitive.presentation_data_value_list
        for index, (context_id, data) in enumerate(pdvs):
            header = data[0]
            if self.incoming is not None:
                try:
                    self._take_fragment(context_id, data)
                except MalformedPDU as exc:
                    log.warning("%s: aborting", exc)
                    self.discard_incoming()
                    self.dul.event_queue.put("Evt19")
                    return
                continue
            if not header & COMMAND_FRAGMENT:
                self._hand_over(pdvs[index:])
                return
            self._command_pdvs.append((context_id, data))
            if not header & LAST_FRAGMENT:
                continue
            command = parse_command_set(b"".join(d[1:] for _, d in self._command_pdvs))
            request = None if command is None else start_request(self.assoc, context_id, command)
            if request is None:
                self._hand_over(pdvs[index + 1 :])
                return
            self._command_pdvs = []
            self.incoming = request

    def receive_data_pdu(self, body: memoryview) -> None:
        """The PDV items of a P-DATA-TF PDU (PS3.8 9.3.5) read while a data set arrives.

        The DUL calls this instead of decoding the PDU into pynetdicom's objects (and
        copying the fragments three times) when `incoming` is set: the fragments go
        from the receive buffer to the spool file. `body` is that buffer, reused for
        the next PDU, so whatever follows the data set in it is copied and handed to
        `receive_primitive`. Raises MalformedPDU for items that do not fit the PDU.
        """
        pdvs: list[tuple[int, memoryview]] = []
        offset, end = 0, len(body)
        while offset < end:
            if end - offset < 6:
                raise MalformedPDU(f"{end - offset} bytes left after the last PDV item")
            length = int.from_bytes(body[offset : offset + 4], "big")
            if length < 2 or offset + 4 + length > end:
                raise MalformedPDU(f"a PDV item of {length} bytes in {end - offset}")
            pdvs.append((body[offset + 4], body[offset + 5 : offset + 4 + length]))
            offset += 4 + length
        for index, (context_id, data) in enumerate(pdvs):
            if self.incoming is None:
                rest = P_DATA()
                rest.presentation_data_value_list.extend([(c, bytes(d)) for c, d in pdvs[index:]])
                self.receive_primitive(rest)
                return
            self._take_fragment(context_id, data)

    def _take_fragment(self, context_id: int, data: bytes | memoryview) -> None:
        """A PDV of the data set `incoming` receives; the last one queues the request.

        Raises MalformedPDU for a command fragment or another presentation context
        before the data set's last fragment (PS3.8 E.2, 9.3.5.1).
        """
        incoming = self.incoming
        assert incoming is not None
        header = data[0]
        if header & COMMAND_FRAGMENT or context_id != incoming.context_id:
            raise MalformedPDU(
                "a command fragment or another presentation context inside a C-STORE data set"
            )
        incoming.write(data)
        if header & LAST_FRAGMENT:
            incoming.complete()
            self.incoming = None
            self.msg_queue.put((incoming.context_id, incoming))  # type: ignore[arg-type]

    def _hand_over(self, rest: list[tuple[int, bytes]]) -> None:
        """Give the message received so far, and the rest of this P-DATA, to pynetdicom."""
        replay = P_DATA()
        replay.presentation_data_value_list.extend([*self._command_pdvs, *rest])
        self._command_pdvs = []
        super().receive_primitive(replay)

    def discard_incoming(self) -> bool:
        """Delete the spool file of a C-STORE cut off mid-transfer; True if there was one."""
        incoming, self.incoming = self.incoming, None
        if incoming is None or incoming.dataset_path is None:
            return False
        incoming.discard()
        return True


def serve(assoc: Association, request: StoreRequest) -> None:
    """Call the EVT_C_STORE handler and send the C-STORE-RSP (PS3.7 9.3.1.2)."""
    try:
        status, comment = _handle(assoc, request)
        command = encode_c_store_rsp_fields(
            sop_class_uid=request.sop_class_uid,
            message_id=request.message_id,
            status=status,
            error_comment=comment,
            sop_instance_uid=request.sop_instance_uid,
        )
        pdata = P_DATA()
        pdata.presentation_data_value_list.append(
            (request.context_id, LAST_COMMAND_FRAGMENT + command)
        )
        assoc.dul.send_pdu(pdata)
    finally:
        request.discard()


def _handle(assoc: Association, request: StoreRequest) -> tuple[int, str]:
    if request.problem:
        status = (
            SOP_CLASS_NOT_SUPPORTED
            if request.sop_class_uid and "context" in request.problem
            else statuses.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        )
        log.warning("C-STORE refused (0x%04X): %s", status, request.problem)
        return status, request.problem
    handler, args = cast(
        "tuple[Callable[..., Any] | None, list[Any] | None]", assoc.get_handlers(evt.EVT_C_STORE)
    )
    if handler is None:
        return statuses.PROCESSING_FAILURE, "no storage handler"
    context = assoc._accepted_cx[request.context_id]
    try:
        answer: Any = handler(StoreEvent(assoc, context, request), *(args or []))
    except Exception:
        log.exception("C-STORE handler failed")
        return statuses.PROCESSING_FAILURE, "internal error while storing"
    if isinstance(answer, Dataset):
        return int(answer.get("Status", statuses.PROCESSING_FAILURE)), str(
            answer.get("ErrorComment", "")
        )
    return int(answer), ""


def install(assoc: Association) -> None:
    """Make a just-created acceptor's DIMSE provider receive C-STOREs this way."""
    dimse = assoc.dimse
    dimse.__class__ = StoreFastDIMSE
    assert isinstance(dimse, StoreFastDIMSE)
    dimse._add_fast_store()


def discard_partial(assoc: Association) -> bool:
    dimse = assoc.dimse
    return isinstance(dimse, StoreFastDIMSE) and dimse.discard_incoming()
