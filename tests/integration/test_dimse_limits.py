"""SCP limits: associations across processes, idle associations, peer address checks."""

from __future__ import annotations

import time

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.integration.archive import Archive, archive_at

LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # rejected-transient, presentation related
CALLING_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)  # rejected-permanent, service-user


def associate(
    archive: Archive, calling_ae: str = "LIMITS", source: str | None = None
) -> Association:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = 20
    ae.network_timeout = None  # never time out on our side: the SCP must do it
    ae.add_requested_context(Verification)
    return ae.associate(
        "127.0.0.1",
        archive.dicom_port,
        ae_title="NOCTISPRO",
        bind_address=(source, 0) if source else None,
    )


def rejection(assoc: Association) -> tuple[int, int, int] | None:
    rsp = assoc.acceptor.primitive
    if not assoc.is_rejected or rsp is None:
        return None
    return (int(rsp.result), int(rsp.result_source), int(rsp.diagnostic))


def dicom_log(archive: Archive) -> str:
    return (archive.root / "dicom.out").read_text(errors="replace")


def test_association_limit_holds_across_scp_processes(tmp_path) -> None:
    with archive_at(tmp_path / "a", NOCTISPRO_DICOM_MAX_ASSOCIATIONS="2") as archive:
        archive.start("dicom", "--processes", "2")
        deadline = time.monotonic() + 60
        while dicom_log(archive).count("DICOM SCP NOCTISPRO listening") < 2:
            assert time.monotonic() < deadline, dicom_log(archive)
            time.sleep(0.1)
        held = [associate(archive), associate(archive)]
        assert all(a.is_established for a in held)
        # The kernel spreads connections over both processes; with per-process counts
        # some of these would land on a process holding one association and get in.
        for _ in range(6):
            extra = associate(archive)
            assert not extra.is_established
            assert rejection(extra) == LOCAL_LIMIT_EXCEEDED, dicom_log(archive)[-3000:]
        assert "rejected: 2 associations open" in dicom_log(archive)
        assert held[0].send_c_echo().Status == 0  # the held ones are not disturbed
        held.pop(0).release()
        # The slot comes back when the released association's thread ends.
        deadline = time.monotonic() + 20
        while True:
            again = associate(archive)
            if again.is_established or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.is_established
        assert again.send_c_echo().Status == 0
        assert rejection(associate(archive)) == LOCAL_LIMIT_EXCEEDED
        again.release()
        held[0].release()


def test_an_idle_association_is_aborted_after_the_network_timeout(tmp_path) -> None:
    with archive_at(tmp_path / "a", NOCTISPRO_DICOM_NETWORK_TIMEOUT="1") as archive:
        archive.start("dicom")
        idle = associate(archive)
        assert idle.is_established
        deadline = time.monotonic() + 30
        while idle.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert idle.is_aborted
        busy = associate(archive)  # the SCP is fine and serves the next peer
        assert busy.send_c_echo().Status == 0
        busy.release()


def test_peer_address_must_match_the_node_host(tmp_path) -> None:
    with archive_at(tmp_path / "a", NOCTISPRO_DICOM_CHECK_PEER_HOST="true") as archive:
        archive.run("nodes", "add", "near", "--aet", "NEAR", "--host", "localhost", "--port", "104")
        archive.run("nodes", "add", "far", "--aet", "FAR", "--host", "127.0.0.2", "--port", "104")
        archive.start("dicom")
        near = associate(archive, "NEAR")  # localhost resolves to 127.0.0.1
        assert near.is_established
        near.release()
        wrong = associate(archive, "FAR")
        assert rejection(wrong) == CALLING_AE_NOT_RECOGNIZED
        archive.wait_output(
            "association from FAR@127.0.0.1 rejected: peer address 127.0.0.1 is not one of "
            "node host '127.0.0.2'",
            command="dicom",
        )
        right = associate(archive, "FAR", source="127.0.0.2")
        assert right.is_established
        right.release()
        # Peers that are not nodes have no host to check (accepted here: development).
        other = associate(archive, "SOMEONE")
        assert other.is_established
        other.release()


def test_peer_address_is_not_checked_by_default(new_archive: Archive) -> None:
    new_archive.run("nodes", "add", "far", "--aet", "FAR", "--host", "127.0.0.2", "--port", "104")
    new_archive.start("dicom")
    assoc = associate(new_archive, "FAR")
    assert assoc.is_established
    assoc.release()
