"""Ties storage writes to the database transaction (design.md, "The transaction rule").

1. During flush, pending content of new or changed FileObjects is uploaded, before the
   database commits. In an ``AsyncSession`` the flush runs inside SQLAlchemy's greenlet, so
   uploads use the async API (``await_only``); in a plain ``Session`` they run in a bounded
   thread pool.
2. If the transaction (or a SAVEPOINT) rolls back, whatever was uploaded in it is deleted.
3. Files that a row replaced, removed from a list, or that belonged to a deleted row are
   deleted only after the outermost transaction committed.
4. A process that dies between 1 and the commit leaves orphans, never dangling references;
   :func:`storeroom.orm.find_orphans` finds them.

Everything hangs on documented Session events registered once on the ``Session`` class, so
plain, scoped and async sessions (and framework-managed ones) all follow the rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper, Session, SessionTransaction, attributes
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE
from sqlalchemy.util.concurrency import await_only, in_greenlet

from storeroom.errors import BackendError, StoreroomError
from storeroom.file import FileObject

__all__ = ["KEEP_REPLACED_FILES", "OrmSettings", "install", "settings"]

logger = logging.getLogger("storeroom.orm")

_LEDGER = "storeroom.ledger"

#: Set ``session.info[KEEP_REPLACED_FILES] = True`` to repoint rows at other objects without
#: deleting the ones they referenced (what a migration between backends does).
KEEP_REPLACED_FILES = "storeroom.keep_replaced_files"
_ROOT = "root"


@dataclass(slots=True)
class OrmSettings:
    """Process-wide knobs of the ORM integration."""

    upload_concurrency: int = 8
    """Uploads running at once within one flush."""


settings = OrmSettings()
"""Change ``settings.upload_concurrency`` to bound uploads per flush differently."""


@dataclass
class _Ledger:
    """What one session uploaded and must delete, per (nested) transaction.

    Entries stay under their SAVEPOINT's transaction until the outermost transaction ends:
    a released SAVEPOINT whose enclosing SAVEPOINT later rolls back is found through
    ``parents``.
    """

    uploaded: dict[Any, list[FileObject]] = field(default_factory=dict)
    doomed: dict[Any, list[FileObject]] = field(default_factory=dict)
    parents: dict[Any, Any] = field(default_factory=dict)

    def for_key(self, book: dict[Any, list[FileObject]], key: Any) -> list[FileObject]:
        return book.setdefault(key, [])

    def descendants(self, key: Any) -> list[Any]:
        found = [key]
        changed = True
        while changed:
            changed = False
            for child, parent in self.parents.items():
                if parent in found and child not in found:
                    found.append(child)
                    changed = True
        return found


def _ledger(session: Session) -> _Ledger:
    ledger = session.info.get(_LEDGER)
    if ledger is None:
        ledger = session.info[_LEDGER] = _Ledger()
    return ledger


def _real(transaction: SessionTransaction | None) -> SessionTransaction | None:
    """Skip the internal subtransactions a flush opens."""
    while transaction is not None and not transaction.nested and transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _key_of(transaction: SessionTransaction | None) -> Any:
    real = _real(transaction)
    return real if real is not None and real.nested else _ROOT


def _current_key(session: Session) -> Any:
    return _key_of(session.get_nested_transaction())


# -- which attributes hold files -------------------------------------------------------------

_columns_cache: dict[Mapper[Any], list[tuple[str, Any]]] = {}


def file_columns(mapper: Mapper[Any]) -> list[tuple[str, Any]]:
    """``(attribute name, StoredObject type)`` for each file column of ``mapper``."""
    cached = _columns_cache.get(mapper)
    if cached is None:
        from storeroom.orm.types import StoredObject

        cached = [
            (prop.key, prop.columns[0].type)
            for prop in mapper.column_attrs
            if len(prop.columns) == 1 and isinstance(prop.columns[0].type, StoredObject)
        ]
        _columns_cache[mapper] = cached
    return cached


def _files(value: Any) -> list[FileObject]:
    if value is None:
        return []
    if isinstance(value, FileObject):
        return [value]
    return [item for item in value if isinstance(item, FileObject)]


def _key(file: FileObject) -> tuple[str | None, str]:
    return (file.backend, file.path)


def _minus(files: Iterable[FileObject], keep: Iterable[FileObject]) -> list[FileObject]:
    kept = {_key(f) for f in keep}
    return [f for f in files if _key(f) not in kept and f.backend is not None]


# -- flush: upload and note what to delete ----------------------------------------------------


def _prepare(row: Any, column: str, kind: Any, file: FileObject) -> None:
    if file.backend is None and kind.backend is not None:
        file.backend = kind.backend
    if not file.has_explicit_path:
        file.assign_path(kind.path_function(row, column, file))
    # Resolve the backend now: fills in the registry's default, fails early on an unknown key.
    file.backend = file.storage


def _old_values(state: Any, column: str) -> list[FileObject]:
    history = state.get_history(column, PASSIVE_NO_INITIALIZE)
    old: list[FileObject] = []
    for value in history.deleted or ():
        old.extend(_files(value))
    current = state.dict.get(column)
    committed = getattr(current, "committed_files", None)
    if committed is not None:
        old.extend(committed())
    return old


def _plan(session: Session) -> tuple[list[FileObject], list[FileObject]]:
    pending: list[FileObject] = []
    doomed: list[FileObject] = []
    for row in list(session.new) + list(session.dirty):
        state = attributes.instance_state(row)
        for column, kind in file_columns(state.mapper):
            current = _files(state.dict.get(column))
            for file in current:
                if file.has_pending_content:
                    _prepare(row, column, kind, file)
                    pending.append(file)
            if row not in session.new:
                doomed.extend(_minus(_old_values(state, column), current))
    for row in session.deleted:
        state = attributes.instance_state(row)
        for column, _kind in file_columns(state.mapper):
            doomed.extend(f for f in _files(getattr(row, column)) if f.backend is not None)
    return pending, doomed


def _upload_sync(files: list[FileObject], limit: int) -> list[BaseException | None]:
    def one(file: FileObject) -> BaseException | None:
        try:
            file.save()
        except Exception as exc:
            return exc
        return None

    if len(files) == 1 or limit == 1:
        return [one(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(limit, len(files))) as pool:
        return list(pool.map(one, files))


async def _upload_async(files: list[FileObject], limit: int) -> list[BaseException | None]:
    gate = asyncio.Semaphore(limit)

    async def one(file: FileObject) -> BaseException | None:
        async with gate:
            try:
                await file.save_async()
            except Exception as exc:
                return exc
        return None

    return list(await asyncio.gather(*(one(f) for f in files)))


def _upload(files: list[FileObject]) -> list[BaseException | None]:
    limit = max(1, settings.upload_concurrency)
    if in_greenlet():
        return await_only(_upload_async(files, limit))
    return _upload_sync(files, limit)


def _delete_files(files: list[FileObject], why: str) -> None:
    """Delete ``files`` (best effort: failures are logged, never raised)."""
    if not files:
        return

    async def delete_async() -> list[BaseException | None]:
        results: list[BaseException | None] = []
        for file in files:
            try:
                await file.delete_async()
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results

    def delete_sync() -> list[BaseException | None]:
        results: list[BaseException | None] = []
        for file in files:
            try:
                file.delete()
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results

    results = await_only(delete_async()) if in_greenlet() else delete_sync()
    for file, error in zip(files, results, strict=True):
        if error is not None:
            logger.warning(
                "could not delete %s from backend %r (%s): %s; it is now an orphan that "
                "storeroom gc will remove",
                file.path, file.backend, why, error,
            )


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    pending, doomed = _plan(session)
    ledger = _ledger(session)
    key = _current_key(session)
    if key is not _ROOT:
        ledger.parents.setdefault(key, _key_of(key.parent))
    if pending:
        errors = _upload(pending)
        done = [f for f, e in zip(pending, errors, strict=True) if e is None]
        ledger.for_key(ledger.uploaded, key).extend(done)
        failures = [e for e in errors if e is not None]
        if failures:
            logger.warning(
                "%d of %d uploads in this flush failed; rolling back the transaction "
                "deletes the %d uploaded in it", len(failures), len(pending), len(done),
            )
            first = failures[0]
            if isinstance(first, StoreroomError):
                raise first
            raise BackendError(f"upload failed during flush: {first}") from first
    if doomed and not session.info.get(KEEP_REPLACED_FILES):
        ledger.for_key(ledger.doomed, key).extend(doomed)


# -- transaction outcomes ----------------------------------------------------------------------


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    ledger = session.info.get(_LEDGER)
    if ledger is None:
        return
    real = _real(previous_transaction)
    if real is not None and real.nested:
        keys = ledger.descendants(real)
    else:
        keys = list(set(ledger.uploaded) | set(ledger.doomed))
    uploaded = [f for k in keys for f in ledger.uploaded.pop(k, [])]
    for k in keys:
        ledger.doomed.pop(k, None)
        ledger.parents.pop(k, None)
    _delete_files(uploaded, "its transaction rolled back")


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a released SAVEPOINT: nothing is final until the outermost commit
    ledger = session.info.pop(_LEDGER, None)
    _mark_lists_committed(session)
    if ledger is None:
        return
    doomed = [f for files in ledger.doomed.values() for f in files]
    _delete_files(doomed, "the committed transaction replaced or removed it")


def _mark_lists_committed(session: Session) -> None:
    for row in _identity_rows(session):
        state = attributes.instance_state(row)
        for column, kind in file_columns(state.mapper):
            if kind.multiple:
                value = state.dict.get(column)
                mark = getattr(value, "mark_committed", None)
                if mark is not None:
                    mark()


def _identity_rows(session: Session) -> Iterator[Any]:
    yield from list(session.identity_map.values())


def _mapper_configured(mapper: Mapper[Any], class_: type) -> None:
    # Replacing a file must reveal the old one even if it was not loaded, so it can be
    # deleted after the commit: load the old value on assignment.
    _columns_cache.pop(mapper, None)
    for column, _kind in file_columns(mapper):
        impl = getattr(attributes.manager_of_class(class_).get(column), "impl", None)
        if impl is not None:
            impl.active_history = True


_installed = False


def install() -> None:
    """Register the session and mapper events (done once, by the first StoredObject)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "before_flush", _before_flush)
    event.listen(Session, "after_soft_rollback", _after_soft_rollback)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Mapper, "mapper_configured", _mapper_configured)
    _installed = True
