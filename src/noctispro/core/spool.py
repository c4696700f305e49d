"""Remove spool files that a crashed process left behind (nothing half-written stays).

Uploads, received C-STORE data sets and blobs being written all go through temp files
that the writer deletes; only a killed process can leave one. Files older than
SPOOL_MAX_AGE are no longer being written by anyone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from noctispro.conf import get_settings

log = logging.getLogger(__name__)
SPOOL_MAX_AGE = 6 * 3600.0


def sweep_spool(max_age: float = SPOOL_MAX_AGE, now: float | None = None) -> int:
    settings = get_settings()
    cutoff = (time.time() if now is None else now) - max_age
    removed = 0
    dirs = [settings.tmp_dir]
    if settings.storage_url.startswith("file://"):
        dirs.append(Path(settings.storage_url.removeprefix("file://")) / ".tmp")
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    if removed:
        log.warning("removed %d stale spool file(s) left by a stopped process", removed)
    return removed
