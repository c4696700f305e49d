"""DICOM TLS: the Non-downgrading BCP 195 Secure Transport Connection Profile (PS3.15 B.9).

BCP 195 (RFC 9325) asks for TLS 1.2 or later, no TLS compression, no renegotiation and
AEAD cipher suites with forward secrecy (ECDHE/DHE with AES-GCM or ChaCha20-Poly1305);
TLS 1.3 suites are all of that kind. "Non-downgrading": nothing older is offered or
accepted. The same hardening serves both sides:

- `server_context` for our SCP's TLS port (NOCTISPRO_DICOM_TLS_PORT). With
  NOCTISPRO_DICOM_TLS_CA set, a peer must present a certificate that CA signed
  (mutual authentication); without it the port encrypts but does not ask who calls.
- `client_context` / `tls_args` for our associations to nodes marked `tls`: the node's
  certificate must be valid for its host name and signed by NOCTISPRO_DICOM_TLS_CA (the
  system trust store when unset); we present our own certificate when we have one.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from noctispro.conf import Settings

if TYPE_CHECKING:
    from noctispro.accounts.models import RemoteNode

#: TLS 1.2 suites of BCP 195 (RFC 9325 4.2): forward secret, authenticated encryption.
BCP195_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


class TLSSetupError(RuntimeError):
    """No certificate and key configured, or a certificate, key or CA file unusable."""


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def server_context(settings: Settings) -> ssl.SSLContext:
    """The context of our TLS port; a missing or unusable file fails here, at start-up."""
    if settings.dicom_tls_cert is None or settings.dicom_tls_key is None:
        raise TLSSetupError("set NOCTISPRO_DICOM_TLS_CERT and NOCTISPRO_DICOM_TLS_KEY")
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    with _explained():
        context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
        if settings.dicom_tls_ca is not None:
            context.load_verify_locations(cafile=settings.dicom_tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """The context of our associations to TLS peers: their certificate and host name checked."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    with _explained():
        if settings.dicom_tls_ca is not None:
            context.load_verify_locations(cafile=settings.dicom_tls_ca)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if settings.dicom_tls_cert is not None and settings.dicom_tls_key is not None:
            context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    return context


@contextmanager
def _explained() -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise TLSSetupError(
            "cannot load the DICOM TLS certificate, key or CA "
            f"(NOCTISPRO_DICOM_TLS_CERT/_KEY/_CA): {exc}"
        ) from exc


def tls_args(node: RemoteNode, settings: Settings) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's `tls_args` for an association to `node`; None for a plain-TCP node."""
    if not node.tls:
        return None
    return client_context(settings), node.host


def describe(sock: ssl.SSLSocket) -> str:
    """Protocol and cipher of an established TLS connection, for the log."""
    cipher = sock.cipher()
    return f"{sock.version()} {cipher[0] if cipher else '?'}"
