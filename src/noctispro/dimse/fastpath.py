"""DIMSE messages encoded directly instead of through pydicom: C-STORE-RQ and -RSP,
C-FIND-RSP, and C-MOVE-RSP / C-GET-RSP without an identifier.

pynetdicom builds every command set as a pydicom Dataset and encodes it twice (once to
measure the group length): 0.7 ms of CPU per C-STORE here, a fifth of its whole
receive path, 0.4 ms per C-FIND match, and most of the cost of a C-MOVE sub-operation
(its C-STORE-RQ and the pending C-MOVE-RSP after it). A command set is five to ten
fixed elements in implicit VR little endian (PS3.7 9.1-9.3, E.1), so it is written by
hand. A C-FIND-RSP and its identifier, and a C-STORE-RQ and the first fragment of its
data set, go in one P-DATA-TF PDU with two PDVs when they fit (PS3.8 9.3.5 allows
several PDVs per PDU), which saves a PDU, a send and a wake-up per message.

C-FIND identifiers can come already encoded (`EncodedIdentifier`, built by
`dimse.find` for the little endian syntaxes): pynetdicom's `encode` is wrapped so it
passes them through. This relies on pynetdicom's `dimse._RSP_TO_MESSAGE` table and
`service_class.encode` name (pinned: pynetdicom 3.0.x) and on its standard logging
handlers being off (`_config.LOG_HANDLER_LEVEL = "none"`), which look messages up by
exact class.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import dimse, dsutils, service_class
from pynetdicom.dimse_messages import (
    C_FIND_RSP,
    C_GET_RSP,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    DIMSEMessage,
)
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.pdu_primitives import P_DATA

# PS3.8 E.2 message control header: command or data set, last fragment or not.
LAST_COMMAND_FRAGMENT = b"\x03"
DATA_FRAGMENT = b"\x00"
LAST_DATA_FRAGMENT = b"\x02"
PDV_HEADER = 6  # item length (4), presentation context ID (1), control header (1)
C_STORE_RQ_FIELD = 0x0001
C_FIND_RSP_FIELD = 0x8020
C_GET_RSP_FIELD = 0x8010
C_MOVE_RSP_FIELD = 0x8021
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0001


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _text(value: Any, pad: bytes) -> bytes:
    raw = str(value).encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def encode_c_store_rsp(primitive: C_STORE) -> bytes:
    """The command set of a C-STORE-RSP (PS3.7 Table 9.3-2), group length first."""
    return encode_c_store_rsp_fields(
        sop_class_uid=str(primitive.AffectedSOPClassUID or ""),
        message_id=int(primitive.MessageIDBeingRespondedTo or 0),
        status=int(primitive.Status or 0),
        error_comment=str(primitive.ErrorComment or ""),
        sop_instance_uid=str(primitive.AffectedSOPInstanceUID or ""),
        offending_elements=list(primitive.OffendingElement or []),
    )


def encode_c_store_rsp_fields(
    *,
    sop_class_uid: str,
    message_id: int,
    status: int,
    error_comment: str = "",
    sop_instance_uid: str = "",
    offending_elements: list[int] | None = None,
) -> bytes:
    parts = _response_elements(
        sop_class_uid, 0x8001, message_id, NO_DATA_SET, status, offending_elements, error_comment
    )
    if sop_instance_uid:
        parts.append(_element(0x1000, _text(sop_instance_uid, b"\x00")))
    return _command_set(parts)


def _response_elements(
    sop_class_uid: Any,
    command_field: int,
    message_id: Any,
    data_set_type: int,
    status: Any,
    offending_elements: list[int] | None,
    error_comment: str | None,
) -> list[bytes]:
    """The elements every response starts with, in tag order (PS3.7 9.1-9.3, C)."""
    parts = []
    if sop_class_uid:
        parts.append(_element(0x0002, _text(sop_class_uid, b"\x00")))
    parts.append(_element(0x0100, _us(command_field)))
    parts.append(_element(0x0120, _us(int(message_id or 0))))
    parts.append(_element(0x0800, _us(data_set_type)))
    parts.append(_element(0x0900, _us(int(status or 0))))
    if offending_elements:
        tags = b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in offending_elements)
        parts.append(_element(0x0901, tags))
    if error_comment:
        parts.append(_element(0x0902, _text(error_comment[:64], b" ")))
    return parts


def _command_set(parts: list[bytes]) -> bytes:
    """The elements behind their Command Group Length (PS3.7 E.1)."""
    body = b"".join(parts)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def encode_c_find_rsp(primitive: C_FIND, data_set_type: int) -> bytes:
    """The command set of a C-FIND-RSP (PS3.7 Table 9.1-3), group length first."""
    return _command_set(
        _response_elements(
            primitive.AffectedSOPClassUID,
            C_FIND_RSP_FIELD,
            primitive.MessageIDBeingRespondedTo,
            data_set_type,
            primitive.Status,
            primitive.OffendingElement,
            primitive.ErrorComment,
        )
    )


def encode_c_store_rq(primitive: C_STORE) -> bytes:
    """The command set of a C-STORE-RQ (PS3.7 Table 9.3-1), group length first."""
    originator = primitive.MoveOriginatorApplicationEntityTitle
    return encode_c_store_rq_fields(
        sop_class_uid=str(primitive.AffectedSOPClassUID),
        sop_instance_uid=str(primitive.AffectedSOPInstanceUID),
        message_id=int(primitive.MessageID or 0),
        priority=int(primitive.Priority or 0),
        originator_ae=str(originator).strip() if originator else "",
        originator_message_id=primitive.MoveOriginatorMessageID,
    )


def encode_c_store_rq_fields(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    message_id: int,
    priority: int = 0,
    originator_ae: str = "",
    originator_message_id: int | None = None,
) -> bytes:
    parts = [
        _element(0x0002, _text(sop_class_uid, b"\x00")),
        _element(0x0100, _us(C_STORE_RQ_FIELD)),
        _element(0x0110, _us(message_id)),
        _element(0x0700, _us(priority)),
        _element(0x0800, _us(DATA_SET_PRESENT)),
        _element(0x1000, _text(sop_instance_uid, b"\x00")),
    ]
    if originator_ae:
        parts.append(_element(0x1030, _text(originator_ae, b" ")))
    if originator_message_id is not None:
        parts.append(_element(0x1031, _us(originator_message_id)))
    return _command_set(parts)


def message_pdatas(
    context_id: int, max_pdu_length: int, command: bytes, data: Iterator[tuple[bytes, bool]]
) -> Iterator[P_DATA]:
    """P-DATAs for a command set and data set fragments (PS3.8 E.2); the first data
    fragment rides in the command's PDU when there is room (0: no PDU limit)."""
    command = LAST_COMMAND_FRAGMENT + command
    pending: P_DATA | None = P_DATA()
    assert pending is not None
    pending.presentation_data_value_list.append((context_id, command))
    room = max_pdu_length - 2 * PDV_HEADER - len(command) + 1 if max_pdu_length else 0
    for chunk, last in data:
        control = LAST_DATA_FRAGMENT if last else DATA_FRAGMENT
        if pending is not None and (not max_pdu_length or len(chunk) <= room):
            pending.presentation_data_value_list.append((context_id, control + chunk))
            yield pending
            pending = None
            continue
        if pending is not None:
            yield pending
            pending = None
        fragment = P_DATA()
        fragment.presentation_data_value_list.append((context_id, control + chunk))
        yield fragment
    if pending is not None:  # no data set
        yield pending


def file_chunks(path: Any, offset: int, size: int) -> Iterator[tuple[bytes, bool]]:
    """Bytes `offset`.. of a file in pieces of at most `size` (0: one), with a last flag."""
    with open(path, "rb") as f:
        length = f.seek(0, 2) - offset
        f.seek(offset)
        step = size or length or 1
        sent = 0
        while sent < length:
            chunk = f.read(min(step, length - sent))
            if not chunk:
                raise OSError(f"{path} ended {length - sent} bytes early")
            sent += len(chunk)
            yield chunk, sent >= length


def bytes_chunks(data: bytes, size: int) -> Iterator[tuple[bytes, bool]]:
    step = size or len(data) or 1
    for start in range(0, len(data), step):
        yield data[start : start + step], start + step >= len(data)


def encode_retrieve_rsp(primitive: C_MOVE | C_GET, command_field: int) -> bytes:
    """A C-MOVE-RSP or C-GET-RSP command set without identifier (PS3.7 9.3.4.2, 9.3.3.2)."""
    parts = _response_elements(
        primitive.AffectedSOPClassUID,
        command_field,
        primitive.MessageIDBeingRespondedTo,
        NO_DATA_SET,
        primitive.Status,
        primitive.OffendingElement,
        primitive.ErrorComment,
    )
    for element, count in (
        (0x1020, primitive.NumberOfRemainingSuboperations),
        (0x1021, primitive.NumberOfCompletedSuboperations),
        (0x1022, primitive.NumberOfFailedSuboperations),
        (0x1023, primitive.NumberOfWarningSuboperations),
    ):
        if count is not None:
            parts.append(_element(element, _us(int(count))))
    return _command_set(parts)


class DirectCStoreRq(C_STORE_RQ):
    """A C-STORE-RQ whose data set comes encoded (a BytesIO) or as (file, offset)."""

    def __init__(self) -> None:  # no pydicom command-set Dataset
        self.context_id: int | None = None
        self.data_set = None
        self._data_set_path = None
        self._primitive: C_STORE | None = None

    def primitive_to_message(self, primitive: C_STORE) -> None:  # type: ignore[override]
        self._primitive = primitive
        self.data_set = primitive.DataSet
        self._data_set_path = getattr(primitive, "_dataset_path", None)

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        assert self._primitive is not None
        self.context_id = context_id
        size = max_pdu_length - PDV_HEADER if max_pdu_length else 0
        data: Iterator[tuple[bytes, bool]] = iter(())
        if self.data_set is not None:
            data = bytes_chunks(self.data_set.getvalue(), size)
        elif isinstance(self._data_set_path, tuple):
            data = file_chunks(*self._data_set_path, size)
        yield from message_pdatas(
            context_id, max_pdu_length, encode_c_store_rq(self._primitive), data
        )


DirectCStoreRq.__name__ = DirectCStoreRq.__qualname__ = "C_STORE_RQ"


class DirectCMoveRsp(C_MOVE_RSP):
    """A C-MOVE-RSP, hand-encoded unless it carries an identifier (the Failed SOP
    Instance UID List of a final response), which pynetdicom encodes as usual."""

    base: type[DIMSEMessage] = C_MOVE_RSP
    command_field = C_MOVE_RSP_FIELD

    def __init__(self) -> None:  # no pydicom command-set Dataset unless needed
        self.context_id: int | None = None
        self.data_set = None
        self._primitive: C_MOVE | C_GET | None = None

    def primitive_to_message(self, primitive: C_MOVE | C_GET) -> None:  # type: ignore[override]
        if primitive.Identifier is not None:
            self.base.__init__(self)
            self.base.primitive_to_message(self, primitive)
            return
        self._primitive = primitive

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        if self._primitive is None:
            yield from self.base.encode_msg(self, context_id, max_pdu_length)
            return
        self.context_id = context_id
        command = encode_retrieve_rsp(self._primitive, self.command_field)
        yield from message_pdatas(context_id, max_pdu_length, command, iter(()))


class DirectCGetRsp(DirectCMoveRsp, C_GET_RSP):
    base = C_GET_RSP
    command_field = C_GET_RSP_FIELD


DirectCMoveRsp.__name__ = DirectCMoveRsp.__qualname__ = "C_MOVE_RSP"
DirectCGetRsp.__name__ = DirectCGetRsp.__qualname__ = "C_GET_RSP"


class DirectCStoreRsp(C_STORE_RSP):
    def __init__(self) -> None:  # no pydicom command-set Dataset
        self.context_id: int | None = None
        self.data_set = None
        self._primitive: C_STORE | None = None

    def primitive_to_message(self, primitive: C_STORE) -> None:  # type: ignore[override]
        self._primitive = primitive

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        assert self._primitive is not None
        command = encode_c_store_rsp(self._primitive)
        yield from message_pdatas(context_id, max_pdu_length, command, iter(()))


# pynetdicom reads the message type from the class name.
DirectCStoreRsp.__name__ = DirectCStoreRsp.__qualname__ = "C_STORE_RSP"


class DirectCFindRsp(C_FIND_RSP):
    def __init__(self) -> None:  # no pydicom command-set Dataset
        self.context_id: int | None = None
        self.data_set = None
        self._primitive: C_FIND | None = None

    def primitive_to_message(self, primitive: C_FIND) -> None:  # type: ignore[override]
        self._primitive = primitive

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        assert self._primitive is not None
        identifier = self._primitive.Identifier
        data = identifier.getvalue() if identifier is not None else b""
        command = encode_c_find_rsp(self._primitive, DATA_SET_PRESENT if data else NO_DATA_SET)
        size = max_pdu_length - PDV_HEADER if max_pdu_length else 0
        yield from message_pdatas(context_id, max_pdu_length, command, bytes_chunks(data, size))


DirectCFindRsp.__name__ = DirectCFindRsp.__qualname__ = "C_FIND_RSP"


class EncodedIdentifier(Dataset):
    """A C-FIND response identifier already encoded in a little endian transfer syntax."""

    def __init__(self, encoded: bytes, *, implicit_vr: bool) -> None:
        super().__init__()
        # Plain attributes: Dataset.__setattr__ would look each name up as a keyword.
        object.__setattr__(self, "encoded", encoded)
        object.__setattr__(self, "implicit_vr", implicit_vr)


_pynetdicom_encode = dsutils.encode


def _encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom's `encode`, passing an EncodedIdentifier of the right syntax through."""
    if (
        isinstance(ds, EncodedIdentifier)
        and ds.implicit_vr == is_implicit_vr
        and is_little_endian
        and not deflated
    ):
        return ds.encoded
    if isinstance(ds, EncodedIdentifier):
        return None  # wrong syntax: pynetdicom answers 0xC312 rather than send nothing
    return _pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


def install() -> None:
    dimse._RQ_TO_MESSAGE[C_STORE] = DirectCStoreRq
    dimse._RSP_TO_MESSAGE[C_STORE] = DirectCStoreRsp
    dimse._RSP_TO_MESSAGE[C_FIND] = DirectCFindRsp
    dimse._RSP_TO_MESSAGE[C_MOVE] = DirectCMoveRsp
    dimse._RSP_TO_MESSAGE[C_GET] = DirectCGetRsp
    service_class.encode = _encode
