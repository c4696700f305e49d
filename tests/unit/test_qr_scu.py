"""C-FIND / C-MOVE SCU against pynetdicom SCPs on loopback, and who may use which node.

The SCPs here misbehave on purpose (a failure status, silence, a move destination they
do not know), which real peers rarely do on demand.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from noctispro.accounts import nodes
from noctispro.accounts.facilities import facility_for_ae, forget_cached_facilities
from noctispro.accounts.models import Operation
from noctispro.accounts.services import add_facility, add_user
from noctispro.dimse import qr_scu, remote_qr
from noctispro.dimse.qr_scu import Caller, Level, MoveProgress, Peer, RemoteQuery

CALLER = Caller(ae_title="NOCTISPRO", timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scp(handlers: list[Any], *, require_calling_aet: list[str] | None = None) -> Iterator[Peer]:
    ae = AE(ae_title="FAKEPACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(CTImageStorage)  # for the C-STORE sub-operations of a move
    if require_calling_aet:
        ae.require_calling_aet = require_calling_aet
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        yield Peer(host="127.0.0.1", port=port, ae_title="FAKEPACS")
    finally:
        server.shutdown()


def study_match(i: int) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = f"1.2.3.{i}"
    ds.PatientName = f"Doe^{i}"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.NumberOfStudyRelatedInstances = i
    return ds


@pytest.fixture
def finder() -> Iterator[tuple[Peer, dict[str, Any]]]:
    """An SCP answering every C-FIND with 20 matches, noting what it was asked."""
    seen: dict[str, Any] = {"cancelled": False}

    def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        seen["identifier"] = event.identifier
        for i in range(20):
            if event.is_cancelled:
                seen["cancelled"] = True
                yield 0xFE00, None
                return
            yield 0xFF00, study_match(i)
            time.sleep(0.02)

    yield from ((peer, seen) for peer in scp([(evt.EVT_C_FIND, on_find)]))


def test_find_returns_plain_matches(finder: tuple[Peer, dict[str, Any]]) -> None:
    peer, seen = finder
    query = RemoteQuery(level=Level.STUDY, filters={"PatientName": "Müller^*"})
    result = qr_scu.find(peer, query, CALLER, max_matches=100)
    assert result.status == 0x0000 and not result.truncated
    assert len(result.matches) == 20
    assert result.matches[3] == {
        "QueryRetrieveLevel": "STUDY",
        "StudyInstanceUID": "1.2.3.3",
        "PatientName": "Doe^3",
        "ModalitiesInStudy": ["CT", "MR"],
        "NumberOfStudyRelatedInstances": 3,
    }
    asked = seen["identifier"]
    assert asked.SpecificCharacterSet == "ISO_IR 192"
    assert str(asked.PatientName) == "Müller^*"
    assert asked.QueryRetrieveLevel == "STUDY"
    for keyword in qr_scu.DEFAULT_RETURN_KEYS[Level.STUDY]:
        assert keyword in asked  # return keys, empty
    assert asked.StudyInstanceUID == ""


def test_find_cap_sends_c_cancel(finder: tuple[Peer, dict[str, Any]]) -> None:
    peer, seen = finder
    result = qr_scu.find(peer, RemoteQuery(level=Level.STUDY), CALLER, max_matches=5)
    assert len(result.matches) == 5
    assert result.truncated and result.status == 0xFE00
    assert seen["cancelled"]


def test_find_failure_status_is_reported() -> None:
    def on_find(event: evt.Event) -> Iterator[tuple[Dataset, None]]:
        status = Dataset()
        status.Status = 0xA900
        status.ErrorComment = "no such key here"
        yield status, None

    for peer in scp([(evt.EVT_C_FIND, on_find)]):
        with pytest.raises(qr_scu.RemoteError) as caught:
            qr_scu.find(peer, RemoteQuery(level=Level.STUDY), CALLER, max_matches=5)
        assert caught.value.kind == "failed" and caught.value.status == 0xA900
        assert "0xA900 (identifier does not match SOP class): no such key here" in str(caught.value)


def test_find_gives_up_at_the_deadline() -> None:
    release = threading.Event()

    def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        release.wait(10)
        yield 0x0000, None

    for peer in scp([(evt.EVT_C_FIND, on_find)]):
        try:
            with pytest.raises(qr_scu.RemoteError) as caught:
                qr_scu.find(
                    peer,
                    RemoteQuery(level=Level.STUDY),
                    Caller(ae_title="NOCTISPRO", timeout=1),
                    max_matches=5,
                )
            assert caught.value.kind == "timeout"
        finally:
            release.set()


def test_rejected_and_unreachable_peers() -> None:
    for peer in scp([], require_calling_aet=["SOMEONE"]):
        with pytest.raises(qr_scu.RemoteError) as caught:
            qr_scu.find(peer, RemoteQuery(level=Level.STUDY), CALLER, max_matches=5)
        assert caught.value.kind == "rejected"
        assert "rejected the association" in str(caught.value)
    closed = Peer(host="127.0.0.1", port=free_port(), ae_title="NOBODY")
    with pytest.raises(qr_scu.RemoteError) as caught:
        qr_scu.find(closed, RemoteQuery(level=Level.STUDY), CALLER, max_matches=5)
    assert caught.value.kind == "unreachable"


@pytest.mark.parametrize(
    ("level", "filters", "model", "message"),
    [
        (Level.STUDY, {"Nope": "x"}, "study", "not a DICOM keyword"),
        (Level.STUDY, {"StudyDate": "2024"}, "study", "not a date"),
        (Level.STUDY, {"StudyDate": "-"}, "study", "not a date"),
        (Level.STUDY, {"StudyTime": "noon"}, "study", "not a time"),
        (Level.STUDY, {"StudyInstanceUID": "1.2.x"}, "study", "not a UID"),
        (Level.STUDY, {"PixelData": ""}, "study", "cannot be matched"),
        (Level.STUDY, {"PatientName": "a\nb"}, "study", "control characters"),
        (Level.STUDY, {"SpecificCharacterSet": "ISO_IR 100"}, "study", "set by NoctisPro"),
        (Level.SERIES, {}, "study", "needs one StudyInstanceUID"),
        (Level.SERIES, {"StudyInstanceUID": "1.2\\1.3"}, "study", "needs one StudyInstanceUID"),
        (Level.IMAGE, {"StudyInstanceUID": "1.2"}, "study", "needs one SeriesInstanceUID"),
        (Level.STUDY, {}, "patient", "needs one PatientID"),
    ],
)
def test_bad_queries(level: Level, filters: dict[str, str], model: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RemoteQuery(level=level, filters=filters, information_model=model)


def test_good_queries() -> None:
    RemoteQuery(level=Level.STUDY, filters={"StudyDate": "20240101-", "StudyTime": "1000-1200"})
    RemoteQuery(level=Level.STUDY, filters={"StudyInstanceUID": "1.2.3\\1.2.4"})
    RemoteQuery(level=Level.SERIES, filters={"StudyInstanceUID": "1.2.3", "Modality": "CT"})
    patient = RemoteQuery(level=Level.PATIENT, filters={"PatientName": "DOE*"})
    assert patient.sop_class == qr_scu.PATIENT_ROOT_FIND


# --- C-MOVE ---------------------------------------------------------------------------


@pytest.fixture
def store_scp() -> Iterator[tuple[int, list[str]]]:
    """A storage SCP that accepts everything: the move destination."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="NOCTISPRO")
    ae.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield port, received
    finally:
        server.shutdown()


def instance(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.file_meta = Dataset()  # type: ignore[assignment]
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    return ds


def mover(destination: Callable[[], tuple[str | None, int | None]], count: int, seen: dict):
    def on_move(event: evt.Event) -> Iterator[Any]:
        seen["destination"] = event.move_destination
        seen["identifier"] = event.identifier
        yield destination()
        yield count
        study_uid = str(event.identifier.StudyInstanceUID)
        for _ in range(count):
            if event.is_cancelled:
                seen["cancelled"] = True
                yield 0xFE00, None
                return
            yield 0xFF00, instance(study_uid)
            time.sleep(0.05)

    return on_move


def test_move_reports_progress(store_scp: tuple[int, list[str]]) -> None:
    port, received = store_scp
    seen: dict[str, Any] = {}
    updates: list[MoveProgress] = []
    handler = mover(lambda: ("127.0.0.1", port), 4, seen)
    for peer in scp([(evt.EVT_C_MOVE, handler)]):
        result = qr_scu.move(
            peer,
            destination_ae="NOCTISPRO",
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.4",
            caller=CALLER,
            response_timeout=10,
            on_pending=updates.append,
        )
    assert result.ok and result.progress.completed == 4 and result.progress.failed == 0
    assert len(received) == 4
    assert [(u.completed, u.remaining) for u in updates] == [(1, 3), (2, 2), (3, 1), (4, 0)]
    assert seen["destination"] == "NOCTISPRO"
    assert seen["identifier"].QueryRetrieveLevel == "SERIES"
    assert seen["identifier"].SeriesInstanceUID == "1.2.3.4"


def test_move_destination_unknown_is_a_final_status() -> None:
    seen: dict[str, Any] = {}
    for peer in scp([(evt.EVT_C_MOVE, mover(lambda: (None, None), 2, seen))]):
        result = qr_scu.move(
            peer,
            destination_ae="NOCTISPRO",
            study_instance_uid="1.2.3",
            series_instance_uid=None,
            caller=CALLER,
            response_timeout=10,
        )
    assert result.status == 0xA801 and not result.ok
    assert qr_scu.status_text(result.status) == "0xA801 (move destination unknown)"


class Stop(Exception):
    pass


def test_an_interrupted_move_is_cancelled(store_scp: tuple[int, list[str]]) -> None:
    port, received = store_scp
    seen: dict[str, Any] = {}

    def stop_after_two(progress: MoveProgress) -> None:
        if progress.completed >= 2:
            raise Stop

    for peer in scp([(evt.EVT_C_MOVE, mover(lambda: ("127.0.0.1", port), 50, seen))]):
        with pytest.raises(Stop):
            qr_scu.move(
                peer,
                destination_ae="NOCTISPRO",
                study_instance_uid="1.2.3",
                series_instance_uid=None,
                caller=CALLER,
                response_timeout=10,
                on_pending=stop_after_two,
            )
        deadline = time.monotonic() + 10
        while "cancelled" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen.get("cancelled")
    assert len(received) < 50


# --- who may use which node -----------------------------------------------------------


@pytest.mark.django_db
def test_node_facility_files_what_it_sends_and_scopes_its_users() -> None:
    forget_cached_facilities()
    north = add_facility("NORTH", "North", ae_titles=["NORTH_CT"])
    add_facility("SOUTH", "South")
    nodes.add_node(
        "pacs", ae_title="PACS", host="127.0.0.1", port=104, facility_code="NORTH",
        operations={Operation.STORE},
    )  # fmt: skip
    nodes.add_node("tls", ae_title="TLSPACS", host="127.0.0.1", port=2762, tls=True)
    assert facility_for_ae("PACS") == north
    assert facility_for_ae("NORTH_CT") == north
    assert facility_for_ae("TLSPACS").is_default
    north_tech = add_user(
        "nt", role="technologist", password="Pw-12345678", facility_codes=["NORTH"]
    )
    south_tech = add_user(
        "st", role="technologist", password="Pw-12345678", facility_codes=["SOUTH"]
    )
    doc = add_user("doc", role="referring", password="Pw-12345678", all_facilities=True)
    admin = add_user("boss", role="admin", password="Pw-12345678")
    assert [n.name for n in remote_qr.usable_nodes(north_tech)] == ["pacs"]
    assert remote_qr.usable_nodes(south_tech) == []
    assert remote_qr.usable_nodes(doc) == []
    assert [n.name for n in remote_qr.usable_nodes(admin)] == ["pacs", "tls"]
    with pytest.raises(remote_qr.NotAllowed, match="facility 'NORTH'"):
        remote_qr.node_for(south_tech, "pacs")
    with pytest.raises(remote_qr.NotAllowed, match="role"):
        remote_qr.node_for(doc, "pacs")
    with pytest.raises(nodes.UnknownNode):
        remote_qr.node_for(admin, "nope")
    tls_peer = remote_qr.peer_of(nodes.get_node("tls"))  # called over DICOM TLS
    assert tls_peer.tls_args is not None and tls_peer.tls_args[1] == tls_peer.host
    assert remote_qr.peer_of(nodes.get_node("pacs")).tls_args is None
    forget_cached_facilities()
