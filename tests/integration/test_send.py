"""Send to node: POST /api/v1/nodes/{name}/send runs a job in the worker that C-STOREs the
study to DCMTK storescp; GET /api/v1/jobs/{id} follows it; the study page does the same."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.archive import Archive, archive_at, free_port
from tests.integration.conftest import need
from tests.retrieve_data import Study, make_study, received, storescp

PASSWORD = "Send-pass-42"


@dataclass
class Setup:
    archive: Archive
    north: Study
    south: Study
    dest: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need("storescp")
    root = tmp_path_factory.mktemp("send")
    dest = root / "dest"
    with archive_at(root / "archive") as archive, storescp(dest, "DEST") as port:
        a = archive
        a.run("facilities", "add", "NORTH", "--name", "North")
        a.run("facilities", "add", "SOUTH", "--name", "South")
        for user, role in (
            ("tech", "technologist"),
            ("tech2", "technologist"),
            ("ref", "referring"),
        ):
            a.run(
                "users", "add", user, "--role", role, "--facility", "NORTH", "--password", PASSWORD
            )
        a.run("nodes", "add", "dest", "--aet", "DEST", "--host", "127.0.0.1", "--port", str(port))
        a.run(
            "nodes",
            "add",
            "down",
            "--aet",
            "DOWN",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        )
        a.run(
            "nodes",
            "add",
            "secure",
            "--aet",
            "SECURE",
            "--host",
            "127.0.0.1",
            "--port",
            "2762",
            "--tls",
        )
        north = make_study(root / "north", "SEND-1")
        south = make_study(root / "south", "SEND-2", ["CT_small.dcm"])
        a.run("import", str(root / "north"), "--facility", "NORTH")
        a.run("import", str(root / "south"), "--facility", "SOUTH")
        a.start("serve")
        yield Setup(archive, north, south, dest)


@pytest.fixture(autouse=True)
def empty_destination(setup: Setup) -> None:
    shutil.rmtree(setup.dest, ignore_errors=True)
    setup.dest.mkdir()


@pytest.fixture(scope="module")
def tech(setup: Setup) -> Iterator[httpx.Client]:
    with setup.archive.client("tech", PASSWORD) as client:
        yield client


def wait_job(
    client: httpx.Client, location: str, until: Any, timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(location)
        assert r.status_code == 200, r.text
        seen = r.json()
        if until(seen):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"job did not get there: {seen}")


def finished(job: dict[str, Any]) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def test_send_study_through_the_api(setup: Setup, tech: httpx.Client) -> None:
    r = tech.post("/api/v1/nodes/dest/send", json={"study_instance_uid": setup.north.study_uid})
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["Location"] == body["location"] == f"/api/v1/jobs/{body['job_id']}"
    job = wait_job(tech, body["location"], finished)
    assert job["state"] == "succeeded", job
    assert job["kind"] == "send_to_node" and job["progress"] == 1.0
    total = len(setup.north.files)
    assert job["progress_message"] == f"{total}/{total} sent"
    result = job["result"]
    assert (result["total"], result["completed"], result["failed"]) == (total, total, 0)
    assert result["statuses"] == {"0x0000": total}
    got = received(setup.dest)
    assert sorted(got) == sorted(setup.north.files)
    for uid in setup.north.files:
        assert got[uid] == setup.north.dataset(uid), setup.north.syntaxes[uid]


def test_send_one_series(setup: Setup, tech: httpx.Client) -> None:
    series_uid, sops = list(setup.north.series.items())[4]
    r = tech.post(
        "/api/v1/nodes/dest/send",
        json={"study_instance_uid": setup.north.study_uid, "series_instance_uid": series_uid},
    )
    assert r.status_code == 202, r.text
    job = wait_job(tech, r.headers["Location"], finished)
    assert job["state"] == "succeeded" and job["result"]["completed"] == len(sops)
    assert sorted(received(setup.dest)) == sorted(sops)


def test_who_may_send_what(setup: Setup, tech: httpx.Client) -> None:
    a = setup.archive
    north = {"study_instance_uid": setup.north.study_uid}
    with a.client("ref", PASSWORD) as ref:
        r = ref.post("/api/v1/nodes/dest/send", json=north)
        assert r.status_code == 403, r.text
    # SOUTH's study is not visible to a NORTH technologist: the same 404 as a missing one.
    r = tech.post("/api/v1/nodes/dest/send", json={"study_instance_uid": setup.south.study_uid})
    assert r.status_code == 404 and r.json()["detail"] == "no such study"
    assert (
        tech.post("/api/v1/nodes/dest/send", json={"study_instance_uid": "1.2.3"}).status_code
        == 404
    )
    assert tech.post("/api/v1/nodes/nowhere/send", json=north).status_code == 404
    r = tech.post(
        "/api/v1/nodes/dest/send",
        json={"study_instance_uid": setup.north.study_uid, "series_instance_uid": "1.2.3"},
    )
    assert r.status_code == 404
    assert httpx.post(f"{a.api}/api/v1/nodes/dest/send", json=north).status_code == 401
    # A job is seen by its creator and by admins only.
    r = tech.post("/api/v1/nodes/dest/send", json=north)
    location = r.headers["Location"]
    with a.client("tech2", PASSWORD) as tech2:
        assert tech2.get(location).status_code == 404
    with a.client() as admin:
        assert admin.get(location).status_code == 200
    assert tech.get("/api/v1/jobs/999999").status_code == 404
    wait_job(tech, location, finished)


def test_destination_down_is_retried_with_the_reason(setup: Setup, tech: httpx.Client) -> None:
    r = tech.post("/api/v1/nodes/down/send", json={"study_instance_uid": setup.north.study_uid})
    assert r.status_code == 202
    job = wait_job(tech, r.headers["Location"], lambda j: j["error"])
    assert "DOWN@127.0.0.1" in job["error"], job
    assert job["state"] in ("pending", "failed") and job["result"] is None


def test_send_from_the_study_page(setup: Setup) -> None:
    web = setup.archive.web_login("tech", PASSWORD)
    page = web.get(f"/studies/{setup.north.study_uid}/")
    assert page.status_code == 200 and "Send to…" in page.text
    series_uid, sops = next(iter(setup.north.series.items()))
    r = web.post(
        f"/studies/{setup.north.study_uid}/send/",
        data={
            "node": "dest",
            "series": series_uid,
            "csrfmiddlewaretoken": web.cookies["csrftoken"],
        },
    )
    assert r.status_code == 200
    match = re.search(r'data-job-url="(/jobs/(\d+)/)"', r.text)
    assert match, r.text[:2000]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job = web.get(match.group(1)).json()
        if job["state"] == "succeeded":
            break
        time.sleep(0.3)
    assert job["state"] == "succeeded" and job["result"]["completed"] == 1
    assert sorted(received(setup.dest)) == sorted(sops)
    # A referring physician gets no button and may not post.
    ref = setup.archive.web_login("ref", PASSWORD)
    assert "Send to…" not in ref.get(f"/studies/{setup.north.study_uid}/").text
    r = ref.post(
        f"/studies/{setup.north.study_uid}/send/",
        data={"node": "dest", "csrfmiddlewaretoken": ref.cookies["csrftoken"]},
    )
    assert r.status_code == 403
