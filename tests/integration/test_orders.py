"""Orders over HTTP (API and web form), completed when their images arrive over DICOM."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from tests.factories import make_ct, write
from tests.integration.archive import Archive

PASSWORD = "Orders-test-42"


def test_orders_api_web_form_and_completion(running_archive: Archive, tmp_path: Path) -> None:
    a = running_archive
    a.run("facilities", "add", "WEST", "--name", "West clinic", "--ae", "WEST_CT")
    a.run("facilities", "add", "EAST", "--name", "East clinic")
    a.run(
        "users",
        "add",
        "west_tech",
        "--role",
        "technologist",
        "--facility",
        "WEST",
        "--password",
        PASSWORD,
    )
    a.run(
        "users",
        "add",
        "east_rad",
        "--role",
        "radiologist",
        "--facility",
        "EAST",
        "--password",
        PASSWORD,
    )
    order = {
        "patient_name": "Worklist^Wendy",
        "patient_id": "W-1",
        "modality": "CT",
        "scheduled_station_ae_title": "WEST_CT",
        "scheduled_start_date": "20261204",
        "scheduled_start_time": "1030",
        "requested_procedure_description": "CT chest",
    }
    with a.client("west_tech", PASSWORD) as api:
        created = api.post("/api/v1/orders", json=order)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["facility"] == "WEST" and body["status"] == "SCHEDULED"
        accession = body["accession_number"]
        again = api.post("/api/v1/orders", json=order | {"accession_number": accession})
        assert again.status_code == 409
        bad = api.post("/api/v1/orders", json=order | {"scheduled_start_date": "4 Dec"})
        assert bad.status_code == 422
        assert [o["accession_number"] for o in api.get("/api/v1/orders").json()] == [accession]
    with a.client("east_rad", PASSWORD) as api:
        assert api.get("/api/v1/orders").json() == []

    with closing(a.web_login("west_tech", PASSWORD)) as web:
        page = web.get("/orders/")
        assert "Worklist^Wendy" in page.text
        posted = web.post(
            "/orders/",
            data={
                "patient_name": "Form^Fred",
                "patient_id": "F-1",
                "modality": "MR",
                "scheduled_start": "2026-12-05T08:15",
                "csrfmiddlewaretoken": web.cookies["csrftoken"],
            },
        )
        assert posted.status_code == 200 and "Scheduled MR for Form^Fred" in posted.text

    path = write(make_ct(accession=accession, patient_name="Worklist^Wendy"), tmp_path / "w.dcm")
    a.storescu(path, calling_ae="WEST_CT")
    deadline = time.monotonic() + 30
    with a.client("west_tech", PASSWORD) as api:
        while time.monotonic() < deadline:
            done = api.get("/api/v1/orders", params={"status": "COMPLETED"}).json()
            if done:
                break
            time.sleep(0.5)
        assert [o["accession_number"] for o in done] == [accession]
        still_open = api.get("/api/v1/orders", params={"status": "SCHEDULED"}).json()
        assert [o["patient_name"] for o in still_open] == ["Form^Fred"]
