"""Upload sessions: direct, single-use, server-placed uploads verified at completion.

See :mod:`storeroom.uploads.sessions` for the flow and :mod:`storeroom.uploads.targets` for
what each store enforces. ``storeroom gc`` calls :func:`remove_expired`.
"""

from __future__ import annotations

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
    "UploadInstructions",
    "UploadLimits",
    "UploadRejected",
    "UploadSessionInvalid",
    "UploadTarget",
    "begin",
    "begin_async",
    "complete",
    "complete_async",
    "enforced_limits",
    "metadata",
    "remove_expired",
    "remove_expired_async",
    "upload_sessions",
]
