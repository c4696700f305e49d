"""`noctispro import`: folders recursively and zip files, with a summary of what happened."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from pydicom.uid import generate_uid

from tests.factories import make_ct, to_bytes, write
from tests.integration.archive import Archive


def test_import_folders_and_zips(new_archive: Archive, tmp_path: Path) -> None:
    study_uid = generate_uid()
    folder = tmp_path / "export"
    for i in range(3):
        write(make_ct(study_uid=study_uid, instance_number=i), folder / "a" / "b" / f"{i}.dcm")
    (folder / "README.txt").write_text("exported by the modality\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(3, 5):
            z.writestr(f"series/{i}.dcm", to_bytes(make_ct(study_uid=study_uid, instance_number=i)))
    (tmp_path / "more.zip").write_bytes(buf.getvalue())

    result = new_archive.run("import", str(folder), str(tmp_path / "more.zip"), check=False)
    assert result.returncode == 1, result.stderr  # one file was rejected
    out = result.stdout
    assert "5 stored, 0 duplicate, 0 kept-first, 0 overwritten, 1 rejected" in out
    assert "README.txt: not a DICOM file" in out

    again = new_archive.run("import", str(folder / "a"))
    assert "0 stored, 3 duplicate" in again.stdout
    assert new_archive.query(
        "SELECT number_of_instances FROM index_study WHERE study_instance_uid = ?", (study_uid,)
    ) == [(5,)]
    new_archive.assert_consistent()


def test_import_into_a_named_facility(new_archive: Archive, tmp_path: Path) -> None:
    new_archive.run("facilities", "add", "EAST", "--name", "East clinic")
    path = write(make_ct(), tmp_path / "x.dcm")
    new_archive.run("import", "--facility", "EAST", str(path))
    assert new_archive.query(
        "SELECT f.code FROM index_study s JOIN accounts_facility f ON f.id = s.facility_id"
    ) == [("EAST",)]
    missing = new_archive.run("import", "--facility", "NOPE", str(path), check=False)
    assert missing.returncode == 2 and "no such facility" in missing.stderr
