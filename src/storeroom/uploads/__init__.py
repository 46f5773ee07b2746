"""Upload sessions: direct, single-use, server-placed uploads verified at completion.

See :mod:`storeroom.uploads.sessions` for the flow, :mod:`storeroom.uploads.targets` for
what each store enforces, and :mod:`storeroom.uploads.resumable` for large uploads sent in
parts (tus, S3 multipart, Azure blocks). ``storeroom gc`` calls :func:`remove_expired`.
"""

from __future__ import annotations

from storeroom.uploads.resumable import (
    ResumableTarget,
    abort,
    abort_async,
    begin_resumable,
    begin_resumable_async,
    finish,
    finish_async,
    list_parts,
    list_parts_async,
    sign_part,
    sign_part_async,
)
from storeroom.uploads.sessions import (
    STAGING_PREFIX,
    UploadLimits,
    UploadRejected,
    UploadSessionInvalid,
    UploadTarget,
    begin,
    begin_async,
    complete,
    complete_async,
    metadata,
    remove_expired,
    remove_expired_async,
    upload_sessions,
)
from storeroom.uploads.targets import UploadInstructions, enforced_limits

__all__ = [
    "STAGING_PREFIX",
    "ResumableTarget",
    "UploadInstructions",
    "UploadLimits",
    "UploadRejected",
    "UploadSessionInvalid",
    "UploadTarget",
    "abort",
    "abort_async",
    "begin",
    "begin_async",
    "begin_resumable",
    "begin_resumable_async",
    "complete",
    "complete_async",
    "enforced_limits",
    "finish",
    "finish_async",
    "list_parts",
    "list_parts_async",
    "metadata",
    "remove_expired",
    "remove_expired_async",
    "sign_part",
    "sign_part_async",
    "upload_sessions",
]
