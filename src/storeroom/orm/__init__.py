"""SQLAlchemy integration: the ``StoredObject`` column, transaction-safe uploads, base models.

Assigning a FileObject with content to a ``StoredObject`` column uploads it during the
session's flush, before the commit; a rollback deletes it again, and files a committed
change replaced or removed are deleted after the commit, in the background
(:func:`wait_for_cleanup` waits for them). See :mod:`storeroom.orm.lifecycle`.
"""

from __future__ import annotations

from storeroom.orm.base import Base, UTCDateTime, UUIDAuditBase, UUIDBase
from storeroom.orm.layout import PathFunction, default_path, safe_filename
from storeroom.orm.lifecycle import (
    OrmSettings,
    StaleFileReference,
    cascade_files,
    settings,
    wait_for_cleanup,
)
from storeroom.orm.maintenance import (
    DanglingReference,
    MismatchedObject,
    ReferenceScan,
    collect_findings,
    find_dangling,
    find_orphans,
    iter_findings,
    referenced_files,
    remove_orphans,
)
from storeroom.orm.types import FileList, StoredObject

__all__ = [
    "Base",
    "DanglingReference",
    "FileList",
    "MismatchedObject",
    "OrmSettings",
    "PathFunction",
    "ReferenceScan",
    "StaleFileReference",
    "StoredObject",
    "UTCDateTime",
    "UUIDAuditBase",
    "UUIDBase",
    "collect_findings",
    "cascade_files",
    "default_path",
    "find_dangling",
    "find_orphans",
    "iter_findings",
    "referenced_files",
    "remove_orphans",
    "safe_filename",
    "settings",
    "wait_for_cleanup",
]
