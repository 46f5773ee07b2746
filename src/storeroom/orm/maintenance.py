"""Comparing rows with stores, in bounded memory: orphans, dangling references, mismatches.

``find_orphans`` lists the objects of a backend that no row of the given file columns
references (only those older than a grace period, so uploads of transactions still in
flight are left alone); ``find_dangling`` lists references whose object is missing;
:func:`iter_findings` produces the whole report of ``storeroom verify`` and
:func:`remove_orphans` does the deleting of ``storeroom gc``, which also asks the database
about its open transactions, so that it never deletes their uploads whatever the grace
(:func:`remove_orphans` says how). :func:`remove_incomplete_uploads` is gc's sweep of S3
multipart uploads.

How it scales: all of them build a :class:`ReferenceScan`, an index in a temporary SQLite
file. The rows are read in pages of ``page_size`` through a server-side cursor (only the
primary key and the file column's JSON, no ORM objects or FileObjects), each backend is
listed once as a stream, and the comparisons are SQL joins inside that file. Memory stays
flat whatever the number of rows or objects (SQLite's page cache is capped); the temporary
file takes about 300 bytes per reference and 100 per object and is deleted on close. A
merge of two sorted streams would need no disk, but stores do not all list in key order
(a local directory lists in the file system's order), so the index sorts instead.

Besides a row's file, an object counts as referenced when it is a variant of one
(``<path>.variants/<name>``), belongs to an upload session in progress, or is referenced
through another registered backend whose location holds it or lies inside this one's
(two keys over one bucket or folder): see :meth:`ReferenceScan.orphans`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote, urlsplit

from sqlalchemy import (
    JSON,
    DateTime,
    Select,
    String,
    Text,
    case,
    func,
    inspect,
    literal_column,
    or_,
    select,
    table,
    type_coerce,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy import column as sql_column
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, UnboundExecutionError
from sqlalchemy.orm import InstrumentedAttribute, Session

from storeroom.backends import local_listing, transfer
from storeroom.backends.base import ObjectInfo, StorageBackend, _Guard
from storeroom.backends.local_listing import CACHE_KIB, connect, in_shard
from storeroom.backends.local_listing import insert_many as _insert_many
from storeroom.backends.local_root import real_root
from storeroom.backends.relay import Relay
from storeroom.errors import ConfigurationError, ObjectNotFound, StoreroomError, UnsafePath
from storeroom.file import FileObject
from storeroom.orm.lifecycle import file_columns, hold_write_lock
from storeroom.orm.variants import VARIANTS_DIRECTORY, variant_original
from storeroom.paths import safe_path
from storeroom.registry import StorageRegistry, storages
from storeroom.uploads.layout import SESSIONS_TABLE, tus_parts_prefix

if TYPE_CHECKING:
    from storeroom.backends.obstore.multipart import IncompleteUpload

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DanglingReference",
    "MismatchedObject",
    "ReferenceScan",
    "Shard",
    "SkippedObject",
    "CLOCK_MARGIN",
    "MAINTENANCE_APPLICATION_NAME",
    "collect_findings",
    "find_dangling",
    "find_orphans",
    "iter_findings",
    "referenced_files",
    "remove_incomplete_uploads",
    "remove_orphans",
]

DEFAULT_PAGE_SIZE = 1000
"""Rows fetched per round trip while scanning (one row may hold a list of many files)."""

logger = logging.getLogger("storeroom.orm")

_LIST_APART_AFTER = 20_000  # references read before a local store is listed by a child
_PATHS_PER_QUERY = 10_000  # paths a query of read_rows(paths=...) selects at most
_EXACT_PATHS = ("postgresql", "sqlite")  # databases whose `path IN (...)` compares exactly
# gc reads again only the references to a batch's candidates when they need at most this
# many paths (each query costs one pass over the table); otherwise every reference.
_RECHECK_AT_MOST = 5 * _PATHS_PER_QUERY
# gc deletes its candidates in batches, each checked just before its deletes: the first of
# one candidate, each then twice the last (at most this many) while its deletes take less
# than half of _DELETE_WINDOW seconds (or of the batch's check, when that takes longer),
# half the last once they take more than all of it.
_DELETE_BATCH = 5000
_DELETE_WINDOW = 1.0
_BATCH = 5000  # references or listed objects inserted into the index per executemany
_CONFIRMING = 8  # HEAD requests at once that confirm a reference missing from a listing
MAINTENANCE_APPLICATION_NAME = "storeroom maintenance"
"""The PostgreSQL ``application_name`` of connections (or, for gc's, transactions) that
storeroom's maintenance opens and that never upload: gc's own, and those of the workers
and progress reads of a sharded verify or gc. gc does not wait for transactions so named
(the shards of one run would otherwise spare each other's orphans)."""
CLOCK_MARGIN = timedelta(seconds=30)
"""How much older than the oldest open transaction an object must be for gc to delete it
on PostgreSQL and MariaDB/MySQL (see :func:`remove_orphans`). The transaction's start is
the database server's clock, an object's age the store's: the margin covers stores that
date objects to the second (S3) and clocks a few seconds apart. Clocks further apart
need a ``grace`` longer than their difference."""
_CONFIRM_GROUP = 256  # ... over this many references at a time (memory stays flat)


@dataclass(frozen=True, slots=True)
class DanglingReference:
    """A row's file whose object is missing from its backend."""

    model: str
    primary_key: tuple[Any, ...]
    column: str
    file: FileObject


@dataclass(frozen=True, slots=True)
class MismatchedObject:
    """A row's file whose object differs from what the row records.

    ``kind`` is ``"size"`` (``recorded`` and ``stored`` are byte counts) or ``"checksum"``
    (``"sha256:<hex>"`` strings).
    """

    model: str
    primary_key: tuple[Any, ...]
    column: str
    file: FileObject
    kind: Literal["size", "checksum"]
    recorded: int | str
    stored: int | str


SkipKind = Literal["unsafe", "locked", "failed"]
"""Why :func:`remove_orphans` left an orphan in place (:attr:`SkippedObject.kind`)."""


@dataclass(frozen=True, slots=True)
class SkippedObject(ObjectInfo):
    """An orphan :func:`remove_orphans` left in place, and why (``reason``, which names its
    path); gc goes on with the other orphans.

    ``kind`` says what stopped it:

    - ``"unsafe"``: its name is one storeroom never writes and refuses to touch (a
      backslash, a control character, unicode not in NFC form:
      :func:`storeroom.paths.safe_path`), or the delete met a symbolic link. Rename or
      remove it by hand.
    - ``"locked"``: on SQLite, gc could not take the database's write lock within the busy
      timeout (a transaction held it throughout), so it could not tell whether that
      transaction references the object. Run gc again.
    - ``"failed"``: the delete raised; ``reason`` holds the error. ``storeroom gc`` exits
      with status 1.
    """

    reason: str = ""
    kind: SkipKind = "unsafe"

    @classmethod
    def of(cls, info: ObjectInfo, reason: str, kind: SkipKind) -> SkippedObject:
        """``info`` skipped, for ``reason``."""
        return cls(
            info.path,
            info.size,
            info.etag,
            info.last_modified,
            info.version,
            info.content_type,
            info.metadata,
            reason=reason,
            kind=kind,
        )


# The table of upload sessions (storeroom.uploads.sessions.upload_sessions), read here by
# its name from storeroom.uploads.layout: the rest of the uploads package stands above the
# ORM. The bytes of a session neither completed nor expired belong to an upload in
# progress: referenced.
_UPLOAD_SESSIONS = table(
    SESSIONS_TABLE,
    sql_column("backend", String),
    sql_column("path", String),
    sql_column("upload_path", String),
    sql_column("protocol", String),
    sql_column("upload_id", String),
    sql_column("expires_at", DateTime(timezone=True)),
    sql_column("completed_at", DateTime(timezone=True)),
)


def _tus_parts(upload_path: str) -> str | None:
    """The folder of a pending tus upload's parts; None for a path no upload could have
    (tus_parts_prefix refuses it, so it has no parts)."""
    try:
        return tus_parts_prefix(upload_path)
    except UnsafePath:
        return None


def _pending_sessions(connection: Connection) -> Iterator[Any]:
    """The upload sessions in progress (neither completed nor expired), as rows of
    ``(backend, path, upload_path, protocol, upload_id)``; none without the table."""
    if not inspect(connection).has_table(_UPLOAD_SESSIONS.name):
        return
    c = _UPLOAD_SESSIONS.c
    yield from connection.execute(
        select(c.backend, c.path, c.upload_path, c.protocol, c.upload_id).where(
            c.completed_at.is_(None), c.expires_at > datetime.now(timezone.utc)
        )
    )


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


def _connection(
    session: Session, columns: Sequence[InstrumentedAttribute[Any]]
) -> Connection | None:
    """The connection that reaches the upload sessions' table: the session's own, or, for a
    session bound per model only, the first column's model's (None without columns)."""
    try:
        return session.connection()
    except UnboundExecutionError:
        if not columns:
            return None
        mapper: Any = inspect(columns[0].class_)
        return session.connection(bind_arguments={"mapper": mapper})


def referenced_files(
    session: Session, target: Columns, *, page_size: int = DEFAULT_PAGE_SIZE
) -> Iterator[tuple[Any, str, FileObject]]:
    """Every ``(row, column name, FileObject)`` referenced by ``target``'s columns.

    Rows are fetched ``page_size`` at a time; keep none of them to keep memory flat.
    """
    for column in _columns(target):
        model = column.class_
        statement = select(model).where(column.isnot(None))
        rows = session.execute(statement.execution_options(yield_per=page_size)).scalars()
        for row in rows:
            value = getattr(row, column.key)
            files = [value] if isinstance(value, FileObject) else list(value or [])
            for file in files:
                yield row, column.key, file


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    """``[low, high)`` of the paths inside the directory ``prefix`` ('0' follows '/')."""
    return prefix + "/", prefix + "0"


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count``: the paths whose CRC-32 leaves ``index`` modulo ``count``.

    Hashing the path (rather than cutting key ranges) spreads any store evenly, whatever its
    naming, and needs nothing but the path: a reference and the object it points at always
    fall in the same shard. A scan places a variant with its file (:meth:`covers`).
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if (
            not isinstance(self.count, int)
            or isinstance(self.count, bool)
            or self.count < 1
            or not isinstance(self.index, int)
            or not 0 <= self.index < self.count
        ):
            raise ConfigurationError(
                f"a shard is an index in 0..count-1 of count >= 1 shards, got index "
                f"{self.index!r} of {self.count!r}"
            )

    def contains(self, path: str | None) -> bool:
        """Whether ``path`` belongs to this shard (a missing path belongs to shard 0)."""
        return in_shard(path, self.index, self.count)

    def covers(self, path: str | None) -> bool:
        """Whether a scan of this shard answers for ``path``: whether the shard contains the
        path of the file it belongs to.

        That is ``path`` itself, or for a variant (``<original>.variants/<name>``) the part
        before its first ``.variants/``: a file, its variants and theirs are checked by one
        shard, so the shards of a split together judge a variant as one scan does.
        """
        return in_shard(path, self.index, self.count, VARIANTS_DIRECTORY)


class ReferenceScan:
    """An index, in temporary SQLite files, of the files rows reference and stores hold.

    :meth:`read_rows` loads the references of ``target``'s columns (reading rows in pages)
    while a thread lists the columns' backends; any other backend is listed once, when a
    question first needs it. Questions stream their answers: :meth:`dangling`,
    :meth:`mismatched`, :meth:`orphans`. Use it as a context manager (or call
    :meth:`close`) so the files are deleted. Memory stays flat (SQLite's page cache is
    capped at 16 MiB per file); the files take about 300 bytes per reference and 100 per
    object.

    ``directory`` is where the temporary files go (default: the system's temp directory).
    ``shard`` (a :class:`Shard`) limits the scan to the paths of one shard: every question
    then answers for those paths only, and the answers of all the shards of a split,
    together, are the answer of an unsharded scan (a path belongs to exactly one shard, a
    variant to its file's: :meth:`Shard.covers`).
    """

    def __init__(
        self,
        target: Columns,
        *,
        registry: StorageRegistry | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        directory: str | None = None,
        shard: Shard | None = None,
    ) -> None:
        if not isinstance(page_size, int) or page_size < 1:
            raise ConfigurationError(f"page_size must be a positive integer, got {page_size!r}")
        self.shard = shard
        """Only paths of this shard are indexed (references and listed objects alike)."""
        self._keep = shard.covers if shard is not None else None
        self.columns = _columns(target)
        self.registry = registry or storages
        self.page_size = page_size
        self.references = 0
        """How many file references the last :meth:`read_rows` found."""
        self._sources: list[tuple[str, str]] = []
        self._referenced: set[str] = set()  # the backends references point at
        self._listed: dict[str, str] = {}  # backend key -> prefix listed ('' = everything)
        self._stores: dict[str, StorageBackend] = {}  # backends passed in, maybe unregistered
        self._children: list[local_listing.ChildListing] = []  # listings by child processes
        self._stopping = False  # set when the scan fails or closes: no child starts after
        self._filling = threading.Lock()
        self._compared = False  # whether table cmp holds the references against the listings
        self._reader: Session | None = None  # the session of the last read_rows (re-checks)
        self._pending = 0  # upload sessions in progress, as the last read_rows found them
        self._cutoffs: dict[str, float] = {}  # backend key -> the grace's cutoff of orphans()
        self._paths = [_temporary(directory), _temporary(directory)]
        # Shared with the thread that inserts references while rows are read (one user at
        # a time: read_rows hands it over and waits for it).
        self._db = connect(self._paths[0], check_same_thread=False)
        # Listings go to a second file through their own connection, so a backend can be
        # listed in a thread while the rows are read; the main connection attaches it.
        self._lister = connect(self._paths[1], check_same_thread=False)
        self._lister.execute(
            "CREATE TABLE obj (backend TEXT, path TEXT, size INTEGER, "
            "modified REAL, etag TEXT, version TEXT)"
        )
        self._db.execute("ATTACH DATABASE ? AS l", (self._paths[1],))
        self._db.execute(f"PRAGMA l.cache_size=-{CACHE_KIB}")
        self._db.executescript(
            """
            CREATE TABLE ref (id INTEGER PRIMARY KEY, backend TEXT, path TEXT, size INTEGER,
                              checksum TEXT, source INTEGER, key BLOB, file TEXT);
            CREATE TABLE candidate (path TEXT PRIMARY KEY, size INTEGER, modified REAL,
                                    etag TEXT, version TEXT) WITHOUT ROWID;
            CREATE TABLE cmp (id INTEGER PRIMARY KEY, stored INTEGER, missing INTEGER);
            CREATE TABLE pending (backend TEXT, path TEXT);
            CREATE INDEX pending_at ON pending (backend, path);
            """
        )
        self._db.create_function("variant_original", 1, variant_original, deterministic=True)

    def __enter__(self) -> ReferenceScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the temporary index."""
        self._stop_children()
        self._db.close()
        self._lister.close()
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- loading -------------------------------------------------------------------------

    def read_rows(
        self,
        session: Session,
        *,
        list_ahead: Mapping[str, str] | None = None,
        paths: Collection[str] | None = None,
    ) -> int:
        """(Re)load every reference of the columns from ``session``; returns how many.

        Only the primary key and the column's JSON are read (cast to text; for one-file
        columns the database extracts the fields), ``page_size`` rows per round trip
        through a server-side cursor. Meanwhile a thread lists the backends of
        ``list_ahead`` (backend key -> prefix; default: the columns' backends, whole),
        starting once the first query has run, so the rows it returns are older than the
        listing (a reference missing from a listing is confirmed with a HEAD before it is
        called dangling).

        With ``paths``, only the references to those paths are loaded, and nothing is
        listed unless ``list_ahead`` says so: the scan then answers for those paths only
        (what :meth:`candidates` asks before a delete). PostgreSQL and SQLite select them
        in the query (``path IN (...)``, up to 10,000 paths a query; a million-row table
        answers 10,000 paths in about half a second, against ten seconds or more to read
        every reference); other databases send every row, and the paths are picked here.

        A column value stored as a JSON string holding the JSON (encoded twice, by code
        other than storeroom's) is decoded once more, as the column type does when the
        application reads it. The upload sessions in progress (neither completed nor
        expired; table ``storeroom_upload_sessions``, when the database has it) are read
        too, first: their objects are not orphans.
        """
        if list_ahead is None and paths is not None:
            list_ahead = {}
        if list_ahead is None:
            list_ahead = {}
            for column in self.columns:
                key = getattr(column.property.columns[0].type, "backend", None)
                if key and (key in self._stores or self.registry.is_registered(key)):
                    list_ahead[key] = ""
        # A store on local disk is listed by a child process once the scan has read enough
        # references to repay the child's start (a tenth of a second); any other store is
        # listed from the first query on, in a thread.
        apart = {key: prefix for key, prefix in list_ahead.items() if self._lists_apart(key)}
        groups = [
            ({key: prefix for key, prefix in list_ahead.items() if key not in apart}, 0),
            (apart, _LIST_APART_AFTER),
        ]
        listers: list[_Lister] = []

        def start_listing(references: int, *, last: bool = False) -> None:
            for group, (todo, after) in enumerate(groups):
                if todo and (last or references >= after):
                    # A small scan lists its local stores at the end, here: a child would
                    # not repay its start.
                    listers.append(_Lister(self, todo, apart=group == 1 and not last))
                    groups[group] = ({}, 0)

        db = self._db
        self._compared = self._stopping = False
        db.execute("BEGIN")  # one transaction: SQLite commits per statement otherwise
        inserter: _Inserter | None = None
        try:
            # "main.": an unqualified DROP INDEX IF EXISTS looks through the listing's
            # file too, and its lock on that file, held to COMMIT, would stop a listing
            # in progress from writing (a child's stopped for 7 s at a million rows).
            db.execute("DROP INDEX IF EXISTS main.ref_at")
            db.execute("DELETE FROM main.ref")
            # Before the rows: an upload completed after this read is in a row read after it.
            self._pending = self._load_pending(session)
            self._reader = session
            # The references go into the index in a thread of their own, while this one
            # waits for the database's next page and decodes it.
            inserter = _Inserter(db, _REF_INSERT)
            count = self._load_references(session, start_listing, inserter.put, paths)
            running, inserter = inserter, None
            running.close()
            db.execute("COMMIT")
        except BaseException:
            self._stop_children()
            if inserter is not None:
                inserter.close(quiet=True)
            if db.in_transaction:
                db.execute("ROLLBACK")
            for lister in listers:
                lister.join(quiet=True)
            raise
        start_listing(count, last=True)
        try:
            if any(lister.running for lister in listers):
                # Sorting the references into their index now, while a listing still runs,
                # takes that second (at a million references) off the first question.
                self._index("ref")
            for lister in listers:
                lister.join()
        except BaseException:
            self._stop_children()
            for lister in listers:
                lister.join(quiet=True)
            raise
        self.references = count
        return count

    def _load_pending(self, session: Session) -> int:
        """Put the paths of the upload sessions in progress into table ``pending``; how many
        sessions there are.

        Each session's final path and staging path, and for a tus upload the folder of its
        parts (a path ending with ``/``). A database without the sessions table has none.
        """
        self._db.execute("DELETE FROM main.pending")
        connection = _connection(session, self.columns)
        if connection is None:
            return 0
        sessions = 0
        for backend, path, upload_path, protocol, _upload_id in _pending_sessions(connection):
            sessions += 1
            places = [(backend, path)]
            if upload_path and upload_path != path:
                places.append((backend, upload_path))
            if protocol == "tus" and upload_path and (parts := _tus_parts(upload_path)):
                places.append((backend, parts))  # a folder: ends with "/"
            self._db.executemany("INSERT INTO main.pending VALUES (?, ?)", places)
        return sessions

    def _lists_apart(self, key: str) -> bool:
        """Whether backend ``key`` may be listed by a child process (local disk)."""
        try:
            return self._store(key).listing_directory is not None
        except StoreroomError:
            return False  # an unknown backend: its lister raises that, as before

    def _load_references(
        self,
        session: Session,
        started: Callable[[int], None],
        insert: Callable[[list[tuple[Any, ...]]], None],
        paths: Collection[str] | None = None,
    ) -> int:
        """Read every reference (to ``paths``, when given), handing them to ``insert`` in
        batches (each list given away).

        ``started`` is told how many references were read so far: once each query has run,
        and after each batch.
        """
        self._sources = []
        self._referenced = set()
        count = 0
        batch: list[tuple[Any, ...]] = []
        keep = self._keep
        ordered: list[str] | None = None
        if paths is not None:
            wanted = paths if isinstance(paths, (set, frozenset)) else set(paths)
            # Always checked here, exactly, whatever the database's collation made of
            # the query's filter (it may only ever let more rows through).
            shard = keep

            def keep(path: str | None) -> bool:
                return path in wanted and (shard is None or shard(path))

            ordered = sorted(wanted)

        def hand_over(batch: list[tuple[Any, ...]]) -> None:
            nonlocal count
            count += len(batch)
            self._referenced.update({row[0] for row in batch})
            insert(batch)
            started(count)

        for column in self.columns:
            model = column.class_
            mapper: Any = inspect(model)
            kind = column.property.columns[0].type
            default = getattr(kind, "backend", None) or self.registry.default_key or ""
            source = len(self._sources)
            self._sources.append((model.__name__, column.key))
            keys = len(mapper.primary_key)
            # Core rather than ORM execution: plain tuples, nothing for the session to track.
            connection = session.connection(bind_arguments={"mapper": mapper})
            dialect = connection.dialect.name
            multiple = bool(getattr(kind, "multiple", False))
            chunks: list[list[str] | None] = [None]
            if ordered is not None and dialect in _EXACT_PATHS:
                # The database compares paths exactly: it picks the paths asked for.
                size = _paths_per_query(connection.dialect)
                chunks = [ordered[at : at + size] for at in range(0, len(ordered), size)]
            for chunk in chunks:
                statement, fields = _reference_query(
                    column, mapper.primary_key, multiple, dialect, chunk
                )
                rows = connection.execute(statement.execution_options(yield_per=self.page_size))
                started(count)
                for row in rows:
                    text = row[keys]
                    if text is None or text == "null":
                        continue
                    key = _row_key(row, keys)
                    items = None
                    if not fields or row[keys + 2] is None:
                        # Parsed here: a list on MariaDB, or a value the database found no
                        # path in (JSON text stored as a JSON string, decoded once more).
                        items = _files_in(text)
                    if items is None:
                        if keep is not None and not keep(row[keys + 2]):
                            continue
                        batch.append(
                            (
                                row[keys + 1] or default,
                                row[keys + 2],
                                row[keys + 3],
                                row[keys + 4],
                                source,
                                key,
                                text,
                            )
                        )
                    else:
                        for item in items:
                            if keep is not None and not keep(item.get("path")):
                                continue
                            batch.append(
                                (
                                    item.get("backend") or default,
                                    item.get("path"),
                                    item.get("size"),
                                    item.get("checksum"),
                                    source,
                                    key,
                                    json.dumps(item),
                                )
                            )
                            if len(batch) >= _BATCH:
                                hand_over(batch)
                                batch = []
                    if len(batch) >= _BATCH:
                        hand_over(batch)
                        batch = []
        if batch:
            hand_over(batch)
        return count

    def _list(self, key: str, prefix: str = "", *, apart: bool = False) -> StorageBackend:
        """List backend ``key`` (under ``prefix``) into the index unless already covered.

        With ``apart``, a store on local disk is listed by a child process
        (:mod:`storeroom.backends.local_listing`), so the listing's Python work runs beside
        this process's instead of taking turns with it; should the child fail, the listing
        runs here.
        """
        store = self._store(key)
        if self._covered(key, prefix):
            return store
        # One listing writes the index file at a time (a child's holds its lock throughout).
        with self._filling:
            if not (apart and self._list_apart(store, prefix)) and not self._walk(store, prefix):
                # The store is listed in a thread of its own, a few batches ahead: its
                # native work (one stat per file on local disk) overlaps the inserts here.
                with Relay(store.list_rows(prefix)) as listed:
                    local_listing.fill(self._lister, key, listed, self._keep)
        self._listed[key] = prefix
        self._compared = False
        return store

    def _walk(self, store: StorageBackend, prefix: str) -> bool:
        """List a store on local disk here by :func:`~storeroom.backends.local_listing.walk`,
        as a child lists it; whether it did (not when the tree holds what the walk leaves to
        obstore's listing, a symbolic link for one)."""
        root = store.listing_directory
        if root is None:
            return False
        prefix = safe_path(prefix) if prefix else ""
        unlisted = local_listing.Unlisted()
        guard = _Guard(store, prefix, "list")
        try:
            walked = local_listing.walk(root, prefix, unlisted=unlisted)
            objects = local_listing.fill(self._lister, store.key, walked, self._keep)
        except local_listing.Irregular as why:
            logger.debug("backend %r: listed by obstore: %s", store.key, why)
            return False
        _report_unlisted(store.key, unlisted.count, unlisted.shown)
        guard.size = objects
        guard.emit()
        return True

    def _list_apart(self, store: StorageBackend, prefix: str) -> bool:
        """List ``store`` by a child process; whether it did (see :meth:`_list`)."""
        root = store.listing_directory
        if root is None:
            return False
        shard = None if self.shard is None else (self.shard.index, self.shard.count)
        prefix = safe_path(prefix) if prefix else ""
        child = local_listing.ChildListing(
            self._paths[1], store.key, root, prefix, shard, VARIANTS_DIRECTORY
        )
        self._children.append(child)
        if self._stopping:  # the scan failed while this thread was on its way here
            child.stop()
        guard = _Guard(store, prefix, "list")
        objects = child.run()
        if objects is None:
            logger.debug(
                "listing backend %r in a child process failed, listing it here: %s",
                store.key,
                child.error,
            )
            return False
        if child.note:
            logger.debug("backend %r: %s", store.key, child.note)
        _report_unlisted(store.key, child.unlisted_count, child.unlisted)
        guard.size = objects
        guard.emit()
        return True

    def _stop_children(self) -> None:
        self._stopping = True
        for child in list(self._children):
            child.stop()

    def _covered(self, key: str, prefix: str) -> bool:
        done = self._listed.get(key)
        return done is not None and (done == "" or prefix == done or prefix.startswith(done + "/"))

    def _store(self, key: str) -> StorageBackend:
        return self._stores.get(key) or self.registry.get_backend(key or None)

    def _reachable(self, key: str) -> StorageBackend | None:
        """Backend ``key``, or None when no backend answers to it (not registered)."""
        try:
            return self._store(key)
        except StoreroomError:
            return None

    def _list_referenced(self) -> None:
        # A reference to a backend that is not registered reaches nothing: dangling.
        for key in sorted(self._referenced):
            if self._reachable(key) is not None:
                self._list(key)
        self._index("obj")

    def _index(self, table: Literal["ref", "obj"]) -> None:
        """Index the side a question probes, once it is needed (built by sorting, after loading)."""
        if table == "obj":
            self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS l.obj_at ON obj (backend, path)")
        else:
            # With the size, the comparison with the listing (_compare) reads the
            # references from this index alone, in the listing index's order.
            self._db.execute("CREATE INDEX IF NOT EXISTS main.ref_at ON ref (backend, path, size)")

    # -- questions -----------------------------------------------------------------------

    def _finding(
        self, source: int, key: bytes, text: str
    ) -> tuple[str, tuple[Any, ...], str, FileObject]:
        model, column = self._sources[source]
        data = json.loads(text)
        file = FileObject.from_dict(data, registry=self.registry)
        return model, pickle.loads(key) if type(key) is bytes else (key,), column, file

    def dangling(self) -> Iterator[DanglingReference]:
        """References whose object is missing from its backend, in row order.

        Each one missing from the listing is confirmed with a HEAD request: a row read
        after the listing began may reference an object uploaded since. A reference that
        reaches no object at all is dangling too: one to a backend that is not registered,
        or to a path no backend accepts (:func:`~storeroom.paths.safe_path`).
        """
        self._compare()
        missing = self._db.execute(
            "SELECT r.source, r.key, r.file, r.backend, r.path FROM cmp c "
            "JOIN ref r ON r.id = c.id WHERE c.missing ORDER BY c.id"
        )

        def absent(row: tuple[Any, ...]) -> bool:
            path, store = row[4], self._reachable(row[3])
            if path is None or store is None:
                return True
            try:
                return not store.exists(path)
            except UnsafePath:  # a path no backend accepts: the row reaches nothing
                return True

        # The HEADs overlap where a store answers each in a network round trip, a bounded
        # group at a time (threads would only contend for a store on this machine);
        # findings still come out in row order.
        with ThreadPoolExecutor(_CONFIRMING, thread_name_prefix="storeroom-scan-head") as pool:
            while group := missing.fetchmany(_CONFIRM_GROUP):
                stores = [self._reachable(key) for key in {r[3] for r in group}]
                remote = any(store is not None and not store.served_locally for store in stores)
                answers = pool.map(absent, group) if remote else map(absent, group)
                for row, gone in zip(group, answers, strict=True):
                    if gone:
                        yield DanglingReference(*self._finding(row[0], row[1], row[2]))

    def _compare(self) -> None:
        """Compare every reference with the listings once: which objects are missing, and
        which are listed with another size than recorded.

        One pass of the references against the listing's index, into table ``cmp`` (a row
        per finding, before any HEAD confirms it), which :meth:`dangling` and
        :meth:`mismatched` then read in row order. At a million references, each pass costs
        over a second, so ``storeroom verify`` (both questions) runs one instead of two.
        Done again after the references or a listing change.
        """
        self._list_referenced()
        if self._compared:
            return
        self._index("ref")
        db = self._db
        db.execute("BEGIN")
        db.execute("DELETE FROM cmp")
        db.execute(_COMPARE)
        db.execute("COMMIT")
        self._compared = True

    def mismatched(self, *, checksums: bool = False) -> Iterator[MismatchedObject]:
        """References whose object's size (or, with ``checksums``, checksum) differs.

        With ``checksums``, every object whose size agrees and whose row records a checksum
        is read in full, as a stream, and hashed with the algorithm the record names. An
        object gone by the time it is read (those reads can take hours) is skipped when its
        row, read again, no longer references it (the application replaced or deleted the
        file meanwhile); when the row still does, :class:`~storeroom.errors.ObjectNotFound`
        names the row (a dangling reference appeared during the run: run it again).
        """
        if checksums:
            self._list_referenced()
            query = (
                "SELECT r.source, r.key, r.file, r.backend, r.path, r.size, o.size, r.checksum "
                "FROM ref r JOIN l.obj o ON o.backend = r.backend AND o.path = r.path "
                "WHERE (r.size IS NOT NULL AND r.size != o.size) OR r.checksum IS NOT NULL "
                "ORDER BY r.id"
            )
        else:  # the sizes were compared with the existence, in one pass (_compare)
            self._compare()
            query = (
                "SELECT r.source, r.key, r.file, r.backend, r.path, r.size, c.stored, r.checksum "
                "FROM cmp c JOIN ref r ON r.id = c.id WHERE NOT c.missing ORDER BY c.id"
            )
        for source, key, text, backend, path, recorded, stored, checksum in self._db.execute(query):
            if recorded is not None and recorded != stored:
                yield MismatchedObject(*self._finding(source, key, text), "size", recorded, stored)
                continue
            try:
                digest = transfer.digest_object(
                    self._store(backend), path, transfer.algorithm_of(checksum)
                ).checksum
            except ObjectNotFound:
                if not self._still_references(source, key, backend, path):
                    continue  # replaced or deleted by its row since the rows were read
                model, primary_key, column, _file = self._finding(source, key, text)
                raise ObjectNotFound(
                    f"{path!r} on backend {backend!r} vanished while verify read it, and "
                    f"{model} {primary_key!r} still references it in column {column!r}: a "
                    "dangling reference that appeared during the run; run verify again to "
                    "list it with the others"
                ) from None
            if digest != checksum:
                yield MismatchedObject(
                    *self._finding(source, key, text), "checksum", checksum, digest
                )

    def _still_references(self, source: int, key: Any, backend: str, path: str) -> bool:
        """Whether the row of a reference (``source``'s column, primary ``key``) references
        ``path`` on ``backend`` now, read again through the session of :meth:`read_rows`.

        True when it cannot be told (no session): the caller then reports what it found.
        """
        session = self._reader
        if session is None:
            return True
        column = self.columns[source]
        mapper: Any = inspect(column.class_)
        values = pickle.loads(key) if type(key) is bytes else (key,)
        statement = select(column).where(
            *(part == value for part, value in zip(mapper.primary_key, values, strict=True))
        )
        value = session.execute(statement).scalar_one_or_none()
        files = [value] if isinstance(value, FileObject) else list(value or ())
        default = getattr(column.property.columns[0].type, "backend", None)
        default = default or self.registry.default_key or ""
        return any((f.backend or default) == backend and f.path == path for f in files)

    def orphans(
        self,
        backend: StorageBackend | str,
        *,
        prefix: str = "",
        grace: timedelta = timedelta(hours=1),
    ) -> Iterator[ObjectInfo]:
        """Objects of ``backend`` (under the directory ``prefix``) no reference points at.

        Objects modified within ``grace`` are skipped: they may belong to a transaction in
        flight. In path order.

        Also not orphans: a variant (``<path>.variants/<name>``) of a referenced file; the
        objects of upload sessions in progress (see :meth:`read_rows`); and, where another
        registered backend's location lies inside this one's (or this one's inside it, or
        both are one), the objects its references name, translated into this backend's
        paths (refused with :class:`~storeroom.errors.ConfigurationError` for a sharded scan
        when the two roots differ, since a path then hashes differently for each). On local
        disk an object's age counts from the later of its modification time and its status
        change time: a copy made as a hard link keeps its source's modification time, but
        not its change time.
        """
        if isinstance(backend, StorageBackend):
            self._stores[backend.key] = backend
            key = backend.key
        else:
            key = backend
        prefix = prefix.strip("/")
        store = self._list(key, prefix)
        self._index("ref")
        cutoff = (datetime.now(timezone.utc) - grace).timestamp()
        self._cutoffs[key] = cutoff
        spared = self._spared(store, cutoff)
        query = (
            "SELECT path, size, modified, etag, version FROM l.obj o WHERE o.backend = ? "
            "AND (o.modified IS NULL OR o.modified <= ?) AND NOT EXISTS "
            "(SELECT 1 FROM ref r WHERE r.backend = o.backend AND r.path = o.path)"
            f" AND NOT {_VARIANT_OF_REF.format(obj='o.path', backend='o.backend')}"
        )
        params: tuple[Any, ...] = (key, cutoff)
        if prefix:
            query += " AND o.path >= ? AND o.path < ?"
            params += _prefix_bounds(prefix)
        for path, size, modified, etag, version in self._db.execute(
            query + " ORDER BY o.path", params
        ):
            if spared is None or not spared(path):
                yield _object(path, size, modified, etag, version)

    def _views(self, store: StorageBackend) -> list[tuple[str, str, str]]:
        """How the references of each backend name ``store``'s objects, as ``(backend key,
        strip, add)``: an object at ``strip + rest`` is that backend's ``add + rest``.

        ``store`` itself first (``strip`` and ``add`` empty), then every other backend (passed
        to this scan, or registered) whose location is ``store``'s, lies inside it (``strip``
        is its folder in ``store``) or holds it (``add`` is ``store``'s folder in it).
        """
        views = [(store.key, "", "")]
        mine = _store_root(store)
        if mine is None:
            return views
        seen = {store.key}
        for other in [*self._stores.values(), *self.registry]:
            if other.key in seen:
                continue
            seen.add(other.key)
            theirs = _store_root(other)
            nesting = None if theirs is None or theirs[0] != mine[0] else _nesting(mine, theirs)
            if nesting is None:
                continue
            if self.shard is not None and any(nesting):
                raise ConfigurationError(
                    f"backend {other.key!r} ({other.location}) and backend {store.key!r} "
                    f"({store.location}) share objects under different paths, which fall in "
                    f"different shards: check the orphans of {store.key!r} without shards"
                )
            views.append((other.key, *nesting))
        return views

    def _spared(self, store: StorageBackend, cutoff: float | None) -> Callable[[str], bool] | None:
        """Whether an object of ``store`` that no reference to ``store`` names is in use all
        the same, or changed after ``cutoff`` (None when nothing can spare one).

        Named by a reference of a backend sharing the store (:meth:`_views`), itself or as a
        variant's original; one of an upload session in progress (of any of them); or, on
        local disk and with a ``cutoff``, changed since (:func:`~storeroom.backends.
        local_listing.changed_at`): a stat per object the SQL found unreferenced.
        """
        views = self._views(store)
        others = views[1:]
        root = _local_directory(store) if cutoff is not None else None
        pending = self._pending > 0
        if not others and not pending and root is None:
            return None
        db = self._db

        def referenced(key: str, path: str) -> bool:
            found = db.execute(
                "SELECT 1 FROM ref WHERE backend = ? AND path = ? LIMIT 1", (key, path)
            ).fetchone()
            return found is not None

        def uploading(key: str, path: str) -> bool:
            # The path itself, or a folder holding it (a tus upload's parts).
            places = [path, *(path[: at + 1] for at, char in enumerate(path) if char == "/")]
            found = db.execute(
                f"SELECT 1 FROM pending WHERE backend = ? AND path IN "
                f"({', '.join('?' * len(places))}) LIMIT 1",
                (key, *places),
            ).fetchone()
            return found is not None

        def spared(path: str) -> bool:
            original = variant_original(path)
            for key, strip, add in views:
                if not path.startswith(strip):
                    continue
                named = add + path[len(strip) :]
                if key != store.key and (
                    referenced(key, named)
                    or (
                        original is not None
                        and original.startswith(strip)
                        and referenced(key, add + original[len(strip) :])
                    )
                ):
                    return True
                if pending and uploading(key, named):
                    return True
            if root is not None and cutoff is not None:
                changed = local_listing.changed_at(root, path)
                if changed is not None and changed > cutoff:
                    return True
            return False

        return spared

    def referenced(self, backend: str) -> Iterator[tuple[str, int | None, str | None, str | None]]:
        """Each path referenced on ``backend``, once, in path order (after :meth:`read_rows`).

        Yields ``(path, size, checksum, content_type)`` as the (first) row recording it has them.
        """
        for path, size, checksum, content_type, _variants in self.referenced_files(backend):
            yield path, size, checksum, content_type

    def referenced_files(
        self, backend: str
    ) -> Iterator[tuple[str, int | None, str | None, str | None, list[str]]]:
        """:meth:`referenced`, each with the paths of the variants its row records.

        Only variant paths under ``<path>.variants/`` are given (where
        :func:`~storeroom.orm.variants.variant_path` puts them), in name order.
        """
        self._index("ref")
        for path, size, checksum, text in self._db.execute(
            "SELECT path, size, checksum, min(file) FROM ref WHERE backend = ? "
            "AND path IS NOT NULL GROUP BY path ORDER BY path",
            (backend,),
        ):
            data = json.loads(text) if text else {}
            records = (data.get("metadata") or {}).get("variants")
            variants = (
                sorted(
                    r["path"]
                    for r in records.values()
                    if isinstance(r, Mapping)
                    and isinstance(r.get("path"), str)
                    and r["path"].startswith(path + VARIANTS_DIRECTORY)
                )
                if isinstance(records, Mapping)
                else []
            )
            yield path, size, checksum, data.get("content_type"), variants

    def is_referenced(self, backend: str, path: str) -> bool:
        """Whether a row references ``path`` on ``backend`` (after :meth:`read_rows`)."""
        self._index("ref")
        found = self._db.execute(
            "SELECT 1 FROM ref WHERE backend = ? AND path = ? LIMIT 1", (backend, path)
        ).fetchone()
        return found is not None

    def referenced_totals(self, backend: str) -> tuple[int, int]:
        """How many distinct paths :meth:`referenced` yields, and their total recorded size."""
        count, total = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT path, max(size) AS size "
            "FROM ref WHERE backend = ? AND path IS NOT NULL GROUP BY path)",
            (backend,),
        ).fetchone()
        return int(count), int(total)

    def objects(self, backend: StorageBackend | str, *, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of ``backend`` under the directory ``prefix`` (listed once), by path."""
        key, prefix = self._listing(backend, prefix)
        query = "SELECT path, size, modified, etag, version FROM l.obj WHERE backend = ?"
        params: tuple[str, ...] = (key,)
        if prefix:
            query += " AND path >= ? AND path < ?"
            params += _prefix_bounds(prefix)
        for path, size, modified, etag, version in self._db.execute(
            query + " ORDER BY path", params
        ):
            yield _object(path, size, modified, etag, version)

    def object_totals(self, backend: StorageBackend | str, *, prefix: str = "") -> tuple[int, int]:
        """How many objects :meth:`objects` yields, and their total size."""
        key, prefix = self._listing(backend, prefix)
        query = "SELECT count(*), coalesce(sum(size), 0) FROM l.obj WHERE backend = ?"
        params: tuple[str, ...] = (key,)
        if prefix:
            query += " AND path >= ? AND path < ?"
            params += _prefix_bounds(prefix)
        count, total = self._db.execute(query, params).fetchone()
        return int(count), int(total)

    def _listing(self, backend: StorageBackend | str, prefix: str) -> tuple[str, str]:
        if isinstance(backend, StorageBackend):
            self._stores[backend.key] = backend
            key = backend.key
        else:
            key = backend
        prefix = prefix.strip("/")
        self._list(key, prefix)
        self._index("obj")
        return key, prefix

    def remember_candidates(self, objects: Iterable[ObjectInfo]) -> int:
        """Keep ``objects`` (orphans found so far) in the index; returns how many."""
        count = 0
        batch: list[tuple[Any, ...]] = []
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM candidate")
        for info in objects:
            modified = info.last_modified.timestamp() if info.last_modified else None
            batch.append((info.path, info.size, modified, info.etag, info.version))
            count += 1
            if len(batch) >= _BATCH:
                self._db.executemany("INSERT INTO candidate VALUES (?, ?, ?, ?, ?)", batch)
                batch.clear()
        self._db.executemany("INSERT INTO candidate VALUES (?, ?, ?, ?, ?)", batch)
        self._db.execute("COMMIT")
        return count

    def candidate_paths(
        self, backend: str | None = None, *, after: str = "", limit: int | None = None
    ) -> set[str]:
        """The paths a reference must have to make a remembered candidate referenced.

        Each candidate's own path and, for a variant (``<path>.variants/...``), its
        original's: pass them to :meth:`read_rows` (``paths=``) before :meth:`candidates`.
        With ``backend`` (the backend whose orphans they are), also those paths as the
        backends sharing its store name them (see :meth:`orphans`). With ``after`` and
        ``limit``, only for the candidates that :meth:`candidates` answers for with them.
        """
        views = self._views(self._store(backend)) if backend is not None else []
        wanted: set[str] = set()
        for path in self._candidate_window(after, limit):
            original = variant_original(path)  # as _VARIANT_OF_REF: before the last one
            for named in (path,) if original is None else (path, original):
                wanted.add(named)
                for _key, strip, add in views[1:]:
                    if named.startswith(strip):
                        wanted.add(add + named[len(strip) :])
        return wanted

    def _candidate_window(self, after: str, limit: int | None) -> list[str]:
        """The remembered candidates' paths after ``after``, in path order, at most ``limit``."""
        rows = self._db.execute(
            "SELECT path FROM candidate WHERE path > ? ORDER BY path LIMIT ?",
            (after, -1 if limit is None else limit),
        )
        return [path for (path,) in rows]

    def candidates(
        self,
        backend: str,
        *,
        after: str = "",
        limit: int | None = None,
        since: datetime | None = None,
    ) -> Iterator[tuple[ObjectInfo, bool]]:
        """Each remembered candidate and whether a reference (as last read) points at it.

        In path order; with ``after`` and ``limit``, only the candidates whose path sorts
        after ``after``, at most ``limit`` of them. A candidate counts as referenced on the
        grounds :meth:`orphans` spares an object on, as last read; on local disk, also when
        it changed after the grace's cutoff that :meth:`orphans` applied. With ``since``,
        also when it changed at or after that moment (or its store gives no date): what
        :func:`remove_orphans` spares for the transactions open in the database.
        """
        self._index("ref")
        rows = self._db.execute(
            "SELECT c.path, c.size, c.modified, c.etag, c.version, EXISTS "
            "(SELECT 1 FROM ref r WHERE r.backend = ? AND r.path = c.path) OR "
            f"{_VARIANT_OF_REF.format(obj='c.path', backend='?')} "
            "FROM candidate c WHERE c.path > ? ORDER BY c.path LIMIT ?",
            (backend, backend, after, -1 if limit is None else limit),
        ).fetchall()
        cutoff = self._cutoffs.get(backend)
        newer = None if since is None else since.timestamp()
        if newer is not None:
            # On local disk, a copy's status change time (a hard link) counts too.
            cutoff = newer if cutoff is None else min(cutoff, newer)
        spared = self._spared(self._store(backend), cutoff)
        for path, size, modified, etag, version, referenced in rows:
            kept = (
                bool(referenced)
                or (newer is not None and (modified is None or modified >= newer))
                or (spared is not None and spared(path))
            )
            yield _object(path, size, modified, etag, version), kept


# An object at "<referenced path>.variants/<name>.<format>" is a variant of a referenced file
# (storeroom.orm.variants): referenced too, whether or not the row records it yet. Its
# original is what variants.variant_original says (before the LAST ".variants/": an original's
# own path may hold one), a function of the scan's SQLite connection.
_VARIANT_OF_REF = (
    "(instr({obj}, '" + VARIANTS_DIRECTORY + "') > 0 AND EXISTS (SELECT 1 FROM ref r2 "
    "WHERE r2.backend = {backend} AND r2.path = variant_original({obj})))"
)


def _files_in(text: str) -> list[dict[str, Any]] | None:
    """The files (dicts) of a column's JSON text, decoded as the column type decodes it.

    A JSON string is decoded once more, as :meth:`StoredObject.process_result_value
    <storeroom.orm.types.StoredObject.process_result_value>` does (JSON text that other code
    encoded twice). None when the text holds no file: invalid JSON, or neither an object
    nor a list once decoded.
    """
    try:
        value = json.loads(text)
        if isinstance(value, str):
            value = json.loads(value)
    except ValueError:
        return None
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return None


def _reference_query(
    column: InstrumentedAttribute[Any],
    keys: Any,
    multiple: bool,
    dialect: str,
    paths: Sequence[str] | None = None,
) -> tuple[Select[Any], bool]:
    """The query for one column's references, and whether the database extracts the fields.

    Its rows are the primary key, the file's JSON as text and, when extracted, backend,
    path, size and checksum. A list column is unnested by the database where it can
    (PostgreSQL, SQLite): one result row per file, so a row holding 100,000 files is read
    in pages like any other; elsewhere each row's list is parsed here, whole. With
    ``paths`` (on a database that extracts the fields), only the references to them.
    """
    source: Any = column
    if multiple and dialect == "postgresql":
        # JSON null (a list column set to None) is a scalar: give the function an empty list.
        # A JSON string (the list encoded twice) becomes one element, decoded in Python.
        kind = func.jsonb_typeof(column)
        array = case(
            (kind == "array", column),
            (kind == "string", func.jsonb_build_array(column)),
            else_=literal_column("'[]'::jsonb"),
        )
        elements = func.jsonb_array_elements(array).table_valued(
            sql_column("value", JSONB), joins_implicitly=True
        )
        source = elements.c.value
    elif multiple and dialect == "sqlite":
        elements = func.json_each(column).table_valued("value", joins_implicitly=True)
        source = elements.c.value
    elif multiple:
        return select(*keys, sql_cast(column, Text)).where(column.isnot(None)), False
    data = type_coerce(source, JSON)
    fields = (
        data["backend"].as_string(),
        data["path"].as_string(),
        data["size"].as_integer(),
        data["checksum"].as_string(),
    )
    text = sql_cast(source, Text) if source is column or dialect != "sqlite" else source
    query = select(*keys, text, *fields).where(column.isnot(None))
    if paths is not None:
        # No path found by the database: JSON encoded twice, decoded and picked in Python.
        query = query.where(or_(fields[1].in_(paths), fields[1].is_(None)))
    return query, True


def _paths_per_query(dialect: Any) -> int:
    """Paths one query of ``read_rows(paths=...)`` selects: fewer on an SQLite before 3.32,
    which binds at most 999 values a statement."""
    if dialect.name == "sqlite":
        version = getattr(getattr(dialect, "dbapi", None), "sqlite_version_info", None)
        if version is not None and tuple(version) < (3, 32):
            return 999
    return _PATHS_PER_QUERY


def _row_key(row: Any, keys: int) -> int | str | bytes:
    """A row's primary key as the index keeps it: a lone integer or string as it is.

    Any other key is pickled. SQLite keeps each value's own type in the untyped ``key``
    column, so :meth:`ReferenceScan._finding` tells a pickled key (bytes) from a plain one.
    Pickling a million integer keys cost a second of the scan.
    """
    if keys == 1:
        value = row[0]
        kind = type(value)
        if kind is str or (kind is int and -_INT64 <= value < _INT64):
            return value  # type: ignore[no-any-return]
    return pickle.dumps(tuple(row[:keys]))


_INT64 = 2**63

# The references in path order, read from their index alone (it holds the sizes), so that
# consecutive lookups in the listing's index fall on the pages just read: 1.2 s at a million
# references, where the references in row order (a random walk through the listing's
# index, which outgrows SQLite's page cache) took 4.7 to 5.5 s.
_COMPARE = (
    "INSERT INTO cmp (id, stored, missing) SELECT r.id, o.size, o.path IS NULL "
    "FROM ref r INDEXED BY ref_at "
    "LEFT JOIN l.obj o ON o.backend = r.backend AND o.path = r.path "
    "WHERE o.path IS NULL OR (r.size IS NOT NULL AND r.size != o.size)"
)

_REF_INSERT = (
    "INSERT INTO main.ref (backend, path, size, checksum, source, key, file)",
    "(?, ?, ?, ?, ?, ?, ?)",
)


class _Inserter:
    """Runs one insert statement over batches of rows in a thread; :meth:`close` waits.

    At most ``depth`` batches wait, so memory stays bounded. The first error stops the
    inserts; :meth:`put` raises it at the next batch and :meth:`close` at the end.
    """

    def __init__(self, db: sqlite3.Connection, statement: tuple[str, str], depth: int = 4) -> None:
        self._queue: queue.Queue[list[tuple[Any, ...]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(db, statement), name="storeroom-scan-insert", daemon=True
        )
        self._thread.start()

    def _run(self, db: sqlite3.Connection, statement: tuple[str, str]) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _insert_many(db, *statement, batch)
                except BaseException as exc:  # raised to the reader by put() or close()
                    self._error = exc

    def put(self, batch: list[tuple[Any, ...]]) -> None:
        """Queue ``batch`` (now owned by the inserter)."""
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self, *, quiet: bool = False) -> None:
        """Wait for the queued batches; raise the first error unless ``quiet``."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and not quiet:
            raise self._error


class _Lister:
    """Lists backends into a scan's index in a thread; :meth:`join` re-raises its error.

    With ``apart``, a local store is listed by a child process (the thread waits for it).
    """

    def __init__(self, scan: ReferenceScan, ahead: Mapping[str, str], *, apart: bool) -> None:
        self._scan = scan
        self._apart = apart
        self._todo = [(k, p) for k, p in ahead.items() if not scan._covered(k, p)]
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if self._todo:
            self._thread = threading.Thread(
                target=self._run, name="storeroom-scan-list", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        try:
            for key, prefix in self._todo:
                self._scan._list(key, prefix, apart=self._apart)
        except BaseException as exc:  # handed to the caller's thread by join()
            self._error = exc

    @property
    def running(self) -> bool:
        """Whether it is still listing."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, *, quiet: bool = False) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None and not quiet:
            raise self._error


def _temporary(directory: str | None) -> str:
    handle, path = tempfile.mkstemp(prefix="storeroom-scan-", suffix=".sqlite", dir=directory)
    os.close(handle)
    return path


def _object(
    path: str, size: int, modified: float | None, etag: str | None, version: str | None
) -> ObjectInfo:
    when = datetime.fromtimestamp(modified, timezone.utc) if modified is not None else None
    return ObjectInfo(path, size, etag=etag, last_modified=when, version=version)


def find_orphans(
    session: Session,
    target: Columns,
    backend: StorageBackend | str,
    *,
    prefix: str = "",
    grace: timedelta = timedelta(hours=1),
    registry: StorageRegistry | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> list[ObjectInfo]:
    """Objects of ``backend`` (under ``prefix``) that no row of ``target`` references.

    ``target`` is a model class (all its file columns), one column or several. Objects
    modified within ``grace`` are skipped: they may belong to a transaction in flight.
    Memory stays flat however many rows and objects there are (see :class:`ReferenceScan`);
    only the list returned grows, with the orphans found.
    """
    store = _backend(backend, registry)
    with ReferenceScan(target, registry=registry, page_size=page_size) as scan:
        scan.read_rows(session)
        return list(scan.orphans(store, prefix=prefix, grace=grace))


def find_dangling(
    session: Session,
    target: Columns,
    *,
    registry: StorageRegistry | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> list[DanglingReference]:
    """References in ``target``'s columns whose object does not exist in its backend.

    Lists each backend once rather than asking for every object; memory stays flat (see
    :class:`ReferenceScan`).
    """
    with ReferenceScan(target, registry=registry, page_size=page_size) as scan:
        scan.read_rows(session)
        return list(scan.dangling())


Section = Literal["dangling", "mismatched", "orphans", "summary"]


def _location(finding: DanglingReference | MismatchedObject) -> dict[str, Any]:
    return {
        "model": finding.model,
        "key": [str(k) for k in finding.primary_key],
        "column": finding.column,
        "backend": finding.file.backend,
        "path": finding.file.path,
    }


def iter_findings(
    session: Session,
    target: Columns,
    registry: StorageRegistry | None = None,
    *,
    orphans_in: str | None = None,
    prefix: str = "",
    grace: timedelta = timedelta(hours=1),
    checksums: bool = False,
    page_size: int = DEFAULT_PAGE_SIZE,
    shard: Shard | None = None,
) -> Iterator[tuple[Section, dict[str, Any]]]:
    """The report of ``storeroom verify``, one finding at a time, as JSON-ready dicts.

    Yields ``("dangling", ...)`` for references whose object is missing, then
    ``("mismatched", ...)`` for objects whose size (or, with ``checksums``, SHA-256, read
    in full) differs from the row's record, then ``("orphans", ...)`` for objects of
    backend ``orphans_in`` under ``prefix`` that no row references, older than ``grace``,
    and last one ``("summary", {...})`` with the counts. Nothing is held in memory but the
    current finding. With ``shard``, only the paths of that shard are checked (see
    :class:`Shard`); the shards of a split together report what one unsharded run does.
    """
    counts = {"dangling": 0, "mismatched": 0, "orphans": 0}
    with ReferenceScan(target, registry=registry, page_size=page_size, shard=shard) as scan:
        references = scan.read_rows(session)
        for dangling in scan.dangling():
            counts["dangling"] += 1
            yield "dangling", _location(dangling)
        for mismatch in scan.mismatched(checksums=checksums):
            counts["mismatched"] += 1
            yield (
                "mismatched",
                {
                    **_location(mismatch),
                    "kind": mismatch.kind,
                    "recorded": mismatch.recorded,
                    "stored": mismatch.stored,
                },
            )
        if orphans_in is not None:
            for orphan in scan.orphans(orphans_in, prefix=prefix, grace=grace):
                counts["orphans"] += 1
                yield "orphans", _orphan(orphans_in, orphan)
    yield (
        "summary",
        {
            "references": references,
            **counts,
            "orphans_checked": orphans_in is not None,
            "checksums_read": checksums,
        },
    )


def _orphan(backend: str, info: ObjectInfo) -> dict[str, Any]:
    return {
        "backend": backend,
        "path": info.path,
        "size": info.size,
        "last_modified": info.last_modified.isoformat() if info.last_modified else None,
    }


def collect_findings(
    session: Session,
    target: Columns,
    registry: StorageRegistry | None = None,
    *,
    orphans_in: str | None = None,
    prefix: str = "",
    grace: timedelta = timedelta(hours=1),
    checksums: bool = False,
    page_size: int = DEFAULT_PAGE_SIZE,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """:func:`iter_findings` gathered into one dict (memory grows with the findings).

    Returns ``{"dangling": [...], "mismatched": [...], "orphans": [...], "summary": {...}}``.
    """
    report: dict[str, Any] = {"dangling": [], "mismatched": [], "orphans": []}
    for section, entry in iter_findings(
        session,
        target,
        registry,
        orphans_in=orphans_in,
        prefix=prefix,
        grace=grace,
        checksums=checksums,
        page_size=page_size,
        shard=shard,
    ):
        if section == "summary":
            report["summary"] = entry
        else:
            report[section].append(entry)
    return report


def remove_orphans(
    sessions: Callable[[], Session],
    target: Columns,
    backend: StorageBackend | str,
    *,
    prefix: str = "",
    grace: timedelta = timedelta(hours=1),
    registry: StorageRegistry | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    shard: Shard | None = None,
) -> Iterator[tuple[ObjectInfo, bool]]:
    """Delete the orphans of ``backend``; yields each and whether it was deleted.

    ``sessions`` makes a new session (a ``sessionmaker``). The orphans are found as by
    :func:`find_orphans`, then deleted in batches in path order. Just before each batch's
    deletes, the references that could adopt its orphans are read again in a new session
    (and the upload sessions in progress with them): an orphan a row started to reference
    meanwhile is kept (yielded with ``False``). Nothing is yielded between a batch's check
    and its deletes, so a caller that takes its time with each result does not widen that
    window. The first batch holds one orphan; each next one twice as many as the last, up
    to 5,000, while deleting a batch takes less than half a second (or half as long as its
    check), and half as many once it takes longer than a second (or its check).

    An upload of a transaction still open (flushed, not committed yet) is never deleted,
    whatever ``grace``; how gc tells depends on the database:

    - PostgreSQL: before each batch's check, one query asks ``pg_stat_activity`` when the
      oldest transaction open in the database (other than gc's own) started, and every
      candidate changed since then, less :data:`CLOCK_MARGIN`, is kept (a transaction
      begins at its first statement: docs/maintenance.md says what that leaves to the
      grace). A role that is
      neither a superuser nor a member of ``pg_read_all_stats`` sees no start time for
      other roles' sessions: gc then relies on ``grace`` alone and says so in a warning
      (logger ``storeroom.orm``).
    - MariaDB and MySQL: the same from ``information_schema.innodb_trx`` (which needs the
      ``PROCESS`` privilege; without it, the same warning).
    - SQLite: the flush of an upload takes the database's write lock before it uploads
      (:func:`~storeroom.orm.lifecycle.hold_write_lock`) and holds it to the commit, and gc
      holds it through each batch's check and deletes. A batch whose lock does not come
      within the connection's busy timeout (pysqlite: ``timeout``, 5 s by default) is
      skipped: its orphans are yielded as :class:`SkippedObject` (``kind="locked"``) and
      ``False``. Writers wait for gc's batch meanwhile (its check and its deletes, which
      the batch sizes keep near a second).
    - Any other database: ``grace`` alone, with a warning.

    An orphan gc leaves in place for another reason is yielded as a :class:`SkippedObject`
    with its ``reason`` and ``False``, and gc goes on with the others: a name storeroom
    never writes and will not touch (:func:`~storeroom.paths.safe_path` refuses it: a
    backslash, a control character, unicode not in NFC form) or a delete that meets a
    symbolic link (``kind="unsafe"``), and a delete that fails (``kind="failed"``, the
    error in ``reason``). With ``shard``, only the orphans of that shard's paths
    (:class:`Shard`). Memory stays flat; the candidates wait in the scan's temporary file.
    """
    store = _backend(backend, registry)
    with ReferenceScan(target, registry=registry, page_size=page_size, shard=shard) as scan:
        in_flight = _InFlight(scan.columns, grace)
        with sessions() as session:
            in_flight.name(session)
            scan.read_rows(session)
        if not scan.remember_candidates(scan.orphans(store, prefix=prefix, grace=grace)):
            return
        size, after = 1, ""
        while paths := scan.candidate_paths(store.key, after=after, limit=size):
            began = checked = time.monotonic()
            batch: list[tuple[ObjectInfo, bool]] = []
            try:
                with sessions() as session:
                    hold = in_flight.hold(session)
                    if hold.busy is not None:
                        checked = time.monotonic()
                        batch = [
                            (SkippedObject.of(info, f"{info.path!r} {hold.busy}", "locked"), False)
                            for info, _referenced in scan.candidates(
                                store.key, after=after, limit=size
                            )
                        ]
                    else:
                        # Only the references that could adopt a candidate of the batch:
                        # those to its path or, for a variant, to its original's.
                        recheck = paths if len(paths) <= _RECHECK_AT_MOST else None
                        scan.read_rows(session, list_ahead={}, paths=recheck)
                        checked = time.monotonic()
                        if not hold.locked:
                            session.close()  # no transaction is held through the deletes
                        for info, referenced in scan.candidates(
                            store.key, after=after, limit=size, since=hold.since
                        ):
                            batch.append(_remove(store, info, referenced))
            except Exception:
                yield from batch  # what was deleted before the failure is told, then it
                raise
            size = _next_batch(size, checked - began, time.monotonic() - checked)
            after = batch[-1][0].path
            yield from batch


@dataclass(slots=True)
class _Hold:
    """What gc learnt from the database before a batch (:meth:`_InFlight.hold`)."""

    locked: bool = False
    """It holds SQLite's write lock until its session ends."""
    busy: str | None = None
    """Why it could not take the lock (the batch is skipped), after a path."""
    since: datetime | None = None
    """Candidates changed at or after this moment may belong to a transaction still open."""


# Names the transaction as maintenance's (MAINTENANCE_APPLICATION_NAME), until it ends.
_PG_NAME = sql_text(
    f"SELECT set_config('application_name', '{MAINTENANCE_APPLICATION_NAME}', true)"
)
# The start of the oldest transaction open in this database by a client other than gc and
# storeroom's maintenance, and how many sessions hide theirs (other roles', unless gc's
# role may read all statistics); gc's own transaction is named first.
_PG_OLDEST = sql_text(
    "SELECT set_config('application_name', :name, true), extract(epoch FROM min(xact_start) "
    "FILTER (WHERE backend_type = 'client backend' AND application_name IS DISTINCT FROM "
    ":name)), count(*) FILTER (WHERE backend_type IS NULL), current_user, current_database() "
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
).bindparams(name=MAINTENANCE_APPLICATION_NAME)
# The same on MariaDB and MySQL (the whole server's: a connection may write to any schema).
_MYSQL_OLDEST = sql_text(
    "SELECT UNIX_TIMESTAMP(MIN(trx_started)) FROM information_schema.innodb_trx "
    "WHERE trx_mysql_thread_id <> CONNECTION_ID()"
)


class _InFlight:
    """What gc asks the database before each batch about the transactions still open.

    One per :func:`remove_orphans` run, which warns once per problem it meets.
    """

    def __init__(self, columns: Sequence[InstrumentedAttribute[Any]], grace: timedelta) -> None:
        self._mappers: list[Any] = list(dict.fromkeys(inspect(c.class_) for c in columns))
        self._grace = grace
        self._warned: set[str] = set()

    def hold(self, session: Session) -> _Hold:
        """Take SQLite's write lock in ``session``, or find when the oldest transaction
        open in the database began (one query per database)."""
        hold = _Hold()
        # SQLite's locks last: a failed query elsewhere rolls the session back.
        ordered = sorted(self._connections(session), key=lambda c: c[0].dialect.name == "sqlite")
        for connection, mapper in ordered:
            if connection.dialect.name == "sqlite":
                try:
                    hold_write_lock(connection, cast(Any, mapper.tables[0]))
                except DBAPIError as exc:  # OperationalError: database is locked
                    hold.busy = (
                        "not checked: another transaction held the SQLite database's write "
                        f"lock for longer than the busy timeout ({exc.orig}), so gc could not "
                        "tell whether it references the object; run gc again"
                    )
                    return hold
                hold.locked = True
                continue
            oldest = self._oldest(session, connection)
            if oldest is not None:
                since = oldest - CLOCK_MARGIN
                hold.since = since if hold.since is None else min(hold.since, since)
        return hold

    def _connections(self, session: Session) -> list[tuple[Connection, Any]]:
        """``session``'s connection to each database of the columns, with a mapper on it."""
        found: dict[int, tuple[Connection, Any]] = {}
        for mapper in self._mappers:
            connection = session.connection(bind_arguments={"mapper": mapper})
            found.setdefault(id(connection), (connection, mapper))
        return list(found.values())

    def _oldest(self, session: Session, connection: Connection) -> datetime | None:
        """When the oldest transaction open in ``connection``'s database (other than gc's)
        began, by the database's clock; None when none is open or it cannot be told."""
        name = connection.dialect.name
        if name == "postgresql":
            statement, label = _PG_OLDEST, "PostgreSQL"
            privilege = "membership in pg_read_all_stats"
        elif name in ("mysql", "mariadb"):
            statement, label = _MYSQL_OLDEST, "MariaDB/MySQL"
            privilege = (
                "the PROCESS privilege (GRANT PROCESS ON *.* TO ...; new connections get it)"
            )
        else:
            self._warn(
                name,
                f"gc cannot see the transactions open on a {name} database",
                "storeroom knows how to ask PostgreSQL, MariaDB, MySQL and SQLite only",
            )
            return None
        try:
            row = connection.execute(statement).one()
        except DBAPIError as exc:
            session.rollback()  # PostgreSQL refuses anything else in a failed transaction
            self._warn(
                f"{name}-refused",
                f"gc cannot see the transactions open on {label}: {exc.orig}",
                f"grant the user gc connects as {privilege}",
            )
            return None
        if name == "postgresql":
            _mark, oldest, hidden, role, database = row
            if hidden:
                self._warn(
                    "postgresql-hidden",
                    f"gc cannot see when {hidden} sessions of other roles in PostgreSQL "
                    f"database {database!r} began their transactions (role {role!r} may only "
                    "see its own)",
                    f"GRANT pg_read_all_stats TO {role}",
                )
        else:
            (oldest,) = row
        return None if oldest is None else datetime.fromtimestamp(float(oldest), timezone.utc)

    def name(self, session: Session) -> None:
        """Name ``session``'s transaction as maintenance's on PostgreSQL (others: nothing),
        so that other gc runs need not spare what changed since it began."""
        for connection, _mapper in self._connections(session):
            if connection.dialect.name == "postgresql":
                connection.execute(_PG_NAME)

    def _warn(self, key: str, problem: str, fix: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning(
            "%s: an upload of a transaction still open is spared only while it is younger "
            "than the grace period (%s), and a flushed upload older than that could be "
            "deleted before its commit. To let gc spare such uploads whatever the grace, %s.",
            problem,
            self._grace,
            fix,
        )


def _remove(store: StorageBackend, info: ObjectInfo, referenced: bool) -> tuple[ObjectInfo, bool]:
    """Delete the candidate ``info`` of ``store`` unless ``referenced``; what gc yields for it."""
    if referenced:
        return info, False
    try:
        store.delete(safe_path(info.path))
    except UnsafePath as exc:
        return SkippedObject.of(info, str(exc), "unsafe"), False
    except Exception as exc:  # reported with the object; gc goes on with the others
        reason = str(exc)
        if not isinstance(exc, StoreroomError) or repr(info.path) not in reason:
            reason = (
                f"deleting {info.path!r} on backend {store.key!r} failed: "
                f"{type(exc).__name__}: {exc}"
            )
        return SkippedObject.of(info, reason, "failed"), False
    return info, True


def remove_incomplete_uploads(
    sessions: Callable[[], Session],
    backend: StorageBackend | str,
    *,
    grace: timedelta = timedelta(hours=1),
    registry: StorageRegistry | None = None,
    dry_run: bool = False,
) -> Iterator[tuple[IncompleteUpload, bool]]:
    """Abort the incomplete S3 multipart uploads of ``backend`` started more than ``grace``
    ago, except those of upload sessions in progress; yields each such upload and whether
    it was aborted (with ``dry_run``: whether it would be).

    An upload is kept (``False``) when an upload session neither completed nor expired
    (table ``storeroom_upload_sessions``, read through a session of ``sessions`` after the
    listing, so a session committed meanwhile counts) names its upload id, or its key on
    this backend: a resumable upload (:mod:`storeroom.uploads.resumable`) may take longer
    than any grace. An upload already gone when aborted is not an error.

    Raises :class:`~storeroom.errors.ConfigurationError` when ``backend`` is not an S3
    :class:`~storeroom.backends.obstore.ObstoreBackend`.
    """
    from storeroom.backends.obstore.multipart import UploadAborter, find_incomplete_uploads

    store = _backend(backend, registry)
    found = find_incomplete_uploads(store, older_than=grace)
    if not found:
        return
    inner = getattr(store, "store", None)
    root = str(getattr(inner, "prefix", None) or "").strip("/")
    ids: set[str] = set()
    keys: set[str] = set()
    with sessions() as session:
        connection = _connection(session, [])
        for key, path, upload_path, _protocol, upload_id in (
            _pending_sessions(connection) if connection is not None else ()
        ):
            if upload_id:
                ids.add(upload_id)  # unique in the bucket, whichever key names it
            if key == store.key:
                keys.update(f"{root}/{p}" if root else p for p in (path, upload_path) if p)
    aborter = UploadAborter(store)
    for upload in found:
        if upload.upload_id in ids or upload.key in keys:
            yield upload, False
            continue
        if not dry_run:
            aborter.abort(upload)  # (one completed or aborted since it was listed: skipped)
        yield upload, True


def _next_batch(size: int, checking: float, deleting: float) -> int:
    """How many candidates gc checks and deletes next, after a batch of ``size`` whose check
    took ``checking`` seconds and its deletes ``deleting``."""
    budget = max(_DELETE_WINDOW, checking)
    if deleting < budget / 2:
        return min(size * 2, _DELETE_BATCH)
    if deleting > budget:
        return max(size // 2, 1)
    return size


def _local_directory(store: StorageBackend) -> str | None:
    """The root directory of a backend on local disk (any that says ``file://``), else None."""
    root = store.listing_directory
    if root is not None:
        return root
    try:
        parts = urlsplit(store.location)
    except ValueError:
        return None
    if parts.scheme != "file":
        return None
    for path in dict.fromkeys((parts.path, unquote(parts.path))):
        if path and os.path.isdir(path):
            return real_root(path)
    return None


def _store_root(store: StorageBackend) -> tuple[Hashable, str] | None:
    """Which store holds ``store``'s objects, and its root folder in it ('/'-separated, no
    leading or trailing '/'); None when that cannot be told.

    Local disk: the directory. A memory store: the store object (each is its own). Any other:
    the scheme and host (bucket, container) of its location, and the location's path.
    """
    local = _local_directory(store)
    if local is not None:
        return "file", local.strip("/")
    try:
        parts = urlsplit(store.location)
    except ValueError:
        return None
    if parts.scheme == "memory":
        inner = getattr(store, "store", None)
        return None if inner is None else (("memory", id(inner)), "")
    if not parts.scheme or parts.scheme == "file":
        return None
    return f"{parts.scheme}://{parts.netloc}", parts.path.strip("/")


def _nesting(mine: tuple[Hashable, str], theirs: tuple[Hashable, str]) -> tuple[str, str] | None:
    """``(strip, add)`` of :meth:`ReferenceScan._views` for a store at ``mine`` and another at
    ``theirs`` (from :func:`_store_root`, on one store), or None when neither holds the other."""
    here, there = mine[1], theirs[1]
    if here == there:
        return "", ""
    if not here or there.startswith(here + "/"):
        return there[len(here) + 1 if here else 0 :] + "/", ""
    if not there or here.startswith(there + "/"):
        return "", here[len(there) + 1 if there else 0 :] + "/"
    return None


def _report_unlisted(key: str, count: int, shown: Sequence[str]) -> None:
    """Warn of names a listing of backend ``key`` left out (not valid UTF-8)."""
    if count:
        more = f" and {count - len(shown)} more" if count > len(shown) else ""
        logger.warning(
            "backend %r: %s under its root %s not valid UTF-8 and %s left out of the "
            "listing, so neither verify nor gc sees %s: %s%s. Rename %s.",
            key,
            "1 name" if count == 1 else f"{count} names",
            "is" if count == 1 else "are",
            "was" if count == 1 else "were",
            "it" if count == 1 else "them",
            ", ".join(shown),
            more,
            "it" if count == 1 else "them",
        )


def _backend(backend: StorageBackend | str, registry: StorageRegistry | None) -> StorageBackend:
    if isinstance(backend, StorageBackend):
        return backend
    return (registry or storages).get_backend(backend)
