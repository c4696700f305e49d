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

from dataclasses import dataclass

from noctispro.accounts.models import FacilityAETitle, Operation, RemoteNode
from noctispro.conf import get_settings
from noctispro.core.ttlcache import TTLCache


@dataclass(frozen=True)
class PeerRights:
    known: bool
    operations: frozenset[str]

    def allows(self, operation: Operation) -> bool:
        return operation.value in self.operations


_rights: TTLCache[PeerRights] = TTLCache(seconds=5.0)


def rights_of(calling_ae_title: str) -> PeerRights:
    key = calling_ae_title.strip()
    return _rights.get(key, lambda: _load_rights(key))


def _load_rights(key: str) -> PeerRights:
    open_door = (
        frozenset({Operation.STORE.value, Operation.FIND.value})
        if get_settings().dicom_accept_unknown
        else frozenset()
    )
    node = RemoteNode.objects.filter(ae_title=key).first()
    if node is not None:  # configured on purpose: exactly its operations
        return PeerRights(True, frozenset(op.value for op in Operation if node.allows(op)))
    if FacilityAETitle.objects.filter(ae_title=key).exists():
        return PeerRights(True, open_door | {Operation.STORE.value})
    return PeerRights(False, open_door)


def known_ae_titles() -> list[str]:
    """Every AE title allowed to associate (nodes and facility senders)."""
    nodes = RemoteNode.objects.values_list("ae_title", flat=True)
    senders = FacilityAETitle.objects.values_list("ae_title", flat=True)
    return sorted({*nodes, *senders})


def forget() -> None:
    _rights.clear()
