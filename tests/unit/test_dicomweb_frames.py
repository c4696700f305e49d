"""Frame list parsing and frame media-type negotiation (PS3.18 10.4.1.1.4, 8.7.4)."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from pydicom.data import get_testdata_file

from noctispro.dicomweb.frames import negotiate_frames
from noctispro.dicomweb.media import parse_accept
from noctispro.dicomweb.pixeldata import etag, parse_frame_numbers
from noctispro.dicomweb.rendered import negotiate_rendered
from noctispro.imaging.pixels import read_info
from noctispro.imaging.render import MediaType

JLS = "1.2.840.10008.1.2.4.80"


def info(name: str):
    return read_info(get_testdata_file(name))


def test_frame_numbers() -> None:
    assert parse_frame_numbers("1,3,5") == [1, 3, 5]
    assert parse_frame_numbers("2, 2") == [2, 2]
    for bad in ("0", "", "1,", "a", "-1", "1.5", "1;2"):
        with pytest.raises(HTTPException) as caught:
            parse_frame_numbers(bad)
        assert caught.value.status_code == 400


def test_native_frames_are_octet_stream_only() -> None:
    ct = info("CT_small.dcm")
    choice = negotiate_frames(None, ct, 1)
    assert (choice.media_type, choice.as_stored, choice.multipart) == (
        "application/octet-stream", False, True,
    )  # fmt: skip
    assert choice.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    star = negotiate_frames('multipart/related; type="application/octet-stream"; '
                            "transfer-syntax=*", ct, 3)  # fmt: skip
    assert not star.as_stored
    single = negotiate_frames("application/octet-stream", ct, 1)
    assert not single.multipart
    for accept in ("image/jls", 'multipart/related; type="image/jp2"', "text/html"):
        with pytest.raises(HTTPException) as caught:
            negotiate_frames(accept, ct, 1)
        assert caught.value.status_code == 406
    with pytest.raises(HTTPException):
        negotiate_frames("application/octet-stream", ct, 2)  # single part, two frames


def test_compressed_frames_as_stored_or_decoded() -> None:
    jls = info("MR_small_jpeg_ls_lossless.dcm")
    assert negotiate_frames("image/jls", jls, 1).as_stored
    assert negotiate_frames(f'multipart/related; type="image/jls"; transfer-syntax={JLS}',
                            jls, 2).content_type == f"image/jls; transfer-syntax={JLS}"  # fmt: skip
    assert negotiate_frames("image/*", jls, 1).media_type == "image/jls"
    assert not negotiate_frames(
        'multipart/related; type="application/octet-stream"', jls, 2
    ).as_stored
    # Preference order is honoured: q=0.5 for the codestream, 1 for decoded.
    choice = negotiate_frames(
        'multipart/related; type="image/jls"; q=0.5, '
        'multipart/related; type="application/octet-stream"', jls, 1,
    )  # fmt: skip
    assert not choice.as_stored
    near_lossless = "1.2.840.10008.1.2.4.81"  # not what is stored: no transcoding
    with pytest.raises(HTTPException):
        negotiate_frames(f'multipart/related; type="image/jls"; transfer-syntax={near_lossless}',
                         jls, 1)  # fmt: skip


def test_rendered_negotiation() -> None:
    assert negotiate_rendered(None) == (MediaType.JPEG, False)
    assert negotiate_rendered("image/png") == (MediaType.PNG, False)
    assert negotiate_rendered('multipart/related; type="image/png"') == (MediaType.PNG, True)
    assert negotiate_rendered("image/gif, image/*;q=0.1") == (MediaType.JPEG, False)
    with pytest.raises(HTTPException) as caught:
        negotiate_rendered("image/gif")
    assert caught.value.status_code == 406
    assert parse_accept("")[0].media_type == "*/*"


def test_etag_names_key_and_parameters() -> None:
    a = etag("key1", "rendered", 0, None)
    assert a.startswith('"') and a.endswith('"')
    assert a == etag("key1", "rendered", 0, None)
    assert a != etag("key2", "rendered", 0, None)
    assert a != etag("key1", "rendered", 1, None)
