#!/usr/bin/env bash
# Install what the tests need and run them: DCMTK (the independent DICOM clients the
# integration tests talk to), Chromium (the browser the e2e tests drive) and openssl (the
# DICOM TLS tests make their certificates with it) and Orthanc (the peer PACS of the
# query/retrieve tests, started by the tests on free ports) from Debian,
# a virtualenv with the `test` dependency group, then pytest. Extra arguments go to
# pytest. DATABASE_URL=postgresql://... runs the suite against PostgreSQL instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v storescu >/dev/null || ! command -v chromium >/dev/null \
  || ! command -v openssl >/dev/null || [ ! -x /usr/sbin/Orthanc ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q dcmtk chromium openssl orthanc >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q dcmtk chromium openssl orthanc >/dev/null
  }
fi

VENV="${NOCTISPRO_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . --group test

exec "$VENV/bin/python" -m pytest "$@"
