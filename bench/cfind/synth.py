"""A synthetic archive for the C-FIND benchmark: planned once, written three ways.

`make_plan` decides, from a seed, every patient, study and series and how many
instances each series holds (`instances` in all, skewed per modality); the instances
themselves are produced on the fly by `instances_of`, as the exact `InstanceAttributes`,
stored blob and provenance that C-STORE ingest would hand to
`index.services.record_new_instance`. From there:

- `write_index` inserts the index rows in bulk (SQLite `executemany`, PostgreSQL `COPY`)
  exactly as `record_new_instance` + `mark_stable_studies` would leave them — search
  columns, aggregates, the change log — which `tests/unit/test_bench_synth.py` checks
  row by row against the real ingest code;
- `write_files` writes the same instances as small Part 10 files (no pixel data), for
  peers that must be filled over the network (Orthanc).

Run as a module to fill a freshly migrated NoctisPro database:

    python -m bench.cfind.synth --instances 1000000 --studies 20000 [--seed 1]

(NOCTISPRO_DATA_DIR / DATABASE_URL select the database, as for `noctispro`.)
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import itertools
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noctispro.core.attributes import InstanceAttributes
from noctispro.index.matching import person_name_key

# Bump when make_plan or instances_of changes what they produce (invalidates caches).
VERSION = 1
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
FIRST_DAY = dt.date(2016, 1, 1)
DAYS = 3653  # ten years: 2016-01-01 .. 2025-12-31


@dataclass(frozen=True)
class Modality:
    """How a modality's series look: SOP class, matrix, frames, instances per series."""

    code: str
    sop_class: str
    rows: int | None
    columns: int | None
    # log-normal weight of a series' instance count (scaled to the requested total)
    mu: float
    sigma: float
    frames: tuple[int, int] | None = None
    compressed: float = 0.0  # share of instances stored JPEG lossless
    descriptions: tuple[str, ...] = ("",)


MODALITIES = {
    m.code: m
    for m in [
        Modality(
            "CT",
            "1.2.840.10008.5.1.4.1.1.2",
            512,
            512,
            5.0,
            0.9,
            descriptions=("Axial 5mm", "Axial 1.25mm", "Coronal MPR", "Sagittal MPR", "Scout"),
        ),
        Modality(
            "MR",
            "1.2.840.10008.5.1.4.1.1.4",
            384,
            384,
            3.3,
            0.6,
            descriptions=("T1 SE sag", "T2 TSE ax", "FLAIR ax", "DWI b1000", "T1 post Gd", "SWI"),
        ),
        Modality(
            "CR",
            "1.2.840.10008.5.1.4.1.1.1",
            2500,
            2048,
            0.1,
            0.3,
            compressed=0.5,
            descriptions=("PA", "Lateral", "AP portable"),
        ),
        Modality(
            "DX",
            "1.2.840.10008.5.1.4.1.1.1.1",
            3000,
            3000,
            0.0,
            0.2,
            compressed=0.5,
            descriptions=("PA", "Lateral", "Oblique"),
        ),
        Modality(
            "US",
            "1.2.840.10008.5.1.4.1.1.3.1",
            600,
            800,
            2.0,
            0.7,
            frames=(20, 120),
            descriptions=("Abdomen", "Thyroid", "Carotid", "Obstetric"),
        ),
        Modality(
            "MG",
            "1.2.840.10008.5.1.4.1.1.1.2",
            4096,
            3328,
            0.3,
            0.3,
            compressed=0.8,
            descriptions=("R CC", "L CC", "R MLO", "L MLO"),
        ),
        Modality(
            "PT",
            "1.2.840.10008.5.1.4.1.1.128",
            200,
            200,
            5.3,
            0.4,
            descriptions=("PET AC", "PET NAC"),
        ),
        Modality(
            "NM",
            "1.2.840.10008.5.1.4.1.1.20",
            256,
            256,
            0.5,
            0.5,
            frames=(32, 128),
            descriptions=("Bone scan", "Thyroid", "Renal"),
        ),
        Modality(
            "XA",
            "1.2.840.10008.5.1.4.1.1.12.1",
            1024,
            1024,
            1.5,
            0.8,
            frames=(15, 90),
            descriptions=("LCA", "RCA", "LV gram"),
        ),
        Modality(
            "SR", "1.2.840.10008.5.1.4.1.1.88.67", None, None, 0.0, 0.0, descriptions=("Dose",)
        ),
    ]
}
# Primary modality of a study: share, series count range, extra series modalities.
STUDY_KINDS: list[tuple[str, float, tuple[int, int], tuple[tuple[str, float], ...]]] = [
    ("CT", 0.28, (1, 6), (("SR", 0.4),)),
    ("MR", 0.20, (3, 9), ()),
    ("CR", 0.20, (1, 3), ()),
    ("US", 0.10, (1, 3), ()),
    ("DX", 0.09, (1, 2), ()),
    ("MG", 0.05, (2, 4), ()),
    ("PT", 0.04, (1, 2), (("CT", 1.0), ("SR", 0.3))),
    ("NM", 0.02, (1, 3), (("CT", 0.3),)),
    ("XA", 0.02, (1, 5), ()),
]
BODY_PARTS = {
    "CT": ("HEAD", "CHEST", "ABDOMEN", "PELVIS", "SPINE"),
    "MR": ("BRAIN", "KNEE", "SPINE", "PROSTATE", "SHOULDER"),
    "CR": ("CHEST", "HAND", "KNEE", "FOOT"),
    "DX": ("CHEST", "HIP", "SPINE"),
    "US": ("ABDOMEN", "NECK", "PELVIS"),
    "MG": ("BREAST",),
    "PT": ("WHOLEBODY",),
    "NM": ("WHOLEBODY", "THYROID", "KIDNEY"),
    "XA": ("HEART",),
}

# Family names with a rough frequency. Mixed on purpose: several SMI* and *ANN* names,
# Latin-1 accents, and Japanese / Chinese / Korean names with ideographic and phonetic
# component groups (PS3.5 6.2.1.2).
FAMILY_NAMES: list[tuple[str, int]] = [
    ("SMITH", 20),
    ("SMITHSON", 4),
    ("SMIRNOV", 5),
    ("JOHNSON", 40),
    ("WILLIAMS", 35),
    ("BROWN", 30),
    ("JONES", 30),
    ("MILLER", 25),
    ("DAVIS", 25),
    ("WILSON", 20),
    ("TAYLOR", 20),
    ("ANDERSON", 18),
    ("THOMAS", 18),
    ("MOORE", 15),
    ("MARTIN", 15),
    ("JACKSON", 15),
    ("THOMPSON", 14),
    ("WHITE", 14),
    ("HARRIS", 12),
    ("CLARK", 12),
    ("LEWIS", 12),
    ("ROBINSON", 12),
    ("WALKER", 12),
    ("YOUNG", 10),
    ("ALLEN", 10),
    ("KING", 10),
    ("WRIGHT", 10),
    ("SCOTT", 10),
    ("HILL", 9),
    ("GREEN", 9),
    ("ADAMS", 9),
    ("BAKER", 9),
    ("NELSON", 8),
    ("CARTER", 8),
    ("MITCHELL", 8),
    ("ROBERTS", 8),
    ("TURNER", 8),
    ("PHILLIPS", 7),
    ("CAMPBELL", 7),
    ("PARKER", 7),
    ("EVANS", 7),
    ("EDWARDS", 7),
    ("COLLINS", 6),
    ("STEWART", 6),
    ("MORRIS", 6),
    ("MURPHY", 6),
    ("COOK", 6),
    ("ROGERS", 6),
    ("MANNING", 4),
    ("HANNA", 3),
    ("JOHANNSEN", 3),
    ("SCHMIDT", 12),
    ("SCHNEIDER", 10),
    ("FISCHER", 9),
    ("WEBER", 9),
    ("MEYER", 9),
    ("WAGNER", 8),
    ("BECKER", 8),
    ("HOFFMANN", 7),
    ("NEUMANN", 5),
    ("HERMANN", 5),
    ("BAUMANN", 4),
    ("Müller", 14),
    ("Schäfer", 5),
    ("Köhler", 4),
    ("García", 12),
    ("Fernández", 8),
    ("López", 8),
    ("Martínez", 8),
    ("Núñez", 3),
    ("Lefèvre", 4),
    ("DUPONT", 6),
    ("Gauthier", 3),
    ("ROSSI", 8),
    ("RUSSO", 6),
    ("Løvås", 2),
    ("Ødegård", 2),
    ("NGUYEN", 10),
    ("TRAN", 6),
    ("PATEL", 10),
    ("SINGH", 8),
    ("KOWALSKI", 5),
    ("NOWAK", 5),
    ("Yamada=山田=やまだ", 4),
    ("Tanaka=田中=たなか", 4),
    ("Suzuki=鈴木=すずき", 3),
    ("Wang=王", 5),
    ("Li=李", 5),
    ("Kim=김", 4),
]
GIVEN_NAMES = (
    "JOHN",
    "JAMES",
    "ROBERT",
    "MICHAEL",
    "WILLIAM",
    "DAVID",
    "RICHARD",
    "JOSEPH",
    "THOMAS",
    "MARY",
    "PATRICIA",
    "JENNIFER",
    "LINDA",
    "ELIZABETH",
    "BARBARA",
    "SUSAN",
    "JESSICA",
    "SARAH",
    "KAREN",
    "ANNA",
    "HANS",
    "PETER",
    "KLAUS",
    "SABINE",
    "Jürgen",
    "José",
    "María",
    "Chloé",
    "Zoë",
    "Søren",
    "LUCA",
    "GIULIA",
    "MINH",
    "ANIL",
)
JAPANESE_GIVEN = (("Tarou", "太郎", "たろう"), ("Hanako", "花子", "はなこ"), ("Ken", "健", "けん"))
REFERRING = [
    "House^Gregory^^Dr",
    "Cuddy^Lisa^^Dr",
    "WILSON^JAMES",
    "Grey^Meredith",
    "SHEPHERD^DEREK^C",
    "Quinn^Michaela^^Dr.",
    "Kildare^James",
    "Zhivago^Yuri",
    "Schweitzer^Albert",
    "",
]


@dataclass
class PatientPlan:
    pk: int
    facility: int  # index into the facilities given to the writers
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    charset: str
    studies: int = 0


@dataclass
class SeriesPlan:
    pk: int
    uid: str
    modality: str
    number: int
    description: str
    body_part: str
    date: str
    time: str
    instances: int = 1


@dataclass
class StudyPlan:
    pk: int
    seed: int
    patient: PatientPlan
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    referring: str
    received_at: dt.datetime
    series: list[SeriesPlan] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.series)


@dataclass
class Plan:
    seed: int
    patients: list[PatientPlan]
    studies: list[StudyPlan]  # in order of arrival (= study date order)

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.studies)

    @property
    def series(self) -> int:
        return sum(len(s.series) for s in self.studies)


def _uid(rng: random.Random) -> str:
    """A 2.25 UID (PS3.5 B.2): a random 128-bit number, reproducible from the seed."""
    return f"2.25.{rng.getrandbits(128)}"


def _charset(name: str) -> str:
    if name.isascii():
        return ""
    try:
        name.encode("latin-1")
    except UnicodeEncodeError:
        return "ISO_IR 192"
    return "ISO_IR 100"


def _patient_name(rng: random.Random, families: list[str], cumulative: list[int]) -> str:
    family = families[bisect.bisect_right(cumulative, rng.randrange(cumulative[-1]))]
    if "=" in family:
        alpha, ideo, *phon = family.split("=")
        if phon:  # Japanese: all three groups
            given = rng.choice(JAPANESE_GIVEN)
            return f"{alpha}^{given[0]}={ideo}^{given[1]}={phon[0]}^{given[2]}"
        return f"{alpha}^{rng.choice(('Wei', 'Min', 'Jun'))}={ideo}^{rng.choice('伟敏军')}"
    given = rng.choice(GIVEN_NAMES)
    given = given.upper() if family.isupper() else given.title()
    shape = rng.random()
    if shape < 0.25:  # with a middle initial
        return f"{family}^{given}^{rng.choice('ABCDEFGHJKLMNPRSTW')}"
    if shape < 0.3:  # with a prefix or suffix
        return f"{family}^{given}^^{rng.choice(('MR', 'MRS', 'DR'))}"
    if shape < 0.32:
        return f"{family}^{given}^^^{rng.choice(('JR', 'III'))}"
    return f"{family}^{given}"


def make_plan(instances: int, studies: int, patients: int | None = None, seed: int = 1) -> Plan:
    """Every patient, study and series, and how many instances each series holds."""
    if studies < 1 or instances < studies:
        raise ValueError("need at least one study and one instance per study")
    rng = random.Random(seed)
    n_patients = max(1, min(studies, patients if patients else studies * 3 // 8))
    families = [f for f, _ in FAMILY_NAMES]
    cumulative = list(itertools.accumulate(w for _, w in FAMILY_NAMES))
    patient_plans = []
    for pk in range(1, n_patients + 1):
        name = _patient_name(rng, families, cumulative)
        birth = FIRST_DAY - dt.timedelta(days=rng.randrange(365 * 90))
        patient_plans.append(
            PatientPlan(
                pk=pk,
                facility=0 if rng.random() < 0.9 else 1,
                patient_id=f"P{pk * 7919 % 10_000_000:07d}",
                issuer="" if rng.random() < 0.8 else "HOSP-A",
                name=name,
                birth_date=birth.strftime("%Y%m%d") if rng.random() < 0.97 else "",
                sex=rng.choice("MMMFFFO") if rng.random() < 0.98 else "",
                charset=_charset(name),
            )
        )
    # Every patient has a study; the others go mostly to a few (follow-up patients).
    owners = list(patient_plans)
    weights = [rng.paretovariate(2.5) for _ in patient_plans]
    owners += rng.choices(patient_plans, weights=weights, k=studies - n_patients)
    days = sorted(rng.randrange(DAYS) for _ in range(studies))
    rng.shuffle(owners)

    kinds = [k for k, *_ in STUDY_KINDS]
    kind_weights = [w for _, w, *_ in STUDY_KINDS]
    specs = {k: (count, extra) for k, _, count, extra in STUDY_KINDS}
    study_plans: list[StudyPlan] = []
    weights_per_series: list[float] = []
    series_pk = 0
    for pk, (day, patient) in enumerate(zip(days, owners, strict=True), start=1):
        date = FIRST_DAY + dt.timedelta(days=day)
        seconds = rng.randrange(7 * 3600, 20 * 3600)
        received = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC) + dt.timedelta(
            seconds=seconds + 600
        )
        kind = rng.choices(kinds, weights=kind_weights)[0]
        (low, high), extra = specs[kind]
        modalities = [kind] * rng.randint(low, high)
        for code, chance in extra:
            if rng.random() < chance:
                modalities.append(code)
        if kind == "PT":  # the CT of a PET/CT comes first
            modalities.sort(key=lambda m: m != "CT")
        modalities = modalities[:10]
        body = rng.choice(BODY_PARTS[kind])
        study_time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
        patient.studies += 1
        study = StudyPlan(
            pk=pk,
            seed=rng.getrandbits(64),
            patient=patient,
            uid=_uid(rng),
            date=date.strftime("%Y%m%d"),
            time=study_time,
            accession=f"A{rng.randrange(10**9):09d}",
            study_id=str(rng.randrange(1, 100000)),
            description=f"{kind} {body.title()}",
            referring=rng.choice(REFERRING),
            received_at=received,
        )
        for number, code in enumerate(modalities, start=1):
            series_pk += 1
            mod = MODALITIES[code]
            start = seconds + 60 * number
            study.series.append(
                SeriesPlan(
                    pk=series_pk,
                    uid=_uid(rng),
                    modality=code,
                    number=number,
                    description=rng.choice(mod.descriptions),
                    body_part="" if code == "SR" else body,
                    date=study.date,
                    time=f"{start // 3600 % 24:02d}{start // 60 % 60:02d}{start % 60:02d}",
                )
            )
            weights_per_series.append(
                rng.lognormvariate(mod.mu, mod.sigma) if code not in ("SR", "DX") else 0.0
            )
        study_plans.append(study)
    _allocate(study_plans, weights_per_series, instances)
    return Plan(seed=seed, patients=patient_plans, studies=study_plans)


def _allocate(studies: list[StudyPlan], weights: list[float], total: int) -> None:
    """Give each series max(1, its share of `total`); then fix the sum exactly."""
    series = [s for study in studies for s in study.series]
    if total < len(series):  # fewer instances than series: drop trailing series
        for study in studies:
            study.series = study.series[:1]
        series = [s for study in studies for s in study.series]
        weights = [1.0] * len(series)
    spare = total - len(series)
    scale = spare / (sum(weights) or 1.0)
    for s, w in zip(series, weights, strict=True):
        s.instances = 1 + int(w * scale)
    missing = total - sum(s.instances for s in series)
    order = sorted(range(len(series)), key=lambda i: -weights[i])
    i = 0
    while missing > 0:
        series[order[i % len(order)]].instances += 1
        missing -= 1
        i += 1


@dataclass(frozen=True)
class Blob:
    """What `index.services.StoredBlob` holds for a stored file."""

    storage_key: str
    size_bytes: int
    dataset_sha256: str


@dataclass(frozen=True)
class Received:
    """What `index.services.Provenance` holds (no user: these came over DICOM)."""

    received_at: dt.datetime
    source_ae_title: str
    source_ip: str


@dataclass(frozen=True)
class Arrival:
    """One instance as ingest would record it."""

    series: SeriesPlan
    attrs: InstanceAttributes
    blob: Blob
    provenance: Received


def instances_of(study: StudyPlan) -> Iterator[Arrival]:
    """A study's instances in order of arrival, reproducible from its seed."""
    rng = random.Random(study.seed)
    patient = study.patient
    received = study.received_at
    step = dt.timedelta(milliseconds=40)
    for series in study.series:
        mod = MODALITIES[series.modality]
        source_ae = f"{series.modality}_SCANNER{study.seed % 3 + 1}"
        source_ip = f"10.1.{list(MODALITIES).index(series.modality)}.{study.seed % 3 + 10}"
        for number in range(1, series.instances + 1):
            frames = rng.randint(*mod.frames) if mod.frames and rng.random() < 0.7 else None
            compressed = rng.random() < mod.compressed
            pixels = (mod.rows or 0) * (mod.columns or 0) * 2 * (frames or 1)
            size = 1800 + (pixels // 2 if compressed else pixels) + rng.randrange(400)
            key = f"{rng.getrandbits(128):032x}"
            attrs = InstanceAttributes(
                sop_class_uid=mod.sop_class,
                sop_instance_uid=_uid(rng),
                study_instance_uid=study.uid,
                series_instance_uid=series.uid,
                transfer_syntax_uid=JPEG_LOSSLESS_SV1 if compressed else EXPLICIT_LE,
                specific_character_set=patient.charset,
                patient_name=patient.name,
                patient_id=patient.patient_id,
                issuer_of_patient_id=patient.issuer,
                patient_birth_date=patient.birth_date,
                patient_sex=patient.sex,
                study_date=study.date,
                study_time=study.time,
                accession_number=study.accession,
                study_id=study.study_id,
                study_description=study.description,
                referring_physician_name=study.referring,
                modality=series.modality,
                series_number=series.number,
                series_description=series.description,
                body_part_examined=series.body_part,
                series_date=series.date,
                series_time=series.time,
                instance_number=number,
                number_of_frames=frames,
                rows=mod.rows,
                columns=mod.columns,
            )
            yield Arrival(
                series,
                attrs,
                Blob(
                    storage_key=f"{key[:2]}/{key[2:4]}/{key}.dcm",
                    size_bytes=size,
                    dataset_sha256=f"{rng.getrandbits(256):064x}",
                ),
                Received(received_at=received, source_ae_title=source_ae, source_ip=source_ip),
            )
            received += step


# --- bulk index rows -------------------------------------------------------------------

PATIENT_COLUMNS = (
    "id, facility_id, patient_id, issuer_of_patient_id, patient_name, patient_name_search,"
    " patient_birth_date, patient_sex, number_of_studies, created_at"
)
STUDY_COLUMNS = (
    "id, facility_id, patient_record_id, study_instance_uid, study_date, study_time,"
    " accession_number, study_id, study_description, referring_physician_name,"
    " referring_physician_name_search, patient_name, patient_name_search, patient_id,"
    " issuer_of_patient_id, patient_birth_date, patient_sex, specific_character_set,"
    " modalities_in_study, sop_classes_in_study, number_of_series, number_of_instances,"
    " size_bytes, created_at, last_received_at, is_stable"
)
SERIES_COLUMNS = (
    "id, study_id, series_instance_uid, modality, series_number, series_description,"
    " body_part_examined, series_date, series_time, number_of_instances, created_at"
)
INSTANCE_COLUMNS = (
    "id, series_id, study_id, sop_class_uid, sop_instance_uid, instance_number,"
    " number_of_frames, rows, columns, transfer_syntax_uid, size_bytes, dataset_sha256,"
    " storage_key, received_at, source_ae_title, source_ip, source_user_id"
)
CHANGE_COLUMNS = (
    "kind, facility_id, study_instance_uid, series_instance_uid, sop_instance_uid,"
    " details, created_at"
)
TABLES = {
    "index_patient": PATIENT_COLUMNS,
    "index_study": STUDY_COLUMNS,
    "index_series": SERIES_COLUMNS,
    "index_instance": INSTANCE_COLUMNS,
    "index_change": CHANGE_COLUMNS,
}


def _multi(existing: str, value: str) -> str:
    """Backslash-separated set in order of arrival (as index.services keeps it)."""
    if not value:
        return existing
    items = existing.split("\\") if existing else []
    return existing if value in items else "\\".join([*items, value])


@dataclass
class Rows:
    tables: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {name: [] for name in TABLES}
    )

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.tables.values())


@dataclass
class RowMaker:
    """The rows ingest leaves, study after study in order of arrival."""

    facilities: Sequence[int]
    ops: Any
    seen_patients: set[int] = field(default_factory=set)
    last_instance_pk: int = 0

    def study(self, study: StudyPlan, rows: Rows) -> None:
        """One study's rows (patients are written separately, first)."""
        _study_rows(self, study, rows)


def _study_rows(maker: RowMaker, study: StudyPlan, rows: Rows) -> None:
    ops = maker.ops
    patient = study.patient
    facility = maker.facilities[patient.facility]
    first_of_patient = patient.pk not in maker.seen_patients
    maker.seen_patients.add(patient.pk)
    changes = rows.tables["index_change"]
    instances = rows.tables["index_instance"]
    modalities = sop_classes = ""
    size = 0
    created = last = None
    series_seen: set[int] = set()
    series_first: dict[int, Any] = {}
    instance_pk = maker.last_instance_pk
    for arrival in instances_of(study):
        attrs, blob, prov = arrival.attrs, arrival.blob, arrival.provenance
        now = ops.adapt_datetimefield_value(prov.received_at)
        if created is None:
            created = now
            if first_of_patient:
                changes.append(_change("NewPatient", facility, attrs, "{}", now))
            changes.append(_change("NewStudy", facility, attrs, "{}", now))
        if arrival.series.pk not in series_seen:
            series_seen.add(arrival.series.pk)
            series_first[arrival.series.pk] = now
            changes.append(_change("NewSeries", facility, attrs, "{}", now))
        last = now
        modalities = _multi(modalities, attrs.modality)
        sop_classes = _multi(sop_classes, attrs.sop_class_uid)
        size += blob.size_bytes
        instance_pk += 1
        instances.append(
            (
                instance_pk,
                arrival.series.pk,
                study.pk,
                attrs.sop_class_uid,
                attrs.sop_instance_uid,
                attrs.instance_number,
                attrs.number_of_frames,
                attrs.rows,
                attrs.columns,
                attrs.transfer_syntax_uid,
                blob.size_bytes,
                blob.dataset_sha256,
                blob.storage_key,
                now,
                prov.source_ae_title,
                prov.source_ip,
                None,
            )
        )
        details = json.dumps({"size": blob.size_bytes, "sop_class_uid": attrs.sop_class_uid})
        changes.append(_change("NewInstance", facility, attrs, details, now))
    maker.last_instance_pk = instance_pk
    for series in study.series:
        rows.tables["index_series"].append(
            (
                series.pk,
                study.pk,
                series.uid,
                series.modality,
                series.number,
                series.description,
                series.body_part,
                series.date,
                series.time,
                series.instances,
                series_first[series.pk],
            )
        )
    name_key = person_name_key(patient.name)[:324]
    rows.tables["index_study"].append(
        (
            study.pk,
            facility,
            patient.pk,
            study.uid,
            study.date,
            study.time,
            study.accession,
            study.study_id,
            study.description,
            study.referring,
            person_name_key(study.referring)[:324],
            patient.name,
            name_key,
            patient.patient_id,
            patient.issuer,
            patient.birth_date,
            patient.sex,
            patient.charset,
            modalities,
            sop_classes,
            len(study.series),
            study.instances,
            size,
            created,
            last,
            True,
        )
    )
    # mark_stable_studies, once the study has been quiet for the stable age.
    stable = json.dumps(
        {"number_of_series": len(study.series), "number_of_instances": study.instances}
    )
    changes.append(("StableStudy", facility, study.uid, "", "", stable, last))


def _change(kind: str, facility: int, a: InstanceAttributes, details: str, now: Any) -> tuple:
    return (
        kind,
        facility,
        a.study_instance_uid,
        a.series_instance_uid,
        a.sop_instance_uid,
        details,
        now,
    )


def patient_rows(plan: Plan, facilities: Sequence[int], ops: Any) -> list[tuple[Any, ...]]:
    first: dict[int, dt.datetime] = {}
    for study in plan.studies:
        first.setdefault(study.patient.pk, study.received_at)
    return [
        (
            p.pk,
            facilities[p.facility],
            p.patient_id,
            p.issuer,
            p.name,
            person_name_key(p.name)[:324],
            p.birth_date,
            p.sex,
            p.studies,
            ops.adapt_datetimefield_value(first[p.pk]),
        )
        for p in plan.patients
        if p.pk in first
    ]


def write_index(
    connection: Any, plan: Plan, facilities: Sequence[int], *, batch: int = 50_000
) -> None:
    """Insert the plan's rows through a Django connection, inside the caller's transaction.

    The index tables must be empty (row ids are the plan's). SQLite: `executemany` on
    the underlying sqlite3 connection; PostgreSQL: `COPY`, then the id sequences are
    moved past the rows.
    """
    connection.ensure_connection()
    raw = connection.connection
    ops = connection.ops
    vendor = connection.vendor
    with connection.cursor() as c:
        for table in TABLES:
            c.execute(f"SELECT COUNT(*) FROM {table}")
            if c.fetchone()[0]:
                raise RuntimeError(f"{table} is not empty")
    maker = RowMaker(facilities, ops)

    def flush(rows: Rows) -> None:
        for table, columns in TABLES.items():
            data = rows.tables[table]
            if not data:
                continue
            if vendor == "postgresql":
                with raw.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
                    for row in data:
                        cp.write_row(row)
            else:
                marks = ", ".join("?" * len(data[0]))
                raw.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", data)
            data.clear()

    pending = Rows()
    pending.tables["index_patient"] = patient_rows(plan, facilities, ops)
    flush(pending)
    for study in plan.studies:
        maker.study(study, pending)
        if len(pending.tables["index_instance"]) >= batch:
            flush(pending)
    flush(pending)
    if vendor == "postgresql":
        with connection.cursor() as c:
            for table in TABLES:
                c.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST((SELECT MAX(id) FROM {table}), 1))"
                )


# --- Part 10 files ---------------------------------------------------------------------


def write_files(plan: Plan, root: Path) -> list[Path]:
    """Every instance as a small Part 10 file (no pixel data), one folder per study."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    paths = []
    for study in plan.studies:
        folder = root / f"{study.pk:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for arrival in instances_of(study):
            a = arrival.attrs
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = a.sop_class_uid
            meta.MediaStorageSOPInstanceUID = a.sop_instance_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            if a.specific_character_set:
                ds.SpecificCharacterSet = a.specific_character_set
            ds.SOPClassUID = a.sop_class_uid
            ds.SOPInstanceUID = a.sop_instance_uid
            ds.StudyDate = a.study_date
            ds.SeriesDate = a.series_date
            ds.StudyTime = a.study_time
            ds.SeriesTime = a.series_time
            ds.AccessionNumber = a.accession_number
            ds.Modality = a.modality
            ds.ReferringPhysicianName = a.referring_physician_name
            ds.StudyDescription = a.study_description
            ds.SeriesDescription = a.series_description
            ds.PatientName = a.patient_name
            ds.PatientID = a.patient_id
            if a.issuer_of_patient_id:
                ds.IssuerOfPatientID = a.issuer_of_patient_id
            ds.PatientBirthDate = a.patient_birth_date
            ds.PatientSex = a.patient_sex
            if a.body_part_examined:
                ds.BodyPartExamined = a.body_part_examined
            ds.StudyInstanceUID = a.study_instance_uid
            ds.SeriesInstanceUID = a.series_instance_uid
            ds.StudyID = a.study_id
            ds.SeriesNumber = a.series_number
            ds.InstanceNumber = a.instance_number
            if a.rows is not None:
                ds.Rows = a.rows
                ds.Columns = a.columns
            if a.number_of_frames is not None:
                ds.NumberOfFrames = a.number_of_frames
            path = folder / f"{a.instance_number:05d}-{arrival.series.number:02d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fill a migrated NoctisPro index with a plan.")
    p.add_argument("--instances", type=int, default=1_000_000)
    p.add_argument("--studies", type=int, default=20_000)
    p.add_argument("--patients", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    from noctispro.bootstrap import setup_django

    setup_django()
    from django.db import connection, transaction

    from noctispro.accounts.facilities import default_facility
    from noctispro.accounts.models import Facility

    t0 = time.perf_counter()
    plan = make_plan(args.instances, args.studies, args.patients, args.seed)
    t1 = time.perf_counter()
    main_facility = default_facility()
    other, _ = Facility.objects.get_or_create(code="CLINIC2", defaults={"name": "Clinic 2"})
    if connection.vendor == "sqlite":
        with connection.cursor() as c:
            c.execute("PRAGMA synchronous=OFF")
            c.execute("PRAGMA cache_size=-262144")
    with transaction.atomic():
        write_index(connection, plan, [main_facility.pk, other.pk])
    t2 = time.perf_counter()
    with connection.cursor() as c:
        # What autovacuum does on PostgreSQL soon after a bulk change; SQLite keeps no
        # statistics unless asked (see docs/benchmarks.md).
        if connection.vendor == "postgresql":
            c.execute("ANALYZE")
        else:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "patients": len(plan.patients),
                "studies": len(plan.studies),
                "series": plan.series,
                "instances": plan.instances,
                "plan_seconds": round(t1 - t0, 2),
                "insert_seconds": round(t2 - t1, 2),
                "finish_seconds": round(t3 - t2, 2),
                "default_facility": main_facility.pk,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
