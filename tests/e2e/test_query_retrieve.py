"""The Query/Retrieve page in headless Chromium, against Orthanc as the remote node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.factories import make_ct, write
from tests.integration.archive import Archive, free_port
from tests.integration.orthanc import Orthanc, orthanc_at

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def orthanc(web_archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc holding two studies, known to the archive as node `orthanc`."""
    root = tmp_path_factory.mktemp("qr-orthanc")
    modalities = {"noctispro": ["NOCTISPRO", "127.0.0.1", web_archive.dicom_port]}
    with orthanc_at(root / "orthanc", modalities=modalities) as peer:
        web_archive.run(
            "nodes", "add", "orthanc", "--aet", peer.ae_title, "--host", "127.0.0.1",
            "--port", str(peer.dicom_port), "--allow", "store,find,move",
            "--description", "Orthanc on loopback",
        )  # fmt: skip
        web_archive.run(
            "nodes", "add", "ghost", "--aet", "GHOST", "--host", "127.0.0.1",
            "--port", str(free_port()), "--allow", "store",
        )  # fmt: skip
        files: list[Path] = []
        for n, (name, date, accession) in enumerate(
            [("Remote^Anna", "20240301", "QR001"), ("Remote^Boris", "20240415", "QR002")]
        ):
            study, series = generate_uid(), generate_uid()
            for i in range(3):
                ds = make_ct(
                    study_uid=study, series_uid=series, instance_number=i + 1,
                    patient_name=name, patient_id=f"QRP{n}", study_date=date,
                    accession=accession, seed=10 * n + i, description="CT chest",
                )  # fmt: skip
                files.append(write(ds, root / f"{n}-{i}.dcm"))
        peer.upload(*files)
        yield peer


def _sign_in(page, archive: Archive) -> None:
    page.goto(archive.web + "/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", archive.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url(archive.web + "/")


def test_query_orthanc_and_retrieve_a_study(
    page, web_archive: Archive, orthanc: Orthanc, screenshots: Path | None
) -> None:
    _sign_in(page, web_archive)
    page.click("nav >> text=Query/Retrieve")
    page.wait_for_url("**/query-retrieve/")
    page.select_option("#id_node", "orthanc")
    page.fill("#id_patient_name", "Remote^*")
    page.fill("#id_study_date_from", "2024-01-01")
    page.press("#id_patient_name", "Enter")
    page.wait_for_selector("#qr-results table")
    rows = page.locator("#qr-results tbody tr")
    assert rows.count() == 2
    boris = page.locator("#qr-results tbody tr", has_text="Remote^Boris")
    assert "QR002" in boris.inner_text() and "CT" in boris.inner_text()
    boris.locator("button", has_text="Retrieve").focus()
    page.keyboard.press("Enter")
    boris.locator(".status .ok").wait_for(timeout=60_000)
    assert "Retrieved: 3 of 3 here" in boris.locator(".status").inner_text()
    if screenshots is not None:
        page.screenshot(path=str(screenshots / "query-retrieve.png"), full_page=True)
    boris.locator("a", has_text="Open study").click()
    page.wait_for_url("**/studies/**")
    assert "Remote^Boris" in page.content()


def test_an_unreachable_node_is_a_clear_error(page, web_archive: Archive, orthanc: Orthanc) -> None:
    _sign_in(page, web_archive)
    page.goto(web_archive.web + "/query-retrieve/")
    page.select_option("#id_node", "ghost")
    page.fill("#id_patient_id", "X")
    page.click("#qr-form button[type=submit]")
    alert = page.locator("#qr-error")
    assert "The node cannot be reached" in alert.inner_text()
    assert "refused or unreachable" in alert.inner_text()
