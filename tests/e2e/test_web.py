"""The web pages in a real headless Chromium: sign in, upload with progress, find the study."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.factories import make_ct, write
from tests.integration.archive import Archive

pytestmark = pytest.mark.e2e


def _shot(page, screenshots: Path | None, name: str) -> None:
    if screenshots is not None:
        page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def _sign_in(page, archive: Archive, screenshots: Path | None = None) -> None:
    page.goto(archive.web + "/")
    assert "/login/" in page.url
    _shot(page, screenshots, "login")
    page.fill("#id_username", "admin")
    page.fill("#id_password", archive.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url(archive.web + "/")


def test_wrong_password_shows_a_clear_message(page, web_archive: Archive) -> None:
    page.goto(web_archive.web + "/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "wrong password")
    page.click("button[type=submit]")
    assert "correct username and password" in page.locator("[role=alert]").inner_text()


def test_upload_in_the_browser_then_find_the_study(
    page, web_archive: Archive, tmp_path: Path, screenshots: Path | None
) -> None:
    _sign_in(page, web_archive, screenshots)
    _shot(page, screenshots, "studies-empty")
    study_uid, series_uid = generate_uid(), generate_uid()
    files = [
        write(
            make_ct(
                study_uid=study_uid,
                series_uid=series_uid,
                instance_number=i,
                patient_name="Browser^Upload",
                rows=256,
                columns=256,
                seed=i,
            ),
            tmp_path / f"{i}.dcm",
        )
        for i in range(6)
    ]
    bad = tmp_path / "notes.dcm"
    bad.write_text("this is not an image\n" * 20)

    page.click("nav >> text=Upload")
    page.wait_for_url("**/upload/")
    page.set_input_files("#id_dicom_files", [str(p) for p in [*files, bad]])
    page.click("button.primary")
    page.wait_for_selector("#results table")
    assert page.locator("#progress").get_attribute("value") == "100"
    summary = page.locator("#results .summary").inner_text()
    assert "6 stored" in summary and "1 rejected" in summary
    assert "not a DICOM file" in page.locator("#results tr.rejected").inner_text()
    _shot(page, screenshots, "upload-result")

    page.goto(web_archive.web + "/")
    row = page.locator(f"tr[data-study-uid='{study_uid}']")
    assert "Browser^Upload" in row.inner_text()
    assert "6" in row.locator("td.num").last.inner_text()
    _shot(page, screenshots, "studies")

    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("browser")
    page.keyboard.press("Enter")
    page.wait_for_url("**/?q=browser")
    assert page.locator("tbody tr").count() == 1

    row = page.locator(f"tr[data-study-uid='{study_uid}']")
    row.locator("a").click()
    page.wait_for_url(f"**/studies/{study_uid}/")
    assert page.locator("table.instances tbody tr").count() == 6
    _shot(page, screenshots, "study")

    page.click("text=Sign out")
    page.wait_for_url("**/login/")


def test_schedule_an_order_on_the_orders_page(
    page, web_archive: Archive, screenshots: Path | None
) -> None:
    _sign_in(page, web_archive)
    page.click("nav >> text=Orders")
    page.wait_for_url("**/orders/")
    page.fill("#id_patient_name", "Browser^Order")
    page.fill("#id_patient_id", "BO-1")
    page.fill("#id_modality", "MR")
    page.fill("#id_scheduled_start", "2026-12-05T08:15")
    page.fill("#id_requested_procedure_description", "MR knee")
    page.click("button.primary")
    page.wait_for_selector(".messages li.success")
    assert "Scheduled MR for Browser^Order" in page.locator(".messages").inner_text()
    row = page.locator("table.orders tbody tr", has_text="Browser^Order")
    assert "2026-12-05 08:15" in row.inner_text() and "MR knee" in row.inner_text()
    _shot(page, screenshots, "orders")
