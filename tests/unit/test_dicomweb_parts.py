"""The pieces under DICOMweb: metadata JSON of every test file, the multipart reader, Accept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset

from noctispro.core.metadata import (
    BULK_DATA_URI_MARKER,
    EncapsulatedBulkData,
    NoSuchBulkData,
    bulk_data,
    instance_json,
    parse_tag_path,
)
from noctispro.dicomweb.media import parse_accept, parse_media_type
from noctispro.dicomweb.multipart import BadMultipart, TooManyParts, read_multipart
from tests.helpers import pydicom_test_file, pydicom_test_files


def _syntax(path: Path) -> str | None:
    try:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    except Exception:
        return None
    return str(meta.get("TransferSyntaxUID", "")) or None


def test_every_test_file_becomes_dicom_json() -> None:
    converted = 0
    for path in pydicom_test_files():
        syntax = _syntax(path)
        if syntax is None:
            continue
        with path.open("rb") as fp:
            body = instance_json(fp, inline_max=1024, transfer_syntax_uid=syntax)
        parsed = orjson.loads(body)
        assert parsed["00083002"]["Value"] == [syntax]
        assert not any(k.startswith("0002") for k in parsed), path.name
        uris: list[str] = []

        def handler(tag: str, vr: str, uri: str, uris: list[str] = uris) -> bytes:
            uris.append(uri)
            return b""

        # pydicom reads UN as the dictionary's VR; our UN holds what could not be read so.
        known = {k: v for k, v in parsed.items() if v["vr"] != "UN"}
        ds = Dataset.from_json(known, bulk_data_uri_handler=handler)
        assert len(ds) == len(known), path.name
        assert body.count(BULK_DATA_URI_MARKER) >= len(uris)
        for uri in uris:  # tag paths that bulk_data can follow back
            with path.open("rb") as fp:
                try:
                    found = bulk_data(fp, uri, inline_max=1024, transfer_syntax_uid=syntax)
                except EncapsulatedBulkData:
                    continue
            assert found.length > 1024, (path.name, uri)
        converted += 1
    assert converted > 100


def test_pixel_data_is_located_not_loaded() -> None:
    path = pydicom_test_file("CT_small.dcm")
    with path.open("rb") as fp:
        found = bulk_data(fp, "7FE00010", inline_max=1024, transfer_syntax_uid=_syntax(path) or "")
    assert found.offset is not None and found.value is None
    data = path.read_bytes()[found.offset : found.offset + found.length]
    assert data == pydicom.dcmread(path).PixelData
    compressed = pydicom_test_file("JPEG2000.dcm")
    with compressed.open("rb") as fp, pytest.raises(EncapsulatedBulkData):
        bulk_data(fp, "7FE00010", inline_max=1024, transfer_syntax_uid=_syntax(compressed) or "")
    with path.open("rb") as fp, pytest.raises(NoSuchBulkData):
        bulk_data(fp, "00100010", inline_max=1024, transfer_syntax_uid="1.2.840.10008.1.2.1")


@pytest.mark.parametrize("bad", ["", "7FE0", "7FE00010/1", "00540016/x/00181072", "zzzzzzzz"])
def test_bad_tag_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_tag_path(bad)


def body(parts: list[tuple[str, bytes]], boundary: str = "bnd") -> bytes:
    out = b""
    for content_type, data in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def parse(data: bytes, size: int, tmp_path: Path, **limits: int):
    kw = {"max_parts": 100, "max_part_bytes": 1 << 20} | limits
    return asyncio.run(read_multipart(_chunks(data, size), "bnd", spool_dir=str(tmp_path), **kw))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_parts_survive_any_chunking(tmp_path: Path, size: int) -> None:
    parts = [
        ("application/dicom", b"\r\n--bn" + bytes(range(256)) * 3),
        ('application/dicom; transfer-syntax="1.2.840.10008.1.2.1"', b""),
        ("text/plain", b"--bnd is not a boundary here without CRLF"),
    ]
    parsed = parse(body(parts), size, tmp_path)
    try:
        assert [p.content_type for p in parsed.parts] == [
            "application/dicom",
            "application/dicom",
            "text/plain",
        ]
        for part, (_, data) in zip(parsed.parts, parts, strict=True):
            with parsed.open(part) as fp:
                assert fp.read() == data
                fp.seek(0)
                assert fp.read(3) == data[:3]
    finally:
        parsed.close()


def test_multipart_bounds_and_damage(tmp_path: Path) -> None:
    many = body([("application/dicom", b"x")] * 11)
    with pytest.raises(TooManyParts):
        parse(many, 1000, tmp_path, max_parts=10)
    with pytest.raises(TooManyParts):
        parse(body([("application/dicom", b"x" * 100)]), 1000, tmp_path, max_part_bytes=99)
    with pytest.raises(BadMultipart):
        parse(many[:-10], 1000, tmp_path)  # no closing boundary
    with pytest.raises(BadMultipart):
        parse(body([("application/dicom", b"x")], boundary="other"), 1000, tmp_path)
    assert list(tmp_path.iterdir()) == []  # spool files are anonymous and closed


def test_accept_and_content_type_parsing() -> None:
    ranges = parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=*, '
        "application/dicom+json;q=0.5, image/png;q=0"
    )
    assert [r.media_type for r in ranges] == ["multipart/related", "application/dicom+json"]
    assert ranges[0].params == {"type": "application/dicom", "transfer-syntax": "*"}
    assert parse_accept(None)[0].matches("application/dicom+json")
    ct = parse_media_type('Multipart/Related; boundary="a;b"; type="application/dicom"')
    assert ct.media_type == "multipart/related"
    assert ct.params["boundary"] == "a;b"
