"""DICOM attribute matching (PS3.4 C.2.2.2) turned into Django `Q` objects.

One function per rule, chosen by the VR of the attribute:

- universal matching (C.2.2.2.3): an empty value, or `*`, adds no condition;
- single value matching (C.2.2.2.1): equality; IS/US and the other integer VRs compare
  as numbers;
- list of UID matching (C.2.2.2.2): `uid1\\uid2` is `IN (...)`;
- wild card matching (C.2.2.2.4): `*` and `?` for AE, CS, LO, LT, PN, SH, ST, UC, UR
  and UT only — anywhere else they are literal characters. They become GLOB on SQLite
  (case-sensitive, and its index optimisation works on ordinary indexes) and LIKE
  elsewhere, with the other pattern characters escaped;
- range matching (C.2.2.2.5): `A-B`, `A-`, `-B` for DA, TM and DT; with combined
  date-time matching (C.2.2.2.5.2) a StudyDate/StudyTime pair of ranges of the same form
  is matched as one date-time range. An empty value never matches a range;
- sequence matching (C.2.2.2.6) is not supported: `condition` raises
  `UnsupportedMatching`, and callers treat the key as a return key.

Values arrive as Python `str`, already decoded from the request's character set, and
the index holds unicode, so matching compares unicode with unicode.

Person names (VR PN) are matched case-insensitively by default, against an upper-cased
search column kept by ingest (`person_name_key`). A wildcard spans the `^` component
delimiters. A query without `=` is matched against the alphabetic component group; if it
holds characters of the scripts written in the other groups (U+1100 and up: Hangul, kana,
CJK) it is also matched against the ideographic and phonetic groups, so `山田^太郎` finds
`Yamada^Tarou=山田^太郎=やまだ^たろう` (such a query cannot use an index; `Müller*` still
does). Fuzzy matching (QIDO's `fuzzymatching=true`) matches the name anywhere in the
stored value.

Multi-valued index columns (ModalitiesInStudy stored as `CT\\MR`) match when any one
stored value matches. A multi-valued key on other VRs (`CT\\MR`) matches when any of its
values matches (PS3.4 C.2.2.2.8 leaves this undefined without extended negotiation; we
read it as a list, like list of UID matching). Wildcards in a key matched against a
multi-valued column may match across a value boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import Lookup, Q

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
INTEGER_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
UNMATCHABLE_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN", "AT"})

# Upper bounds of partial date/time values: "1015" as a range end means up to 10:15:59.999999.
_RANGE_END = {"DA": "99999999", "TM": "999999.999999", "DT": "99999999999999.999999"}

# From here on (Hangul Jamo, kana, CJK) names may be in the ideographic/phonetic groups.
IDEOGRAPHIC_SCRIPTS = 0x1100

# A condition that no row satisfies (Django answers it without asking the database).
NOTHING = Q(pk__in=[])


class UnsupportedMatching(ValueError):
    """The key cannot be matched here (e.g. a sequence, PS3.4 C.2.2.2.6)."""


@dataclass(frozen=True)
class Column:
    """Where an attribute is held: an ORM path, its VR, and how it is stored."""

    path: str
    vr: str
    # Upper-cased `person_name_key` column for case-insensitive PN matching.
    search_path: str | None = None
    # Backslash-separated values in one column (ModalitiesInStudy, SOPClassesInStudy).
    multi_valued: bool = False


@dataclass(frozen=True)
class Options:
    case_insensitive_names: bool = True
    fuzzy: bool = False


DEFAULT_OPTIONS = Options()


def can_match(vr: str) -> bool:
    return vr not in UNMATCHABLE_VRS


def condition(column: Column, value: str, options: Options = DEFAULT_OPTIONS) -> Q | None:
    """The condition for one key (None: universal matching, no condition at all)."""
    if not can_match(column.vr):
        raise UnsupportedMatching(f"no matching for VR {column.vr}")
    items = [item.strip() for item in value.split("\\")]
    items = [item for item in items if item]
    if not items:
        return None
    if column.vr == "UI":
        if "*" in items:
            return None
        if column.multi_valued:
            return _any(_contains(column.path, uid, wildcard=False) for uid in items)
        return (
            Q(**{column.path: items[0]}) if len(items) == 1 else Q(**{f"{column.path}__in": items})
        )
    return _any(_single(column, item, options) for item in items)


def _single(column: Column, value: str, options: Options) -> Q | None:
    vr = column.vr
    if value == "*":
        return None
    if vr in RANGE_VRS and _is_range(vr, value):
        low, high = _bounds(vr, value)
        return _range(column.path, low, high)
    if vr in INTEGER_VRS:
        try:
            return Q(**{column.path: int(value)})
        except ValueError:
            return NOTHING
    if vr in DECIMAL_VRS:
        try:
            return Q(**{column.path: float(value)})
        except ValueError:
            return NOTHING
    if vr == "PN":
        return _person_name(column, value, options)
    wildcard = vr in WILDCARD_VRS and _has_wildcard(value)
    if column.multi_valued:
        return _contains(column.path, value, wildcard=wildcard)
    return _match(column.path, value, wildcard=wildcard)


def combined_date_time(date: Column, time: Column, date_value: str, time_value: str) -> Q | None:
    """PS3.4 C.2.2.2.5.2: a date range and a time range of the same form as one range.

    `20200105-20200107` with `1000-1800` means from 5 Jan 10:00 to 7 Jan 18:00, not
    10:00-18:00 on each day. None when the pair does not qualify (then each is matched
    on its own).
    """
    date_value, time_value = date_value.strip(), time_value.strip()
    if "\\" in date_value + time_value:
        return None
    if not (_is_range("DA", date_value) and _is_range("TM", time_value)):
        return None
    date_low, date_high = _bounds("DA", date_value)
    time_low, time_high = _bounds("TM", time_value)
    if bool(date_low) != bool(time_low) or bool(date_high) != bool(time_high):
        return None
    d, t = date.path, time.path
    q = Q(**{f"{d}__gt": ""})
    if date_low:
        q &= Q(**{f"{d}__gte": date_low}) & (
            Q(**{f"{d}__gt": date_low}) | Q(**{d: date_low, f"{t}__gte": time_low})
        )
    if date_high:
        q &= Q(**{f"{d}__lte": date_high}) & (
            Q(**{f"{d}__lt": date_high}) | Q(**{d: date_high, f"{t}__lte": time_high})
        )
    return q


def person_name_key(name: str, *, upper: bool = True) -> str:
    """A PN value as the search columns hold it: upper-cased, without trailing empty parts.

    `Doe^John^^^` and `DOE^JOHN` have the same key; so do `Doe^John=` and `Doe^John`.
    Ingest stores this for every PN search column and queries are normalised the same.
    """
    values = []
    for item in name.split("\\"):
        groups = [group.rstrip("^ ") for group in item.strip().split("=")]
        while groups and not groups[-1]:
            groups.pop()
        values.append("=".join(groups))
    key = "\\".join(values)
    return key.upper() if upper else key


def _person_name(column: Column, value: str, options: Options) -> Q | None:
    insensitive = column.search_path is not None and (
        options.case_insensitive_names or options.fuzzy
    )
    path = column.search_path if insensitive and column.search_path else column.path
    key = person_name_key(value, upper=insensitive)
    if not key.strip("*=^"):
        return None
    if options.fuzzy:
        return _match(path, f"*{key.strip('*')}*", wildcard=True)
    groups = key.split("=")
    if len(groups) == 1:
        q = _group_prefix(path, key)
        if any(ord(ch) >= IDEOGRAPHIC_SCRIPTS for ch in key):
            q |= _match(path, f"*={key}", wildcard=True)
            if not key.endswith("*"):
                q |= _match(path, f"*={key}=*", wildcard=True)
        return q
    pattern = "=".join(group or "*" for group in groups)
    if len(groups) < 3:
        return _group_prefix(path, pattern)
    return _match(path, pattern, wildcard=_has_wildcard(pattern))


def _group_prefix(path: str, pattern: str) -> Q:
    """`pattern` matches the leading component group(s), the rest of the value is free."""
    q = _match(path, pattern, wildcard=_has_wildcard(pattern))
    if not pattern.endswith("*"):
        q |= _match(path, f"{pattern}=*", wildcard=True)
    return q


def _contains(path: str, value: str, *, wildcard: bool) -> Q:
    """One of the backslash-separated values stored in `path` matches `value`."""
    return (
        _match(path, value, wildcard=wildcard)
        | _match(path, f"{value}\\*", wildcard=True)
        | _match(path, f"*\\{value}", wildcard=True)
        | _match(path, f"*\\{value}\\*", wildcard=True)
    )


def _match(path: str, value: str, wildcard: bool) -> Q:
    if wildcard:
        return Q(**{f"{path}__{DicomWildcard.lookup_name}": value})
    return Q(**{path: value})


def _range(path: str, low: str, high: str) -> Q:
    q = Q(**{f"{path}__gte": low}) if low else Q(**{f"{path}__gt": ""})
    if high:
        q &= Q(**{f"{path}__lte": high})
    return q


def _is_range(vr: str, value: str) -> bool:
    # A DT may carry a negative UTC offset (`...-0500`): only one hyphen makes a range.
    return value.count("-") == 1 if vr == "DT" else "-" in value


def _bounds(vr: str, value: str) -> tuple[str, str]:
    """Range ends; a partial upper end covers its whole period (`-1015` → up to 10:15:59)."""
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    if high:
        end = _RANGE_END[vr]
        high = high + end[len(high) :] if len(high) < len(end) else high
    return low, high


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _any(conditions: Iterable[Q | None]) -> Q | None:
    """OR of the conditions; None (universal) if any of them is universal."""
    result = NOTHING
    for q in conditions:
        if q is None:
            return None
        result = q if result is NOTHING else result | q
    return result


def like_pattern(pattern: str) -> str:
    """A DICOM pattern (`*`, `?` wildcards, all else literal) as SQL LIKE with `\\` escapes."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_pattern(pattern: str) -> str:
    """A DICOM pattern as SQLite GLOB: same wildcards; `[` is the only other special."""
    return pattern.replace("[", "[[]")


@models.CharField.register_lookup
@models.TextField.register_lookup
class DicomWildcard(Lookup):
    """`column__dicom_wildcard="DOE^*"`: wild card matching, case-sensitive on every backend.

    SQLite's LIKE ignores ASCII case and cannot use an ordinary index; GLOB does both
    right. PostgreSQL's LIKE is case-sensitive and uses the `varchar_pattern_ops`
    indexes for a literal prefix.
    """

    lookup_name = "dicom_wildcard"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[str | int, ...]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        if connection.vendor == "sqlite":
            operator, convert = "GLOB", glob_pattern
        else:
            operator, convert = "LIKE", like_pattern
        return f"{lhs} {operator} {rhs}", (*lhs_params, *(convert(str(p)) for p in rhs_params))
