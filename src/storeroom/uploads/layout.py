"""Where upload sessions keep their rows and their bytes: the names other layers read.

The one place that defines them. It imports nothing but :mod:`storeroom.paths`, and the
package's ``__init__`` loads its other modules only when one of their names is used, so a
layer below the uploads package (``storeroom.orm.maintenance``, which must count the bytes
of uploads in progress as referenced) can import it::

    from storeroom.uploads.layout import SESSIONS_TABLE, tus_parts_prefix

- :data:`SESSIONS_TABLE`: the table of upload sessions
  (:data:`storeroom.uploads.upload_sessions` is defined with it).
- :data:`STAGING_PREFIX`: where uploads land on stores that cannot refuse a second write
  (``{STAGING_PREFIX}/{session id}/{name}``, moved to the final path at completion).
- :func:`tus_parts_prefix`: the folder holding the parts of a tus upload until its last byte
  arrives (under :data:`TUS_PREFIX`).
"""

from __future__ import annotations

import hashlib

from storeroom.paths import safe_path

__all__ = ["SESSIONS_TABLE", "STAGING_PREFIX", "TUS_PREFIX", "staging_path", "tus_parts_prefix"]

SESSIONS_TABLE = "storeroom_upload_sessions"
"""The name of the upload sessions' table (one row per session)."""

STAGING_PREFIX = "_uploads"
"""Where uploads land on stores that cannot refuse a second write (moved on completion)."""

TUS_PREFIX = f"{STAGING_PREFIX}/tus"
"""The folder under which each tus upload keeps its parts (see :func:`tus_parts_prefix`)."""


def staging_path(session_id: str, name: str) -> str:
    """The staging path of session ``session_id`` uploading a file named ``name`` (safe)."""
    return safe_path(f"{STAGING_PREFIX}/{session_id}/{name}")


def tus_parts_prefix(path: str) -> str:
    """Where the parts of a tus upload to ``path`` are kept until the last byte arrives.

    A folder (the result ends with ``/``) named by a digest of the path: one folder per
    upload, whatever the path's length, and nothing of the client's file name in it. The
    ``upload_path`` of a session row is already safe, so its folder is
    ``tus_parts_prefix(row.upload_path)``.
    """
    digest = hashlib.sha256(safe_path(path).encode()).hexdigest()[:40]
    return f"{TUS_PREFIX}/{digest}/"
