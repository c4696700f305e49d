"""The synthetic CT set every target receives: generated once per benchmark run."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.factories import make_ct  # noqa: E402  (needs the repo root on sys.path)

ROWS = COLUMNS = 512
PER_SERIES = 100
SERIES_PER_STUDY = 5


@dataclass(frozen=True)
class Instance:
    path: Path
    sop_instance_uid: str
    size: int


@dataclass(frozen=True)
class InstanceSet:
    root: Path
    instances: tuple[Instance, ...]

    @property
    def count(self) -> int:
        return len(self.instances)

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.instances)

    @property
    def sop_uids(self) -> frozenset[str]:
        return frozenset(i.sop_instance_uid for i in self.instances)

    def paths(self) -> list[str]:
        return [str(i.path) for i in self.instances]

    def split(self, groups: int) -> list[list[str]]:
        """Contiguous chunks (a series mostly stays on one association, as modalities send)."""
        paths = self.paths()
        size, extra = divmod(len(paths), groups)
        out, start = [], 0
        for g in range(groups):
            end = start + size + (1 if g < extra else 0)
            out.append(paths[start:end])
            start = end
        return [chunk for chunk in out if chunk]


def generate(root: Path, count: int) -> InstanceSet:
    """`count` 512x512 16-bit signed CT images, Explicit VR Little Endian.

    Series of 100 (the last one may be shorter), 5 series per study, one patient
    per study; every SOP Instance UID is distinct; pixels are seeded random.
    """
    root.mkdir(parents=True, exist_ok=True)
    instances: list[Instance] = []
    study_uid = series_uid = ""
    for n in range(count):
        series_index, number = divmod(n, PER_SERIES)
        if number == 0:
            if series_index % SERIES_PER_STUDY == 0:
                study_uid = generate_uid()
                study_index = series_index // SERIES_PER_STUDY
            series_uid = generate_uid()
        ds = make_ct(
            study_uid=study_uid,
            series_uid=series_uid,
            patient_id=f"BENCH{study_index:04d}",
            patient_name=f"Bench^Patient{study_index:04d}",
            accession=f"BENCHACC{study_index:04d}",
            instance_number=number + 1,
            rows=ROWS,
            columns=COLUMNS,
            seed=n,
            description="Ingest benchmark",
        )
        ds.SeriesNumber = series_index + 1
        ds.SliceLocation = float(number)
        ds.ImagePositionPatient = [0.0, 0.0, float(number)]
        path = root / f"s{series_index:03d}" / f"i{number:03d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        instances.append(Instance(path, str(ds.SOPInstanceUID), path.stat().st_size))
    return InstanceSet(root, tuple(instances))
