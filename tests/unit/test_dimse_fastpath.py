"""The hand-encoded C-STORE-RSP must be byte-identical to what pynetdicom encodes."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from noctispro.dimse.fastpath import DirectCStoreRsp, encode_c_store_rsp


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
