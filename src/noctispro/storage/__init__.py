"""Blob storage, chosen by `NOCTISPRO_STORAGE_URL` and imported lazily (DESIGN §6.4)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from noctispro.storage.base import BlobStore, InvalidKey, StorageError, check_key, new_key

__all__ = ["BlobStore", "InvalidKey", "StorageError", "check_key", "get_blob_store", "new_key"]


def blob_store_from_url(url: str) -> BlobStore:
    parts = urlsplit(url)
    if parts.scheme == "file":
        from noctispro.storage.filesystem import FilesystemBlobStore

        return FilesystemBlobStore(Path(unquote(parts.path)))
    raise ValueError(
        f"unsupported NOCTISPRO_STORAGE_URL scheme {parts.scheme!r} (this build stores to file://)"
    )


@lru_cache(maxsize=1)
def get_blob_store() -> BlobStore:
    from noctispro.conf import get_settings

    return blob_store_from_url(get_settings().storage_url)
