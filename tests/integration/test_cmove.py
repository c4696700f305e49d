"""C-MOVE SCP: DCMTK movescu and pynetdicom against `noctispro dicom`, DCMTK storescp as
the Move Destination, received data sets compared byte for byte with the files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.integration.archive import Archive, archive_at, free_port
from tests.integration.conftest import need
from tests.retrieve_data import Study, make_study, received, storescp

COMPRESSED = {"1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99"}


@dataclass
class Setup:
    archive: Archive
    north: Study  # filed under NORTH
    south: Study  # filed under SOUTH
    dest: Path  # what storescp DEST received
    implicit_dest: Path  # what storescp IMPLICIT (Implicit VR LE only) received


def add_node(archive: Archive, name: str, aet: str, port: int, *extra: str) -> None:
    archive.run(
        "nodes", "add", name, "--aet", aet, "--host", "127.0.0.1", "--port", str(port), *extra
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need("storescp")
    root = tmp_path_factory.mktemp("cmove")
    dest, implicit_dest = root / "dest", root / "implicit"
    with (
        archive_at(root / "archive") as archive,
        storescp(dest, "DEST") as dest_port,
        storescp(implicit_dest, "IMPLICIT", "+xi") as implicit_port,
    ):
        archive.run("facilities", "add", "NORTH", "--name", "North", "--ae", "NORTH_QR")
        archive.run("facilities", "add", "SOUTH", "--name", "South", "--ae", "SOUTH_QR")
        add_node(
            archive, "north-ws", "NORTH_QR", 11199, "--facility", "NORTH", "--allow", "find,move"
        )
        add_node(archive, "south-ws", "SOUTH_QR", 11198, "--facility", "SOUTH", "--allow", "move")
        add_node(archive, "viewer", "VIEWER", 11197, "--allow", "find")
        add_node(archive, "dest", "DEST", dest_port)
        add_node(archive, "implicit", "IMPLICIT", implicit_port)
        add_node(archive, "down", "DOWN", free_port())
        north = make_study(root / "north", "NORTH-1")
        south = make_study(root / "south", "SOUTH-1", ["CT_small.dcm", "MR_small_RLE.dcm"])
        archive.run("import", str(root / "north"), "--facility", "NORTH")
        archive.run("import", str(root / "south"), "--facility", "SOUTH")
        archive.start("dicom")
        yield Setup(archive, north, south, dest, implicit_dest)
        archive.assert_consistent()


@pytest.fixture(autouse=True)
def empty_destinations(setup: Setup) -> None:
    for folder in (setup.dest, setup.implicit_dest):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()


def movescu(
    setup: Setup, *keys: str, model: str = "-S", calling: str = "NORTH_QR", dest: str = "DEST"
):
    options = [model, "-aet", calling, "-aec", "NOCTISPRO", "-aem", dest]
    for key in keys:
        options += ["-k", key]
    return setup.archive.dcmtk("movescu", "-v", *options)


def assert_received(setup: Setup, sop_uids: list[str], folder: Path | None = None) -> None:
    got = received(folder or setup.dest)
    assert sorted(got) == sorted(sop_uids)
    for uid in sop_uids:
        assert got[uid] == setup.north.dataset(uid), f"{setup.north.syntaxes[uid]} differs"


def test_study_level_study_root_every_syntax_byte_identical(setup: Setup) -> None:
    result = movescu(setup, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={setup.north.study_uid}")
    assert result.returncode == 0, result.stderr
    assert "Final Move Response (Success)" in result.stderr, result.stderr
    assert_received(setup, list(setup.north.files))


def test_series_and_image_level_patient_root(setup: Setup) -> None:
    series_uid, sops = next(iter(setup.north.series.items()))
    result = movescu(
        setup,
        "QueryRetrieveLevel=SERIES",
        f"PatientID={setup.north.patient_id}",
        f"StudyInstanceUID={setup.north.study_uid}",
        f"SeriesInstanceUID={series_uid}",
        model="-P",
    )
    assert result.returncode == 0, result.stderr
    assert_received(setup, sops)

    shutil.rmtree(setup.dest)
    setup.dest.mkdir()
    wanted = list(setup.north.files)[3:6]
    result = movescu(
        setup,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={setup.north.study_uid}",
        "SOPInstanceUID=" + "\\".join(wanted),
        model="-S",
    )
    assert result.returncode == 0, result.stderr
    assert_received(setup, wanted)


def test_patient_level(setup: Setup) -> None:
    result = movescu(
        setup, "QueryRetrieveLevel=PATIENT", f"PatientID={setup.north.patient_id}", model="-P"
    )
    assert result.returncode == 0, result.stderr
    assert_received(setup, list(setup.north.files))


# --- statuses, with pynetdicom as the SCU ------------------------------------------


def move(
    setup: Setup,
    identifier: Dataset,
    *,
    calling: str = "NORTH_QR",
    dest: str = "DEST",
    patient_root: bool = False,
) -> list[Dataset]:
    """Every C-MOVE response (status data set, with its identifier's elements merged)."""
    model = (
        PatientRootQueryRetrieveInformationModelMove
        if patient_root
        else StudyRootQueryRetrieveInformationModelMove
    )
    ae = AE(ae_title=calling)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", setup.archive.dicom_port, ae_title="NOCTISPRO")
    assert assoc.is_established
    responses = []
    try:
        for status, ident in assoc.send_c_move(identifier, dest, model):
            assert "Status" in status, "no response"
            if ident is not None:
                for elem in ident:
                    status.add(elem)
            responses.append(status)
    finally:
        assoc.release()
    return responses


def study_identifier(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def test_pending_responses_count_down(setup: Setup) -> None:
    responses = move(setup, study_identifier(setup.north.study_uid))
    total = len(setup.north.files)
    pending = [r for r in responses if r.Status == 0xFF00]
    assert [r.NumberOfRemainingSuboperations for r in pending] == list(range(total - 1, -1, -1))
    assert [r.NumberOfCompletedSuboperations for r in pending] == list(range(1, total + 1))
    final = responses[-1]
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (total, 0)
    assert "NumberOfRemainingSuboperations" not in final


def test_unknown_destination(setup: Setup) -> None:
    [final] = move(setup, study_identifier(setup.north.study_uid), dest="NOBODY")
    assert final.Status == 0xA801
    assert "NOBODY" in final.ErrorComment
    assert received(setup.dest) == {}


def test_ae_not_allowed_to_move(setup: Setup) -> None:
    [final] = move(setup, study_identifier(setup.north.study_uid), calling="VIEWER")
    assert final.Status == 0x0124
    assert "may not C-MOVE" in final.ErrorComment
    assert received(setup.dest) == {}


def test_other_facilitys_study_matches_nothing(setup: Setup) -> None:
    # SOUTH's node asks for NORTH's study: no match, exactly like a study that does not exist.
    [final] = move(setup, study_identifier(setup.north.study_uid), calling="SOUTH_QR")
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 0
    [missing] = move(setup, study_identifier("1.2.3.4.5.6"), calling="SOUTH_QR")
    assert missing.Status == 0x0000 and missing.NumberOfCompletedSuboperations == 0
    assert received(setup.dest) == {}
    # ... and its own study moves.
    responses = move(setup, study_identifier(setup.south.study_uid), calling="SOUTH_QR")
    assert responses[-1].Status == 0x0000
    assert sorted(received(setup.dest)) == sorted(setup.south.files)


def test_bad_identifiers(setup: Setup) -> None:
    no_level = Dataset()
    no_level.StudyInstanceUID = setup.north.study_uid
    wildcard = study_identifier("1.2.*")
    no_key = study_identifier("")
    patient_in_study_root = Dataset()
    patient_in_study_root.QueryRetrieveLevel = "PATIENT"
    patient_in_study_root.PatientID = setup.north.patient_id
    for identifier in (no_level, wildcard, no_key, patient_in_study_root):
        [final] = move(setup, identifier)
        assert final.Status == 0xA900, identifier
        assert final.ErrorComment
    assert received(setup.dest) == {}


def test_destination_down(setup: Setup) -> None:
    [final] = move(setup, study_identifier(setup.north.study_uid), dest="DOWN")
    total = len(setup.north.files)
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == total
    assert final.NumberOfCompletedSuboperations == 0
    assert sorted(final.FailedSOPInstanceUIDList) == sorted(setup.north.files)
    assert "DOWN" in final.ErrorComment


def test_destination_without_the_stored_syntax(setup: Setup) -> None:
    """IMPLICIT accepts only Implicit VR LE: explicit LE is converted, compressed fails."""
    responses = move(setup, study_identifier(setup.north.study_uid), dest="IMPLICIT")
    final = responses[-1]
    syntaxes = setup.north.syntaxes
    sendable = {
        uid for uid, ts in syntaxes.items() if ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    }
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == len(sendable)
    assert final.NumberOfFailedSuboperations == len(syntaxes) - len(sendable)
    assert set(final.FailedSOPInstanceUIDList) == set(syntaxes) - sendable
    got = received(setup.implicit_dest)
    assert set(got) == sendable
    import pydicom

    for uid in sendable:
        path = next(p for p in setup.implicit_dest.iterdir() if uid in p.name)
        arrived = pydicom.dcmread(path)
        assert arrived.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        original = pydicom.dcmread(setup.north.files[uid])
        assert arrived.PixelData == original.PixelData
        assert arrived.SOPInstanceUID == uid
