"""Four processes store at once into one database and one storage area.

They share studies and send some of the same instances, so patient/study/series upserts
and duplicate detection race for real (SQLite with IMMEDIATE transactions, or
PostgreSQL). Afterwards no row may lack its blob, no blob its row, and the kept
aggregates must equal what is actually indexed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydicom.uid import generate_uid

from tests.factories import make_ct, write
from tests.integration.archive import Archive

STORE_SCRIPT = """
import json, sys
from noctispro.bootstrap import setup_django
setup_django()
from noctispro.core.ingest import InstanceRejected, Origin, store_instance
counts = {}
origin = Origin(channel="import", calling_ae_title=sys.argv[1])
for path in sys.argv[2:]:
    try:
        outcome = str(store_instance(path, origin).outcome)
    except InstanceRejected as exc:
        outcome = "rejected:" + exc.message
    counts[outcome] = counts.get(outcome, 0) + 1
print(json.dumps(counts))
"""


def test_four_processes_lose_and_orphan_nothing(new_archive: Archive, tmp_path: Path) -> None:
    studies = [generate_uid() for _ in range(3)]
    series = {s: [generate_uid(), generate_uid()] for s in studies}
    shared = []
    for i in range(30):  # every process sends these 30 (identical bytes)
        study = studies[i % 3]
        ds = make_ct(study_uid=study, series_uid=series[study][i % 2], instance_number=i, seed=i)
        shared.append(write(ds, tmp_path / "shared" / f"{i}.dcm"))
    own: list[list[Path]] = []
    for p in range(4):
        files = []
        for i in range(40):
            study = studies[(i + p) % 3]
            ds = make_ct(
                study_uid=study,
                series_uid=series[study][(i + p) % 2],
                instance_number=100 + i,
                seed=1000 * p + i,
            )
            files.append(write(ds, tmp_path / f"p{p}" / f"{i}.dcm"))
        own.append(files)

    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                STORE_SCRIPT,
                f"PROC{p}",
                *map(str, interleave(own[p], shared[p:] + shared[:p])),
            ],
            env=new_archive.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    total = {k: sum(r.get(k, 0) for r in results) for r in results for k in r}
    assert not [k for k in total if k.startswith("rejected")], total
    assert total["stored"] == 4 * 40 + 30
    assert total["duplicate"] == 3 * 30

    a = new_archive
    assert a.query("SELECT COUNT(*) FROM index_instance")[0][0] == 190
    a.assert_consistent()
    assert a.query("SELECT COUNT(*) FROM index_study")[0][0] == 3
    assert a.query("SELECT COUNT(*) FROM index_series")[0][0] == 6
    assert a.query("SELECT COUNT(*) FROM index_patient")[0][0] == 1
    mismatched = a.query(
        "SELECT s.study_instance_uid, s.number_of_instances, "
        "(SELECT COUNT(*) FROM index_instance i WHERE i.study_id = s.id), s.number_of_series, "
        "(SELECT COUNT(*) FROM index_series se WHERE se.study_id = s.id) FROM index_study s"
    )
    for uid, kept, counted, kept_series, counted_series in mismatched:
        assert (kept, kept_series) == (counted, counted_series), uid
    series_counts = a.query(
        "SELECT se.number_of_instances, (SELECT COUNT(*) FROM index_instance i "
        "WHERE i.series_id = se.id) FROM index_series se"
    )
    assert all(kept == counted for kept, counted in series_counts)
    new_instance_changes = a.query("SELECT COUNT(*) FROM index_change WHERE kind = 'NewInstance'")[
        0
    ][0]
    assert new_instance_changes == 190
    assert a.query("SELECT COUNT(*) FROM index_change WHERE kind = 'NewStudy'")[0][0] == 3


def interleave(a: list[Path], b: list[Path]) -> list[Path]:
    out: list[Path] = []
    for i in range(max(len(a), len(b))):
        out.extend(x[i] for x in (a, b) if i < len(x))
    return out
