"""Comparing rows with stores: orphans (objects no row references) and dangling references.

``find_orphans`` lists the objects of a backend that no row of the given file columns
references (optionally only those older than a grace period, so uploads of transactions
still in flight are left alone); ``find_dangling`` lists references whose object is missing.
Both are what ``storeroom verify`` and ``storeroom gc`` build on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import inspect, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from storeroom.backends.base import ObjectInfo, StorageBackend
from storeroom.errors import ConfigurationError
from storeroom.file import FileObject
from storeroom.orm.lifecycle import file_columns
from storeroom.registry import StorageRegistry, storages

__all__ = ["DanglingReference", "find_dangling", "find_orphans", "referenced_files"]


@dataclass(frozen=True, slots=True)
class DanglingReference:
    """A row's file whose object is missing from its backend."""

    model: str
    primary_key: tuple[Any, ...]
    column: str
    file: FileObject


Target = InstrumentedAttribute[Any] | type
Columns = Target | Iterable[Target]
"""A model class (all its file columns), one column attribute, or several of either."""


def _columns(target: Columns) -> list[InstrumentedAttribute[Any]]:
    if isinstance(target, InstrumentedAttribute):
        return [target]
    if isinstance(target, type):
        mapper: Any = inspect(target)
        found = [getattr(target, name) for name, _kind in file_columns(mapper)]
        if not found:
            raise ConfigurationError(f"model {target.__name__} has no StoredObject columns")
        return found
    items = cast(Iterable[Target], target)
    return [column for item in items for column in _columns(item)]


def referenced_files(
    session: Session, target: Columns
) -> Iterator[tuple[Any, str, FileObject]]:
    """Every ``(row, column name, FileObject)`` referenced by ``target``'s columns."""
    for column in _columns(target):
        model = column.class_
        rows = session.execute(select(model).where(column.isnot(None))).scalars()
        for row in rows:
            value = getattr(row, column.key)
            files = [value] if isinstance(value, FileObject) else list(value or [])
            for file in files:
                yield row, column.key, file


def find_orphans(
    session: Session,
    target: Columns,
    backend: StorageBackend | str,
    *,
    prefix: str = "",
    grace: timedelta = timedelta(hours=1),
    registry: StorageRegistry | None = None,
) -> list[ObjectInfo]:
    """Objects of ``backend`` (under ``prefix``) that no row of ``target`` references.

    ``target`` is a model class (all its file columns), one column or several. Objects
    modified within ``grace`` are skipped: they may belong to a transaction in flight.
    """
    store = _backend(backend, registry)
    referenced = {
        file.path for _row, _col, file in referenced_files(session, target)
        if file.backend == store.key
    }
    cutoff = datetime.now(timezone.utc) - grace
    return [
        info for info in store.list(prefix)
        if info.path not in referenced
        and (info.last_modified is None or info.last_modified <= cutoff)
    ]


def find_dangling(
    session: Session,
    target: Columns,
    *,
    registry: StorageRegistry | None = None,
) -> list[DanglingReference]:
    """References in ``target``'s columns whose object does not exist in its backend.

    Lists each backend once rather than asking for every object.
    """
    registry = registry or storages
    listings: dict[str, set[str]] = {}
    dangling = []
    for row, column, file in referenced_files(session, target):
        key = file.backend or registry.default_key or ""
        if key not in listings:
            listings[key] = {info.path for info in registry.get_backend(key).list()}
        if file.path not in listings[key]:
            identity = inspect(row).identity or ()
            dangling.append(DanglingReference(type(row).__name__, tuple(identity), column, file))
    return dangling


def _backend(backend: StorageBackend | str, registry: StorageRegistry | None) -> StorageBackend:
    if isinstance(backend, StorageBackend):
        return backend
    return (registry or storages).get_backend(backend)
