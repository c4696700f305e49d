"""Checks around each incoming association that pynetdicom does not make itself.

- A limit on open associations shared by every SCP process and both ports: the extra one
  is rejected with A-ASSOCIATE-RJ rejected-transient, service-provider (presentation
  related), local-limit-exceeded (PS3.8 9.3.4, 7.1.1.9). pynetdicom counts only the
  associations of its own process.
- Optionally, a node's peer address must be one its host name resolves to; otherwise
  rejected-permanent, service-user, calling-AE-title-not-recognized (PS3.8 7.1.1.9).
- A DIMSE message whose command set cannot be decoded (garbage bytes, a length that
  is not its Command Group Length, an unknown Command Field, a missing Command Data Set
  Type...) ends the association with an A-ABORT, as pynetdicom does for other invalid
  messages, and leaves no spool file; pynetdicom would let the exception kill its
  reactor thread (and leak the spool file of a C-STORE). A well-formed C-STORE-RQ that
  lacks its UIDs is answered with a failure status by storefast.

`adopt` makes pynetdicom's objects of one new association these subclasses; they add
behaviour, no state pynetdicom would have to know about.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.db import connection
from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA

from noctispro.dimse import access
from noctispro.dimse.process import AssociationSlots, LoadBoard
from noctispro.dimse.reactor import EventDrivenAssociation
from noctispro.dimse.storefast import StoreFastDIMSE

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, reason/diagnostic), PS3.8 Table 9-21.
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


class PacsACSE(ACSE):
    def _negotiate_as_acceptor(self) -> None:
        rq = self.requestor.primitive
        assert rq is not None
        calling = str(rq.calling_ae_title).strip()
        where = f"{calling}@{self.requestor.address}"
        problem = access.peer_host_problem(calling, self.requestor.address)
        if problem:
            log.warning("association from %s rejected: %s", where, problem)
            self._reject(REJECT_CALLING_AE)
            return
        slots: AssociationSlots | None = getattr(self.assoc.ae, "association_slots", None)
        if slots is not None:
            if not slots.try_acquire():
                log.warning(
                    "association from %s rejected: %d associations open, the limit "
                    "(NOCTISPRO_DICOM_MAX_ASSOCIATIONS)",
                    where,
                    slots.limit,
                )
                self._reject(REJECT_LOCAL_LIMIT)
                return
            assert isinstance(self.assoc, PacsAssociation)
            self.assoc.slots = slots
        super()._negotiate_as_acceptor()

    def _reject(self, result_source_reason: tuple[int, int, int]) -> None:
        # What pynetdicom's own rejections do (acse.ACSE._negotiate_as_acceptor).
        self.send_reject(*result_source_reason)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()


class MalformedCommand(ValueError):
    pass


def check_command_length(command: bytes) -> None:
    """A command set starts with its Command Group Length, which counts every byte after it.

    PS3.7 6.3.1, E.1 (the element is mandatory). pydicom decodes a truncated command
    set leniently, so this is what tells a cut or padded one apart.
    """
    if len(command) < 12 or command[:8] != b"\x00\x00\x00\x00\x04\x00\x00\x00":
        raise MalformedCommand("the command set does not start with Command Group Length")
    declared = int.from_bytes(command[8:12], "little")
    if len(command) - 12 != declared:
        raise MalformedCommand(
            f"Command Group Length says {declared} bytes, {len(command) - 12} arrived"
        )


class PacsDIMSEServiceProvider(StoreFastDIMSE):
    def receive_primitive(self, primitive: P_DATA) -> None:
        try:
            self._check_commands(primitive)
            super().receive_primitive(primitive)
        except Exception as exc:
            self._abort_undecodable(exc)

    def receive_data_pdu(self, body: memoryview) -> None:
        try:
            super().receive_data_pdu(body)
        except Exception as exc:
            self._abort_undecodable(exc)

    def _abort_undecodable(self, exc: Exception) -> None:
        message, self.message = self.message, None
        discard_spool(message)
        self.discard_incoming()
        log.warning(
            "A-ABORT to %s: a DIMSE message that cannot be decoded (%s: %s)",
            self.assoc.requestor.ae_title,
            type(exc).__name__,
            exc,
        )
        # Evt19 "invalid PDU": the state machine sends A-ABORT (PS3.8 9.2, AA-8).
        self.dul.event_queue.put("Evt19")

    def _check_commands(self, primitive: P_DATA) -> None:
        pending: bytes | None = None
        for _, data in primitive.presentation_data_value_list:
            if data[0] & 1:  # a command fragment (PS3.8 E.2); data set fragments pass
                if pending is None:
                    pending = self._command_so_far()
                pending += data[1:]
                if data[0] & 2:  # the last one
                    check_command_length(pending)
                    pending = b""

    def _command_so_far(self) -> bytes:
        """The command fragments received before this P-DATA: pynetdicom's or storefast's."""
        if self.message is not None:
            return bytes(self.message.encoded_command_set.getvalue())
        return b"".join(data[1:] for _, data in self._command_pdvs)


def discard_spool(message: Any) -> bool:
    """Close and delete the spool file of a C-STORE message still being received."""
    spool = getattr(message, "_data_set_file", None)
    if spool is None:
        return False
    try:
        spool.close()
    finally:
        Path(spool.name).unlink(missing_ok=True)
    return True


class PacsAssociation(EventDrivenAssociation):
    #: The slot this association holds, given back when its thread ends.
    slots: AssociationSlots | None = None
    #: The load board of a group of SCP processes, told when this connection ends.
    board: LoadBoard | None = None

    def run(self) -> None:
        try:
            super().run()
        finally:
            slots, self.slots = self.slots, None
            if slots is not None:
                slots.release()
            board, self.board = self.board, None
            if board is not None:
                board.closed()
            # Every way out, rejections included, gives this thread's connection back.
            connection.close()


def adopt(assoc: Association) -> None:
    """Make a new acceptor association use the classes above (before it starts).

    Called after `reactor.make_event_driven`, whose classes these extend.
    """
    assert isinstance(assoc, EventDrivenAssociation)
    assert isinstance(assoc.dimse, StoreFastDIMSE)
    assoc.__class__ = PacsAssociation
    assoc.acse.__class__ = PacsACSE
    assoc.dimse.__class__ = PacsDIMSEServiceProvider
