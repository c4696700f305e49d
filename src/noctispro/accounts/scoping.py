"""The one place that decides which studies a reader may see.

Every read of studies — FastAPI, Django and DIMSE — calls `scope_studies`. A reader
sees the studies of the facilities it belongs to; admins and users flagged
"all facilities" see all. Unknown readers see nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from django.db.models import Model, QuerySet

if TYPE_CHECKING:
    from noctispro.accounts.models import User
    from noctispro.index.models import Study

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Principal:
    """Who is reading: a user, or a DICOM peer acting for a facility."""

    label: str
    facility_ids: frozenset[int] | None  # None: every facility
    user_id: int | None = None

    def can_see_facility(self, facility_id: int) -> bool:
        return self.facility_ids is None or facility_id in self.facility_ids


NOBODY = Principal(label="nobody", facility_ids=frozenset())


def principal_for_user(user: User) -> Principal:
    if not user.is_active:
        return NOBODY
    if user.sees_all_facilities:
        return Principal(label=user.username, facility_ids=None, user_id=user.pk)
    ids = frozenset(user.facilities.values_list("pk", flat=True))
    return Principal(label=user.username, facility_ids=ids, user_id=user.pk)


def principal_for_ae(calling_ae_title: str) -> Principal:
    """A DICOM peer reads as the facility its instances are filed under: the one that
    owns its AE title, else the default facility (whether it may query at all is
    dimse/access.py's decision)."""
    from noctispro.accounts.facilities import facility_for_ae

    facility = facility_for_ae(calling_ae_title)
    return Principal(label=f"AE {calling_ae_title.strip()}", facility_ids=frozenset({facility.pk}))


def scope_studies(principal: Principal, studies: QuerySet[Study] | None = None) -> QuerySet[Study]:
    from noctispro.index.models import Study

    return scope_to_facilities(principal, Study.objects.all() if studies is None else studies)


def scope_to_facilities(principal: Principal, rows: QuerySet[M]) -> QuerySet[M]:
    """Rows with a `facility` the principal belongs to (studies, orders, ...)."""
    if principal.facility_ids is None:
        return rows
    if not principal.facility_ids:
        return rows.none()
    return rows.filter(facility_id__in=principal.facility_ids)
