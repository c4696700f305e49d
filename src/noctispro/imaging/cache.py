"""Decoded frames and parsed headers, cached per process (DESIGN §5 "decodes once").

One LRU bounded by bytes (NOCTISPRO_IMAGING_CACHE_BYTES), shared by every thread of
the process. Keys name the stored file — its storage key, or for a path the resolved
path with its mtime and size — and the frame, so scrolling and window/level changes
reuse the decoded frame. Concurrent requests for the same missing entry decode once:
the first loads, the others wait for its result. Cached arrays are read-only.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from noctispro.conf import get_settings
from noctispro.imaging.pixels import Frame, ImageInfo, Limits, Source, read_frame, read_info

T = TypeVar("T")
# What a parsed header costs besides the bytes it was read from.
INFO_OVERHEAD = 4096


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class FrameCache:
    """A thread-safe LRU whose entries are charged their size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._loading: dict[Hashable, _Pending] = {}
        self._lock = threading.Lock()
        self.bytes_used = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get_or_load(self, key: Hashable, load: Callable[[], T], size: Callable[[T], int]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            pending = self._loading.get(key)
            owner = pending is None
            if pending is None:
                pending = self._loading[key] = _Pending()
            self.misses += 1
        if not owner:
            pending.event.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value
        try:
            value = load()
            pending.value = value
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                del self._loading[key]
                if pending.error is None:
                    self._put(key, pending.value, size(pending.value))
            pending.event.set()
        return value

    def _put(self, key: Hashable, value: object, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return  # larger than the whole cache: served, not kept
        if key in self._items:
            self.bytes_used -= self._items.pop(key)[1]
        self._items[key] = (value, nbytes)
        self.bytes_used += nbytes
        while self.bytes_used > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes_used -= evicted

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes_used = 0


_cache: FrameCache | None = None
_cache_lock = threading.Lock()


def get_frame_cache() -> FrameCache:
    """The process-wide cache, sized from NOCTISPRO_IMAGING_CACHE_BYTES on first use."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = FrameCache(get_settings().imaging_cache_bytes)
        return _cache


def source_key(src: Source, cache_key: Hashable | None = None) -> Hashable | None:
    """What names `src` in the cache: the caller's key (a storage key), or path+mtime+size.

    An open file without a caller's key is not cached: nothing says it has not changed.
    """
    if cache_key is not None:
        return ("key", cache_key)
    if isinstance(src, str | os.PathLike):
        path = os.path.realpath(src)
        st = os.stat(path)
        return ("path", path, st.st_mtime_ns, st.st_size)
    return None


def cached_info(
    src: Source,
    *,
    cache_key: Hashable | None = None,
    cache: FrameCache | None = None,
    limits: Limits | None = None,
) -> ImageInfo:
    """`pixels.read_info` through the cache."""
    key = source_key(src, cache_key)
    if key is None:
        return read_info(src, limits)
    cache = get_frame_cache() if cache is None else cache
    return cache.get_or_load(
        ("info", key), lambda: read_info(src, limits), lambda i: i.header_bytes + INFO_OVERHEAD
    )


def cached_frame(
    src: Source,
    index: int,
    *,
    cache_key: Hashable | None = None,
    cache: FrameCache | None = None,
    limits: Limits | None = None,
    raw: bool = False,
) -> tuple[ImageInfo, Frame]:
    """The header and decoded frame `index` of `src`, each decoded at most once."""
    info = cached_info(src, cache_key=cache_key, cache=cache, limits=limits)
    key = source_key(src, cache_key)

    def load() -> Frame:
        frame = read_frame(src, index, info=info, limits=limits, raw=raw)
        frame.pixels.flags.writeable = False
        return frame

    if key is None:
        return info, load()
    cache = get_frame_cache() if cache is None else cache
    return info, cache.get_or_load(("frame", key, index, raw), load, lambda f: f.nbytes)
