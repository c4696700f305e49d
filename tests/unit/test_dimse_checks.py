"""The checks around incoming associations, without a network: commands, peers, TLS setup."""

from __future__ import annotations

import ssl
import struct
from pathlib import Path

import pytest
from pydantic import ValidationError

from noctispro.accounts import nodes
from noctispro.conf import Settings, get_settings
from noctispro.dimse import access, tls
from noctispro.dimse.acceptor import MalformedCommand, check_command_length
from tests.tls_certs import make_pki


def command(body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return b"\x00\x00\x00\x00\x04\x00\x00\x00" + struct.pack("<I", length) + body


def test_command_group_length_must_count_the_rest() -> None:
    body = b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00"
    check_command_length(command(body))
    for bad in (command(body, len(body) + 2), command(body, len(body) - 2), body, b""):
        with pytest.raises(MalformedCommand):
            check_command_length(bad)


@pytest.mark.django_db
def test_peer_host_check(settings_env) -> None:
    nodes.add_node("near", ae_title="NEAR", host="localhost", port=104)
    nodes.add_node("far", ae_title="FAR", host="127.0.0.2", port=104)
    access.forget()
    assert access.peer_host_problem("FAR", "127.0.0.1") is None  # off by default
    settings_env(NOCTISPRO_DICOM_CHECK_PEER_HOST="1")
    access.forget()
    assert access.peer_host_problem("NEAR", "127.0.0.1") is None
    assert access.peer_host_problem("NEAR", "::ffff:127.0.0.1") is None  # IPv4-mapped
    assert access.peer_host_problem("FAR", "127.0.0.2") is None
    problem = access.peer_host_problem("FAR", "127.0.0.1")
    assert problem == "peer address 127.0.0.1 is not one of node host '127.0.0.2' (127.0.0.2)"
    assert access.peer_host_problem("NOT_A_NODE", "192.0.2.1") is None


def test_tls_settings_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        Settings(data_dir=tmp_path, dicom_tls_cert=tmp_path / "cert.pem")
    with pytest.raises(ValidationError, match="must differ"):
        Settings(
            data_dir=tmp_path,
            dicom_tls_cert=tmp_path / "c",
            dicom_tls_key=tmp_path / "k",
            dicom_tls_port=11112,
        )
    assert not Settings(data_dir=tmp_path, dicom_tls_cert="", dicom_tls_key="").dicom_tls_enabled


def test_tls_contexts_follow_bcp195(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    settings = Settings(
        data_dir=tmp_path,
        dicom_tls_cert=pki.server.cert,
        dicom_tls_key=pki.server.key,
        dicom_tls_ca=pki.ca,
    )
    server = tls.server_context(settings)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_REQUIRED
    suites = {c["name"] for c in server.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert suites and all(("GCM" in s or "CHACHA20" in s) and "DHE" in s for s in suites)
    client = tls.client_context(settings)
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    without_ca = Settings(
        data_dir=tmp_path, dicom_tls_cert=pki.server.cert, dicom_tls_key=pki.server.key
    )
    assert tls.server_context(without_ca).verify_mode == ssl.CERT_NONE


def test_unusable_tls_files_are_reported(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    settings = Settings(data_dir=tmp_path, dicom_tls_cert=missing, dicom_tls_key=missing)
    with pytest.raises(tls.TLSSetupError, match="cannot load the DICOM TLS"):
        tls.server_context(settings)
    with pytest.raises(tls.TLSSetupError):
        tls.server_context(Settings(data_dir=tmp_path))


@pytest.mark.django_db
def test_echo_to_a_tls_node_with_unusable_files_sends_nothing(settings_env, tmp_path) -> None:
    missing = str(tmp_path / "missing.pem")
    settings_env(NOCTISPRO_DICOM_TLS_CERT=missing, NOCTISPRO_DICOM_TLS_KEY=missing)
    assert get_settings().dicom_tls_enabled
    node = nodes.add_node("tls1", ae_title="TLS1", host="127.0.0.1", port=2762, tls=True)
    result = nodes.echo_node(node)
    assert not result.ok
    assert "cannot set up DICOM TLS" in result.detail
