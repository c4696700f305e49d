"""PostgreSQL only: a trigram index so wildcard PatientName queries (`*SMITH*`) use an index.

Needs the pg_trgm extension; if the database user may not create it, the migration
says so and carries on (queries stay correct, only slower).
"""

import logging

from django.db import migrations, transaction

log = logging.getLogger(__name__)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception as exc:  # noqa: BLE001
        log.warning("pg_trgm is not available (%s); wildcard name queries will not be indexed", exc)
        return
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS study_pname_trgm_idx ON index_study "
        "USING gin (patient_name_search gin_trgm_ops)"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS study_pname_trgm_idx")


class Migration(migrations.Migration):
    dependencies = [("index", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
