"""The hand-encoded DIMSE messages must be byte-identical to pynetdicom's."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_FIND_RSP, C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode

from noctispro.dimse.fastpath import (
    DirectCFindRsp,
    DirectCGetRsp,
    DirectCMoveRsp,
    DirectCStoreRq,
    DirectCStoreRsp,
    encode_c_find_rsp,
    encode_c_store_rq,
    encode_c_store_rsp,
)


def _primitive(**fields) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1234567890123"
    rsp.Status = 0x0000
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"Status": 0xC000, "ErrorComment": "element (7FE0,0010) declares 8192 bytes"},
        {"Status": 0xA900, "ErrorComment": "odd"},
        {"Status": 0xA700, "AffectedSOPInstanceUID": "1.2.3"},
        {"Status": 0xB000, "OffendingElement": [0x00100010, 0x00100020]},
    ],
)
def test_matches_pynetdicoms_encoding(fields) -> None:
    primitive = _primitive(**fields)
    reference = C_STORE_RSP()
    reference.primitive_to_message(primitive)
    assert encode_c_store_rsp(primitive) == encode(reference.command_set, True, True)


def test_message_is_one_last_command_fragment() -> None:
    message = DirectCStoreRsp()
    message.primitive_to_message(_primitive())
    (pdata,) = list(message.encode_msg(3, 16384))
    ((context_id, value),) = pdata.presentation_data_value_list
    assert context_id == 3 and value[:1] == b"\x03"
    assert type(message).__name__ == "C_STORE_RSP"


def _find_rsp(status: int, identifier: bytes | None = None, **fields) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    rsp.Status = status
    rsp.Identifier = BytesIO(identifier) if identifier is not None else None
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


@pytest.mark.parametrize(
    ("status", "identifier", "fields"),
    [
        (0xFF00, b"\x08\x00\x52\x00\x06\x00STUDY ", {}),
        (0x0000, None, {}),
        (0xA900, None, {"ErrorComment": "PatientName is above the SERIES level"}),
        (0xC000, None, {"OffendingElement": [0x00100010]}),
    ],
)
def test_c_find_rsp_matches_pynetdicoms_encoding(status, identifier, fields) -> None:
    primitive = _find_rsp(status, identifier, **fields)
    reference = C_FIND_RSP()
    reference.primitive_to_message(primitive)
    data_set_type = 0x0001 if identifier else 0x0101
    assert encode_c_find_rsp(primitive, data_set_type) == encode(reference.command_set, True, True)


def _reassemble(pdatas) -> tuple[bytes, bytes, list[int]]:
    command, data, pdus = b"", b"", []
    for pdata in pdatas:
        size = 0
        for _, value in pdata.presentation_data_value_list:
            size += 4 + 1 + len(value)
            if value[0] & 1:
                command += value[1:]
            else:
                data += value[1:]
        pdus.append(size)
    return command, data, pdus


def test_c_find_rsp_and_small_identifier_share_one_pdu() -> None:
    message = DirectCFindRsp()
    message.primitive_to_message(_find_rsp(0xFF00, b"\x10\x00\x10\x00\x04\x00DOE^"))
    pdatas = list(message.encode_msg(1, 16384))
    assert len(pdatas) == 1
    values = [v for _, v in pdatas[0].presentation_data_value_list]
    assert [v[0] for v in values] == [0x03, 0x02]  # last command, then last data fragment
    assert values[1][1:] == b"\x10\x00\x10\x00\x04\x00DOE^"


def test_large_identifier_is_fragmented_within_the_peers_pdu_size() -> None:
    identifier = bytes(range(256)) * 40  # 10,240 bytes
    message = DirectCFindRsp()
    message.primitive_to_message(_find_rsp(0xFF00, identifier))
    pdatas = list(message.encode_msg(1, 4096))
    command, data, pdus = _reassemble(pdatas)
    assert data == identifier
    assert max(pdus) <= 4096
    flags = [v[0] for p in pdatas for _, v in p.presentation_data_value_list]
    assert flags[0] == 0x03 and flags[-1] == 0x02 and set(flags[1:-1]) <= {0x00}
    reference = C_FIND_RSP()
    reference.primitive_to_message(_find_rsp(0xFF00, identifier))
    assert command == encode(reference.command_set, True, True)


def _store_rq(**fields) -> C_STORE:
    rq = C_STORE()
    rq.MessageID = 12
    rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rq.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1234567890123"
    rq.Priority = 0
    for name, value in fields.items():
        setattr(rq, name, value)
    return rq


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"MoveOriginatorApplicationEntityTitle": "MOVER", "MoveOriginatorMessageID": 3},
        {"MoveOriginatorApplicationEntityTitle": "SIXTEEN_CHARS_AE", "Priority": 2},
        {"AffectedSOPInstanceUID": "1.2.3"},
    ],
)
def test_c_store_rq_matches_pynetdicoms_encoding(fields) -> None:
    primitive = _store_rq(**fields)
    primitive.DataSet = BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    reference = C_STORE_RQ()
    reference.primitive_to_message(primitive)
    assert encode_c_store_rq(primitive) == encode(reference.command_set, True, True)


@pytest.mark.parametrize("max_pdu", [0, 4096, 16384, 1_000_000])
@pytest.mark.parametrize("size", [1, 4000, 16384, 100_001])
def test_c_store_rq_message_carries_the_data_set_whole(tmp_path, max_pdu: int, size: int) -> None:
    """Fragments (PS3.8 E.2): the command first and last of its kind, then the data set in
    order, the last fragment flagged, no PDU over the peer's maximum length."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "stored.dcm"
    path.write_bytes(b"META" * 10 + data)
    primitive = _store_rq()
    primitive._dataset_path = (path, 40)  # what send_c_store sets for a chunked send
    message = DirectCStoreRq()
    message.primitive_to_message(primitive)
    pdvs = [
        pdv
        for pdata in message.encode_msg(5, max_pdu)
        for pdv in pdata.presentation_data_value_list
    ]
    for pdata in message.encode_msg(5, max_pdu):
        if max_pdu:
            assert sum(6 + len(v) - 1 for _, v in pdata.presentation_data_value_list) <= max_pdu
    assert pdvs[0][1][:1] == b"\x03"
    assert pdvs[0][1][1:] == encode_c_store_rq(primitive)
    assert all(context_id == 5 for context_id, _ in pdvs)
    assert [v[:1] for _, v in pdvs[1:]] == [b"\x00"] * (len(pdvs) - 2) + [b"\x02"]
    assert b"".join(v[1:] for _, v in pdvs[1:]) == data
    assert type(message).__name__ == "C_STORE_RQ"


def _retrieve_rsp(kind: type, status: int, **fields):
    rsp = kind()
    rsp.MessageIDBeingRespondedTo = 4
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    rsp.Status = status
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


COUNTS = {
    "NumberOfRemainingSuboperations": 497,
    "NumberOfCompletedSuboperations": 2,
    "NumberOfFailedSuboperations": 1,
    "NumberOfWarningSuboperations": 0,
}


@pytest.mark.parametrize(
    ("kind", "reference_class", "direct_class"),
    [(C_MOVE, C_MOVE_RSP, DirectCMoveRsp), (C_GET, C_GET_RSP, DirectCGetRsp)],
)
@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (0xFF00, COUNTS),
        (0x0000, {k: v for k, v in COUNTS.items() if "Remaining" not in k}),
        (0xA801, {"ErrorComment": "move destination unknown"}),
        (0x0124, {}),
    ],
)
def test_retrieve_rsp_matches_pynetdicoms_encoding(
    kind, reference_class, direct_class, status, fields
) -> None:
    primitive = _retrieve_rsp(kind, status, **fields)
    reference = reference_class()
    reference.primitive_to_message(primitive)
    expected = encode(reference.command_set, True, True)
    message = direct_class()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(1, 16384))
    ((_, value),) = pdata.presentation_data_value_list
    assert value == b"\x03" + expected
    assert type(message).__name__ == reference_class.__name__


def test_retrieve_rsp_with_an_identifier_is_pynetdicoms() -> None:
    """A final response with the Failed SOP Instance UID List keeps pynetdicom's encoding."""
    identifier = b"\x08\x00\x58\x00\x06\x00" + b"1.2.3\x00"
    primitive = _retrieve_rsp(C_MOVE, 0xB000, Identifier=BytesIO(identifier), **COUNTS)
    reference = C_MOVE_RSP()
    reference.primitive_to_message(primitive)
    message = DirectCMoveRsp()
    message.primitive_to_message(primitive)
    ours = [v for p in message.encode_msg(1, 16384) for _, v in p.presentation_data_value_list]
    theirs = [v for p in reference.encode_msg(1, 16384) for _, v in p.presentation_data_value_list]
    assert ours == theirs
    assert ours[-1] == b"\x02" + identifier
