"""A bounded, streaming reader of multipart/related request bodies (RFC 2387, RFC 2046).

The body is parsed as it arrives (python-multipart's state machine) into one spool
file on the data disk; each part is then a read-only, seekable window on that file, so
ten thousand parts cost no more open files than one. Bounds: the number of parts, the
size of one part, the header block of a part. A body that does not parse, or ends
before its closing boundary, is refused as a whole before anything is stored.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState

from noctispro.dicomweb.media import parse_media_type

MAX_HEADER_BYTES = 16 * 1024


class BadMultipart(ValueError):
    """The body is not a well-formed multipart body (HTTP 400)."""


class TooManyParts(ValueError):
    """More parts, or a larger part, than allowed (HTTP 413)."""


@dataclass
class Part:
    content_type: str
    offset: int
    length: int = 0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Body:
    """The parts of a parsed body over their spool file; close it when done."""

    spool: BinaryIO
    parts: list[Part]

    def open(self, part: Part) -> BinaryIO:
        return io.BufferedReader(_Window(self.spool, part.offset, part.length))

    def close(self) -> None:
        self.spool.close()


class _Window(io.RawIOBase):
    """Bytes [offset, offset + length) of a shared file, as a file of its own."""

    def __init__(self, fp: BinaryIO, offset: int, length: int) -> None:
        self._fp, self._start, self._length, self._pos = fp, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fp.fileno(), want, self._start + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


async def read_multipart(
    chunks: AsyncIterator[bytes],
    boundary: str,
    *,
    spool_dir: str,
    max_parts: int,
    max_part_bytes: int,
) -> Body:
    """Parse a multipart body from `chunks` into a spool file; raise on anything amiss."""
    if not boundary or len(boundary) > 70:
        raise BadMultipart("the multipart boundary parameter is missing or longer than 70")
    os.makedirs(spool_dir, exist_ok=True)
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - returned in Body
    parts: list[Part] = []
    written = 0
    header: dict[str, list[bytes]] = {"field": [], "value": []}
    headers: dict[str, str] = {}
    header_bytes = 0

    def on_part_begin() -> None:
        nonlocal header_bytes
        if len(parts) >= max_parts:
            raise TooManyParts(f"more than {max_parts} parts in one request")
        headers.clear()
        header_bytes = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        _header_data("field", data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        _header_data("value", data[start:end])

    def _header_data(which: str, data: bytes) -> None:
        nonlocal header_bytes
        header_bytes += len(data)
        if header_bytes > MAX_HEADER_BYTES:
            raise BadMultipart("part headers are larger than 16 KiB")
        header[which].append(data)

    def on_header_end() -> None:
        name = b"".join(header["field"]).decode("latin-1").strip().lower()
        headers[name] = b"".join(header["value"]).decode("latin-1").strip()
        header["field"].clear()
        header["value"].clear()

    def on_headers_finished() -> None:
        content_type = parse_media_type(headers.get("content-type", "")).media_type
        parts.append(Part(content_type, written, 0, dict(headers)))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal written
        part = parts[-1]
        size = end - start
        if part.length + size > max_part_bytes:
            raise TooManyParts(f"a part is larger than {max_part_bytes} bytes")
        spool.write(data[start:end])
        part.length += size
        written += size

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        async for chunk in chunks:
            if chunk:
                parser.write(chunk)
        if parser.state != MultipartState.END:
            raise BadMultipart("the body ends before the closing boundary")
        if not parts:
            raise BadMultipart("the body has no parts")
        spool.flush()
    except MultipartParseError as exc:
        spool.close()
        raise BadMultipart(f"not a multipart body with boundary {boundary[:70]!r}: {exc}") from exc
    except BaseException:
        spool.close()
        raise
    return Body(spool, parts)
