"""Media types of requests and responses: Accept negotiation and multipart/related bodies
(PS3.18 8.7: acceptable media types, transfer-syntax parameter; RFC 2387)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
ANY_TRANSFER_SYNTAX = "*"


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header, or a Content-Type: type/subtype and parameters."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        try:
            return float(self.params.get("q", "1"))
        except ValueError:
            return 1.0

    def matches(self, media_type: str) -> bool:
        """Whether this range covers `media_type` (`*/*`, `type/*` or the same type)."""
        if self.media_type in ("*/*", media_type):
            return True
        major = media_type.split("/", 1)[0]
        return self.media_type == f"{major}/*"


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_media_type(text: str) -> MediaRange:
    pieces = _split(text, ";")
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip().strip('"')
    return MediaRange(pieces[0].strip().lower(), params)


def parse_accept(header: str | None) -> list[MediaRange]:
    """Acceptable media ranges, best first; none given means anything (RFC 9110 12.5.1)."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(p) for p in _split(header, ",") if p.strip()]
    ranges = [r for r in ranges if r.quality > 0]
    return sorted(ranges, key=lambda r: -r.quality)


def new_boundary() -> str:
    return f"noctispro-{secrets.token_hex(16)}"


def multipart_type(boundary: str, part_type: str) -> str:
    return f'{MULTIPART_RELATED}; type="{part_type}"; boundary={boundary}'


def part_head(boundary: str, content_type: str, length: int, first: bool) -> bytes:
    lead = b"" if first else b"\r\n"
    head = f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    return lead + head.encode()


def closing(boundary: str, empty: bool = False) -> bytes:
    return ("" if empty else "\r\n").encode() + f"--{boundary}--\r\n".encode()


def multipart_body(boundary: str, parts: list[tuple[str, bytes]]) -> Iterator[bytes]:
    """A small multipart/related body from in-memory parts."""
    for n, (content_type, data) in enumerate(parts):
        yield part_head(boundary, content_type, len(data), n == 0)
        yield data
    yield closing(boundary, empty=not parts)
