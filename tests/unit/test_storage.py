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


def test_stale_spool_files_are_swept_and_fresh_ones_kept(settings_env, tmp_path: Path) -> None:
    import time

    from noctispro.conf import get_settings
    from noctispro.core.spool import sweep_spool

    settings_env(NOCTISPRO_DATA_DIR=str(tmp_path / "data"))
    s = get_settings()
    s.tmp_dir.mkdir(parents=True)
    parts = tmp_path / "data" / "storage" / ".tmp"
    parts.mkdir(parents=True)
    old = [s.tmp_dir / "tmpabc.dcm", parts / "dead.part"]
    fresh = s.tmp_dir / "tmpnew.dcm"
    for p in [*old, fresh]:
        p.write_bytes(b"x")
    long_ago = time.time() - 7 * 3600
    for p in old:
        os.utime(p, (long_ago, long_ago))
    assert sweep_spool() == 2
    assert not any(p.exists() for p in old)
    assert fresh.exists()
