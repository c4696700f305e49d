"""Facility isolation: every study-reading route, run against two facilities.

Studies arrive over DICOM and get their facility from the calling AE title. Each user
must see exactly the studies of their facilities, on every route; a study of another
facility is a 404 (not a 403, which would confirm that it exists).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.factories import make_ct, to_bytes, write
from tests.integration.archive import Archive

PASSWORD = "Facility-test-42"
USERS = {
    "north_rad": (["--role", "radiologist", "--facility", "NORTH"], {"NORTH"}),
    "south_tech": (["--role", "technologist", "--facility", "SOUTH"], {"SOUTH"}),
    "both_ref": (
        ["--role", "referring", "--facility", "NORTH", "--facility", "SOUTH"],
        {"NORTH", "SOUTH"},
    ),
    "every_ref": (["--role", "referring", "--all-facilities"], {"NORTH", "SOUTH", "DEFAULT"}),
    "nobody": (["--role", "referring"], set()),
    "admin": ([], {"NORTH", "SOUTH", "DEFAULT"}),
}


@pytest.fixture(scope="module")
def two_facilities(running_archive: Archive, tmp_path_factory) -> dict[str, dict[str, str]]:
    a = running_archive
    a.run("facilities", "add", "NORTH", "--name", "North clinic", "--ae", "NORTH_CT")
    a.run("facilities", "add", "SOUTH", "--name", "South clinic", "--ae", "SOUTH_CT")
    for name, (args, _) in USERS.items():
        if args:
            a.run("users", "add", name, *args, "--password", PASSWORD)
    studies: dict[str, dict[str, str]] = {}
    folder = Path(tmp_path_factory.mktemp("facility-files"))
    for facility, calling_ae in (("NORTH", "NORTH_CT"), ("SOUTH", "SOUTH_CT"), ("DEFAULT", "WHO")):
        ds = make_ct(
            study_uid=generate_uid(),
            patient_name=f"{facility}^Patient",
            patient_id=f"P-{facility}",
            accession=f"ACC-{facility}",
        )
        path = write(ds, folder / f"{facility}.dcm")
        a.storescu(path, calling_ae=calling_ae)
        studies[facility] = {
            "study": ds.StudyInstanceUID,
            "series": ds.SeriesInstanceUID,
            "sop": ds.SOPInstanceUID,
            "patient": f"{facility}^Patient",
        }
    rows = dict(
        a.query(
            "SELECT s.study_instance_uid, f.code FROM index_study s "
            "JOIN accounts_facility f ON f.id = s.facility_id"
        )
    )
    for facility, ids in studies.items():
        assert rows[ids["study"]] == facility
    return studies


def _password(archive: Archive, user: str) -> str:
    return archive.admin_password if user == "admin" else PASSWORD


Route = Callable[[httpx.Client, httpx.Client, dict[str, str]], bool]


def api_metadata(api: httpx.Client, web: httpx.Client, s: dict[str, str]) -> bool:
    r = api.get(f"/api/v1/dicom/studies/{s['study']}/metadata")
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def api_file(api: httpx.Client, web: httpx.Client, s: dict[str, str]) -> bool:
    r = api.get(f"/api/v1/dicom/instances/{s['sop']}/file")
    assert r.status_code in (200, 404)
    return r.status_code == 200


def web_list(api: httpx.Client, web: httpx.Client, s: dict[str, str]) -> bool:
    r = web.get("/")
    assert r.status_code == 200
    return s["study"] in r.text


def web_search(api: httpx.Client, web: httpx.Client, s: dict[str, str]) -> bool:
    r = web.get("/", params={"q": s["patient"].split("^")[0]})
    assert r.status_code == 200
    return s["study"] in r.text


def web_study_page(api: httpx.Client, web: httpx.Client, s: dict[str, str]) -> bool:
    r = web.get(f"/studies/{s['study']}/")
    assert r.status_code in (200, 404)
    return r.status_code == 200


def web_file(api: httpx.Client, web: httpx.Client, s: dict[str, str]) -> bool:
    r = web.get(f"/instances/{s['sop']}/file")
    assert r.status_code in (200, 404)
    return r.status_code == 200


def _instance_image(suffix: str) -> Route:
    """A single-image DICOMweb resource (served by `dicomweb.shortcut` for bearer tokens)."""

    def route(api: httpx.Client, web: httpx.Client, s: dict[str, str]) -> bool:
        url = f"/dicom-web/studies/{s['study']}/series/{s['series']}/instances/{s['sop']}{suffix}"
        r = api.get(url)
        assert r.status_code in (200, 404), r.text
        assert r.status_code != 200 or r.headers["content-type"] == "image/jpeg"
        return r.status_code == 200

    return route


ROUTES: dict[str, Route] = {
    "GET /dicom-web/.../instances/{uid}/rendered": _instance_image("/rendered"),
    "GET /dicom-web/.../frames/1/rendered": _instance_image("/frames/1/rendered"),
    "GET /dicom-web/.../instances/{uid}/thumbnail": _instance_image("/thumbnail"),
    "GET /dicom-web/.../frames/1/thumbnail": _instance_image("/frames/1/thumbnail"),
    "GET /api/v1/dicom/studies/{uid}/metadata": api_metadata,
    "GET /api/v1/dicom/instances/{uid}/file": api_file,
    "GET / (study list)": web_list,
    "GET /?q= (search)": web_search,
    "GET /studies/{uid}/": web_study_page,
    "GET /instances/{uid}/file": web_file,
}


@pytest.mark.parametrize("user", list(USERS))
def test_every_study_route_is_scoped_by_facility(
    running_archive: Archive, two_facilities: dict[str, dict[str, str]], user: str
) -> None:
    expected = USERS[user][1]
    with (
        running_archive.client(user, _password(running_archive, user)) as api,
        closing(running_archive.web_login(user, _password(running_archive, user))) as web,
    ):
        for route_name, route in ROUTES.items():
            for facility, ids in two_facilities.items():
                seen = route(api, web, ids)
                assert seen == (facility in expected), (
                    f"{user} {'sees' if seen else 'does not see'} {facility} via {route_name}"
                )


def test_upload_goes_to_the_uploaders_facility(
    running_archive: Archive, two_facilities: dict[str, dict[str, str]]
) -> None:
    ds = make_ct()
    with running_archive.client("south_tech", PASSWORD) as api:
        r = api.post("/api/v1/dicom/upload", files=[("files", ("a.dcm", to_bytes(ds)))])
        assert r.status_code == 200, r.text
        refused = api.post(
            "/api/v1/dicom/upload",
            data={"facility": "NORTH"},
            files=[("files", ("b.dcm", to_bytes(make_ct())))],
        )
        assert refused.status_code == 403
    facility = running_archive.query(
        "SELECT f.code FROM index_study s JOIN accounts_facility f ON f.id = s.facility_id "
        "WHERE s.study_instance_uid = ?",
        (ds.StudyInstanceUID,),
    )
    assert facility == [("SOUTH",)]
    with running_archive.client("north_rad", PASSWORD) as api:
        # The same study from another facility's user is refused, not merged.
        conflict = api.post("/api/v1/dicom/upload", files=[("files", ("a.dcm", to_bytes(ds)))])
        body = conflict.json()
        assert conflict.status_code == 400
        assert body["files"][0]["reason"] == "facility-conflict"
    with running_archive.client("both_ref", PASSWORD) as api:
        # A referring user may read but not store.
        r = api.post("/api/v1/dicom/upload", files=[("files", ("c.dcm", to_bytes(make_ct())))])
        assert r.status_code == 403
