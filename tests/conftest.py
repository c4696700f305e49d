"""Test set-up shared by every layer.

The environment is fixed before Django reads its settings: a private data dir per
session, and whatever DATABASE_URL the caller gave (CI runs once on SQLite, once on
PostgreSQL). pytest-django makes the test database from it. (DJANGO_SETTINGS_MODULE is
deliberately not in the pytest ini: pytest-django would then load the settings before
this file runs, with the default data dir shared by every test run on the machine.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_session_dir = Path(tempfile.mkdtemp(prefix="noctispro-test-"))
os.environ.setdefault("NOCTISPRO_DATA_DIR", str(_session_dir / "data"))
os.environ.setdefault("NOCTISPRO_SECRET_KEY", "test-" + "k" * 40)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "noctispro.web.settings")
# Short waits in tests; production defaults live in Settings.
os.environ.setdefault("NOCTISPRO_STABLE_AGE_SECONDS", "2")

from noctispro.bootstrap import setup_django  # noqa: E402

setup_django()
