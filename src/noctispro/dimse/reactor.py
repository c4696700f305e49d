"""Event-driven reactors for pynetdicom 3.0 associations.

pynetdicom runs two polling loops per association: the DUL thread naps 1 ms whenever
it finds nothing to do, and the acceptor's reactor naps 1 ms before each look at the
DIMSE queue. A C-STORE waits out up to three such naps (DUL reads the first PDU,
reactor picks the message up, DUL sends the response): 1.5-3 ms per instance here,
as long as storing it. These subclasses wait instead — the DUL in `select()` on the
socket and a wake-up socket that `send_pdu` writes to, the reactor on an event the
DUL sets after each state machine action — so both threads run the moment there is
work, and sleep without burning CPU when there is none.

Everything else (state machine, timers, abort handling) is pynetdicom's. Waits are
bounded (`IDLE_WAIT`) so ARTIM and network timeouts, and kill flags set by other
threads, are seen within that time even if a wake-up were missed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from typing import Any

import pynetdicom.ae
import pynetdicom.association
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.utils import make_target

from noctispro.dimse import storefast

#: Longest a reactor waits without looking at its timers and flags (seconds).
IDLE_WAIT = 0.05
#: Largest PDU `_read_store_data` reads when the socket sets no limit of its own.
MAX_FAST_PDU = 1 << 20


class EventDrivenDUL(DULServiceProvider):
    """The DUL service provider, waiting in select() rather than napping."""

    _wake_recv: socket.socket
    _wake_send: socket.socket
    #: Set after every state machine action: the user side may have work.
    activity: threading.Event
    #: The body of the last P-DATA-TF PDU read by `_read_store_data`.
    _pdu_buffer: bytearray
    #: The state machine came back to Sta1: the transport connection has closed.
    transport_ended = False

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._add_wakeup()

    def _add_wakeup(self) -> None:
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self.activity = threading.Event()
        self._pdu_buffer = bytearray()
        # Thread.__init__ bound pynetdicom's loop as the target; run ours.
        self._target = make_target(self.run_reactor)

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """The next primitive for the ACSE, as pynetdicom's; a wait ends with the connection.

        pynetdicom's acceptor waits up to the ACSE timeout (30 s) for the
        A-ASSOCIATE-RQ even when the peer has closed the connection (a port probe, a
        health check), and so does a requestor for an answer: a thread and, in a group
        of SCP processes, a place on the load board for nothing. Here the wait ends
        (None, as on a timeout) once the transport connection has closed and nothing
        is left to read.
        """
        if not wait:
            return super().receive_pdu(wait, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = IDLE_WAIT
            if deadline is not None:
                step = min(step, max(0.0, deadline - time.monotonic()))
            primitive = super().receive_pdu(True, step)
            if primitive is not None:
                return primitive
            if self.transport_ended and self.to_user_queue.empty():
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def wake(self) -> None:
        """Make the DUL thread look at its queues now (any thread may call this)."""
        # OSError: closed (the thread ended), or the buffer is full (a wake is pending).
        with contextlib.suppress(OSError):
            self._wake_send.send(b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake()
        if threading.current_thread() is not self:
            self.join()
        return True

    def _read_pdu_data(self) -> None:
        if not self._read_store_data():
            super()._read_pdu_data()

    def _read_store_data(self) -> bool:
        """Read a P-DATA-TF PDU that continues a C-STORE data set; False: not one.

        Such a PDU changes nothing in the state machine (Sta6 + Evt10 → DT-2 → Sta6),
        so while storefast receives a data set (and no earlier event waits) its body is
        read into one reused buffer and its fragments go straight to the spool file
        (`StoreFastDIMSE.receive_data_pdu`). Anything else — another PDU type, a length
        past our limit, a TLS socket (no MSG_PEEK) — is left for pynetdicom to read.
        """
        dimse = self.assoc.dimse
        if not isinstance(dimse, storefast.StoreFastDIMSE) or dimse.incoming is None:
            return False
        if self.state_machine.current_state != "Sta6" or not self.event_queue.empty():
            return False
        transport = self.socket
        sock = transport.socket if transport is not None else None
        if sock is None or type(sock) is not socket.socket:
            return False
        try:
            header = sock.recv(6, socket.MSG_PEEK)
        except OSError:
            return False
        if len(header) < 6 or header[0] != 0x04:
            return False
        length = int.from_bytes(header[2:6], "big")
        if length > getattr(transport, "max_receive", MAX_FAST_PDU):
            return False
        sock.recv(6)
        if len(self._pdu_buffer) < length:
            self._pdu_buffer = bytearray(length)
        view = memoryview(self._pdu_buffer)[:length]
        received = 0
        try:
            while received < length:
                count = sock.recv_into(view[received:])
                if not count:
                    break
                received += count
        except OSError:
            pass
        if received < length:
            logging.getLogger("pynetdicom.dul").error(
                "Connection closed before the entire PDU was received"
            )
            self.event_queue.put("Evt17")  # transport connection closed
            return True
        dimse.receive_data_pdu(view)
        self.activity.set()  # a complete data set is now on the DIMSE queue
        return True

    def _wait_for_work(self) -> None:
        """Block until the peer sent data, a primitive was queued, or IDLE_WAIT passed."""
        watched: list[Any] = [self._wake_recv]
        transport = self.socket
        peer = transport.socket if transport is not None else None
        if peer is not None and transport is not None and transport._is_connected:
            pending = getattr(peer, "pending", None)  # TLS: decrypted bytes select can't see
            if pending is not None and pending():
                return
            watched.append(peer)
        try:
            select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):  # the peer socket was closed under us
            return
        with contextlib.suppress(OSError):
            while self._wake_recv.recv(4096):
                pass

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop, with `_wait_for_work` where it napped."""
        try:
            self._run()
        finally:
            self.activity.set()
            self._wake_send.close()
            self._wake_recv.close()

    def _run(self) -> None:
        self._idle_timer.start()
        assert self.socket is not None
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                self._abort_on_error()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait_for_work()
                continue
            self.state_machine.do_action(event)
            if self.state_machine.current_state == "Sta1":
                self.transport_ended = True  # Sta1 again: the connection is gone
            self.activity.set()

    def _abort_on_error(self) -> None:
        # As pynetdicom does: bypass the state machine, whose state is now unknown.
        logging.getLogger("pynetdicom.dul").exception("Exception in DUL, aborting association")
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        assert self.socket is not None
        self.socket.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class EventDrivenAssociation(Association):
    """An association whose reactor waits on the DUL's activity event, not in 1 ms naps."""

    dul: EventDrivenDUL

    def kill(self) -> None:
        super().kill()
        self.dul.activity.set()

    def _serve_request(self, msg: Any, context_id: int) -> None:
        if isinstance(msg, storefast.StoreRequest):
            if self._sent_release:
                msg.discard()
            else:
                storefast.serve(self, msg)
            return
        super()._serve_request(msg, context_id)

    def _run_reactor(self) -> None:
        """pynetdicom's loop (Association._run_reactor) without the nap."""
        try:
            self._react()
        finally:
            # Threads waiting to pause the reactor (release, send_*) must not wait on
            # one that has ended.
            self._is_paused = True

    def _react(self) -> None:
        from pynetdicom.association import LOGGER, evt

        activity = self.dul.activity
        self._is_paused = False
        while not self._kill:
            # "Paused" while waiting, as pynetdicom is while it naps: a thread that
            # wants the DIMSE queue (send_* on this association) may take it then.
            self._is_paused = True
            activity.wait(IDLE_WAIT)
            activity.clear()
            while not self._reactor_checkpoint.wait(IDLE_WAIT):
                # pynetdicom serves N-EVENT-REPORT requests in a thread of their own
                # whose `_serve_request` sets the flag False when it ends: say it again,
                # or the thread that paused us would wait for it forever.
                self._is_paused = True
            if self._kill:
                return
            self._is_paused = False
            # A thread may have paused us again between the wake-up and the line above
            # and seen us "paused": it owns the DIMSE queue now (pynetdicom's own loop
            # lacks this check, and then takes the other thread's response).
            if not self._reactor_checkpoint.is_set():
                continue

            while True:
                context_id, msg = self.dimse.get_msg(block=False)
                if not msg:
                    break
                self._serve_request(msg, int(context_id))  # type: ignore[arg-type]
                if self._kill or not self._reactor_checkpoint.is_set():
                    break

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.is_requestor and self.network_timeout_response == "A-RELEASE":
                    self.release()
                else:
                    self.abort()
                self.kill()
                return


def install() -> None:
    """Every association this process makes or accepts gets the event-driven reactors.

    pynetdicom creates the objects itself: requestors in `AE.associate` (the name
    `pynetdicom.ae.Association`), DUL providers in `Association.__init__` (the name
    `pynetdicom.association.DULServiceProvider`); acceptors are changed by
    `make_event_driven` when our request handler creates them.
    """
    pynetdicom.association.DULServiceProvider = EventDrivenDUL  # type: ignore[misc]
    pynetdicom.ae.Association = EventDrivenAssociation  # type: ignore[misc]


def make_event_driven(assoc: Association) -> None:
    """Turn a just-created acceptor (its DUL not started yet) into the event-driven kind.

    The subclass adds no state, so the instance changes class; its DUL is one already
    if `install` ran before it was made.
    """
    dul = assoc.dul
    assert not dul.is_alive()
    if not isinstance(dul, EventDrivenDUL):
        dul.__class__ = EventDrivenDUL
        assert isinstance(dul, EventDrivenDUL)
        dul._add_wakeup()
    assoc.__class__ = EventDrivenAssociation
    storefast.install(assoc)
