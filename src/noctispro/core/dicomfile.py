"""Structural check of a DICOM file before anything trusts it (PS3.10 7, PS3.5 7).

`inspect_file` walks every element header of the file — file meta, data set, nested
sequences, encapsulated pixel data — checking that each declared length fits inside
its container and the file, and that sequences do not nest deeper than a bound. It
never reads a value it does not need, so a 4 GiB instance costs one pass over a few
hundred headers. pydicom is only asked to parse a file this walk has accepted; that
keeps malformed input from turning into a huge allocation or a RecursionError.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import BinaryIO

from pydicom.datadict import dictionary_VR

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_TRANSFER_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"}  # Deflated Explicit LE, JPIP Deflate
)

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITATION = 0xFFFEE00D
SEQUENCE_DELIMITATION = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
# VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
MAX_META_BYTES = 64 * 1024
MAX_META_VALUE = 1024
MAX_COLLECTED_VALUE = 4096


class Problem(StrEnum):
    """Why a file was refused; adapters map these to DIMSE statuses and HTTP errors."""

    NOT_DICOM = "not-dicom"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    TOO_DEEP = "too-deep"
    TOO_LARGE = "too-large"


class InvalidDicom(ValueError):
    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


@dataclass
class FileLayout:
    """Where the parts of a checked file are."""

    size: int
    dataset_offset: int
    transfer_syntax_uid: str
    has_file_meta: bool
    meta: dict[int, str] = field(default_factory=dict)
    max_sequence_depth: int = 0
    # Raw values of the requested top-level elements, as they are in the file.
    values: dict[int, bytes] = field(default_factory=dict)

    @property
    def is_little_endian(self) -> bool:
        return self.transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN

    @property
    def is_deflated(self) -> bool:
        return self.transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES


def inspect_file(
    fp: BinaryIO, *, max_bytes: int, max_depth: int, collect: frozenset[int] = frozenset()
) -> FileLayout:
    """Check the structure of the DICOM file in `fp` (seekable, positioned anywhere).

    The values of top-level elements whose tags are in `collect` (up to 4 KiB each) are
    kept in `layout.values`, so the index attributes come from this same pass.
    """
    size = fp.seek(0, os.SEEK_END)
    if size > max_bytes:
        raise InvalidDicom(
            Problem.TOO_LARGE, f"instance is {size} bytes, over the limit of {max_bytes}"
        )
    fp.seek(0)
    head = fp.read(132)
    meta: dict[int, str] = {}
    if len(head) == 132 and head[128:132] == b"DICM":
        offset = _read_file_meta(fp, 132, size, meta)
        has_meta = True
    elif len(head) >= 8 and struct.unpack_from("<H", head, 0)[0] == 0x0002:
        offset = _read_file_meta(fp, 0, size, meta)  # file meta without the preamble
        has_meta = True
    else:
        offset = 0
        has_meta = False

    ts = meta.get(0x00020010, "")
    if not ts:
        # No file meta, or one without (0002,0010): judge by how the data set starts.
        fp.seek(offset)
        ts = _guess_raw_encoding(fp.read(8))
        if has_meta:
            meta[0x00020010] = ts
    layout = FileLayout(size, offset, ts, has_meta, meta)

    if layout.is_deflated:
        layout.max_sequence_depth = _walk_deflated(
            fp, offset, max_bytes, max_depth, collect, layout.values
        )
    else:
        fp.seek(offset)
        layout.max_sequence_depth = _walk(
            fp,
            offset,
            size,
            implicit=ts == IMPLICIT_VR_LITTLE_ENDIAN,
            little=ts != EXPLICIT_VR_BIG_ENDIAN,
            max_depth=max_depth,
            collect=collect,
            values=layout.values,
        )
    return layout


def _read_file_meta(fp: BinaryIO, start: int, size: int, meta: dict[int, str]) -> int:
    """Parse group 0002 (always explicit VR little endian, PS3.10 7.1); return its end."""
    fp.seek(start)
    pos = start
    while True:
        header = fp.read(8)
        if len(header) < 8:
            if pos == start:
                raise InvalidDicom(Problem.TRUNCATED, "file ends inside the file meta")
            return pos
        group, element = struct.unpack_from("<HH", header)
        if group != 0x0002:
            return pos
        vr = header[4:6]
        if not vr.isalpha() or not vr.isupper():
            raise InvalidDicom(Problem.MALFORMED, f"bad VR in file meta at offset {pos}")
        if vr in LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                raise InvalidDicom(Problem.TRUNCATED, "file ends inside the file meta")
            length = struct.unpack("<I", extra)[0]
            value_at = pos + 12
        else:
            length = struct.unpack_from("<H", header, 6)[0]
            value_at = pos + 8
        if length == UNDEFINED or value_at + length > size:
            raise InvalidDicom(
                Problem.TRUNCATED,
                f"file meta element (0002,{element:04X}) declares {length} bytes past the end",
            )
        if value_at + length - start > MAX_META_BYTES:
            raise InvalidDicom(Problem.MALFORMED, "file meta is larger than 64 KiB")
        tag = (group << 16) | element
        if vr in (b"UI", b"AE", b"SH") and length <= MAX_META_VALUE:
            meta[tag] = fp.read(length).decode("ascii", "replace").strip("\x00 ")
        else:
            fp.seek(length, os.SEEK_CUR)
        pos = value_at + length


def _guess_raw_encoding(head: bytes) -> str:
    """A data set with no file meta (PS3.10 does not allow it, senders do it anyway).

    Accepted only when it starts the way a data set does: a group 0008 element.
    Implicit VR little endian is the default (PS3.5 10.1); explicit if a VR is present,
    big endian if the group number reads right only that way.
    """
    if len(head) < 8:
        raise InvalidDicom(Problem.NOT_DICOM, "not a DICOM file (too short)")
    vr = head[4:6]
    has_vr = vr.isalpha() and vr.isupper()
    if struct.unpack_from("<H", head, 0)[0] == 0x0008:
        return EXPLICIT_VR_LITTLE_ENDIAN if has_vr else IMPLICIT_VR_LITTLE_ENDIAN
    if struct.unpack_from(">H", head, 0)[0] == 0x0008 and has_vr:
        return EXPLICIT_VR_BIG_ENDIAN
    raise InvalidDicom(
        Problem.NOT_DICOM, "not a DICOM file (no 'DICM' prefix and no data set header)"
    )


# Frame kinds for the iterative walk.
_DATASET, _ITEM, _SEQUENCE, _FRAGMENTS = range(4)


def _walk(
    fp: BinaryIO,
    start: int,
    end: int,
    *,
    implicit: bool,
    little: bool,
    max_depth: int,
    collect: frozenset[int] = frozenset(),
    values: dict[int, bytes] | None = None,
) -> int:
    """Walk element headers from `start` to `end`; return the deepest sequence nesting.

    Iterative (an explicit stack), so depth is bounded by the check and not by Python.
    """
    read = fp.read
    seek = fp.seek
    pos = start
    # Each frame: [kind, end offset or None when delimited, implicit, little]
    stack: list[list[object]] = [[_DATASET, end, implicit, little]]
    depth = 0
    deepest = 0
    while stack:
        frame = stack[-1]
        kind, frame_end, f_implicit, f_little = frame
        if frame_end is not None:
            if pos == frame_end:
                stack.pop()
                if kind in (_SEQUENCE, _FRAGMENTS):
                    depth -= 1
                continue
            if pos > frame_end:  # type: ignore[operator]
                raise InvalidDicom(
                    Problem.MALFORMED, f"element at offset {pos} overruns its sequence or item"
                )
        endian = "<" if f_little else ">"
        header = read(8)
        if len(header) < 8:
            if not header:
                raise InvalidDicom(
                    Problem.TRUNCATED, f"file ends at offset {pos} before a sequence is closed"
                )
            raise InvalidDicom(Problem.TRUNCATED, f"file ends inside an element at offset {pos}")
        group, element = struct.unpack_from(endian + "HH", header)
        tag = (group << 16) | element

        if kind in (_SEQUENCE, _FRAGMENTS):
            length = struct.unpack_from(endian + "I", header, 4)[0]
            pos += 8
            if tag == SEQUENCE_DELIMITATION:
                stack.pop()
                depth -= 1
                continue
            if tag != ITEM:
                raise InvalidDicom(
                    Problem.MALFORMED, f"expected an item tag at offset {pos - 8}, found {tag:08X}"
                )
            if length == UNDEFINED:
                if kind == _FRAGMENTS:
                    raise InvalidDicom(
                        Problem.MALFORMED, "encapsulated pixel data fragment of undefined length"
                    )
                stack.append([_ITEM, None, f_implicit, f_little])
                continue
            _check_fits(pos, length, frame_end, end, tag)
            if kind == _FRAGMENTS:
                seek(length, os.SEEK_CUR)
                pos += length
            else:
                stack.append([_ITEM, pos + length, f_implicit, f_little])
            continue

        if tag == ITEM_DELIMITATION:
            pos += 8
            if kind == _ITEM and frame_end is None:
                stack.pop()
                continue
            raise InvalidDicom(Problem.MALFORMED, f"unexpected item delimiter at offset {pos - 8}")
        if group == 0xFFFE:
            raise InvalidDicom(Problem.MALFORMED, f"unexpected {tag:08X} at offset {pos}")

        if f_implicit:
            length = struct.unpack_from(endian + "I", header, 4)[0]
            pos += 8
            try:
                is_sequence = dictionary_VR(tag) == "SQ"
            except KeyError:
                is_sequence = False
            vr = b"SQ" if is_sequence else b"  "
        else:
            vr = header[4:6]
            if not (vr.isalpha() and vr.isupper()):
                raise InvalidDicom(
                    Problem.MALFORMED, f"invalid VR {vr!r} for ({group:04X},{element:04X})"
                )
            if vr in LONG_VRS:
                extra = read(4)
                if len(extra) < 4:
                    raise InvalidDicom(Problem.TRUNCATED, f"file ends inside an element at {pos}")
                length = struct.unpack(endian + "I", extra)[0]
                pos += 12
            else:
                length = struct.unpack_from(endian + "H", header, 6)[0]
                pos += 8

        if length == UNDEFINED:
            if vr == b"SQ" or vr == b"UN" or f_implicit:
                depth += 1
                deepest = max(deepest, depth)
                if depth > max_depth:
                    raise InvalidDicom(
                        Problem.TOO_DEEP, f"sequences nested deeper than {max_depth} levels"
                    )
                # An undefined-length UN is a sequence in implicit VR LE (PS3.5 6.2.2).
                if vr == b"UN":
                    stack.append([_SEQUENCE, None, True, True])
                else:
                    stack.append([_SEQUENCE, None, f_implicit, f_little])
                continue
            if tag == PIXEL_DATA and vr in (b"OB", b"OW"):
                depth += 1
                stack.append([_FRAGMENTS, None, f_implicit, f_little])
                continue
            raise InvalidDicom(
                Problem.MALFORMED,
                f"({group:04X},{element:04X}) has an undefined length but is not a sequence",
            )

        _check_fits(pos, length, frame_end, end, tag)
        if vr == b"SQ":
            depth += 1
            deepest = max(deepest, depth)
            if depth > max_depth:
                raise InvalidDicom(
                    Problem.TOO_DEEP, f"sequences nested deeper than {max_depth} levels"
                )
            stack.append([_SEQUENCE, pos + length, f_implicit, f_little])
            continue
        if not length:
            if kind == _DATASET and tag in collect and values is not None:
                values[tag] = b""
            continue
        if kind == _DATASET and tag in collect and length <= MAX_COLLECTED_VALUE:
            value = read(length)
            if len(value) < length:
                raise InvalidDicom(Problem.TRUNCATED, f"file ends inside an element at {pos}")
            if values is not None:
                values[tag] = value
        else:
            seek(length, os.SEEK_CUR)
        pos += length
    return deepest


def _check_fits(pos: int, length: int, frame_end: object, file_end: int, tag: int) -> None:
    limit = file_end if frame_end is None else min(file_end, frame_end)  # type: ignore[call-overload]
    if pos + length > limit:
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if pos + length > file_end:
            raise InvalidDicom(
                Problem.TRUNCATED,
                f"element {where} declares {length} bytes but the file ends "
                f"{file_end - pos} bytes later",
            )
        raise InvalidDicom(Problem.MALFORMED, f"element {where} overruns its sequence or item")


def _walk_deflated(
    fp: BinaryIO,
    offset: int,
    max_bytes: int,
    max_depth: int,
    collect: frozenset[int],
    values: dict[int, bytes],
) -> int:
    """Inflate the data set to a bounded spool file and walk that (PS3.5 A.5)."""
    fp.seek(offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    with tempfile.TemporaryFile() as spool:
        total = 0
        while chunk := fp.read(1024 * 1024):
            try:
                out = inflater.decompress(chunk, 1024 * 1024)
                while True:
                    total += len(out)
                    if total > max_bytes:
                        raise InvalidDicom(
                            Problem.TOO_LARGE, f"deflated data set inflates past {max_bytes} bytes"
                        )
                    spool.write(out)
                    if not inflater.unconsumed_tail:
                        break
                    out = inflater.decompress(inflater.unconsumed_tail, 1024 * 1024)
            except zlib.error as exc:
                raise InvalidDicom(
                    Problem.MALFORMED, f"deflated data set is corrupt: {exc}"
                ) from exc
        spool.write(inflater.flush())
        end = spool.tell()
        spool.seek(0)
        return _walk(
            spool,
            0,
            end,
            implicit=False,
            little=True,
            max_depth=max_depth,
            collect=collect,
            values=values,
        )
