"""An instance as DICOM JSON (PS3.18 F.2) with bulk data left out, and that bulk data.

What WADO-RS metadata serves (PS3.18 10.4): every attribute of the data set (not the
file meta), with binary values (VR OB, OD, OF, OL, OV, OW, UN) longer than `inline_max`
bytes replaced by a "BulkDataURI" (F.2.6) and shorter ones as "InlineBinary" (F.2.7).
Core knows nothing of URLs: the URI written here is the element's tag path alone
(`7FE00010`, `00540016/0/00181072`: tag, item index, tag, ...); the adapter prefixes it
with the instance's bulkdata URL when it serves the JSON (`BULK_DATA_URI_MARKER`).

The file is read with pydicom deferring values over `inline_max`, so pixel data is
never loaded to make metadata; `bulk_data` later finds such a value's offset in the
stored file so it can be streamed from storage. Available Transfer Syntax UID
(0008,3002) is added: the syntax the instance is stored (and served) in.
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from noctispro.core.dicomfile import DEFLATED_TRANSFER_SYNTAXES, EXPLICIT_VR_BIG_ENDIAN

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Bytes per word of the binary VRs, for byte-swapping big endian bulk data.
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# In orjson's output this byte string can only start a BulkDataURI value: a `"` inside
# a string value is always escaped.
BULK_DATA_URI_MARKER = b'"BulkDataURI":"'
AVAILABLE_TRANSFER_SYNTAX_UID = "00083002"
UNDEFINED_LENGTH = 0xFFFFFFFF


class NoSuchBulkData(LookupError):
    """The tag path names no binary element of the instance."""


class EncapsulatedBulkData(ValueError):
    """Encapsulated (compressed) pixel data: served as frames, not as one octet stream."""


@dataclass(frozen=True)
class BulkData:
    """A binary value: where it is in the stored file (`offset`), or the bytes themselves."""

    vr: str
    length: int
    offset: int | None = None
    value: bytes | None = None


def _read(fp: BinaryIO, inline_max: int, transfer_syntax_uid: str) -> tuple[Dataset, bool]:
    """The data set, values over `inline_max` deferred when they can be read back in place
    (not in a deflated data set, whose offsets are those of the inflated bytes)."""
    in_place = transfer_syntax_uid not in DEFLATED_TRANSFER_SYNTAXES
    fp.seek(0)
    ds = dcmread(fp, force=True, defer_size=inline_max if in_place else None)
    return ds, in_place


def _vr_of(raw: DataElement | RawDataElement) -> str:
    """The element's VR; for implicit VR (None) the dictionary's, ambiguity settled."""
    vr = raw.VR
    if not vr:
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return "UN"
    vr = str(vr)
    if " or " in vr:
        options = vr.split(" or ")
        # Implicit VR little endian pixel data and the like are OW (PS3.5 A.1, 8.1.2).
        return "OW" if "OW" in options else options[0]
    return vr


def instance_json(fp: BinaryIO, *, inline_max: int, transfer_syntax_uid: str) -> bytes:
    """The data set of the stored file `fp` as DICOM JSON bytes, bulk data by tag path."""
    ds, _ = _read(fp, inline_max, transfer_syntax_uid)
    body = _dataset_json(ds, fp, (), inline_max)
    if transfer_syntax_uid:
        body[AVAILABLE_TRANSFER_SYNTAX_UID] = {"vr": "UI", "Value": [transfer_syntax_uid]}
    return orjson.dumps(dict(sorted(body.items())))


def _dataset_json(
    ds: Dataset, fp: BinaryIO, path: tuple[str, ...], inline_max: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        tag = BaseTag(tag)
        if tag.element == 0 or (not path and tag.group == 0x0002):
            continue  # group lengths (retired) and file meta are not data set attributes
        raw = ds.get_item(tag, keep_deferred=True)
        key = f"{tag:08X}"
        here = (*path, key)
        vr = _vr_of(raw)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            if vr in BINARY_VRS:
                out[key] = {"vr": vr, "BulkDataURI": "/".join(here)}
                continue
            # A long text deferred by the reader: read it back in place.
            fp.seek(raw.value_tell)
            ds._dict[tag] = raw._replace(value=fp.read(raw.length))
        out[key] = _element_json(ds, tag, fp, here, inline_max)
    return out


def _element_json(
    ds: Dataset, tag: BaseTag, fp: BinaryIO, here: tuple[str, ...], inline_max: int
) -> dict[str, Any]:
    raw = ds.get_item(tag, keep_deferred=True)
    try:
        elem = ds[tag]
    except Exception:
        return _unreadable(raw)
    vr = _vr_of(elem)
    if vr == "SQ":
        items = [
            _dataset_json(item, fp, (*here, str(n)), inline_max)
            for n, item in enumerate(elem.value)
        ]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    if vr in BINARY_VRS:
        value = _binary_value(elem)
        if not value:
            return {"vr": vr}
        if len(value) > inline_max:
            return {"vr": vr, "BulkDataURI": "/".join(here)}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    try:
        result = elem.to_json_dict(None, 0)
    except Exception:
        return _unreadable(raw)
    if vr in ("IS", "DS") and any(isinstance(v, str) for v in result.get("Value", [])):
        return _unreadable(raw)  # "1A" is no number: F.2.3 wants JSON numbers here
    result["vr"] = vr
    return dict(result)


def _binary_value(elem: DataElement) -> bytes:
    value = elem.value
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list):  # encapsulated fragments as read by some paths
        return b"".join(bytes(v) for v in value)
    return bytes(value)


def _unreadable(raw: DataElement | RawDataElement | None) -> dict[str, Any]:
    """A value pydicom cannot convert (a malformed number, say): its bytes, as UN."""
    value = getattr(raw, "value", None)
    if isinstance(raw, RawDataElement) and isinstance(value, bytes) and value:
        return {"vr": "UN", "InlineBinary": base64.b64encode(value).decode("ascii")}
    return {"vr": "UN"}


def parse_tag_path(path: str) -> tuple[int | str, ...]:
    """`00540016/0/00181072` → (tag, item, tag); ValueError when it is not one."""
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or len(parts) % 2 == 0:
        raise ValueError("a tag path is tag[/item/tag]...")
    out: list[int | str] = []
    for n, part in enumerate(parts):
        if n % 2 == 0:
            if len(part) != 8:
                raise ValueError(f"not a tag: {part[:16]}")
            out.append(int(part, 16))
        else:
            if not part.isdigit():
                raise ValueError(f"not an item index: {part[:16]}")
            out.append(part)
    return tuple(out)


def bulk_data(fp: BinaryIO, path: str, *, inline_max: int, transfer_syntax_uid: str) -> BulkData:
    """The binary value at `path` in the stored file `fp`.

    Top-level values are located in the file so they can be streamed; values inside
    sequences (small, read with their item) come as bytes. Octet streams are little
    endian (PS3.18 8.7.3.3.2), so big endian words are swapped.
    """
    steps = parse_tag_path(path)
    ds, in_place = _read(fp, inline_max, transfer_syntax_uid)
    big_endian = transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN
    current = ds
    for n in range(0, len(steps) - 1, 2):
        tag, index = int(steps[n]), int(steps[n + 1])
        elem = current.get(tag)
        if elem is None or elem.VR != "SQ" or index >= len(elem.value):
            raise NoSuchBulkData(path)
        current = elem.value[index]
    tag = int(steps[-1])
    raw = current.get_item(tag, keep_deferred=True)
    if raw is None:
        raise NoSuchBulkData(path)
    vr = _vr_of(raw)
    if vr not in BINARY_VRS:
        raise NoSuchBulkData(path)
    if isinstance(raw, RawDataElement) and raw.length == UNDEFINED_LENGTH:
        raise EncapsulatedBulkData(path)
    if isinstance(raw, DataElement) and raw.is_undefined_length:
        raise EncapsulatedBulkData(path)
    if (
        isinstance(raw, RawDataElement)
        and raw.value is None
        and in_place
        and len(steps) == 1
        and not (big_endian and vr in _WORD)
    ):
        return BulkData(vr, raw.length, offset=raw.value_tell)
    value = _binary_value(current[tag])
    if big_endian and vr in _WORD:
        value = _swap(value, _WORD[vr])
    return BulkData(vr, len(value), value=value)


def _swap(value: bytes, width: int) -> bytes:
    import numpy as np

    dtype = {2: "u2", 4: "u4", 8: "u8"}[width]
    usable = len(value) - len(value) % width
    words = np.frombuffer(value[:usable], dtype=">" + dtype)
    order = "<" if sys.byteorder == "little" else ">"
    return words.astype(order + dtype).tobytes() + value[usable:]
