"""The DICOM SCP: a thin pynetdicom adapter over core ingest (DESIGN §6.5).

Received data sets are written by pynetdicom straight to a spool file on the data disk
(STORE_RECV_CHUNKED_DATASET), so memory does not grow with instance size; the handler
hands that file to `store_instance` and answers with the status it maps to.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from django.db import close_old_connections, connection
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from noctispro import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctispro.accounts.models import Operation
from noctispro.conf import Settings
from noctispro.core.ingest import InstanceRejected, Origin, encode_file_meta, store_instance
from noctispro.dimse import acceptor, access, fastpath, reactor, retrieve, statuses, storefast, tls
from noctispro.dimse.commitment import STORAGE_COMMITMENT_PUSH_MODEL, handle_n_action
from noctispro.dimse.find import QR_FIND_MODELS, handle_find
from noctispro.dimse.process import AssociationSlots, LoadBoard, serve_shared_port
from noctispro.dimse.worklist import MODALITY_WORKLIST_FIND, handle_worklist_find

log = logging.getLogger(__name__)

_config.STORE_RECV_CHUNKED_DATASET = True
# Accept every storage SOP class, private and future ones included, in the first
# transfer syntax the sender proposes: the archive stores what it is sent.
_config.UNRESTRICTED_STORAGE_SERVICE = True
# Log the identifiers of failed requests, not of every C-STORE.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# pynetdicom's standard handlers format log lines for every PDU and DIMSE message even
# when nothing is logged at that level (0.3-0.8 ms per C-STORE here); we log ourselves.
_config.LOG_HANDLER_LEVEL = "none"
fastpath.install()
reactor.install()
retrieve.install()  # C-MOVE and C-GET are served by dimse.retrieve, not by handlers


def _spool_file_meta(**fields: Any) -> dict[str, Any]:
    return fields


def _write_spool_file_meta(fp: Any, fields: dict[str, Any]) -> None:
    """Group 0002 of pynetdicom's spool file, written directly.

    pynetdicom builds it with pydicom (0.5 ms of CPU per instance here); ingest reads
    only the transfer syntax from it and writes the stored file's meta itself.
    """
    fp.write(
        encode_file_meta(
            sop_class_uid=str(fields["sop_class_uid"]),
            sop_instance_uid=str(fields["sop_instance_uid"]),
            transfer_syntax_uid=str(fields["transfer_syntax"]),
        )
    )


# The two names pynetdicom's chunked receive calls (dimse_messages.DIMSEMessage.decode_msg).
dimse_messages.create_file_meta = _spool_file_meta  # type: ignore[assignment]
dimse_messages.write_file_meta_info = _write_spool_file_meta  # type: ignore[assignment]


#: How long a busier SCP process leaves a new connection to a less busy one (seconds).
DEFER_ACCEPT = 0.05
LISTEN_BACKLOG = 128


def set_nodelay(sock: socket.socket | None) -> None:
    """Turn Nagle off: DIMSE is request/response, and delayed ACKs cost ~40 ms each."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PduTooLarge(OSError):
    pass


class PacsAssociationSocket(AssociationSocket):
    """pynetdicom's socket with a bounded receive that fills one buffer in place.

    pynetdicom reads whatever length a PDU header declares; here a declared length past
    `max_receive` ends the connection before anything is allocated (pynetdicom turns
    the OSError into a closed transport). Within the bound, `recv_into` fills the
    buffer in one or two calls where the stock loop made 4 KiB reads and copies.
    """

    #: Largest PDU body accepted: our maximum PDU for P-DATA, and room for association
    #: requests with many contexts or user identity. Set from Settings at start.
    max_receive = 1 << 20

    def recv(self, nr_bytes: int) -> bytearray:
        assert self.socket is not None
        if nr_bytes > self.max_receive:
            raise PduTooLarge(f"peer declared a {nr_bytes}-byte PDU (limit {self.max_receive})")
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            count = self.socket.recv_into(view[received:], nr_bytes - received)
            if not count:
                return buffer[:received]
            received += count
        return buffer


class PacsRequestHandler(RequestHandler):
    def handle(self) -> None:
        # A connection counts on its process's load board from its accept to the end
        # of its association thread (acceptor.PacsAssociation.run), or to here if no
        # association thread starts.
        board: LoadBoard | None = getattr(self.server, "board", None)
        started = False
        try:
            if isinstance(self.request, ssl.SSLSocket) and not self._tls_handshake(self.request):
                return
            super().handle()
            started = True
        finally:
            if board is not None and not started:
                board.closed()

    def _tls_handshake(self, sock: ssl.SSLSocket) -> bool:
        """The TLS handshake, in this connection's thread and bounded by the ACSE timeout.

        pynetdicom would do it in the accept loop, where one silent peer stalls every
        other connection to the port.
        """
        sock.settimeout(self.ae.acse_timeout)
        try:
            sock.do_handshake()
        except (OSError, ValueError) as exc:
            log.warning("TLS handshake with %s failed: %s", self.client_address[0], exc)
            return False
        sock.settimeout(None)
        log.info("TLS connection from %s: %s", self.client_address[0], tls.describe(sock))
        return True

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        set_nodelay(self.request)
        # Make pynetdicom's socket wrapper ours. A second wrapper cannot be set (and its
        # constructor would queue a second "connection open" event); the subclass adds
        # no state, so changing the class of the one just made is enough.
        assoc.dul.socket.__class__ = PacsAssociationSocket
        reactor.make_event_driven(assoc)
        acceptor.adopt(assoc)
        assert isinstance(assoc, acceptor.PacsAssociation)
        assoc.board = getattr(self.server, "board", None)
        return assoc


class PacsAssociationServer(ThreadedAssociationServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", PacsRequestHandler)
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context:  # handshake later, in the connection's thread
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address


class SharedListenerServer(PacsAssociationServer):
    """One of several SCP processes accepting from a listening socket made by the parent.

    The least busy process takes each connection (`process.LoadBoard`): a busier one
    lets a pending connection wait up to DEFER_ACCEPT for the others, then takes it
    itself (a less busy process may be stuck).
    """

    listener: socket.socket
    board: LoadBoard
    _streak_start: float | None = None
    _streak_last = 0.0

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.close()  # the one socketserver made; the inherited one is bound
        self.socket = self.listener
        # Every process wakes for a connection; those that lose the race get EAGAIN.
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        # The parent only bound it: the port takes connections once an SCP is ready
        # (listen() again on a listening socket changes nothing).
        assert self.socket is not None
        self.socket.listen(LISTEN_BACKLOG)

    def get_request(self) -> tuple[socket.socket, Any]:
        if not self.board.is_least_busy():
            now = time.monotonic()
            if self._streak_start is None or now - self._streak_last > 0.01:
                self._streak_start = now
            self._streak_last = now
            if now - self._streak_start < DEFER_ACCEPT:
                time.sleep(0.001)  # the loop selects again at once: do not spin
                raise BlockingIOError("left for a less busy SCP process")
        self._streak_start = None
        client, address = super().get_request()
        self.board.opened()
        return client, address

    def server_close(self) -> None:
        # No shutdown(): it would stop the other processes' accepts on the shared socket.
        assert self.socket is not None
        self.socket.close()


def _on_association_end(event: evt.Event) -> None:
    # Each association runs in its own thread with its own Django connection; these
    # events fire in that thread (pynetdicom Association._run_reactor).
    connection.close()
    discard_partial_spool(event.assoc)


def discard_partial_spool(assoc: Association) -> None:
    """Delete the spool file of a C-STORE cut off mid-transfer (A-ABORT, TCP reset).

    pynetdicom writes the data set to a named temp file as it arrives and deletes it
    only after the handler ran; a message that never completes would leave it behind.
    """
    if storefast.discard_partial(assoc):
        log.warning("discarded a C-STORE from %s cut off mid-transfer", assoc.requestor.ae_title)
        return
    message = getattr(assoc.dimse, "message", None)
    spool = getattr(message, "_data_set_file", None)
    if spool is None:
        return
    try:
        spool.close()
    finally:
        Path(spool.name).unlink(missing_ok=True)
        log.warning("discarded a C-STORE from %s cut off mid-transfer", assoc.requestor.ae_title)


def handle_echo(event: evt.Event) -> int:
    return statuses.SUCCESS


_upkeep = threading.local()


def connection_upkeep() -> None:
    """Django's per-request connection upkeep (`close_old_connections`) for a C-STORE:
    at most once a second per association thread, or at once after a database error.

    It costs about 0.1 ms per call (and makes the next query a health check on
    PostgreSQL); a stream of C-STOREs on one association does not need it each time.
    """
    now = time.monotonic()
    if connection.errors_occurred or now - getattr(_upkeep, "at", -60.0) >= 1.0:
        close_old_connections()
        _upkeep.at = now


def handle_store(event: evt.Event) -> Dataset | int:
    connection_upkeep()
    requestor = event.assoc.requestor
    origin = Origin(
        channel="dimse",
        calling_ae_title=str(requestor.ae_title).strip(),
        ip=requestor.address or None,
    )
    if not access.rights_of(origin.calling_ae_title).allows(Operation.STORE):
        log.warning("C-STORE from %s refused: not allowed to store", origin.calling_ae_title)
        return _failure(statuses.NOT_AUTHORIZED, "this AE title may not store here")
    try:
        # Our own receive path hands its spool file over (storefast.StoreEvent.handover).
        result = store_instance(getattr(event, "handover", None) or event.dataset_path, origin)
    except InstanceRejected as exc:
        status = statuses.STORE_STATUS_FOR_REJECTION[exc.reason]
        log.warning(
            "C-STORE from %s refused (0x%04X): %s", origin.calling_ae_title, status, exc.message
        )
        return _failure(status, exc.message)
    except Exception:
        log.exception("C-STORE from %s failed", origin.calling_ae_title)
        return _failure(statuses.PROCESSING_FAILURE, "internal error while storing")
    if result.warning:
        log.warning("C-STORE %s: %s", result.sop_instance_uid, result.warning)
    return statuses.SUCCESS


def _failure(status: int, message: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = statuses.error_comment(message)
    return ds


class PacsAE(AE):
    """An AE whose list of accepted calling AE titles is read when a peer associates."""

    accept_unknown = True
    #: Its C-MOVE and C-GET are served by dimse.retrieve (`retrieve.install`).
    serves_retrieve = True
    #: Shared by every SCP process (see dimse/acceptor.py); None: pynetdicom's own count.
    association_slots: AssociationSlots | None = None

    @property
    def require_calling_aet(self) -> list[str]:
        if self.accept_unknown:
            return []
        # pynetdicom reads an empty list as "anyone": [""] matches no real AE title.
        return access.known_ae_titles() or [""]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        raise AttributeError("calling AE titles come from the nodes and facility senders")


def build_ae(settings: Settings) -> PacsAE:
    ae = PacsAE(ae_title=settings.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.accept_unknown = bool(settings.dicom_accept_unknown)
    ae.require_called_aet = settings.dicom_check_called_ae
    ae.maximum_pdu_size = settings.dicom_max_pdu
    ae.network_timeout = settings.dicom_network_timeout
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    # The limit is acceptor.AssociationSlots, counted over every process from the
    # A-ASSOCIATE-RQ on. pynetdicom's own count is per process and includes connections
    # still waiting for one (a port probe holds a thread for the ACSE timeout).
    ae.maximum_associations = 1 << 20
    ae.add_supported_context(Verification)
    for find_model in QR_FIND_MODELS:
        ae.add_supported_context(find_model)
    ae.add_supported_context(MODALITY_WORKLIST_FIND)
    # Role selection proposed by a requester is accepted as proposed: it stays the SCU,
    # we send the N-EVENT-REPORT as the SCP on its association (PS3.4 J.3.3).
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=True, scp_role=True)
    for retrieve_model in retrieve.RETRIEVE_MODELS:
        ae.add_supported_context(retrieve_model)
    return ae


def handle_c_find(event: evt.Event) -> Any:
    """EVT_C_FIND takes one handler: the information model picks the adapter."""
    if str(event.request.AffectedSOPClassUID) == MODALITY_WORKLIST_FIND:
        return handle_worklist_find(event)
    return handle_find(event)


HANDLERS: list[Any] = [
    (evt.EVT_RELEASED, _on_association_end),
    (evt.EVT_ABORTED, _on_association_end),
    (evt.EVT_C_ECHO, handle_echo),
    (evt.EVT_C_STORE, handle_store),
    (evt.EVT_C_FIND, handle_c_find),
    (evt.EVT_N_ACTION, handle_n_action),
]


def start(
    settings: Settings,
    *,
    port: int | None = None,
    handlers: list[Any] | None = None,
    listeners: list[socket.socket] | None = None,
    board: LoadBoard | None = None,
    slots: AssociationSlots | None = None,
) -> list[ThreadedAssociationServer]:
    """Start the SCP in background threads and return its servers: plain TCP, then TLS.

    The TLS port (when configured) serves the same contexts with the same handlers and
    counts against the same association limit. `listeners` (one per port, in that
    order) and `board`: the sockets and load board shared by a group of processes
    (`serve_processes`); without them each port is bound here.
    """
    PacsAssociationSocket.max_receive = max(settings.dicom_max_pdu, 1 << 20)
    ae = build_ae(settings)
    ae.association_slots = slots or AssociationSlots(settings.dicom_max_associations)
    ports: list[tuple[int, ssl.SSLContext | None]] = [
        (settings.dicom_port if port is None else port, None)
    ]
    if settings.dicom_tls_enabled:
        ports.append((settings.dicom_tls_port, tls.server_context(settings)))
    servers = []
    for n, (number, context) in enumerate(ports):
        server_class: type[PacsAssociationServer] = PacsAssociationServer
        if listeners is not None and board is not None:
            server_class = type(
                "SharedListenerServer",
                (SharedListenerServer,),
                {"listener": listeners[n], "board": board},
            )
        server = ae.make_server(
            (settings.bind, number),
            evt_handlers=HANDLERS if handlers is None else handlers,
            server_class=server_class,
            ssl_context=context,
        )
        ae._servers.append(server)  # pynetdicom's shutdown() takes it off this list
        thread = threading.Thread(
            target=server.serve_forever, name=f"DicomServer:{number}", daemon=True
        )
        thread.start()
        servers.append(server)
    return servers


def serve(
    settings: Settings,
    stop: threading.Event,
    *,
    listeners: list[socket.socket] | None = None,
    board: LoadBoard | None = None,
    slots: AssociationSlots | None = None,
) -> None:
    """Run the SCP until `stop` is set."""
    servers = start(settings, listeners=listeners, board=board, slots=slots)
    log.info(
        "DICOM SCP %s listening on %s:%s (pid %s)",
        settings.ae_title,
        settings.bind,
        settings.dicom_port,
        os.getpid(),
    )
    if settings.dicom_tls_enabled:
        log.info(
            "DICOM TLS SCP %s listening on %s:%s (pid %s)",
            settings.ae_title,
            settings.bind,
            settings.dicom_tls_port,
            os.getpid(),
        )
    try:
        stop.wait()
    finally:
        for server in servers:
            server.shutdown()
        log.info("DICOM SCP stopped")


def bound_socket(bind: str, port: int) -> socket.socket:
    """The socket a group of SCP processes accepts from (one accept queue): bound here,
    listening once the first of them is ready (`SharedListenerServer.server_activate`)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
    except BaseException:
        sock.close()
        raise
    return sock


def serve_processes(settings: Settings, processes: int, stop: threading.Event) -> int:
    """Run `processes` SCP processes on one port so parallel associations use every core.

    If one of them dies the others are stopped and a non-zero code returned: the
    supervisor (or systemd) restarts the whole group.
    """
    if settings.dicom_tls_enabled:
        tls.server_context(settings)  # a bad certificate stops us here, not in each child
    if processes <= 1:
        serve(settings, stop)
        return 0

    context = multiprocessing.get_context("spawn")
    slots = AssociationSlots(settings.dicom_max_associations)
    board = LoadBoard(processes)
    listeners = [bound_socket(settings.bind, settings.dicom_port)]
    if settings.dicom_tls_enabled:
        listeners.append(bound_socket(settings.bind, settings.dicom_tls_port))
    children = [
        context.Process(
            target=serve_shared_port, args=(slots, board, n, listeners), name=f"dicom-{n}"
        )
        for n in range(processes)
    ]
    for child in children:
        child.start()
    log.info(
        "started %d DICOM SCP processes on port %s%s",
        processes,
        settings.dicom_port,
        f" and TLS port {settings.dicom_tls_port}" if settings.dicom_tls_enabled else "",
    )
    code = 0
    while not stop.wait(0.5):
        dead = [c for c in children if not c.is_alive()]
        if dead:
            log.error("DICOM SCP process %s exited with %s", dead[0].pid, dead[0].exitcode)
            code = 1
            break
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
    for listener in listeners:
        listener.close()
    return code
