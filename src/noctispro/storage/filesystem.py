"""Blobs as files under one root: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from noctispro.storage.base import StorageError, check_key, new_key

CHUNK = 1024 * 1024


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, chunks: Iterable[bytes]) -> str:
        key = new_key()
        final = self._path(key)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ensure_dir(final.parent)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(exc.errno, f"could not store blob: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return key

    def adopt(self, path: Path) -> str:
        """Make a file of ours that already holds the blob's bytes the blob, without a copy.

        The file must be on this store's file system (EXDEV otherwise: the caller then
        copies with `put`) and no one else may write it. Durable on return, as `put`.
        """
        key = new_key()
        final = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fchmod(fd, 0o640)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ensure_dir(final.parent)
            os.rename(path, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StorageError(exc.errno, f"could not store blob: {exc.strerror or exc}") from exc
        return key

    def _ensure_dir(self, directory: Path) -> None:
        if directory.is_dir():
            return
        created = []
        d = directory
        while not d.exists():
            created.append(d)
            d = d.parent
        directory.mkdir(parents=True, exist_ok=True)
        for d in reversed(created):
            _fsync_dir(d.parent)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(exc.errno, f"could not open blob: {exc.strerror}") from exc

    def open_range(self, key: str, start: int, end: int | None = None) -> Iterator[bytes]:
        with self.open(key) as f:
            f.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return

    def local_path(self, key: str) -> Path:
        """The blob's file, for senders that stream it from disk (the C-STORE SCU)."""
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def iter_keys(self) -> Iterator[str]:
        """Every key in the store (for consistency checks)."""
        for path in self.root.glob("??/??/*.dcm"):
            yield path.relative_to(self.root).as_posix()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
