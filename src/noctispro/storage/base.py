"""The BlobStore protocol: a few verbs over server-chosen keys (DESIGN §4, after Orthanc's
IStorageArea). Keys never come from a client or from a raw UID."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol, runtime_checkable

KEY_PATTERN = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}\.dcm$")


class StorageError(OSError):
    """The store could not complete an operation (disk full, permissions, network)."""


class InvalidKey(ValueError):
    """A key that the store did not make: refused before touching anything."""


#: Blobs stored in the same minute share a directory (65,536 of them, reused cyclically
#: after 45 days). Random directories made nearly every new instance create one and
#: fsync its parent, doubling the fsyncs per C-STORE on a young archive.
FAN_OUT_SECONDS = 60


def new_key() -> str:
    """A fresh key: two fan-out levels from the time, the name a random UUID."""
    bucket = int(time.time() // FAN_OUT_SECONDS) & 0xFFFF
    return f"{bucket >> 8:02x}/{bucket & 0xFF:02x}/{uuid.uuid4().hex}.dcm"


def check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidKey(f"not a storage key: {key!r}")
    return key


@runtime_checkable
class BlobStore(Protocol):
    """Durable blobs. `put` returns only after the bytes are durable under the new key."""

    def put(self, chunks: Iterable[bytes]) -> str:
        """Write the chunks under a new key and return the key; nothing is left on failure."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def open_range(self, key: str, start: int, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of a blob, in chunks."""
        ...

    def delete(self, key: str) -> None:
        """Remove a blob; removing one that is not there is not an error."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...
