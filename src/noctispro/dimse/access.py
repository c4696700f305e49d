"""Who may talk to our SCP, and what each peer may ask (PS3.15 leaves this to us).

- A remote node (`noctispro nodes add`) may do what its allowed operations say.
- A sender AE title of a facility (`facilities add --ae`) that is not a node may store.
- Any other calling AE title is "unknown": its association is rejected (A-ASSOCIATE-RJ,
  calling AE not recognised) unless NOCTISPRO_DICOM_ACCEPT_UNKNOWN is on (the default
  in development, off in production). With it on, every peer that is not a node may
  also store and query (unknown ones: the default facility).
- With NOCTISPRO_DICOM_CHECK_PEER_HOST on, a node associates only from an address its
  host resolves to (facility senders and unknown peers have no host to check).
Answers are cached for a few seconds so a busy association does not query per message.
"""

from __future__ import annotations

import ipaddress
import socket
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
_node_hosts: TTLCache[str | None] = TTLCache(seconds=5.0)
_addresses: TTLCache[frozenset[str] | str] = TTLCache(seconds=30.0)


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


def peer_host_problem(calling_ae_title: str, peer_ip: str) -> str | None:
    """Why a node may not associate from `peer_ip` (None: it may, or no check is made)."""
    if not get_settings().dicom_check_peer_host:
        return None
    key = calling_ae_title.strip()
    host = _node_hosts.get(
        key, lambda: RemoteNode.objects.filter(ae_title=key).values_list("host", flat=True).first()
    )
    if host is None:
        return None
    addresses = _addresses.get(host, lambda: _resolve(host))
    if isinstance(addresses, str):
        return f"node host {host!r} does not resolve ({addresses})"
    if _normal(peer_ip) not in addresses:
        known = ", ".join(sorted(addresses))
        return f"peer address {peer_ip} is not one of node host {host!r} ({known})"
    return None


def _resolve(host: str) -> frozenset[str] | str:
    """The addresses of a host name (or literal), or the resolver's error."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return str(exc)
    return frozenset(_normal(str(info[4][0])) for info in infos)


def _normal(ip: str) -> str:
    """One spelling per address: an IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def forget() -> None:
    _rights.clear()
    _node_hosts.clear()
    _addresses.clear()
