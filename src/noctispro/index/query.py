"""The one query: C-FIND and QIDO-RS build a `Query` and call `run_query` (DESIGN §5).

Levels and keys follow the Query/Retrieve information models (PS3.4 C.6.1 patient
root, C.6.2 study root); matching rules are in `matching` (PS3.4 C.2.2.2).

`run_query` is relational: a filter may name an attribute of any level. Attributes of
the query level and above filter the rows directly (patient attributes through their
copy on the study); those of lower levels ask for at least one matching child entity
(`EXISTS`). Adapters that speak hierarchical C-FIND check the identifier against the
hierarchy themselves (`dimse.find`).

Every read starts from `scope_studies(principal)`: a patient is visible only through a
study the principal may see, and the patient-level counts count only those studies.

Only what the index holds can be matched or returned. A key the index does not hold is
returned as None (empty) and, as a filter, ignored like an unsupported optional key —
it is listed in `QueryResult.ignored`. Files are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from django.db import models
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from noctispro.accounts.scoping import Principal, scope_studies
from noctispro.index import matching
from noctispro.index.models import Instance, Patient, Series


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}
CHILD = {Level.PATIENT: Level.STUDY, Level.STUDY: Level.SERIES, Level.SERIES: Level.IMAGE}
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
# Not matching keys (PS3.4 C.2.2.2: the character set is never matched).
NEVER_MATCHED = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


class InvalidQuery(ValueError):
    """The query cannot be run as asked (e.g. a PATIENT query in the study root model)."""


@dataclass(frozen=True)
class Query:
    """A protocol-neutral query.

    `filters` maps DICOM keywords to matching values in DICOM syntax as Python str
    (`DOE*`, `20200101-`, `1.2.3\\1.2.4`; "" is universal matching). `return_keys` are
    the keywords whose values the caller wants back. `combined_date_time`: match a
    StudyDate/StudyTime (or SeriesDate/SeriesTime) pair of ranges as one date-time
    range (PS3.4 C.2.2.2.5.2).
    """

    level: Level
    filters: Mapping[str, str] = field(default_factory=dict)
    return_keys: tuple[str, ...] = ()
    information_model: Literal["patient", "study"] = "study"
    case_insensitive_names: bool = True
    fuzzy: bool = False
    combined_date_time: bool = False
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Attribute:
    """An attribute the index holds, where it is held, and its information-model level."""

    keyword: str
    vr: str
    level: Level
    # Column on the model of `level` (Patient for patient attributes). None: computed.
    column: str | None
    # Patient attributes: the copy on Study that lower levels read.
    study_column: str | None = None
    # Upper-cased PN search column (same name on Patient and Study).
    search: str | None = None
    multi_valued: bool = False
    # Counts are return keys only (PS3.4 C.3.4).
    matchable: bool = True


_P, _S, _SE, _I = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE
ATTRIBUTES: dict[str, Attribute] = {
    a.keyword: a
    for a in [
        Attribute("PatientName", "PN", _P, "patient_name", "patient_name", "patient_name_search"),
        Attribute("PatientID", "LO", _P, "patient_id", "patient_id"),
        Attribute("IssuerOfPatientID", "LO", _P, "issuer_of_patient_id", "issuer_of_patient_id"),
        Attribute("PatientBirthDate", "DA", _P, "patient_birth_date", "patient_birth_date"),
        Attribute("PatientSex", "CS", _P, "patient_sex", "patient_sex"),
        Attribute("NumberOfPatientRelatedStudies", "IS", _P, None, matchable=False),
        Attribute("NumberOfPatientRelatedSeries", "IS", _P, None, matchable=False),
        Attribute("NumberOfPatientRelatedInstances", "IS", _P, None, matchable=False),
        Attribute("StudyInstanceUID", "UI", _S, "study_instance_uid"),
        Attribute("StudyDate", "DA", _S, "study_date"),
        Attribute("StudyTime", "TM", _S, "study_time"),
        Attribute("AccessionNumber", "SH", _S, "accession_number"),
        Attribute("StudyID", "SH", _S, "study_id"),
        Attribute("StudyDescription", "LO", _S, "study_description"),
        Attribute(
            "ReferringPhysicianName",
            "PN",
            _S,
            "referring_physician_name",
            search="referring_physician_name_search",
        ),
        Attribute("ModalitiesInStudy", "CS", _S, "modalities_in_study", multi_valued=True),
        Attribute("SOPClassesInStudy", "UI", _S, "sop_classes_in_study", multi_valued=True),
        Attribute("NumberOfStudyRelatedSeries", "IS", _S, "number_of_series", matchable=False),
        Attribute(
            "NumberOfStudyRelatedInstances", "IS", _S, "number_of_instances", matchable=False
        ),
        Attribute("SeriesInstanceUID", "UI", _SE, "series_instance_uid"),
        Attribute("Modality", "CS", _SE, "modality"),
        Attribute("SeriesNumber", "IS", _SE, "series_number"),
        Attribute("SeriesDescription", "LO", _SE, "series_description"),
        Attribute("BodyPartExamined", "CS", _SE, "body_part_examined"),
        Attribute("SeriesDate", "DA", _SE, "series_date"),
        Attribute("SeriesTime", "TM", _SE, "series_time"),
        Attribute(
            "NumberOfSeriesRelatedInstances", "IS", _SE, "number_of_instances", matchable=False
        ),
        Attribute("SOPInstanceUID", "UI", _I, "sop_instance_uid"),
        Attribute("SOPClassUID", "UI", _I, "sop_class_uid"),
        Attribute("InstanceNumber", "IS", _I, "instance_number"),
        Attribute("NumberOfFrames", "IS", _I, "number_of_frames"),
        Attribute("Rows", "US", _I, "rows"),
        Attribute("Columns", "US", _I, "columns"),
    ]
}
_PATIENT_COUNTS = {
    "NumberOfPatientRelatedStudies": None,
    "NumberOfPatientRelatedSeries": "number_of_series",
    "NumberOfPatientRelatedInstances": "number_of_instances",
}
_DATE_TIME_PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"))
# From a model of `level`, the ORM prefix that reaches the model of an attribute level.
_PREFIX = {
    (_S, _S): "",
    (_S, _SE): "study__",
    (_S, _I): "study__",
    (_SE, _SE): "",
    (_SE, _I): "series__",
    (_I, _I): "",
}


def attribute(keyword: str) -> Attribute | None:
    return ATTRIBUTES.get(keyword)


def index_keywords(level: Level) -> tuple[str, ...]:
    """Every keyword the index can return at `level` (for QIDO's `includefield=all`)."""
    return tuple(kw for kw, a in ATTRIBUTES.items() if DEPTH[a.level] <= DEPTH[level])


def _path(attr: Attribute, level: Level, column: str | None = None) -> str:
    """ORM path of an attribute (at or above `level`) from the model of `level`."""
    if attr.level is Level.PATIENT:
        if level is Level.PATIENT:
            return column or str(attr.column)
        return _PREFIX[(_S, level)] + (column or str(attr.study_column))
    return _PREFIX[(attr.level, level)] + (column or str(attr.column))


def _column(attr: Attribute, level: Level) -> matching.Column:
    return matching.Column(
        path=_path(attr, level),
        vr=attr.vr,
        search_path=_path(attr, level, attr.search) if attr.search else None,
        multi_valued=attr.multi_valued,
    )


@dataclass
class QueryResult:
    """Matches (lazily, in SQL order, limit/offset applied) and the total count."""

    _rows: QuerySet[Any, dict[str, Any]]
    _matching: QuerySet[Any]
    _plan: list[tuple[str, str | None, Callable[[Any], Any]]]
    ignored: tuple[str, ...] = ()

    @property
    def matches(self) -> Iterator[dict[str, object]]:
        plan = self._plan
        for row in self._rows.iterator(chunk_size=500):
            yield {kw: convert(row[key]) if key else None for kw, key, convert in plan}

    def count(self) -> int:
        """All matches, ignoring limit and offset (QIDO's X-Total-Count): one COUNT query."""
        return int(self._matching.count())


def run_query(principal: Principal, query: Query) -> QueryResult:
    """Run `query` over what `principal` may see."""
    level = Level(query.level)
    if level is Level.PATIENT and query.information_model != "patient":
        raise InvalidQuery("the study root information model has no PATIENT level")
    if query.offset < 0 or (query.limit is not None and query.limit < 0):
        raise InvalidQuery("limit and offset must not be negative")
    options, usable, ignored = _filters(query)
    matching_rows = _base(principal, level).filter(
        _where(principal, level, usable, options, query.combined_date_time)
    )
    plan, annotations = _selection(principal, level, query.return_keys)
    rows = (
        matching_rows.order_by(*_ORDER[level])
        .annotate(**annotations)
        .values(*{key for _, key, _ in plan if key})
    )
    end = None if query.limit is None else query.offset + query.limit
    if query.offset or end is not None:
        rows = rows[query.offset : end]
    return QueryResult(rows, matching_rows, plan, tuple(ignored))


def matching_instances(principal: Principal, query: Query) -> QuerySet[Instance]:
    """The instances under every entity `query` matches, in series and instance order.

    What a C-MOVE or C-GET retrieves (PS3.4 C.4.2.2, C.4.3.2: all composite instances
    below the matched entities): the same filters and scoping as `run_query`, applied
    relationally at the IMAGE level.
    """
    if Level(query.level) is Level.PATIENT and query.information_model != "patient":
        raise InvalidQuery("the study root information model has no PATIENT level")
    options, usable, _ = _filters(query)
    return (
        _base(principal, Level.IMAGE)
        .filter(_where(principal, Level.IMAGE, usable, options, query.combined_date_time))
        .order_by(*_ORDER[Level.IMAGE])
    )


def _filters(query: Query) -> tuple[matching.Options, list[tuple[Attribute, str]], list[str]]:
    """Matching options, the filters the index can match, and the keywords it cannot."""
    options = matching.Options(
        case_insensitive_names=query.case_insensitive_names, fuzzy=query.fuzzy
    )
    usable: list[tuple[Attribute, str]] = []
    ignored: list[str] = []
    for keyword, value in query.filters.items():
        attr = ATTRIBUTES.get(keyword)
        if keyword in NEVER_MATCHED or not value:
            continue
        if attr is None or not attr.matchable or not matching.can_match(attr.vr):
            ignored.append(keyword)
            continue
        usable.append((attr, value))
    return options, usable, ignored


def _base(principal: Principal, level: Level) -> QuerySet[Any]:
    studies = scope_studies(principal)
    if level is Level.PATIENT:
        return Patient.objects.filter(Exists(studies.filter(patient_record=OuterRef("pk"))))
    if level is Level.STUDY:
        return studies
    model: type[models.Model] = Series if level is Level.SERIES else Instance
    return model._default_manager.filter(Exists(studies.filter(pk=OuterRef("study_id"))))


def _children(principal: Principal, level: Level) -> QuerySet[Any]:
    """Entities of the level below `level` that belong to the outer row."""
    if level is Level.PATIENT:
        return scope_studies(principal).filter(patient_record=OuterRef("pk"))
    if level is Level.STUDY:
        return Series.objects.filter(study=OuterRef("pk"))
    return Instance.objects.filter(series=OuterRef("pk"))


def _where(
    principal: Principal,
    level: Level,
    items: list[tuple[Attribute, str]],
    options: matching.Options,
    combined: bool,
) -> Q:
    here = [(a, v) for a, v in items if DEPTH[a.level] <= DEPTH[level]]
    below = [(a, v) for a, v in items if DEPTH[a.level] > DEPTH[level]]
    q = Q()
    done: set[str] = set()
    if combined:
        values = {a.keyword: (a, v) for a, v in here}
        for date_kw, time_kw in _DATE_TIME_PAIRS:
            if date_kw in values and time_kw in values:
                (date, date_value), (time, time_value) = values[date_kw], values[time_kw]
                pair = matching.combined_date_time(
                    _column(date, level), _column(time, level), date_value, time_value
                )
                if pair is not None:
                    q &= pair
                    done |= {date_kw, time_kw}
    for attr, value in here:
        if attr.keyword not in done:
            condition = matching.condition(_column(attr, level), value, options)
            if condition is not None:
                q &= condition
    if below:
        child = CHILD[level]
        q &= Q(
            Exists(
                _children(principal, level).filter(
                    _where(principal, child, below, options, combined)
                )
            )
        )
    return q


def _text(value: Any) -> Any:
    return value or None


def _values(value: Any) -> list[str] | None:
    return value.split("\\") if value else None


def _same(value: Any) -> Any:
    return value


def _selection(
    principal: Principal, level: Level, return_keys: tuple[str, ...]
) -> tuple[list[tuple[str, str | None, Callable[[Any], Any]]], dict[str, Any]]:
    """What to select: (keyword, selected column or annotation, converter), annotations."""
    keys = [UNIQUE_KEYS[lv] for lv in Level if DEPTH[lv] <= DEPTH[level]]
    keys += [k for k in return_keys if k not in keys and k not in NEVER_MATCHED]
    plan: list[tuple[str, str | None, Callable[[Any], Any]]] = []
    annotations: dict[str, Any] = {}
    for keyword in keys:
        attr = ATTRIBUTES.get(keyword)
        if attr is None or DEPTH[attr.level] > DEPTH[level]:
            plan.append((keyword, None, _same))
        elif keyword in _PATIENT_COUNTS:
            name = f"_{keyword}"
            annotations[name] = _patient_count(principal, level, _PATIENT_COUNTS[keyword])
            plan.append((keyword, name, _same))
        elif attr.multi_valued:
            plan.append((keyword, _path(attr, level), _values))
        elif attr.vr in matching.INTEGER_VRS:
            plan.append((keyword, _path(attr, level), _same))
        else:
            plan.append((keyword, _path(attr, level), _text))
    if level is Level.PATIENT:
        annotations["_charset"] = Subquery(
            scope_studies(principal)
            .filter(patient_record=OuterRef("pk"))
            .order_by("-id")
            .values("specific_character_set")[:1]
        )
        plan.append(("SpecificCharacterSet", "_charset", _text))
    else:
        plan.append(
            ("SpecificCharacterSet", _PREFIX[(_S, level)] + "specific_character_set", _text)
        )
    return plan, annotations


def _patient_count(principal: Principal, level: Level, column: str | None) -> Coalesce:
    """Visible studies of the row's patient, or the sum of their kept series/instance counts."""
    outer = "pk" if level is Level.PATIENT else _PREFIX[(_S, level)] + "patient_record"
    studies = (
        scope_studies(principal)
        .filter(patient_record=OuterRef(outer))
        .order_by()
        .values("patient_record")
    )
    total = Count("pk") if column is None else Sum(column)
    return Coalesce(
        Subquery(studies.annotate(n=total).values("n")[:1]),
        0,
        output_field=models.IntegerField(),
    )


_ORDER: dict[Level, tuple[Any, ...]] = {
    Level.PATIENT: ("id",),
    Level.STUDY: ("-study_date", "-id"),
    Level.SERIES: ("study_id", F("series_number").asc(nulls_last=True), "id"),
    Level.IMAGE: ("series_id", F("instance_number").asc(nulls_last=True), "id"),
}
