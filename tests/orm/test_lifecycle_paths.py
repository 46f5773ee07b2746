"""Issue 13: the transaction rule on every session lifecycle path.

Each numbered case of the issue, on SQLite, PostgreSQL and MariaDB with sync and async drivers
(the ``db`` fixture): close/reset/with-exit and garbage collection, session reuse, bulk
statements, cascades, cancellation and interruption, post-commit deletes outside commit(), and
create-only uploads. Concurrent writers are in test_concurrent_writers.py, S3 multipart in
tests/backends.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from storeroom import ConfigurationError, FileObject, ObjectExists
from storeroom.jobs import get_queue, set_queue
from storeroom.orm import find_dangling, find_orphans, wait_for_cleanup
from tests.orm.conftest import (
    ALL_FILE_COLUMNS,
    FILE_MODELS,
    CascadeAlbum,
    CascadeNote,
    CascadePhoto,
    Db,
    Document,
    FaultyBackend,
    Folder,
    Interrupted,
    Item,
)


async def assert_rule_holds(
    db: Db, files: FaultyBackend, *, orphans_ok: set[str] = frozenset()
) -> None:  # type: ignore[assignment]
    """0 dangling references and 0 orphans, once post-commit work has drained."""
    assert wait_for_cleanup(60)
    session = db.session()
    try:
        orphans = await session.run_sync(
            lambda s: find_orphans(s, ALL_FILE_COLUMNS, files, grace=timedelta(0))
        )
        dangling = await session.run_sync(lambda s: find_dangling(s, FILE_MODELS))
    finally:
        await session.close()
    assert {o.path for o in orphans} == set(orphans_ok)
    assert dangling == []


def new_file(name: str = "a.txt", data: bytes = b"data") -> FileObject:
    return FileObject(filename=name, content=data)


# -- 1. close, reset, with-exit, garbage collection --------------------------------------------


@pytest.mark.parametrize("route", ["close", "reset", "with-exit"])
async def test_ending_a_session_without_rollback_deletes_its_uploads(
    db: Db, files: FaultyBackend, route: str
) -> None:
    session = db.session()
    doc = Document(name="kept", file=new_file("kept.txt"))
    session.add(doc)
    await session.commit()
    kept = files.paths()
    if route == "with-exit":
        raw: Any = db.session().raw
        if db.is_async:
            async with raw as s:
                s.add(Document(name="w", file=new_file(), attachments=[new_file("b.txt")]))
                await s.flush()
                assert len(files.paths()) == 3
        else:
            with raw as s:
                s.add(Document(name="w", file=new_file(), attachments=[new_file("b.txt")]))
                s.flush()
                assert len(files.paths()) == 3
    else:
        doc.file = new_file("replacement.txt")
        session.add(Document(name="n", file=new_file("new.txt")))
        await session.flush()
        assert len(files.paths()) == 3
        await (session.close() if route == "close" else session.reset())
    assert files.paths() == kept
    await session.close()
    await assert_rule_holds(db, files)


async def test_a_session_dropped_with_a_transaction_open_leaves_nothing(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(Document(name="gc", file=new_file("gc.txt")))
    await session.flush()
    assert len(files.paths()) == 1
    raw = session.raw
    if isinstance(raw, AsyncSession):
        # Give the connection back first (an async driver cannot be closed from a finalizer);
        # the session's transaction object is what the rule watches.
        transaction = raw.sync_session.get_transaction()
        assert transaction is not None
        await (await raw.connection()).invalidate()
    del session, raw
    transaction = None
    gc.collect()
    assert wait_for_cleanup(60)
    assert files.paths() == set()


@pytest.mark.postgres
@pytest.mark.parametrize("db", [("postgresql", False)], indirect=True, ids=["postgresql-psycopg"])
async def test_sessions_dropped_open_in_many_threads_leave_only_committed_files(
    db: Db, files: FaultyBackend
) -> None:
    # The transactions' files are kept in one dict shared by every thread, and a transaction
    # dropped before it ends is found by a weak reference's callback, run by whichever
    # thread's garbage collection reaches it: each dropped session's upload goes, each
    # committed one stays, whatever the interleaving.
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            for i in range(12):
                session = Session(db.engine, expire_on_commit=False)
                name = f"t{number}-{i}"
                session.add(Document(name=name, file=FileObject(filename="x.bin", content=b"x")))
                session.flush()
                if i % 2 == 0:
                    session.commit()
                    session.close()
                del session  # odd ones: dropped with the transaction open
                if i % 2:
                    gc.collect()  # (gives the connection back to the pool)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    gc.collect()
    assert wait_for_cleanup(60)
    session = db.session()
    kept = {d.name for d in await session.scalars(select(Document))}
    await session.close()
    assert kept == {f"t{n}-{i}" for n in range(4) for i in range(0, 12, 2)}
    assert len(files.paths()) == len(kept)
    await assert_rule_holds(db, files)


async def test_reusing_a_closed_session_never_deletes_an_abandoned_replacements_original(
    db: Db, files: FaultyBackend
) -> None:
    """Case 2: replace, flush, close, then an unrelated commit on the same Session."""
    session = db.session()
    doc = Document(name="orig", file=new_file("orig.txt", b"original"))
    session.add(doc)
    await session.commit()
    original = doc.file.path
    doc.file = new_file("tentative.txt")
    await session.flush()
    await session.close()
    session.add(Document(name="unrelated", file=new_file("u.txt")))
    await session.commit()
    await session.close()
    assert original in files.paths()
    assert files.get(original) == b"original"
    await assert_rule_holds(db, files)


# -- 3. bulk statements ----------------------------------------------------------------------


async def test_bulk_insert_with_parameter_dicts_uploads_before_the_statement(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    await session.execute(
        insert(Document),
        [{"name": f"b{i}", "file": new_file(f"{i}.txt", b"x" * i)} for i in range(3)],
    )
    assert len(files.paths()) == 3
    await session.commit()
    rows = await session.scalars(select(Document).order_by(Document.name))
    assert [r.file.get_content() for r in rows] == [b"", b"x", b"xx"]
    assert all(r.file.size is not None and r.file.checksum for r in rows)
    await session.close()
    await assert_rule_holds(db, files)


async def test_bulk_insert_rolled_back_or_failing_leaves_nothing(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(Document(name="dup", file=new_file()))
    await session.commit()
    kept = files.paths()
    await session.execute(insert(Document), [{"name": "rb", "file": new_file("rb.txt")}])
    await session.rollback()
    assert files.paths() == kept
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await session.execute(insert(Document), [{"name": "dup", "file": new_file("d.txt")}])
    assert files.paths() == kept  # the failed statement's upload is deleted at once
    await session.rollback()
    await session.close()
    await assert_rule_holds(db, files)


async def test_unsafe_bulk_forms_are_refused_before_anything_is_written(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="u", file=new_file())
    session.add(doc)
    await session.commit()
    kept = files.paths()
    with pytest.raises(ConfigurationError, match=r"never written. Pass one parameter dict"):
        await session.execute(insert(Document).values(name="v", file=new_file("v.txt")))
    await session.rollback()
    with pytest.raises(ConfigurationError, match=r"share one stored object.*primary key"):
        await session.execute(
            update(Document).where(Document.name == "u").values(file=new_file("w.txt"))
        )
    await session.rollback()

    def bulk(s: Session) -> None:
        s.bulk_save_objects([Document(name="bs", file=FileObject(filename="x", path="p/x"))])

    with pytest.raises(StatementError, match=r"bulk_save_objects\(\).*session.add_all") as err:
        await session.run_sync(bulk)
    assert isinstance(err.value.orig, ConfigurationError)
    await session.rollback()
    await session.close()
    assert files.paths() == kept
    await assert_rule_holds(db, files)


async def test_bulk_update_by_primary_key_replaces_and_deletes_after_commit(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    docs = [Document(name=f"p{i}", file=new_file(f"{i}.txt")) for i in range(3)]
    session.add_all(docs)
    await session.commit()
    old = {d.file.path for d in docs}
    await session.execute(
        update(Document),
        [{"id": d.id, "file": new_file(f"new{i}.txt", b"new")} for i, d in enumerate(docs)],
    )
    assert old <= files.paths()  # old files stay until the commit
    await session.commit()
    assert not (old & files.paths()) and len(files.paths()) == 3
    await session.close()
    await assert_rule_holds(db, files)


async def test_bulk_update_and_delete_by_criteria_delete_dropped_files_after_commit(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add_all(
        [
            Document(name=f"c{i}", file=new_file(f"{i}.txt"), attachments=[new_file(f"a{i}.txt")])
            for i in range(4)
        ]
    )
    await session.commit()
    assert len(files.paths()) == 8
    await session.execute(update(Document).where(Document.name == "c0").values(file=None))
    await session.execute(delete(Document).where(Document.name.in_(["c1", "c2"])))
    assert len(files.paths()) == 8  # nothing deleted before the commit
    await session.rollback()
    assert len(files.paths()) == 8  # and nothing after a rollback
    await session.execute(update(Document).where(Document.name == "c0").values(file=None))
    await session.execute(delete(Document).where(Document.name.in_(["c1", "c2"])))
    await session.commit()
    assert len(files.paths()) == 3  # c0's attachment, c3's two files
    await session.close()
    await assert_rule_holds(db, files)


async def test_legacy_query_delete_and_update_follow_the_rule(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    session.add_all([Document(name=f"q{i}", file=new_file(f"{i}.txt")) for i in range(3)])
    await session.commit()

    def legacy(s: Session) -> None:
        s.query(Document).filter(Document.name == "q0").update({Document.file: None})
        s.query(Document).filter(Document.name == "q1").delete()

    await session.run_sync(legacy)
    await session.commit()
    await session.close()
    assert len(files.paths()) == 1
    await assert_rule_holds(db, files)


# -- 4. cascades -------------------------------------------------------------------------------


async def test_delete_orphan_cascade_deletes_the_childs_file_after_commit(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    folder = Folder(name="f", items=[Item(file=new_file(f"{i}.txt")) for i in range(3)])
    session.add(folder)
    await session.commit()
    gone = folder.items.pop(0)
    await session.flush()
    assert gone.file.path in files.paths()
    await session.commit()
    assert gone.file.path not in files.paths() and len(files.paths()) == 2
    await session.delete(folder)  # the ORM cascade deletes the remaining children
    await session.commit()
    await session.close()
    assert files.paths() == set()
    await assert_rule_holds(db, files)


async def test_database_cascade_declared_children_files_follow_undeclared_are_found(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    albums = [CascadeAlbum(name=f"al{i}") for i in range(2)]
    session.add_all(albums)
    await session.flush()
    for album in albums:
        session.add_all(
            [
                CascadePhoto(album_id=album.id, file=new_file("p.jpg")),
                CascadeNote(album_id=album.id, file=new_file("n.txt")),
            ]
        )
    await session.commit()
    notes = {n.file.path for n in await session.scalars(select(CascadeNote))}
    await session.delete(albums[0])  # passive_deletes: the database deletes the children
    await session.execute(delete(CascadeAlbum).where(CascadeAlbum.name == "al1"))  # and in bulk
    await session.commit()
    await session.close()
    # Declared (cascade_files(CascadeAlbum.photos)): deleted after the commit. Undeclared: orphans
    # that find_orphans / storeroom gc report.
    assert files.paths() == notes
    await assert_rule_holds(db, files, orphans_ok=notes)


# -- 5. cancellation and interruption -----------------------------------------------------------


async def test_timeout_around_a_commit_with_a_slow_upload_leaves_nothing(
    db: Db, files: FaultyBackend
) -> None:
    files.slow_names = {"slow.bin"}
    session = db.session()
    session.add_all([Document(name=f"t{i}", file=new_file(f"{i}.bin")) for i in range(6)])
    session.add(Document(name="t6", file=new_file("slow.bin")))
    if db.is_async:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(session.commit(), timeout=1.0)
    else:
        # A sync flush cannot be cancelled; the same uploads interrupted by a BaseException.
        files.slow_names = set()
        files.interrupt_on = {4}
        with pytest.raises(Interrupted):
            await session.commit()
    files.release_slow.set()
    await session.rollback()
    await session.close()
    assert wait_for_cleanup(60)  # a write cancelled mid-request is deleted once more
    assert files.paths() == set()
    await assert_rule_holds(db, files)


async def test_any_base_exception_during_a_flush_leaves_nothing(
    db: Db, files: FaultyBackend
) -> None:
    files.interrupt_on = {3}
    session = db.session()
    session.add_all([Document(name=f"i{i}", file=new_file(f"{i}.bin")) for i in range(7)])
    with pytest.raises(Interrupted):
        await session.flush()
    await session.close()
    assert wait_for_cleanup(60)
    assert files.paths() == set()
    await assert_rule_holds(db, files)


# -- 8. post-commit deletes run outside commit() ------------------------------------------------


class RecordingQueue:
    """A job queue that only records (jobs run when the test says so)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, Mapping[str, Any]]] = []

    def enqueue(self, name: str, payload: Mapping[str, Any]) -> None:
        self.jobs.append((name, payload))

    def drain(self, timeout: float | None = None) -> bool:
        from storeroom.jobs import handler_for

        while self.jobs:
            name, payload = self.jobs.pop(0)
            handler_for(name)(payload)
        return True


async def test_post_commit_deletes_go_to_the_job_queue_after_the_commit(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="j", file=new_file("old.txt"))
    session.add(doc)
    await session.commit()
    old = doc.file.path
    queue = RecordingQueue()
    previous = set_queue(queue)
    try:
        doc.file = new_file("new.txt")
        await session._call("commit")  # without the adapter's wait
        assert old in files.paths()  # commit() returned without deleting
        assert [name for name, _p in queue.jobs] == ["storeroom.orm.delete_objects"]
        assert queue.jobs[0][1]["objects"] == [["files", old]]
        assert wait_for_cleanup(5)  # drains the current queue
    finally:
        set_queue(previous)
    assert old not in files.paths()
    await session.close()
    await assert_rule_holds(db, files)


async def test_a_timeout_around_commit_never_fires_because_of_deletes(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    docs = [Document(name=f"s{i}", file=new_file(f"{i}.txt")) for i in range(5)]
    session.add_all(docs)
    await session.commit()
    files.delete_gate = threading.Event()  # every delete blocks until released
    try:
        for d in docs:
            await session.delete(d)
        if db.is_async:
            await asyncio.wait_for(session.raw.commit(), timeout=30)  # type: ignore[misc]
        else:
            session.raw.commit()  # would block here if deletes ran inside commit()
        assert len(files.paths()) == 5  # committed; the deletes are still waiting
        assert not get_queue().drain(timeout=0)
    finally:
        files.delete_gate.set()
    assert wait_for_cleanup(60)
    assert files.paths() == set()
    await session.close()
    files.delete_gate = None
    await assert_rule_holds(db, files)


# -- 9. create-only uploads --------------------------------------------------------------------


async def test_an_explicit_path_taken_by_another_row_is_refused_and_nothing_is_lost(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    owner = Document(name="owner", file=new_file("owned.txt", b"owner's bytes"))
    session.add(owner)
    await session.commit()
    taken = owner.file.path
    session.add(
        Document(name="thief", file=FileObject(filename="x.txt", path=taken, content=b"overwrite?"))
    )
    with pytest.raises(ObjectExists, match=r"already stored there.*Nothing was overwritten"):
        await session.commit()
    await session.rollback()
    await session.close()
    assert files.get(taken) == b"owner's bytes"
    assert files.paths() == {taken}
    await assert_rule_holds(db, files)
