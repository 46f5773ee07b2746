"""The obstore provider: S3 and compatible servers (MinIO), GCS, Azure Blob, local disk, memory.

Everything that knows obstore or a cloud SDK lives in this package: the backend
(:mod:`.backend`), its options (:mod:`.options`), credential providers (:mod:`.credentials`)
and bucket CORS administration (:mod:`.bucket_cors`).
"""

from __future__ import annotations

from storeroom.backends.obstore.backend import ObstoreBackend

__all__ = ["ObstoreBackend"]
