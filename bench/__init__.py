"""Benchmarks against named peers (Orthanc, DCMTK). Not shipped; run from a checkout."""
