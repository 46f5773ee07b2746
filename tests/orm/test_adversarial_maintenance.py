"""Adversarial tests of the maintenance tools: verify, gc and migrations between backends.

The transaction rule (docs/models.md, ../shared/design.md) promises that a committed row never
points at bytes that are not in the store, that a transaction that does not commit leaves no
bytes behind, and that no committed bytes are deleted while a row still references them.
``gc`` (``remove_orphans``), ``verify`` (``iter_findings``) and the migration library
(``copy_objects``, ``update_rows``) must keep that promise when a caller leaves the happy
path: a transaction still open while gc runs, a row that adopts an orphan mid-run, an upload
session not completed yet, two backend keys over one directory, rows written by other code
(JSON encoded twice, unregistered backends, unsafe paths), awkward names and links on disk,
a migration racing an application writer or a gc of its destination.

Each test asserts what the store and the rows hold afterwards. Cases where storeroom breaks
the promise, or stops with a misleading error, are ``xfail(strict=True)`` with the code path
in the reason; they pass once the code keeps the promise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    String,
    column,
    create_engine,
    event,
    insert,
    make_url,
    select,
    table,
    text,
    update,
)
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from storeroom import FileObject, ObstoreBackend, storages
from storeroom.backends.base import PutResult, WriteOptions
from storeroom.errors import (
    BackendNotRegistered,
    ConfigurationError,
    UnsafePath,
)
from storeroom.orm import (
    collect_findings,
    find_dangling,
    find_orphans,
    iter_findings,
    maintenance,
    remove_orphans,
)
from storeroom.orm.maintenance import Shard, SkippedObject
from storeroom.orm.migration import (
    MigrationState,
    copy_objects,
    plan_rows,
    update_rows,
    update_rows_async,
)
from storeroom.orm.variants import variant_path
from storeroom.signing import configure_signing
from storeroom.uploads import begin, complete, remove_expired
from storeroom.uploads import metadata as upload_metadata
from tests.orm.conftest import (
    Db,
    Document,
    FaultyBackend,
    Report,
    assert_consistent,
    by_name,
    committed,
    loaded,
)

TARGET = [Document, Report]

SQLITE = pytest.mark.parametrize("db", [("sqlite", False)], indirect=True, ids=["sqlite-pysqlite"])
"""Tests where the database does not matter run on SQLite only (through the ``db`` fixture)."""


def _sync_databases(**marks: pytest.MarkDecorator) -> pytest.MarkDecorator:
    """The ``db`` fixture on the sync drivers, with extra marks per database name."""
    ids = {
        "sqlite": "sqlite-pysqlite",
        "postgresql": "postgresql-psycopg",
        "mariadb": "mariadb-pymysql",
    }
    services = {"postgresql": [pytest.mark.postgres], "mariadb": [pytest.mark.mariadb]}
    return pytest.mark.parametrize(
        "db",
        [
            pytest.param(
                (name, False),
                id=ids[name],
                marks=[*services.get(name, []), *([marks[name]] if name in marks else [])],
            )
            for name in ("sqlite", "postgresql", "mariadb")
        ],
        indirect=True,
    )


# -- helpers ------------------------------------------------------------------------------------


@contextmanager
def sync_sessions(db: Db, busy_timeout: float | None = None) -> Iterator[sessionmaker[Session]]:
    """A ``sessionmaker`` on a plain engine of ``db``: what ``storeroom gc`` and ``storeroom
    migrate`` build from ``--database`` (no SQLite recipe, objects kept after commit).

    ``busy_timeout``: on SQLite, how long a statement waits for a lock (pysqlite: 5 s)."""
    options = {"timeout": busy_timeout} if busy_timeout is not None and db.name == "sqlite" else {}
    engine = create_engine(db.sync_url, connect_args=options)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()


def gc(sessions: sessionmaker[Session], backend: Any, grace: timedelta = timedelta(0)) -> list[str]:
    """What ``storeroom gc --yes`` deletes from ``backend``: the paths it removed."""
    return [
        info.path
        for info, removed in remove_orphans(sessions, TARGET, backend, grace=grace)
        if removed
    ]


def wait_for_upload(files: FaultyBackend, thread: threading.Thread, *why: object) -> None:
    """Until ``thread``'s upload to ``files`` has started (it then waits for release_slow)."""
    deadline = time.monotonic() + 30
    while files.writes == 0:
        assert time.monotonic() < deadline and thread.is_alive(), why
        time.sleep(0.01)


def assert_write_locked(database: Path) -> None:
    """Another connection to the SQLite file cannot take the write lock now."""
    other = sqlite3.connect(database, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


def dangling(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    """``(backend, path)`` of every Document and Report reference whose object is missing."""
    with sessions() as session:
        return [(str(d.file.backend), d.file.path) for d in find_dangling(session, TARGET)]


def orphans(sessions: sessionmaker[Session], backend: Any) -> list[str]:
    """What ``storeroom verify --backend --grace 0s`` lists as orphans of ``backend``."""
    with sessions() as session:
        return [o.path for o in find_orphans(session, TARGET, backend, grace=timedelta(0))]


def local(key: str, root: Path) -> ObstoreBackend:
    """A local-disk backend ``key`` at ``root``, registered (replacing any other ``key``)."""
    root.mkdir(parents=True, exist_ok=True)
    return storages.register_backend(ObstoreBackend(key, f"file://{root}"), overwrite=True)


def age(root: Path, path: str, hours: float) -> None:
    """Date the file at ``path`` ``hours`` back, as if written that long ago."""
    when = time.time() - hours * 3600
    os.utime(root / path, (when, when))


_DOCUMENTS = table(
    Document.__tablename__,
    column("name", String),
    column("file", JSON),
    column("attachments", JSON),
)


def write_json(db: Db, name: str, **values: Any) -> None:
    """Store ``values`` in Document ``name``'s columns as other code would, bypassing the ORM
    (a ``str`` is stored as a JSON string: JSON text encoded twice)."""
    engine = create_engine(db.sync_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(_DOCUMENTS).where(_DOCUMENTS.c.name == name).values(**values))
    finally:
        engine.dispose()


class RefusingDeletes(FaultyBackend):
    """An in-memory backend whose deletes of chosen paths fail (a permission, a network error)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.refused: set[str] = set()

    def _note_delete(self, path: str) -> None:
        if path in self.refused:
            raise ConnectionError(f"injected delete failure for {path}")
        super()._note_delete(path)


class ScramblingWrites(ObstoreBackend):
    """An in-memory store that keeps other bytes than it was sent (a faulty disk or proxy)."""

    def _write(self, path: str, body: Any, opts: Any) -> Any:
        return super()._write(path, b"scrambled by the store", opts)

    async def _write_async(self, path: str, body: Any, opts: Any) -> Any:
        return await super()._write_async(path, b"scrambled by the store", opts)


# == gc against transactions, adoptions and upload sessions in flight ==========================


@pytest.mark.parametrize("upload", ["new content", "copy of another row's file"])
async def test_gc_while_a_transaction_is_open_spares_its_upload(
    db: Db, files: FaultyBackend, upload: str
) -> None:
    # gc runs (grace 0) in another connection while a flushed transaction is open, in the
    # same thread: on SQLite it waits for the write lock the flush holds, gives the batch up
    # after its busy timeout and says so; PostgreSQL and MariaDB tell it when the open
    # transaction began, and every object changed since is kept.
    if upload == "new content":
        file = FileObject(filename="new.txt", content=b"uploaded by the flush")
        expected = b"uploaded by the flush"
    else:
        await committed(db, "source", b"the source row's bytes")
        file = (await loaded(db, "source")).file  # given to a second row: copied in the flush
        expected = b"the source row's bytes"
    before = files.paths()
    session = db.session()
    session.add(Document(name="in flight", file=file))
    await session.flush()  # uploaded, not committed yet
    (uploaded,) = files.paths() - before
    with sync_sessions(db, busy_timeout=0.2) as sessions:
        outcome = list(remove_orphans(sessions, TARGET, files, grace=timedelta(0)))
        await session.commit()
        await session.close()
        assert [(info.path, removed) for info, removed in outcome] == [(uploaded, False)]
        info = outcome[0][0]
        if db.name == "sqlite":
            assert isinstance(info, SkippedObject) and info.kind == "locked", info
            assert info.reason.startswith(repr(uploaded)) and "run gc again" in info.reason
        else:
            assert not isinstance(info, SkippedObject)
        assert dangling(sessions) == []
    assert (await loaded(db, "in flight")).file.get_content() == expected
    await assert_consistent(db, files)


@_sync_databases()
async def test_gc_between_two_flushes_of_one_transaction_spares_both_uploads(
    db: Db, files: FaultyBackend
) -> None:
    # A transaction that flushes, waits (gc runs), flushes again (gc runs again), commits.
    session = db.session()
    with sync_sessions(db, busy_timeout=0.2) as sessions:
        runs = []
        for name in ("first", "second"):
            session.add(Document(name=name, file=FileObject(filename=f"{name}.txt", content=b"x")))
            await session.flush()
            run = remove_orphans(sessions, TARGET, files, grace=timedelta(0))
            runs.append([(info.path, gone) for info, gone in run])
        await session.commit()
        await session.close()
        assert all(not gone for run in runs for _path, gone in run), runs
        assert dangling(sessions) == []
    assert len(files.paths()) == 2
    await assert_consistent(db, files)


class SlowToStart(FaultyBackend):
    """A memory store whose writes end in a later second of the clock than they stored their
    object: an upload that took a while after its object's date (an S3 multipart upload is
    dated when it starts) before the flush's first statement begins the transaction."""

    def _write(self, path: str, body: Any, opts: WriteOptions) -> PutResult:
        result = super()._write(path, body, opts)
        stored = self.head(path).last_modified
        assert stored is not None
        deadline = time.monotonic() + 5
        while time.time() < int(stored.timestamp()) + 1.05:  # the clock, not a thing: polled
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return result


@_sync_databases(
    postgresql=pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason=(
            "the transaction starts after the upload: psycopg sends BEGIN with the flush's "
            "first statement, which lifecycle.py:_carry_out runs after _upload for a new row, "
            "so pg_stat_activity.xact_start is later than the object's date, and "
            "maintenance.py:_InFlight spares only objects changed since xact_start less "
            "CLOCK_MARGIN: an upload that took longer than the margin is deleted while its "
            "transaction is open. lifecycle.py:begin_before_long_uploads sends a SELECT 1 "
            "first only before content that may take long (a stream, or more than 1 MiB: "
            "test_gc_spares_a_long_upload_whose_transaction_began_before_it); small bytes, "
            "as here, are taken to upload within the 30 s margin, to spare every small "
            "insert a round trip"
        ),
    ),
    mariadb=pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason=(
            "the InnoDB transaction starts after the upload (innodb_trx.trx_started is the "
            "first InnoDB statement's time, the flush's INSERT after lifecycle.py:_upload): "
            "an upload that took longer than CLOCK_MARGIN is deleted while its transaction "
            "is open. lifecycle.py:begin_before_long_uploads reads the table first only "
            "before content that may take long, as on PostgreSQL; small bytes, as here, are "
            "taken to upload within the 30 s margin"
        ),
    ),
)
async def test_gc_spares_an_upload_that_took_longer_than_the_clock_margin(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = SlowToStart("files")
    storages.register_backend(files, overwrite=True)
    # As if the upload had taken longer than the margin before the transaction's first
    # statement (a second here, instead of more than half a minute).
    monkeypatch.setattr(maintenance, "CLOCK_MARGIN", timedelta(0))
    session = db.session()
    session.add(Document(name="slow", file=FileObject(filename="slow.bin", content=b"slow")))
    await session.flush()  # a new row: the flush's INSERT is the transaction's first statement
    with sync_sessions(db, busy_timeout=0.2) as sessions:
        removed = gc(sessions, files)
        await session.commit()
        await session.close()
        assert removed == []
        assert dangling(sessions) == []
    await assert_consistent(db, files)


@pytest.mark.parametrize(
    "db",
    [
        pytest.param(("postgresql", False), id="postgresql-psycopg", marks=pytest.mark.postgres),
        pytest.param(("mariadb", False), id="mariadb-pymysql", marks=pytest.mark.mariadb),
    ],
    indirect=True,
)
async def test_gc_spares_a_long_upload_whose_transaction_began_before_it(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Content that may take long to upload (more than lifecycle._QUICK_UPLOAD bytes, or a
    # stream): the flush begins the transaction first (PostgreSQL: SELECT 1; InnoDB: a read
    # of the table), so the database dates it from before the upload, however long the
    # upload took.
    files = SlowToStart("files")
    storages.register_backend(files, overwrite=True)
    monkeypatch.setattr(maintenance, "CLOCK_MARGIN", timedelta(0))
    content = b"L" * (1024 * 1024 + 1)
    session = db.session()
    session.add(Document(name="slow", file=FileObject(filename="slow.bin", content=content)))
    await session.flush()
    with sync_sessions(db) as sessions:
        removed = gc(sessions, files)
        await session.commit()
        await session.close()
        assert removed == []
        assert dangling(sessions) == []
    assert (await loaded(db, "slow")).file.get_content() == content
    await assert_consistent(db, files)


@pytest.mark.mariadb
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "READ COMMITTED", "SERIALIZABLE"])
@pytest.mark.parametrize("db", [("mariadb", False)], indirect=True, ids=["mariadb-pymysql"])
async def test_the_read_before_a_long_upload_holds_back_no_writer(
    db: Db, files: FaultyBackend, isolation: str
) -> None:
    # InnoDB lists the flush's transaction (innodb_trx) once it has read the table, before
    # the upload; the read is a consistent read that locks nothing, so another connection
    # inserts into the table meanwhile. Under SERIALIZABLE a read would take shared locks
    # for the length of the upload: nothing is read there (the grace covers such uploads).
    files.slow_names.add("slow.bin")
    engine = db.engine.execution_options(isolation_level=isolation)
    flushing = Session(engine, expire_on_commit=False)
    flushing.add(Document(name="slow", file=FileObject(filename="slow.bin", content=iter([b"s"]))))
    failure: list[BaseException] = []

    def flush() -> None:
        try:
            flushing.flush()
        except BaseException as exc:  # reported below
            failure.append(exc)

    thread = threading.Thread(target=flush)
    thread.start()
    other = create_engine(db.sync_url)
    try:
        wait_for_upload(files, thread, failure)
        with other.begin() as connection:
            connection.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 2")
            session = Session(bind=connection)
            session.add(Document(name="meanwhile"))
            session.flush()  # no upload: no read first
        time.sleep(0.2)  # innodb_trx is served from a cache refreshed every 0.1 s
        with other.connect() as connection:
            listed = connection.exec_driver_sql(
                "SELECT COUNT(*) FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID()"
            ).scalar_one()
        assert listed == (0 if isolation == "SERIALIZABLE" else 1)
    except BaseException:
        files.release_slow.set()
        thread.join(60)
        flushing.close()  # else its open transaction would hold the tables' metadata locks
        raise
    finally:
        files.release_slow.set()
        other.dispose()
    thread.join(60)
    assert not failure, failure
    flushing.commit()
    flushing.close()
    await assert_consistent(db, files)


@_sync_databases()
async def test_gc_deletes_orphans_older_than_the_oldest_open_transaction(
    db: Db, files: FaultyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An open transaction spares what changed since it began, not every orphan: one older
    # than the transaction goes, the transaction's own upload stays.
    monkeypatch.setattr(maintenance, "CLOCK_MARGIN", timedelta(0))
    files.put("stray/old.bin", b"an orphan from before the transaction")
    stored = files.head("stray/old.bin").last_modified
    assert stored is not None
    session = db.session()
    # MariaDB dates transactions to the second: begin it in the next one.
    deadline = time.monotonic() + 5
    while time.time() < int(stored.timestamp()) + 1.05:  # the clock, not a thing: polled
        assert time.monotonic() < deadline
        time.sleep(0.01)
    await session.execute(select(Document.id))  # the transaction begins (PostgreSQL, SQLite)
    session.add(Document(name="open", file=FileObject(filename="open.txt", content=b"open")))
    await session.flush()
    (uploaded,) = files.paths() - {"stray/old.bin"}
    with sync_sessions(db, busy_timeout=0.2) as sessions:
        run = remove_orphans(sessions, TARGET, files, grace=timedelta(0))
        outcome = {info.path: gone for info, gone in run}
        await session.commit()
        await session.close()
        if db.name == "sqlite":  # the lock is the whole database's: the batch waits
            assert outcome == {"stray/old.bin": False, uploaded: False}
            assert gc(sessions, files) == ["stray/old.bin"]  # once the transaction ended
        else:
            assert outcome == {"stray/old.bin": True, uploaded: False}
        assert dangling(sessions) == []
    await assert_consistent(db, files)


@SQLITE
@pytest.mark.parametrize("statement", ["unit of work", "bulk insert"])
async def test_a_flush_takes_sqlite_write_lock_before_it_uploads(
    db: Db, files: FaultyBackend, tmp_path: Path, statement: str
) -> None:
    files.slow_names = {"held.txt"}  # the upload waits until released
    session = db.session()
    content = FileObject(filename="held.txt", content=b"uploaded while the lock is held")
    if statement == "unit of work":
        session.add(Document(name="held", file=content))
        write = session.raw.flush
    else:

        def write() -> None:
            session.raw.execute(insert(Document), [{"name": "held", "file": content}])

    flushing = threading.Thread(target=write)
    flushing.start()
    try:
        wait_for_upload(files, flushing)
        assert_write_locked(tmp_path / "test.sqlite")
    finally:
        files.release_slow.set()
        flushing.join(60)
    await session.commit()
    await session.close()
    assert (await loaded(db, "held")).file.get_content() == b"uploaded while the lock is held"


@SQLITE
async def test_a_flush_in_sqlite3s_own_transactions_begins_with_the_write_lock(
    db: Db, files: FaultyBackend, tmp_path: Path
) -> None:
    """Without SQLAlchemy's SAVEPOINT recipe (sqlite3's default), the driver would send a
    deferred BEGIN before the INSERT; the flush opens the transaction with the lock
    instead (BEGIN IMMEDIATE), before it uploads, and sends no other statement for it."""
    files.slow_names = {"held.txt"}
    statements: list[str] = []
    with sync_sessions(db) as sessions:
        session = sessions()
        session.scalars(select(Document)).all()  # a read: sqlite3 opens no transaction
        driver = session.connection().connection.dbapi_connection
        assert driver is not None
        driver.set_trace_callback(statements.append)
        session.add(Document(name="held", file=FileObject(filename="held.txt", content=b"x")))
        flushing = threading.Thread(target=session.flush)
        flushing.start()
        try:
            wait_for_upload(files, flushing)
            assert_write_locked(tmp_path / "test.sqlite")
        finally:
            files.release_slow.set()
            flushing.join(60)
        session.commit()
        driver.set_trace_callback(None)
        session.close()
        assert statements[0] == "BEGIN IMMEDIATE"
        assert [s for s in statements if "BEGIN" in s or s.endswith("WHERE 0")] == [
            "BEGIN IMMEDIATE"
        ]
        with sessions() as session:  # and the next transaction too, after a rollback
            session.add(Document(name="gone", file=FileObject(filename="g.txt", content=b"g")))
            session.flush()
            session.rollback()
    assert await loaded(db, "held") is not None
    assert (await loaded(db, "held")).file.get_content() == b"x"
    await assert_consistent(db, files)


@SQLITE
async def test_only_a_flush_that_uploads_takes_sqlite_write_lock_early(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "row", b"a file")
    session = db.session()
    row = await by_name(session, "row")
    statements: list[str] = []  # what SQLite itself was asked to run
    driver = session.raw.connection().connection.dbapi_connection
    driver.set_trace_callback(statements.append)
    try:
        row.name = "renamed"
        await session.flush()  # no upload: no extra statement
        no_upload = [s for s in statements if s.endswith("WHERE 0")]
        row.file = FileObject(filename="new.txt", content=b"replaced")
        await session.flush()
        with_upload = [s for s in statements if s.endswith("WHERE 0")]
        await session.commit()
    finally:
        driver.set_trace_callback(None)
        await session.close()
    assert no_upload == []
    assert len(with_upload) == 1 and with_upload[0].startswith("UPDATE")
    await assert_consistent(db, files)


@contextmanager
def unprivileged(db: Db) -> Iterator[tuple[str, Any]]:
    """The URL of a database user of ``db`` that may read every table and no more
    (PostgreSQL: pg_read_all_data, not pg_read_all_stats; MariaDB: SELECT on the database,
    not PROCESS), and an admin connection (autocommit) to grant it more; dropped after."""
    name = f"sr_gc_{random.randrange(1 << 40):010x}"
    admin = create_engine(db.sync_url, isolation_level="AUTOCOMMIT")
    user = f"'{name}'@'%'" if db.name == "mariadb" else name
    try:
        with admin.connect() as conn:
            # Grants that touch no table: other test runs may share the server.
            if db.name == "postgresql":
                conn.execute(text(f"CREATE ROLE {name} LOGIN IN ROLE pg_read_all_data"))
            else:
                conn.execute(text(f"CREATE USER {user}"))
                conn.execute(
                    text(f"GRANT SELECT ON `{make_url(db.sync_url).database}`.* TO {user}")
                )
            yield make_url(db.sync_url).set(username=name).render_as_string(False), conn
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP {'USER' if db.name == 'mariadb' else 'ROLE'} {user}"))
        admin.dispose()


@_sync_databases(sqlite=pytest.mark.skip(reason="SQLite has no users: gc takes its write lock"))
async def test_gc_that_may_not_see_other_sessions_warns_and_relies_on_the_grace(
    db: Db, files: FaultyBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # gc connects as a user that cannot see when other users' transactions began: it must
    # say so (naming what to grant) and fall back on the grace, never silently delete more.
    grace = timedelta(seconds=2)
    files.put("stray/old.bin", b"an orphan older than the grace")
    stored = files.head("stray/old.bin").last_modified
    assert stored is not None
    deadline = time.monotonic() + 10
    while time.time() < stored.timestamp() + grace.total_seconds() + 0.05:  # the clock: polled
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with unprivileged(db) as (url, admin):
        session = db.session()  # the application, as the admin user
        engine = create_engine(url)
        sessions = sessionmaker(engine, expire_on_commit=False)
        try:
            session.add(Document(name="in flight", file=FileObject(filename="f.txt", content=b"f")))
            await session.flush()
            (uploaded,) = files.paths() - {"stray/old.bin"}
            with caplog.at_level("WARNING", logger="storeroom.orm"):
                outcome = list(remove_orphans(sessions, TARGET, files, grace=grace))
            # The old orphan goes; the upload in flight is spared by the grace alone.
            assert [(info.path, gone) for info, gone in outcome] == [("stray/old.bin", True)]
            warnings = [r.getMessage() for r in caplog.records if r.name == "storeroom.orm"]
            assert len(warnings) == 1, warnings
            if db.name == "postgresql":
                assert "GRANT pg_read_all_stats TO sr_gc_" in warnings[0], warnings
            else:
                assert "PROCESS privilege" in warnings[0], warnings
            assert "grace period (0:00:02)" in warnings[0], warnings
            # Granted what the warning names, gc sees the transaction whatever the grace.
            name = make_url(url).username
            if db.name == "postgresql":
                admin.execute(text(f"GRANT pg_read_all_stats TO {name}"))
            else:
                admin.execute(text(f"GRANT PROCESS ON *.* TO '{name}'@'%'"))
                engine.dispose()  # a global privilege reaches new connections only
            caplog.clear()
            with caplog.at_level("WARNING", logger="storeroom.orm"):
                outcome = list(remove_orphans(sessions, TARGET, files, grace=timedelta(0)))
            assert [(info.path, gone) for info, gone in outcome] == [(uploaded, False)]
            assert [r for r in caplog.records if r.name == "storeroom.orm"] == []
            await session.commit()
        finally:
            await session.close()
            engine.dispose()
    await assert_consistent(db, files)


@_sync_databases(
    sqlite=pytest.mark.skip(reason="SQLite has one writer: gc takes its write lock"),
    mariadb=pytest.mark.skip(reason="InnoDB's list of transactions names no client"),
)
async def test_gc_does_not_wait_for_transactions_of_storeroom_maintenance(
    db: Db, files: FaultyBackend
) -> None:
    # The shards of one sharded gc (and their progress reads) must not spare each other's
    # orphans: gc does not wait for transactions named as storeroom's maintenance, and
    # waits for any other.
    files.put("stray/orphan.bin", b"an orphan")
    named = create_engine(
        db.sync_url, connect_args={"application_name": maintenance.MAINTENANCE_APPLICATION_NAME}
    )
    plain = create_engine(db.sync_url)
    try:
        with sync_sessions(db) as sessions:
            with plain.connect() as other:
                other.execute(text("SELECT 1"))  # an application's transaction, open
                assert gc(sessions, files) == []
            with named.connect() as other:
                other.execute(text("SELECT 1"))  # a maintenance transaction, open
                assert gc(sessions, files) == ["stray/orphan.bin"]
    finally:
        named.dispose()
        plain.dispose()


class GatedDeletes(FaultyBackend):
    """An in-memory store whose deletes say they started, then wait for ``delete_gate``."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.deleting = threading.Event()
        self.delete_gate = threading.Event()

    def _note_delete(self, path: str) -> None:
        self.deleting.set()
        super()._note_delete(path)


@SQLITE
async def test_gc_holds_sqlite_write_lock_through_a_batch_of_deletes(
    db: Db, tmp_path: Path
) -> None:
    # While gc deletes a batch, no flush can start an upload: writers wait for the batch.
    files = storages.register_backend(GatedDeletes("files"), overwrite=True)
    files.put("stray/orphan.bin", b"an orphan")
    results: list[tuple[str, bool]] = []
    with sync_sessions(db) as sessions:

        def run() -> None:
            for info, gone in remove_orphans(sessions, TARGET, files, grace=timedelta(0)):
                results.append((info.path, gone))

        running = threading.Thread(target=run)
        running.start()
        try:
            assert files.deleting.wait(30)  # gc is inside its batch's delete
            assert_write_locked(tmp_path / "test.sqlite")
        finally:
            files.delete_gate.set()
            running.join(60)
        assert results == [("stray/orphan.bin", True)]
    session = db.session()
    session.add(Document(name="after", file=FileObject(filename="a.txt", content=b"after")))
    await session.commit()
    await session.close()
    await assert_consistent(db, files)


@SQLITE
async def test_gc_deletes_an_orphan_a_row_adopted_after_the_recheck(
    db: Db, files: FaultyBackend
) -> None:
    files.put("stray/1.bin", b"an orphan")
    files.put("stray/2.bin", b"an orphan, adopted during the run")
    with sync_sessions(db) as sessions:
        run = remove_orphans(sessions, TARGET, files, grace=timedelta(0))
        first, removed = next(run)  # the rows were read twice by now
        assert (first.path, removed) == ("stray/1.bin", True)
        with sessions() as session:  # another process adopts the second candidate
            session.add(
                Document(
                    name="adopter",
                    file=FileObject(backend="files", filename="2.bin", path="stray/2.bin"),
                )
            )
            session.commit()
        rest = [(info.path, removed) for info, removed in run]
        assert rest == [("stray/2.bin", False)]
        assert dangling(sessions) == []
    assert files.get("stray/2.bin") == b"an orphan, adopted during the run"


@SQLITE
async def test_gc_spares_the_upload_of_a_session_not_completed_yet(db: Db, tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = local("files", root)
    configure_signing(store, secret="gc-pending-uploads-0123456789", base_url="http://t/files")
    with sync_sessions(db) as sessions:
        engine = sessions.kw["bind"]
        upload_metadata.create_all(engine)
        with sessions() as session:
            target = begin(
                session,
                Document.file,
                filename="scan.txt",
                content_type="text/plain",
                size=11,
                expires_in=2 * 24 * 3600,
            )
            session.commit()
        store.put(target.path, b"hello scans", overwrite=False)  # what the signed PUT does
        age(root, target.path, hours=2)  # sent two hours ago; the session runs for two days
        removed = gc(sessions, "files", grace=timedelta(hours=1))  # gc's default grace
        with sessions() as session:
            file = complete(session, target.id)
            session.add(Document(name="uploaded", file=file))
            session.commit()
        assert removed == []
        assert dangling(sessions) == []
    assert (await loaded(db, "uploaded")).file.get_content() == b"hello scans"


@_sync_databases()
async def test_expired_session_cleanup_spares_an_upload_being_completed(
    db: Db, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = local("files", root)
    configure_signing(store, secret="gc-completing-uploads-0123456789", base_url="http://t/f")
    with sync_sessions(db) as sessions:
        engine = sessions.kw["bind"]
        upload_metadata.drop_all(engine)
        upload_metadata.create_all(engine)
        try:
            with sessions() as session:
                target = begin(
                    session, Document.file, filename="a.txt", content_type="text/plain", size=9
                )
                session.commit()
            store.put(target.path, b"completed", overwrite=False)

            failed: list[Exception] = []

            def cleanup() -> None:
                """`storeroom gc --yes`, run just after the session's expiry."""
                options = {"connect_args": {"timeout": 0.2}} if db.name == "sqlite" else {}
                gc_engine = create_engine(db.sync_url, **options)
                try:
                    with Session(gc_engine) as session:
                        remove_expired(session, now=target.expires_at + timedelta(seconds=1))
                        session.commit()
                except Exception as exc:  # asserted below
                    failed.append(exc)
                finally:
                    gc_engine.dispose()

            cleaner = threading.Thread(target=cleanup)
            with sessions() as app:
                # Verified and claimed just before the session expired; not committed yet
                # (completing a large upload reads it whole).
                file = complete(app, target.id)
                app.add(Document(name="uploaded", file=file))
                app.flush()
                cleaner.start()
                deadline = time.monotonic() + 3
                while (
                    cleaner.is_alive() and store.exists(target.path) and time.monotonic() < deadline
                ):
                    time.sleep(0.01)  # until gc has deleted what it decided to delete
                app.commit()
            cleaner.join(30)
            assert not cleaner.is_alive()
            # SQLite's one writer: the cleanup gives up on the lock and removes nothing.
            assert not failed or (db.name == "sqlite" and "locked" in str(failed[0])), failed
            assert dangling(sessions) == []
            assert (await loaded(db, "uploaded")).file.get_content() == b"completed"
        finally:
            upload_metadata.drop_all(engine)


@SQLITE
async def test_a_copy_made_a_moment_ago_is_not_older_than_the_grace(db: Db, tmp_path: Path) -> None:
    root = tmp_path / "store"
    local("files", root)
    await committed(db, "original", b"saved two days ago")
    original = (await loaded(db, "original")).file
    age(root, original.path, hours=48)
    copy = original.copy_to("files", "copies/duplicate.txt")  # server-side, within one store
    with sync_sessions(db) as sessions:
        removed = gc(sessions, "files", grace=timedelta(hours=1))
        with sessions() as session:
            session.add(Document(name="duplicate", file=copy))
            session.commit()
        assert removed == []
        assert dangling(sessions) == []
    assert (await loaded(db, "duplicate")).file.get_content() == b"saved two days ago"


# == gc and verify against what rows and stores hold ===========================================


AWKWARD_PATHS = [
    "sp ace/a b.txt",
    "pct/100%25 x%.txt",
    "hash/a#b?c=d&e.txt",
    "uni/café ünï 日本.txt",
    "emoji/😀.bin",
    "plus/a+b.txt",
    'quote/"it\'s".txt',
    "brace/{x}[y]^`~.txt",
    "nbsp/a\u00a0b.txt",
    "dots/a..b/c.",
]


@SQLITE
@pytest.mark.parametrize("store", ["local", "memory"])
async def test_gc_and_verify_match_awkward_names_exactly(
    db: Db, tmp_path: Path, store: str
) -> None:
    backend = (
        local("files", tmp_path / "store")
        if store == "local"
        else storages.register_backend(ObstoreBackend("files", "memory://"), overwrite=True)
    )
    session = db.session()
    session.add_all(
        [
            Document(
                name=f"n{i}", file=FileObject(filename="x.txt", path=path, content=path.encode())
            )
            for i, path in enumerate(AWKWARD_PATHS)
        ]
    )
    await session.commit()
    await session.close()
    backend.put("stray/a b#%.bin", b"the one orphan")
    with sync_sessions(db) as sessions:
        with sessions() as reader:
            report = collect_findings(reader, TARGET, orphans_in="files", grace=timedelta(0))
        assert (report["dangling"], report["mismatched"]) == ([], [])
        assert [o["path"] for o in report["orphans"]] == ["stray/a b#%.bin"]
        assert gc(sessions, backend) == ["stray/a b#%.bin"]
        assert gc(sessions, backend) == []
    assert sorted(info.path for info in backend.list()) == sorted(AWKWARD_PATHS)
    for i, path in enumerate(AWKWARD_PATHS):
        assert (await loaded(db, f"n{i}")).file.get_content() == path.encode()


@SQLITE
async def test_gc_spares_objects_another_backend_inside_its_root_references(
    db: Db, tmp_path: Path
) -> None:
    root = tmp_path / "bucket"
    local("files", root)
    local("public", root / "public")
    session = db.session()
    session.add_all(
        [
            Document(name="private", file=FileObject(filename="a.txt", content=b"in files")),
            Document(
                name="public",
                file=FileObject(backend="public", filename="b.txt", content=b"in public"),
            ),
        ]
    )
    await session.commit()
    await session.close()
    with sync_sessions(db) as sessions:
        removed = gc(sessions, "files")
        assert removed == []
        assert dangling(sessions) == []
    assert (await loaded(db, "public")).file.get_content() == b"in public"


@pytest.mark.filterwarnings("ignore:Previous unbuffered result was left incomplete:UserWarning")
@_sync_databases()
async def test_gc_spares_files_of_a_row_whose_json_was_encoded_twice(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(
        Document(
            name="legacy",
            file=FileObject(filename="kept.txt", content=b"read by the application"),
            attachments=[FileObject(filename="also.txt", content=b"an attachment")],
        )
    )
    await session.commit()
    await session.close()
    row = await loaded(db, "legacy")
    # A legacy writer stored json.dumps(...) into the JSON columns.
    write_json(
        db,
        "legacy",
        file=json.dumps(row.file.to_dict()),
        attachments=json.dumps([a.to_dict() for a in row.attachments or []]),
    )
    again = await loaded(db, "legacy")
    assert again.file.get_content() == b"read by the application"  # the ORM reads it
    assert [a.get_content() for a in again.attachments or []] == [b"an attachment"]
    with sync_sessions(db) as sessions:
        removed = gc(sessions, files)
        assert removed == []
        assert dangling(sessions) == []
    assert (await loaded(db, "legacy")).file.get_content() == b"read by the application"


@SQLITE
async def test_gc_keeps_variants_of_a_file_whose_path_holds_a_variants_folder(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add_all(
        [
            Report(name=name, file=FileObject(filename="chart.png", content=b"a chart"))
            for name in ("q3", "q3.variants")  # Report's path function: custom/<name>/<file>
        ]
    )
    await session.commit()
    await session.close()
    thumbnails = [
        variant_path(path, "thumb", "png")
        for path in ("custom/q3/chart.png", "custom/q3.variants/chart.png")
    ]
    for path in thumbnails:
        files.put(path, b"a thumbnail")
    with sync_sessions(db) as sessions:
        removed = gc(sessions, files)
    assert removed == []
    assert {path for path in thumbnails if files.exists(path)} == set(thumbnails)


@SQLITE
async def test_sharded_gc_keeps_a_variant_that_falls_in_another_shard_than_its_file(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "photo", b"a photo")
    path = (await loaded(db, "photo")).file.path
    thumbnail = variant_path(path, "thumb", "png")
    files.put(thumbnail, b"a thumbnail")
    count = next(
        n
        for n in range(2, 64)
        if not any(Shard(k, n).contains(path) and Shard(k, n).contains(thumbnail) for k in range(n))
    )
    with sync_sessions(db) as sessions:
        assert orphans(sessions, files) == []  # one scan: the variant belongs to its file
        removed = [
            info.path
            for k in range(count)
            for info, gone in remove_orphans(
                sessions, TARGET, files, grace=timedelta(0), shard=Shard(k, count)
            )
            if gone
        ]
    assert removed == []
    assert files.get(thumbnail) == b"a thumbnail"


@SQLITE
async def test_verify_with_checksums_survives_a_file_replaced_during_the_run(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(
        Document(
            name="lost",
            file=FileObject(backend="files", filename="l.txt", path="never/there.txt", size=1),
        )
    )
    await session.commit()
    await session.close()
    await committed(db, "busy", b"first version")
    old = (await loaded(db, "busy")).file.path
    with sync_sessions(db) as sessions, sessions() as reader:
        findings = iter_findings(reader, TARGET, checksums=True)
        assert next(findings)[0] == "dangling"
        writer = db.session()  # meanwhile the application replaces the busy row's file
        (await by_name(writer, "busy")).file = FileObject(filename="b.txt", content=b"second")
        await writer.commit()
        await writer.close()
        assert not files.exists(old)
        rest = list(findings)
    summary = rest[-1][1]
    assert (summary["dangling"], summary["mismatched"]) == (1, 0)


@SQLITE
async def test_gc_goes_past_names_it_will_not_touch_and_removes_the_other_orphans(
    db: Db, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = local("files", root)
    await committed(db, "kept", b"referenced")
    for path in ("a/orphan.bin", "z/orphan.bin"):
        store.put(path, b"nobody references me")
    odd = ["back\\slash.txt", unicodedata.normalize("NFD", "café.txt")]
    for name in odd:
        (root / name).write_bytes(b"put there by another program")
    with sync_sessions(db) as sessions:
        outcome = {
            info.path: removed
            for info, removed in remove_orphans(sessions, TARGET, "files", grace=timedelta(0))
        }
        assert dangling(sessions) == []
    assert outcome["a/orphan.bin"] and outcome["z/orphan.bin"]
    assert not store.exists("z/orphan.bin")
    assert (await loaded(db, "kept")).file.get_content() == b"referenced"


@SQLITE
async def test_verify_still_reports_when_a_stray_name_holds_a_control_character(
    db: Db, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = local("files", root)
    await committed(db, "kept", b"referenced")
    store.put("stray/orphan.bin", b"nobody references me")
    (root / "bell\x07.txt").write_bytes(b"put there by another program")
    with sync_sessions(db) as sessions, sessions() as session:
        report = collect_findings(session, TARGET, orphans_in="files", grace=timedelta(0))
    assert report["dangling"] == [] and report["mismatched"] == []
    assert "stray/orphan.bin" in [o["path"] for o in report["orphans"]]


@SQLITE
@pytest.mark.parametrize(
    ("backend", "path", "error"),
    [
        pytest.param(
            "ghost",
            "g/ghost.bin",
            BackendNotRegistered,
            id="unregistered-backend",
        ),
        pytest.param(
            "files",
            "../escape.bin",
            UnsafePath,
            id="unsafe-path",
        ),
    ],
)
async def test_verify_reports_a_reference_it_cannot_reach_as_dangling(
    db: Db, files: FaultyBackend, backend: str, path: str, error: type[Exception]
) -> None:
    await committed(db, "good", b"fine")
    await committed(db, "bad", b"soon unreachable")
    write_json(db, "bad", file={"backend": backend, "filename": "x.bin", "path": path})
    with pytest.raises(error):  # what the application gets for this row's file
        (await loaded(db, "bad")).file.get_content()
    with sync_sessions(db) as sessions, sessions() as session:
        report = collect_findings(session, TARGET, orphans_in="files", grace=timedelta(0))
    assert [(d["backend"], d["path"]) for d in report["dangling"]] == [(backend, path)]
    assert report["summary"]["references"] == 2


@_sync_databases()
async def test_gc_goes_past_a_failing_delete_reports_it_and_a_rerun_finishes(db: Db) -> None:
    # One object whose delete keeps failing (a permission, a network error) neither stops
    # gc nor hides the orphans after it: each failure is reported, the rest deleted.
    store = RefusingDeletes("files")
    storages.register_backend(store, overwrite=True)
    await committed(db, "kept", b"referenced")
    kept = (await loaded(db, "kept")).file.path
    stray = [f"stray/{i}.bin" for i in range(1, 8)]
    for path in stray:
        store.put(path, b"an orphan")
    store.refused = {"stray/2.bin", "stray/5.bin"}
    with sync_sessions(db) as sessions:
        outcome = list(remove_orphans(sessions, TARGET, store, grace=timedelta(0)))
        assert [info.path for info, _gone in outcome] == stray
        failed = {info.path: info for info, gone in outcome if not gone}
        assert set(failed) == store.refused
        for path, info in failed.items():
            assert isinstance(info, SkippedObject) and info.kind == "failed", info
            assert info.reason == (
                f"deleting {path!r} on backend 'files' failed: ConnectionError: "
                f"injected delete failure for {path}"
            )
        assert store.paths() == {kept, *store.refused}
        assert dangling(sessions) == []
        store.refused.clear()
        assert gc(sessions, store) == ["stray/2.bin", "stray/5.bin"]
        assert gc(sessions, store) == []  # a second run finds nothing left
        assert store.paths() == {kept}
    await assert_consistent(db, store)


@SQLITE
async def test_a_folder_swapped_for_a_link_during_gc_is_not_followed(
    db: Db, tmp_path: Path
) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    store = local("files", root)
    outside.mkdir()
    (outside / "2.bin").write_bytes(b"precious, outside the root")
    for path in ("a/1.bin", "b/2.bin", "c/3.bin"):
        store.put(path, b"an orphan")
    with sync_sessions(db) as sessions:
        run = remove_orphans(sessions, TARGET, "files", grace=timedelta(0))
        assert [(info.path, removed) for info, removed in [next(run)]] == [("a/1.bin", True)]
        # Between the listing and the delete, b/ becomes a link to a folder outside the root
        # holding a file of the same name.
        shutil.rmtree(root / "b")
        os.symlink(outside, root / "b")
        try:
            rest = dict((info.path, removed) for info, removed in run)
        except UnsafePath as exc:
            assert "symbolic link" in str(exc)
        else:
            assert rest.get("b/2.bin") is not True
    assert (outside / "2.bin").read_bytes() == b"precious, outside the root"
    assert sorted(p.name for p in outside.iterdir()) == ["2.bin"]
    assert (root / "b").is_symlink()


# == migrations between backends ================================================================


async def _documents(db: Db, count: int) -> dict[str, bytes]:
    contents = {f"m{i}": f"document {i}".encode() for i in range(count)}
    session = db.session()
    session.add_all(
        [
            Document(name=name, file=FileObject(filename=f"{name}.txt", content=body))
            for name, body in contents.items()
        ]
    )
    await session.commit()
    await session.close()
    return contents


async def _files_on(db: Db, backend: str) -> list[FileObject]:
    session = db.session()
    try:
        rows = await session.scalars(select(Document).order_by(Document.name))
    finally:
        await session.close()
    return [row.file for row in rows if row.file is not None and row.file.backend == backend]


async def _assert_rows_read(db: Db, contents: dict[str, bytes]) -> dict[str, str]:
    """Every row still reads its own bytes; returns each row's backend."""
    where = {}
    for name, body in contents.items():
        row = await loaded(db, name)
        assert row.file is not None
        assert row.file.get_content() == body, name
        where[name] = str(row.file.backend)
    return where


async def test_migration_interrupted_then_gc_of_the_source_then_rerun_loses_nothing(
    db: Db, files: FaultyBackend, tmp_path: Path
) -> None:
    new = FaultyBackend("new")
    storages.register_backend(new, overwrite=True)
    contents = await _documents(db, 6)
    new.fail_on = {3}  # the destination's third write fails: a network error mid-run

    async def switch(state: MigrationState) -> int:
        if db.is_async:
            factory = async_sessionmaker(db.engine, expire_on_commit=False)
            return await update_rows_async(
                factory, Document.file, "files", "new", state, batch_size=2
            )
        with sync_sessions(db) as sessions:
            return update_rows(sessions, Document.file, "files", "new", state, batch_size=2)

    journal = tmp_path / "journal.jsonl"
    with sync_sessions(db) as sessions:
        with MigrationState(journal, "files", "new") as state:
            first = await copy_objects(
                files,
                new,
                plan_rows(await _files_on(db, "files"), "files"),
                state=state,
                concurrency=1,
            )
            assert (first.copied, len(first.failed)) == (5, 1)
            assert "injected failure on write 3" in first.failed[0][1]
            assert await switch(state) == 5
        assert dangling(sessions) == []
        where = await _assert_rows_read(db, contents)
        assert sorted(where.values()) == ["files"] + ["new"] * 5
        # The source's files of switched rows are orphans now; gc takes them, not the other.
        assert len(gc(sessions, files)) == 5
        assert dangling(sessions) == []
        await _assert_rows_read(db, contents)
        with MigrationState(journal, "files", "new") as state:
            second = await copy_objects(
                files, new, plan_rows(await _files_on(db, "files"), "files"), state=state
            )
            assert (second.copied, second.failed) == (1, [])
            assert await switch(state) == 1
        assert len(gc(sessions, files)) == 1
        assert dangling(sessions) == []
        assert set((await _assert_rows_read(db, contents)).values()) == {"new"}
        assert files.paths() == set()
        assert orphans(sessions, new) == []
        assert len(new.paths()) == 6


@_sync_databases()
async def test_update_rows_never_overwrites_a_file_replaced_meanwhile(
    db: Db, files: FaultyBackend, tmp_path: Path
) -> None:
    new = FaultyBackend("new")
    storages.register_backend(new, overwrite=True)
    session = db.session()
    session.add(Document(name="d", file=FileObject(filename="v1.txt", content=b"version 1")))
    await session.commit()
    await session.close()
    loaded_once = threading.Event()
    errors: list[BaseException] = []

    def application(sessions: sessionmaker[Session]) -> None:
        """The application replaces the row's file while the migration switches rows."""
        try:
            with sessions() as writer:
                row = writer.scalars(select(Document).where(Document.name == "d")).one()
                loaded_once.set()
                row.file = FileObject(filename="v2.txt", content=b"version 2, the latest")
                writer.commit()
        except BaseException as exc:
            errors.append(exc)
        finally:
            loaded_once.set()

    with sync_sessions(db) as sessions, sync_sessions(db) as writers:
        writer = threading.Thread(target=application, args=(writers,))
        started: list[Session] = []

        def migration_sessions() -> Session:
            session = sessions()
            if not started:
                started.append(session)

                def race(*_args: Any) -> None:
                    # The batch was read (and locked where the database can): now the
                    # application loads the row and writes its new file.
                    writer.start()
                    assert loaded_once.wait(30)
                    if db.name == "sqlite":  # nothing holds the row: the write goes through
                        writer.join(30)

                event.listen(session, "before_flush", race, once=True)
            return session

        with MigrationState(tmp_path / "journal.jsonl", "files", "new") as state:
            await copy_objects(
                files, new, plan_rows(await _files_on(db, "files"), "files"), state=state
            )
            update_rows(migration_sessions, Document.file, "files", "new", state)
        writer.join(30)
        assert not writer.is_alive() and errors == []
        assert dangling(sessions) == []
    row = await loaded(db, "d")
    assert row.file.get_content() == b"version 2, the latest"


@SQLITE
async def test_rows_are_not_switched_to_copies_gc_removed_after_the_copy(
    db: Db, files: FaultyBackend, tmp_path: Path
) -> None:
    root = tmp_path / "new"
    new = local("new", root)
    contents = await _documents(db, 3)
    items = plan_rows(await _files_on(db, "files"), "files")
    with sync_sessions(db) as sessions:
        with MigrationState(tmp_path / "journal.jsonl", "files", "new") as state:
            report = await copy_objects(files, new, items, state=state)
            assert report.copied == 3
            # A copy of a large store runs for hours: its first copies are older than gc's
            # grace when the nightly gc of `new` runs, and no row references them yet (no
            # grace here: ageing files on disk moves their ctime, which gc counts too).
            assert len(gc(sessions, "new", grace=timedelta(0))) == 3
            update_rows(sessions, Document.file, "files", "new", state)
        assert dangling(sessions) == []
    await _assert_rows_read(db, contents)


@SQLITE
async def test_migration_never_replaces_an_object_a_destination_row_references(
    db: Db, files: FaultyBackend, tmp_path: Path
) -> None:
    new = FaultyBackend("new")
    storages.register_backend(new, overwrite=True)
    session = db.session()
    session.add_all(
        [
            Report(
                name="q3",
                file=FileObject(backend="new", filename="summary.txt", content=b"written to new"),
            ),
            Report(name="q3", file=FileObject(filename="summary.txt", content=b"legacy")),
        ]
    )
    await session.commit()
    reports = await session.scalars(select(Report))
    await session.close()
    assert {(str(r.file.backend), r.file.path) for r in reports} == {
        ("new", "custom/q3/summary.txt"),
        ("files", "custom/q3/summary.txt"),
    }
    legacy = [r.file for r in reports if r.file.backend == "files"]
    with MigrationState(tmp_path / "journal.jsonl", "files", "new") as state:
        report = await copy_objects(files, new, plan_rows(legacy, "files"), state=state)
    assert new.get("custom/q3/summary.txt") == b"written to new"
    assert [path for path, _why in report.failed] == ["custom/q3/summary.txt"]
    with sync_sessions(db) as sessions, sessions() as session:
        findings = collect_findings(session, TARGET, checksums=True)
    assert findings["mismatched"] == [] and findings["dangling"] == []


@SQLITE
async def test_update_rows_refuses_the_journal_of_another_destination(
    db: Db, files: FaultyBackend, tmp_path: Path
) -> None:
    new, other = FaultyBackend("new"), FaultyBackend("other")
    storages.register_backend(new, overwrite=True)
    storages.register_backend(other, overwrite=True)
    contents = await _documents(db, 3)
    with sync_sessions(db) as sessions:
        with MigrationState(tmp_path / "journal.jsonl", "files", "new") as state:
            await copy_objects(
                files, new, plan_rows(await _files_on(db, "files"), "files"), state=state
            )
            try:
                update_rows(sessions, Document.file, "files", "other", state)
            except ConfigurationError as exc:
                assert "'new'" in str(exc) and "'other'" in str(exc)
        assert dangling(sessions) == []
    assert set((await _assert_rows_read(db, contents)).values()) <= {"files", "new"}


@SQLITE
async def test_migrating_to_a_second_key_of_the_same_folder_then_gc_loses_nothing(
    db: Db, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    source, mirror = local("files", root), local("mirror", root)
    contents = await _documents(db, 2)
    with sync_sessions(db) as sessions:
        try:
            with MigrationState(tmp_path / "journal.jsonl", "files", "mirror") as state:
                await copy_objects(
                    source, mirror, plan_rows(await _files_on(db, "files"), "files"), state=state
                )
                update_rows(sessions, Document.file, "files", "mirror", state)
        except ConfigurationError as exc:  # refusing the migration keeps the promise too
            assert "'files'" in str(exc) and "'mirror'" in str(exc)
        gc(sessions, source)  # docs/migration.md: gc the source once verify is clean
        assert dangling(sessions) == []
    await _assert_rows_read(db, contents)


@SQLITE
async def test_a_missing_source_or_a_copy_that_reads_back_wrong_leaves_rows_on_the_source(
    db: Db, files: FaultyBackend, tmp_path: Path
) -> None:
    bad = storages.register_backend(ScramblingWrites("bad", "memory://"), overwrite=True)
    contents = await _documents(db, 1)
    session = db.session()
    session.add(
        Document(
            name="lost",
            file=FileObject(backend="files", filename="gone.txt", path="gone/gone.txt", size=4),
        )
    )
    await session.commit()
    await session.close()
    kept = (await loaded(db, "m0")).file.path
    with sync_sessions(db) as sessions:
        with MigrationState(tmp_path / "journal.jsonl", "files", "bad") as state:
            report = await copy_objects(
                files, bad, plan_rows(await _files_on(db, "files"), "files"), state=state
            )
            assert len(state.verified) == 0
            assert update_rows(sessions, Document.file, "files", "bad", state) == 0
        reasons = dict(report.failed)
        assert (
            reasons["gone/gone.txt"] == "object 'gone/gone.txt' does not exist in backend 'files'"
        )
        assert reasons[kept] == (
            f"{kept!r} on backend 'bad' reads back different bytes than were copied from "
            f"{kept!r} on backend 'files'; the copy was deleted"
        )
        assert (report.copied, len(report.failed)) == (0, 2)
        assert list(bad.list()) == []
        assert dangling(sessions) == [("files", "gone/gone.txt")]  # as it was before
    assert set((await _assert_rows_read(db, contents)).values()) == {"files"}
    assert files.get(kept) == b"document 0"


@SQLITE
@pytest.mark.parametrize("seed", [3, 17, 101])
async def test_random_sequences_of_writes_strays_migrations_and_gc_keep_the_rule(
    db: Db, files: FaultyBackend, tmp_path: Path, seed: int
) -> None:
    """Commits, replacements, deletions, abandoned flushes, stray objects, partial
    migrations to ``new`` and gc of either store, in a seeded order (no transaction is
    open while gc runs): after every step no row dangles and every row reads its bytes."""
    rng = random.Random(seed)
    new = FaultyBackend("new")
    storages.register_backend(new, overwrite=True)
    stores = {"files": files, "new": new}
    expected: dict[str, bytes] = {}
    strays: set[tuple[str, str]] = set()
    journal = tmp_path / "journal.jsonl"
    counter = 0

    def body() -> bytes:
        nonlocal counter
        counter += 1
        return f"bytes {counter}".encode()

    async def step(action: str) -> None:
        names = sorted(expected)
        if action == "add" or not names:
            name, content = f"r{counter}", body()
            await committed(db, name, content)
            expected[name] = content
        elif action == "replace":
            name, content = rng.choice(names), body()
            session = db.session()
            (await by_name(session, name)).file = FileObject(filename="n.txt", content=content)
            await session.commit()
            await session.close()
            expected[name] = content
        elif action == "delete":
            name = rng.choice(names)
            session = db.session()
            await session.delete(await by_name(session, name))
            await session.commit()
            await session.close()
            del expected[name]
        elif action == "abandon":
            session = db.session()
            session.add(Document(name="abandoned", file=FileObject(filename="a", content=body())))
            await session.flush()
            await session.rollback()
            await session.close()
        elif action == "stray":
            key = rng.choice(sorted(stores))
            path = f"stray/{counter}.bin"
            stores[key].put(path, body())
            strays.add((key, path))
        elif action == "migrate":
            on_files = await _files_on(db, "files")
            chosen = rng.sample(on_files, k=rng.randint(0, len(on_files)))
            with MigrationState(journal, "files", "new") as state:
                report = await copy_objects(files, new, plan_rows(chosen, "files"), state=state)
                assert report.failed == []
                with sync_sessions(db) as sessions:
                    update_rows(sessions, Document.file, "files", "new", state, batch_size=3)
        else:
            key = rng.choice(sorted(stores))
            with sync_sessions(db) as sessions:
                removed = gc(sessions, stores[key])
                assert orphans(sessions, stores[key]) == []
            strays.difference_update({(key, path) for path in removed})

    actions = ["add"] * 3 + ["replace", "delete", "abandon", "stray", "migrate", "gc", "gc"]
    for _ in range(30):
        await step(rng.choice(actions))
        with sync_sessions(db) as sessions:
            assert dangling(sessions) == []
        assert {name: (await loaded(db, name)).file.get_content() for name in expected} == expected
    with sync_sessions(db) as sessions:
        for store in stores.values():
            gc(sessions, store)
        assert dangling(sessions) == []
    held = {(key, path) for key, store in stores.items() for path in store.paths()}
    referenced = {
        (str(row.file.backend), row.file.path)
        for row in [await loaded(db, name) for name in expected]
    }
    assert held == referenced


@pytest.mark.filterwarnings(
    "ignore:This declarative base already contains a class:sqlalchemy.exc.SAWarning"
)
def test_migrate_dry_run_with_update_rows_changes_no_row_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from tests.cli.test_commands import storeroom

    table_name = f"adv_dry_{os.getpid()}_{time.monotonic_ns() % 10**8}"
    monkeypatch.setenv("STOREROOM_CLI_TABLE", table_name)
    monkeypatch.delitem(sys.modules, "tests.cli.models", raising=False)
    from tests.cli.models import Document as CliDocument
    from tests.cli.models import UUIDAuditBase

    url = f"sqlite:///{tmp_path}/app.db"
    local("local", tmp_path / "local")
    engine = create_engine(url)
    UUIDAuditBase.metadata.create_all(engine, tables=[CliDocument.__table__])
    try:
        with Session(engine, expire_on_commit=False) as session:
            session.add_all(
                [
                    CliDocument(name=f"d{i}", file=FileObject(filename=f"{i}.txt", content=b"kept"))
                    for i in range(3)
                ]
            )
            session.commit()
            before = {d.name: d.file.to_dict() for d in session.scalars(select(CliDocument))}
        env = {
            "STOREROOM_CLI_TABLE": table_name,
            "STORAGE__LOCAL__URL": f"file://{tmp_path}/local",
            "STORAGE__OTHER__URL": f"file://{tmp_path}/other",
            "DATABASE_URL": url,
        }
        dry = storeroom(
            "migrate",
            "local",
            "other",
            "--model",
            "tests.cli.models:Document",
            "--update-rows",
            "--dry-run",
            env=env,
            cwd=tmp_path,
        )
        assert dry.returncode == 0, dry.stderr.decode()
        lines = dry.stdout.decode().splitlines()
        assert lines[0].startswith("would copy 3 of 3 objects")
        assert (
            lines[-1] == "would then switch the rows referencing them to other, 100 per transaction"
        )
        with Session(engine) as session:
            after = {d.name: d.file.to_dict() for d in session.scalars(select(CliDocument))}
        assert after == before
        assert not (tmp_path / "other").exists()
        assert not (tmp_path / ".storeroom-migrate-local-other.jsonl").exists()
    finally:
        UUIDAuditBase.metadata.drop_all(engine, tables=[CliDocument.__table__])
        engine.dispose()
