"""Who may associate and what each peer may do, with unknown AE titles refused."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from tests.factories import make_ct
from tests.integration.archive import archive_at

CONTEXTS = [CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification]


def _find_status(assoc) -> int:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    return int(responses[-1][0].Status)


def test_unknown_peers_refused_and_operations_enforced(tmp_path: Path) -> None:
    with archive_at(
        tmp_path / "a",
        NOCTISPRO_DICOM_ACCEPT_UNKNOWN="false",
        NOCTISPRO_DICOM_CHECK_CALLED_AE="true",
    ) as archive:
        archive.run("facilities", "add", "NORTH", "--name", "North", "--ae", "NORTH_CT")
        archive.run(
            "nodes",
            "add",
            "viewer",
            "--aet",
            "VIEWER",
            "--host",
            "127.0.0.1",
            "--port",
            "11113",
            "--facility",
            "NORTH",
            "--allow",
            "find",
        )
        archive.run(
            "nodes",
            "add",
            "router",
            "--aet",
            "ROUTER",
            "--host",
            "127.0.0.1",
            "--port",
            "11114",
            "--allow",
            "store",
        )
        archive.start("dicom")

        refused = archive.echoscu("STRANGER")
        assert refused.returncode != 0
        assert "Called AE Title Not Recognized" not in refused.stderr
        assert archive.echoscu("NORTH_CT").returncode == 0
        assert archive.echoscu("NORTH_CT", called_ae="SOMEONE").returncode != 0  # called-AE check

        sender = archive.associate(
            CONTEXTS, calling_ae="NORTH_CT"
        )  # a facility sender: may store, may not query
        try:
            assert sender.send_c_store(make_ct()).Status == 0x0000
            assert _find_status(sender) == 0x0124
        finally:
            sender.release()

        viewer = archive.associate(CONTEXTS, calling_ae="VIEWER")  # a node allowed to find only
        try:
            assert viewer.send_c_store(make_ct()).Status == 0x0124
            assert _find_status(viewer) == 0x0000
        finally:
            viewer.release()

        router = archive.associate(CONTEXTS, calling_ae="ROUTER")
        try:
            assert router.send_c_store(make_ct()).Status == 0x0000
            assert _find_status(router) == 0x0124
        finally:
            router.release()
        assert archive.query("SELECT COUNT(*) FROM index_instance")[0][0] == 2
        archive.assert_consistent()


def test_unknown_peers_accepted_in_development(new_archive) -> None:
    new_archive.start("dicom")
    assert new_archive.echoscu("ANYONE").returncode == 0
    assoc = new_archive.associate(CONTEXTS, calling_ae="ANYONE")
    try:
        assert assoc.send_c_store(make_ct()).Status == 0x0000
        assert _find_status(assoc) == 0x0000
    finally:
        assoc.release()
