"""Adversarial tests: sessions inside an outer transaction, and unloaded file columns.

docs/models.md, "Sessions inside an outer transaction": a session joined to a connection
whose transaction it did not begin commits nothing itself, so what it gives up is deleted
after the connection's transaction commits, and what it uploaded is deleted if that
transaction rolls back. And "assigning to a file column that is not loaded" (expired,
deferred) does no IO: the flush reads what it replaces. Each case ends with the three parts
of the rule checked: no dangling reference, no orphan, no referenced bytes deleted. Cases
that break the rule are ``xfail(strict=True)`` with the violation in the reason.
"""

from __future__ import annotations

import gc
import uuid
import weakref
from typing import Any

import pytest
from sqlalchemy import create_engine, event, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, defer, load_only
from sqlalchemy.orm.exc import ObjectDeletedError

from storeroom import BackendError, ConfigurationError, FileObject
from storeroom.orm import wait_for_cleanup
from tests.orm.conftest import (
    CascadeAlbum,
    CascadeNote,
    CascadePhoto,
    Db,
    Document,
    FaultyBackend,
    Folder,
    Item,
    Report,
    SessionAdapter,
    assert_consistent,
    by_name,
    committed,
    delete_named,
    expiring_session,
    loaded,
    plain,
    sqlite_recipe,
    with_tables,
)
from tests.orm.test_adversarial_sessions import ADV_TABLES, Asset, Image

MODES = ["create_savepoint", "rollback_only", "conditional_savepoint"]
CHILD_FILES = [Item.file, CascadePhoto.file, CascadeNote.file]

# -- helpers -----------------------------------------------------------------------------------


async def _done(db: Db, result: Any) -> Any:
    """``result`` awaited on the async drivers (a connection's or transaction's call)."""
    return await result if db.is_async else result


class Outer:
    """``async with Outer(db) as outer``: a connection with a transaction of its own begun
    (closed at the end of the block, which rolls back what is still open), and sessions
    joined to it."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.connection: Any = None
        self.transaction: Any = None

    async def __aenter__(self) -> Outer:
        return await self.begin()

    async def __aexit__(self, *_exc: object) -> None:
        if self.connection is not None:
            await _done(self.db, self.connection.close())
            self.connection = None
        assert wait_for_cleanup(60)

    async def begin(self) -> Outer:
        if self.connection is None:
            self.connection = await _done(self.db, self.db.engine.connect())
        self.transaction = await _done(self.db, self.connection.begin())
        return self

    def session(self, mode: str = "create_savepoint", **options: Any) -> SessionAdapter:
        """A session joined to the connection's transaction (through ``binds=`` if given)."""
        options.setdefault("expire_on_commit", False)
        if "binds" in options:
            options["binds"] = {m: self.connection for m in options["binds"]}
        else:
            options["bind"] = self.connection
        maker: Any = AsyncSession if self.db.is_async else Session
        return SessionAdapter(maker(join_transaction_mode=mode, **options))

    async def replace(self, name: str, content: bytes, mode: str = "create_savepoint") -> str:
        """Give the Document ``name`` a new file in a joined session of its own, committed;
        the new file's path."""
        session = self.session(mode)
        try:
            return await _replace(session, name, content)
        finally:
            await session.close()

    async def delete(self, name: str) -> FileObject:
        """Delete the Document ``name`` in a joined session of its own, committed; the file
        it gave up."""
        session = self.session()
        row = await by_name(session, name)
        await session.delete(row)
        await session.commit()
        await session.close()
        return row.file  # type: ignore[return-value]

    async def flushed(
        self, name: str, content: bytes, mode: str = "create_savepoint"
    ) -> tuple[SessionAdapter, Any]:
        """A joined session that gave the Document ``name`` a new file and flushed, not
        committed; and the row."""
        session = self.session(mode)
        row = await by_name(session, name)
        row.file = _new(name, content)
        await session.flush()
        return session, row

    async def nested(self) -> Any:
        return await _done(self.db, self.connection.begin_nested())

    async def end(self, *, commit: bool) -> None:
        """Commit or roll back the connection's transaction, then let the deletes run."""
        await _done(self.db, self.transaction.commit() if commit else self.transaction.rollback())
        assert wait_for_cleanup(60)


def _new(name: str, content: bytes | None = None) -> FileObject:
    return FileObject(filename=f"{name}.txt", content=name.encode() if content is None else content)


async def _replace(session: SessionAdapter, name: str, content: bytes) -> str:
    """Give the Document ``name`` a new file and commit the session; the new file's path."""
    row = await by_name(session, name)
    row.file = _new(name, content)
    await session.commit()
    return row.file.path


async def _content(db: Db, name: str) -> bytes | None:
    """The bytes of the Document ``name``'s file, read back from the store."""
    row = await loaded(db, name)
    return row.file.get_content() if row.file else None


async def _names(db: Db) -> list[str]:
    """The names of the committed Documents, in order."""
    session = db.session()
    try:
        return [d.name for d in await session.scalars(select(Document).order_by(Document.name))]
    finally:
        await session.close()


# == sessions inside an outer transaction =======================================================


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_committing_in_turn_inside_an_outer_commit(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    await committed(db, "c", b"C")
    async with Outer(db) as outer:
        new_a = await outer.replace("a", b"A2", mode)
        two = outer.session(mode)
        await two.delete(await by_name(two, "b"))
        await two.commit()
        await two.close()
        three = outer.session(mode)
        three.add(Document(name="d", file=_new("d")))
        await three.commit()
        await three.close()
        assert {a.file.path, b.file.path} <= files.paths(), "deleted before the outer commit"
        assert len(files.paths()) == 5
        await outer.end(commit=True)
    assert {a.file.path, b.file.path}.isdisjoint(files.paths())
    assert new_a in files.paths() and len(files.paths()) == 3
    assert [await _content(db, n) for n in "acd"] == [b"A2", b"C", b"d"]
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_committing_in_turn_inside_an_outer_rollback(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    async with Outer(db) as outer:
        await outer.replace("a", b"A2", mode)
        two = outer.session(mode)
        await two.delete(await by_name(two, "b"))
        two.add(Document(name="d", file=_new("d")))
        await two.commit()
        await two.close()
        await outer.replace("a", b"A3", mode)  # replaces session one's upload
        assert len(files.paths()) == 5
        await outer.end(commit=False)
    assert files.paths() == {a.file.path, b.file.path}
    assert [await _content(db, n) for n in "ab"] == [b"A", b"B"]
    await assert_consistent(db, files)


async def test_an_outer_transaction_ended_by_closing_its_connection(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        session = outer.session()
        await _replace(session, "a", b"A2")
        session.add(Document(name="n", file=_new("n")))
        await session.commit()
        await session.close()
    # closed without a commit: the transaction is rolled back
    assert files.paths() == {a.file.path}
    assert await _content(db, "a") == b"A"
    assert await _names(db) == ["a"]
    await assert_consistent(db, files)


async def test_an_outer_connection_dropped_unclosed_then_its_dbapi_connection_reused(
    db: Db, files: FaultyBackend
) -> None:
    """Like a session dropped with its transaction open: the pool rolls the connection back,
    its upload must go; the next Connection on the same DBAPI connection settles its own."""
    if db.is_async:
        pytest.skip("the pool terminates an AsyncConnection dropped unclosed (sync engine)")
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    # One DBAPI connection, so the second Connection gets the one the first left behind.
    engine = create_engine(db.sync_url, pool_size=1, max_overflow=0, pool_timeout=5)
    if db.name == "sqlite":
        sqlite_recipe(engine)
    try:
        for name in ("a", "b"):
            connection = engine.connect()
            connection.begin()
            with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
                row = session.scalars(select(Document).where(Document.name == name)).one()
                row.file = _new(name, name.upper().encode() + b"2")
                session.commit()
            if name == "b":
                connection.commit()
                connection.close()
                continue
            dropped = weakref.ref(connection)
            del connection, session, row
            gc.collect()  # back in the pool, rolled back there
            alive = dropped()
            if alive is not None:  # closed, or its locks would block the tables' drop
                alive.close()
            assert alive is None, "the dropped Connection is still referenced: never pooled"
    finally:
        engine.dispose()
    assert wait_for_cleanup(60)
    assert [await _content(db, n) for n in "ab"] == [b"A", b"B2"]
    assert a.file.path in files.paths() and b.file.path not in files.paths()
    assert len(files.paths()) == 2
    await assert_consistent(db, files)


async def test_a_connection_reused_for_a_second_outer_transaction(
    db: Db, files: FaultyBackend
) -> None:
    """The first transaction's files are settled once: neither replayed nor leaked into the
    second, whose own outcome is then applied to its own files only."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    c = await committed(db, "c", b"C")
    async with Outer(db) as outer:
        new_a = await outer.replace("a", b"A2")
        await outer.end(commit=True)
        # Nothing deleted at the commit event: the database's COMMIT could still refuse.
        assert files.deleted == []
        await outer.begin()  # ...which it did not: a new transaction began
        assert wait_for_cleanup(60)
        assert files.deleted == [a.file.path]
        await outer.replace("b", b"B2")
        await outer.end(commit=False)
        assert files.deleted[0] == a.file.path and len(files.deleted) == 2
        await outer.begin()
        new_c = await outer.replace("c", b"C2", "rollback_only")
        await outer.end(commit=True)
    assert files.paths() == {new_a, b.file.path, new_c}
    assert files.deleted[2:] == [c.file.path]
    assert [await _content(db, n) for n in "abc"] == [b"A2", b"B", b"C2"]
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["create_savepoint", "rollback_only"])
async def test_an_outer_commit_the_database_refuses(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    """SQLAlchemy's commit event comes before the database's COMMIT, which checks deferred
    constraints and may refuse: then everything is rolled back, with no event after. The
    joined session's upload must go, and the file it gave up must stay (its row kept it)."""
    if db.name == "mariadb":
        pytest.skip("InnoDB checks every constraint at its statement: no COMMIT to refuse")
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    suffix = uuid.uuid4().hex[:8]
    parent, child = f"sr_guard_parent_{suffix}", f"sr_guard_child_{suffix}"
    setup = create_engine(db.sync_url)
    with setup.begin() as connection:
        connection.execute(text(f"CREATE TABLE {parent} (id INTEGER PRIMARY KEY)"))
        connection.execute(
            text(
                f"CREATE TABLE {child} (id INTEGER PRIMARY KEY, parent INTEGER "
                f"REFERENCES {parent} (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    try:
        async with Outer(db) as outer:
            new_a = await outer.replace("a", b"A2", mode)
            doomed = outer.session(mode)
            await doomed.delete(await by_name(doomed, "b"))
            await doomed.commit()
            await doomed.close()
            # Accepted now, checked at the COMMIT: no parent 99.
            await _done(db, outer.connection.execute(text(f"INSERT INTO {child} VALUES (1, 99)")))
            with pytest.raises(IntegrityError):
                await outer.end(commit=True)
            assert new_a not in files.paths(), "the refused transaction's upload is left"
            if db.name == "sqlite":
                # SQLite keeps the transaction open after a refused COMMIT, and SQLAlchemy,
                # which counts it ended, would return it to the pool as it is: discard it.
                await _done(db, outer.connection.invalidate())
        assert wait_for_cleanup(60)
        assert files.paths() == {a.file.path, b.file.path}
        assert [await _content(db, n) for n in "ab"] == [b"A", b"B"]
        await assert_consistent(db, files)
    finally:
        with setup.begin() as connection:
            connection.execute(text(f"DROP TABLE {child}"))
            connection.execute(text(f"DROP TABLE {parent}"))
        setup.dispose()


async def test_a_session_inside_a_released_connection_savepoint(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        nested = await outer.nested()
        new = await outer.replace("a", b"A2")
        await _done(db, nested.commit())
        assert wait_for_cleanup(60) and a.file.path in files.paths()
        await outer.end(commit=True)
    assert files.paths() == {new}
    assert await _content(db, "a") == b"A2"
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["create_savepoint", "conditional_savepoint"])
async def test_a_session_inside_a_rolled_back_connection_savepoint(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        nested = await outer.nested()
        await outer.replace("a", b"A2", mode)
        await _done(db, nested.rollback())  # the row points at a's file again
        await outer.end(commit=True)
    assert await _content(db, "a") == b"A"
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


async def test_a_session_joined_through_binds_instead_of_bind(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        session = outer.session(binds=[Document])
        await _replace(session, "a", b"A2")
        await session.close()
        assert a.file.path in files.paths(), "deleted before the outer transaction ended"
        await outer.end(commit=False)
    assert await _content(db, "a") == b"A"
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


async def test_an_engine_bound_session_still_deletes_right_after_its_commit(
    db: Db, files: FaultyBackend
) -> None:
    """Neither an outer transaction open elsewhere nor a session that took control of a
    connection (control_fully) delays the deletes of a session that commits itself."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    async with Outer(db) as outer:
        maker: Any = AsyncSession if db.is_async else Session
        own = SessionAdapter(maker(bind=db.engine, expire_on_commit=False))
        new_a = await _replace(own, "a", b"A2")
        await own.close()
        assert a.file.path not in files.paths()
        await outer.end(commit=True)
        await outer.begin()
        new_b = await outer.replace("b", b"B2", "control_fully")  # commits the connection's
        assert b.file.path not in files.paths()
    assert files.paths() == {new_a, new_b}
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["create_savepoint", "rollback_only"])
async def test_a_joined_session_rolled_back_inside_an_outer_transaction(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    """create_savepoint: the session's rollback undoes its SAVEPOINT only, and the outer
    transaction commits the rest. rollback_only: it rolls the outer transaction back, so
    what the earlier session uploaded goes too."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    async with Outer(db) as outer:
        new_b = await outer.replace("b", b"B2", mode)
        two = outer.session(mode)
        row = await by_name(two, "a")
        row.file = _new("a", b"A2")
        await two.flush()
        await two.rollback()
        if mode == "rollback_only":
            assert not outer.transaction.is_active
            await two.close()
            assert wait_for_cleanup(60)
            assert files.paths() == {a.file.path, b.file.path}
            expected = {"a": b"A", "b": b"B"}
        else:
            new_a = await _replace(two, "a", b"A3")
            await two.close()
            await outer.end(commit=True)
            expected = {"a": b"A3", "b": b"B2"}
    # (what the commit gave up goes once the connection is back in the pool)
    if mode == "create_savepoint":
        assert files.paths() == {new_a, new_b}
    assert {n: await _content(db, n) for n in "ab"} == expected
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["create_savepoint", "rollback_only"])
async def test_a_joined_sessions_failed_flush_inside_an_outer_transaction(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    """A flush failing on its second upload: its uploads go; create_savepoint keeps the
    outer transaction (which then commits the earlier session's change), rollback_only
    rolls it back (and the earlier session's upload goes)."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    async with Outer(db) as outer:
        new_b = await outer.replace("b", b"B2", mode)
        two = outer.session(mode)
        row = await by_name(two, "a")
        row.file = _new("a", b"A2")
        row.attachments = [_new("x"), _new("y")]
        files.fail_on = {files.writes + 2}
        with pytest.raises(BackendError, match="injected failure"):
            await two.commit()
        await two.rollback()
        await two.close()
        if mode == "rollback_only":
            assert not outer.transaction.is_active  # rolled back with the session
            expected = {a.file.path, b.file.path}
        else:
            await outer.end(commit=True)
            expected = {a.file.path, new_b}
    assert files.paths() == expected
    assert await _content(db, "a") == b"A"
    assert await _content(db, "b") == (b"B" if mode == "rollback_only" else b"B2")
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["rollback_only", "conditional_savepoint"])
async def test_a_joined_session_closed_after_a_flush_then_the_outer_commit(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    """In these modes close() does not touch the outer transaction (SQLAlchemy): what the
    session flushed is committed by the outer commit, so its upload must stay."""
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        session, _row = await outer.flushed("a", b"A2", mode)
        await session.close()  # without commit
        await outer.end(commit=True)
    assert await _content(db, "a") == b"A2"
    assert a.file.path not in files.paths() and len(files.paths()) == 1
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["create_savepoint", "conditional_savepoint"])
async def test_sessions_in_connection_savepoints_released_and_rolled_back(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    """A session's files wait in the connection SAVEPOINT it committed in: releasing it hands
    them to the one around it, rolling that one back undoes them, the rest commits."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    c = await committed(db, "c", b"C")
    async with Outer(db) as outer:
        new_a = await outer.replace("a", b"A2", mode)
        one = await outer.nested()
        await outer.replace("b", b"B2", mode)
        two = await outer.nested()
        await outer.replace("c", b"C2", mode)
        await _done(db, two.commit())  # c's files now wait in `one`
        await _done(db, one.rollback())  # b and c point at their first files again
        await outer.end(commit=True)
    assert [await _content(db, n) for n in "abc"] == [b"A2", b"B", b"C"]
    assert files.paths() == {new_a, b.file.path, c.file.path}
    assert a.file.path not in files.paths()
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["create_savepoint", "conditional_savepoint"])
async def test_sessions_in_savepoints_opened_before_the_first_one_committed(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    """SAVEPOINTs opened before any session committed are not seen opening: releasing the
    inner one and rolling back the outer one still undoes everything inside it."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    async with Outer(db) as outer:
        around = await outer.nested()
        inner = await outer.nested()
        await outer.replace("a", b"A2", mode)
        await _done(db, inner.commit())
        await outer.replace("b", b"B2", mode)
        await _done(db, around.rollback())
        await outer.replace("a", b"A3", mode)  # after the rollback: this one stays
        await outer.end(commit=True)
    assert [await _content(db, n) for n in "ab"] == [b"A3", b"B"]
    assert len(files.paths()) == 2 and b.file.path in files.paths()
    assert a.file.path not in files.paths()
    await assert_consistent(db, files)


async def test_a_released_savepoint_then_the_outer_rollback(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        savepoint = await outer.nested()
        await outer.replace("a", b"A2")
        await _done(db, savepoint.commit())
        await outer.end(commit=False)
    assert await _content(db, "a") == b"A"
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["rollback_only", "conditional_savepoint"])
async def test_a_joined_session_closed_after_a_flush_then_the_outer_rollback(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        session, _row = await outer.flushed("a", b"A2", mode)
        await session.close()
        assert len(files.paths()) == 2, "the upload went before the outer transaction ended"
        await outer.end(commit=False)
    assert await _content(db, "a") == b"A"
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


@pytest.mark.parametrize("mode", ["rollback_only", "control_fully", "conditional_savepoint"])
async def test_a_joined_session_closed_inside_a_savepoint_rolled_back(
    db: Db, files: FaultyBackend, mode: str
) -> None:
    """Inside a connection SAVEPOINT: rollback_only's close keeps the flushed row until the
    SAVEPOINT's rollback; control_fully's close rolls the SAVEPOINT back itself;
    conditional_savepoint's close rolls back a SAVEPOINT of its own."""
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        savepoint = await outer.nested()
        session, _row = await outer.flushed("a", b"A2", mode)
        await session.close()
        if mode == "rollback_only":
            await _done(db, savepoint.rollback())
        await outer.end(commit=True)
    assert await _content(db, "a") == b"A"
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


async def test_a_closed_rollback_only_session_then_another_replaces_its_file(
    db: Db, files: FaultyBackend
) -> None:
    """What a closed rollback_only session flushed waits with what later sessions commit:
    the next session's replacement gives up its upload, deleted at the outer commit."""
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        session, row = await outer.flushed("a", b"A2", "rollback_only")
        first = row.file.path
        await session.close()
        last = await outer.replace("a", b"A3", "rollback_only")
        assert {a.file.path, first, last} == files.paths()
        await outer.end(commit=True)
    assert await _content(db, "a") == b"A3"
    assert files.paths() == {last}
    await assert_consistent(db, files)


async def test_a_rollback_only_session_rolled_back_after_a_flush(
    db: Db, files: FaultyBackend
) -> None:
    """rollback_only passes the session's rollback() on to the transaction it joined."""
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        session, _row = await outer.flushed("a", b"A2", "rollback_only")
        await session.rollback()
        await session.close()
        assert not outer.connection.in_transaction()
        assert wait_for_cleanup(60)
    assert await _content(db, "a") == b"A"
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


@pytest.mark.parametrize("cascade", ["delete-orphan", "database"])
async def test_children_deleted_by_a_cascade_inside_an_outer_rollback(
    db: Db, files: FaultyBackend, cascade: str
) -> None:
    seed = db.session()
    seed.add(Folder(name="f", items=[Item(file=_new("i1")), Item(file=_new("i2"))]))
    seed.add(CascadeAlbum(name="al", photos=[CascadePhoto(file=_new("p1"))]))
    await seed.commit()
    await seed.close()
    before = files.paths()
    async with Outer(db) as outer:
        session = outer.session()
        if cascade == "delete-orphan":
            folder = (await session.scalars(select(Folder)))[0]
            folder.items.remove(folder.items[0])
        else:
            await session.delete((await session.scalars(select(CascadeAlbum)))[0])
        await session.commit()
        await session.close()
        assert files.paths() == before, "deleted before the outer transaction ended"
        await outer.end(commit=False)
    assert files.paths() == before
    await assert_consistent(db, files, CHILD_FILES, [Item, CascadePhoto])


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_file_given_up_by_one_session_and_taken_by_the_next(
    db: Db, files: FaultyBackend, outcome: str
) -> None:
    """Session one deletes a; session two gives a's file to b: a copy (a's bytes are still
    in the store, their delete waits for the outer commit)."""
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    async with Outer(db) as outer:
        given_up = await outer.delete("a")
        two = outer.session()
        taker = await by_name(two, "b")
        taker.file = given_up
        await two.commit()
        await two.close()
        copy = taker.file.path
        assert copy != a.file.path and files.paths() == {a.file.path, copy}
        await outer.end(commit=outcome == "commit")
    if outcome == "commit":
        assert files.paths() == {copy}
        assert await _content(db, "b") == b"A"
        assert await _names(db) == ["b"]
    else:
        assert files.paths() == {a.file.path}
        assert [await _content(db, n) for n in "ab"] == [b"A", None]
    await assert_consistent(db, files)


async def test_a_file_given_up_by_one_session_and_rebuilt_from_its_dict_by_the_next(
    db: Db, files: FaultyBackend
) -> None:
    """A reference rebuilt from to_dict() (an API round trip) names the stored object: in
    one transaction the row takes it, as it would in one session."""
    a = await committed(db, "a", b"A")
    async with Outer(db) as outer:
        given_up = await outer.delete("a")
        two = outer.session()
        two.add(Document(name="c", file=FileObject.from_dict(given_up.to_dict())))
        await two.commit()
        await two.close()
        await outer.end(commit=True)
    assert await _content(db, "c") == b"A"
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


async def test_a_bulk_insert_of_a_file_another_session_gave_up_is_refused(
    db: Db, files: FaultyBackend
) -> None:
    """A bulk statement cannot copy: a file that session one gave up is not free for
    session two (it cannot know), so the insert is refused and nothing is lost."""
    await committed(db, "a", b"A")
    async with Outer(db) as outer:
        given_up = await outer.delete("a")
        two = outer.session()
        with pytest.raises(
            ConfigurationError,
            match="another session gave it up in, whose transaction has not ended",
        ):
            await two.execute(insert(Document), [{"name": "c", "file": given_up}])
        await two.rollback()
        await two.close()
        await outer.end(commit=True)
    assert files.paths() == set() and await _names(db) == []
    await assert_consistent(db, files)


async def test_an_outer_rollback_gives_the_uploaded_files_their_content_back(
    db: Db, files: FaultyBackend
) -> None:
    """As after a session's own rollback: adding the file to a row again uploads again."""
    new = _new("n", b"N")
    async with Outer(db) as outer:
        session = outer.session()
        session.add(Document(name="n", file=new))
        await session.commit()
        await session.close()
        await outer.end(commit=False)
    assert files.paths() == set()
    assert new.has_pending_content, "the rolled-back upload's content is not given back"
    again = db.session()
    again.add(Document(name="n", file=new))
    await again.commit()
    await again.close()
    assert await _content(db, "n") == b"N"
    await assert_consistent(db, files)


async def test_an_expiring_joined_session_assigning_to_expired_file_columns(
    db: Db, files: FaultyBackend
) -> None:
    """expire_on_commit=True inside an outer transaction: the second commit's assignments
    hit expired columns; their replaced files (the first commit's uploads) go after the
    outer commit, with the rows' original files."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    async with Outer(db) as outer:
        session = outer.session(expire_on_commit=True)
        ra, rb = await by_name(session, "a"), await by_name(session, "b")
        ra.file = _new("a", b"A2")
        rb.attachments = [_new("x")]
        await session.commit()  # expires every attribute
        ra.file = _new("a", b"A3")
        rb.attachments = None
        rb.file = None
        await session.commit()
        await session.close()
        assert {a.file.path, b.file.path} <= files.paths() and len(files.paths()) == 5
        await outer.end(commit=True)
    assert len(files.paths()) == 1
    assert [await _content(db, n) for n in "ab"] == [b"A3", None]
    await assert_consistent(db, files)


# == assigning to a file column that is not loaded ===============================================


async def _expired(db: Db, *names: str) -> tuple[SessionAdapter, list[Document]]:
    """An expire_on_commit session holding the Documents ``names``, every attribute expired."""
    session = expiring_session(db)
    rows = [await by_name(session, n) for n in names]
    await session.commit()
    return session, rows


async def test_an_unloaded_assignment_dropped_before_the_flush(
    db: Db, files: FaultyBackend
) -> None:
    """Expired again, or refreshed, before the flush: the change is gone, nothing is
    uploaded or deleted; a later assignment (unloaded again) replaces the file as usual."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    session, (ra, rb) = await _expired(db, "a", "b")
    writes = files.writes
    ra.file = _new("a", b"A2")
    rb.file = _new("b", b"B2")
    session.raw.expire(ra, ["file"])
    await session.refresh(rb)
    await session.commit()
    assert files.writes == writes and files.paths() == {a.file.path, b.file.path}
    assert [await _content(db, n) for n in "ab"] == [b"A", b"B"]
    ra.file = _new("a", b"A3")  # expired by that commit
    await session.commit()
    await session.close()
    assert files.paths() == {(await loaded(db, "a")).file.path, b.file.path}
    assert [await _content(db, n) for n in "ab"] == [b"A3", b"B"]
    await assert_consistent(db, files)


async def test_an_unloaded_column_assigned_twice_and_a_failed_flush_between(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    session, (row,) = await _expired(db, "a")
    row.file = _new("a", b"A2")
    row.file = _new("a", b"A3")  # the first assignment is never uploaded
    files.fail_on = {files.writes + 1}
    with pytest.raises(Exception, match="injected failure"):
        await session.commit()
    await session.rollback()  # expires the row again
    assert files.paths() == {a.file.path}
    writes = files.writes
    row.file = _new("a", b"A4")
    row.file = _new("a", b"A5")
    await session.commit()
    await session.close()
    assert files.writes == writes + 1
    assert files.paths() == {(await loaded(db, "a")).file.path}
    assert await _content(db, "a") == b"A5"
    await assert_consistent(db, files)


async def test_unloaded_list_columns_set_to_none_or_to_part_of_what_they_held(
    db: Db, files: FaultyBackend
) -> None:
    seed = db.session()
    seed.add(Document(name="a", attachments=[_new("a1"), _new("a2")]))
    seed.add(Document(name="b", attachments=[_new("b1"), _new("b2")]))
    await seed.commit()
    await seed.close()
    kept = (await loaded(db, "b")).attachments[1]
    session, (ra, rb) = await _expired(db, "a", "b")
    ra.attachments = None
    rb.attachments = [kept, _new("b3")]  # b2 stays where it is (no copy), b1 goes
    await session.commit()
    await session.close()
    got = await loaded(db, "b")
    assert [f.get_content() for f in got.attachments] == [b"b2", b"b3"]
    assert got.attachments[0].path == kept.path
    assert (await loaded(db, "a")).attachments is None
    assert files.paths() == {f.path for f in got.attachments}
    await assert_consistent(db, files)


async def test_an_unloaded_column_given_another_expired_rows_file(
    db: Db, files: FaultyBackend
) -> None:
    """The sources are read first, through the session (loading an expired row is IO:
    run_sync under AsyncSession); a file its row keeps is copied, one its row gives up
    (unloaded too) moves."""
    a = await committed(db, "a", b"A")
    c = await committed(db, "c", b"C")
    await plain(db, "b")
    await plain(db, "d")
    session, (ra, rb, rc, rd) = await _expired(db, "a", "b", "c", "d")
    kept = await session.run_sync(lambda _s: ra.file)
    moving = await session.run_sync(lambda _s: rc.file)
    rb.file, rd.file, rc.file = kept, moving, None
    await session.commit()
    await session.close()
    assert [await _content(db, n) for n in "abcd"] == [b"A", b"A", None, b"C"]
    assert (await loaded(db, "b")).file.path != a.file.path
    assert (await loaded(db, "d")).file.path == c.file.path
    assert len(files.paths()) == 3
    await assert_consistent(db, files)


async def test_an_unloaded_assignment_to_a_row_deleted_meanwhile(
    db: Db, files: FaultyBackend
) -> None:
    """Another transaction deleted the row: the flush fails (SQLAlchemy cannot load the
    row it updates), and what it uploaded for both rows is deleted."""
    await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    session, (ra, rb) = await _expired(db, "a", "b")
    await delete_named(db, "a")
    ra.file = _new("a", b"A2")
    rb.file = _new("b", b"B2")
    with pytest.raises(ObjectDeletedError):
        await session.commit()
    await session.rollback()
    await session.close()
    assert files.paths() == {b.file.path}
    assert await _content(db, "b") == b"B"
    await assert_consistent(db, files)


async def test_an_unloaded_assignment_after_another_transaction_replaced_or_moved_the_file(
    db: Db, files: FaultyBackend
) -> None:
    """What is replaced is what the database holds at the flush: the other transaction's
    file (a), or nothing (b gave its file to c, which keeps it)."""
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    await plain(db, "c")
    session, (ra, rb) = await _expired(db, "a", "b")
    other = db.session()
    oa, ob, oc = await by_name(other, "a"), await by_name(other, "b"), await by_name(other, "c")
    oa.file = _new("a", b"A-other")
    oc.file, ob.file = ob.file, None  # a move
    await other.commit()
    await other.close()
    theirs = oa.file.path
    assert files.deleted == [a.file.path]
    ra.file = _new("a", b"A-mine")
    rb.file = _new("b", b"B-mine")
    await session.commit()
    await session.close()
    assert files.deleted == [a.file.path, theirs]
    assert [await _content(db, n) for n in "abc"] == [b"A-mine", b"B-mine", b"B"]
    assert (await loaded(db, "c")).file.path == b.file.path
    assert len(files.paths()) == 3
    await assert_consistent(db, files)


async def test_many_rows_assigned_unloaded_read_once_per_mapper(
    db: Db, files: FaultyBackend
) -> None:
    """15 Documents and 5 Reports assigned while expired: the flush reads what they
    replace with one query per mapper (then one locked read each), not one per row."""
    names = [f"d{i:02}" for i in range(15)]
    for name in names:
        await committed(db, name, name.encode())
    for i in range(5):
        await committed(db, f"r{i}", b"r", model=Report)
    before = files.paths()
    session = expiring_session(db)
    rows = [*await session.scalars(select(Document)), *await session.scalars(select(Report))]
    named = [(row, row.name) for row in rows]
    await session.commit()
    for row, name in named:  # reading row.name now would load it (and autoflush)
        row.file = _new(f"{name}-2", b"new " + name.encode())
    assert len(session.raw.dirty) == 20
    statements: list[str] = []
    engine = db.engine.sync_engine if db.is_async else db.engine

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        await session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    await session.close()
    # SQLAlchemy loads each expired row it updates (its primary key is expired too), and
    # Report's path function reads row.name; the file columns are read in batches only.
    reads = [s for s in statements if s.startswith("SELECT") and ".file" in s.split("FROM")[0]]
    assert len(reads) == 4, reads  # per mapper: what is replaced, then the same locked
    assert all(" IN (" in s for s in reads)
    assert not files.paths() & before and len(files.paths()) == 20
    assert await _content(db, "d07") == b"new d07"
    await assert_consistent(db, files)


async def test_a_joined_subclass_file_column_assigned_unloaded(
    db: Db, files: FaultyBackend
) -> None:
    """The file column lives on the subclass table: expired by a commit, deferred, or left
    out by load_only, what it replaces is read from that table at the flush."""
    with with_tables(db, ADV_TABLES):
        seed = db.session()
        seed.add_all([Image(name=n, file=_new(n)) for n in ("i1", "i2", "i3")])
        await seed.commit()
        await seed.close()
        originals = files.paths()
        session = expiring_session(db)
        expired = await session.scalars(select(Image).where(Image.name == "i1"))
        await session.commit()
        deferred = await session.scalars(
            select(Image).where(Image.name == "i2").options(defer(Image.file))
        )
        partial = await session.scalars(
            select(Asset).where(Asset.name == "i3").options(load_only(Asset.name))
        )
        expired[0].file = _new("i1", b"I1")
        deferred[0].file = None
        partial[0].file = _new("i3", b"I3")
        await session.commit()
        await session.close()
        check = db.session()
        got = {i.name: i.file for i in await check.scalars(select(Image))}
        await check.close()
        assert got["i2"] is None
        assert [got[n].get_content() for n in ("i1", "i3")] == [b"I1", b"I3"]
        assert files.paths() == {got["i1"].path, got["i3"].path}
        assert not originals & files.paths()
        await assert_consistent(db, files, [Image.file], [Image])
