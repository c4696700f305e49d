"""Hand-built P-DATA that a broken or hostile peer might send (PS3.7 9.3.1, PS3.8 9.3.5).

The SCP must end such an association with an A-ABORT, keep no spool file or index row,
and go on serving everyone else. (A huge declared PDU length and a TCP reset mid C-STORE
are in test_dimse_store.py; well-formed C-STORE-RQs without their UIDs, answered with
a failure status, in test_dimse_store_wire.py.)
"""

from __future__ import annotations

import struct
import time

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    Verification,
)

from tests.factories import make_ct
from tests.integration.archive import Archive

COMMAND_LAST = 0x03  # PS3.8 E.2 message control header: command, last fragment
DATA = 0x00  # data set, more fragments follow
DATA_LAST = 0x02


def connect(archive: Archive) -> Association:
    ae = AE(ae_title="BADPEER")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", archive.dicom_port, ae_title="NOCTISPRO")
    assert assoc.is_established
    return assoc


def store_command(**drop_or_change: object) -> bytes:
    """A C-STORE-RQ command set (Implicit VR LE) with elements removed (None) or changed."""
    cs = Dataset()
    cs.AffectedSOPClassUID = CTImageStorage
    cs.CommandField = 0x0001
    cs.MessageID = 7
    cs.Priority = 0
    cs.CommandDataSetType = 0x0001
    cs.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.10.1.1"
    for keyword, value in drop_or_change.items():
        if value is None:
            delattr(cs, keyword)
        else:
            setattr(cs, keyword, value)
    body = encode(cs, True, True)
    assert body is not None
    group_length = Dataset()
    group_length.CommandGroupLength = len(body)
    head = encode(group_length, True, True)
    assert head is not None
    return head + body


def send_pdv(assoc: Association, context_id: int, control: int, data: bytes) -> None:
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, bytes([control]) + data))
    assoc.dul.send_pdu(pdata)


def data_set() -> bytes:
    raw = encode(make_ct(), False, True)
    assert raw is not None
    return raw


def wait_aborted(assoc: Association, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted, "the SCP did not abort the association"


def spool_files(archive: Archive) -> set:
    return set((archive.data_dir / "tmp").iterdir())


def scp_still_serves(archive: Archive) -> None:
    assoc = archive.associate([Verification])
    assert assoc.send_c_echo().Status == 0
    assoc.release()


BAD_COMMANDS = {
    "no CommandDataSetType": store_command(CommandDataSetType=None),
    "unknown CommandField": store_command(CommandField=0x0F0F),
    "garbage bytes": b"\x00\x00\x00\x00\x04\x00\x00\x00\xff\xff\xff\xff" + b"\xab" * 40,
    "truncated element": store_command()[:-5],
    "bytes past the group length": store_command() + b"\x08\x00\x18\x00\x00\x00\x00\x00",
}


@pytest.mark.parametrize("case", BAD_COMMANDS)
def test_an_undecodable_command_set_is_aborted_cleanly(running_archive: Archive, case: str):
    before_rows = running_archive.query("SELECT COUNT(*) FROM index_instance")[0][0]
    before_spool = spool_files(running_archive)
    assoc = connect(running_archive)
    cx = assoc.accepted_contexts[0].context_id
    send_pdv(assoc, cx, COMMAND_LAST, BAD_COMMANDS[case])
    body = data_set()
    send_pdv(assoc, cx, DATA, body[:2000])
    send_pdv(assoc, cx, DATA_LAST, body[2000:])
    wait_aborted(assoc)
    assert spool_files(running_archive) == before_spool
    assert running_archive.query("SELECT COUNT(*) FROM index_instance")[0][0] == before_rows
    scp_still_serves(running_archive)
    log = (running_archive.data_dir / "logs" / "dicom.log").read_text(errors="replace")
    assert "A-ABORT to BADPEER: a DIMSE message that cannot be decoded" in log
    assert "Exception in thread" not in log
    running_archive.assert_consistent()


def test_a_command_on_a_context_that_was_not_accepted(running_archive: Archive) -> None:
    """PS3.8 9.3.5: PDVs name an accepted context. The SCP refuses (0x0122) or aborts."""
    before_spool = spool_files(running_archive)
    assoc = connect(running_archive)
    wrong = assoc.accepted_contexts[0].context_id + 2
    assoc._reactor_checkpoint.clear()  # keep the requestor's reactor off the response
    while not assoc._is_paused:
        time.sleep(0.001)
    try:
        send_pdv(assoc, wrong, COMMAND_LAST, store_command())
        send_pdv(assoc, wrong, DATA_LAST, data_set())
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        wait_aborted(assoc)
    else:
        assert int(rsp.Status) == 0x0122
        assoc.release()
    assert spool_files(running_archive) == before_spool
    scp_still_serves(running_archive)


def test_an_a_abort_mid_c_store_leaves_nothing(running_archive: Archive) -> None:
    """The peer sends the command and half the data set, then an A-ABORT PDU."""
    ds = make_ct()
    body = encode(ds, False, True)
    assert body is not None
    before_spool = spool_files(running_archive)
    assoc = connect(running_archive)
    cx = assoc.accepted_contexts[0].context_id
    command = store_command(
        AffectedSOPClassUID=ds.SOPClassUID, AffectedSOPInstanceUID=ds.SOPInstanceUID
    )
    send_pdv(assoc, cx, COMMAND_LAST, command)
    for start in range(0, len(body) // 2, 1000):
        send_pdv(assoc, cx, DATA, body[start : start + 1000])
    # The spool file exists while the data set arrives...
    deadline = time.monotonic() + 10
    while spool_files(running_archive) == before_spool and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_files(running_archive) != before_spool
    assoc.abort()
    # ... and is gone after the A-ABORT, with nothing indexed.
    deadline = time.monotonic() + 10
    while spool_files(running_archive) != before_spool and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spool_files(running_archive) == before_spool
    assert (
        running_archive.query(
            "SELECT COUNT(*) FROM index_instance WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,)
        )[0][0]
        == 0
    )
    scp_still_serves(running_archive)
    running_archive.assert_consistent()


def _start_store(archive: Archive, assoc: Association, cx: int) -> str:
    """Send a C-STORE-RQ and the first fragments of its data set; return its SOP UID."""
    ds = make_ct()
    body = encode(ds, False, True)
    assert body is not None
    send_pdv(
        assoc,
        cx,
        COMMAND_LAST,
        store_command(AffectedSOPClassUID=ds.SOPClassUID, AffectedSOPInstanceUID=ds.SOPInstanceUID),
    )
    send_pdv(assoc, cx, DATA, body[:4000])
    send_pdv(assoc, cx, DATA, body[4000:8000])
    return str(ds.SOPInstanceUID)


def _nothing_kept(archive: Archive, before_spool: set, sop_instance_uid: str) -> None:
    deadline = time.monotonic() + 10
    while spool_files(archive) != before_spool and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spool_files(archive) == before_spool
    count = archive.query(
        "SELECT COUNT(*) FROM index_instance WHERE sop_instance_uid = ?", (sop_instance_uid,)
    )
    assert count[0][0] == 0
    scp_still_serves(archive)
    archive.assert_consistent()


def test_a_pdv_item_longer_than_its_pdu_mid_data_set(running_archive: Archive) -> None:
    """PS3.8 9.3.5: each PDV item lies within its P-DATA-TF PDU. This one claims more."""
    before_spool = spool_files(running_archive)
    assoc = connect(running_archive)
    cx = assoc.accepted_contexts[0].context_id
    uid = _start_store(running_archive, assoc, cx)
    item = struct.pack(">I", 4000) + bytes([cx, DATA]) + b"\x00" * 100
    assert assoc.dul.socket is not None
    assoc.dul.socket.send(b"\x04\x00" + struct.pack(">I", len(item)) + item)
    wait_aborted(assoc)
    _nothing_kept(running_archive, before_spool, uid)


def test_a_data_fragment_on_another_context_mid_data_set(running_archive: Archive) -> None:
    """All fragments of a message travel on its presentation context (PS3.8 9.3.5.1)."""
    before_spool = spool_files(running_archive)
    ae = AE(ae_title="BADPEER")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", running_archive.dicom_port, ae_title="NOCTISPRO")
    assert assoc.is_established
    ct, mr = (cx.context_id for cx in assoc.accepted_contexts)
    uid = _start_store(running_archive, assoc, ct)
    send_pdv(assoc, mr, DATA_LAST, b"\x00" * 64)
    wait_aborted(assoc)
    _nothing_kept(running_archive, before_spool, uid)
