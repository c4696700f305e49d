"""Many instances at once: zip archives and folders, fed one by one to `store_instance`.

Used by the upload endpoint, the web upload page and `noctispro import`, so each
reports the same per-file results. A zip is read entry by entry into a spool file
with hard bounds (entry count, bytes out, compression ratio), and entry names are
only labels: nothing is ever written to a path taken from an archive.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from noctispro.conf import get_settings
from noctispro.core.ingest import InstanceRejected, Origin, Outcome, store_instance

ZIP_MAGIC = b"PK\x03\x04"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileResult:
    """The fate of one file: stored / duplicate / kept-first / overwritten / rejected."""

    name: str
    status: str
    reason: str = ""
    message: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "rejected"


class ArchiveRejected(Exception):
    """The whole archive is refused (a zip bomb, a path trick, too many entries)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_zip(fp: BinaryIO) -> bool:
    fp.seek(0)
    magic = fp.read(4)
    fp.seek(0)
    return magic == ZIP_MAGIC


def store_one(name: str, fp: BinaryIO, origin: Origin) -> FileResult:
    try:
        result = store_instance(fp, origin)
    except InstanceRejected as exc:
        return FileResult(name, "rejected", str(exc.reason), exc.message)
    return FileResult(
        name,
        str(result.outcome),
        message=result.warning,
        sop_instance_uid=result.sop_instance_uid,
        study_instance_uid=result.study_instance_uid,
    )


def store_file_or_zip(name: str, fp: BinaryIO, origin: Origin) -> Iterator[FileResult]:
    """Store a single DICOM file, or every entry of a zip archive."""
    if not is_zip(fp):
        yield store_one(name, fp, origin)
        return
    try:
        for entry_name, spool in iter_zip(fp):
            with spool:
                yield store_one(f"{name}/{entry_name}", spool, origin)
    except ArchiveRejected as exc:
        yield FileResult(name, "rejected", exc.reason, exc.message)


def _safe_entry_name(name: str) -> bool:
    if not name or "\x00" in name or name.startswith(("/", "\\")):
        return False
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return ".." not in parts and not (parts and ":" in parts[0])


def iter_zip(fp: BinaryIO) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (entry name, spooled entry) for each file in a zip, within the bounds.

    Raises ArchiveRejected before anything is stored if the directory shows a path
    trick or too many entries, and mid-way if an entry inflates past the bounds.
    """
    s = get_settings()
    try:
        archive = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRejected("malformed", f"not a readable zip archive: {exc}") from exc
    with archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        if len(entries) > s.zip_max_entries:
            raise ArchiveRejected(
                "too-large",
                f"zip has {len(entries)} entries, over the limit of {s.zip_max_entries}",
            )
        for info in entries:
            if not _safe_entry_name(info.filename):
                raise ArchiveRejected(
                    "malformed", f"zip entry {info.filename!r} has an unsafe path; nothing stored"
                )
            declared_ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > 64 * CHUNK and declared_ratio > s.zip_max_ratio:
                raise ArchiveRejected(
                    "too-large",
                    f"zip entry {info.filename!r} declares {declared_ratio:.0f}:1 compression "
                    f"(over {s.zip_max_ratio}:1, a zip bomb?); nothing stored",
                )
        total = 0
        for info in entries:
            if info.flag_bits & 0x1:
                raise ArchiveRejected("malformed", f"zip entry {info.filename!r} is encrypted")
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller
            try:
                written = 0
                limit = s.max_instance_bytes
                with archive.open(info) as member:
                    while chunk := member.read(CHUNK):
                        written += len(chunk)
                        total += len(chunk)
                        ratio_cap = max(info.compress_size, 1) * s.zip_max_ratio
                        if written > 64 * CHUNK and written > ratio_cap:
                            raise ArchiveRejected(
                                "too-large",
                                f"zip entry {info.filename!r} expands more than "
                                f"{s.zip_max_ratio}:1 (a zip bomb?)",
                            )
                        if written > limit:
                            raise ArchiveRejected(
                                "too-large",
                                f"zip entry {info.filename!r} is larger than {limit} bytes",
                            )
                        if total > s.zip_max_total_bytes:
                            raise ArchiveRejected(
                                "too-large", f"zip expands past {s.zip_max_total_bytes} bytes"
                            )
                        spool.write(chunk)
                spool.seek(0)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
                spool.close()
                raise ArchiveRejected(
                    "malformed", f"zip entry {info.filename!r} cannot be read: {exc}"
                ) from exc
            except BaseException:
                spool.close()
                raise
            yield info.filename, spool


def iter_paths(paths: list[Path]) -> Iterator[Path]:
    """Files under the given paths (folders recursively), in a stable order."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


def count_outcomes(results: list[FileResult]) -> dict[str, int]:
    counts = {str(o): 0 for o in Outcome} | {"rejected": 0}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
