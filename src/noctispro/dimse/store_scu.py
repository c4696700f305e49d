"""The one C-STORE SCU: sends stored instances exactly as they are stored.

Used by C-MOVE sub-operations (to a node), C-GET sub-operations (back on the
requestor's association) and "send to node" jobs. A stored file is streamed from disk
after its file meta (pynetdicom's chunked send), never decoded, when the peer accepted
its transfer syntax. Presentation contexts (PS3.7 D.3.3.4, PS3.8 9.3.2.2) are built from
the SOP classes and stored transfer syntaxes of what will be sent: one context per
stored syntax, and for little-endian uncompressed data one more offering Explicit and
Implicit VR Little Endian, between which pydicom converts losslessly when the peer took
only the other one. An instance whose syntax the peer accepted in no form fails;
nothing is decompressed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext

from noctispro import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctispro.conf import get_settings
from noctispro.dimse import fastpath, tls
from noctispro.storage import get_blob_store

if TYPE_CHECKING:
    from noctispro.accounts.models import RemoteNode

log = logging.getLogger(__name__)

# `send_c_store(path)` streams the data set from the file instead of decoding it.
_config.STORE_SEND_CHUNKED_DATASET = True

LITTLE_ENDIAN_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: Presentation context IDs are odd numbers 1-255 (PS3.8 9.3.2.2).
MAX_CONTEXTS = 128
#: Connecting to a node waits at most this long; transfers use the DIMSE timeout.
CONNECT_TIMEOUT_SECONDS = 10.0

# Storage statuses (PS3.4 B.2.3, PS3.7 C): warnings; anything else not 0x0000 fails.
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class Outgoing:
    """One stored instance to send."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    storage_key: str


@dataclass(frozen=True)
class Sent:
    """The outcome of one C-STORE sub-operation."""

    status: int | None  # the peer's status; None when no response came or nothing was sent
    detail: str = ""

    @property
    def outcome(self) -> str:
        """`completed`, `warning` or `failed` (PS3.4 C.4.2.1.5 counts)."""
        if self.status == 0x0000:
            return "completed"
        if self.status in WARNING_STATUSES:
            return "warning"
        return "failed"


class AssociationFailed(Exception):
    """No association to the peer: refused, unreachable, rejected, or not attempted."""


def presentation_contexts(items: Iterable[Outgoing]) -> list[PresentationContext]:
    """Contexts for sending `items`; AssociationFailed if they need more than 128.

    Each (SOP class, stored syntax) gets a context with that syntax alone, so an
    acceptor that prefers another cannot make us re-encode what it could take as is;
    little-endian uncompressed classes get one more context offering both LE syntaxes.
    """
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for item in items:
        wanted[(item.sop_class_uid, (item.transfer_syntax_uid,))] = None
        if UID(item.transfer_syntax_uid) in LITTLE_ENDIAN_UNCOMPRESSED:
            wanted[(item.sop_class_uid, LITTLE_ENDIAN_UNCOMPRESSED)] = None
    if len(wanted) > MAX_CONTEXTS:
        raise AssociationFailed(
            f"{len(wanted)} SOP class and transfer syntax combinations need more than "
            f"{MAX_CONTEXTS} presentation contexts; send fewer series at a time"
        )
    return [build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in wanted]


def associate(
    node: RemoteNode,
    contexts: list[PresentationContext],
    *,
    calling_ae: str,
    max_pdu: int,
    timeout: float,
) -> Association:
    """An established association to `node` for sending, or AssociationFailed saying why.

    Over DICOM TLS when the node is marked `tls` (dimse/tls.py).
    """
    try:
        tls_args = tls.tls_args(node, get_settings())
    except tls.TLSSetupError as exc:
        raise AssociationFailed(f"node {node.name}: {exc}; nothing sent") from exc
    ae = AE(ae_title=calling_ae)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.connection_timeout = min(timeout, CONNECT_TIMEOUT_SECONDS)
    ae.acse_timeout = min(timeout, 30)
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.maximum_pdu_size = max_pdu
    where = f"{node.ae_title}@{node.host}:{node.port}"

    def on_open(event: evt.Event) -> None:
        from noctispro.dimse.server import set_nodelay  # server imports this module

        set_nodelay(event.assoc.dul.socket.socket if event.assoc.dul.socket else None)

    try:
        assoc = ae.associate(
            node.host,
            node.port,
            contexts=contexts,
            ae_title=node.ae_title,
            max_pdu=max_pdu,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
            tls_args=tls_args,
        )
    except OSError as exc:  # the host name does not resolve
        raise AssociationFailed(f"cannot reach {where}: {exc}") from exc
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        why = f"{rsp.result_str}, {rsp.source_str}: {rsp.reason_str}" if rsp else "no reason"
        raise AssociationFailed(f"{where} rejected the association ({why})")
    if not assoc.is_established:
        raise AssociationFailed(f"no association with {where} (refused, unreachable or aborted)")
    if not assoc.accepted_contexts:
        assoc.release()
        raise AssociationFailed(f"{where} accepted none of the proposed presentation contexts")
    return assoc


@contextmanager
def stored_file(storage_key: str) -> Iterator[Path]:
    """A local path of a stored blob: the file itself on disk stores, else a temp copy."""
    store = get_blob_store()
    local = getattr(store, "local_path", None)
    if local is not None:
        yield local(storage_key)
        return
    with tempfile.NamedTemporaryFile(suffix=".dcm") as tmp, store.open(storage_key) as src:
        shutil.copyfileobj(src, tmp)
        tmp.flush()
        yield Path(tmp.name)


class InstanceSender:
    """Sends stored instances on an established association, one C-STORE at a time.

    `assoc` is ours (to a node) or, for C-GET, the requestor's, whose storage contexts
    give us the SCU role (SCP/SCU role selection, PS3.7 D.3.3.4).
    """

    def __init__(
        self,
        assoc: Association,
        *,
        originator_ae: str | None = None,
        originator_message_id: int | None = None,
        first_message_id: int = 1,
    ) -> None:
        self.assoc = assoc
        self.originator_ae = originator_ae
        self.originator_message_id = originator_message_id
        self._message_id = first_message_id
        # (SOP class, transfer syntax) accepted with us as SCU -> its context ID.
        self._accepted: dict[tuple[str, str], int] = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])): int(cx.context_id or 0)
            for cx in assoc.accepted_contexts
            if cx.as_scu
        }

    def _next_message_id(self) -> int:
        message_id = self._message_id
        self._message_id = message_id % 65535 + 1
        return message_id

    def send(self, item: Outgoing) -> Sent:
        """C-STORE one instance; never raises for a failed sub-operation."""
        if not self.assoc.is_established:
            return Sent(None, "the association has ended")
        stored = UID(item.transfer_syntax_uid)
        if (item.sop_class_uid, stored) in self._accepted:
            convert_to = None
        else:
            alternatives = [
                ts
                for ts in LITTLE_ENDIAN_UNCOMPRESSED
                if stored in LITTLE_ENDIAN_UNCOMPRESSED
                and (item.sop_class_uid, ts) in self._accepted
            ]
            if not alternatives:
                return Sent(
                    None,
                    f"the peer accepted {item.sop_class_uid} in no syntax this instance "
                    f"can be sent in (stored as {stored}); it is not decompressed",
                )
            convert_to = alternatives[0]
        try:
            with stored_file(item.storage_key) as path:
                if convert_to is None:
                    offset = dataset_offset(path)
                    if offset is not None:
                        context_id = self._accepted[(item.sop_class_uid, stored)]
                        return self._send_as_stored(item, context_id, path, offset)
                dataset: Any = path
                if convert_to is not None:
                    # Between Explicit and Implicit VR Little Endian: pynetdicom re-encodes.
                    dataset = dcmread(path)
                rsp = self.assoc.send_c_store(
                    dataset,
                    msg_id=self._next_message_id(),
                    originator_aet=self.originator_ae,
                    originator_id=self.originator_message_id,
                )
        except FileNotFoundError:
            log.error("stored file of %s is missing (%s)", item.sop_instance_uid, item.storage_key)
            return Sent(None, "the stored file is missing")
        except Exception as exc:  # pynetdicom raises for encoding and context problems
            log.warning("C-STORE of %s failed: %s", item.sop_instance_uid, exc)
            return Sent(None, f"C-STORE failed: {exc}")
        if "Status" not in rsp:
            return Sent(None, "no C-STORE response (timeout or abort)")
        status = int(rsp.Status)
        comment = str(rsp.get("ErrorComment", "") or "")
        return Sent(status, comment)

    def _send_as_stored(self, item: Outgoing, context_id: int, path: Path, offset: int) -> Sent:
        """C-STORE the data set of a stored file as it is: command set encoded by hand,
        the file streamed after its file meta (`dimse.fastpath`), the response awaited
        as pynetdicom's `send_c_store` does (its reactor paused meanwhile)."""
        assoc = self.assoc
        max_pdu = assoc.dimse.maximum_pdu_size
        command = fastpath.encode_c_store_rq_fields(
            sop_class_uid=item.sop_class_uid,
            sop_instance_uid=item.sop_instance_uid,
            message_id=self._next_message_id(),
            originator_ae=self.originator_ae or "",
            originator_message_id=self.originator_message_id,
        )
        data = fastpath.file_chunks(path, offset, max_pdu - fastpath.PDV_HEADER if max_pdu else 0)
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        sent = 0
        try:
            try:
                for pdata in fastpath.message_pdatas(context_id, max_pdu, command, data):
                    assoc.dul.send_pdu(pdata)
                    sent += 1
            except OSError as exc:
                log.error("C-STORE of %s broke off: %s", item.sop_instance_uid, exc)
                if sent:  # part of the message is out: the association cannot go on
                    assoc.abort()
                return Sent(None, f"the stored file could not be read: {exc}")
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        if rsp is None:
            assoc._handle_no_response()
            return Sent(None, "no C-STORE response (timeout or abort)")
        if not isinstance(rsp, C_STORE) or not rsp.is_valid_response:
            assoc.abort()
            return Sent(None, "an invalid response to the C-STORE")
        return Sent(int(rsp.Status or 0), str(rsp.ErrorComment or ""))


def dataset_offset(path: Path) -> int | None:
    """Where the data set starts in a stored file (after the preamble and our file meta,
    whose group length comes first, PS3.10 7.1); None for a file not laid out so."""
    with open(path, "rb") as f:
        head = f.read(144)
    if len(head) < 144 or head[128:140] != b"DICM\x02\x00\x00\x00UL\x04\x00":
        return None
    return 144 + int.from_bytes(head[140:144], "little")


@dataclass
class SendReport:
    """What a send did: per-outcome counts and the SOP Instance UIDs that failed."""

    total: int
    completed: int = 0
    warning: int = 0
    failed: int = 0
    failed_sop_instance_uids: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # "0x0000" -> count
    error: str = ""  # why nothing (more) could be sent, if so

    def add(self, item: Outgoing, sent: Sent) -> None:
        outcome = sent.outcome
        if outcome == "completed":
            self.completed += 1
        elif outcome == "warning":
            self.warning += 1
        else:
            self.failed += 1
            self.failed_sop_instance_uids.append(item.sop_instance_uid)
        key = "none" if sent.status is None else f"0x{sent.status:04X}"
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def fail_rest(self, items: Iterable[Outgoing], reason: str) -> None:
        for item in items:
            self.add(item, Sent(None, reason))
        self.error = self.error or reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "completed": self.completed,
            "warning": self.warning,
            "failed": self.failed,
            "failed_sop_instance_uids": self.failed_sop_instance_uids,
            "statuses": self.statuses,
            "error": self.error,
        }


def send_to_node(
    node: RemoteNode,
    items: list[Outgoing],
    *,
    calling_ae: str,
    max_pdu: int,
    timeout: float,
    progress: Callable[[SendReport], None] | None = None,
) -> SendReport:
    """C-STORE `items` to `node` on one association; every instance gets an outcome."""
    report = SendReport(total=len(items))
    if not items:
        return report
    try:
        assoc = associate(
            node,
            presentation_contexts(items),
            calling_ae=calling_ae,
            max_pdu=max_pdu,
            timeout=timeout,
        )
    except AssociationFailed as exc:
        report.fail_rest(items, str(exc))
        return report
    sender = InstanceSender(assoc)
    try:
        for done, item in enumerate(items):
            if not assoc.is_established:
                report.fail_rest(items[done:], f"{node.name} ended the association")
                break
            report.add(item, sender.send(item))
            if progress is not None:
                progress(report)
    finally:
        if assoc.is_established:
            assoc.release()
    return report
