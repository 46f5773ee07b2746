"""Upload sessions: direct, single-use, server-placed uploads verified at completion.

See :mod:`storeroom.uploads.sessions` for the flow, :mod:`storeroom.uploads.targets` for
what each store enforces, and :mod:`storeroom.uploads.resumable` for large uploads sent in
parts (tus, S3 multipart, Azure blocks). ``storeroom gc`` calls :func:`remove_expired`.
:mod:`storeroom.uploads.layout` names the table and the paths sessions use.

The names below are loaded when first used: importing :mod:`storeroom.uploads.layout` from a
layer below this package (the ORM's maintenance) does not import the sessions, which stand
above the ORM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from storeroom.uploads.layout import STAGING_PREFIX

if TYPE_CHECKING:
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

_RESUMABLE = (
    "ResumableTarget",
    "abort",
    "abort_async",
    "begin_resumable",
    "begin_resumable_async",
    "finish",
    "finish_async",
    "list_parts",
    "list_parts_async",
    "sign_part",
    "sign_part_async",
)
_TARGETS = ("UploadInstructions", "enforced_limits")
_SOURCE = {
    **dict.fromkeys(_RESUMABLE, "resumable"),
    **dict.fromkeys(_TARGETS, "targets"),
    **dict.fromkeys(set(__all__) - {"STAGING_PREFIX", *_RESUMABLE, *_TARGETS}, "sessions"),
}

if not TYPE_CHECKING:  # type checkers read the imports above

    def __getattr__(name: str) -> Any:
        module = _SOURCE.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
