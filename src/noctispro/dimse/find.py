"""C-FIND SCP for the Patient Root and Study Root Q/R FIND models (PS3.4 C.4.1).

A thin adapter: the identifier becomes an `index.query.Query` (filters: the keys with a
value; return keys: every key), `run_query` does the matching, and each match goes back
as a pending response holding exactly the requested keys (empty when the index does
not hold them, PS3.4 C.4.1.1.3.2), the Query/Retrieve Level, our Retrieve AE Title and,
when a value needs it, the Specific Character Set.

Hierarchical search (PS3.4 C.4.1.2.2.1): above the query level only unique keys may
carry a value, and no key below it may; anything else is refused with 0xA900 so the
caller learns why instead of getting a silently wrong answer. Empty keys anywhere are
return keys and are answered. Unique keys above the level are not required. Sequence
keys are not matched (C.2.2.2.6 is not supported); they come back empty.

Character sets: request values are decoded with the identifier's Specific Character Set
(the index holds unicode). Responses use the request's character set when it is a single
one that can encode every value, else ISO_IR 192 (UTF-8); all-ASCII responses carry
none ("shall not be included otherwise", C.4.1.1.3.2).

Speed: on the little endian transfer syntaxes a match is encoded straight to bytes
(`ResponseEncoder`), not built as a pydicom Dataset and written by pydicom
(about 1 ms per match here, most of a C-FIND's time once the index answers in tens of
milliseconds); anything it does not handle falls back to the Dataset.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from django.db import DatabaseError, close_old_connections
from pydicom.charset import convert_encodings, python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import PersonName
from pydicom.values import convert_PN, convert_text, convert_value
from pynetdicom import evt

from noctispro.accounts.models import Operation
from noctispro.accounts.scoping import principal_for_ae
from noctispro.conf import get_settings
from noctispro.dimse import access, statuses
from noctispro.dimse.fastpath import EncodedIdentifier
from noctispro.index.query import (
    DEPTH,
    UNIQUE_KEYS,
    InvalidQuery,
    Level,
    Query,
    attribute,
    run_query,
)

log = logging.getLogger(__name__)

Model = Literal["patient", "study"]
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
QR_FIND_MODELS: dict[str, tuple[Model, tuple[Level, ...]]] = {
    PATIENT_ROOT_FIND: ("patient", (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)),
    STUDY_ROOT_FIND: ("study", (Level.STUDY, Level.SERIES, Level.IMAGE)),
}

# C-FIND statuses (PS3.4 C.4.1.1.4).
PENDING = 0xFF00
CANCEL = 0xFE00
SOP_CLASS_NOT_SUPPORTED = 0x0122
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = statuses.DATA_SET_DOES_NOT_MATCH_SOP_CLASS  # 0xA900
UNABLE_TO_PROCESS = statuses.CANNOT_UNDERSTAND  # 0xC000

TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
BINARY_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
# Terms with code extensions (escape sequences): answered in UTF-8 rather than in them.
CODE_EXTENSIONS = "ISO 2022"
QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056

Response = tuple[int | Dataset, Dataset | None]


class BadIdentifier(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Key:
    """One element of a C-FIND request identifier, its value decoded to str."""

    tag: BaseTag
    keyword: str
    vr: str
    value: str  # "" for empty values and for sequences

    @property
    def is_sequence(self) -> bool:
        return self.vr == "SQ"


def handle_find(event: evt.Event) -> Iterator[Response]:
    """EVT_C_FIND: pending responses, one per match, then success (or a failure)."""
    close_old_connections()
    sop_class = str(event.request.AffectedSOPClassUID)
    model = QR_FIND_MODELS.get(sop_class)
    if model is None:
        yield _failure(SOP_CLASS_NOT_SUPPORTED, f"C-FIND of {sop_class} is not supported")
        return
    calling = str(event.assoc.requestor.ae_title).strip()
    if not access.rights_of(calling).allows(Operation.FIND):
        log.warning("C-FIND from %s refused: not allowed to query", calling)
        yield _failure(statuses.NOT_AUTHORIZED, "this AE title may not query here")
        return
    started = time.perf_counter()
    try:
        terms, keys = read_identifier(event.identifier)
        query = build_query(model[0], model[1], keys)
    except BadIdentifier as exc:
        log.warning("C-FIND from %s refused (0x%04X): %s", calling, exc.status, exc)
        yield _failure(exc.status, str(exc))
        return
    except Exception:
        log.exception("C-FIND from %s: the identifier cannot be decoded", calling)
        yield _failure(UNABLE_TO_PROCESS, "the identifier cannot be decoded")
        return
    ae_title = get_settings().ae_title
    implicit_vr = DIRECT_SYNTAXES.get(str(event.context.transfer_syntax))
    encoder = (
        None
        if implicit_vr is None
        else ResponseEncoder(keys, query.level, ae_title, terms, implicit_vr)
    )
    count = 0
    try:
        result = run_query(principal_for_ae(calling), query)
        if result.ignored:
            log.info("C-FIND from %s: not matched on %s", calling, ", ".join(result.ignored))
        for match in result.matches:
            if event.is_cancelled:
                yield CANCEL, None
                return
            count += 1
            yield PENDING, response(encoder, keys, match, query.level, ae_title, terms)
    except InvalidQuery as exc:
        yield _failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
        return
    except DatabaseError:
        log.exception("C-FIND from %s failed", calling)
        yield _failure(UNABLE_TO_PROCESS, "index unavailable")
        return
    log.debug(
        "C-FIND from %s at %s: %d matches in %.1f ms",
        calling,
        query.level,
        count,
        (time.perf_counter() - started) * 1000,
    )


def read_identifier(ds: Dataset) -> tuple[list[str], list[Key]]:
    """The character set terms and the keys of a request identifier, values as str.

    Values are decoded from the raw bytes (pydicom would refuse `*` in an IS, for one).
    """
    terms: list[str] = []
    keys: list[Key] = []
    charset = ds.get_item(SPECIFIC_CHARACTER_SET)
    if charset is not None:
        terms = [t.strip() for t in _raw_text(charset).split("\\")]
    try:
        encodings = convert_encodings(terms if any(terms) else None)
    except LookupError:
        log.warning("C-FIND with unknown Specific Character Set %r: decoded as ISO_IR 6", terms)
        encodings = convert_encodings(None)
    for elem in ds.elements():
        tag = BaseTag(elem.tag)
        if tag.group in (0x0000, 0x0002) or tag == SPECIFIC_CHARACTER_SET:
            continue
        vr = _vr(elem)
        keys.append(Key(tag, keyword_for_tag(tag), vr, _decode(elem, vr, encodings)))
    return terms, keys


def query_retrieve_level(levels: tuple[Level, ...], keys: list[Key]) -> Level:
    """The identifier's Query/Retrieve Level, which must be one of the model's."""
    level_key = next((k for k in keys if k.keyword == "QueryRetrieveLevel"), None)
    if level_key is None or not level_key.value:
        raise BadIdentifier(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "no QueryRetrieveLevel")
    level = next((lv for lv in levels if lv == level_key.value.upper()), None)
    if level is None:
        raise BadIdentifier(
            IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            f"QueryRetrieveLevel {level_key.value[:16]} not in this model",
        )
    return level


def build_query(model: Model, levels: tuple[Level, ...], keys: list[Key]) -> Query:
    """Check the identifier against the hierarchy (PS3.4 C.4.1.2.2.1) and make a Query."""
    level = query_retrieve_level(levels, keys)
    filters: dict[str, str] = {}
    for key in keys:
        if not key.keyword or key.keyword == "QueryRetrieveLevel":
            continue
        attr = attribute(key.keyword)
        if key.value and attr is not None:
            own = attr.level
            if model == "study" and own is Level.PATIENT:
                own = Level.STUDY  # the study root puts patient attributes on the study
            if DEPTH[own] > DEPTH[level]:
                raise BadIdentifier(
                    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                    f"{key.keyword} is below the {level} level",
                )
            if DEPTH[own] < DEPTH[level] and key.keyword != UNIQUE_KEYS[own]:
                raise BadIdentifier(
                    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                    f"{key.keyword} is above the {level} level, not a unique key",
                )
        if key.value and not key.is_sequence:
            filters[key.keyword] = key.value
    return Query(
        level=level,
        filters=filters,
        return_keys=tuple(k.keyword for k in keys if k.keyword),
        information_model=model,
        # NOCTISPRO_QUERY_CASE_INSENSITIVE_NAMES once Settings has it; on by default.
        case_insensitive_names=get_settings().query_case_insensitive_names,
    )


def response(
    encoder: ResponseEncoder | None,
    keys: list[Key],
    match: dict[str, object],
    level: Level,
    ae_title: str,
    terms: list[str],
) -> Dataset:
    """The response identifier, encoded directly when the transfer syntax allows."""
    if encoder is not None:
        encoded = encoder.encode(match)
        if encoded is not None:
            return EncodedIdentifier(encoded, implicit_vr=encoder.implicit_vr)
    return response_identifier(keys, match, level, ae_title, terms)


def response_identifier(
    keys: list[Key], match: dict[str, object], level: Level, ae_title: str, terms: list[str]
) -> Dataset:
    """The requested keys with the match's values (empty where it has none)."""
    ds = Dataset()
    texts: list[str] = []
    for key in keys:
        value: Any
        if key.tag == QUERY_RETRIEVE_LEVEL:
            value = str(level)
        elif key.is_sequence:
            value = []
        elif key.tag == RETRIEVE_AE_TITLE:
            value = ae_title
        elif key.tag == INSTANCE_AVAILABILITY:
            value = "ONLINE"
        else:
            value = match.get(key.keyword) if key.keyword else None
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(value)
        ds.add(DataElement(key.tag, key.vr, value))
    ds.QueryRetrieveLevel = str(level)
    ds.RetrieveAETitle = ae_title
    charset = response_charset(texts, terms)
    if charset:
        ds.SpecificCharacterSet = charset
    return ds


def encode_response_identifier(
    keys: list[Key],
    match: dict[str, object],
    level: Level,
    ae_title: str,
    terms: list[str],
    implicit_vr: bool,
) -> bytes | None:
    """`response_identifier` as bytes; see ResponseEncoder."""
    return ResponseEncoder(keys, level, ae_title, terms, implicit_vr).encode(match)


class ResponseEncoder:
    """Writes `response_identifier` as bytes in (implicit or explicit VR) little endian.

    The same elements and values as the Dataset, written as pydicom writes them (PS3.5
    7.1: ascending tags, even lengths, UI padded with NUL, other text with a space).
    The element layout is worked out once per query; `encode` returns None for a value
    of a kind it leaves to pydicom (then the Dataset is used).
    """

    def __init__(
        self, keys: list[Key], level: Level, ae_title: str, terms: list[str], implicit_vr: bool
    ) -> None:
        self.implicit_vr = implicit_vr
        self.terms = terms
        # tag -> (VR, constant value, match keyword or None)
        items: dict[int, tuple[str, Any, str | None]] = {}
        for key in keys:
            if key.tag == QUERY_RETRIEVE_LEVEL:
                items[int(key.tag)] = (key.vr, str(level), None)
            elif key.is_sequence:
                items[int(key.tag)] = (key.vr, None, None)
            elif key.tag == RETRIEVE_AE_TITLE:
                items[int(key.tag)] = (key.vr, ae_title, None)
            elif key.tag == INSTANCE_AVAILABILITY:
                items[int(key.tag)] = (key.vr, "ONLINE", None)
            else:
                items[int(key.tag)] = (key.vr, None, key.keyword or None)
        items[QUERY_RETRIEVE_LEVEL] = ("CS", str(level), None)
        items[RETRIEVE_AE_TITLE] = ("AE", ae_title, None)
        self.valid = True
        self.layout: list[tuple[bytes, str, Any, str | None]] = []
        self.charset_at = 0
        for tag in sorted(items):
            vr, constant, keyword = items[tag]
            prefix = _element_prefix(tag, vr, implicit_vr)
            if prefix is None:
                self.valid = False
                return
            if tag < SPECIFIC_CHARACTER_SET:
                self.charset_at += 1
            self.layout.append((prefix, vr, constant, keyword))
        self.constant_texts = [c for _, _, c, _ in self.layout if isinstance(c, str)]

    def encode(self, match: dict[str, object]) -> bytes | None:
        if not self.valid:
            return None
        values = [match.get(kw) if kw else constant for _, _, constant, kw in self.layout]
        codec = "ascii"
        charset = None
        if not all(_ascii(v) for v in values):
            texts = list(self.constant_texts)
            for v in values:
                if isinstance(v, str):
                    texts.append(v)
                elif isinstance(v, list):
                    texts.extend(v)
            charset = response_charset(texts, self.terms)
            if charset:
                codec = python_encoding.get(charset, "ascii")
        out = []
        for i, ((prefix, vr, _, _), value) in enumerate(zip(self.layout, values, strict=True)):
            if i == self.charset_at and charset:
                out.append(_charset_element(charset, self.implicit_vr))
            raw = _value_bytes(vr, value, codec)
            if raw is None:
                return None
            length = len(raw)
            if self.implicit_vr or vr in LONG_LENGTH_VRS:
                out.append(prefix + struct.pack("<I", length))
            elif length > 0xFFFF:
                return None
            else:
                out.append(prefix + struct.pack("<H", length))
            out.append(raw)
        if charset and self.charset_at == len(self.layout):
            out.append(_charset_element(charset, self.implicit_vr))
        return b"".join(out)


def _ascii(value: object) -> bool:
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, list):
        return all(not isinstance(v, str) or v.isascii() for v in value)
    return True


def _charset_element(charset: str, implicit_vr: bool) -> bytes:
    raw = _value_bytes("CS", charset, "ascii") or b""
    prefix = _element_prefix(SPECIFIC_CHARACTER_SET, "CS", implicit_vr) or b""
    return prefix + struct.pack("<I" if implicit_vr else "<H", len(raw)) + raw


DIRECT_SYNTAXES: dict[str, bool] = {ImplicitVRLittleEndian: True, ExplicitVRLittleEndian: False}
# Explicit VR with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
PACKED = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "UV": "<Q", "SV": "<q"}
# Text VRs whose values are written in the Specific Character Set; the rest are ASCII.
CHARSET_VRS = frozenset({"PN", "SH", "LO", "ST", "LT", "UT", "UC"})


def _value_bytes(vr: str, value: Any, codec: str) -> bytes | None:
    kind = type(value)
    if kind is str:
        if not value:
            return b""
        if vr in PACKED:
            return None
        text = value
    elif value is None:
        return b""
    elif vr in PACKED:
        values = value if kind is list else [value]
        if not all(type(v) is int for v in values):
            return None
        try:
            return b"".join(struct.pack(PACKED[vr], v) for v in values)
        except struct.error:
            return None
    elif kind is int:
        text = str(value)
    elif kind is list and all(type(v) in (str, int) for v in value):
        text = "\\".join(str(v) for v in value)
    else:
        return None
    try:
        raw = text.encode(codec if vr in CHARSET_VRS else "ascii")
    except UnicodeEncodeError:
        return None
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "
    return raw


def _element_prefix(tag: int, vr: str, implicit_vr: bool) -> bytes | None:
    """Tag (and VR) of an element header, without its length (PS3.5 7.1.2, 7.1.3)."""
    group, element = tag >> 16, tag & 0xFFFF
    if implicit_vr:
        return struct.pack("<HH", group, element)
    if len(vr) != 2 or not vr.isascii():
        return None
    if vr in LONG_LENGTH_VRS:
        return struct.pack("<HH2s2x", group, element, vr.encode("ascii"))
    return struct.pack("<HH2s", group, element, vr.encode("ascii"))


def response_charset(texts: list[str], terms: list[str]) -> str | None:
    """None when every value is ASCII; the request's set if it encodes them all; else UTF-8."""
    if all(t.isascii() for t in texts):
        return None
    if len(terms) == 1 and terms[0] and not terms[0].startswith(CODE_EXTENSIONS):
        codec = python_encoding.get(terms[0])
        if codec:
            try:
                for text in texts:
                    text.encode(codec)
            except UnicodeEncodeError:
                pass
            else:
                return terms[0]
    return "ISO_IR 192"


def _vr(elem: DataElement | RawDataElement) -> str:
    if elem.tag == QUERY_RETRIEVE_LEVEL:
        return "CS"
    attr = attribute(keyword_for_tag(elem.tag))
    if attr is not None:
        return attr.vr
    vr = elem.VR
    if not vr or vr == "UN":
        try:
            vr = dictionary_VR(elem.tag)
        except KeyError:
            return "UN"
    return str(vr).split(" or ")[0]


def _decode(elem: DataElement | RawDataElement, vr: str, encodings: list[str]) -> str:
    if vr == "SQ":
        return ""
    if isinstance(elem, DataElement):
        value = elem.value
        if value is None or value == "":
            return ""
        if isinstance(value, MultiValue | list):
            return "\\".join(str(v) for v in value)
        return str(value).strip()
    raw = elem.value
    if not raw:
        return ""
    if vr == "PN":
        names = convert_PN(raw, encodings)
        text = str(names) if isinstance(names, PersonName) else "\\".join(map(str, names))
    elif vr in TEXT_VRS:
        decoded = convert_text(raw, encodings, vr)
        text = decoded if isinstance(decoded, str) else "\\".join(decoded)
    elif vr in BINARY_NUMBER_VRS:
        number = convert_value(vr, elem)
        text = str(number) if isinstance(number, int | float) else "\\".join(map(str, number))
    elif vr in {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}:
        return ""
    else:
        text = raw.decode("ascii", "replace")
    return text.replace("\x00", "").strip()


def _raw_text(elem: DataElement | RawDataElement) -> str:
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").replace("\x00", "").strip()
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value or "").strip()


def _failure(status: int, message: str) -> Response:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = statuses.error_comment(message)
    return ds, None
