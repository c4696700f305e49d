"""C-STORE ingest benchmark: NoctisPro vs DCMTK storescp vs Orthanc (see bench/README.md)."""
