"""Remote DICOM nodes through the real CLI and the real API, and C-ECHO to DCMTK storescp."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.archive import Archive, archive_at, free_port, wait_for_port
from tests.integration.conftest import need

TECH_PASSWORD = "Some-pass-42"


@pytest.fixture(scope="module")
def api_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """A migrated archive running only the api service, with a facility and a technologist."""
    with archive_at(tmp_path_factory.mktemp("nodes-archive")) as archive:
        archive.run("facilities", "add", "NORTH", "--name", "North clinic", "--ae", "NORTH_CT")
        archive.run("facilities", "add", "SOUTH", "--name", "South clinic")
        archive.run("users", "add", "tech", "--role", "technologist", "--password", TECH_PASSWORD)
        archive.start("api")
        yield archive


@pytest.fixture(scope="module")
def admin(api_archive: Archive) -> Iterator[httpx.Client]:
    with api_archive.client() as client:
        yield client


@pytest.fixture(scope="module")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """DCMTK storescp as the peer `PEER` on a free port (it answers C-ECHO)."""
    port = free_port()
    proc = subprocess.Popen(
        [need("storescp"), "-aet", "PEER", str(port)],
        cwd=tmp_path_factory.mktemp("storescp"),
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def body(name: str, **kw: object) -> dict[str, object]:
    return {"name": name, "ae_title": name.upper(), "host": "127.0.0.1", "port": 104, **kw}


# --- CLI --------------------------------------------------------------------------


def test_cli_add_list_remove(new_archive: Archive) -> None:
    a = new_archive
    a.run("facilities", "add", "NORTH", "--name", "North clinic")
    out = a.run(
        "nodes", "add", "ws1", "--aet", "WS1", "--host", "pacs.example.org", "--port", "11112",
        "--facility", "NORTH", "--allow", "find,move", "--description", "Reading room",
    ).stdout  # fmt: skip
    assert "Added node ws1" in out
    out = a.run("nodes", "add", "ct1", "--aet", "CT1", "--host", "10.1.2.3", "--port", "104").stdout
    assert "store" in out  # the default: a sender
    a.run("nodes", "add", "tls1", "--aet", "TLS1", "--host", "::1", "--port", "2762", "--tls")
    table = a.run("nodes", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "AE", "TITLE", "HOST", "PORT", "FACILITY", "ALLOW", "TLS"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["ws1"] == ["ws1", "WS1", "pacs.example.org", "11112", "NORTH", "find,move"]
    assert rows["ct1"] == ["ct1", "CT1", "10.1.2.3", "104", "store"]
    assert rows["tls1"] == ["tls1", "TLS1", "::1", "2762", "store", "yes"]
    assert a.query("SELECT description FROM accounts_remotenode WHERE name = 'ws1'") == [
        ("Reading room",)
    ]
    assert "Removed node ct1" in a.run("nodes", "remove", "ct1").stdout
    assert "ct1" not in a.run("nodes", "list").stdout


BAD_ADDS = [
    (["--aet", "X1", "--host", "h", "--port", "104", "--facility", "NOPE"], "no such facility"),
    (["--aet", "CLIDUP", "--host", "h", "--port", "104"], "is used by node 'clidup'"),
    (["--aet", "X1", "--host", "h", "--port", "0"], "port:"),
    (["--aet", "X1", "--host", "h", "--port", "65536"], "port:"),
    (["--aet", "X1", "--host", "h", "--port", "http"], "invalid int value"),
    (["--aet", "X1", "--host", "999.1.1.1", "--port", "104"], "host:"),
    (["--aet", "A\\B", "--host", "h", "--port", "104"], "ae_title:"),
    (["--aet", "X1", "--host", "h", "--port", "104", "--allow", "store,erase"], "erase"),
    (["--aet", "NORTH_CT", "--host", "h", "--port", "104", "--facility", "SOUTH"], "NORTH"),
]


def test_cli_add_refuses_bad_input_with_exit_code_2(api_archive: Archive) -> None:
    a = api_archive
    a.run("nodes", "add", "clidup", "--aet", "CLIDUP", "--host", "h", "--port", "104")
    for args, message in BAD_ADDS:
        result = a.run("nodes", "add", "clibad", *args, check=False)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        assert message in result.stderr, (args, result.stderr)
    duplicate = a.run(
        "nodes", "add", "clidup", "--aet", "OTHER", "--host", "h", "--port", "104", check=False
    )
    assert duplicate.returncode == 2
    assert "a node named 'clidup' exists" in duplicate.stderr
    rows = a.query("SELECT name FROM accounts_remotenode WHERE name LIKE ?", ("cli%",))
    assert rows == [("clidup",)]


def test_cli_remove_and_echo_of_an_unknown_node(new_archive: Archive) -> None:
    for command in ("remove", "echo"):
        result = new_archive.run("nodes", command, "nope", check=False)
        assert result.returncode == 2
        assert "no such node 'nope'" in result.stderr


def test_cli_echo(new_archive: Archive, storescp: int) -> None:
    a = new_archive
    a.run("nodes", "add", "peer", "--aet", "PEER", "--host", "127.0.0.1", "--port", str(storescp))
    result = a.run("nodes", "echo", "peer", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK peer: C-ECHO PEER@127.0.0.1")
    assert "status 0x0000" in result.stdout
    assert " ms)" in result.stdout
    port = free_port()
    a.run("nodes", "add", "gone", "--aet", "GONE", "--host", "127.0.0.1", "--port", str(port))
    result = a.run("nodes", "echo", "gone", check=False)
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED gone:")
    assert "refused or unreachable" in result.stdout
    assert result.stderr == ""  # pynetdicom's own error lines are not repeated


# --- API: who may ----------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/v1/nodes"),
    ("POST", "/api/v1/nodes"),
    ("GET", "/api/v1/nodes/any"),
    ("DELETE", "/api/v1/nodes/any"),
    ("POST", "/api/v1/nodes/any/echo"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_routes_need_authentication(api_archive: Archive, method: str, path: str) -> None:
    r = httpx.request(method, api_archive.api + path, json=body("anon"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_only_admins_may(api_archive: Archive, admin: httpx.Client, method: str, path: str) -> None:
    admin.post("/api/v1/nodes", json=body("any"))
    with api_archive.client("tech", TECH_PASSWORD) as tech:
        r = tech.request(method, path, json=body("techs"))
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == "only administrators may manage nodes"
    assert admin.get("/api/v1/nodes/techs").status_code == 404


# --- API: add, list, remove -------------------------------------------------------------


def test_add_list_get_remove(admin: httpx.Client) -> None:
    r = admin.post(
        "/api/v1/nodes",
        json=body(
            "api1",
            ae_title="API1",
            host="Workstation.Example.org",
            port=11112,
            facility="NORTH",
            allowed_operations=["get", "find", "find"],
            tls=True,
            description="Reading room 3",
        ),
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/v1/nodes/api1"
    node = r.json()
    created = node.pop("created_at")
    assert node == {
        "name": "api1",
        "ae_title": "API1",
        "host": "workstation.example.org",
        "port": 11112,
        "facility": "NORTH",
        "allowed_operations": ["find", "get"],
        "tls": True,
        "description": "Reading room 3",
    }
    assert created
    assert admin.get("/api/v1/nodes/api1").json() == {**node, "created_at": created}
    listed = {n["name"]: n for n in admin.get("/api/v1/nodes").json()}
    assert listed["api1"]["allowed_operations"] == ["find", "get"]

    minimal = admin.post("/api/v1/nodes", json=body("api2")).json()
    assert minimal["facility"] is None
    assert minimal["allowed_operations"] == ["store"]
    assert minimal["tls"] is False

    assert admin.delete("/api/v1/nodes/api1").status_code == 204
    assert admin.get("/api/v1/nodes/api1").status_code == 404
    assert "api1" not in {n["name"] for n in admin.get("/api/v1/nodes").json()}
    r = admin.delete("/api/v1/nodes/api1")
    assert r.status_code == 404
    assert r.json() == {"detail": "no such node 'api1'"}


def test_cli_and_api_see_the_same_nodes(api_archive: Archive, admin: httpx.Client) -> None:
    api_archive.run(
        "nodes", "add", "fromcli", "--aet", "FROMCLI", "--host", "10.0.0.9", "--port", "104",
        "--facility", "NORTH", "--allow", "store,find",
    )  # fmt: skip
    node = admin.get("/api/v1/nodes/fromcli").json()
    assert node["facility"] == "NORTH"
    assert node["allowed_operations"] == ["store", "find"]
    assert admin.post("/api/v1/nodes", json=body("fromapi")).status_code == 201
    assert "fromapi" in api_archive.run("nodes", "list").stdout
    assert admin.delete("/api/v1/nodes/fromcli").status_code == 204
    assert "fromcli" not in api_archive.run("nodes", "list").stdout


def test_duplicates_are_409(admin: httpx.Client) -> None:
    assert admin.post("/api/v1/nodes", json=body("dup", ae_title="DUP")).status_code == 201
    same_name = admin.post("/api/v1/nodes", json=body("dup", ae_title="DUP2"))
    assert same_name.status_code == 409
    assert same_name.json() == {"detail": "a node named 'dup' exists already"}
    same_ae = admin.post("/api/v1/nodes", json=body("dup2", ae_title="DUP", host="10.0.0.2"))
    assert same_ae.status_code == 409
    assert same_ae.json() == {"detail": "AE title 'DUP' is used by node 'dup'"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "x"}, "port"),
        ({"name": "a/b"}, "name"),
        ({"name": ""}, "name"),
        ({"ae_title": "A" * 17}, "ae_title"),
        ({"ae_title": "A\\B"}, "ae_title"),
        ({"host": "10.0.0.300"}, "host"),
        ({"host": "pacs host"}, "host"),
        ({"facility": "NOPE"}, "facility"),
        ({"facility": "SOUTH", "ae_title": "NORTH_CT"}, "facility"),
        ({"allowed_operations": ["store", "delete"]}, "allowed_operations"),
        ({"tsl": True}, "tsl"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    admin: httpx.Client, change: dict[str, object], field: str
) -> None:
    r = admin.post("/api/v1/nodes", json={**body("bad"), **change})
    assert r.status_code == 422, r.text
    locations = [e["loc"] for e in r.json()["detail"]]
    assert any(loc[:2] == ["body", field] for loc in locations), locations
    assert admin.get("/api/v1/nodes/bad").status_code == 404


def test_a_missing_field_is_422(admin: httpx.Client) -> None:
    r = admin.post("/api/v1/nodes", json={"name": "half", "host": "h"})
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in r.json()["detail"]} == {
        ("body", "ae_title"),
        ("body", "port"),
    }


def test_the_routes_are_documented(api_archive: Archive) -> None:
    spec = httpx.get(api_archive.api + "/api/v1/openapi.json").json()
    assert set(spec["paths"]["/api/v1/nodes"]) == {"get", "post"}
    assert set(spec["paths"]["/api/v1/nodes/{name}"]) == {"get", "delete"}
    assert set(spec["paths"]["/api/v1/nodes/{name}/echo"]) == {"post"}


# --- API: C-ECHO ---------------------------------------------------------------------


def test_echo_a_live_peer(admin: httpx.Client, storescp: int) -> None:
    admin.post("/api/v1/nodes", json=body("peer", ae_title="PEER", port=storescp))
    r = admin.post("/api/v1/nodes/peer/echo")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["ok"] is True, result
    assert result["status"] == 0
    assert 0 < result["milliseconds"] < 5000
    assert result["detail"] == f"C-ECHO PEER@127.0.0.1:{storescp} succeeded"


def test_echo_a_closed_port_fails_quickly(admin: httpx.Client) -> None:
    admin.post("/api/v1/nodes", json=body("closed", port=free_port()))
    start = time.monotonic()
    r = admin.post("/api/v1/nodes/closed/echo")
    assert time.monotonic() - start < 3
    assert r.status_code == 200
    result = r.json()
    assert result["ok"] is False
    assert result["status"] is None
    assert "refused or unreachable" in result["detail"]


def test_echo_an_unknown_node_is_404(admin: httpx.Client) -> None:
    r = admin.post("/api/v1/nodes/nope/echo")
    assert r.status_code == 404
    assert r.json() == {"detail": "no such node 'nope'"}
