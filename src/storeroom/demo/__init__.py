"""A small "team files" web app showing storeroom end to end (``make demo``).

Litestar + the specification's ``TeamFile`` model, on SQLite and local disk under
``./data`` by default; PostgreSQL and S3/MinIO/GCS/Azure through the usual environment
variables (``DATABASE_URL``, ``STORAGE__PRIVATE__URL`` and friends). Browsers upload
straight to storage through signed PUT URLs and download through signed GET URLs.
"""
