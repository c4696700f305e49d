from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.archive import Archive, archive_at

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("NOCTISPRO_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    return path


@pytest.fixture(scope="module")
def web_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    with archive_at(tmp_path_factory.mktemp("e2e")) as archive:
        archive.start("serve")
        yield archive


@pytest.fixture
def page(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        yield page
        context.close()
        browser.close()


@pytest.fixture
def screenshots() -> Path | None:
    """Where to keep screenshots for the docs (NOCTISPRO_SCREENSHOTS=dir), or nowhere."""
    target = os.environ.get("NOCTISPRO_SCREENSHOTS")
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path
