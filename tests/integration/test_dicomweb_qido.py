"""QIDO-RS against a running `noctispro api`, from dicomweb-client and plain HTTP.

The data set is the C-FIND suite's (tests/integration/test_cfind.py), sent by C-STORE to
a running `noctispro dicom`; the queries are the same study-root cases, asked as QIDO-RS
query parameters, and every answer is compared with the ground truth read from the files
with pydicom — never with the archive's database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.factories import make_ct, write
from tests.helpers import pydicom_test_files
from tests.integration.archive import Archive, archive_at
from tests.integration.test_cfind import (
    CHARSET_FILES,
    LOADER,
    NOT_INDEXED,
    RETURN_KEYS,
    STUDY_ROOT,
    UNIQUE,
    Case,
    Truth,
    attr,
    cases,
    generated_files,
    norm,
    send,
    truth_of,
)

PASSWORD = "Qido-test-pw-1"


@dataclass
class Loaded:
    archive: Archive
    truth: Truth
    north: list[str]
    south: list[str]
    client: DICOMwebClient


def dicomweb_client(archive: Archive, username: str = "admin", password: str | None = None):
    token = archive.token(username, password)
    return DICOMwebClient(
        url=f"{archive.api}/dicom-web", headers={"Authorization": f"Bearer {token}"}
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    root = tmp_path_factory.mktemp("qido")
    with archive_at(root / "archive") as archive:
        archive.run("facilities", "add", "NORTH", "--name", "North", "--ae", "NORTH_CT")
        archive.run("facilities", "add", "SOUTH", "--name", "South", "--ae", "SOUTH_CT")
        archive.run(
            "users", "add", "north", "--role", "radiologist", "--facility", "NORTH",
            "--password", PASSWORD,
        )  # fmt: skip
        archive.env["NOCTISPRO_DICOMWEB_BASE_URL"] = f"{archive.api}/dicom-web"
        archive.start("dicom")
        archive.start("api")
        port = archive.dicom_port
        sent = send(
            port,
            [*generated_files(root / "generated"), *pydicom_test_files(), *CHARSET_FILES],
            LOADER,
        )
        assert len(sent) > 120
        scoped = {}
        for facility in ("NORTH", "SOUTH"):
            ds = make_ct(patient_id="SHARED", accession=f"{facility}0", rows=4, columns=4)
            path = write(ds, root / facility / "0.dcm")
            assert send(port, [path], f"{facility}_CT") == [path]
            scoped[facility] = [str(ds.StudyInstanceUID)]
        # The admin sees every facility: the truth includes the scoped studies.
        truth = truth_of([*sent, root / "NORTH" / "0.dcm", root / "SOUTH" / "0.dcm"])
        yield Loaded(archive, truth, scoped["NORTH"], scoped["SOUTH"], dicomweb_client(archive))


SEARCH = {
    "STUDY": "search_for_studies",
    "SERIES": "search_for_series",
    "IMAGE": "search_for_instances",
}


def qido(client: DICOMwebClient, case: Case) -> list[Dataset]:
    found = getattr(client, SEARCH[case.level])(
        search_filters=dict(case.keys), fields=RETURN_KEYS[case.level]
    )
    return [Dataset.from_json(item) for item in found]


def check(case: Case, truth: Truth, responses: list[Dataset]) -> None:
    key = UNIQUE[case.level]
    expected = {row[key]: row for row in truth.rows(case.level) if case.predicate(row)}
    got = {norm(r.get(key)): r for r in responses}
    assert len(got) == len(responses), f"{case.label}: duplicate results"
    assert set(got) == set(expected), f"{case.label}: {set(got) ^ set(expected)}"
    for uid, response in got.items():
        assert response.InstanceAvailability == "ONLINE"
        assert response.RetrieveURL.endswith(uid)
        for keyword in RETURN_KEYS[case.level]:
            if keyword in NOT_INDEXED:
                assert keyword not in response, f"{case.label}: {keyword} is not in the index"
                continue
            want = expected[uid].get(keyword)
            have = attr(response, keyword)
            if keyword == "ModalitiesInStudy":
                want = sorted(want or ())
                have = sorted((have,) if isinstance(have, str) else have or ())
            assert have == want, f"{case.label}: {keyword} of {uid}: {have!r} != {want!r}"


def test_query_suite_with_dicomweb_client(loaded: Loaded) -> None:
    suite = [c for c in cases(loaded.truth) if c.model == STUDY_ROOT]
    assert len(suite) >= 25
    nonempty = 0
    for case in suite:
        responses = qido(loaded.client, case)
        check(case, loaded.truth, responses)
        nonempty += bool(responses)
    assert nonempty >= len(suite) - 2


def _api(loaded: Loaded, username: str = "admin", password: str | None = None) -> httpx.Client:
    return loaded.archive.client(username, password)


def test_tags_keywords_and_uid_lists_agree(loaded: Loaded) -> None:
    studies = sorted(loaded.truth.studies)[:3]
    with _api(loaded) as api:
        by_keyword = api.get("/dicom-web/studies", params={"StudyInstanceUID": ",".join(studies)})
        by_tag = api.get("/dicom-web/studies", params={"0020000D": "\\".join(studies)})
    assert by_keyword.status_code == by_tag.status_code == 200
    assert by_keyword.headers["content-type"] == "application/dicom+json"
    assert {s["0020000D"]["Value"][0] for s in by_keyword.json()} == set(studies)
    assert by_keyword.json() == by_tag.json()


def test_nested_resources(loaded: Loaded) -> None:
    truth = loaded.truth
    study = next(uid for uid, s in truth.studies.items() if len(s["series"]) > 1)
    series = sorted(truth.studies[study]["series"])
    client = loaded.client
    found = client.search_for_series(study_instance_uid=study)
    assert {s["0020000E"]["Value"][0] for s in found} == set(series)
    in_study = client.search_for_instances(study_instance_uid=study)
    in_series = client.search_for_instances(study_instance_uid=study, series_instance_uid=series[0])
    want = {k for k, v in truth.instances.items() if v["StudyInstanceUID"] == study}
    assert {i["00080018"]["Value"][0] for i in in_study} == want
    assert {i["00080018"]["Value"][0] for i in in_series} == {
        k for k, v in truth.instances.items() if v["SeriesInstanceUID"] == series[0]
    }
    # Outside a study, series results carry the study's attributes (PS3.18 Table 10.6.3-4).
    anywhere = client.search_for_series(search_filters={"SeriesInstanceUID": series[0]})
    assert anywhere[0]["00100020"]["Value"][0] == truth.studies[study]["PatientID"]
    assert "00100020" not in found[0]


def test_paging_and_total_count(loaded: Loaded) -> None:
    total = len(loaded.truth.studies)
    seen: list[str] = []
    with _api(loaded) as api:
        for offset in range(0, total, 7):
            r = api.get("/dicom-web/studies", params={"limit": "7", "offset": str(offset)})
            assert r.status_code == 200
            assert r.headers["x-total-count"] == str(total)
            seen += [s["0020000D"]["Value"][0] for s in r.json()]
            if offset + 7 < total:
                assert "additional results" in r.headers["warning"]
        past = api.get("/dicom-web/studies", params={"offset": str(total)})
    assert sorted(seen) == sorted(loaded.truth.studies)
    assert len(seen) == total
    assert past.status_code == 204
    assert past.headers["x-total-count"] == str(total)


def test_includefield_all_and_fuzzy_matching(loaded: Loaded) -> None:
    with _api(loaded) as api:
        r = api.get("/dicom-web/studies", params={"PatientID": "G-DOE-3", "includefield": "all"})
        (study,) = r.json()
        assert study["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHANNES"}]
        assert study["00080062"]["vr"] == "UI"  # SOPClassesInStudy: only with includefield
        fuzzy = api.get(
            "/dicom-web/studies", params={"PatientName": "johannes", "fuzzymatching": "true"}
        )
        exact = api.get("/dicom-web/studies", params={"PatientName": "johannes"})
    assert [s["00100020"]["Value"][0] for s in fuzzy.json()] == ["G-DOE-3"]
    assert exact.status_code == 204


def test_person_names_are_objects(loaded: Loaded) -> None:
    found = loaded.client.search_for_studies(search_filters={"PatientID": "G-YAM"})
    assert found[0]["00100010"]["Value"] == [{"Alphabetic": "山田^太郎"}]


def test_ignored_filters_are_named_in_a_warning(loaded: Loaded) -> None:
    with _api(loaded) as api:
        r = api.get(
            "/dicom-web/studies",
            params={"PatientID": "G-DOE-3", "PatientAge": "040Y", "00400275.00321060": "X"},
        )
    assert r.status_code == 200
    assert len(r.json()) == 1
    assert "PatientAge" in r.headers["warning"]
    assert "00400275.00321060" in r.headers["warning"]
    with _api(loaded) as api:  # request text quoted in a header cannot break out of it
        r = api.get("/dicom-web/studies", params={"PatientID": "G-DOE-3", "1.2\r\nX-Evil: ü": ""})
    assert r.status_code == 200
    assert "x-evil" not in r.headers
    assert "1.2??X-Evil: ?" in r.headers["warning"]


@pytest.mark.parametrize(
    ("params", "headers", "code"),
    [
        ({"NoSuchAttribute": "1"}, {}, 400),
        ({"limit": "-1"}, {}, 400),
        ({"offset": "x"}, {}, 400),
        ({"fuzzymatching": "maybe"}, {}, 400),
        ({}, {"Accept": 'multipart/related; type="application/dicom+xml"'}, 406),
        ({"PatientName": "nobody-at-all"}, {}, 204),
    ],
)
def test_bad_and_empty_queries(
    loaded: Loaded, params: dict[str, str], headers: dict[str, str], code: int
) -> None:
    with _api(loaded) as api:
        r = api.get("/dicom-web/studies", params=params, headers=headers)
    assert r.status_code == code, r.text
    if code >= 400:
        assert r.json()["detail"]
    if code == 204:
        assert r.content == b""
        assert r.headers["x-total-count"] == "0"


def test_facility_scoping(loaded: Loaded) -> None:
    north = dicomweb_client(loaded.archive, "north", PASSWORD)
    studies = {s["0020000D"]["Value"][0] for s in north.search_for_studies()}
    assert studies == set(loaded.north)
    assert north.search_for_series(search_filters={"StudyInstanceUID": loaded.south[0]}) == []
    assert north.search_for_instances(study_instance_uid=loaded.south[0]) == []
    with _api(loaded, "north", PASSWORD) as api:
        r = api.get("/dicom-web/studies")
        assert r.headers["x-total-count"] == "1"
        assert api.get(f"/dicom-web/studies/{loaded.south[0]}/metadata").status_code == 404
    anonymous = httpx.get(f"{loaded.archive.api}/dicom-web/studies")
    assert anonymous.status_code == 401
