"""Process start-up shared by every service: Django, spool dir, first-run secrets."""

from __future__ import annotations

import os
import tempfile

from noctispro.conf import Settings, get_settings

_done = False


def setup_django() -> Settings:
    """Configure Django once per process, with temporary files on the data disk."""
    global _done
    settings = get_settings()
    if _done:
        return settings
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "noctispro.web.settings")
    # The database, blobs, spool files and logs hold patient data: nothing we create is
    # readable by other users of the machine.
    os.umask(0o027)
    for path in (settings.data_dir, settings.tmp_dir, settings.logs_dir):
        path.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(settings.tmp_dir)
    import django

    django.setup()
    _done = True
    return settings


def prepare(*, verbosity: int = 0) -> str | None:
    """Migrate the database and create the first admin; return a newly generated password."""
    settings = setup_django()
    from django.core.management import call_command

    from noctispro.accounts.facilities import default_facility
    from noctispro.accounts.services import ensure_admin

    call_command("migrate", interactive=False, verbosity=verbosity)
    default_facility()
    return ensure_admin(settings)
