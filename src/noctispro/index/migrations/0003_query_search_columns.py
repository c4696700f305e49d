"""Search columns and indexes for C-FIND / QIDO-RS matching (index.query, index.matching).

- Patient.patient_name_search and Study.referring_physician_name_search: upper-cased
  person-name keys for case-insensitive PN matching, filled here for existing rows (and
  Study.patient_name_search recomputed with the same key).
- The PatientName, PatientID and AccessionNumber indexes get the `varchar_pattern_ops`
  operator class on PostgreSQL, so that wildcard matching with a literal prefix
  (`DOE*` → LIKE 'DOE%') uses them under any collation; other databases ignore it.
"""

from django.db import migrations, models


def _key(name):
    """A frozen copy of index.matching.person_name_key, as of this migration."""
    values = []
    for item in name.split("\\"):
        groups = [group.rstrip("^ ") for group in item.strip().split("=")]
        while groups and not groups[-1]:
            groups.pop()
        values.append("=".join(groups))
    return "\\".join(values).upper()[:324]


def fill_search_columns(apps, schema_editor):
    Patient = apps.get_model("index", "Patient")
    Study = apps.get_model("index", "Study")
    batch = []
    for patient in Patient.objects.only("id", "patient_name").iterator(chunk_size=2000):
        patient.patient_name_search = _key(patient.patient_name)
        batch.append(patient)
        if len(batch) >= 2000:
            Patient.objects.bulk_update(batch, ["patient_name_search"])
            batch = []
    Patient.objects.bulk_update(batch, ["patient_name_search"])
    batch = []
    fields = ["patient_name_search", "referring_physician_name_search"]
    studies = Study.objects.only("id", "patient_name", "referring_physician_name")
    for study in studies.iterator(chunk_size=2000):
        study.patient_name_search = _key(study.patient_name)
        study.referring_physician_name_search = _key(study.referring_physician_name)
        batch.append(study)
        if len(batch) >= 2000:
            Study.objects.bulk_update(batch, fields)
            batch = []
    Study.objects.bulk_update(batch, fields)


class Migration(migrations.Migration):

    dependencies = [
        ("index", "0002_trigram_name_index"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="patient", name="patient_id_idx"),
        migrations.RemoveIndex(model_name="study", name="study_pname_idx"),
        migrations.RemoveIndex(model_name="study", name="study_pid_idx"),
        migrations.RemoveIndex(model_name="study", name="study_accession_idx"),
        migrations.AddField(
            model_name="patient",
            name="patient_name_search",
            field=models.CharField(blank=True, max_length=324),
        ),
        migrations.AddField(
            model_name="study",
            name="referring_physician_name_search",
            field=models.CharField(blank=True, max_length=324),
        ),
        migrations.RunPython(fill_search_columns, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="patient",
            index=models.Index(
                fields=["patient_id"], name="patient_id_idx", opclasses=["varchar_pattern_ops"]
            ),
        ),
        migrations.AddIndex(
            model_name="patient",
            index=models.Index(
                fields=["patient_name_search"],
                name="patient_pname_idx",
                opclasses=["varchar_pattern_ops"],
            ),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(
                fields=["patient_name_search"],
                name="study_pname_idx",
                opclasses=["varchar_pattern_ops"],
            ),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(
                fields=["patient_id"], name="study_pid_idx", opclasses=["varchar_pattern_ops"]
            ),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(
                fields=["accession_number"],
                name="study_accession_idx",
                opclasses=["varchar_pattern_ops"],
            ),
        ),
    ]
