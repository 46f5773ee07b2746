"""Incomplete S3 multipart uploads: find them, abort them.

A multipart upload that is never completed or aborted keeps its parts (and bills for them)
without creating an object, so listing the bucket never shows it. storeroom aborts the upload
itself when a save fails or is cancelled (:meth:`ObstoreBackend._write_async`), and
``storeroom gc`` aborts what a crashed process left, once it is older than the grace period.
Uses boto3 with the backend's own credentials and endpoint (like :mod:`.bucket_cors`).

Other stores need no sweep: Azure discards uncommitted blocks after seven days, and a GCS
resumable upload session expires after a week, neither creating an object.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from storeroom.errors import ConfigurationError

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend

__all__ = [
    "IncompleteUpload",
    "UploadAborter",
    "abort_incomplete_uploads",
    "abort_uploads_of",
    "abort_uploads_of_async",
    "find_incomplete_uploads",
]


@dataclass(frozen=True, slots=True)
class IncompleteUpload:
    """A multipart upload that was started and neither completed nor aborted."""

    key: str
    """The object key in the bucket (including the backend's prefix)."""
    upload_id: str
    initiated: datetime


def _s3(backend: StorageBackend) -> tuple[Any, str, str]:
    """boto3 client, bucket and key prefix of an S3 ObstoreBackend."""
    from storeroom.backends.obstore.clients import s3_client

    if getattr(backend, "kind", None) != "s3" or not hasattr(backend, "store"):
        raise ConfigurationError(
            f"backend {backend.key!r} is not an S3 ObstoreBackend; only S3 keeps incomplete "
            "multipart uploads (Azure and GCS expire theirs)"
        )
    client, bucket = s3_client(backend.store)
    prefix = str(getattr(backend.store, "prefix", None) or "").strip("/")
    return client, bucket, f"{prefix}/" if prefix else ""


def _listed(client: Any, bucket: str, prefix: str) -> list[IncompleteUpload]:
    found: list[IncompleteUpload] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = client.list_multipart_uploads(**kwargs)
        for upload in page.get("Uploads", []) or []:
            initiated = upload["Initiated"]
            if initiated.tzinfo is None:
                initiated = initiated.replace(tzinfo=timezone.utc)
            found.append(IncompleteUpload(upload["Key"], upload["UploadId"], initiated))
        if not page.get("IsTruncated"):
            return found
        kwargs["KeyMarker"] = page.get("NextKeyMarker")
        kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")


def find_incomplete_uploads(
    backend: StorageBackend, *, older_than: timedelta = timedelta(hours=24)
) -> list[IncompleteUpload]:
    """Incomplete multipart uploads under ``backend``'s prefix started before ``older_than`` ago.

    Younger ones may belong to a save still in progress.

    Raises:
        ConfigurationError: ``backend`` is not an S3 ObstoreBackend, or boto3 is missing.
    """
    client, bucket, prefix = _s3(backend)
    cutoff = datetime.now(timezone.utc) - older_than
    return [u for u in _listed(client, bucket, prefix) if u.initiated <= cutoff]


class UploadAborter:
    """Aborts listed uploads of one S3 backend, through one client made at the first abort."""

    def __init__(self, backend: StorageBackend) -> None:
        self._backend = backend
        self._client: tuple[Any, str] | None = None

    def abort(self, upload: IncompleteUpload) -> bool:
        """Abort ``upload``; False when it was already gone (completed or aborted since it
        was listed), which is not an error."""
        if self._client is None:
            client, bucket, _prefix = _s3(self._backend)
            self._client = client, bucket
        client, bucket = self._client
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=upload.key, UploadId=upload.upload_id)
        except client.exceptions.NoSuchUpload:
            return False
        return True


def abort_incomplete_uploads(
    backend: StorageBackend, *, older_than: timedelta = timedelta(hours=24)
) -> list[IncompleteUpload]:
    """Abort the uploads :func:`find_incomplete_uploads` finds; returns them (an upload
    that finished or was aborted meanwhile is skipped quietly)."""
    found = find_incomplete_uploads(backend, older_than=older_than)
    aborter = UploadAborter(backend)
    for upload in found:
        aborter.abort(upload)
    return found


def abort_uploads_of(backend: StorageBackend, path: str) -> int:
    """Abort every incomplete multipart upload to ``path``; returns how many were aborted.

    Called after a failed or cancelled save: the path is new (create-only), so an upload to
    it can only be the one that just failed.
    """
    client, bucket, prefix = _s3(backend)
    key = f"{prefix}{path}"
    aborted = 0
    for upload in _listed(client, bucket, key):
        if upload.key == key:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload.upload_id)
            aborted += 1
    return aborted


async def abort_uploads_of_async(backend: StorageBackend, path: str) -> int:
    """Async form of :func:`abort_uploads_of` (boto3 runs in a worker thread)."""
    return await asyncio.to_thread(abort_uploads_of, backend, path)
