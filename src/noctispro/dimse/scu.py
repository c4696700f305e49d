"""Outgoing associations: C-ECHO for the health check and remote nodes (the rest follows)."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from noctispro import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctispro.dimse.server import set_nodelay


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    status: int | None  # the C-ECHO status; None when no response came
    milliseconds: float  # from the connection attempt to the C-ECHO response
    detail: str


def verify(
    host: str,
    port: int,
    called_ae: str,
    *,
    calling_ae: str = "NOCTISPRO",
    timeout: float = 5,
    tls_args: tuple[ssl.SSLContext, str] | None = None,
) -> EchoResult:
    """C-ECHO a peer and say what happened, failures included (it never raises).

    `timeout` bounds each phase: TCP connect (with the TLS handshake when `tls_args`
    is given, see dimse/tls.py), association answer, C-ECHO answer.
    pynetdicom does not hand out the reason a connection failed, so it is told by the
    time taken: a connect that gave up before the timeout was refused or unreachable.
    """
    ae = AE(ae_title=calling_ae)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    seen: set[str] = set()

    def on_open(event: evt.Event) -> None:
        seen.add("connected")
        set_nodelay(event.assoc.dul.socket.socket if event.assoc.dul.socket else None)

    def on_accepted(event: evt.Event) -> None:
        seen.add("accepted")

    where = f"{called_ae}@{host}:{port}"
    start = time.perf_counter()

    def result(ok: bool, status: int | None, detail: str) -> EchoResult:
        ms = round(1000 * (time.perf_counter() - start), 2)
        return EchoResult(ok=ok, status=status, milliseconds=ms, detail=detail)

    def timed_out() -> bool:
        return time.perf_counter() - start >= timeout * 0.95

    try:
        assoc = ae.associate(
            host,
            port,
            ae_title=called_ae,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_ACCEPTED, on_accepted)],
            tls_args=tls_args,
        )
    except OSError as exc:  # the host name does not resolve
        return result(False, None, f"cannot resolve {host!r}: {exc}")
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        why = f"{rsp.result_str}, {rsp.source_str}: {rsp.reason_str}" if rsp else "no reason"
        return result(False, None, f"{where} rejected the association ({why})")
    if not assoc.is_established:
        if "connected" not in seen:
            problem = tls_problem(host, port, tls_args, timeout) if tls_args else None
            if problem:
                return result(False, None, f"TLS connection to {host}:{port} failed: {problem}")
            if timed_out():
                return result(False, None, f"no TCP connection to {host}:{port} in {timeout:g} s")
            return result(False, None, f"TCP connection to {host}:{port} refused or unreachable")
        if "accepted" in seen:
            return result(False, None, f"{where} accepted no Verification presentation context")
        if timed_out():
            return result(False, None, f"{where} did not answer the association in {timeout:g} s")
        return result(False, None, f"{where} aborted the association")
    try:
        response = assoc.send_c_echo()
        if "Status" not in response:
            return result(False, None, f"{where} sent no C-ECHO response in {timeout:g} s")
        status = int(response.Status)
        if status != 0:
            return result(False, status, f"C-ECHO {where} answered status 0x{status:04X}")
        return result(True, status, f"C-ECHO {where} succeeded")
    finally:
        if assoc.is_established:
            assoc.release()


def tls_problem(
    host: str, port: int, tls_args: tuple[ssl.SSLContext, str], timeout: float
) -> str | None:
    """Why a TLS handshake with the peer fails (None if it succeeds).

    pynetdicom logs the reason and reports only "no connection"; a second, bare
    handshake tells the user whether the certificate, the protocol or the port is wrong.
    """
    context, server_hostname = tls_args
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_hostname):
                return None
    except ssl.SSLCertVerificationError as exc:
        return f"certificate not accepted ({exc.verify_message})"
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    except OSError:
        return None  # not a TLS problem: the plain connection failed too


def echo(
    host: str, port: int, called_ae: str, *, calling_ae: str = "NOCTISPRO", timeout: float = 5
) -> int | None:
    """C-ECHO a peer; return the status, or None if no association could be made."""
    return verify(host, port, called_ae, calling_ae=calling_ae, timeout=timeout).status
