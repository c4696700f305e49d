"""C-STORE-RQ messages built PDV by PDV, to exercise the SCP's own C-STORE receive path
(dimse/storefast.py) where pynetdicom's and DCMTK's clients never go: command and data
in one P-DATA, a command set split over fragments, missing or mismatched UIDs."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    Verification,
)

from tests.factories import make_ct, to_bytes
from tests.integration.archive import Archive

COMMAND, LAST = 0x01, 0x02


def element(number: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", 0x0000, number, len(value)) + value


def store_command(message_id: int, sop_class: str | None, sop_instance: str | None) -> bytes:
    body = b""
    if sop_class is not None:
        body += element(0x0002, sop_class.encode())
    body += element(0x0100, struct.pack("<H", 0x0001))
    body += element(0x0110, struct.pack("<H", message_id))
    body += element(0x0700, struct.pack("<H", 0))
    body += element(0x0800, struct.pack("<H", 0x0000))
    if sop_instance is not None:
        body += element(0x1000, sop_instance.encode())
    return element(0x0000, struct.pack("<I", len(body))) + body


def dataset_of(ds) -> bytes:
    """The data set without preamble and file meta, as a C-STORE carries it."""
    raw = to_bytes(ds)
    offset = 132
    (group_length,) = struct.unpack_from("<I", raw, 132 + 8)
    offset += 12 + group_length
    return raw[offset:]


def exchange(assoc: Association, *pdus: list[tuple[int, bytes]]) -> tuple[int, str]:
    """Send the P-DATAs and return the status and error comment of the response."""
    (answer,) = exchange_many(assoc, 1, *pdus)
    return answer


def exchange_many(
    assoc: Association, responses: int, *pdus: list[tuple[int, bytes]]
) -> list[tuple[int, str]]:
    """Send the P-DATAs and return the status and error comment of each response.

    The requestor's reactor is paused meanwhile, as pynetdicom's send_* methods do,
    so that it does not take the responses off the DIMSE queue first.
    """
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    answers = []
    try:
        for pdvs in pdus:
            pdata = P_DATA()
            pdata.presentation_data_value_list.extend(pdvs)
            assoc.dul.send_pdu(pdata)
        for _ in range(responses):
            _, rsp = assoc.dimse.get_msg(block=True)
            assert rsp is not None, "no C-STORE response"
            answers.append((int(rsp.Status), str(rsp.ErrorComment or "")))
    finally:
        assoc._reactor_checkpoint.set()
    return answers


@pytest.fixture
def assoc(running_archive: Archive) -> Iterator[Association]:
    association = running_archive.associate(
        [CTImageStorage, MRImageStorage, Verification],
        calling_ae="WIRE",
        transfer_syntax=ExplicitVRLittleEndian,
    )
    try:
        yield association
    finally:
        association.release()


def context_of(assoc: Association, sop_class: str) -> int:
    return next(
        int(cx.context_id) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class
    )


def stored(archive: Archive, sop_instance_uid: str) -> bool:
    rows = archive.query(
        "SELECT 1 FROM index_instance WHERE sop_instance_uid = ?", (sop_instance_uid,)
    )
    return bool(rows)


def test_command_and_data_in_one_pdata_and_split_command(
    running_archive: Archive, assoc: Association
) -> None:
    cx = context_of(assoc, CTImageStorage)
    first, second = make_ct(), make_ct()
    data = dataset_of(first)
    command = store_command(1, CTImageStorage, first.SOPInstanceUID)
    # Command (last fragment) and the whole data set in one P-DATA, two PDVs.
    status = exchange(assoc, [(cx, bytes([COMMAND | LAST]) + command), (cx, bytes([LAST]) + data)])
    assert status == (0x0000, "")

    data = dataset_of(second)
    command = store_command(2, CTImageStorage, second.SOPInstanceUID)
    half = len(command) // 2
    status = exchange(
        assoc,
        [(cx, bytes([COMMAND]) + command[:half])],
        [(cx, bytes([COMMAND | LAST]) + command[half:]), (cx, b"\x00" + data[:1000])],
        [(cx, b"\x00" + data[1000:5000])],
        [(cx, bytes([LAST]) + data[5000:])],
    )
    assert status == (0x0000, "")
    for ds in (first, second):
        assert stored(running_archive, ds.SOPInstanceUID)
    running_archive.assert_consistent()


def test_a_data_set_ending_mid_pdu_before_the_next_message(
    running_archive: Archive, assoc: Association
) -> None:
    """The last fragment of one data set, then a whole C-STORE-RQ, in one P-DATA-TF PDU.

    The PDU after the command is read by the SCP straight into the spool file
    (`reactor.EventDrivenDUL._read_store_data`); what follows the data set in it must
    still reach the DIMSE layer as the next message.
    """
    cx = context_of(assoc, CTImageStorage)
    first, second = make_ct(), make_ct()
    data1, data2 = dataset_of(first), dataset_of(second)
    answers = exchange_many(
        assoc,
        2,
        [(cx, bytes([COMMAND | LAST]) + store_command(1, CTImageStorage, first.SOPInstanceUID))],
        [(cx, b"\x00" + data1[:4000])],
        [(cx, b"\x00" + data1[4000:9000])],
        [
            (cx, bytes([LAST]) + data1[9000:]),
            (cx, bytes([COMMAND | LAST]) + store_command(2, CTImageStorage, second.SOPInstanceUID)),
            (cx, b"\x00" + data2[:3000]),
        ],
        [(cx, bytes([LAST]) + data2[3000:])],
    )
    assert answers == [(0x0000, ""), (0x0000, "")]
    for ds in (first, second):
        assert stored(running_archive, ds.SOPInstanceUID)
    stored_file = running_archive.query(
        "SELECT storage_key FROM index_instance WHERE sop_instance_uid = ?",
        (second.SOPInstanceUID,),
    )[0][0]
    assert (running_archive.data_dir / "storage" / stored_file).read_bytes().endswith(data2)
    running_archive.assert_consistent()


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "status"),
    [
        (None, "from-dataset", 0xA900),  # no Affected SOP Class UID
        (CTImageStorage, None, 0xA900),  # no Affected SOP Instance UID
        (MRImageStorage, "from-dataset", 0x0122),  # MR sent on the CT context
    ],
)
def test_bad_command_sets_are_refused_and_nothing_is_kept(
    running_archive: Archive,
    assoc: Association,
    sop_class: str | None,
    sop_instance: str | None,
    status: int,
) -> None:
    cx = context_of(assoc, CTImageStorage)
    ds = make_ct(sop_uid=generate_uid())
    uid = ds.SOPInstanceUID if sop_instance == "from-dataset" else sop_instance
    spool = running_archive.data_dir / "tmp"
    before = set(spool.iterdir())
    got, comment = exchange(
        assoc,
        [(cx, bytes([COMMAND | LAST]) + store_command(7, sop_class, uid))],
        [(cx, bytes([LAST]) + dataset_of(ds))],
    )
    assert got == status
    assert comment
    assert not stored(running_archive, ds.SOPInstanceUID)
    assert set(spool.iterdir()) == before
    # The association goes on serving.
    assert assoc.send_c_echo().Status == 0x0000
