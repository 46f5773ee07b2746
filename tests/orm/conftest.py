"""One ``db`` fixture over every database and driver, and models with file columns.

Each test body is written once, as async code against :class:`Db`; for the sync drivers
the session calls simply run synchronously. Tables get a unique suffix per test session
so runs sharing a database server never collide, and are dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, UniqueConstraint, create_engine, event, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from storeroom import FileObject, ObstoreBackend, StoredObject, storages
from storeroom.backends.base import PutResult, WriteOptions
from storeroom.orm import (
    UUIDAuditBase,
    cascade_files,
    find_dangling,
    find_orphans,
    wait_for_cleanup,
)
from tests.servers.databases import DatabaseUrls

SUFFIX = os.environ.get("STOREROOM_TEST_SUFFIX") or uuid.uuid4().hex[:8]


class Document(UUIDAuditBase):
    """A row owning one file and a list of attachments."""

    __tablename__ = f"sr_document_{SUFFIX}"
    __table_args__ = (UniqueConstraint("name"),)

    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="files"), nullable=True)
    attachments: Mapped[list[FileObject] | None] = mapped_column(
        StoredObject(backend="files", multiple=True), nullable=True
    )


def dated_path(row: Any, column: str, file: FileObject) -> str:
    return f"custom/{row.name}/{file.filename}"


class Report(UUIDAuditBase):
    """A row whose file goes where a user-supplied path function says."""

    __tablename__ = f"sr_report_{SUFFIX}"

    name: Mapped[str] = mapped_column(String(100))
    document_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey(f"{Document.__tablename__}.id"), nullable=True
    )
    file: Mapped[FileObject] = mapped_column(StoredObject(backend="files", path=dated_path))


class Folder(UUIDAuditBase):
    """A parent whose children are deleted with it by the ORM (delete-orphan)."""

    __tablename__ = f"sr_folder_{SUFFIX}"

    name: Mapped[str] = mapped_column(String(100))
    items: Mapped[list[Item]] = relationship(
        cascade="all, delete-orphan", passive_deletes=False, lazy="selectin"
    )


class Item(UUIDAuditBase):
    """A child row owning a file."""

    __tablename__ = f"sr_item_{SUFFIX}"

    folder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(f"{Folder.__tablename__}.id"))
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="files"), nullable=True)


class CascadeAlbum(UUIDAuditBase):
    """A parent whose children the database deletes (ON DELETE CASCADE, passive_deletes)."""

    __tablename__ = f"sr_album_{SUFFIX}"

    name: Mapped[str] = mapped_column(String(100))
    photos: Mapped[list[CascadePhoto]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    notes: Mapped[list[CascadeNote]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class CascadePhoto(UUIDAuditBase):
    """Declared with cascade_files(CascadeAlbum.photos): its files follow the database cascade."""

    __tablename__ = f"sr_photo_{SUFFIX}"

    album_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{CascadeAlbum.__tablename__}.id", ondelete="CASCADE")
    )
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="files"), nullable=True)


class CascadeNote(UUIDAuditBase):
    """Not declared: the database cascade leaves its files for find_orphans / gc."""

    __tablename__ = f"sr_note_{SUFFIX}"

    album_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{CascadeAlbum.__tablename__}.id", ondelete="CASCADE")
    )
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="files"), nullable=True)


cascade_files(CascadeAlbum.photos)

ALL_FILE_COLUMNS = [
    Document.file,
    Document.attachments,
    Report.file,
    Item.file,
    CascadePhoto.file,
    CascadeNote.file,
]
ALL_MODELS = [Document, Report, Folder, Item, CascadeAlbum, CascadePhoto, CascadeNote]
FILE_MODELS = [Document, Report, Item, CascadePhoto, CascadeNote]


class Interrupted(BaseException):
    """An injected BaseException (not an Exception), like KeyboardInterrupt."""


class FaultyBackend(ObstoreBackend):
    """A real in-memory backend whose Nth write fails, and which records concurrency."""

    def __init__(self, key: str) -> None:
        super().__init__(key, "memory://")
        self.fail_on: set[int] = set()
        self.interrupt_on: set[int] = set()
        self.slow_names: set[str] = set()
        self.release_slow = threading.Event()
        self.delete_gate: threading.Event | None = None
        self.deleted: list[str] = []
        self.fail_deletes = False
        self.writes = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.writes += 1
            number = self.writes
        if number in self.fail_on:
            raise ConnectionError(f"injected failure on write {number}")
        if number in self.interrupt_on:
            raise Interrupted(f"injected interruption on write {number}")

    def _write(self, path: str, body: Any, opts: WriteOptions) -> PutResult:
        self._count()
        if path.rsplit("/", 1)[-1] in self.slow_names:
            self.release_slow.wait(60)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return super()._write(path, body, opts)
        finally:
            with self._lock:
                self.active -= 1

    async def _write_async(self, path: str, body: Any, opts: WriteOptions) -> PutResult:
        self._count()
        if path.rsplit("/", 1)[-1] in self.slow_names:
            await asyncio.sleep(60)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0)  # let other uploads of the flush start
            return await super()._write_async(path, body, opts)
        finally:
            self.active -= 1

    def _note_delete(self, path: str) -> None:
        if self.fail_deletes:
            raise ConnectionError(f"injected delete failure for {path}")
        if self.delete_gate is not None:
            self.delete_gate.wait(60)
        if self.exists(path):
            with self._lock:
                self.deleted.append(path)

    def _delete(self, path: str) -> None:
        self._note_delete(path)
        super()._delete(path)

    async def _delete_async(self, path: str) -> None:
        self._note_delete(path)
        await super()._delete_async(path)

    def paths(self) -> set[str]:
        return {info.path for info in self.list()}


class SessionAdapter:
    """The subset of Session/AsyncSession the tests use, awaitable for both."""

    def __init__(self, session: Session | AsyncSession) -> None:
        self.raw = session
        self.is_async = isinstance(session, AsyncSession)

    async def _call(self, name: str, *args: Any) -> Any:
        result = getattr(self.raw, name)(*args)
        if self.is_async:
            return await result
        return result

    def add(self, row: Any) -> None:
        self.raw.add(row)

    def add_all(self, rows: list[Any]) -> None:
        self.raw.add_all(rows)

    async def commit(self) -> None:
        """Commit, then wait for the post-commit deletes (they run in the background)."""
        await self._call("commit")
        assert wait_for_cleanup(60)

    async def rollback(self) -> None:
        await self._call("rollback")

    async def flush(self) -> None:
        await self._call("flush")

    async def delete(self, row: Any) -> None:
        await self._call("delete", row)

    async def refresh(self, row: Any) -> None:
        await self._call("refresh", row)

    async def get(self, model: Any, key: Any) -> Any:
        return await self._call("get", model, key)

    async def scalars(self, statement: Any) -> list[Any]:
        result = await self._call("scalars", statement)
        return list(result.all())

    async def close(self) -> None:
        await self._call("close")

    async def reset(self) -> None:
        await self._call("reset")

    async def execute(self, statement: Any, params: Any = None) -> Any:
        if params is None:
            return await self._call("execute", statement)
        return await self._call("execute", statement, params)

    def begin_nested(self) -> Any:
        return self.raw.begin_nested()

    async def run_sync(self, func: Callable[[Session], Any]) -> Any:
        if isinstance(self.raw, AsyncSession):
            return await self.raw.run_sync(func)
        return func(self.raw)


@dataclass
class Db:
    """A database with a driver, and a way to open sessions on it."""

    name: str
    url: str
    is_async: bool
    engine: Any

    def session(self) -> SessionAdapter:
        if self.is_async:
            return SessionAdapter(AsyncSession(self.engine, expire_on_commit=False))
        return SessionAdapter(Session(self.engine, expire_on_commit=False))

    @property
    def sync_url(self) -> str:
        """The same database through the sync driver (for a plain engine of a test's own)."""
        return (
            self.url.replace("+aiosqlite", "")
            .replace("+asyncpg", "+psycopg")
            .replace("+aiomysql", "+pymysql")
        )


DATABASES = [
    ("sqlite", False),
    ("sqlite", True),
    ("postgresql", False),
    ("postgresql", True),
    ("mariadb", False),
    ("mariadb", True),
]
MARKS = {"postgresql": pytest.mark.postgres, "mariadb": pytest.mark.mariadb}
DRIVER_IDS = [
    "sqlite-pysqlite",
    "sqlite-aiosqlite",
    "postgresql-psycopg",
    "postgresql-asyncpg",
    "mariadb-pymysql",
    "mariadb-aiomysql",
]


def _sqlite_foreign_keys(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # SQLAlchemy's recipe for SAVEPOINTs on pysqlite/aiosqlite: without an explicit BEGIN,
    # a SAVEPOINT opens the transaction and its RELEASE commits it (docs/models.md).
    connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def sqlite_recipe(engine: Any) -> None:
    """Foreign keys on, and real transactions around SAVEPOINTs, for a SQLite engine."""
    event.listen(engine, "connect", _sqlite_foreign_keys)
    event.listen(engine, "begin", _sqlite_begin)


def _urls(request: pytest.FixtureRequest, name: str, tmp_path: Any) -> DatabaseUrls:
    if name == "sqlite":
        path = tmp_path / "test.sqlite"
        return DatabaseUrls("sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}")
    fixture = "postgres_url" if name == "postgresql" else "mariadb_url"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


@pytest.fixture(
    params=[pytest.param(db, marks=[MARKS[db[0]]] if db[0] in MARKS else []) for db in DATABASES],
    ids=DRIVER_IDS,
)
async def db(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Db]:
    name, is_async = request.param
    urls = _urls(request, name, tmp_path)
    sync_engine = create_engine(urls.sync)
    tables = [model.__table__ for model in ALL_MODELS]
    if name == "sqlite":
        sqlite_recipe(sync_engine)
    UUIDAuditBase.metadata.create_all(sync_engine, tables=tables)
    try:
        if is_async:
            engine = create_async_engine(urls.async_)
            if name == "sqlite":
                sqlite_recipe(engine.sync_engine)
            yield Db(name, urls.async_, True, engine)
            await engine.dispose()
        else:
            yield Db(name, urls.sync, False, sync_engine)
    finally:
        UUIDAuditBase.metadata.drop_all(sync_engine, tables=tables)
        sync_engine.dispose()


@pytest.fixture(autouse=True)
def _quick_settle() -> Iterator[None]:
    """Re-delete cancelled uploads after 0.05 s instead of 1 s (in-memory stores settle fast)."""
    from storeroom.orm import settings

    saved, settings.settle_delay = settings.settle_delay, 0.05
    yield
    settings.settle_delay = saved


@pytest.fixture
def files() -> Iterator[FaultyBackend]:
    """The in-memory backend ``files`` the models store into."""
    backend = FaultyBackend("files")
    storages.register_backend(backend, overwrite=True)
    yield backend


def row_json(db: Db, table: str, name: str) -> Any:
    """The raw JSON stored in a row's ``file`` column, read without the ORM."""
    import json

    engine = create_engine(db.sync_url)
    try:
        with engine.connect() as conn:
            value = conn.execute(
                text(f"SELECT file FROM {table} WHERE name = :n"), {"n": name}
            ).scalar_one()
    finally:
        engine.dispose()
    return json.loads(value) if isinstance(value, str) else value


# -- helpers of the rule's tests: rows by name, committed in sessions of their own -----------


async def committed(db: Db, name: str, content: bytes, model: type[Any] = Document) -> Any:
    """A ``model`` row named ``name`` with a file holding ``content``, committed (its
    session closed)."""
    session = db.session()
    row = model(name=name, file=FileObject(filename=f"{name}.txt", content=content))
    session.add(row)
    await session.commit()
    await session.close()
    return row


async def plain(db: Db, name: str) -> None:
    """A committed Document without files (loaded later by another session)."""
    session = db.session()
    session.add(Document(name=name))
    await session.commit()
    await session.close()


async def by_name(session: Any, name: str) -> Document:
    """The one Document named ``name``, loaded in ``session``."""
    rows = await session.scalars(select(Document).where(Document.name == name))
    assert len(rows) == 1, rows
    return rows[0]  # type: ignore[no-any-return]


async def loaded(db: Db, name: str) -> Document:
    """The Document named ``name``, loaded in a fresh session (closed again)."""
    session = db.session()
    try:
        return await by_name(session, name)
    finally:
        await session.close()


async def assert_consistent(
    db: Db, files: FaultyBackend, columns: Sequence[Any] = (), models: Sequence[type] = ()
) -> None:
    """The store holds exactly what rows of Document and Report (and of ``models``, whose
    file columns are ``columns``) reference: no orphan, no dangling reference."""
    every = [Document.file, Document.attachments, Report.file, *columns]
    session = db.session()
    try:
        orphans = await session.run_sync(
            lambda s: find_orphans(s, every, files, grace=timedelta(0))
        )
        dangling = await session.run_sync(lambda s: find_dangling(s, [Document, Report, *models]))
    finally:
        await session.close()
    assert [o.path for o in orphans] == []
    assert dangling == []


def expiring_session(db: Db) -> SessionAdapter:
    """A session with SQLAlchemy's default ``expire_on_commit=True``."""
    if db.is_async:
        return SessionAdapter(AsyncSession(db.engine))
    return SessionAdapter(Session(db.engine))


@contextmanager
def with_tables(db: Db, tables: Sequence[Any]) -> Iterator[Db]:
    """``db`` with a test file's own ``tables`` created for the block, dropped afterwards."""
    engine = create_engine(db.sync_url)
    UUIDAuditBase.metadata.create_all(engine, tables=tables)
    try:
        yield db
    finally:
        UUIDAuditBase.metadata.drop_all(engine, tables=tables)
        engine.dispose()


async def delete_named(db: Db, name: str) -> None:
    """Delete the Document ``name`` in a session of its own (its files go after the commit)."""
    session = db.session()
    await session.delete(await by_name(session, name))
    await session.commit()
    await session.close()


async def refused(session: Any, error: type[Exception], match: str = "") -> str | None:
    """Commit and close: the message of ``error`` (saying ``match``) if it refused, else None."""
    try:
        await session.commit()
    except error as exc:
        assert match in str(exc), exc
        await session.rollback()
        return str(exc)
    finally:
        await session.close()
    return None


async def references(db: Db) -> list[tuple[str, str, str]]:
    """Every ``(row, backend, path)`` that a Document or Report row references (fresh session)."""
    session = db.session()
    try:
        docs = await session.scalars(select(Document))
        reports = await session.scalars(select(Report))
    finally:
        await session.close()
    found = [
        (d.name, f.backend or "", f.path)
        for d in docs
        for f in ([d.file] if d.file else []) + list(d.attachments or [])
    ]
    found += [(f"report:{r.name}", r.file.backend or "", r.file.path) for r in reports]
    return found


async def assert_no_shared_object(db: Db) -> None:
    """No two references (rows or columns) name one stored object (backend and path)."""
    every = [(backend, path) for _row, backend, path in await references(db)]
    assert sorted(every) == sorted(set(every)), f"shared objects: {await references(db)}"
