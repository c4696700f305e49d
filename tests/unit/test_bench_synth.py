"""The C-FIND benchmark's bulk-written index must be exactly what ingest writes.

`bench/cfind/synth.py` inserts a million instances' rows directly; this writes a small
plan both ways — bulk, and through `index.services.record_new_instance` +
`mark_stable_studies` — and compares every row of every index table.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from bench.cfind import synth
from django.db import connection, transaction

from noctispro.accounts.facilities import default_facility
from noctispro.accounts.models import Facility
from noctispro.index import services
from noctispro.index.models import Change, Instance, Patient, Series, Study

pytestmark = pytest.mark.django_db(transaction=True)

FAR_FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _dump() -> dict[str, Any]:
    """Every index row keyed by UIDs instead of row ids (those differ between the runs)."""
    patients = {
        p["id"]: p
        for p in Patient.objects.values(
            "id",
            "facility_id",
            "patient_id",
            "issuer_of_patient_id",
            "patient_name",
            "patient_name_search",
            "patient_birth_date",
            "patient_sex",
            "number_of_studies",
            "created_at",
        )
    }
    studies = {s["id"]: s for s in Study.objects.values()}
    series = {s["id"]: s for s in Series.objects.values()}

    def strip(row: dict[str, Any], *drop: str) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in drop}

    def patient_key(pk: int) -> tuple[str, str]:
        return patients[pk]["patient_id"], patients[pk]["issuer_of_patient_id"]

    changes = [
        strip(c, "id") | {"details": json.loads(json.dumps(c["details"]))}
        for c in Change.objects.order_by("id").values()
    ]
    return {
        "patients": sorted(
            (strip(p, "id") for p in patients.values()), key=lambda p: p["patient_id"]
        ),
        "studies": {
            s["study_instance_uid"]: strip(s, "id", "patient_record_id")
            | {"patient": patient_key(s["patient_record_id"])}
            for s in studies.values()
        },
        "series": {
            s["series_instance_uid"]: strip(s, "id", "study_id")
            | {"study": studies[s["study_id"]]["study_instance_uid"]}
            for s in series.values()
        },
        "instances": {
            i["sop_instance_uid"]: strip(i, "id", "series_id", "study_id")
            | {
                "series": series[i["series_id"]]["series_instance_uid"],
                "study": studies[i["study_id"]]["study_instance_uid"],
            }
            for i in Instance.objects.values()
        },
        "changes": [c for c in changes if c["kind"] != "StableStudy"],
        "stable": sorted(
            (strip(c, "created_at") for c in changes if c["kind"] == "StableStudy"),
            key=lambda c: c["study_instance_uid"],
        ),
    }


def _clear() -> None:
    Change.objects.all().delete()
    Instance.objects.all().delete()
    Series.objects.all().delete()
    Study.objects.all().delete()
    Patient.objects.all().delete()


def test_bulk_rows_are_the_rows_ingest_writes() -> None:
    plan = synth.make_plan(instances=120, studies=9, patients=6, seed=2)
    assert plan.instances == 120 and len(plan.studies) == 9
    facilities = [default_facility(), Facility.objects.create(code="CLINIC2", name="Clinic 2")]
    # The plan must exercise what the comparison is about.
    assert {p.facility for p in plan.patients} == {0, 1}
    assert any(p.studies > 1 for p in plan.patients)
    assert any(s.patient.charset for s in plan.studies)
    assert any(len({se.modality for se in s.series}) > 1 for s in plan.studies)

    with transaction.atomic():
        synth.write_index(connection, plan, [f.pk for f in facilities], batch=25)
    bulk = _dump()
    _clear()

    for study in plan.studies:
        facility = facilities[study.patient.facility]
        for arrival in synth.instances_of(study):
            services.record_new_instance(
                facility,
                arrival.attrs,
                services.StoredBlob(**vars(arrival.blob)),
                services.Provenance(**vars(arrival.provenance)),
            )
    assert services.mark_stable_studies(0, now=FAR_FUTURE) == len(plan.studies)
    ingested = _dump()

    assert bulk["patients"] == ingested["patients"]
    assert bulk["studies"] == ingested["studies"]
    assert bulk["series"] == ingested["series"]
    assert bulk["instances"] == ingested["instances"]
    assert bulk["changes"] == ingested["changes"]
    assert bulk["stable"] == ingested["stable"]
    assert len(bulk["instances"]) == 120


def test_plan_is_reproducible_and_exact() -> None:
    a = synth.make_plan(instances=5000, studies=100, seed=3)
    b = synth.make_plan(instances=5000, studies=100, seed=3)
    assert a.instances == 5000 and len(a.studies) == 100
    assert [s.uid for s in a.studies] == [s.uid for s in b.studies]
    first = [x.attrs.sop_instance_uid for x in synth.instances_of(a.studies[0])]
    assert first == [x.attrs.sop_instance_uid for x in synth.instances_of(b.studies[0])]
    assert all(1 <= len(s.series) <= 10 for s in a.studies)
    dates = [s.date for s in a.studies]
    assert dates == sorted(dates)
