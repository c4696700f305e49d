"""Who may talk to our SCP, and what each peer may ask (PS3.15 leaves this to us).

- A remote node (`noctispro nodes add`) may do what its allowed operations say.
- A sender AE title of a facility (`facilities add --ae`) that is not a node may store.
- Any other calling AE title is "unknown": its association is rejected (A-ASSOCIATE-RJ,
  calling AE not recognised) unless NOCTISPRO_DICOM_ACCEPT_UNKNOWN is on (the default
  in development, off in production). With it on, every peer that is not a node may
  also store and query (unknown ones: the default facility).
Answers are cached for a few seconds so a busy association does not query per message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from noctispro.accounts.models import FacilityAETitle, Operation, RemoteNode
from noctispro.conf import get_settings

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class PeerRights:
    known: bool
    operations: frozenset[str]

    def allows(self, operation: Operation) -> bool:
        return operation.value in self.operations


_cache: dict[str, tuple[float, PeerRights]] = {}
_lock = threading.Lock()


def rights_of(calling_ae_title: str) -> PeerRights:
    key = calling_ae_title.strip()
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    open_door = (
        frozenset({Operation.STORE.value, Operation.FIND.value})
        if get_settings().dicom_accept_unknown
        else frozenset()
    )
    node = RemoteNode.objects.filter(ae_title=key).first()
    if node is not None:  # configured on purpose: exactly its operations
        rights = PeerRights(True, frozenset(op.value for op in Operation if node.allows(op)))
    elif FacilityAETitle.objects.filter(ae_title=key).exists():
        rights = PeerRights(True, open_door | {Operation.STORE.value})
    else:
        rights = PeerRights(False, open_door)
    with _lock:
        _cache[key] = (now, rights)
    return rights


def known_ae_titles() -> list[str]:
    """Every AE title allowed to associate (nodes and facility senders)."""
    nodes = RemoteNode.objects.values_list("ae_title", flat=True)
    senders = FacilityAETitle.objects.values_list("ae_title", flat=True)
    return sorted({*nodes, *senders})


def forget() -> None:
    with _lock:
        _cache.clear()
