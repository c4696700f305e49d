"""WADO-RS frames, rendered and thumbnail resources, transcoding, WADO-URI images, against
a running `noctispro api`.

Frames are compared with pydicom's decoded arrays and with the stored fragments;
rendered PNGs with DCMTK's `dcmj2pnm` (an independent renderer); transcoded instances
with pydicom's reading of the original. dicomweb-client is the client where it has the
call. Bad files and bad parameters must get a 4xx with a message.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.factories import make_ct, to_bytes
from tests.helpers import pydicom_test_file
from tests.integration.archive import Archive, archive_at
from tests.integration.test_dicomweb_wado_stow import (
    DICOM_MULTIPART,
    dicomweb_client,
    multipart,
    multipart_parts,
    start,
)

PASSWORD = "Rendered-test-pw-1"
FILES = [
    "CT_small.dcm",  # native, signed 16-bit
    "MR_small.dcm",
    "JPEG2000.dcm",  # encapsulated JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG baseline, colour
    "emri_small_RLE.dcm",  # RLE, 10 frames
    "emri_small.dcm",  # native, 10 frames
    "rtplan.dcm",  # no pixel data
]
RENAMED = ("MR_small_jpeg_ls_lossless.dcm", "emri_small_RLE.dcm")


@dataclass
class Stored:
    archive: Archive
    client: DICOMwebClient
    files: dict[str, Path]  # file name → path

    def url(self, name: str) -> str:
        ds = pydicom.dcmread(self.files[name], stop_before_pixels=True)
        return (
            f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )

    def uids(self, name: str) -> tuple[str, str, str]:
        ds = pydicom.dcmread(self.files[name], stop_before_pixels=True)
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def stow(archive: Archive, blobs: list[bytes], status: int = 200) -> None:
    with archive.client() as api:
        r = api.post(
            "/dicom-web/studies",
            content=multipart([("application/dicom", b) for b in blobs]),
            headers={"Content-Type": DICOM_MULTIPART.format("b0undary")},
        )
    assert r.status_code == status, r.text


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    with archive_at(tmp_path_factory.mktemp("rendered") / "archive") as archive:
        archive.run("facilities", "add", "NORTH", "--name", "North")
        archive.run(
            "users", "add", "north", "--role", "radiologist", "--facility", "NORTH",
            "--password", PASSWORD,
        )  # fmt: skip
        start(archive, "api")
        files = {name: pydicom_test_file(name) for name in FILES}
        copies = tmp_path_factory.mktemp("copies")
        for name in RENAMED:
            # Same SOP Instance UID as their uncompressed originals: stored as new instances.
            ds = pydicom.dcmread(files[name])
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
            ds.save_as(copies / name)
            files[name] = copies / name
        stow(archive, [p.read_bytes() for p in files.values()])
        yield Stored(archive, dicomweb_client(archive), files)


def decoded(path: Path) -> np.ndarray:
    """pydicom's frames, (frames, rows, columns[, samples])."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    return pixels if int(ds.get("NumberOfFrames", 1)) > 1 else pixels[np.newaxis]


# --- frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in FILES if n != "rtplan.dcm"])
def test_uncompressed_frames_equal_pydicom(stored: Stored, name: str) -> None:
    expected = decoded(stored.files[name])
    numbers = [1, len(expected)] if len(expected) > 1 else [1]
    with stored.archive.client() as api:
        r = api.get(
            f"{stored.url(name)}/frames/{','.join(map(str, numbers))}",
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
        )
    assert r.status_code == 200, r.text
    parts = multipart_parts(r)
    assert len(parts) == len(numbers)
    for (headers, data), n in zip(parts, numbers, strict=True):
        assert headers["content-type"].startswith("application/octet-stream")
        want = expected[n - 1]
        got = np.frombuffer(data, dtype=want.dtype.newbyteorder("<")).reshape(want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} frame {n}")


def test_frames_with_dicomweb_client(stored: Stored) -> None:
    study, series, sop = stored.uids("emri_small.dcm")
    frames = stored.client.retrieve_instance_frames(study, series, sop, frame_numbers=[2, 5])
    expected = decoded(stored.files["emri_small.dcm"])
    assert len(frames) == 2
    for data, n in zip(frames, (2, 5), strict=True):
        got = np.frombuffer(data, dtype="<u2").reshape(expected[n - 1].shape)
        np.testing.assert_array_equal(got, expected[n - 1])


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("JPEG2000.dcm", "image/jp2"),
        ("MR_small_jpeg_ls_lossless.dcm", "image/jls"),
        ("SC_rgb_jpeg_gdcm.dcm", "image/jpeg"),
        ("emri_small_RLE.dcm", "image/x-dicom-rle"),
    ],
)
def test_stored_syntax_frames_are_the_stored_fragments(
    stored: Stored, name: str, media_type: str
) -> None:
    ds = pydicom.dcmread(stored.files[name])
    count = int(ds.get("NumberOfFrames", 1))
    fragments = list(generate_frames(ds.PixelData, number_of_frames=count))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    numbers = list(range(1, count + 1))
    with stored.archive.client() as api:
        for accept in (
            f'multipart/related; type="{media_type}"; transfer-syntax={syntax}',
            f'multipart/related; type="{media_type}"',
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        ):
            r = api.get(
                f"{stored.url(name)}/frames/{','.join(map(str, numbers))}",
                headers={"Accept": accept},
            )
            assert r.status_code == 200, (accept, r.text)
            parts = multipart_parts(r)
            assert [data for _, data in parts] == fragments, accept
            assert all(f"transfer-syntax={syntax}" in h["content-type"] for h, _ in parts)
        # One frame as a single part.
        r = api.get(f"{stored.url(name)}/frames/1", headers={"Accept": media_type})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(media_type)
        assert r.content == fragments[0]
        # Another codec's type cannot be served without transcoding the frame.
        other = "image/jls" if media_type != "image/jls" else "image/jp2"
        r = api.get(f"{stored.url(name)}/frames/1", headers={"Accept": f"{other}"})
        assert r.status_code == 406, r.text


def test_bad_frame_lists(stored: Stored) -> None:
    url = stored.url("emri_small.dcm")
    with stored.archive.client() as api:
        for frames, code in (("0", 400), ("1,x", 400), ("-1", 400), ("11", 404), ("1,99", 404)):
            r = api.get(f"{url}/frames/{frames}")
            assert r.status_code == code, (frames, r.text)
            assert r.json()["detail"]
        assert api.get(f"{stored.url('rtplan.dcm')}/frames/1").status_code == 404
        assert api.get(f"{url}/frames/1", headers={"Accept": "text/html"}).status_code == 406


# --- rendered ---------------------------------------------------------------------------------


def dcmj2pnm(path: Path, tmp: Path, center: float, width: float, frame: int = 1) -> np.ndarray:
    out = tmp / f"{path.stem}-{frame}.png"
    subprocess.run(
        ["dcmj2pnm", "--write-png", "+F", str(frame), "+Ww", str(center), str(width),
         str(path), str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return np.asarray(Image.open(out)).astype(np.int16)


@pytest.mark.skipif(shutil.which("dcmj2pnm") is None, reason="DCMTK not installed")
@pytest.mark.parametrize(
    ("name", "center", "width", "frame"),
    [
        ("CT_small.dcm", 40, 400, 1),
        ("CT_small.dcm", 1000, 3000, 1),
        ("MR_small.dcm", 600, 1200, 1),
        ("emri_small.dcm", 500, 1000, 5),
    ],
)
def test_rendered_png_matches_dcmtk(
    stored: Stored, tmp_path: Path, name: str, center: int, width: int, frame: int
) -> None:
    with stored.archive.client() as api:
        r = api.get(
            f"{stored.url(name)}/frames/{frame}/rendered",
            params={"window": f"{center},{width},linear"},
            headers={"Accept": "image/png"},
        )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    ours = np.asarray(Image.open(io.BytesIO(r.content))).astype(np.int16)
    theirs = dcmj2pnm(stored.files[name], tmp_path, center, width, frame)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() <= 1.0


def test_rendered_jpeg_viewport_and_client(stored: Stored) -> None:
    study, series, sop = stored.uids("CT_small.dcm")  # 128 x 128
    data = stored.client.retrieve_instance_rendered(
        study, series, sop, media_types=("image/jpeg",), params={"viewport": "64,32"}
    )
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    assert img.size == (32, 32)
    with stored.archive.client() as api:
        r = api.get(
            f"{stored.url('CT_small.dcm')}/rendered",
            params={"viewport": "256,256", "quality": "50", "accept": "image/png"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"  # the accept parameter wins
        assert Image.open(io.BytesIO(r.content)).size == (256, 256)
        r = api.get(f"{stored.url('SC_rgb_jpeg_gdcm.dcm')}/rendered")
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).mode == "RGB"


def test_etag_and_304(stored: Stored) -> None:
    url = f"{stored.url('MR_small.dcm')}/rendered?window=600,1200"
    with stored.archive.client() as api:
        first = api.get(url)
        assert first.status_code == 200
        tag = first.headers["etag"]
        assert tag.startswith('"') and "private" in first.headers["cache-control"]
        assert "max-age=" in first.headers["cache-control"]
        again = api.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304
        assert again.content == b""
        other = api.get(url.replace("600", "700"), headers={"If-None-Match": tag})
        assert other.status_code == 200
        assert other.headers["etag"] != tag


def test_study_and_series_rendered_are_multipart(stored: Stored) -> None:
    study, series, _ = stored.uids("emri_small.dcm")
    with stored.archive.client() as api:
        r = api.get(f"/dicom-web/studies/{study}/series/{series}/rendered")
        assert r.status_code == 200, r.text
        parts = multipart_parts(r)
        assert parts
        for headers, data in parts:
            assert headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(data)).size == (64, 64)
        r = api.get(f"/dicom-web/studies/{study}/rendered", headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        assert all(h["content-type"] == "image/png" for h, _ in multipart_parts(r))


def test_thumbnails(stored: Stored) -> None:
    study, series, sop = stored.uids("CT_small.dcm")
    base = f"/dicom-web/studies/{study}"
    with stored.archive.client() as api:
        for url in (
            f"{base}/thumbnail",
            f"{base}/series/{series}/thumbnail",
            f"{base}/series/{series}/instances/{sop}/thumbnail",
            f"{base}/series/{series}/instances/{sop}/frames/1/thumbnail",
        ):
            r = api.get(url)
            assert r.status_code == 200, (url, r.text)
            assert r.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(r.content)).size == (128, 128)
            assert r.headers["etag"]
        r = api.get(f"{base}/thumbnail", params={"viewport": "40,40"})
        assert Image.open(io.BytesIO(r.content)).size == (40, 40)


def test_rendered_bad_input(stored: Stored) -> None:
    url = stored.url("CT_small.dcm")
    with stored.archive.client() as api:
        for params in (
            {"window": "40"},
            {"window": "40,0"},
            {"window": "a,b"},
            {"window": "40,400,cubic"},
            {"viewport": "0,10"},
            {"viewport": "10,10,1"},
            {"quality": "101"},
        ):
            r = api.get(f"{url}/rendered", params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["detail"]
        assert api.get(f"{url}/rendered", headers={"Accept": "image/gif"}).status_code == 406
        assert api.get(f"{url}/frames/2/rendered").status_code == 404
        assert api.get(f"{url}/frames/0/rendered").status_code == 400
        r = api.get(f"{stored.url('rtplan.dcm')}/rendered")
        assert r.status_code == 406, r.text


# --- transcoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "emri_small_RLE.dcm", "CT_small.dcm"])
def test_transcode_to_explicit_little_endian(stored: Stored, name: str) -> None:
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
    )
    with stored.archive.client() as api:
        r = api.get(stored.url(name), headers={"Accept": accept})
    assert r.status_code == 200, r.text
    ((headers, data),) = multipart_parts(r)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    ds = pydicom.dcmread(io.BytesIO(data))
    original = pydicom.dcmread(stored.files[name])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)


def test_transcode_series_and_refusal(stored: Stored) -> None:
    study, series, _ = stored.uids("emri_small_RLE.dcm")
    with stored.archive.client() as api:
        r = api.get(
            f"/dicom-web/studies/{study}/series/{series}",
            headers={"Accept": 'multipart/related; type="application/dicom"; '
                     "transfer-syntax=1.2.840.10008.1.2.5"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        for _, data in multipart_parts(r):
            assert (
                pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
                == "1.2.840.10008.1.2.5"
            )
        lossy = (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
        )
        r = api.get(stored.url("CT_small.dcm"), headers={"Accept": lossy})
        assert r.status_code == 406, r.text


# --- WADO-URI ---------------------------------------------------------------------------------


def test_wado_uri_rendered(stored: Stored, tmp_path: Path) -> None:
    study, series, sop = stored.uids("CT_small.dcm")
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    with stored.archive.client() as api:
        r = api.get("/wado", params=params)  # image/jpeg by default
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        r = api.get(
            "/wado",
            params={**params, "contentType": "image/png", "windowCenter": "40",
                    "windowWidth": "400"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        ours = np.asarray(Image.open(io.BytesIO(r.content))).astype(np.int16)
        theirs = dcmj2pnm(stored.files["CT_small.dcm"], tmp_path, 40, 400)
        assert np.abs(ours - theirs).mean() <= 1.0
        r = api.get("/wado", params={**params, "rows": "64", "imageQuality": "70"})
        assert Image.open(io.BytesIO(r.content)).size == (64, 64)
        for bad in ({"windowCenter": "40"}, {"frameNumber": "0"}, {"imageQuality": "0"},
                    {"rows": "x"}):  # fmt: skip
            assert api.get("/wado", params={**params, **bad}).status_code == 400, bad
        assert api.get("/wado", params={**params, "frameNumber": "2"}).status_code == 404
        r = api.get(
            "/wado",
            params={**params, "contentType": "application/dicom",
                    "transferSyntax": "1.2.840.10008.1.2.5"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        ds = pydicom.dcmread(io.BytesIO(r.content))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
        np.testing.assert_array_equal(
            ds.pixel_array, pydicom.dcmread(stored.files["CT_small.dcm"]).pixel_array
        )


# --- bad files, scoping -----------------------------------------------------------------------


def test_bad_pixel_data_is_4xx(stored: Stored) -> None:
    huge = make_ct(rows=60000, columns=60000)  # 7.2 GB claimed, 8 KB present
    huge.PixelData = b"\0" * 8192
    short = make_ct()
    short.PixelData = short.PixelData[: len(short.PixelData) // 2]
    with stored.archive.client() as api:
        for ds in (huge, short):
            stow(stored.archive, [to_bytes(ds)], status=200)
            url = (
                f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}"
            )
            for path in ("/rendered", "/frames/1", "/thumbnail"):
                r = api.get(url + path)
                assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
                assert r.json()["detail"]
            rle = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.5'
            r = api.get(url, headers={"Accept": rle})  # transcoding must decode the pixels
            assert 400 <= r.status_code < 500, r.text


def test_other_facility_sees_nothing(stored: Stored) -> None:
    url = stored.url("emri_small.dcm")
    study, series, sop = stored.uids("emri_small.dcm")
    with stored.archive.client("north", PASSWORD) as north:
        for path in (
            f"{url}/frames/1",
            f"{url}/rendered",
            f"{url}/thumbnail",
            f"{url}/frames/1/rendered",
            f"/dicom-web/studies/{study}/rendered",
            f"/dicom-web/studies/{study}/thumbnail",
            f"/dicom-web/studies/{study}/series/{series}/rendered",
            f"/dicom-web/studies/{study}/series/{series}/thumbnail",
        ):
            assert north.get(path).status_code == 404, path
        params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
        assert north.get("/wado", params=params).status_code == 404
    with stored.archive.client() as api:
        api.headers.pop("Authorization", None)
        assert api.get(f"{url}/rendered").status_code == 401


def test_uid_of_nothing_is_404(stored: Stored) -> None:
    with stored.archive.client() as api:
        assert api.get(f"/dicom-web/studies/{generate_uid()}/rendered").status_code == 404
        assert api.get(f"/dicom-web/studies/{generate_uid()}/thumbnail").status_code == 404
