"""Which facility an instance or a DICOM peer belongs to (DESIGN §3: a facility owns
the AE titles of its senders; unknown senders go to the default facility)."""

from __future__ import annotations

from noctispro.accounts.models import Facility, FacilityAETitle, RemoteNode, User
from noctispro.conf import get_settings
from noctispro.core.ttlcache import TTLCache

_by_ae: TTLCache[Facility] = TTLCache(seconds=10.0)


def facility_for_ae(calling_ae_title: str) -> Facility:
    """The facility that owns a calling AE title, else the facility of the remote node
    with that AE title, else the default facility (cached briefly).

    The node's facility matters for retrieves: what a node sends us in the C-STORE
    sub-operations of a C-MOVE we asked for is filed under the facility it acts for.
    (A node's facility never contradicts a sender mapping: `RemoteNode.clean`.)
    """
    key = calling_ae_title.strip()

    def load() -> Facility:
        if not key:
            return default_facility()
        mapping = FacilityAETitle.objects.select_related("facility").filter(ae_title=key).first()
        if mapping is not None:
            return mapping.facility
        node = RemoteNode.objects.select_related("facility").filter(ae_title=key).first()
        if node is not None and node.facility is not None:
            return node.facility
        return default_facility()

    return _by_ae.get(key, load)


def default_facility() -> Facility:
    facility = Facility.objects.filter(is_default=True).first()
    if facility is None:
        code = get_settings().default_facility
        facility, _ = Facility.objects.get_or_create(
            code=code, defaults={"name": "Default facility", "is_default": True}
        )
    return facility


def forget_cached_facilities() -> None:
    _by_ae.clear()


class FacilityChoiceError(ValueError):
    """The user may not file data there (`forbidden`), or must say where (several)."""

    def __init__(self, message: str, *, forbidden: bool) -> None:
        super().__init__(message)
        self.forbidden = forbidden


def writable_facilities(user: User) -> list[Facility]:
    """Facilities a user may file new data (uploads, orders) under, default first."""
    if user.sees_all_facilities:
        return list(Facility.objects.order_by("-is_default", "code")) or [default_facility()]
    return list(user.facilities.order_by("code"))


def choose_facility(user: User, code: str | None) -> Facility:
    """The facility named by `code`, or the only sensible one when none is named."""
    candidates = writable_facilities(user)
    if code:
        chosen = next((f for f in candidates if f.code == code), None)
        if chosen is None:
            raise FacilityChoiceError(f"you cannot write to facility {code!r}", forbidden=True)
        return chosen
    if not candidates:
        raise FacilityChoiceError("you belong to no facility", forbidden=True)
    if user.sees_all_facilities or len(candidates) == 1:
        return candidates[0]
    raise FacilityChoiceError(
        "you belong to several facilities: name one in `facility`", forbidden=False
    )
