"""Shared test helpers: the archive's own consistency, checked from the outside."""

from __future__ import annotations

from pathlib import Path


def storage_files(storage_root: Path) -> set[str]:
    return {p.relative_to(storage_root).as_posix() for p in storage_root.glob("??/??/*.dcm")}


def spool_leftovers(storage_root: Path) -> list[Path]:
    return list((storage_root / ".tmp").glob("*"))


def pydicom_test_files() -> list[Path]:
    """pydicom's own test files and the pydicom-data package's, found on disk.

    (pydicom.data.get_testdata_files also tries to download missing files, which
    stalls for seconds on a machine without network.)
    """
    import data_store
    import pydicom.data

    dirs = [
        Path(pydicom.data.__file__).parent / "test_files",
        Path(data_store.__file__).parent / "data",
    ]
    return sorted(p for d in dirs for p in d.glob("*.dcm"))


def pydicom_test_file(name: str) -> Path:
    for path in pydicom_test_files():
        if path.name == name:
            return path
    raise FileNotFoundError(name)
