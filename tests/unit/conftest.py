from __future__ import annotations

from pathlib import Path

import pytest

from noctispro.conf import get_settings, reset_settings
from noctispro.storage import get_blob_store


@pytest.fixture
def storage_root() -> Path:
    root = Path(get_settings().storage_url.removeprefix("file://"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch):
    """Change a setting for one test: settings_env(NOCTISPRO_X="1")."""

    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_settings()

    yield apply
    monkeypatch.undo()
    reset_settings()
    get_blob_store.cache_clear()
