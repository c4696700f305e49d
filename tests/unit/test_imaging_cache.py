"""The decoded-frame cache: bounded by bytes, LRU, one decode for concurrent misses."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from noctispro.imaging import CorruptPixelData
from noctispro.imaging import cache as cache_module
from noctispro.imaging.cache import FrameCache, cached_frame, get_frame_cache, source_key
from noctispro.imaging.lut import Window
from noctispro.imaging.render import render

EMRI = Path(pydicom.data.get_testdata_file("emri_small.dcm"))  # 10 frames of 64 x 64 x 16 bits
FRAME_BYTES = 64 * 64 * 2


def test_bound_is_respected_and_least_recent_goes_first() -> None:
    cache = FrameCache(max_bytes=1000)
    for i in range(10):
        cache.get_or_load(i, lambda: b"x" * 300, len)
        assert cache.bytes_used <= 1000
    assert len(cache) == 3 and 9 in cache and 6 not in cache
    cache.get_or_load(7, lambda: b"never", len)  # a hit moves 7 to the front
    cache.get_or_load(10, lambda: b"y" * 300, len)
    assert 7 in cache and 8 not in cache
    cache.get_or_load("big", lambda: b"z" * 5000, len)  # larger than the cache: not kept
    assert "big" not in cache and cache.bytes_used <= 1000


def test_frames_of_a_file_are_bounded_by_bytes() -> None:
    cache = FrameCache(max_bytes=5 * FRAME_BYTES)  # the header and four frames
    for index in range(10):
        cached_frame(EMRI, index, cache=cache)
        assert cache.bytes_used <= cache.max_bytes
    frames = [k[2] for k in cache._items if k[0] == "frame"]
    assert frames == [6, 7, 8, 9]
    assert cache.bytes_used == sum(size for _, size in cache._items.values())


def test_window_changes_do_not_decode_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cache_module.read_frame

    def counting(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(args[1])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module, "read_frame", counting)
    cache = FrameCache(1 << 26)
    first = render(EMRI, 3, window=Window(500, 1000), cache=cache)
    second = render(EMRI, 3, window=Window(200, 400), cache=cache)
    render(EMRI, 3, window=Window(500, 1000), cache=cache)
    assert calls == [3] and first != second
    assert cache.hits >= 2


def test_concurrent_misses_decode_once() -> None:
    cache = FrameCache(1 << 20)
    loads = []
    gate = threading.Event()

    def slow() -> bytes:
        loads.append(1)
        gate.wait(5)
        return b"v" * 10

    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("k", slow, len)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    while not cache._loading:
        time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join()
    assert loads == [1] and results == [b"v" * 10] * 8


def test_a_failed_load_is_not_cached() -> None:
    cache = FrameCache(1 << 20)

    def broken() -> bytes:
        raise CorruptPixelData("bad")

    with pytest.raises(CorruptPixelData):
        cache.get_or_load("k", broken, len)
    assert "k" not in cache
    assert cache.get_or_load("k", lambda: b"ok", len) == b"ok"


def test_cached_frames_are_read_only() -> None:
    _, frame = cached_frame(EMRI, 0, cache=FrameCache(1 << 20))
    with pytest.raises(ValueError, match="read-only"):
        frame.pixels[0, 0] = 1


def test_path_key_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    shutil.copy(EMRI, path)
    before = source_key(path)
    os.utime(path, ns=(1, 1))
    assert source_key(path) != before
    assert source_key(path, cache_key="ab/cd/x.dcm") == ("key", "ab/cd/x.dcm")
    with path.open("rb") as f:
        assert source_key(f) is None  # an open file is not cached without a key


def test_storage_key_with_opener_skips_opening_on_a_hit() -> None:
    opened = []

    def opener():  # type: ignore[no-untyped-def]
        opened.append(1)
        return EMRI.open("rb")

    cache = FrameCache(1 << 22)
    _, first = cached_frame(opener, 2, cache_key="00/11/key.dcm", cache=cache)
    count = len(opened)
    _, again = cached_frame(opener, 2, cache_key="00/11/key.dcm", cache=cache)
    assert len(opened) == count and again is first
    np.testing.assert_array_equal(first.pixels, pydicom.dcmread(EMRI).pixel_array[2])


def test_process_wide_cache_uses_the_setting(settings_env) -> None:  # type: ignore[no-untyped-def]
    settings_env(NOCTISPRO_IMAGING_CACHE_BYTES="12345")
    cache_module._cache = None
    try:
        assert get_frame_cache().max_bytes == 12345
        assert get_frame_cache() is get_frame_cache()
    finally:
        cache_module._cache = None
