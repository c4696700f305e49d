"""QIDO-RS: Search Transaction (PS3.18 10.6) over `index.query`, the query C-FIND uses.

Query parameters (PS3.18 8.3.4): `{attributeID}={value}` with a keyword or a tag
(`PatientName=DOE*`, `00100010=DOE*`); values are percent-decoded by the framework and
matched as C-FIND matches them (PS3.4 C.2.2.2: wildcards, ranges, UID lists — UIDs
separated by commas or backslashes). An empty value asks for the attribute without
matching on it. `includefield` (repeated or comma-separated, or `all`), `limit` and
`offset` (pushed into SQL), `fuzzymatching=true` (person names match anywhere in the
stored value, `matching`). Attributes in sequences (`00400275.00321060`) cannot be
matched: they are ignored and named in a `Warning` header, like filters on attributes
the index does not hold, and include fields it cannot return.

Results: DICOM JSON (F.2), the default attributes of Tables 10.6.3-3/4/5 the index
holds (and the study's, for series and instances searched outside a study), plus the
matched and included ones, RetrieveURL and InstanceAvailability. `X-Total-Count`
carries every match, whatever the page. No match: 204 No Content (8.3.4.4.1, as the
standard reads today; CP-2473 would make it 200 with an empty array).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response, status
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.conf import get_settings
from noctispro.dicomweb import dicomjson
from noctispro.dicomweb.media import DICOM_JSON, parse_accept
from noctispro.index.query import (
    DEPTH,
    NEVER_MATCHED,
    InvalidQuery,
    Level,
    Query,
    attribute,
    index_keywords,
    run_query,
)

router = APIRouter(route_class=DjangoRoute, tags=["dicomweb"])

RESERVED = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
TAG = re.compile(r"[0-9A-Fa-f]{8}")
# Defaults of PS3.18 Tables 10.6.3-3, -4 and -5 (what the index does not hold is left out).
DEFAULTS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    ),
    Level.IMAGE: (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
    ),
}
JSON_TYPES = (DICOM_JSON, "application/json")


@dataclass
class Search:
    query: Query
    include: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    # A filter excludes the UID of the path itself: nothing can match.
    nothing: bool = False


def attribute_keyword(attribute_id: str) -> str | None:
    """The keyword of a QIDO attribute ID (keyword or tag); None for a sequence path."""
    if "." in attribute_id:
        return None
    if TAG.fullmatch(attribute_id):
        keyword = keyword_for_tag(int(attribute_id, 16))
    else:
        keyword = attribute_id if tag_for_keyword(attribute_id) is not None else ""
    if not keyword:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"unknown attribute {attribute_id[:64]}")
    return keyword


def _number(name: str, value: str) -> int:
    if not value.isdigit():
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{name} must be a non-negative integer, not {value[:32]}"
        )
    return int(value)


def parse_search(
    level: Level, params: list[tuple[str, str]], fixed: dict[str, str], outside: Level | None
) -> Search:
    """The Query of a QIDO-RS request at `level`.

    `fixed`: the UIDs of the path. `outside`: the highest level not fixed by the path,
    whose default attributes are returned too (a series search outside a study returns
    the study's attributes, PS3.18 Table 10.6.3-4).
    """
    settings = get_settings()
    filters: dict[str, str] = {}
    include: list[str] = []
    warnings: list[str] = []
    not_matched: list[str] = []
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in params:
        if not name:
            continue  # "?&includefield=..." (Weasis)
        key = name.lower()
        if key == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item.lower() == "all":
                    include.extend(index_keywords(level))
                elif item:
                    keyword = attribute_keyword(item)
                    if keyword is None:
                        not_matched.append(item)
                    else:
                        include.append(keyword)
        elif key == "limit":
            limit = _number("limit", value)
        elif key == "offset":
            offset = _number("offset", value)
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise HTTPException(status.HTTP_400_BAD_REQUEST, "fuzzymatching is true or false")
            fuzzy = value.lower() == "true"
        else:
            keyword = attribute_keyword(name)
            if keyword is None:
                not_matched.append(name)
                continue
            include.append(keyword)
            if not value:
                continue
            attr = attribute(keyword)
            if attr is not None and attr.vr == "UI":
                value = value.replace(",", "\\")
            if keyword in filters and filters[keyword] != value:
                filters[keyword] = f"{filters[keyword]}\\{value}"
            else:
                filters[keyword] = value
    nothing = False
    for keyword, uid in fixed.items():
        if keyword in filters and uid not in filters[keyword].split("\\"):
            nothing = True
        filters[keyword] = uid
    defaults = [
        kw for lv, kws in DEFAULTS.items() for kw in kws if outside and DEPTH[outside] <= DEPTH[lv]
    ]
    defaults = [kw for kw in defaults if DEPTH[attribute(kw).level] <= DEPTH[level]]  # type: ignore[union-attr]
    wanted = list(dict.fromkeys([*defaults, *include]))
    held = [kw for kw in wanted if _returnable(kw, level)]
    missing = [kw for kw in wanted if kw not in held and kw not in NEVER_MATCHED]
    if missing:
        warnings.append("not held in the index, not returned: " + ", ".join(missing[:20]))
    if not_matched:
        warnings.append("sequence attributes are not matched: " + ", ".join(not_matched[:20]))
    cap = settings.qido_max_results
    query = Query(
        level=level,
        filters=filters,
        return_keys=tuple(held),
        case_insensitive_names=settings.query_case_insensitive_names,
        fuzzy=fuzzy,
        limit=cap if limit is None else min(limit, cap),
        offset=offset,
    )
    if limit is not None and limit > cap:
        warnings.append(f"limit lowered to the maximum of {cap}")
    return Search(query, tuple(held), warnings, nothing)


def _returnable(keyword: str, level: Level) -> bool:
    attr = attribute(keyword)
    return attr is not None and DEPTH[attr.level] <= DEPTH[level]


def warning_header(texts: list[str]) -> str:
    """RFC 7234 5.5 Warning values with code 299 (PS3.18 8.3.4.4); printable ASCII only,
    since the texts may quote the request."""
    clean = ("".join(c if " " <= c <= "~" and c != '"' else "?" for c in t) for t in texts)
    return ", ".join(f'299 noctispro "{t}"' for t in clean)


def check_accept(request: Request) -> None:
    ranges = parse_accept(request.headers.get("accept"))
    if not any(r.matches(t) for r in ranges for t in JSON_TYPES):
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE, "search results are application/dicom+json"
        )


def base_url(request: Request) -> str:
    """The DICOMweb root for RetrieveURL and BulkDataURI: the configured one, else the one
    the client reached (a Host header without its port, as dicomweb-client sends it,
    needs the setting)."""
    configured = get_settings().dicomweb_base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/dicom-web"


def retrieve_url(base: str, match: dict[str, Any], level: Level) -> str:
    url = f"{base}/studies/{match['StudyInstanceUID']}"
    if level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{match['SeriesInstanceUID']}"
    if level is Level.IMAGE:
        url += f"/instances/{match['SOPInstanceUID']}"
    return url


def search(
    request: Request,
    caller: CallerDep,
    level: Level,
    fixed: dict[str, str] | None = None,
    outside: Level | None = None,
) -> Response:
    check_accept(request)
    found = parse_search(level, request.query_params.multi_items(), fixed or {}, outside)
    if found.nothing:
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"X-Total-Count": "0"})
    try:
        result = run_query(caller.principal, found.query)
        matches = list(result.matches)
        total = result.count()
    except InvalidQuery as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    warnings = list(found.warnings)
    if result.ignored:
        warnings.append("not matched (the index does not hold them): " + ", ".join(result.ignored))
    if found.query.offset + len(matches) < total and (
        found.query.limit is not None and len(matches) == found.query.limit
    ):
        warnings.append("there are additional results that can be requested (limit, offset)")
    headers = {"X-Total-Count": str(total)}
    if warnings:
        headers["Warning"] = warning_header(warnings)
    if not matches:
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
    base = base_url(request)
    body = []
    for match in matches:
        values = {
            kw: v for kw, v in match.items() if kw not in NEVER_MATCHED and kw in _keep(found)
        }
        item = dicomjson.attributes(values)
        item["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        item["00081190"] = {"vr": "UR", "Value": [retrieve_url(base, match, level)]}
        body.append(dict(sorted(item.items())))
    return Response(orjson.dumps(body), media_type=DICOM_JSON, headers=headers)


def _keep(found: Search) -> set[str]:
    keep = set(found.include)
    keep.update({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
    return keep


STUDY_UID = "StudyInstanceUID"
SERIES_UID = "SeriesInstanceUID"


@router.get("/studies", summary="QIDO-RS: search for studies", response_class=Response)
def search_studies(request: Request, caller: CallerDep) -> Response:
    return search(request, caller, Level.STUDY, outside=Level.STUDY)


@router.get("/series", summary="QIDO-RS: search for series", response_class=Response)
def search_series(request: Request, caller: CallerDep) -> Response:
    return search(request, caller, Level.SERIES, outside=Level.STUDY)


@router.get("/instances", summary="QIDO-RS: search for instances", response_class=Response)
def search_instances(request: Request, caller: CallerDep) -> Response:
    return search(request, caller, Level.IMAGE, outside=Level.STUDY)


@router.get(
    "/studies/{study}/series",
    summary="QIDO-RS: search for the series of a study",
    response_class=Response,
)
def search_study_series(study: str, request: Request, caller: CallerDep) -> Response:
    return search(request, caller, Level.SERIES, {STUDY_UID: study}, outside=Level.SERIES)


@router.get(
    "/studies/{study}/instances",
    summary="QIDO-RS: search for the instances of a study",
    response_class=Response,
)
def search_study_instances(study: str, request: Request, caller: CallerDep) -> Response:
    return search(request, caller, Level.IMAGE, {STUDY_UID: study}, outside=Level.SERIES)


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="QIDO-RS: search for the instances of a series",
    response_class=Response,
)
def search_series_instances(
    study: str, series: str, request: Request, caller: CallerDep
) -> Response:
    return search(
        request, caller, Level.IMAGE, {STUDY_UID: study, SERIES_UID: series}, outside=Level.IMAGE
    )
