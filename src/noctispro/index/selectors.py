"""Reads from the index. Every study read starts from `scope_studies(principal)`."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, Q, QuerySet

from noctispro.accounts.scoping import Principal, scope_studies
from noctispro.index.models import Instance, Series, Study


@dataclass(frozen=True)
class StudyPage:
    studies: list[Study]
    next_cursor: str | None


def _parse_cursor(cursor: str | None) -> tuple[str, int] | None:
    if not cursor:
        return None
    date, _, pk = cursor.partition(":")
    if not pk.isdigit() or (date and not date.isdigit()):
        raise ValueError("bad cursor")
    return date, int(pk)


def study_page(
    principal: Principal, *, search: str = "", cursor: str | None = None, limit: int = 50
) -> StudyPage:
    """Newest studies first, keyset-paged on (study_date, id): page 2000 costs what page 1 does."""
    qs = scope_studies(principal).select_related("facility").order_by("-study_date", "-id")
    term = search.strip()
    if term:
        qs = qs.filter(
            Q(patient_name_search__contains=term.upper())
            | Q(patient_id=term)
            | Q(accession_number=term)
            | Q(study_instance_uid=term)
        )
    after = _parse_cursor(cursor)
    if after is not None:
        date, pk = after
        qs = qs.filter(Q(study_date__lt=date) | Q(study_date=date, id__lt=pk))
    rows = list(qs[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = f"{last.study_date}:{last.pk}"
    return StudyPage(rows, next_cursor)


def study_tree(principal: Principal, study_instance_uid: str) -> Study | None:
    """A visible study with its series and instances prefetched, in clinical order."""
    series = Series.objects.order_by("series_number", "id").prefetch_related(
        Prefetch(
            "instances",
            queryset=Instance.objects.select_related("source_user").order_by(
                "instance_number", "id"
            ),
        )
    )
    return (
        scope_studies(principal)
        .filter(study_instance_uid=study_instance_uid)
        .select_related("facility")
        .prefetch_related(Prefetch("series", queryset=series))
        .first()
    )


def visible_instances(principal: Principal) -> QuerySet[Instance]:
    return Instance.objects.filter(study__in=scope_studies(principal))


def get_instance(principal: Principal, sop_instance_uid: str) -> Instance | None:
    return (
        visible_instances(principal)
        .filter(sop_instance_uid=sop_instance_uid)
        .select_related("study", "series")
        .first()
    )
