from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.archive import Archive, archive_at

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def running_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """One `noctispro serve` shared by the tests of a module."""
    with archive_at(tmp_path_factory.mktemp("archive")) as archive:
        archive.start("serve")
        yield archive


@pytest.fixture
def new_archive(tmp_path: Path) -> Iterator[Archive]:
    """A migrated archive that is not started; the test starts what it needs."""
    with archive_at(tmp_path / "archive") as archive:
        yield archive


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (apt-get install dcmtk); .ci/run installs it")
    return path
