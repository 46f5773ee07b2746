"""Ties storage writes to the database transaction (design.md, "The transaction rule").

1. During flush, pending content of new or changed FileObjects is uploaded, inside the
   flush's database transaction and before any row is written, so the rows record size,
   checksum and etag. In an ``AsyncSession`` the flush runs inside SQLAlchemy's greenlet and
   uploads use the async API (``await_only``); in a plain ``Session`` they run in a bounded
   thread pool. A failed upload fails the flush like a database error would: the
   transaction (or SAVEPOINT) rolls back, and the session needs ``rollback()``.
2. If the transaction (or a SAVEPOINT) rolls back, whatever was uploaded in it is deleted,
   and those FileObjects get their content back, so adding the rows again uploads again.
3. Files that a row replaced, removed from a list, or that belonged to a deleted row are
   deleted only after the outermost transaction committed, unless a row flushed later in
   the same transaction references them again (a file moved to another row stays).
4. A process that dies between 1 and the commit leaves orphans, never dangling references;
   :func:`storeroom.orm.find_orphans` finds them.

An upload never overwrites an object that the row being changed references: new content
for a loaded FileObject goes to a new path (the old object is deleted after the commit).

Everything hangs on documented events registered once (session events on the ``Session``
class, row events on each mapper with file columns), so plain, scoped and async sessions,
and framework-managed ones, all follow the rule.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper, Session, SessionTransaction, attributes
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE
from sqlalchemy.util.concurrency import await_only, in_greenlet

from storeroom.errors import BackendError, ConfigurationError, StoreroomError
from storeroom.file import FileObject

if TYPE_CHECKING:
    from storeroom.orm.types import StoredObject
    from storeroom.streams import Content

__all__ = ["KEEP_REPLACED_FILES", "OrmSettings", "file_columns", "install", "settings"]

logger = logging.getLogger("storeroom.orm")

_LEDGER = "storeroom.ledger"
_PLAN = "storeroom.flush_plan"

#: Set ``session.info[KEEP_REPLACED_FILES] = True`` to repoint rows at other objects without
#: deleting the ones they referenced (what a migration between backends does).
KEEP_REPLACED_FILES = "storeroom.keep_replaced_files"
_ROOT = "root"

FileKey = tuple[str | None, str]


@dataclass(slots=True)
class OrmSettings:
    """Process-wide knobs of the ORM integration."""

    upload_concurrency: int = 8
    """Uploads (and post-commit deletes) running at once within one flush."""


settings = OrmSettings()
"""Change ``settings.upload_concurrency`` to bound uploads per flush differently."""


# -- what a transaction did --------------------------------------------------------------------


class _Spent:
    """Content that was uploaded from a one-shot stream and cannot be read again."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        raise ConfigurationError(
            f"the content for {self.path!r} was uploaded in a transaction that rolled back, "
            "and its stream cannot be read again; give the FileObject its content again "
            "(set_content) before adding the row again"
        )


def _rewinder(content: Content | None) -> Callable[[], Content] | None:
    """How to get ``content`` back after a rollback deleted what was uploaded from it.

    None for one-shot streams (iterators, unseekable or async file objects).
    """
    if content is None:
        return None
    if isinstance(content, bytes | bytearray | memoryview | str | os.PathLike):
        return lambda: content
    seekable = getattr(content, "seekable", None)
    if callable(seekable) and not asyncio.iscoroutinefunction(getattr(content, "read", None)):
        try:
            if seekable():
                stream: Any = content
                position = stream.tell()

                def rewind() -> Content:
                    stream.seek(position)
                    return content

                return rewind
        except (OSError, ValueError):
            pass
    return None


@dataclass(slots=True)
class _Upload:
    file: FileObject
    rewind: Callable[[], Content] | None

    def restore(self) -> None:
        """Give the file its content back, or content that explains why it cannot."""
        if self.rewind is not None:
            self.file.set_content(self.rewind())
        else:
            self.file.set_content(_Spent(self.file.filename))


@dataclass(slots=True)
class _Ledger:
    """What one session uploaded and decided, per (nested) transaction.

    ``doomed`` lists the files a flush found replaced, removed or deleted; ``holdings`` what
    each flushed row referenced at that flush. After the commit a doomed file is deleted
    unless a row's last flush still references it (it moved to another row, or was put
    back). Entries stay under their SAVEPOINT until the outermost transaction ends; a
    released SAVEPOINT whose enclosing SAVEPOINT later rolls back is found through
    ``parents``.
    """

    uploaded: dict[Any, list[_Upload]] = field(default_factory=dict)
    doomed: list[tuple[Any, FileObject]] = field(default_factory=list)
    holdings: list[tuple[Any, Any, frozenset[FileKey]]] = field(default_factory=list)
    parents: dict[Any, Any] = field(default_factory=dict)

    def descendants(self, key: Any) -> set[Any]:
        found = {key}
        changed = True
        while changed:
            changed = False
            for child, parent in self.parents.items():
                if parent in found and child not in found:
                    found.add(child)
                    changed = True
        return found

    def forget(self, transactions: set[Any]) -> list[_Upload]:
        """Drop what ``transactions`` did; return their uploads."""
        uploads = [u for t in transactions for u in self.uploaded.pop(t, [])]
        self.doomed = [d for d in self.doomed if d[0] not in transactions]
        self.holdings = [h for h in self.holdings if h[0] not in transactions]
        for t in transactions:
            self.parents.pop(t, None)
        return uploads

    def to_delete(self) -> list[FileObject]:
        last: dict[Any, frozenset[FileKey]] = {}
        for _transaction, row, keys in self.holdings:
            last[row] = keys
        referenced: set[FileKey] = set().union(*last.values())
        final: dict[FileKey, FileObject] = {}
        for _transaction, file in self.doomed:
            if _key(file) not in referenced:
                final.setdefault(_key(file), file)
        return list(final.values())


@dataclass(slots=True)
class _FlushPlan:
    """What ``before_flush`` decided; the first row write of the flush uploads it."""

    transaction: Any
    pending: list[FileObject]
    lists: list[Any]
    error: StoreroomError | None = None


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


# -- which attributes hold files -------------------------------------------------------------

_columns_cache: dict[Mapper[Any], list[tuple[str, StoredObject]]] = {}


def file_columns(mapper: Mapper[Any]) -> list[tuple[str, StoredObject]]:
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


def _key(file: FileObject) -> FileKey:
    return (file.backend, file.path)


def _stored(files: Iterable[FileObject]) -> list[FileObject]:
    """The files that are references to objects (not content still to upload)."""
    return [f for f in files if f.backend is not None and not f.has_pending_content]


# -- flush: decide, then upload at the first row write ---------------------------------------


def _old_values(state: Any, column: str) -> list[FileObject]:
    """What ``column`` referenced at the last flush (or load)."""
    history = state.get_history(column, PASSIVE_NO_INITIALIZE)
    old: list[FileObject] = []
    for value in history.deleted or ():
        baseline = getattr(value, "committed_files", None)
        old.extend(baseline() if baseline is not None else _files(value))
    baseline = getattr(state.dict.get(column), "committed_files", None)
    if baseline is not None:
        old.extend(baseline())
    return _stored(old)


def _place(
    row: Any, column: str, kind: StoredObject, file: FileObject, taken: set[FileKey]
) -> None:
    """Give a file with content its backend and a path that overwrites nothing the row holds."""
    if not file.has_explicit_path or _key(file) in taken:
        file.assign_path(kind.path_function(row, column, file))
        if _key(file) in taken:
            raise ConfigurationError(
                f"the path function of {type(row).__name__}.{column} returned {file.path!r}, "
                "which this row already references; uploading there would overwrite bytes "
                "that a rollback could not restore. Return a unique path (the default adds "
                "a uuid4)"
            )
    # Resolve the backend now: fills in the registry's default, fails early on an unknown key.
    file.backend = file.storage


def _plan(
    session: Session, instances: Any
) -> tuple[_FlushPlan, list[FileObject], list[tuple[Any, frozenset[FileKey]]]]:
    """Paths for new content; files made obsolete; what each flushed row references."""
    only = None if not instances else {id(obj) for obj in instances}
    pending: dict[int, FileObject] = {}
    error: StoreroomError | None = None
    lists: list[Any] = []
    doomed: list[FileObject] = []
    holdings: list[tuple[Any, frozenset[FileKey]]] = []
    for row in session.deleted:
        if only is not None and id(row) not in only:
            continue
        state = attributes.instance_state(row)
        columns = file_columns(state.mapper)
        for column, _kind in columns:
            doomed += _stored(_files(getattr(row, column)))
            doomed += _old_values(state, column)
        if columns:
            holdings.append((state, frozenset()))
    for row in [*session.new, *session.dirty]:
        if only is not None and id(row) not in only:
            continue
        state = attributes.instance_state(row)
        columns = file_columns(state.mapper)
        if not columns:
            continue
        is_new = state.key is None
        held: list[FileObject] = []
        for column, kind in columns:
            value = state.dict.get(column)
            current = _files(value)
            old = [] if is_new else _old_values(state, column)
            taken = {_key(f) for f in old}
            for file in current:
                if file.backend is None and kind.backend is not None:
                    file.backend = kind.backend
                if file.has_pending_content and id(file) not in pending:
                    if _key(file) in taken or file.checksum is not None or file.etag is not None:
                        # New content for an object that was stored (set_content on a loaded
                        # file): upload it elsewhere, delete the old object after the commit.
                        doomed.append(FileObject.from_dict(file.to_dict()))
                        taken.add(_key(file))
                    try:
                        _place(row, column, kind, file, taken)
                    except StoreroomError as exc:
                        # Raised at the first row write, so the transaction rolls back.
                        error = error or exc
                    pending[id(file)] = file
            doomed += old
            held += current
            if kind.multiple and value is not None:
                lists.append(value)
        holdings.append((state, frozenset(_key(f) for f in held)))
    plan = _FlushPlan(
        _key_of(session.get_nested_transaction()), list(pending.values()), lists, error
    )
    return plan, doomed, holdings


def _each(
    files: list[FileObject],
    sync_op: Callable[[FileObject], object],
    async_op: Callable[[FileObject], Awaitable[object]],
) -> list[BaseException | None]:
    """Run one storage operation per file, at most ``upload_concurrency`` at once.

    Inside SQLAlchemy's greenlet (an AsyncSession) the async form runs on the event loop;
    elsewhere the sync form runs in a thread pool. Returns each file's error, or None.
    """
    limit = max(1, settings.upload_concurrency)
    if in_greenlet():
        if len(files) == 1:
            try:
                await_only(async_op(files[0]))
            except Exception as exc:
                return [exc]
            return [None]
        gate = asyncio.Semaphore(limit)

        async def one_async(file: FileObject) -> BaseException | None:
            async with gate:
                try:
                    await async_op(file)
                except Exception as exc:
                    return exc
            return None

        async def all_async() -> list[BaseException | None]:
            return list(await asyncio.gather(*(one_async(f) for f in files)))

        return await_only(all_async())

    def one(file: FileObject) -> BaseException | None:
        try:
            sync_op(file)
        except Exception as exc:
            return exc
        return None

    if len(files) == 1 or limit == 1:
        return [one(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(limit, len(files))) as pool:
        return list(pool.map(one, files))


def _upload(session: Session, plan: _FlushPlan) -> None:
    uploads = [_Upload(f, _rewinder(f.pending_content)) for f in plan.pending]
    errors = _each(plan.pending, lambda f: f.save(), lambda f: f.save_async())
    done = [u for u, e in zip(uploads, errors, strict=True) if e is None]
    _ledger(session).uploaded.setdefault(plan.transaction, []).extend(done)
    failures = [e for e in errors if e is not None]
    if failures:
        logger.warning(
            "%d of %d uploads in a flush failed; the transaction rolls back and the %d "
            "uploaded are deleted", len(failures), len(plan.pending), len(done),
        )
        first = failures[0]
        if isinstance(first, StoreroomError):
            raise first
        raise BackendError(f"upload failed during flush: {first}") from first


def _delete_files(files: list[FileObject], why: str) -> None:
    """Delete ``files`` (best effort: failures are logged, never raised)."""
    if not files:
        return
    errors = _each(files, lambda f: f.delete(), lambda f: f.delete_async())
    for file, error in zip(files, errors, strict=True):
        if error is not None:
            logger.warning(
                "could not delete %s from backend %r (%s): %s; it is now an orphan that "
                "storeroom gc will remove",
                file.path, file.backend, why, error,
            )


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    plan, doomed, holdings = _plan(session, instances)
    ledger = _ledger(session)
    if plan.transaction is not _ROOT:
        ledger.parents.setdefault(plan.transaction, _key_of(plan.transaction.parent))
    if not session.info.get(KEEP_REPLACED_FILES):
        ledger.doomed += [(plan.transaction, file) for file in doomed]
        ledger.holdings += [(plan.transaction, row, keys) for row, keys in holdings]
    if plan.pending or plan.lists or plan.error:
        session.info[_PLAN] = plan
    else:
        session.info.pop(_PLAN, None)


def _before_row_write(mapper: Mapper[Any], connection: Any, row: Any) -> None:
    # The first row written by a flush uploads the flush's files: inside the flush's
    # transaction, so a failed upload rolls it back, and before any row's JSON is built.
    session = attributes.instance_state(row).session
    plan = session.info.get(_PLAN) if session is not None else None
    if plan is None:
        return
    if plan.error is not None:
        error, plan.error, plan.pending = plan.error, None, []
        raise error
    if plan.pending:
        pending, plan.pending = plan.pending, []
        _upload(session, _FlushPlan(plan.transaction, pending, []))  # type: ignore[arg-type]


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    plan = session.info.pop(_PLAN, None)
    if plan is None:
        return
    # What a list holds now is what the next flush compares with.
    for files in plan.lists:
        files.mark_committed()


# -- transaction outcomes ----------------------------------------------------------------------


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    session.info.pop(_PLAN, None)
    ledger = session.info.get(_LEDGER)
    if ledger is None:
        return
    real = _real(previous_transaction)
    if real is not None and real.nested:
        uploads = ledger.forget(ledger.descendants(real))
    else:
        uploads = [u for batch in ledger.uploaded.values() for u in batch]
        session.info.pop(_LEDGER, None)
    _delete_files([u.file for u in uploads], "its transaction rolled back")
    for upload in uploads:
        upload.restore()


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a released SAVEPOINT: nothing is final until the outermost commit
    ledger = session.info.pop(_LEDGER, None)
    if ledger is not None:
        _delete_files(ledger.to_delete(), "the committed transaction replaced or removed it")


def _mapper_configured(mapper: Mapper[Any], class_: type) -> None:
    _columns_cache.pop(mapper, None)
    columns = file_columns(mapper)
    if not columns:
        return
    # Replacing a file must reveal the old one even if it was not loaded, so it can be
    # deleted after the commit: load the old value on assignment.
    for column, _kind in columns:
        impl = getattr(attributes.manager_of_class(class_).get(column), "impl", None)
        if impl is not None:
            impl.active_history = True
    event.listen(mapper, "before_insert", _before_row_write)
    event.listen(mapper, "before_update", _before_row_write)


_installed = False


def install() -> None:
    """Register the session and mapper events (done once, by the first StoredObject)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "before_flush", _before_flush)
    event.listen(Session, "after_flush_postexec", _after_flush_postexec)
    event.listen(Session, "after_soft_rollback", _after_soft_rollback)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Mapper, "mapper_configured", _mapper_configured)
    _installed = True
