"""The API and web service over real HTTP: auth, upload, parse, limits, bad input."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import httpx
import jwt
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.factories import dataset_bytes, make_ct, to_bytes
from tests.integration.archive import Archive, archive_at


def test_ping_and_health(running_archive: Archive) -> None:
    assert httpx.get(f"{running_archive.api}/api/v1/ping").json()["status"] == "ok"
    deadline = time.monotonic() + 30
    while True:  # the worker reports its first heartbeat shortly after start
        r = httpx.get(f"{running_archive.api}/api/v1/health", timeout=30)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    body = r.json()
    assert r.status_code == 200, body
    assert set(body["checks"]) == {"database", "storage", "dicom", "worker"}
    assert all(c["ok"] for c in body["checks"].values())


def test_docs_are_served(running_archive: Archive) -> None:
    for path in ("/api/v1/docs", "/api/v1/redoc", "/api/v1/openapi.json"):
        assert httpx.get(running_archive.api + path).status_code == 200
    spec = httpx.get(running_archive.api + "/api/v1/openapi.json").json()
    assert "/api/v1/dicom/upload" in spec["paths"]
    # The pages work without Internet access: their scripts come from us.
    for page in ("/api/v1/docs", "/api/v1/redoc"):
        html = httpx.get(running_archive.api + page).text
        scripts = re.findall(r'src="([^"]+\.js)"', html)
        assert scripts
        for src in scripts:
            assert src.startswith("/api/v1/"), src
            assert httpx.get(running_archive.api + src).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/dicom/studies/1.2.3/metadata"),
        ("GET", "/api/v1/dicom/instances/1.2.3/file"),
        ("POST", "/api/v1/dicom/upload"),
        ("POST", "/api/v1/dicom/parse"),
    ],
)
def test_routes_need_authentication(running_archive: Archive, method: str, path: str) -> None:
    r = httpx.request(method, running_archive.api + path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def _forged(claims: dict, key: str = "not-the-key", alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _none_alg(claims: dict) -> str:
    import base64

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def test_bad_tokens_are_refused(running_archive: Archive) -> None:
    good = running_archive.token()
    claims = jwt.decode(good, options={"verify_signature": False})
    expired = dict(claims, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    secret = running_archive.env["NOCTISPRO_SECRET_KEY"]
    cases = {
        "alg none": _none_alg(claims),
        "wrong key": _forged(claims),
        "expired": jwt.encode(expired, secret, algorithm="HS256"),
        "wrong audience": jwt.encode(dict(claims, aud="other"), secret, algorithm="HS256"),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, secret, "HS256"),
        "garbage": "not.a.token",
    }
    url = f"{running_archive.api}/api/v1/dicom/studies/1.2.3/metadata"
    for name, token in cases.items():
        r = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, name
    assert (
        "expired"
        in httpx.get(url, headers={"Authorization": f"Bearer {cases['expired']}"}).json()["detail"]
    )
    ok = httpx.get(url, headers={"Authorization": f"Bearer {good}"})
    assert ok.status_code == 404  # authenticated; the study does not exist


def test_wrong_password_is_rate_limited(running_archive: Archive) -> None:
    running_archive.run(
        "users", "add", "throttled", "--role", "radiologist", "--password", "Correct-horse-9"
    )
    url = f"{running_archive.api}/api/v1/auth/token"
    codes = [
        httpx.post(url, data={"username": "throttled", "password": "wrong"}).status_code
        for _ in range(6)
    ]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    blocked = httpx.post(url, data={"username": "throttled", "password": "Correct-horse-9"})
    assert blocked.status_code == 429  # even the right password waits out the window
    assert int(blocked.headers["retry-after"]) > 0


def _upload(api: httpx.Client, files: list[tuple[str, bytes]], **data: str) -> httpx.Response:
    return api.post(
        "/api/v1/dicom/upload",
        files=[("files", (name, content, "application/octet-stream")) for name, content in files],
        data=data,
    )


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, content in entries.items():
            z.writestr(name, content)
    return buf.getvalue()


def test_upload_many_files_and_zips_with_per_file_results(running_archive: Archive) -> None:
    study_uid = generate_uid()
    good = [to_bytes(make_ct(study_uid=study_uid, instance_number=i)) for i in range(4)]
    archive_zip = _zip({"a/1.dcm": good[2], "a/2.dcm": good[3], "notes.txt": b"hello"})
    with running_archive.client() as api:
        r = _upload(
            api,
            [
                ("1.dcm", good[0]),
                ("2.dcm", good[1]),
                ("bad.dcm", b"not dicom" * 100),
                ("study.zip", archive_zip),
                ("again.dcm", good[0]),
            ],
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["summary"]["stored"] == 4
        assert body["summary"]["duplicate"] == 1
        assert body["summary"]["rejected"] == 2
        statuses = {f["name"]: f["status"] for f in body["files"]}
        assert statuses["bad.dcm"] == "rejected"
        assert statuses["study.zip/notes.txt"] == "rejected"
        assert statuses["study.zip/a/1.dcm"] == "stored"
        rejected = next(f for f in body["files"] if f["name"] == "bad.dcm")
        assert rejected["reason"] == "not-dicom" and rejected["message"]
        meta = api.get(f"/api/v1/dicom/studies/{study_uid}/metadata").json()
        assert meta["number_of_instances"] == 4
        uid = dcmread(io.BytesIO(good[1])).SOPInstanceUID
        stored = api.get(f"/api/v1/dicom/instances/{uid}/file").content
        assert dataset_bytes(stored) == dataset_bytes(good[1])
    running_archive.assert_consistent()


def test_upload_of_only_bad_files_is_a_400(running_archive: Archive) -> None:
    with running_archive.client() as api:
        r = _upload(api, [("bad.dcm", b"Patient notes\n" * 30)])
    assert r.status_code == 400
    assert r.json()["files"][0]["reason"] == "not-dicom"


def test_zip_with_path_traversal_is_refused_whole(running_archive: Archive) -> None:
    ok = to_bytes(make_ct())
    evil = _zip({"fine.dcm": ok, "../../etc/cron.d/evil.dcm": to_bytes(make_ct())})
    with running_archive.client() as api:
        r = _upload(api, [("evil.zip", evil)])
    assert r.status_code == 400
    result = r.json()["files"][0]
    assert result["status"] == "rejected" and "unsafe path" in result["message"]
    uid = dcmread(io.BytesIO(ok)).SOPInstanceUID
    assert (
        running_archive.query(
            "SELECT COUNT(*) FROM index_instance WHERE sop_instance_uid = ?", (uid,)
        )[0][0]
        == 0
    )
    running_archive.assert_consistent()


def test_zip_bomb_is_refused(running_archive: Archive) -> None:
    bomb = _zip({"bomb.dcm": b"\0" * (300 * 1024 * 1024)})
    assert len(bomb) < 1024 * 1024
    with running_archive.client() as api:
        r = _upload(api, [("bomb.zip", bomb)])
    assert r.status_code == 400
    assert "zip bomb" in r.json()["files"][0]["message"]
    running_archive.assert_consistent()


def test_body_over_the_limit_is_413(tmp_path) -> None:
    with archive_at(tmp_path / "small", NOCTISPRO_MAX_REQUEST_BYTES="200000") as archive:
        archive.start("api")
        with archive.client() as api:
            big = to_bytes(make_ct(rows=512, columns=512))  # ~512 KiB
            r = _upload(api, [("big.dcm", big)])
            assert r.status_code == 413
            assert "limit" in r.json()["detail"]

            # Without Content-Length: streamed chunks are counted too.
            def chunks():
                yield b"--x\r\nContent-Disposition: form-data; name=files; filename=a\r\n\r\n"
                for _ in range(50):
                    yield b"\0" * 10000

            streamed = api.post(
                "/api/v1/dicom/upload",
                content=chunks(),
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            )
            assert streamed.status_code == 413
        archive.assert_consistent()


def test_parse_returns_dicom_json_and_stores_nothing(running_archive: Archive) -> None:
    ds = make_ct(patient_name="Parse^Only")
    before = running_archive.query("SELECT COUNT(*) FROM index_instance")[0][0]
    with running_archive.client() as api:
        r = api.post("/api/v1/dicom/parse", files={"file": ("x.dcm", to_bytes(ds))})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Parse^Only"}]}
        assert body["00080018"]["Value"] == [ds.SOPInstanceUID]
        assert "7FE00010" not in body
        bad = api.post("/api/v1/dicom/parse", files={"file": ("x.dcm", b"/etc/passwd")})
        assert bad.status_code == 400
    assert running_archive.query("SELECT COUNT(*) FROM index_instance")[0][0] == before


def test_web_login_and_study_list(running_archive: Archive) -> None:
    study_uid = generate_uid()
    with running_archive.client() as api:
        _upload(api, [("w.dcm", to_bytes(make_ct(study_uid=study_uid, patient_name="Web^List")))])
    with httpx.Client(base_url=running_archive.web, follow_redirects=True) as web:
        assert "/login/" in str(web.get("/").url)
        page = web.get("/login/")
        token = web.cookies["csrftoken"]
        bad = web.post(
            "/login/", data={"username": "admin", "password": "nope", "csrfmiddlewaretoken": token}
        )
        assert "Please enter a correct" in bad.text
        r = web.post(
            "/login/",
            data={
                "username": "admin",
                "password": running_archive.admin_password,
                "csrfmiddlewaretoken": web.cookies["csrftoken"],
            },
        )
        assert r.status_code == 200 and page.status_code == 200
        assert "Web^List" in r.text and study_uid in r.text
        assert web.get(f"/studies/{study_uid}/").status_code == 200
        # The same session works on the API (same users, same login).
        cookies = {"sessionid": web.cookies["sessionid"]}
        meta = httpx.get(
            f"{running_archive.api}/api/v1/dicom/studies/{study_uid}/metadata", cookies=cookies
        )
        assert meta.status_code == 200
        # ... but an unsafe method with only the cookie needs the CSRF header.
        post = httpx.post(
            f"{running_archive.api}/api/v1/dicom/parse",
            cookies=cookies,
            files={"file": ("x", b"x")},
        )
        assert post.status_code == 403
        out = web.post("/logout/", data={"csrfmiddlewaretoken": web.cookies["csrftoken"]})
        assert "/login/" in str(out.url)
        assert "/login/" in str(web.get("/").url)
