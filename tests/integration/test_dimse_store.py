"""C-ECHO and C-STORE into a running `noctispro serve`, from DCMTK and from pynetdicom."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.factories import dataset_bytes, make_ct, to_bytes, write
from tests.helpers import pydicom_test_file
from tests.integration.archive import Archive
from tests.integration.conftest import need

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def test_echoscu(running_archive: Archive) -> None:
    result = running_archive.echoscu()
    assert result.returncode == 0, result.stderr


def test_storescu_files_are_indexed_and_byte_identical(running_archive: Archive, tmp_path: Path):
    study_uid = generate_uid()
    sent = {}
    for n in range(5):
        ds = make_ct(study_uid=study_uid, instance_number=n + 1, patient_name="Storescu^Test")
        path = write(ds, tmp_path / f"ct{n}.dcm")
        sent[ds.SOPInstanceUID] = path.read_bytes()
    mr = pydicom_test_file("MR_small.dcm")
    running_archive.storescu(*sorted(tmp_path.glob("*.dcm")), mr, calling_ae="CT_SCANNER")
    with running_archive.client() as api:
        meta = api.get(f"/api/v1/dicom/studies/{study_uid}/metadata")
        assert meta.status_code == 200, meta.text
        body = meta.json()
        assert body["patient_name"] == "Storescu^Test"
        assert body["number_of_instances"] == 5
        instances = body["series"][0]["instances"]
        assert {i["source_ae_title"] for i in instances} == {"CT_SCANNER"}
        for uid, original in sent.items():
            r = api.get(f"/api/v1/dicom/instances/{uid}/file")
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/dicom"
            assert dataset_bytes(r.content) == dataset_bytes(original)
    running_archive.assert_consistent()


def test_pynetdicom_store_and_echo(running_archive: Archive) -> None:
    assoc = running_archive.associate([Verification, CTImageStorage])
    try:
        assert assoc.send_c_echo().Status == 0x0000
        ds = make_ct(patient_name="Pynetdicom^Test")
        status = assoc.send_c_store(ds)
        assert status.Status == 0x0000
        again = assoc.send_c_store(ds)
        assert again.Status == 0x0000  # the same instance again: idempotent
    finally:
        assoc.release()
    rows = running_archive.query(
        "SELECT COUNT(*) FROM index_instance WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,)
    )
    assert rows[0][0] == 1


@pytest.fixture
def raw_sending():
    """Send files exactly as they are on disk (pynetdicom does not re-encode them)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = False


def _without(keyword: str) -> bytes:
    ds = make_ct()
    delattr(ds, keyword)
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("case", "data", "status"),
    [
        ("truncated pixel data", to_bytes(make_ct())[:-1000], 0xC000),
        ("missing StudyInstanceUID", _without("StudyInstanceUID"), 0xA900),
    ],
)
def test_bad_data_sets_get_failure_statuses(
    running_archive: Archive, raw_sending, tmp_path: Path, case: str, data: bytes, status: int
) -> None:
    before = running_archive.query("SELECT COUNT(*) FROM index_instance")[0][0]
    path = tmp_path / "bad.dcm"
    path.write_bytes(data)
    assoc = running_archive.associate([CTImageStorage], transfer_syntax=ExplicitVRLittleEndian)
    try:
        rsp = assoc.send_c_store(path)
        assert rsp.Status == status, case
        assert rsp.ErrorComment
    finally:
        assoc.release()
    assert running_archive.query("SELECT COUNT(*) FROM index_instance")[0][0] == before
    running_archive.assert_consistent()


def test_dcmsend_of_pydicom_test_files(running_archive: Archive) -> None:
    """What a new user tries first: a whole folder of odd files; the good ones land."""
    folder = pydicom_test_file("CT_small.dcm").parent
    result = running_archive.dcmtk(
        "dcmsend", "-nh", "-dn", "-aec", "NOCTISPRO", "--scan-directories", files=(folder,)
    )
    assert "Association Request Failed" not in result.stderr
    ct_small = running_archive.query(
        "SELECT COUNT(*) FROM index_instance WHERE sop_instance_uid = ?",
        ("1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",),
    )
    assert ct_small[0][0] == 1
    running_archive.assert_consistent()


def test_several_scp_processes_share_the_port(new_archive: Archive, tmp_path: Path) -> None:
    proc = new_archive.start("dicom", "--processes", "2")
    new_archive.wait_output("started 2 DICOM SCP processes", command="dicom")
    study_uid = generate_uid()
    groups = []
    for g in range(4):
        files = [
            write(
                make_ct(study_uid=study_uid, instance_number=10 * g + i), tmp_path / f"{g}-{i}.dcm"
            )
            for i in range(5)
        ]
        groups.append(files)
    senders = [
        subprocess.Popen(
            [
                need("storescu"),
                "-aec",
                "NOCTISPRO",
                "127.0.0.1",
                str(new_archive.dicom_port),
                *map(str, files),
            ],
            env=DCMTK_ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        for files in groups
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=60)
        assert sender.returncode == 0, err
    assert new_archive.query(
        "SELECT number_of_instances FROM index_study WHERE study_instance_uid = ?", (study_uid,)
    ) == [(20,)]
    pids = set(re.findall(r"listening on \S+ \(pid (\d+)\)", new_archive.output("dicom")))
    assert len(pids) == 2
    assert new_archive.stop(proc) == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), "an SCP process outlived its parent"
    new_archive.assert_consistent()


def _connections_served_by(pid: int, port: int) -> int:
    """Established TCP connections on local `port` whose socket process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def test_parallel_associations_are_spread_over_the_scp_processes(new_archive: Archive) -> None:
    """4 associations on 2 SCP processes: 2 each (one process runs one thread at a time).

    With SO_REUSEPORT the kernel's hash put 3 or 4 of them on one process about half
    the time; the processes now share one listening socket and the least busy accepts.
    A port probe (connect, close: what `wait_for_port` and health checks do) must not
    count as a connection for the 30 s pynetdicom would wait for its A-ASSOCIATE-RQ.
    """
    proc = new_archive.start("dicom", "--processes", "2")
    deadline = time.monotonic() + 60
    while True:
        pids = set(re.findall(r"listening on \S+ \(pid (\d+)\)", new_archive.output("dicom")))
        if len(pids) == 2:
            break
        assert time.monotonic() < deadline, new_archive.output("dicom")
        time.sleep(0.1)
    socket.create_connection(("127.0.0.1", new_archive.dicom_port)).close()
    time.sleep(0.5)
    held = [new_archive.associate([Verification], calling_ae=f"PAR{n}") for n in range(4)]
    try:
        for assoc in held:
            assert assoc.send_c_echo().Status == 0x0000
        served = sorted(_connections_served_by(int(pid), new_archive.dicom_port) for pid in pids)
        assert served == [2, 2], new_archive.output("dicom")[-3000:]
    finally:
        for assoc in held:
            assoc.release()
    assert new_archive.stop(proc) == 0


def test_a_huge_declared_pdu_length_closes_the_connection(running_archive: Archive) -> None:
    """A P-DATA header declaring 4 GiB must not make the server allocate it."""
    import socket
    import struct

    with socket.create_connection(("127.0.0.1", running_archive.dicom_port), timeout=10) as s:
        s.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFF0) + b"\x00" * 64)
        s.settimeout(10)
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
        assert data in (b"",) or data[0] == 0x07  # closed, or an A-ABORT
    assert running_archive.associate([Verification]).send_c_echo().Status == 0


def test_a_store_cut_off_mid_transfer_leaves_nothing(running_archive: Archive, tmp_path: Path):
    """TCP reset in the middle of a 20 MB data set: no blob, no row, no spool file."""
    from pynetdicom import evt

    big = write(make_ct(rows=2048, columns=4096), tmp_path / "big.dcm")
    spool = running_archive.data_dir / "tmp"
    before = set(spool.iterdir())
    sent = {"pdus": 0}

    def cut(event):
        sent["pdus"] += 1
        if sent["pdus"] == 20:
            event.assoc.dul.socket.socket.shutdown(2)

    ae = AE(ae_title="CUTTER")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.maximum_pdu_size = 16384
    assoc = ae.associate(
        "127.0.0.1",
        running_archive.dicom_port,
        ae_title="NOCTISPRO",
        evt_handlers=[(evt.EVT_PDU_SENT, cut)],
    )
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc.send_c_store(big)
    except Exception:
        pass
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.abort()
    deadline = time.monotonic() + 10
    while set(spool.iterdir()) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(spool.iterdir()) == before
    running_archive.assert_consistent()
