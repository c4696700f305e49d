"""Storage Commitment Push Model (PS3.4 J) against a running `noctispro serve`.

DCMTK 3.6.7 ships no storage commitment SCU, so the requester is pynetdicom: it stores
files with DCMTK storescu, asks for commitment with N-ACTION and receives the
N-EVENT-REPORT either on its own association (it stays connected) or, once it has
gone, as an SCP of its own that is registered as a node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from tests.factories import make_ct, write
from tests.integration.archive import Archive, free_port

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
STAYS = "MOD_STAYS"  # a WEST sender that is not a node: reports only on its association
NODE = "MOD_NODE"  # a WEST sender registered as a node with a listening SCP
EAST = "EAST_SEND"


@dataclass
class Reports:
    """N-EVENT-REPORTs received by the test's requester."""

    received: list[tuple[int, Dataset, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def handler(self, event: evt.Event) -> tuple[int, None]:
        self.received.append((event.event_type, event.event_information, event.assoc))
        self.arrived.set()
        return 0x0000, None

    def wait(self, timeout: float = 60) -> tuple[int, Dataset, Any]:
        assert self.arrived.wait(timeout), "no N-EVENT-REPORT arrived"
        return self.received[0]


@dataclass
class Site:
    archive: Archive
    node_port: int
    root: Path


@pytest.fixture(scope="module")
def site(running_archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Site:
    a = running_archive
    a.run("facilities", "add", "WEST", "--name", "West", "--ae", STAYS, "--ae", NODE)
    a.run("facilities", "add", "EAST", "--name", "East", "--ae", EAST)
    port = free_port()
    a.run(
        "nodes", "add", "modality", "--aet", NODE, "--host", "127.0.0.1", "--port", str(port),
        "--facility", "WEST", "--allow", "store",
    )  # fmt: skip
    return Site(a, port, tmp_path_factory.mktemp("commitment"))


def stored(site: Site, calling_ae: str, count: int) -> list[tuple[str, str]]:
    """Store `count` new CT images as `calling_ae`; their (SOP Class, SOP Instance) UIDs."""
    study = generate_uid()
    paths = []
    for n in range(count):
        ds = make_ct(study_uid=study, instance_number=n + 1, seed=n, patient_id=calling_ae)
        paths.append(write(ds, site.root / generate_uid() / "i.dcm"))
    site.archive.storescu(*paths, calling_ae=calling_ae)
    rows = site.archive.query(
        "SELECT i.sop_class_uid, i.sop_instance_uid FROM index_instance i "
        "JOIN index_study s ON s.id = i.study_id WHERE s.study_instance_uid = ? "
        "ORDER BY i.instance_number",
        (study,),
    )
    assert len(rows) == count
    return [(str(c), str(i)) for c, i in rows]


def action_information(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


@contextmanager
def requester(site: Site, calling_ae: str, reports: Reports | None = None) -> Iterator[Any]:
    """An association proposing SCP/SCU role selection, so that it may be sent the
    N-EVENT-REPORT (PS3.4 J.3.3), with a handler for it."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    handlers = [(evt.EVT_N_EVENT_REPORT, reports.handler)] if reports else []
    assoc = ae.associate(
        "127.0.0.1",
        site.archive.dicom_port,
        ae_title="NOCTISPRO",
        ext_neg=[role],
        evt_handlers=handlers,
    )
    assert assoc.is_established
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def request(assoc: Any, info: Dataset, action_type: int = 1) -> int:
    status, _ = assoc.send_n_action(
        info, action_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
    )
    return int(status.Status)


def sop_items(info: Dataset, keyword: str) -> dict[str, tuple[str, int | None]]:
    return {
        str(item.ReferencedSOPInstanceUID): (
            str(item.ReferencedSOPClassUID),
            int(item.FailureReason) if "FailureReason" in item else None,
        )
        for item in info.get(keyword, [])
    }


def commitment_row(site: Site, transaction_uid: str, timeout: float = 60) -> tuple:
    """The StorageCommitment row once the report went out (or failed to)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = site.archive.query(
            "SELECT state, delivery, delivery_detail, requested FROM index_storagecommitment "
            "WHERE transaction_uid = ?",
            (transaction_uid,),
        )
        if rows and rows[0][1]:
            return rows[0]
        time.sleep(0.2)
    raise AssertionError(f"commitment {transaction_uid} not reported in {timeout} s")


def test_all_committed_on_the_same_association(site: Site) -> None:
    refs = stored(site, STAYS, 3)
    transaction = generate_uid()
    reports = Reports()
    with requester(site, STAYS, reports) as assoc:
        assert request(assoc, action_information(transaction, refs)) == 0x0000
        event_type, info, on = reports.wait()
        assert on is assoc
    assert event_type == 1
    assert info.TransactionUID == transaction
    assert sop_items(info, "ReferencedSOPSequence") == {i: (c, None) for c, i in refs}
    assert "FailedSOPSequence" not in info
    assert commitment_row(site, transaction) == ("COMMITTED", "same-association", "", 3)


def test_failures_with_their_reasons(site: Site) -> None:
    good, wrong_class, deleted, corrupted = stored(site, STAYS, 4)
    [(east_class, east_uid)] = stored(site, EAST, 1)
    missing = generate_uid()
    keys = dict(
        site.archive.query(
            "SELECT sop_instance_uid, storage_key FROM index_instance "
            "WHERE sop_instance_uid IN (?, ?)",
            (deleted[1], corrupted[1]),
        )
    )
    (site.archive.storage_root / keys[deleted[1]]).unlink()
    damaged = site.archive.storage_root / keys[corrupted[1]]
    data = bytearray(damaged.read_bytes())
    data[-100:] = bytes(b ^ 0xFF for b in data[-100:])  # pixel bytes: same size, other hash
    damaged.write_bytes(bytes(data))

    refs = [
        good,
        (CTImageStorage, missing),
        (MRImageStorage, wrong_class[1]),
        deleted,
        corrupted,
        (east_class, east_uid),
    ]
    transaction = generate_uid()
    reports = Reports()
    with requester(site, STAYS, reports) as assoc:
        assert request(assoc, action_information(transaction, refs)) == 0x0000
        event_type, info, _ = reports.wait()
    assert event_type == 2
    assert info.TransactionUID == transaction
    assert sop_items(info, "ReferencedSOPSequence") == {good[1]: (good[0], None)}
    assert sop_items(info, "FailedSOPSequence") == {
        missing: (CTImageStorage, 0x0112),
        wrong_class[1]: (MRImageStorage, 0x0119),
        deleted[1]: (deleted[0], 0x0110),
        corrupted[1]: (corrupted[0], 0x0110),
        east_uid: (east_class, 0x0112),  # another facility's instance is not there for WEST
    }
    state, delivery, _, requested = commitment_row(site, transaction)
    assert (state, delivery, requested) == ("FAILURES", "same-association", 6)


def test_report_on_a_new_association_to_a_registered_node(site: Site) -> None:
    refs = stored(site, NODE, 2)
    reports = Reports()
    roles: list[tuple[bool, bool]] = []

    def on_report(event: evt.Event) -> tuple[int, None]:
        context = next(
            cx for cx in event.assoc.accepted_contexts if cx.context_id == event.context.context_id
        )
        roles.append((bool(context.as_scu), bool(context.as_scp)))
        return reports.handler(event)

    scp = AE(ae_title=NODE)
    # We accept the archive's proposal to act as the SCP of the SOP class (J.3.3).
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = scp.start_server(
        ("127.0.0.1", site.node_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    try:
        transaction = generate_uid()
        with requester(site, NODE) as assoc:  # no handler: it goes away at once
            assert request(assoc, action_information(transaction, refs)) == 0x0000
        event_type, info, on = reports.wait(timeout=120)
    finally:
        server.shutdown()
    assert event_type == 1
    assert on.requestor.ae_title == "NOCTISPRO"
    assert roles == [(True, False)]  # on that association we are the SCU; they the SCP
    assert info.TransactionUID == transaction
    assert set(sop_items(info, "ReferencedSOPSequence")) == {i for _, i in refs}
    assert commitment_row(site, transaction)[:2] == ("COMMITTED", "new-association")


def test_requester_gone_and_not_a_node_is_recorded(site: Site) -> None:
    refs = stored(site, STAYS, 1)
    transaction = generate_uid()
    with requester(site, STAYS) as assoc:
        assert request(assoc, action_information(transaction, refs)) == 0x0000
    state, delivery, detail, _ = commitment_row(site, transaction, timeout=120)
    assert (state, delivery) == ("COMMITTED", "undelivered")
    assert "not a registered node" in detail


def test_bad_requests_are_refused(site: Site) -> None:
    [ref] = stored(site, STAYS, 1)
    with requester(site, STAYS) as assoc:
        assert request(assoc, action_information(generate_uid(), [ref]), action_type=2) == 0x0123
        assert request(assoc, action_information(generate_uid(), [])) == 0x0115
        assert request(assoc, action_information("not-a-uid", [ref])) == 0x0115
        assert request(assoc, action_information(generate_uid(), [(ref[0], "1.2.x")])) == 0x0115
    site.archive.run(
        "nodes", "add", "findonly", "--aet", "FINDONLY", "--host", "127.0.0.1", "--port", "104",
        "--allow", "find",
    )  # fmt: skip
    with requester(site, "FINDONLY") as assoc:
        assert request(assoc, action_information(generate_uid(), [ref])) == 0x0124
