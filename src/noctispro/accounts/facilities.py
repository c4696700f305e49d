"""Which facility an instance or a DICOM peer belongs to (DESIGN §3: a facility owns
the AE titles of its senders; unknown senders go to the default facility)."""

from __future__ import annotations

from noctispro.accounts.models import Facility, FacilityAETitle
from noctispro.conf import get_settings
from noctispro.core.ttlcache import TTLCache

_by_ae: TTLCache[Facility] = TTLCache(seconds=10.0)


def facility_for_ae(calling_ae_title: str) -> Facility:
    """The facility that owns a calling AE title, or the default facility (cached briefly)."""
    key = calling_ae_title.strip()

    def load() -> Facility:
        mapping = (
            FacilityAETitle.objects.select_related("facility").filter(ae_title=key).first()
            if key
            else None
        )
        return mapping.facility if mapping else default_facility()

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
