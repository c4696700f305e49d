"""DICOM TLS (PS3.15 B.9) on the second port: DCMTK and pynetdicom as TLS peers.

The archive requires client certificates signed by the test CA (NOCTISPRO_DICOM_TLS_CA);
the plain port keeps working next to it.
"""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.factories import dataset_bytes, make_ct, write
from tests.integration.archive import Archive, archive_at, wait_for_port
from tests.tls_certs import PKI, Pair, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: PKI) -> dict[str, str]:
    return {
        "NOCTISPRO_DICOM_TLS_CERT": str(pki.server.cert),
        "NOCTISPRO_DICOM_TLS_KEY": str(pki.server.key),
        "NOCTISPRO_DICOM_TLS_CA": str(pki.ca),
    }


@pytest.fixture(scope="module")
def tls_archive(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Archive]:
    with archive_at(tmp_path_factory.mktemp("tls-archive"), **tls_settings(pki)) as archive:
        proc = archive.start("serve")
        wait_for_port(archive.dicom_tls_port, proc=proc)
        yield archive


def client_context(pki: PKI, pair: Pair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return context


def tls_associate(archive: Archive, context: ssl.SSLContext | None, port: int = 0) -> Association:
    ae = AE(ae_title="TLSPEER")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae.associate(
        "127.0.0.1",
        port or archive.dicom_tls_port,
        ae_title="NOCTISPRO",
        tls_args=(context, "127.0.0.1") if context else None,
    )


def handshake(archive: Archive, context: ssl.SSLContext) -> str:
    """A bare TLS handshake with the TLS port: the protocol, or the error it ended with."""
    with socket.create_connection(("127.0.0.1", archive.dicom_tls_port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                return str(sock.version())
        except ssl.SSLError as exc:
            return str(exc)


def wait_log(archive: Archive, text: str, timeout: float = 20) -> bool:
    path = archive.data_dir / "logs" / "dicom.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path}:\n{path.read_text(errors='replace')[-3000:]}")


def test_serve_says_where_tls_listens(tls_archive: Archive) -> None:
    out = tls_archive.wait_output("NoctisPro is running")
    assert f"NOCTISPRO@127.0.0.1:{tls_archive.dicom_tls_port} (TLS)" in out
    line = f"DICOM TLS SCP NOCTISPRO listening on 127.0.0.1:{tls_archive.dicom_tls_port}"
    deadline = time.monotonic() + 30  # each SCP process logs it once it serves
    while line not in (log := (tls_archive.data_dir / "logs" / "dicom.log").read_text()):
        assert time.monotonic() < deadline, log
        time.sleep(0.1)


def test_dcmtk_echoscu_and_storescu_over_tls(
    tls_archive: Archive, pki: PKI, tmp_path: Path
) -> None:
    tls = ["+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca)]
    port = tls_archive.dicom_tls_port
    echo = tls_archive.dcmtk("echoscu", *tls, "-aec", "NOCTISPRO", port=port)
    assert echo.returncode == 0, echo.stderr
    ds = make_ct(patient_name="Tls^Dcmtk")
    path = write(ds, tmp_path / "ct.dcm")
    store = tls_archive.dcmtk(
        "storescu", *tls, "-aet", "TLSCT", "-aec", "NOCTISPRO", files=(path,), port=port
    )
    assert store.returncode == 0, store.stderr
    stored = tls_archive.stored_bytes(ds.SOPInstanceUID)
    assert dataset_bytes(stored) == dataset_bytes(path.read_bytes())
    tls_archive.assert_consistent()


def test_dcmtk_without_tls_or_with_a_stranger_certificate_is_refused(
    tls_archive: Archive, pki: PKI
) -> None:
    port = tls_archive.dicom_tls_port
    plain = tls_archive.dcmtk("echoscu", "-aec", "NOCTISPRO", "-to", "10", "-ta", "10", port=port)
    assert plain.returncode != 0
    stranger = tls_archive.dcmtk(
        "echoscu",
        *("+tls", str(pki.stranger.key), str(pki.stranger.cert), "+cf", str(pki.ca)),
        "-aec",
        "NOCTISPRO",
        port=port,
    )
    assert stranger.returncode != 0
    assert wait_log(tls_archive, "certificate verify failed")
    # The plain port is not affected.
    assert tls_archive.echoscu().returncode == 0


def test_pynetdicom_store_over_tls(tls_archive: Archive, pki: PKI) -> None:
    assoc = tls_associate(tls_archive, client_context(pki, pki.client))
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        ds = make_ct(patient_name="Tls^Pynetdicom")
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    assert tls_archive.query(
        "SELECT source_ae_title FROM index_instance WHERE sop_instance_uid = ?",
        (ds.SOPInstanceUID,),
    ) == [("TLSPEER",)]
    assert wait_log(tls_archive, "TLS connection from 127.0.0.1: TLSv1.3")


def test_clients_without_a_trusted_certificate_and_plain_tcp_are_refused(
    tls_archive: Archive, pki: PKI
) -> None:
    assert not tls_associate(tls_archive, client_context(pki, None)).is_established
    assert not tls_associate(tls_archive, client_context(pki, pki.stranger)).is_established
    assert not tls_associate(tls_archive, None).is_established  # plain TCP to the TLS port
    # ... and TLS to the plain port.
    context = client_context(pki, pki.client)
    assert not tls_associate(tls_archive, context, port=tls_archive.dicom_port).is_established
    # None of that disturbed the port.
    assoc = tls_associate(tls_archive, context)
    assert assoc.is_established
    assoc.release()


def test_only_tls_12_and_later_with_bcp195_ciphers(tls_archive: Archive, pki: PKI) -> None:
    """BCP 195 non-downgrading: TLS 1.1 and suites without forward secrecy are refused."""
    old = client_context(pki, pki.client)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client would accept TLS 1.1
    assert "alert protocol version" in handshake(tls_archive, old)

    static_rsa = client_context(pki, pki.client)
    static_rsa.maximum_version = ssl.TLSVersion.TLSv1_2
    static_rsa.set_ciphers("AES128-SHA256:AES256-GCM-SHA384")  # RSA key exchange
    assert "alert handshake failure" in handshake(tls_archive, static_rsa)

    good = client_context(pki, pki.client)
    good.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(tls_archive, good) == "TLSv1.2"
    assert handshake(tls_archive, client_context(pki, pki.client)) == "TLSv1.3"


def test_a_silent_tls_client_does_not_block_the_port(tls_archive: Archive, pki: PKI) -> None:
    """The handshake runs in the connection's thread, not in the accept loop."""
    with socket.create_connection(("127.0.0.1", tls_archive.dicom_tls_port)):
        assoc = tls_associate(tls_archive, client_context(pki, pki.client))
        assert assoc.is_established
        assoc.release()


def test_our_scu_over_tls(tls_archive: Archive) -> None:
    """Echo, query and send to a TLS node: here, our own TLS port."""
    a = tls_archive
    a.run(
        "nodes", "add", "self-tls", "--aet", "NOCTISPRO", "--host", "127.0.0.1",
        "--port", str(a.dicom_tls_port), "--tls", "--allow", "store,find",
    )  # fmt: skip
    echo = a.run("nodes", "echo", "self-tls", check=False)
    log = (a.data_dir / "logs" / "dicom.log").read_text(errors="replace")
    assert echo.stdout.startswith("OK self-tls"), f"{echo.stdout}{echo.stderr}{log[-3000:]}"
    # C-FIND SCU over TLS too: query ourselves through the API.
    ds = make_ct(patient_name="Tls^Query")
    plain = a.associate([CTImageStorage])
    assert plain.send_c_store(ds).Status == 0
    plain.release()
    with a.client() as api:
        r = api.post(
            "/api/v1/nodes/self-tls/query",
            json={"level": "STUDY", "filters": {"PatientName": "Tls^Query"}},
        )
        assert r.status_code == 200, r.text
        assert [m["StudyInstanceUID"] for m in r.json()["matches"]] == [ds.StudyInstanceUID]
        # ... and C-STORE SCU: send the study to the TLS node (ourselves: a duplicate).
        study = {"study_instance_uid": ds.StudyInstanceUID}
        r = api.post("/api/v1/nodes/self-tls/send", json=study)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (job := api.get(r.json()["location"]).json())["state"] not in (
            "succeeded",
            "failed",
        ) and time.monotonic() < deadline:
            time.sleep(0.3)
    assert job["state"] == "succeeded" and job["result"]["completed"] == 1, job
    a.run(
        "nodes", "add", "plain-as-tls", "--aet", "PLAINASTLS", "--host", "127.0.0.1",
        "--port", str(a.dicom_port), "--tls",
    )  # fmt: skip
    failed = a.run("nodes", "echo", "plain-as-tls", check=False)
    assert failed.returncode == 1
    assert "TLS connection to 127.0.0.1" in failed.stdout, failed.stdout


def test_bad_certificate_settings_stop_the_dicom_service(new_archive: Archive, tmp_path) -> None:
    missing = str(tmp_path / "missing.pem")
    new_archive.env.update(NOCTISPRO_DICOM_TLS_CERT=missing, NOCTISPRO_DICOM_TLS_KEY=missing)
    result = new_archive.run("dicom", check=False, timeout=60)
    assert result.returncode == 2
    assert "cannot load the DICOM TLS certificate" in result.stderr
