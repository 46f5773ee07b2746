"""The transaction rule for sessions: storage writes follow the database transaction.

The rule (docs/models.md, "The transaction rule"): a committed row never points at bytes that
are not in the store, a transaction that does not commit leaves no bytes behind, and no
committed bytes are deleted while a row still references them. Each session event plays one
part:

``before_flush``
    :func:`plan_flush` decides (without side effects) which files to upload and where, and
    which rows' file columns change; the plan is then applied (paths and backends assigned).
first row write of the flush (``before_insert`` / ``before_update`` / ``before_delete``)
    Reads, under a row lock and in the flush's transaction, what the database holds in the
    file columns about to change (so replaced files are the database's, not a stale session
    copy), refuses a stale write, then uploads the new files create-only. Each upload is
    recorded before it starts.
``before_delete`` of any row (also delete-orphan cascades)
    Records the row's files, read under a row lock, as obsolete.
``do_orm_execute``
    Bulk ``insert``/``update``/``delete`` statements: uploads first, files the statement drops
    collected under a row lock; forms that cannot keep the rule are refused.
``after_commit`` (outermost transaction)
    Hands the obsolete files that no row references any more to the background job queue
    (:mod:`storeroom.jobs`); commit() returns without waiting for them.
``after_soft_rollback`` / ``after_transaction_end``
    A transaction (or SAVEPOINT) that ended without committing, by any route (rollback,
    failed flush, close, reset, ``with Session`` exit), deletes what it uploaded, shielded
    from cancellation, and gives the FileObjects their content back. A session dropped with a
    transaction open is caught by a weak reference to that transaction (its callback).

State lives in one :class:`TransactionFiles` per outermost transaction and dies with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sqlite3
import sys
import time
import types
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from sqlalchemy import Column, Table, and_, event, select, tuple_
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import (
    AttributeEventToken,
    InstanceState,
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    attributes,
)
from sqlalchemy.orm.base import NO_VALUE, PASSIVE_NO_INITIALIZE
from sqlalchemy.sql.elements import BindParameter, Null
from sqlalchemy.util.concurrency import await_only, in_greenlet

from storeroom.errors import BackendError, ConfigurationError, ObjectExists, StoreroomError
from storeroom.file import FileObject
from storeroom.jobs import get_queue, job
from storeroom.orm.variants import record_variants, register_column, schedule_variants

if TYPE_CHECKING:
    from sqlalchemy.engine import Result
    from sqlalchemy.orm import QueryableAttribute, RelationshipProperty
    from sqlalchemy.orm.instrumentation import ClassManager
    from sqlalchemy.orm.unitofwork import UOWTransaction
    from sqlalchemy.sql import ColumnElement, Executable

    from storeroom.orm.layout import PathFunction
    from storeroom.streams import Content

__all__ = [
    "DELETE_JOB",
    "KEEP_REPLACED_FILES",
    "FileColumn",
    "FlushPlan",
    "OrmSettings",
    "StaleFileReference",
    "TransactionFiles",
    "cascade_files",
    "file_columns",
    "install",
    "plan_flush",
    "settings",
    "wait_for_cleanup",
]

logger = logging.getLogger("storeroom.orm")

#: Set ``session.info[KEEP_REPLACED_FILES] = True`` to repoint rows at other objects without
#: deleting the ones they referenced (what a migration between backends does).
KEEP_REPLACED_FILES = "storeroom.keep_replaced_files"

#: The job (see :mod:`storeroom.jobs`) that deletes objects after a commit.
DELETE_JOB = "storeroom.orm.delete_objects"

FileKey = tuple[str, str]
"""``(backend key, path)``: what identifies a stored object."""

_ROOT = 0  # savepoint number of the outermost transaction
_DELETE_BATCH = 32


@dataclass(slots=True)
class OrmSettings:
    """Process-wide knobs of the ORM integration."""

    upload_concurrency: int = 8
    """Uploads (and rollback deletes) running at once within one flush."""
    settle_delay: float = 1.0
    """Seconds after which an upload cancelled mid-write is deleted once more: the store may
    complete a write whose request was already sent when the task was cancelled."""


settings = OrmSettings()
"""Change ``settings.upload_concurrency`` to bound uploads per flush differently."""


class StaleFileReference(StoreroomError):
    """A flush would write back a file reference that the database no longer holds.

    Another transaction replaced the file after this session loaded the row; writing the
    session's copy would point the row at deleted bytes. Reload the row and apply the change
    again. Also raised when a loaded FileObject's ``path`` or ``backend`` was edited in place
    to name an object the row does not hold (assign a file instead; the message says which).
    """


class CommittedList(Protocol):
    """A list column value that remembers what it held at the last flush (``FileList``)."""

    def mark_committed(self) -> None: ...


class FileColumn(Protocol):
    """What the transaction rule needs from a file column type (``StoredObject``)."""

    holds_files: bool
    backend: str | None
    multiple: bool
    path_function: PathFunction


# -- which attributes hold files -------------------------------------------------------------

_columns_cache: dict[Mapper[Any], list[tuple[str, FileColumn]]] = {}


def _is_file_column(type_: object) -> bool:
    return getattr(type_, "holds_files", False) is True


def file_columns(mapper: Mapper[Any]) -> list[tuple[str, FileColumn]]:
    """``(attribute name, StoredObject type)`` for each file column of ``mapper``."""
    cached = _columns_cache.get(mapper)
    if cached is None:
        cached = [
            (prop.key, cast("FileColumn", prop.columns[0].type))
            for prop in mapper.column_attrs
            if len(prop.columns) == 1 and _is_file_column(prop.columns[0].type)
        ]
        _columns_cache[mapper] = cached
    return cached


_names_cache: dict[Mapper[Any], tuple[str, ...]] = {}


def _column_names(mapper: Mapper[Any]) -> tuple[str, ...]:
    """The attribute names of :func:`file_columns`."""
    names = _names_cache.get(mapper)
    if names is None:
        names = _names_cache[mapper] = tuple(name for name, _kind in file_columns(mapper))
    return names


def _files(value: object) -> list[FileObject]:
    if value is None:
        return []
    if isinstance(value, FileObject):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return [item for item in value if isinstance(item, FileObject)]
    return []


def _key(file: FileObject) -> FileKey:
    return (file._backend_key or "", file.path)


def _keys(file: FileObject) -> list[FileKey]:
    """The file's key and those of its recorded variants (they live and die with it)."""
    keys = [(file._backend_key or "", file.path)]
    records = file.metadata.get("variants")
    if records is not None and isinstance(records, Mapping):
        keys += [
            (file._backend_key or "", r["path"])
            for r in records.values()
            if isinstance(r, Mapping) and isinstance(r.get("path"), str)
        ]
    return keys


def _stored_keys(files: Iterable[FileObject]) -> frozenset[FileKey]:
    """Keys of the files that reference stored objects (not content still to upload)."""
    return frozenset(
        k for f in files if f.backend is not None and not f.has_pending_content for k in _keys(f)
    )


# -- content given back after a rollback -----------------------------------------------------


class _SpentStream:
    """Content that was uploaded from a one-shot stream and cannot be read again."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        raise ConfigurationError(
            f"the content for {self.path!r} was uploaded in a transaction that did not commit, "
            "and its stream cannot be read again; give the FileObject its content again "
            "(set_content) before adding the row again"
        )


class _CopyOf:
    """The content of a file given to a row while another row still references it: a copy.

    A stored object belongs to one row (deleting that row deletes the object), so the row
    that is given it gets its own object, uploaded create-only from the source's bytes as
    any new content is, and verified against the source's recorded size and checksum as
    they are read (:class:`~storeroom.errors.IntegrityError` fails the flush otherwise).
    """

    __slots__ = ("source",)

    def __init__(self, source: FileObject) -> None:
        self.source = source

    def __iter__(self) -> Iterator[bytes]:
        return self.source.iter_chunks()

    async def chunks_async(self) -> AsyncIterator[bytes]:
        """The source's bytes, verified, read with its backend's async calls."""
        async for chunk in await self.source.aiter_chunks():
            yield chunk


def _rewinder(content: Content | None) -> Callable[[], Content] | None:
    """How to get ``content`` back after a rollback deleted what was uploaded from it.

    None for one-shot streams (iterators, unseekable or async file objects).
    """
    if content is None:
        return None
    if isinstance(content, bytes | bytearray | memoryview | str | os.PathLike | _CopyOf):
        return lambda: content
    seekable = getattr(content, "seekable", None)
    if callable(seekable) and not asyncio.iscoroutinefunction(getattr(content, "read", None)):
        try:
            if seekable():
                position = content.tell()  # type: ignore[union-attr]

                def rewind() -> Content:
                    content.seek(position)  # type: ignore[union-attr]
                    return content

                return rewind
        except (OSError, ValueError):
            pass
    return None


UploadStage = Literal["planned", "started", "failed", "done", "nothing written"]
"""``started`` and not finished means interrupted mid-write (cancelled, or a BaseException)."""


@dataclass(slots=True)
class UploadRecord:
    """One upload of a transaction, recorded before it starts."""

    file: FileObject
    key: FileKey
    savepoint: int
    rewind: Callable[[], Content] | None
    stage: UploadStage = "planned"

    # As a context manager around the upload, it tracks how far the upload got: its stage
    # says what a failure may have left behind. (Methods of the record itself: it wraps
    # every upload of every flush, and an object made for the purpose costs a call more.)

    def __enter__(self) -> None:
        self.stage = "started"

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        if kind is None:
            self.stage = "done"
        elif issubclass(kind, ObjectExists):
            self.stage = "nothing written"
        elif issubclass(kind, Exception):
            self.stage = "failed"
        return False

    def give_content_back(self) -> None:
        """After a rollback: the file gets its content again (or content saying why not)."""
        if self.stage in ("started", "failed", "done"):
            if self.rewind is not None:
                self.file.set_content(self.rewind())
            else:
                self.file.set_content(_SpentStream(self.file.path))


# -- what a flush will do ----------------------------------------------------------------------


@dataclass(slots=True)
class PlannedUpload:
    """A file with content to upload: where it goes."""

    file: FileObject
    backend: str | None
    path: str
    kind: FileColumn | None = None
    column: str = ""
    """``table.column`` of the column the file goes into."""
    inspected: Any = None
    """The content as :func:`prepare_upload` wrapped it (its ``findings`` once uploaded)."""


@dataclass(slots=True)
class RowChange:
    """A persistent or new row whose file columns a flush writes (or that it deletes)."""

    state: InstanceState[Any]
    columns: tuple[str, ...]
    deleting: bool
    is_new: bool
    written: frozenset[FileKey] = frozenset()
    """What the changed columns will reference after the flush."""
    previous: frozenset[FileKey] = frozenset()
    """What the session believes the changed columns referenced before (may be stale)."""
    holds: frozenset[FileKey] = frozenset()
    """What all the row's loaded file columns reference after the flush."""


@dataclass(slots=True)
class FlushPlan:
    """What ``before_flush`` decided; the flush's first row write carries it out."""

    uploads: list[PlannedUpload] = field(default_factory=list)
    rows: list[RowChange] = field(default_factory=list)
    lists: list[CommittedList] = field(default_factory=list)
    error: StoreroomError | None = None
    copies: list[tuple[_Arrival, FileObject]] = field(default_factory=list)
    """Files given to a row while another row keeps them, and the copy each row gets."""
    moves: set[FileKey] = field(default_factory=set)
    """Files a row takes because another row gives them up (checked against the database)."""


@dataclass(slots=True)
class _Arrival:
    """A file that a row's column now holds and that came from elsewhere in the session."""

    row: object
    state: InstanceState[Any]
    column: str
    kind: FileColumn
    file: FileObject
    key: FileKey | None
    """The stored object's key; None for new content that another row uploads."""
    held: frozenset[FileKey]
    """What the row held before (a copy's path must not be one of them)."""


_unloaded: weakref.WeakKeyDictionary[InstanceState[Any], set[str]] = weakref.WeakKeyDictionary()
"""Rows' file columns assigned while not loaded (expired or deferred); usually empty."""


def _note_unloaded(
    state: InstanceState[Any], _value: object, oldvalue: object, initiator: AttributeEventToken
) -> None:
    if oldvalue is NO_VALUE and state.key is not None:
        _unloaded.setdefault(state, set()).add(initiator.key)


def _read_replaced(session: Session, rows: Iterable[object]) -> None:
    """Give file columns assigned while not loaded the value they replace, read now.

    What the database holds becomes the attribute's committed state, as SQLAlchemy's active
    history would have made it on assignment; read in the flush, the one place where an
    AsyncSession may do IO. Batched: one query per mapper (and table).
    """
    if not _unloaded:
        return
    wanted: dict[Mapper[Any], list[tuple[InstanceState[Any], set[str]]]] = {}
    for row in rows:
        state = attributes.instance_state(row)
        names = _unloaded.pop(state, None)
        if not names or state.key is None:
            continue
        names = {n for n in names if state.committed_state.get(n, None) is NO_VALUE}
        if names:
            wanted.setdefault(state.mapper, []).append((state, names))
    for mapper, entries in wanted.items():
        connection = session.connection(bind_arguments={"mapper": mapper})
        idents = [tuple(state.key[1]) for state, _n in entries]  # type: ignore[index]
        names = set().union(*(n for _s, n in entries))
        rows = _read_values(connection, mapper, idents, sorted(names), lock=False)
        for (state, mine), ident in zip(entries, idents, strict=True):
            row = rows.get(ident, {})
            for name in mine:
                state.committed_state[name] = row.get(name)


def _previous_files(state: InstanceState[Any], column: str) -> list[FileObject]:
    """What ``column`` referenced at the last flush or load, as far as the session knows."""
    history = state.get_history(column, PASSIVE_NO_INITIALIZE)
    old: list[FileObject] = []
    for value in history.deleted or ():
        baseline = getattr(value, "committed_files", None)
        old.extend(baseline() if baseline is not None else _files(value))
    current = state.dict.get(column)
    baseline = getattr(current, "committed_files", None)
    if baseline is not None:
        old.extend(baseline())
    elif not history.deleted and state.committed_state.get(column, None) is NO_VALUE:
        # Changed in place and flagged modified: the loaded value is the current one.
        old.extend(_files(current))
    return old


def _edited_in_place(file: FileObject, key: FileKey, kind: FileColumn) -> bool:
    """Whether a file a row holds now names another object than the one the row held."""
    held = file._in_row
    return held is not None and (held[0] or kind.backend or "", held[1]) != key


def _edited(state: InstanceState[Any], column: str, key: FileKey) -> StaleFileReference:
    """The refusal of a stored file whose ``path`` or ``backend`` was edited in place."""
    backend, path = key
    return StaleFileReference(
        f"{state.class_.__name__} row {state.identity!r}: the FileObject in {column!r} was "
        f"edited in place to reference {path!r} (backend {backend!r}), but a stored file's "
        "path and backend name the object it is, which the row holds elsewhere. To give the "
        "row another file, assign one: row.file = other_row.file (copied), or "
        "row.file = FileObject(content=...) (uploaded)"
    )


def _changed(state: InstanceState[Any], column: str) -> bool:
    return bool(state.get_history(column, PASSIVE_NO_INITIALIZE).has_changes())


def _destination(
    row: object, column: str, kind: FileColumn, file: FileObject, taken: set[FileKey]
) -> PlannedUpload:
    """Where a file with content goes: its own path, or a new one that overwrites nothing."""
    backend = file._backend_key or kind.backend
    path = file.path
    stored_before = file.checksum is not None or file.etag is not None
    if not file._path_given or stored_before or (taken and (backend or "", path) in taken):
        path = kind.path_function(row, column, file)
        if (backend or "", path) in taken:
            raise ConfigurationError(
                f"the path function of {type(row).__name__}.{column} returned {path!r}, "
                "which this row already references; uploading there would overwrite bytes "
                "that a rollback could not restore. Return a unique path (the default adds "
                "a uuid4)"
            )
    table = getattr(getattr(row, "__table__", None), "name", type(row).__name__)
    return PlannedUpload(file, backend, path, kind, f"{table}.{column}")


def plan_flush(session: Session, instances: Sequence[object] | None = None) -> FlushPlan:
    """Decide what a flush of ``session`` uploads and which file columns it changes.

    Changes nothing (the caller applies the plan); it reads only what file columns assigned
    while not loaded replaced (:func:`_read_replaced`). A stored file that a row is
    given while the row it came from keeps it (both in this session or not) is planned as a
    copy for the row given it, as is new content given to two rows: deleting one row must
    not delete what the other references. A file that another row gives up in the same
    transaction moves instead.
    """
    only = None if not instances else {id(obj) for obj in instances}
    plan = FlushPlan()
    seen: set[int] = set()
    arrivals: list[_Arrival] = []
    leaving: set[FileKey] = set()  # what rows of this flush give up
    for row in session.deleted:
        if only is not None and id(row) not in only:
            continue
        state = attributes.instance_state(row)
        columns = _column_names(state.mapper)
        if columns:
            plan.rows.append(RowChange(state, columns, deleting=True, is_new=False))
            for column in columns:
                leaving |= _stored_keys(
                    [*_previous_files(state, column), *_files(state.dict.get(column))]
                )
    changing = [*session.new, *session.dirty]
    if only is not None:
        changing = [r for r in changing if id(r) in only]
    _read_replaced(session, changing)
    for row in changing:
        state = attributes.instance_state(row)
        kinds = file_columns(state.mapper)
        if not kinds:
            continue
        is_new = state.key is None
        if is_new:  # every column is written, nothing was held before
            changed = _column_names(state.mapper)
            olds: dict[str, list[FileObject]] | None = None
            previous: set[FileKey] = set()
            held: frozenset[FileKey] = frozenset()
        else:
            changed = tuple(c for c, _k in kinds if _changed(state, c))
            if not changed:
                continue
            olds = {c: _previous_files(state, c) for c in changed}
            previous = {_key(f) for old in olds.values() for f in old if f.backend is not None}
            held = frozenset(
                previous.union(
                    *(
                        _stored_keys(_files(state.dict.get(c)))
                        for c, _k in kinds
                        if c not in changed
                    )
                )
            )
        written: set[FileKey] = set()
        for column, kind in kinds:
            if column not in changed:
                continue
            value = state.dict.get(column)
            taken = (
                set() if olds is None else {_key(f) for f in olds[column] if f.backend is not None}
            )
            now: set[FileKey] = set()
            for file in _files(value):
                if file._pending is not None:
                    if id(file) in seen:  # new content given to two rows (or twice)
                        arrivals.append(_Arrival(row, state, column, kind, file, None, held))
                        continue
                    seen.add(id(file))
                    try:
                        upload = _destination(row, column, kind, file, taken)
                    except StoreroomError as exc:
                        plan.error = plan.error or exc
                        continue
                    plan.uploads.append(upload)
                    written.add((upload.backend or "", upload.path))
                    continue
                key = (file.backend or kind.backend or "", file.path)
                if _edited_in_place(file, key, kind):
                    plan.error = plan.error or _edited(state, column, key)
                    continue
                now.add(key)
                # Another column's file (of this row too) arrives: one object, one column.
                if file._in_row and key not in taken:
                    arrivals.append(_Arrival(row, state, column, kind, file, key, held))
                else:
                    written.add(key)
            if kind.multiple and hasattr(value, "mark_committed"):
                plan.lists.append(cast(CommittedList, value))
            leaving |= taken - now
        plan.rows.append(
            RowChange(
                state,
                changed,
                deleting=False,
                is_new=is_new,
                written=frozenset(written),
                previous=frozenset(previous),
            )
        )
    if arrivals:
        _plan_copies(session, plan, arrivals, leaving)
    return plan


def _plan_copies(
    session: Session, plan: FlushPlan, arrivals: Sequence[_Arrival], leaving: set[FileKey]
) -> None:
    """Moves stay as they are; every other arrival is planned as a copy (see plan_flush)."""
    files = _transaction_files(session)
    if files is not None:
        leaving.update(files.free_keys())  # given up earlier in this transaction, not taken
    for arrival in arrivals:
        if arrival.key is not None and arrival.key in leaving:
            leaving.discard(arrival.key)  # the first row to take it gets it; others copy
            plan.moves.add(arrival.key)
            continue
        file = arrival.file
        if arrival.key is None:
            source = file  # uploaded in this flush: copied once that upload is done
        else:
            source = FileObject.from_dict(file.to_dict(), registry=file._registry)
            source.backend = arrival.key[0] or None
        metadata = {k: v for k, v in file.metadata.items() if k != "variants"}
        copy = FileObject(
            filename=file.filename,
            content_type=file.content_type,
            metadata=metadata,
            content=cast("Content", _CopyOf(source)),
            registry=file._registry,
        )
        copy.backend = file.backend  # the object's own backend (or the column's, if unset)
        try:
            upload = _destination(
                arrival.row, arrival.column, arrival.kind, copy, set(arrival.held)
            )
        except StoreroomError as exc:
            plan.error = plan.error or exc
            continue
        plan.uploads.append(upload)
        plan.copies.append((arrival, copy))


def _apply(plan: FlushPlan) -> None:
    """Put each planned copy in its row; give each planned upload its backend and path."""
    for arrival, copy in plan.copies:
        value = arrival.state.dict.get(arrival.column)
        if value is arrival.file:
            arrival.state.dict[arrival.column] = copy
        elif isinstance(value, list):
            at = next(i for i, item in enumerate(value) if item is arrival.file)
            list.__setitem__(value, at, copy)  # the column's change is already tracked
    for upload in plan.uploads:
        file = upload.file
        file._in_row = None  # new bytes at a new key: marked below, with that key
        if upload.backend is not None and (
            upload.backend != file._backend_key or file._storage is not None
        ):
            file.backend = upload.backend  # (else the setter would change nothing)
        if upload.path != file.path or not file._path_given:
            file.assign_path(upload.path)
        # Resolve the backend now: fills in the registry's default, fails early on a bad key.
        file._pin_storage()
        upload.backend = file._backend_key
    for change in plan.rows:
        if change.deleting:
            continue
        written: set[FileKey] = set()
        holds: set[FileKey] = set()
        for column, kind in file_columns(change.state.mapper):
            if change.is_new and column not in change.state.dict and _no_default(change, column):
                # Inserted as NULL either way; set, a later assignment's history records
                # None as the previous value (unset, it would read as a change in place).
                change.state.dict[column] = None
            writes = column in change.columns
            for file in _files(change.state.dict.get(column)):
                if writes:
                    if file._backend_key is None and kind.backend is not None:
                        file.backend = kind.backend
                    if file._in_row is None:  # kept as loaded: an in-place edit shows
                        file._in_row = (file._backend_key, file.path)
                keys = _keys(file)
                holds.update(keys)
                if writes:
                    written.update(keys)
        change.written = frozenset(written)
        change.holds = frozenset(holds)


def _no_default(change: RowChange, column: str) -> bool:
    """Whether an unset ``column`` of a new row is inserted as NULL (no default of any kind)."""
    table_column = change.state.mapper.columns.get(column)
    return table_column is not None and (
        table_column.default is None and table_column.server_default is None
    )


# -- what a transaction did --------------------------------------------------------------------


@dataclass(slots=True)
class RowReference:
    """What a row references after a flush (or, with ``subtract``, what a bulk statement
    took from it and ``adds``, what it gave it)."""

    savepoint: int
    row: InstanceState[Any] | tuple[str, tuple[Any, ...]]
    keys: frozenset[FileKey]
    subtract: bool = False
    adds: frozenset[FileKey] = frozenset()

    def identity(self) -> Hashable:
        """The row, by table and primary key once it has one."""
        row = self.row
        if isinstance(row, InstanceState):
            if row.key is None:
                return ("new", id(row))
            return (_table_name(row.mapper), tuple(row.key[1]))
        return row


def _table_name(mapper: Mapper[Any]) -> str:
    return str(cast(Table, mapper.local_table).name)


@dataclass(slots=True)
class TransactionFiles:
    """What one outermost transaction uploaded and found obsolete, per SAVEPOINT.

    ``obsolete`` lists files that the database held in a column the transaction changed or a
    row it deleted; ``references`` what each written row referenced at its last flush. After
    the commit an obsolete file is deleted unless a row's last flush references it (it moved
    to another row, or was put back).
    """

    uploads: list[UploadRecord] = field(default_factory=list)
    obsolete: list[tuple[int, FileKey]] = field(default_factory=list)
    references: list[RowReference] = field(default_factory=list)
    parent_of: dict[int, int] = field(default_factory=dict)
    released: set[int] = field(default_factory=set)
    savepoints: weakref.WeakKeyDictionary[SessionTransaction, int] | None = None
    """Numbers of the SAVEPOINTs seen (made at the first one: most transactions have none)."""
    plan: FlushPlan | None = None
    deleted_in_flush: set[int] = field(default_factory=set)
    watch: weakref.ref[SessionTransaction] | None = None
    """Its key in ``_transactions``: calls :meth:`abandoned` (through :func:`_dropped`) if
    the transaction is garbage-collected before it ends."""
    connections: list[weakref.ref[Connection]] = field(default_factory=list)
    """The connections its flushes and statements wrote through (usually one), weakly: a
    session dropped with its transaction open must not keep its connection from the pool."""

    def wrote_through(self, connection: Connection) -> None:
        for ref in self.connections:
            if ref() is connection:
                return
        self.connections.append(weakref.ref(connection))

    def open_connection(self) -> Connection | None:
        """A connection it wrote through that is still in a transaction (one it joined)."""
        for ref in self.connections:
            connection = ref()
            if connection is not None and connection.in_transaction():
                return connection
        return None

    def abandoned(self, _gone: weakref.ref[SessionTransaction]) -> None:
        """The transaction was dropped with its session open (see :func:`_abandoned`).

        Not while the interpreter shuts down: no background delete could run then.
        """
        self.watch = None
        if not sys.is_finalizing():
            _abandoned(self)

    def savepoint(self, transaction: SessionTransaction | None) -> int:
        """This transaction's number for ``transaction`` (0: the outermost)."""
        while transaction is not None and not transaction.nested:
            transaction = transaction.parent
        if transaction is None:
            return _ROOT
        if self.savepoints is None:
            self.savepoints = weakref.WeakKeyDictionary()
        number = self.savepoints.get(transaction)
        if number is None:
            number = self.savepoints[transaction] = len(self.parent_of) + 1
            self.parent_of[number] = self.savepoint(transaction.parent)
        return number

    def within(self, savepoint: int) -> set[int]:
        """``savepoint`` and every SAVEPOINT opened inside it."""
        found = {savepoint}
        changed = True
        while changed:
            changed = False
            for child, parent in self.parent_of.items():
                if parent in found and child not in found:
                    found.add(child)
                    changed = True
        return found

    def discard(self, savepoints: set[int]) -> list[UploadRecord]:
        """Forget what ``savepoints`` did; return their uploads."""
        gone = [u for u in self.uploads if u.savepoint in savepoints]
        self.uploads = [u for u in self.uploads if u.savepoint not in savepoints]
        self.obsolete = [o for o in self.obsolete if o[0] not in savepoints]
        self.references = [r for r in self.references if r.savepoint not in savepoints]
        return gone

    def uploaded_keys(self) -> set[FileKey]:
        return {u.key for u in self.uploads if u.stage != "nothing written"}

    def files_to_delete(self) -> list[FileKey]:
        """After the commit: obsolete files that no row's last flush references."""
        if not self.obsolete:
            return []
        return list(self.free_keys())

    def free_keys(self) -> dict[FileKey, None]:
        """Files rows gave up in this transaction that no row's last flush took (in order).

        Such a file may move to a row; once one row has taken it, it is no longer free.
        """
        if not self.obsolete:
            return {}
        last: dict[Hashable, frozenset[FileKey]] = {}
        for reference in self.references:
            row = reference.identity()
            if reference.subtract:
                last[row] = (last.get(row, frozenset()) - reference.keys) | reference.adds
            else:
                last[row] = reference.keys
        referenced: set[FileKey] = set().union(*last.values())
        return dict.fromkeys(k for _s, k in self.obsolete if k not in referenced)


_transactions: dict[weakref.ref[SessionTransaction], TransactionFiles] = {}
"""The files of each outermost transaction, looked up by ``weakref.ref(root)``.

What a WeakKeyDictionary keeps, without its methods (Python calls, seven per flush): the
key is the weak reference ``files.watch``, whose callback (:func:`_dropped`) forgets the
entry and deletes the uploads if the transaction is dropped before it ends. Closing the
files drops the entry and that reference, so the callback never runs for a transaction
that ended.
"""
# Per-session flush state lives in ``session.info`` (dies with the session; a plain dict
# is several times cheaper than a WeakKeyDictionary on a path every flush takes).
_PLAN = "storeroom.flush_plan"
"""``session.info`` key: the plan of the flush in progress, until its first row is written."""
_FLUSH_STARTED = "storeroom.flush_started"
"""``session.info`` key present while a flush that ran ``before_flush`` is in progress."""


def _outermost(transaction: SessionTransaction) -> SessionTransaction:
    while transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _transaction_files(session: Session) -> TransactionFiles | None:
    root = session.get_transaction()
    return _transactions.get(weakref.ref(root)) if root is not None else None


def _open_transaction_files(session: Session) -> TransactionFiles:
    root = session.get_transaction()
    if root is None:
        session.connection()  # begins the transaction the statement will run in
        root = session.get_transaction()
        assert root is not None
    files = _transactions.get(weakref.ref(root))
    if files is None:
        files = TransactionFiles()
        # A weak reference with a callback rather than weakref.finalize (a fifth of the
        # cost), held by the module's dict (as its key) even when the transaction is
        # garbage in a cycle, so the callback runs.
        files.watch = watch = weakref.ref(root, _dropped)
        _transactions[watch] = files
    return files


def _dropped(watch: weakref.ref[SessionTransaction]) -> None:
    """A transaction with files was garbage-collected before it ended."""
    files = _transactions.pop(watch, None)
    if files is not None:
        files.abandoned(watch)


def _close_transaction_files(root: SessionTransaction) -> TransactionFiles | None:
    files = _transactions.pop(weakref.ref(root), None)
    if files is not None:
        files.watch = None
    return files


# -- running storage operations ----------------------------------------------------------------

_background: set[asyncio.Task[list[Exception | None]]] = set()
_Item = TypeVar("_Item")


def _for_each_file(
    items: Sequence[_Item],
    sync_op: Callable[[_Item], object],
    async_op: Callable[[_Item], Awaitable[object]],
    *,
    shielded: bool = False,
) -> list[Exception | None]:
    """Run one storage operation per item, at most ``upload_concurrency`` at once.

    Inside SQLAlchemy's greenlet (an AsyncSession) the async form runs on the event loop;
    elsewhere the sync form runs in a thread pool. Returns each item's error, or None. A
    ``BaseException`` (cancellation, KeyboardInterrupt) propagates once every operation has
    stopped. ``shielded`` operations finish even if the caller is cancelled meanwhile.
    """
    if not items:
        return []
    limit = max(1, settings.upload_concurrency)
    if in_greenlet():
        gate = asyncio.Semaphore(limit)

        async def one_async(item: _Item) -> Exception | None:
            async with gate:
                try:
                    await async_op(item)
                except Exception as exc:
                    return exc
            return None

        async def all_async() -> list[Exception | None]:
            tasks = [asyncio.ensure_future(one_async(i)) for i in items]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # Stop the others before the caller cleans up what they may have written.
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                raise

        if not shielded:
            return await_only(all_async())
        task = asyncio.ensure_future(all_async())
        _background.add(task)
        task.add_done_callback(_background.discard)
        return await_only(asyncio.shield(task))

    def one(item: _Item) -> Exception | None:
        try:
            sync_op(item)
        except Exception as exc:
            return exc
        return None

    if len(items) == 1:
        return [one(items[0])]
    if limit == 1:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
        return list(pool.map(one, items))


@job(DELETE_JOB)
def _delete_objects_job(payload: Mapping[str, Any]) -> None:
    """Delete ``payload["objects"]`` (``[[backend, path], ...]``); missing ones are fine.

    With ``not_before`` (a Unix time), waits until then first (at most a minute).
    """
    from storeroom.registry import storages

    wait = float(payload.get("not_before", 0)) - time.time()
    if wait > 0:
        time.sleep(min(wait, 60.0))
    failures: list[str] = []
    for backend, path in payload["objects"]:
        try:
            storages.get_backend(backend).delete(path)
        except Exception as exc:
            failures.append(f"{backend}:{path}: {exc}")
    if failures:
        raise BackendError(
            f"could not delete {len(failures)} object(s) ({payload.get('reason', '')}): "
            + "; ".join(failures[:5])
            + "; if this keeps failing each is an orphan that storeroom gc will remove"
        )


def _enqueue_deletes(keys: Sequence[FileKey], reason: str, *, delay: float = 0.0) -> None:
    """Hand deletes to the job queue (never raises: a failure to enqueue is logged)."""
    queue = get_queue()
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = [list(k) for k in keys[start : start + _DELETE_BATCH]]
        payload: dict[str, Any] = {"objects": batch, "reason": reason}
        if delay > 0:
            payload["not_before"] = time.time() + delay
        try:
            queue.enqueue(DELETE_JOB, payload)
        except Exception as exc:
            logger.error(
                "could not schedule the deletion of %d object(s) (%s): %s; they are orphans "
                "that storeroom gc will remove",
                len(batch),
                reason,
                exc,
            )


def _delete_now(records: Sequence[UploadRecord], reason: str) -> None:
    """Delete what uploads wrote, shielded from cancellation; failures go to the job queue."""
    records = [r for r in records if r.stage != "nothing written"]
    if not records:
        return
    interrupted = [r.key for r in records if r.stage == "started"]
    if interrupted:
        # A write cancelled mid-request may still complete in the store after this delete.
        _enqueue_deletes(
            interrupted, f"cancelled while uploading ({reason})", delay=settings.settle_delay
        )
    errors = _for_each_file(
        records, lambda r: r.file.delete(), lambda r: r.file.delete_async(), shielded=True
    )
    failed = [r.key for r, e in zip(records, errors, strict=True) if e is not None]
    if failed:
        logger.warning(
            "could not delete %d object(s) uploaded in a transaction that %s; retrying in "
            "the background",
            len(failed),
            reason,
        )
        _enqueue_deletes(failed, f"uploaded in a transaction that {reason}")


def _abandoned(files: TransactionFiles) -> None:
    """A session was dropped with its transaction open: delete what that transaction uploaded."""
    keys = [u.key for u in files.uploads if u.stage != "nothing written"]
    if keys:
        logger.warning(
            "a session was garbage-collected with an open transaction that uploaded %d "
            "file(s); deleting them in the background. Close sessions (with Session(...) as "
            "session:) to clean up at once",
            len(keys),
        )
        _enqueue_deletes(keys, "was abandoned")


def wait_for_cleanup(timeout: float | None = None) -> bool:
    """Wait until the deletes scheduled after commits so far have run; True if in time.

    The same as ``storeroom.jobs.get_queue().drain(timeout)``: for tests, scripts and CLI
    commands that want the store settled before they go on or exit.
    """
    return get_queue().drain(timeout)


# -- flush -------------------------------------------------------------------------------------

_BULK_SAVE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "storeroom_bulk_save", default=False
)
_BULK_TOKENS = "storeroom.bulk_tokens"
"""``session.info`` key: the bulk saves in progress, each subtransaction's token of
``_BULK_SAVE`` (in the session, not a WeakKeyDictionary: one ``get`` per transaction end)."""


def refuse_unsafe_bind(value: object) -> None:
    """Called by ``StoredObject`` as a value is written: refuse writes that skip the rule."""
    if value is None:
        return
    if _BULK_SAVE.get():
        raise ConfigurationError(
            "Session.bulk_save_objects(), bulk_insert_mappings() and bulk_update_mappings() "
            "skip the session events that keep files and rows consistent, so they cannot "
            "write StoredObject columns. Use session.add_all(rows), or "
            "session.execute(insert(Model), [{...}, ...]) / session.execute(update(Model), "
            "[{'id': ..., 'file': ...}, ...])"
        )
    for file in (value,) if isinstance(value, FileObject) else _files(value):
        if file._pending is not None:
            raise ConfigurationError(
                f"FileObject {file.path!r} still has content to upload, and this statement "
                "would store a reference to bytes that were never written. Add rows with "
                "session.add(...) or session.execute(insert(Model), [{...}, ...]) (a list of "
                "parameter dicts); .values(...) with new content is not supported"
            )


def _before_flush(
    session: Session, flush_context: UOWTransaction, instances: Sequence[object] | None
) -> None:
    info = session.info
    info[_FLUSH_STARTED] = True
    plan = plan_flush(session, instances)
    if plan.error is None:
        try:
            _apply(plan)
        except StoreroomError as exc:
            plan.error = exc
    if not (plan.uploads or plan.rows or plan.lists or plan.error):  # nothing to carry out
        info.pop(_PLAN, None)
    else:
        info[_PLAN] = plan


def _read_locked(
    connection: Connection, mapper: Mapper[Any], identities: Sequence[tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, list[FileObject]]]:
    """What the database holds now in ``mapper``'s file columns for these rows, locked."""
    names = [name for name, _kind in file_columns(mapper)]
    rows = _read_values(connection, mapper, identities, names, lock=True)
    return {
        ident: {name: _files(value) for name, value in row.items()} for ident, row in rows.items()
    }


def _read_values(
    connection: Connection,
    mapper: Mapper[Any],
    identities: Sequence[tuple[Any, ...]],
    names: Iterable[str],
    *,
    lock: bool,
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The values (FileObject, FileList or None) of columns ``names`` of these rows."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    by_table: dict[Table, list[tuple[str, Column[Any]]]] = {}
    for name in names:
        column = mapper.columns[name]
        by_table.setdefault(column.table, []).append((name, column))
    for table, columns in by_table.items():
        pk = list(table.primary_key.columns)
        for start in range(0, len(identities), 500):
            chunk = list(identities[start : start + 500])
            where = pk[0].in_([i[0] for i in chunk]) if len(pk) == 1 else tuple_(*pk).in_(chunk)
            query = select(*pk, *(c for _n, c in columns)).where(where)
            for values in connection.execute(query.with_for_update() if lock else query):
                row = found.setdefault(tuple(values[: len(pk)]), {})
                for (name, _column), value in zip(columns, values[len(pk) :], strict=True):
                    row[name] = value
    return found


def _read_where(
    connection: Connection, table: Table, columns: Sequence[Column[Any]], where: Any
) -> list[tuple[tuple[Any, ...], list[FileObject]]]:
    """Rows matching ``where`` (primary key, files in ``columns``), locked."""
    pk = list(table.primary_key.columns)
    query = select(*pk, *columns).with_for_update()
    if where is not None:
        query = query.where(where)
    return [
        (tuple(values[: len(pk)]), [f for v in values[len(pk) :] for f in _files(v)])
        for values in connection.execute(query)
    ]


# Children whose rows the database deletes (ON DELETE CASCADE) when a parent row goes.
_cascades: dict[Mapper[Any], list[tuple[Mapper[Any], list[tuple[Column[Any], Column[Any]]]]]] = {}


def cascade_files(relationship: QueryableAttribute[Any]) -> None:
    """Declare that the database deletes ``relationship``'s children with their parent.

    For ``relationship(..., passive_deletes=True)`` over a foreign key with ``ON DELETE
    CASCADE``: SQLAlchemy then never loads the children, so their files would be left
    behind. After ``cascade_files(Parent.children)``, deleting a parent row (one by one or
    with a bulk ``delete``) also reads its children's files, under a row lock, and deletes
    them after the commit; declared grandchildren follow too. The parent side of the
    foreign key must be the parent's primary key.
    """
    prop: RelationshipProperty[Any] | None = getattr(relationship, "property", None)
    if prop is None or not hasattr(prop, "local_remote_pairs"):
        raise ConfigurationError(
            f"cascade_files() takes a relationship attribute (Parent.children), got "
            f"{relationship!r}"
        )
    parent, child = prop.parent, prop.mapper
    pairs = list(prop.local_remote_pairs or [])
    pk = set(cast(Table, parent.local_table).primary_key.columns)
    if not pairs or any(local not in pk for local, _remote in pairs):
        raise ConfigurationError(
            f"cascade_files({relationship!r}): the foreign key must reference the parent's "
            "primary key"
        )
    entries = _cascades.setdefault(parent, [])
    if all(existing is not child for existing, _p in entries):
        entries.append((child, pairs))  # type: ignore[arg-type]
    for mapper in parent.self_and_descendants:  # subclasses configured later: below
        _listen_for_cascades(mapper)


def _listen_for_cascades(mapper: Mapper[Any]) -> None:
    """A mapper without file columns whose deletes start declared cascades: the flush plans
    no file work for its rows, so their deletes are watched one by one."""
    if (
        not file_columns(mapper)
        and _declares_cascades(mapper)
        and not event.contains(mapper, "before_delete", _before_delete)
    ):
        event.listen(mapper, "before_delete", _before_delete)


def _declares_cascades(mapper: Mapper[Any]) -> bool:
    """Whether ``mapper`` or a class it inherits from declared :func:`cascade_files`."""
    return any(m in _cascades for m in mapper.iterate_to_root())


def _enforces_foreign_keys(connection: Connection) -> bool:
    """Whether the database runs ``ON DELETE CASCADE`` (SQLite only with the pragma on)."""
    if connection.dialect.name != "sqlite":
        return True
    return bool(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())


_Links = list[tuple[Mapper[Any], list[tuple[Column[Any], Column[Any]]]]]


def _joined_subclasses(mapper: Mapper[Any]) -> _Links:
    """Joined-table subclasses of ``mapper`` with their own table: a bulk ``delete`` of
    base rows leaves their rows to the foreign key's ``ON DELETE CASCADE``, so their file
    columns are read like a declared cascade's (see :func:`cascade_files`)."""
    links: _Links = []
    parent = cast(Table, mapper.local_table)
    for sub in mapper.self_and_descendants:
        table = sub.local_table
        if (
            sub.inherits is None
            or sub.inherits.local_table is not parent  # below a table of its own: later
            or table is parent  # single-table: the same rows
            or not isinstance(table, Table)
        ):
            continue
        pairs = [
            (fk.column, fk.parent)
            for fk in table.foreign_keys
            if fk.column.table is parent
            and fk.column.primary_key
            and fk.parent.primary_key
            and (fk.ondelete or "").upper() == "CASCADE"  # otherwise the delete fails
        ]
        if pairs:
            links.append((sub, pairs))
    return links


def _cascaded(
    connection: Connection,
    mapper: Mapper[Any],
    identities: Sequence[tuple[Any, ...]],
    depth: int = 0,
    *,
    joined: bool = False,
) -> list[tuple[tuple[str, tuple[Any, ...]], list[FileObject]]]:
    """The children the database will delete along with these parent rows: each child's
    identity (table, primary key) and files. With ``joined``, joined-table subclass rows
    count as children (a bulk delete of base rows; the unit of work deletes those itself)."""
    found: list[tuple[tuple[str, tuple[Any, ...]], list[FileObject]]] = []
    if not identities or depth > 16:
        return found
    # The unit of work deletes a row from every table of its class, so cascades declared on
    # a base class start too; a bulk statement deletes from its own table only.
    declaring_mappers = mapper.iterate_to_root() if depth == 0 and not joined else [mapper]
    links = [
        (declaring, child, pairs)
        for declaring in declaring_mappers
        for child, pairs in _cascades.get(declaring, [])
    ]
    if joined:
        links += [(mapper, child, pairs) for child, pairs in _joined_subclasses(mapper)]
    if not links or (depth == 0 and not _enforces_foreign_keys(connection)):
        return found
    for declaring, child, pairs in links:
        parent_pk = list(cast(Table, declaring.local_table).primary_key.columns)
        remote = [r for _l, r in sorted(pairs, key=lambda p: parent_pk.index(p[0]))]
        where = (
            remote[0].in_([i[0] for i in identities])
            if len(remote) == 1
            else tuple_(*remote).in_(list(identities))
        )
        table = cast(Table, child.local_table)
        columns = [
            child.columns[name]
            for name, _kind in file_columns(child)
            if child.columns[name].table is table  # an inherited column is the parent's
        ]
        rows = _read_where(connection, table, columns, where)
        found += [((str(table.name), ident), files) for ident, files in rows]
        found += _cascaded(
            connection, child, [ident for ident, _f in rows], depth + 1, joined=joined
        )
    return found


def _carry_out(
    session: Session, connection: Connection, plan: FlushPlan, table: Table
) -> TransactionFiles:
    """Lock and read the changed rows, refuse stale writes, record, then upload.

    ``table`` is the table of the row the flush writes first (see :func:`hold_write_lock`).
    Returns the transaction's files.
    """
    files = _open_transaction_files(session)
    files.wrote_through(connection)
    nested = session.get_nested_transaction()
    savepoint = _ROOT if nested is None else files.savepoint(nested)
    if plan.error is not None:
        raise plan.error
    by_mapper: dict[Mapper[Any], list[RowChange]] = {}
    for change in plan.rows:
        if not change.is_new:
            by_mapper.setdefault(change.state.mapper, []).append(change)
    current: dict[int, frozenset[FileKey]] = {}
    for mapper, changes in by_mapper.items():
        through = _connection_of(session, connection, mapper)
        if through is not connection:
            files.wrote_through(through)
        rows = _read_locked(through, mapper, [c.state.key[1] for c in changes])  # type: ignore[index]
        for change in changes:
            in_db = rows.get(tuple(change.state.key[1]), {})  # type: ignore[index]
            current[id(change)] = _stored_keys(
                f for name in change.columns for f in in_db.get(name, [])
            )
    if plan.moves:
        # A move was decided from the session's copy of the row giving the file up: the
        # database (read under lock) or this transaction must agree that it held it.
        givers = files.uploaded_keys() | {k for _s, k in files.obsolete}
        givers.update(*current.values())
        if moved := sorted(plan.moves - givers):
            backend, path = moved[0]
            raise StaleFileReference(
                f"this flush moves {path!r} (backend {backend!r}) from the row that held it "
                "in this session's copy, but the database no longer has it there: another "
                "transaction replaced or deleted it after the rows were loaded. Reload the "
                "rows (session.refresh(row)) and move the file again"
            )
    known: set[FileKey] | None = None  # built at the first row that needs it
    for change in plan.rows:
        if change.deleting or change.is_new:
            continue
        if known is None:
            known = {k for _s, k in files.obsolete}
            known.update(*current.values())
        stale = (change.written & change.previous) - known
        if stale:
            raise _stale(change, *sorted(stale)[0])
    keep = bool(session.info.get(KEEP_REPLACED_FILES))
    deleted: list[tuple[Mapper[Any], tuple[Any, ...]]] = []
    for change in plan.rows:
        held = current.get(id(change), frozenset())
        if change.deleting:
            files.deleted_in_flush.add(id(change.state))
            deleted.append((change.state.mapper, tuple(change.state.key[1])))  # type: ignore[index]
            if not keep:
                files.obsolete += [(savepoint, k) for k in held]
                files.references.append(RowReference(savepoint, change.state, frozenset()))
            continue
        if held and not keep:
            files.obsolete += [(savepoint, k) for k in held - change.written]
        # Recorded even while replaced files are kept: the row may have taken a file given
        # up before the option was set, which must then outlive the commit.
        files.references.append(RowReference(savepoint, change.state, change.holds))
    if deleted and not keep:
        _record_cascaded(session, connection, files, savepoint, deleted)
    if plan.uploads:
        _before_uploads(connection, table, plan.uploads)
    _upload(files, savepoint, plan.uploads)
    return files


def _connection_of(session: Session, connection: Connection, mapper: Mapper[Any]) -> Connection:
    """The connection the flush writes ``mapper``'s rows through: ``connection`` (the one the
    first row was written through) unless ``binds=`` gives the mapper another engine, whose
    rows read and locked through ``connection`` would make the flush wait on itself."""
    bind = session.get_bind(mapper)
    if bind is connection or bind is connection.engine:
        return connection
    return session.connection(bind_arguments={"mapper": mapper})


def _stale(change: RowChange, backend: str, path: str) -> StaleFileReference:
    """The refusal of a row whose kept reference the database does not hold for it."""
    return StaleFileReference(
        f"{change.state.class_.__name__} row {change.state.identity!r}: this session's copy "
        f"references {path!r} (backend {backend!r}), which the database no longer holds: "
        "another transaction replaced it after this row was loaded. Reload the row "
        "(session.refresh(row)) and apply the change again"
    )


def _record_cascaded(
    session: Session,
    connection: Connection,
    files: TransactionFiles,
    savepoint: int,
    deleted: Sequence[tuple[Mapper[Any], tuple[Any, ...]]],
) -> None:
    by_mapper: dict[Mapper[Any], list[tuple[Any, ...]]] = {}
    for mapper, ident in deleted:
        if _declares_cascades(mapper):
            by_mapper.setdefault(mapper, []).append(ident)
    for mapper, idents in by_mapper.items():
        through = _connection_of(session, connection, mapper)
        for child, held in _cascaded(through, mapper, idents):
            files.obsolete += [
                (savepoint, k) for f in held if f.backend is not None for k in _keys(f)
            ]
            # Gone with its parent: whatever the child took earlier in this transaction,
            # it references nothing now.
            files.references.append(RowReference(savepoint, child, frozenset()))


def prepare_upload(upload: PlannedUpload, *, asynchronous: bool = False) -> Content | None:
    """The content of one file as it will be uploaded (the one place it passes through).

    For a column with validators, variants or ``analyze=True`` the content is wrapped by
    :func:`~storeroom.media.validation.inspect_content` (``inspect_content_async`` in async
    code): the validators run as the bytes pass and a refused file fails the upload with
    :class:`~storeroom.errors.ValidationError`, failing the flush.
    """
    content = upload.file._pending
    if isinstance(content, _CopyOf):
        content = cast("Content", content.chunks_async() if asynchronous else iter(content))
    kind = upload.kind
    if content is None or kind is None or not getattr(kind, "analyze", False):
        return content
    from storeroom.media.validation import inspect_content, inspect_content_async

    wrap = inspect_content_async if asynchronous else inspect_content
    upload.inspected = wrap(content, getattr(kind, "validators", ()), filename=upload.file.filename)
    return cast("Content", upload.inspected)


def _record_findings(upload: PlannedUpload) -> None:
    """After an inspected upload: its metadata and variants go on the FileObject."""
    findings = getattr(upload.inspected, "findings", None)
    upload.inspected = None
    if findings is None:
        return
    file = upload.file
    file.metadata.update(findings.metadata)
    makers = getattr(upload.kind, "variants", None)
    if makers:
        record_variants(file, upload.column, makers, findings.content_type)


def hold_write_lock(connection: Connection, table: Table) -> None:
    """On SQLite, take the database's write lock now, for the rest of ``connection``'s
    transaction; elsewhere, nothing.

    A flush takes it before it uploads, and ``storeroom gc`` takes it around each batch's
    check and deletes (:func:`storeroom.orm.maintenance.remove_orphans`): SQLite lets one
    connection write at a time, so gc either sees the row that references an upload
    (committed before gc got the lock) or finishes before the upload starts. No other
    connection's transaction is visible on SQLite, which leaves the lock as the only way to
    tell. The statement writes nothing (``UPDATE <table> SET <key> = <key> WHERE 0``) but
    takes the RESERVED lock (in WAL mode, the write lock) as any write does, waiting up to
    the connection's busy timeout (then ``OperationalError: database is locked``). Any table
    of the database will do: the lock is the whole database's.

    It runs on the driver's connection in one call (one hop to aiosqlite's thread), past
    SQLAlchemy's execution events, so ``echo`` does not show it: about 34,000 instructions
    (2% of an insert with a 4 KiB file; ``exec_driver_sql`` took 80,000), and with
    aiosqlite one hop to its thread where a cursor took three.
    """
    if connection.dialect.name != "sqlite":
        return
    driver: Any = connection.connection.driver_connection
    # Opening the transaction with the lock costs nothing more than the BEGIN the driver
    # would send before the first write (where it would send one: sqlite3's default, legacy
    # transaction control; not SQLAlchemy's SAVEPOINT recipe, isolation_level None and a
    # BEGIN of its own, nor Python 3.12's autocommit); else a write that changes nothing.
    if (
        not driver.in_transaction
        and driver.isolation_level is not None
        and getattr(driver, "autocommit", _LEGACY) == _LEGACY
    ):
        statement = "BEGIN IMMEDIATE"
    else:
        statement = _write_lock_statement(connection, table)
    try:
        if connection.dialect.is_async:
            await_only(driver.execute_fetchall(statement))  # aiosqlite
        else:
            driver.execute(statement)  # pysqlite; the cursor is dropped at once
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc


_LEGACY = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)


def begin_before_long_uploads(
    connection: Connection, table: Table, uploads: Sequence[PlannedUpload]
) -> None:
    """On PostgreSQL, MariaDB and MySQL, make sure ``connection``'s transaction has begun
    before an upload that may take long (content streamed, or more than
    :data:`_QUICK_UPLOAD` bytes).

    ``storeroom gc`` spares what changed since the oldest open transaction began, less a
    clock margin (:mod:`storeroom.orm.maintenance`). PostgreSQL dates a transaction from its
    first statement, which for a flush of new rows is the INSERT after the uploads: one
    ``SELECT 1`` first (a round trip, only before such uploads) dates it from before.
    InnoDB starts a transaction (``information_schema.innodb_trx``) at its first statement
    that opens an InnoDB table, so there the statement is a read of ``table`` (the table of
    the row the flush writes first), ``SELECT 1 FROM <table> LIMIT 1``, a consistent read
    that takes no lock; except under SERIALIZABLE, where every read takes shared locks that
    would stop other writers for the length of the upload: there nothing is sent, and such
    an upload is covered by gc's grace alone.
    """
    name = connection.dialect.name
    if name not in _DATED_AT_FIRST_STATEMENT:
        return
    for upload in uploads:  # (a loop, not any(): run before every upload of every flush)
        content = upload.file._pending
        if not (isinstance(content, bytes | bytearray) and len(content) <= _QUICK_UPLOAD):
            break  # one that may take long
    else:
        return
    if name == "postgresql":
        connection.exec_driver_sql("SELECT 1")
    elif connection.get_isolation_level() != "SERIALIZABLE":
        quote = connection.dialect.identifier_preparer
        connection.exec_driver_sql(f"SELECT 1 FROM {quote.format_table(table)} LIMIT 1").all()


_DATED_AT_FIRST_STATEMENT = frozenset({"postgresql", "mysql", "mariadb"})


_QUICK_UPLOAD = 1024 * 1024
"""Bytes given whole up to this size upload quickly: no statement before them."""


def _before_uploads(connection: Connection, table: Table, uploads: Sequence[PlannedUpload]) -> None:
    """What the database needs before a flush or statement uploads: SQLite's write lock
    (:func:`hold_write_lock`), elsewhere a transaction dated from before long uploads
    (:func:`begin_before_long_uploads`)."""
    if connection.dialect.name == "sqlite":
        hold_write_lock(connection, table)
    else:
        begin_before_long_uploads(connection, table, uploads)


_LOCK_STATEMENTS: weakref.WeakKeyDictionary[Table, str] = weakref.WeakKeyDictionary()


def _write_lock_statement(connection: Connection, table: Table) -> str:
    """The no-op ``UPDATE`` of :func:`hold_write_lock` on ``table`` (made once per table)."""
    statement = _LOCK_STATEMENTS.get(table)
    if statement is None:
        keys = list(table.primary_key.columns)
        column = keys[0] if keys else next(c for c in table.columns if c.computed is None)
        quote = connection.dialect.identifier_preparer
        name = quote.quote(column.name)
        statement = f"UPDATE {quote.format_table(table)} SET {name} = {name} WHERE 0"
        _LOCK_STATEMENTS[table] = statement
    return statement


def _upload(files: TransactionFiles, savepoint: int, uploads: Sequence[PlannedUpload]) -> None:
    if not uploads:
        return
    # Copies read their source, which may be one of this flush's uploads: they go after.
    plain: list[tuple[UploadRecord, PlannedUpload]] = []
    copying: list[tuple[UploadRecord, PlannedUpload]] = []
    records: list[UploadRecord] = []
    for upload in uploads:
        file = upload.file
        content = file._pending
        record = UploadRecord(
            file, (file._backend_key or "", file.path), savepoint, _rewinder(content)
        )
        records.append(record)
        (copying if isinstance(content, _CopyOf) else plain).append((record, upload))
    files.uploads += records  # recorded before any of them starts
    pairs = plain + copying

    def upload_sync(pair: tuple[UploadRecord, PlannedUpload]) -> None:
        record, planned = pair
        with record:
            record.file.save(prepare_upload(planned), overwrite=False)
            if planned.inspected is not None:
                _record_findings(planned)

    async def upload_async(pair: tuple[UploadRecord, PlannedUpload]) -> None:
        record, planned = pair
        with record:
            await record.file.save_async(
                prepare_upload(planned, asynchronous=True), overwrite=False
            )
            if planned.inspected is not None:
                _record_findings(planned)

    errors = _for_each_file(plain, upload_sync, upload_async)
    if copying and not any(errors):
        errors += _for_each_file(copying, upload_sync, upload_async)
    if not any(errors):
        return
    # Copies skipped after a failure have no entry in errors (and wrote nothing).
    failures = [(r, e) for (r, _u), e in zip(pairs, errors, strict=False) if e is not None]
    logger.warning(
        "%d of %d uploads in a flush failed; the transaction rolls back and what was "
        "uploaded is deleted",
        len(failures),
        len(records),
    )
    record, first = failures[0]
    if isinstance(first, ObjectExists):
        raise ObjectExists(
            f"cannot upload {record.file.filename!r} to {record.file.path!r} in backend "
            f"{record.key[0]!r}: an object is already stored there (another row's file?). "
            "Nothing was overwritten; give the FileObject another path, or none to let the "
            "column choose a unique one"
        ) from first
    if isinstance(first, StoreroomError):
        raise first
    raise BackendError(f"upload failed during flush: {first}") from first


def _before_row_write(mapper: Mapper[Any], connection: Connection, row: object) -> None:
    # The first row written by a flush carries out the flush's plan: inside the flush's
    # transaction (so a failed upload rolls it back) and before any row's JSON is built.
    state = attributes.instance_state(row)
    session = state.session
    if session is None:
        return
    plan = session.info.pop(_PLAN, None)
    if plan is not None:
        files = _carry_out(session, connection, plan, cast(Table, mapper.tables[0]))
        files.plan = plan


def _before_delete(mapper: Mapper[Any], connection: Connection, row: object) -> None:
    _before_row_write(mapper, connection, row)
    state = attributes.instance_state(row)
    session = state.session
    if session is None or session.info.get(KEEP_REPLACED_FILES) or state.key is None:
        return
    files = _open_transaction_files(session)
    files.wrote_through(connection)
    if id(state) in files.deleted_in_flush:
        return
    # A row the flush deletes without it being in session.deleted: a delete-orphan cascade.
    savepoint = files.savepoint(session.get_nested_transaction())
    ident = tuple(state.key[1])
    held = _read_locked(connection, state.mapper, [ident]).get(ident, {})
    files.obsolete += [(savepoint, k) for k in _stored_keys(f for v in held.values() for f in v)]
    files.references.append(RowReference(savepoint, state, frozenset()))
    files.deleted_in_flush.add(id(state))
    _record_cascaded(session, connection, files, savepoint, [(state.mapper, ident)])


def _after_flush_postexec(session: Session, flush_context: UOWTransaction) -> None:
    info = session.info
    info.pop(_PLAN, None)
    info.pop(_FLUSH_STARTED, None)
    files = _transaction_files(session)
    if files is None or files.plan is None:
        return
    plan, files.plan = files.plan, None
    files.deleted_in_flush.clear()
    # What a list holds now is what the next flush compares with.
    for value in plan.lists:
        value.mark_committed()


# -- bulk statements ---------------------------------------------------------------------------


def _dml_values(statement: Executable) -> dict[str, object]:
    """The column values a DML statement sets with ``.values(...)``, by column key."""
    raw = getattr(statement, "_values", None) or {}
    ordered = getattr(statement, "_ordered_values", None) or []
    found: dict[str, object] = {}
    for key, value in [*raw.items(), *ordered]:
        name = key if isinstance(key, str) else getattr(key, "key", None)
        if name is None:
            continue
        if isinstance(value, BindParameter):
            value = value.value
        elif isinstance(value, Null):
            value = None
        found[name] = value
    return found


def _on_orm_execute(execute: ORMExecuteState) -> Result[Any] | None:
    if not (execute.is_insert or execute.is_update or execute.is_delete):
        return None
    table = getattr(execute.statement, "table", None)
    if not isinstance(table, Table):
        return None
    columns = [c for c in table.columns if _is_file_column(c.type)]
    mapper = execute.bind_mapper
    if not columns and not (
        execute.is_delete
        and mapper is not None
        and (mapper in _cascades or _joined_subclasses(mapper))
    ):
        return None
    session = execute.session
    by_name: dict[str, Column[Any]] = {c.key: c for c in columns}
    if mapper is not None:
        by_name.update({name: mapper.columns[name] for name, _k in file_columns(mapper)})
    values = _dml_values(execute.statement)
    params = execute.parameters
    rows: list[dict[str, Any]] = (
        [p for p in params if isinstance(p, dict)]
        if isinstance(params, list)
        else [params]
        if isinstance(params, dict) and params
        else []
    )
    for name in by_name:
        if execute.is_insert and any(f.has_pending_content for f in _files(values.get(name))):
            raise ConfigurationError(
                f"insert({table.name}).values(...) with FileObject content would store a "
                "reference to bytes that were never written. Pass one parameter dict per row "
                "instead: session.execute(insert(Model), [{'file': FileObject(...)}, ...]), "
                "or session.add(...)"
            )
    if execute.is_update:
        set_here = [n for n in by_name if n in values]
        if any(values[n] is not None for n in set_here):
            raise ConfigurationError(
                f"update({table.name}).values({', '.join(set_here)}=...) would make every "
                "matched row share one stored object. Set file columns on loaded rows, pass "
                "one parameter dict per row with its primary key (session.execute(update("
                "Model), [{'id': ..., 'file': FileObject(...)}, ...])), or set them to None"
            )
    keep = bool(session.info.get(KEEP_REPLACED_FILES))
    if session.autoflush and execute.execution_options.get("autoflush", True):
        # SQLAlchemy autoflushes after this event; the rows must be read after that flush.
        session.flush()
    connection = session.connection(bind_arguments={"mapper": mapper} if mapper else None)
    files = _open_transaction_files(session)
    files.wrote_through(connection)
    savepoint = files.savepoint(session.get_nested_transaction())
    mark = (len(files.uploads), len(files.obsolete), len(files.references))
    uploads = _bulk_uploads(table, by_name, rows)
    dropped: list[FileKey] = []
    references: list[RowReference] = []
    before: list[frozenset[FileKey]] = []  # what each row of ``rows`` referenced
    if execute.is_update and rows:
        set_by_rows = [n for n in by_name if any(n in r for r in rows)]
        if set_by_rows:
            pk = list(table.primary_key.columns)
            pk_names = [
                mapper.get_property_by_column(c).key if mapper is not None else c.key for c in pk
            ]
            idents = [tuple(r[n] for n in pk_names) for r in rows]
            written = {
                ident: frozenset(k for n in set_by_rows for f in _files(r.get(n)) for k in _keys(f))
                for ident, r in zip(idents, rows, strict=True)
            }
            held = _read_locked_table(
                connection, table, pk, [by_name[n] for n in set_by_rows], idents
            )
            before = [held.get(ident, frozenset()) for ident in idents]
            for ident, old in held.items():
                given = written.get(ident, frozenset())
                dropped += old - given
                references.append(
                    RowReference(savepoint, (table.name, ident), old - given, True, given)
                )
    elif execute.is_update:
        set_here = [n for n in by_name if n in values]
        if set_here:
            where = _where_of(execute.statement, mapper)
            for ident, held_files in _read_where(
                connection, table, [by_name[n] for n in set_here], where
            ):
                dropped += _stored_keys(held_files)
                references.append(
                    RowReference(savepoint, (table.name, ident), _stored_keys(held_files), True)
                )
    elif execute.is_insert and rows:
        # New rows may take files that other rows gave up in this transaction (moves; any
        # other stored file of another row is refused below). Kept until the commit, even
        # if the new row lets go of it again: at worst an orphan for gc, never a loss.
        given = frozenset(
            k
            for r in rows
            for n in by_name
            for f in _files(r.get(n))
            if f._in_row and not f.has_pending_content
            for k in _keys(f)
        )
        if given:
            references.append(
                RowReference(savepoint, (f"{table.name} inserts", ()), given, True, given)
            )
    elif execute.is_delete:
        found = _read_where(connection, table, columns, _where_of(execute.statement, mapper))
        for ident, held_files in found:
            dropped += _stored_keys(held_files)
            references.append(RowReference(savepoint, (table.name, ident), frozenset()))
        if mapper is not None:
            idents = [i for i, _f in found]
            for child, held_files in _cascaded(connection, mapper, idents, joined=True):
                dropped += [k for f in held_files if f.backend is not None for k in _keys(f)]
                references.append(RowReference(savepoint, child, frozenset()))
    free = set(dropped).union(files.free_keys())
    _refuse_shared(table, by_name, rows, before or [frozenset()] * len(rows), free)
    if not keep:
        files.obsolete += [(savepoint, k) for k in dropped]
        files.references += references
    else:  # nothing given up now; what rows take (given up earlier) they still hold
        files.references += [
            RowReference(savepoint, r.row, frozenset(), True, r.adds) for r in references if r.adds
        ]
    try:
        if uploads:
            _before_uploads(connection, table, uploads)
        _upload(files, savepoint, uploads)
        result = execute.invoke_statement()
    except BaseException:
        # The statement did not run (or failed): forget what it recorded, delete its uploads.
        gone = files.uploads[mark[0] :]
        del files.uploads[mark[0] :]
        del files.obsolete[mark[1] :]
        del files.references[mark[2] :]
        _delete_now(gone, "failed")
        for record in gone:
            record.give_content_back()
        raise
    # In rows now (the session may hand them out as loaded rows' values): another row
    # given one of them later gets a copy.
    for row in rows:
        for name in by_name:
            for file in _files(row.get(name)):
                if file._in_row is None:
                    file._in_row = (file.backend, file.path)
    return result


def _refuse_shared(
    table: Table,
    names: Mapping[str, Column[Any]],
    rows: Sequence[dict[str, Any]],
    before: Sequence[frozenset[FileKey]],
    free: set[FileKey],
) -> None:
    """Refuse a bulk statement that gives a row a stored file another row keeps.

    The unit of work copies such a file (:func:`plan_flush`); a bulk statement cannot put a
    copy in the caller's parameters, so it is refused before anything is written. ``before``
    holds what each row referenced (its own file may be set again); ``free`` what rows of
    this statement or transaction gave up (such a file moves).
    """
    for row, held in zip(rows, before, strict=True):
        for name, column in names.items():
            kind: FileColumn = column.type  # type: ignore[assignment]
            for file in _files(row.get(name)):
                key = (file.backend or kind.backend or "", file.path)
                if file.has_pending_content or not file._in_row or key in held:
                    continue
                if key in free:
                    free.discard(key)  # moved to this row; a second taker must copy
                    continue
                raise ConfigurationError(
                    f"this bulk statement on {table.name} gives a row the file {file.path!r} "
                    f"(backend {key[0]!r}), which another row references (or another "
                    "column of this row, or a row another session gave it up in, whose "
                    "transaction has not ended); two references to one object would lose it "
                    "when either is dropped. Set it on a loaded "
                    "row instead (the flush gives that row its own copy), or pass a copy: "
                    "FileObject(filename=f.filename, content=f.open())"
                )


def _where_of(statement: Executable, mapper: Mapper[Any] | None) -> ColumnElement[bool] | None:
    """The rows a bulk statement matches: its WHERE clause and, for a single-table
    subclass, the discriminator SQLAlchemy adds (``kind IN (...)``)."""
    where = cast("ColumnElement[bool] | None", getattr(statement, "whereclause", None))
    if mapper is None or not mapper.single or mapper.polymorphic_on is None:
        return where
    kinds = [m.polymorphic_identity for m in mapper.self_and_descendants]
    only = cast("ColumnElement[bool]", mapper.polymorphic_on).in_(kinds)
    return only if where is None else and_(where, only)


def _read_locked_table(
    connection: Connection,
    table: Table,
    pk: list[Column[Any]],
    columns: list[Column[Any]],
    identities: Sequence[tuple[Any, ...]],
) -> dict[tuple[Any, ...], frozenset[FileKey]]:
    where = pk[0].in_([i[0] for i in identities]) if len(pk) == 1 else tuple_(*pk).in_(identities)
    found = _read_where(connection, table, columns, where)
    return {ident: _stored_keys(held) for ident, held in found}


def _bulk_uploads(
    table: Table, names: Mapping[str, Column[Any]], rows: Sequence[dict[str, Any]]
) -> list[PlannedUpload]:
    """Plan (and apply) the uploads of new content given in per-row parameter dicts."""
    planned: list[PlannedUpload] = []
    for row in rows:
        for name, column in names.items():
            kind: FileColumn = column.type  # type: ignore[assignment]
            for file in _files(row.get(name)):
                if file.backend is None and kind.backend is not None:
                    file.backend = kind.backend
                if not file.has_pending_content:
                    continue
                subject = types.SimpleNamespace(**row, __table__=table)
                upload = _destination(subject, name, kind, file, set())
                plan = FlushPlan(uploads=[upload])
                _apply(plan)
                planned.append(upload)
    return planned


# -- transaction outcomes ----------------------------------------------------------------------


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    # bulk_save_objects() and the bulk_*_mappings() methods open a subtransaction while
    # "flushing" without a flush (no before_flush): their writes would skip the rule.
    if (
        transaction.parent is not None
        and not transaction.nested
        and session._flushing
        and _FLUSH_STARTED not in session.info
    ):
        tokens = session.info.setdefault(_BULK_TOKENS, {})
        tokens[transaction] = _BULK_SAVE.set(True)


def _after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    session.info.pop(_PLAN, None)
    root = _outermost(previous)
    files = _transactions.get(weakref.ref(root))
    if files is None:
        return
    savepoint = files.savepoint(previous)
    gone = files.discard(files.within(savepoint))
    files.plan = None
    files.deleted_in_flush.clear()
    _delete_now(gone, "rolled back")
    for record in gone:
        record.give_content_back()


def _after_commit(session: Session) -> None:
    transaction = session.get_nested_transaction()
    root = session.get_transaction()
    if root is None:
        return
    files = _transactions.get(weakref.ref(root))
    if files is None:
        return
    if transaction is not None:
        files.released.add(files.savepoint(transaction))
        return  # a released SAVEPOINT: nothing is final until the outermost commit
    _close_transaction_files(root)
    outer = files.open_connection()
    if outer is not None:
        # Joined to a transaction the session did not begin (join_transaction_mode): its
        # commit released a SAVEPOINT or nothing; the connection's own commit decides.
        _defer_to(outer, files)
        return
    _committed(files)


def _committed(files: TransactionFiles) -> None:
    """The transaction's writes are durable: delete what it gave up, make variants."""
    if files.obsolete and (doomed := files.files_to_delete()):
        _enqueue_deletes(doomed, "the committed transaction replaced or removed them")
    made: list[FileObject] = []
    for upload in files.uploads:
        if upload.stage == "done" and "variants" in upload.file.metadata:
            made.append(upload.file)
    if made:
        schedule_variants(made)


class _Outer:
    """Files of the sessions that committed inside one connection's open transaction.

    They wait by the connection SAVEPOINT they were committed in: ``levels[0]`` holds those
    committed in the SAVEPOINT (or transaction) that was innermost when the first files
    arrived, ``levels[i]`` those committed in the i-th SAVEPOINT opened since and still open.
    Releasing a SAVEPOINT hands its files to the one around it; rolling it back undoes them.
    SAVEPOINTs nest (SQLAlchemy's ``begin_nested()`` keeps them in order), so each release or
    rollback ends the innermost.

    The transaction's end settles them all, but SQLAlchemy's ``commit`` event comes before
    the database's COMMIT, which may still refuse it (a deferred constraint, a serialization
    failure) and then rolls everything back, with no event after. So a commit only marks
    them ``committing``: an error raised by that COMMIT undoes them (when the connection was
    lost meanwhile, the outcome is unknown and nothing is deleted: gc decides later), and
    proof that it succeeded settles them as committed: the connection beginning its next
    transaction, going back to its pool, or being dropped.
    """

    __slots__ = ("committing", "levels")

    def __init__(self) -> None:
        self.levels: list[list[TransactionFiles]] = [[]]
        self.committing = False

    def add(self, files: TransactionFiles) -> None:
        self.levels[-1].append(files)

    def opened(self) -> None:
        self.levels.append([])

    def released(self) -> None:
        # One opened before the first files arrived hands them on to the one around it,
        # where levels[0] now waits.
        if len(self.levels) > 1:
            inner = self.levels.pop()
            self.levels[-1] += inner

    def rolled_back(self) -> None:
        if len(self.levels) > 1:
            _undo(self.levels.pop())
        else:
            waiting, self.levels[0] = self.levels[0], []
            _undo(waiting)

    def settle(self, committed: bool) -> None:
        waiting = [files for level in self.levels for files in level]
        self.levels = [[]]
        self.committing = False
        if not waiting:
            return
        if not committed:
            _undo(waiting)
            return
        # One transaction: a row of a later session may reference what an earlier one gave
        # up, so the files are settled together, in commit order.
        together = TransactionFiles()
        for files in waiting:
            together.uploads += files.uploads
            together.obsolete += files.obsolete
            together.references += files.references
        _committed(together)

    def ended(self) -> None:
        """The connection went back to its pool or was dropped: a COMMIT that raised
        nothing has succeeded; a transaction still open was rolled back by the pool."""
        self.settle(self.committing)

    def abandon(self) -> None:
        """The outcome of the COMMIT is unknown (connection lost): delete nothing."""
        waiting = [files for level in self.levels for files in level]
        self.levels = [[]]
        self.committing = False
        if waiting:
            logger.warning(
                "the connection was lost during the COMMIT of an outer transaction; %d "
                "uploaded and %d given-up file(s) of its sessions are left in the store for "
                "storeroom gc to decide",
                sum(len(f.uploads) for f in waiting),
                sum(len(f.obsolete) for f in waiting),
            )


def _undo(waiting: list[TransactionFiles]) -> None:
    """Their writes were rolled back with the transaction or SAVEPOINT they waited in."""
    gone = [u for files in waiting for u in files.uploads]
    if not gone:
        return
    _delete_now(gone, "was rolled back by the transaction it was joined to")
    for record in gone:
        record.give_content_back()


_outer: weakref.WeakKeyDictionary[Connection, _Outer] = weakref.WeakKeyDictionary()


def _defer_to(connection: Connection, files: TransactionFiles) -> None:
    """Settle ``files`` when ``connection``'s transaction ends: deletes after its commit,
    the uploads deleted after its rollback, or the rollback of the SAVEPOINT they were
    committed in, or once the connection is dropped unclosed (which the pool rolls back
    without an event)."""
    outer = _outer.get(connection)
    if outer is None:
        outer = _outer[connection] = _Outer()
        event.listen(connection, "begin", _outer_began)
        event.listen(connection, "commit", _outer_committed)
        event.listen(connection, "rollback", _outer_rolled_back)
        event.listen(connection, "savepoint", _outer_savepoint)
        event.listen(connection, "release_savepoint", _outer_released)
        event.listen(connection, "rollback_savepoint", _outer_rolled_back_to)
        weakref.finalize(connection, outer.ended)
        pool = connection.engine.pool
        if pool not in _watched_pools:
            _watched_pools.add(pool)
            event.listen(pool, "checkin", _outer_checked_in)
        if not _watching_errors:
            _watch_commit_errors()
    # Found again when the pool takes the DBAPI connection back (see _outer_checked_in).
    record_info = connection.connection.record_info
    if record_info is not None:  # None once detached from the pool: the finalizer settles
        record_info[_OUTER_KEY] = outer
    outer.add(files)


_OUTER_KEY = "storeroom.outer"
_watched_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_watching_errors = False


def _watch_commit_errors() -> None:
    global _watching_errors
    event.listen(Engine, "handle_error", _outer_commit_failed)
    _watching_errors = True


def _outer_committed(connection: Connection) -> None:
    outer = _outer.get(connection)
    if outer is not None:
        outer.committing = True  # the database has not committed yet: see _Outer


def _outer_began(connection: Connection) -> None:
    outer = _outer.get(connection)
    if outer is not None and outer.committing:
        outer.settle(True)  # a new transaction: the last COMMIT went through


def _outer_checked_in(_dbapi_connection: Any, record: Any) -> None:
    outer = record.record_info.pop(_OUTER_KEY, None)
    if outer is not None:
        outer.ended()


def _outer_commit_failed(context: ExceptionContext) -> None:
    connection = context.connection
    outer = _outer.get(connection) if connection is not None else None
    if outer is None or not outer.committing:
        return
    if context.is_disconnect:
        outer.abandon()
    else:
        outer.settle(False)  # the database refused the COMMIT and rolled back


def _outer_rolled_back(connection: Connection) -> None:
    outer = _outer.get(connection)
    if outer is not None:
        outer.settle(False)


def _outer_savepoint(connection: Connection, _name: str | None) -> None:
    outer = _outer.get(connection)
    if outer is not None:
        outer.opened()


def _outer_released(connection: Connection, _name: str, _context: object) -> None:
    outer = _outer.get(connection)
    if outer is not None:
        outer.released()


def _outer_rolled_back_to(connection: Connection, _name: str, _context: object) -> None:
    outer = _outer.get(connection)
    if outer is not None:
        outer.rolled_back()


def _kept_by(transaction: SessionTransaction, files: TransactionFiles) -> Connection | None:
    """A connection that keeps what the flushes wrote though the session ended without
    committing: one it joined in ``rollback_only`` mode (also ``conditional_savepoint``
    outside a SAVEPOINT), whose transaction SQLAlchemy's ``close()`` leaves open."""
    if not files.connections:
        return None
    # SQLAlchemy's record of each connection: (connection, transaction, should_commit,
    # autoclose); should_commit is False only for a rollback_only join.
    joined = getattr(transaction, "_connections", None)
    if not joined:
        return None
    for connection, kept, should_commit, _autoclose in set(joined.values()):
        if (
            not should_commit
            and kept.is_active
            and connection.in_transaction()
            and any(ref() is connection for ref in files.connections)
        ):
            return cast("Connection", connection)
    return None


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    tokens = session.info.get(_BULK_TOKENS)
    token = tokens.pop(transaction, None) if tokens else None
    if token is not None:
        try:
            _BULK_SAVE.reset(token)
        except ValueError:  # ended in another context than it began
            _BULK_SAVE.set(False)
    if transaction.parent is not None and not transaction.nested:
        session.info.pop(_FLUSH_STARTED, None)
        return  # a flush's (or bulk save's) subtransaction
    root = transaction if transaction.parent is None else _outermost(transaction)
    files = _transactions.get(weakref.ref(root))
    if files is None:
        return
    if transaction.nested:
        savepoint = files.savepoint(transaction)
        if savepoint in files.released:
            return
        gone = files.discard(files.within(savepoint))
    else:
        _close_transaction_files(root)
        kept = _kept_by(transaction, files)
        if kept is not None:
            # Joined in rollback_only mode: its close leaves what its flushes wrote in the
            # transaction it joined, whose end decides, as after a commit.
            _defer_to(kept, files)
            return
        gone = files.uploads
        files.uploads = []
    # Ended without committing (close, reset, with-block exit, or a rollback event already
    # handled): delete what it uploaded.
    _delete_now(gone, "ended without committing")
    for record in gone:
        record.give_content_back()


def _mapper_configured(mapper: Mapper[Any], class_: type) -> None:
    _columns_cache.pop(mapper, None)
    _names_cache.pop(mapper, None)
    columns = file_columns(mapper)
    if not columns:
        _listen_for_cascades(mapper)
        return
    # Replacing a file must reveal the old one (copies, moves, the stale-write check). One
    # assigned while not loaded is read at the flush (_read_replaced), not on assignment:
    # that would be IO outside the flush, which AsyncSession refuses (MissingGreenlet).
    manager: ClassManager[Any] = attributes.manager_of_class(class_)
    for column, _kind in columns:
        attribute = manager.get(column)
        if attribute is not None and not event.contains(attribute, "set", _note_unloaded):
            event.listen(attribute, "set", _note_unloaded, raw=True)
    table = _table_name(mapper)
    for column, kind in columns:
        makers = getattr(kind, "variants", None)
        if makers:
            register_column(f"{table}.{column}", makers)
    event.listen(mapper, "before_insert", _before_row_write)
    event.listen(mapper, "before_update", _before_row_write)
    event.listen(mapper, "before_delete", _before_delete)


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
    event.listen(Session, "after_transaction_create", _after_transaction_create)
    event.listen(Session, "after_transaction_end", _after_transaction_end)
    event.listen(Session, "do_orm_execute", _on_orm_execute)
    event.listen(Mapper, "mapper_configured", _mapper_configured)
    _installed = True
