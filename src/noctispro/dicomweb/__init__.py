"""DICOMweb (PS3.18) at /dicom-web on the api service: a thin adapter.

QIDO-RS builds an `index.query.Query` and calls `run_query` like C-FIND does; WADO-RS
streams stored blobs and serves metadata kept in the index (`index.metadata`); STOW-RS
hands every part to `core.ingest.store_instance`. Authorization and facility scoping
come from `api.deps` and `accounts.scoping`, as for every API route.
"""
