"""Outgoing associations: C-ECHO for the health check (the DIMSE issue adds the rest)."""

from __future__ import annotations

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from noctispro.dimse.server import set_nodelay


def _on_conn_open(event: evt.Event) -> None:
    set_nodelay(event.assoc.dul.socket.socket if event.assoc.dul.socket else None)


def echo(
    host: str, port: int, called_ae: str, *, calling_ae: str = "NOCTISPRO", timeout: float = 5
) -> int | None:
    """C-ECHO a peer; return the status, or None if no association could be made."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        host, port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, _on_conn_open)]
    )
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()
