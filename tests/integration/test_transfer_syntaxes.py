"""Storage in every transfer syntax of issue 3, stored as received (PS3.5 A.4, 10).

DCMTK's dcmsend (`--decompress-never`), or storescu (`-xi`/`-xb`) for the uncompressed
syntaxes, sends each pydicom / pydicom-data test file in its own transfer syntax; what
the archive keeps must be the data set that went over the wire, byte for byte. DCMTK
re-encodes what it reads, so "what went over the wire" is what a DCMTK storescp in
bit-preserving mode (+B) writes for the same send.

No test file has JPEG Lossless Process 14 with another selection value than 1 (dcmcjpeg
makes one, storescp does not accept it) or HTJ2K (unknown to DCMTK 3.6.7; OpenJPH makes
them, tests/htj2k.py): those are sent with pynetdicom, which sends a file's bytes as
they are on disk.
"""

from __future__ import annotations

import struct
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.helpers import pydicom_test_file, pydicom_test_files
from tests.htj2k import HTJ2K_SYNTAXES, make_htj2k_files
from tests.integration.archive import Archive, archive_at, free_port, wait_for_port
from tests.integration.conftest import need

#: The storage transfer syntaxes issue 3 lists, but HTJ2K (below).
SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}


JPEG_PROCESS_14 = "1.2.840.10008.1.2.4.57"


def files_by_syntax() -> dict[str, list[tuple[Path, str]]]:
    """(path, SOP Instance UID) of every readable test file, per transfer syntax."""
    found: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for path in pydicom_test_files():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            syntax = str(ds.file_meta.TransferSyntaxUID)
            uid = str(ds.SOPInstanceUID)
        except Exception:  # no file meta, no UID: not a candidate for this test
            continue
        if syntax in SYNTAXES:
            found[syntax].append((path, uid))
    return found


def rounds(files: list[tuple[Path, str]]) -> list[list[tuple[Path, str]]]:
    """Split the files so that no SOP Instance UID is sent twice in one round.

    The test files reuse UIDs (the same image in many syntaxes); the archive runs with
    the `overwrite` duplicate policy and each round is checked before the next.
    """
    out: list[list[tuple[Path, str]]] = []
    seen: dict[str, int] = defaultdict(int)
    for path, uid in files:
        n = seen[uid]
        seen[uid] += 1
        if n == len(out):
            out.append([])
        out[n].append((path, uid))
    return out


#: dcmsend offers an uncompressed file as Explicit VR Little Endian too, and DCMTK then
#: converts it; storescu can offer one uncompressed syntax alone.
STORESCU_ONLY = {"1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.2": "-xb"}


def send(port: int, files: list[tuple[Path, str]]) -> None:
    """Send each file in its own transfer syntax; files DCMTK cannot read are skipped."""
    by_option: dict[str, list[Path]] = defaultdict(list)
    for path, syntax in files:
        by_option[STORESCU_ONLY.get(syntax, "")].append(path)
    for option, paths in by_option.items():
        tool = [need("storescu"), option] if option else [need("dcmsend"), "-dn", "-nuc"]
        subprocess.run(
            [*tool, "-nh", "-aet", "TSTEST", "-aec", "NOCTISPRO",
             "127.0.0.1", str(port), *map(str, paths)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip


def after_meta(file_bytes: bytes) -> bytes:
    """The data set of a Part 10 file: what follows the group length-counted file meta."""
    assert file_bytes[128:132] == b"DICM", "not a Part 10 file"
    assert file_bytes[132:140] == b"\x02\x00\x00\x00UL\x04\x00", "no File Meta group length"
    meta_length = struct.unpack("<I", file_bytes[140:144])[0]
    return file_bytes[144 + meta_length :]


def dataset_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


#: Test files in a listed syntax that the archive must refuse (PS3.4 B.2.3 0xA900), and
#: why. Fixed copies of the JPEG-LS near-lossless ones are made below.
REFUSED = {
    "JPEGLSNearLossless_08.dcm": "no Study Instance UID",
    "JPEGLSNearLossless_16.dcm": "no Study Instance UID",
    "SC_rgb_jls_lossy_line.dcm": "no Study Instance UID",
    "SC_rgb_jls_lossy_sample.dcm": "no Study Instance UID",
    "bad_sequence.dcm": "its SOP Instance UID is a hex string, not a UID",
    # SOP Class/Instance UID encoded as UN: DCMTK reads "31" and sends a C-STORE-RQ
    # whose Affected SOP Class UID is not the context's (0x0122).
    "explicit_VR-UN.dcm": "its C-STORE-RQ names another SOP class than its context",
    "rtdose_rle.dcm": "its C-STORE-RQ names another SOP class than its context",
    "rtdose_rle_1frame.dcm": "its C-STORE-RQ names another SOP class than its context",
}


def repaired_near_lossless(folder: Path) -> list[tuple[Path, str]]:
    """The JPEG-LS near-lossless test files with the Study/Series UIDs they lack.

    Only header elements are added; the encapsulated pixel data is written unchanged.
    """
    made = []
    for name in [n for n in REFUSED if "jls" in n.lower() or "JPEGLS" in n]:
        ds = pydicom.dcmread(pydicom_test_file(name))
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"fixed_{name}"
        ds.save_as(path, enforce_file_format=True)
        made.append((path, str(ds.SOPInstanceUID)))
    return made


def jpeg_process_14(folder: Path) -> list[tuple[Path, str]]:
    """JPEG Lossless Process 14 (selection value 6): no test file has it; dcmcjpeg makes one."""
    path = folder / "CT_small_jpeg_p14.dcm"
    result = subprocess.run(
        [need("dcmcjpeg"), "+el", "+sv", "6", "+ud", str(pydicom_test_file("CT_small.dcm")),
         str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == JPEG_PROCESS_14
    return [(path, str(ds.SOPInstanceUID))]


@pytest.fixture(scope="module")
def reference_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp writing each data set exactly as it arrived (+B)."""
    folder = tmp_path_factory.mktemp("storescp")
    port = free_port()
    proc = subprocess.Popen(
        [need("storescp"), "+xa", "-pm", "+B", "+uf", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def ts_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """An SCP that keeps the last of several instances with one UID (the test files
    reuse UIDs across syntaxes)."""
    with archive_at(
        tmp_path_factory.mktemp("ts-archive"), NOCTISPRO_DUPLICATE_POLICY="overwrite"
    ) as archive:
        archive.start("dicom")
        yield archive


def stored(archive: Archive, uid: str) -> tuple[str, bytes] | None:
    rows = archive.query(
        "SELECT storage_key, transfer_syntax_uid FROM index_instance WHERE sop_instance_uid = ?",
        (uid,),
    )
    if not rows:
        return None
    return str(rows[0][1]), (archive.storage_root / rows[0][0]).read_bytes()


def test_every_listed_transfer_syntax_is_stored_as_received(
    ts_archive: Archive, reference_scp: tuple[int, Path], tmp_path: Path
) -> None:
    reference_port, reference_dir = reference_scp
    candidates = files_by_syntax()
    for path, uid in repaired_near_lossless(tmp_path):
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        candidates[syntax].append((path, uid))
    syntax_of = {path: syntax for syntax, files in candidates.items() for path, _ in files}
    everything = [f for files in candidates.values() for f in files]
    compared: dict[str, list[str]] = defaultdict(list)
    problems = []
    for batch in rounds(everything):
        for old in reference_dir.iterdir():
            old.unlink()
        files = [(p, syntax_of[p]) for p, _ in batch]
        send(reference_port, files)
        on_the_wire = {dataset_uid(f): f.read_bytes() for f in reference_dir.iterdir()}
        send(ts_archive.dicom_port, files)
        for path, uid in batch:
            ours = stored(ts_archive, uid)
            sent = on_the_wire.get(uid)
            if path.name in REFUSED:  # what is stored under its UID (if any) is another file's
                if (
                    ours is not None
                    and sent is not None
                    and after_meta(ours[1]) == after_meta(sent)
                ):
                    problems.append(f"{path.name}: stored, but {REFUSED[path.name]}")
                continue
            if sent is None:
                continue  # dcmsend could not read the file (a truncated test file)
            if ours is None:
                problems.append(f"{path.name}: not stored")
            elif ours[0] != syntax_of[path]:
                problems.append(f"{path.name}: stored as {ours[0]}, sent as {syntax_of[path]}")
            elif after_meta(ours[1]) != after_meta(sent):
                problems.append(f"{path.name}: stored data set differs from the one sent")
            else:
                compared[syntax_of[path]].append(path.name)
    assert not problems, "\n".join(problems)
    missing = [name for syntax, name in SYNTAXES.items() if not compared[syntax]]
    assert missing == [], f"no file compared for {missing}"
    ts_archive.assert_consistent()


@pytest.fixture
def raw_sending() -> Iterator[None]:
    """pynetdicom sends the data set bytes of a file as they are on disk."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = False


def test_htj2k_and_jpeg_process_14_are_stored_as_received(
    ts_archive: Archive, raw_sending, tmp_path: Path
) -> None:
    files = make_htj2k_files(tmp_path)
    [(p14, _)] = jpeg_process_14(tmp_path)
    files[JPEG_PROCESS_14] = p14
    ae = AE(ae_title="RAWSCU")
    for syntax in files:
        ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", ts_archive.dicom_port, ae_title="NOCTISPRO")
    assert assoc.is_established
    try:
        accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        assert accepted == {*HTJ2K_SYNTAXES, JPEG_PROCESS_14}
        for path in files.values():
            assert assoc.send_c_store(path).Status == 0, path.name
    finally:
        assoc.release()
    for syntax, path in files.items():
        ours = stored(ts_archive, dataset_uid(path))
        assert ours is not None, path.name
        assert ours[0] == syntax
        assert after_meta(ours[1]) == after_meta(path.read_bytes()), path.name
    ts_archive.assert_consistent()
