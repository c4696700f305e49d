"""C-GET SCP with SCP/SCU role selection: DCMTK getscu and pynetdicom against
`noctispro dicom`, received data sets compared byte for byte with the files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from tests.factories import dataset_bytes
from tests.integration.archive import Archive, archive_at
from tests.integration.conftest import need
from tests.retrieve_data import Study, make_study, received

UNCOMPRESSED = ["CT_small.dcm", "MR_small_implicit.dcm", "SC_rgb.dcm"]


@dataclass
class Setup:
    archive: Archive
    plain: Study  # uncompressed, what getscu takes by default
    mixed: Study  # MR in Explicit VR LE and in RLE


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need("getscu")
    root = tmp_path_factory.mktemp("cget")
    with archive_at(root / "archive") as archive:
        archive.run("facilities", "add", "NORTH", "--name", "North", "--ae", "GETTER")
        archive.run(
            "nodes", "add", "getter", "--aet", "GETTER", "--host", "127.0.0.1", "--port", "11190",
            "--facility", "NORTH", "--allow", "get",
        )  # fmt: skip
        archive.run(
            "nodes", "add", "mover", "--aet", "MOVER", "--host", "127.0.0.1", "--port", "11191",
            "--facility", "NORTH", "--allow", "move",
        )  # fmt: skip
        plain = make_study(root / "plain", "GET-1", UNCOMPRESSED)
        mixed = make_study(root / "mixed", "GET-2", ["MR_small.dcm", "MR_small_RLE.dcm"])
        archive.run("import", str(root / "plain"), str(root / "mixed"), "--facility", "NORTH")
        archive.start("dicom")
        yield Setup(archive, plain, mixed)
        archive.assert_consistent()


@pytest.fixture(autouse=True)
def received_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pynetdicom SCU below reads `event.request.DataSet`; importing our server in this
    process (unit tests do) switches pynetdicom to receiving into spool files."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)


def test_getscu_study_byte_identical(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    result = setup.archive.dcmtk(
        "getscu", "-v", "-S", "-aet", "GETTER", "-aec", "NOCTISPRO", "+B", "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={setup.plain.study_uid}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = received(out)
    assert sorted(got) == sorted(setup.plain.files)
    for uid, path in setup.plain.files.items():
        if setup.plain.syntaxes[uid] == ExplicitVRLittleEndian:
            assert got[uid] == setup.plain.dataset(uid)
        else:
            # getscu proposes one context per SOP class and we accept its first syntax
            # (Explicit VR LE): an Implicit VR instance is re-encoded, element for element.
            arrived = pydicom.dcmread(next(out.glob(f"*{uid}*")))
            assert arrived.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            original = pydicom.dcmread(path)
            assert [e.tag for e in arrived] == [e.tag for e in original]
            assert all(arrived[e.tag].value == e.value for e in original), uid


def test_getscu_series_level(setup: Setup, tmp_path: Path) -> None:
    series_uid, sops = list(setup.plain.series.items())[1]
    result = setup.archive.dcmtk(
        "getscu", "-S", "-aet", "GETTER", "-aec", "NOCTISPRO", "+B", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={setup.plain.study_uid}",
        "-k", f"SeriesInstanceUID={series_uid}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(received(tmp_path)) == sorted(sops)


def get(
    setup: Setup, uid: str, syntaxes: list[str], *, calling: str = "GETTER"
) -> tuple[list[Dataset], dict[str, tuple[str, bytes]]]:
    """C-GET a study with pynetdicom, proposing MR storage with the SCP role in `syntaxes`
    (one context per syntax); returns the responses and what arrived (syntax, data set)."""
    arrived: dict[str, tuple[str, bytes]] = {}

    def on_store(event: evt.Event) -> int:
        syntax = str(event.context.transfer_syntax)
        arrived[str(event.request.AffectedSOPInstanceUID)] = (
            syntax,
            event.request.DataSet.getvalue(),
        )
        return 0x0000

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for syntax in syntaxes:
        ae.add_requested_context(MRImageStorage, [syntax])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = uid
    assoc = ae.associate(
        "127.0.0.1",
        setup.archive.dicom_port,
        ae_title="NOCTISPRO",
        ext_neg=[build_role(MRImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    responses = []
    try:
        for status, ident in assoc.send_c_get(
            identifier, StudyRootQueryRetrieveInformationModelGet
        ):
            assert "Status" in status
            if ident is not None:
                for elem in ident:
                    status.add(elem)
            responses.append(status)
    finally:
        assoc.release()
    return responses, arrived


def test_each_instance_in_its_stored_syntax(setup: Setup) -> None:
    responses, arrived = get(setup, setup.mixed.study_uid, [ExplicitVRLittleEndian, RLELossless])
    assert responses[-1].Status == 0x0000
    assert responses[-1].NumberOfCompletedSuboperations == 2
    assert sorted(arrived) == sorted(setup.mixed.files)
    for uid, (syntax, data) in arrived.items():
        assert syntax == setup.mixed.syntaxes[uid]
        assert data == dataset_bytes(setup.mixed.files[uid].read_bytes())


def test_compressed_instance_not_decompressed(setup: Setup) -> None:
    responses, arrived = get(setup, setup.mixed.study_uid, [ImplicitVRLittleEndian])
    final = responses[-1]
    rle = next(u for u, ts in setup.mixed.syntaxes.items() if ts == RLELossless)
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 1)
    assert list(final.FailedSOPInstanceUIDList) == [rle] or final.FailedSOPInstanceUIDList == rle
    assert set(arrived) == set(setup.mixed.files) - {rle}
    assert [syntax for syntax, _ in arrived.values()] == [ImplicitVRLittleEndian]


def test_ae_not_allowed_to_get(setup: Setup) -> None:
    responses, arrived = get(
        setup, setup.mixed.study_uid, [ExplicitVRLittleEndian], calling="MOVER"
    )
    assert [r.Status for r in responses] == [0x0124]
    assert "may not C-GET" in responses[0].ErrorComment
    assert arrived == {}
