from __future__ import annotations

import os
from pathlib import Path

import pytest

from noctispro.storage import InvalidKey, StorageError, check_key
from noctispro.storage.base import BlobStore
from noctispro.storage.filesystem import FilesystemBlobStore


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


def test_filesystem_store_satisfies_protocol(store: FilesystemBlobStore) -> None:
    assert isinstance(store, BlobStore)


def test_put_open_range_delete_round_trip(store: FilesystemBlobStore) -> None:
    key = store.put([b"hello ", b"world"])
    check_key(key)
    assert store.exists(key)
    assert store.size(key) == 11
    with store.open(key) as f:
        assert f.read() == b"hello world"
    assert b"".join(store.open_range(key, 6)) == b"world"
    assert b"".join(store.open_range(key, 2, 5)) == b"llo"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting twice is not an error


def test_keys_are_server_chosen_and_unique(store: FilesystemBlobStore) -> None:
    keys = {store.put([b"x"]) for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert (store.root / key).is_file()


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/etc/passwd",
        "ab/cd/../../x.dcm",
        "1.2.3.dcm",
        "ab/cd/" + "g" * 32 + ".dcm",
    ],
)
def test_foreign_keys_are_refused(store: FilesystemBlobStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.open(key)
    with pytest.raises(InvalidKey):
        store.delete(key)


def test_failed_put_leaves_nothing(store: FilesystemBlobStore) -> None:
    def chunks():
        yield b"partial"
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        store.put(chunks())
    assert list(store.iter_keys()) == []
    assert list((store.root / ".tmp").iterdir()) == []


def test_write_error_becomes_storage_error(store: FilesystemBlobStore, monkeypatch) -> None:
    def no_space(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(StorageError, match="No space left"):
        store.put([b"data"])
    monkeypatch.undo()
    assert list((store.root / ".tmp").iterdir()) == []


def test_blob_files_are_not_world_readable(store: FilesystemBlobStore) -> None:
    key = store.put([b"phi"])
    assert (store.root / key).stat().st_mode & 0o007 == 0
