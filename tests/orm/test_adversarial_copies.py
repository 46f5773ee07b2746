"""Adversarial copies and moves of stored files between rows (docs/models.md).

"A stored object belongs to one row": a file given to a second row while the first keeps it
is copied during the flush; a file its row gives up in the same transaction moves; new
content given to two rows is stored twice. These tests swap, rotate, duplicate and hand
files between single and list columns, across flushes, SAVEPOINTs, failed flushes, merges,
expiring sessions, ``KEEP_REPLACED_FILES`` and another model, and check the three parts of
the rule each time: no dangling reference, no orphan of a transaction that does not commit,
no committed bytes deleted while a row references them. Cases that break the rule are
``xfail(strict=True)`` with the violation in the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import String, create_engine, delete, select, update
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, defer, mapped_column

from storeroom import (
    BackendError,
    ConfigurationError,
    FileObject,
    ObjectNotFound,
    StoredObject,
    StoreroomError,
    storages,
)
from storeroom.orm import UUIDAuditBase, find_dangling, find_orphans, wait_for_cleanup
from storeroom.orm.lifecycle import KEEP_REPLACED_FILES
from tests.orm.conftest import (
    SUFFIX,
    Db,
    Document,
    FaultyBackend,
    Report,
    SessionAdapter,
    assert_consistent,
    assert_no_shared_object,
    by_name,
    committed,
    delete_named,
    expiring_session,
    loaded,
    plain,
)

# -- a model of this file: a file column on another backend ------------------------------------


class Archive(UUIDAuditBase):
    """A row whose file column stores into the backend ``vault``."""

    __tablename__ = f"sr_adv_archive_{SUFFIX}"

    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="vault"), nullable=True)


@pytest.fixture
def vault(db: Db) -> Iterator[FaultyBackend]:
    """The in-memory backend ``vault`` and the Archive table."""
    backend = FaultyBackend("vault")
    storages.register_backend(backend, overwrite=True)
    engine = create_engine(db.sync_url)
    UUIDAuditBase.metadata.create_all(engine, tables=[Archive.__table__])
    try:
        yield backend
    finally:
        UUIDAuditBase.metadata.drop_all(engine, tables=[Archive.__table__])
        engine.dispose()


# -- helpers -------------------------------------------------------------------------------------


async def _contents(db: Db, name: str) -> tuple[bytes | None, list[bytes]]:
    """A Document's bytes, read back from the store: its file, then its attachments."""
    row = await loaded(db, name)
    return (
        row.file.get_content() if row.file else None,
        [f.get_content() for f in row.attachments or []],
    )


async def _rows(session: SessionAdapter, names: str) -> list[Document]:
    """The Documents named by each letter of ``names``, loaded in ``session``."""
    return [await by_name(session, name) for name in names]


async def _nested(db: Db, session: SessionAdapter) -> Any:
    nested = session.begin_nested()
    return await nested if db.is_async else nested


async def _end(db: Db, nested: Any, *, commit: bool) -> None:
    result = nested.commit() if commit else nested.rollback()
    if db.is_async:
        await result


async def _assert_vault_consistent(db: Db, files: FaultyBackend, vault: FaultyBackend) -> None:
    """Both backends hold exactly what Document, Report and Archive rows reference."""
    await assert_consistent(db, files, [Archive.file], [Archive])
    every = [Document.file, Document.attachments, Report.file, Archive.file]
    session = db.session()
    try:
        orphans = await session.run_sync(
            lambda s: find_orphans(s, every, vault, grace=timedelta(0))
        )
        dangling = await session.run_sync(lambda s: find_dangling(s, [Archive]))
    finally:
        await session.close()
    assert [o.path for o in orphans] == []
    assert dangling == []


# == swaps and rotations: moves, no copies ======================================================


async def test_two_rows_swapping_their_files_move_them(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"bytes of a")
    b = await committed(db, "b", b"bytes of b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    la.file, lb.file = lb.file, la.file
    await session.commit()
    await session.close()
    assert files.paths() == {a.file.path, b.file.path}  # no copy, nothing deleted
    assert (await loaded(db, "a")).file.path == b.file.path
    assert await _contents(db, "a") == (b"bytes of b", [])
    assert await _contents(db, "b") == (b"bytes of a", [])
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"bytes of a", [])
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


async def test_a_three_row_rotation_moves_every_file(db: Db, files: FaultyBackend) -> None:
    names = ["r0", "r1", "r2"]
    for name in names:
        await committed(db, name, name.encode())
    session = db.session()
    rows = [await by_name(session, n) for n in names]
    before = {r.name: r.file.path for r in rows}
    rows[0].file, rows[1].file, rows[2].file = rows[1].file, rows[2].file, rows[0].file
    await session.commit()
    await session.close()
    assert files.paths() == set(before.values())
    for i, name in enumerate(names):
        nxt = names[(i + 1) % 3]
        assert (await loaded(db, name)).file.path == before[nxt]
        assert await _contents(db, name) == (nxt.encode(), [])
    await assert_no_shared_object(db)
    remaining = list(names)
    for name in names:  # each row deleted in turn: the others' bytes survive
        await delete_named(db, name)
        remaining.remove(name)
        for other in remaining:
            nxt = names[(names.index(other) + 1) % 3]
            assert await _contents(db, other) == (nxt.encode(), [])
        await assert_consistent(db, files)
    assert files.paths() == set()


async def test_two_rows_swapping_their_lists_move_the_files(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    a = Document(name="a", attachments=[FileObject(filename="a.txt", content=b"la")])
    b = Document(
        name="b",
        attachments=[
            FileObject(filename="b1.txt", content=b"lb1"),
            FileObject(filename="b2.txt", content=b"lb2"),
        ],
    )
    session.add_all([a, b])
    await session.commit()
    before = set(files.paths())
    a.attachments, b.attachments = b.attachments, a.attachments
    await session.commit()
    await session.close()
    assert files.paths() == before
    assert await _contents(db, "a") == (None, [b"lb1", b"lb2"])
    assert await _contents(db, "b") == (None, [b"la"])
    await assert_no_shared_object(db)
    await delete_named(db, "b")
    assert await _contents(db, "a") == (None, [b"lb1", b"lb2"])
    await assert_consistent(db, files)


async def test_a_single_file_swapped_with_another_rows_list_item(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    a = Document(name="a", file=FileObject(filename="a.txt", content=b"single"))
    b = Document(name="b", attachments=[FileObject(filename="b.txt", content=b"item")])
    session.add_all([a, b])
    await session.commit()
    before = set(files.paths())
    a.file, b.attachments = b.attachments[0], [a.file]
    await session.commit()
    await session.close()
    assert files.paths() == before
    assert await _contents(db, "a") == (b"item", [])
    assert await _contents(db, "b") == (None, [b"single"])
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert await _contents(db, "b") == (None, [b"single"])
    await assert_consistent(db, files)


async def test_bulk_update_by_primary_key_swapping_two_files(db: Db, files: FaultyBackend) -> None:
    await committed(db, "a", b"A")
    await committed(db, "b", b"B")
    a, b = await loaded(db, "a"), await loaded(db, "b")
    session = db.session()
    await session.execute(
        update(Document), [{"id": a.id, "file": b.file}, {"id": b.id, "file": a.file}]
    )
    await session.commit()
    await session.close()
    assert files.paths() == {a.file.path, b.file.path}
    assert await _contents(db, "a") == (b"B", [])
    assert await _contents(db, "b") == (b"A", [])
    await delete_named(db, "b")
    assert await _contents(db, "a") == (b"B", [])
    await assert_consistent(db, files)


async def test_bulk_update_cannot_give_one_given_up_file_to_two_rows(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "giver", b"once")
    await plain(db, "b")
    await plain(db, "c")
    giver, b, c = await loaded(db, "giver"), await loaded(db, "b"), await loaded(db, "c")
    session = db.session()
    with pytest.raises(ConfigurationError, match="another row references"):
        await session.execute(
            update(Document),
            [
                {"id": giver.id, "file": None},
                {"id": b.id, "file": giver.file},
                {"id": c.id, "file": giver.file},
            ],
        )
    await session.rollback()
    await session.close()
    assert files.paths() == {giver.file.path}
    assert await _contents(db, "giver") == (b"once", [])
    await assert_consistent(db, files)


# == single column <-> list ====================================================================


async def test_a_file_moved_into_another_rows_list_and_back(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"travelling")
    await plain(db, "b")
    path = a.file.path
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.attachments = [la.file]
    la.file = None
    await session.commit()
    assert lb.attachments[0].path == path and files.paths() == {path}
    assert await _contents(db, "b") == (None, [b"travelling"])
    la.file = lb.attachments[0]  # back again, the list emptied in place
    lb.attachments.pop()
    await session.commit()
    assert la.file.path == path and files.paths() == {path}
    lb.attachments.append(la.file)  # and into the list once more, appended in place
    la.file = None
    await session.commit()
    await session.close()
    assert files.paths() == {path}
    assert await _contents(db, "a") == (None, [])
    assert await _contents(db, "b") == (None, [b"travelling"])
    await delete_named(db, "a")
    assert await _contents(db, "b") == (None, [b"travelling"])
    await assert_consistent(db, files)


async def test_a_list_item_moved_to_another_rows_single_column(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    a = Document(
        name="a",
        attachments=[
            FileObject(filename="x.txt", content=b"x"),
            FileObject(filename="y.txt", content=b"y"),
        ],
    )
    b = Document(name="b")
    session.add_all([a, b])
    await session.commit()
    x, y = (f.path for f in a.attachments)
    b.file = a.attachments.pop(0)  # given up in place: a move
    await session.commit()
    assert b.file.path == x and files.paths() == {x, y}
    b.file = a.attachments[0]  # a keeps y: a copy, and b's x goes
    await session.commit()
    await session.close()
    assert b.file.path not in (x, y)
    assert files.paths() == {y, b.file.path}
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"y", [])
    await assert_consistent(db, files)


async def test_a_list_item_kept_and_given_to_another_rows_single_column_is_copied(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    a = Document(name="a", attachments=[FileObject(filename="x.txt", content=b"x")])
    session.add(a)
    await session.commit()
    b = Document(name="b", file=a.attachments[0])
    session.add(b)
    await session.commit()
    await session.close()
    assert b.file.path != a.attachments[0].path
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"x", [])
    await assert_consistent(db, files)


# == the same file twice ========================================================================


async def test_the_same_kept_file_twice_in_one_list_gets_two_copies(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"twice")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.attachments = [la.file, la.file]
    await session.commit()
    await session.close()
    paths = [f.path for f in lb.attachments]
    assert len({*paths, a.file.path}) == 3
    assert files.paths() == {*paths, a.file.path}
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert await _contents(db, "b") == (None, [b"twice", b"twice"])
    await assert_consistent(db, files)


async def test_a_given_up_file_twice_in_one_list_moves_once_and_is_copied_once(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"twice")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.attachments = [la.file, la.file]
    la.file = None
    await session.commit()
    await session.close()
    paths = [f.path for f in lb.attachments]
    assert a.file.path in paths and len(set(paths)) == 2
    assert files.paths() == set(paths)
    await assert_no_shared_object(db)
    assert await _contents(db, "b") == (None, [b"twice", b"twice"])
    session = db.session()
    lb = await by_name(session, "b")
    lb.attachments.pop(0)  # either one goes; the other stays readable
    await session.commit()
    await session.close()
    assert await _contents(db, "b") == (None, [b"twice"])
    await assert_consistent(db, files)


async def test_new_content_twice_in_one_list_is_stored_twice(db: Db, files: FaultyBackend) -> None:
    upload = FileObject(filename="n.txt", content=b"new twice")
    session = db.session()
    session.add(Document(name="b", attachments=[upload, upload]))
    await session.commit()
    await session.close()
    b = await loaded(db, "b")
    assert len({f.path for f in b.attachments}) == 2 and len(files.paths()) == 2
    session = db.session()
    b = await by_name(session, "b")  # held: the list reports changes to a live row only
    b.attachments.pop()
    await session.commit()
    await session.close()
    assert await _contents(db, "b") == (None, [b"new twice"])
    await assert_consistent(db, files)


async def test_a_rows_list_item_appended_again_to_the_same_list(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    a = Document(name="a", attachments=[FileObject(filename="x.txt", content=b"x")])
    session.add(a)
    await session.commit()
    a.attachments.append(a.attachments[0])
    await session.commit()
    a.attachments.pop()  # one of the two references goes: the bytes must stay
    await session.commit()
    await session.close()
    assert await _contents(db, "a") == (None, [b"x"])
    await assert_consistent(db, files)


async def test_a_list_holding_the_rows_own_single_file(db: Db, files: FaultyBackend) -> None:
    await committed(db, "a", b"own")
    session = db.session()
    la = await by_name(session, "a")
    la.attachments = [la.file]
    await session.commit()
    await session.close()
    session = db.session()
    la = await by_name(session, "a")
    la.file = None  # the single column lets go; the list keeps its reference
    await session.commit()
    await session.close()
    assert await _contents(db, "a") == (None, [b"own"])
    await assert_consistent(db, files)


async def test_a_rows_single_file_moved_into_its_own_list(db: Db, files: FaultyBackend) -> None:
    await committed(db, "a", b"own")
    session = db.session()
    la = await by_name(session, "a")
    la.attachments, la.file = [la.file], None
    await session.commit()
    await session.close()
    assert await _contents(db, "a") == (None, [b"own"])
    assert len(files.paths()) == 1
    await assert_consistent(db, files)


async def test_a_new_row_given_a_kept_file_in_both_columns_gets_two_copies(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    source = (await loaded(db, "a")).file
    session = db.session()
    session.add(Document(name="n", file=source, attachments=[source]))
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    assert len(files.paths()) == 3
    await delete_named(db, "a")
    assert a.file.path not in files.paths()
    assert await _contents(db, "n") == (b"A", [b"A"])
    await assert_consistent(db, files)


async def test_a_bulk_update_giving_a_rows_single_file_to_its_own_list_is_refused(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"own")
    row = await loaded(db, "a")
    session = db.session()
    with pytest.raises(ConfigurationError, match="another row references"):
        await session.execute(update(Document), [{"id": row.id, "attachments": [row.file]}])
    await session.rollback()
    await session.close()
    assert files.paths() == {a.file.path}
    await assert_consistent(db, files)


async def test_a_list_holding_the_rows_own_single_file_then_cleared_unloaded(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"own")
    session = db.session()
    la = await by_name(session, "a")
    la.attachments = [la.file]
    await session.commit()
    await session.close()
    session = db.session()
    rows = await session.scalars(
        select(Document).options(defer(Document.attachments)).where(Document.name == "a")
    )
    await session.run_sync(lambda s: setattr(rows[0], "file", None))
    await session.commit()
    await session.close()
    await assert_consistent(db, files)
    assert await _contents(db, "a") == (None, [b"own"])


async def test_a_list_holding_the_rows_own_single_file_then_bulk_cleared(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"own")
    session = db.session()
    la = await by_name(session, "a")
    la.attachments = [la.file]
    await session.commit()
    await session.execute(update(Document).where(Document.name == "a").values(file=None))
    await session.commit()
    await session.close()
    await assert_consistent(db, files)
    assert await _contents(db, "a") == (None, [b"own"])


async def test_a_rows_single_column_given_its_own_list_item_then_list_cleared_unloaded(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(Document(name="a", attachments=[FileObject(filename="x.txt", content=b"x")]))
    await session.commit()
    await session.close()
    session = db.session()
    la = await by_name(session, "a")
    la.file = la.attachments[0]
    await session.commit()
    await session.close()
    session = db.session()
    rows = await session.scalars(
        select(Document).options(defer(Document.file)).where(Document.name == "a")
    )
    await session.run_sync(lambda s: setattr(rows[0], "attachments", None))
    await session.commit()
    await session.close()
    await assert_consistent(db, files)
    assert await _contents(db, "a") == (b"x", [])


# == the giver deleted ==========================================================================


async def test_given_then_giver_deleted_in_the_same_flush_moves(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"inherited")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.file = la.file
    await session.delete(la)
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).file.path == a.file.path  # a move: no copy made
    assert files.paths() == {a.file.path}
    assert await _contents(db, "b") == (b"inherited", [])
    await assert_consistent(db, files)


async def test_given_then_giver_deleted_in_a_later_flush_keeps_the_copy(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"inherited")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.file = la.file
    await session.flush()  # a still keeps it: a copy
    copy_path = lb.file.path
    assert copy_path != a.file.path
    await session.delete(la)
    await session.commit()
    await session.close()
    assert files.paths() == {copy_path}
    assert await _contents(db, "b") == (b"inherited", [])
    await assert_consistent(db, files)


async def test_giver_deleted_then_given_in_a_later_flush_moves(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"inherited")
    await plain(db, "b")
    await plain(db, "c")
    session = db.session()
    la, lb, lc = await _rows(session, "abc")
    await session.delete(la)
    await session.flush()
    lb.file = la.file  # the deleted row's file: free, it moves
    await session.flush()
    lc.file = la.file  # b took it: c gets a copy
    new = Document(name="d", attachments=[la.file])  # and so does a new row's list
    session.add(new)
    await session.commit()
    await session.close()
    assert lb.file.path == a.file.path
    assert lc.file.path != a.file.path and new.attachments[0].path != a.file.path
    await assert_no_shared_object(db)
    assert len(files.paths()) == 3
    for name in ("b", "c"):
        assert await _contents(db, name) == (b"inherited", [])
    await delete_named(db, "b")
    assert await _contents(db, "d") == (None, [b"inherited"])
    await assert_consistent(db, files)


async def test_giver_deleted_then_given_and_the_taker_deleted_too(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"gone")
    await plain(db, "b")
    kept = await committed(db, "kept", b"kept")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    await session.delete(la)
    await session.flush()
    lb.file = la.file
    await session.flush()
    await session.delete(lb)  # the taker goes as well: nobody references the file
    await session.commit()
    await session.close()
    assert files.paths() == {kept.file.path}
    await assert_consistent(db, files)


async def test_a_file_given_up_to_two_rows_in_one_flush(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"split")
    await plain(db, "b")
    await plain(db, "c")
    session = db.session()
    la, lb, lc = await _rows(session, "abc")
    lb.file = la.file
    lc.file = la.file
    la.file = None
    await session.commit()
    await session.close()
    assert a.file.path in {lb.file.path, lc.file.path}
    await assert_no_shared_object(db)
    assert len(files.paths()) == 2
    await delete_named(db, "b")
    assert await _contents(db, "c") == (b"split", [])
    await assert_consistent(db, files)


async def test_a_replaced_file_handed_down_to_another_row(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"v1")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.file = la.file
    la.file = FileObject(filename="v2.txt", content=b"v2")  # a gives v1 up: it moves
    await session.commit()
    await session.close()
    assert lb.file.path == a.file.path
    assert files.paths() == {a.file.path, la.file.path}
    assert await _contents(db, "a") == (b"v2", [])
    assert await _contents(db, "b") == (b"v1", [])
    await assert_consistent(db, files)


async def test_a_move_then_rollback_deletes_nothing(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"stays")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.file, la.file = la.file, None
    await session.flush()
    lb.file = FileObject(filename="n.txt", content=b"n")  # gives the moved file up again
    await session.flush()
    await session.rollback()
    await session.close()
    assert files.paths() == {a.file.path}
    assert await _contents(db, "a") == (b"stays", [])
    assert await _contents(db, "b") == (None, [])
    await assert_consistent(db, files)


# == SAVEPOINTs ================================================================================


async def test_a_copy_to_a_loaded_row_in_a_rolled_back_savepoint(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    nested = await _nested(db, session)
    lb.file = la.file
    await session.flush()
    assert len(files.paths()) == 3
    await _end(db, nested, commit=False)
    assert files.paths() == {a.file.path, b.file.path}
    await session.commit()
    await session.close()
    wait_for_cleanup()
    assert files.paths() == {a.file.path, b.file.path}
    assert await _contents(db, "b") == (b"B", [])
    await assert_consistent(db, files)


async def test_a_move_in_a_rolled_back_savepoint(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    nested = await _nested(db, session)
    lb.file, la.file = la.file, None  # b's own file is replaced, a's moves
    await session.flush()
    await _end(db, nested, commit=False)
    await session.commit()
    await session.close()
    assert files.paths() == {a.file.path, b.file.path}
    assert await _contents(db, "a") == (b"A", [])
    assert await _contents(db, "b") == (b"B", [])
    await assert_consistent(db, files)


async def test_a_move_in_a_released_savepoint_then_the_outer_rolled_back(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    nested = await _nested(db, session)
    lb.file, la.file = la.file, None
    lc = Document(name="c", file=lb.file)  # b keeps it now: a copy
    session.add(lc)
    await session.flush()
    await _end(db, nested, commit=True)
    await session.rollback()
    await session.close()
    assert files.paths() == {a.file.path, b.file.path}
    assert await _contents(db, "a") == (b"A", [])
    assert await _contents(db, "b") == (b"B", [])
    await assert_consistent(db, files)


async def test_a_move_in_the_outer_then_a_copy_in_a_savepoint(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    await plain(db, "c")
    await plain(db, "d")
    session = db.session()
    la, lb, lc, ld = await _rows(session, "abcd")
    lb.file, la.file = la.file, None
    await session.flush()
    nested = await _nested(db, session)
    lc.file = lb.file  # b keeps it: a copy, rolled back with the savepoint
    await session.flush()
    await _end(db, nested, commit=False)
    nested = await _nested(db, session)
    ld.file = lb.file  # again, released this time
    await session.flush()
    await _end(db, nested, commit=True)
    await session.commit()
    await session.close()
    assert lb.file.path == a.file.path and ld.file.path != a.file.path
    assert files.paths() == {a.file.path, ld.file.path}
    assert await _contents(db, "c") == (None, [])
    await delete_named(db, "b")
    assert await _contents(db, "d") == (b"A", [])
    await assert_consistent(db, files)


async def test_a_file_given_up_in_the_outer_taken_in_a_rolled_back_savepoint_moves_later(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    await plain(db, "c")
    session = db.session()
    la, lb, lc = await _rows(session, "abc")
    moving = la.file
    la.file = None
    await session.flush()
    nested = await _nested(db, session)
    lb.file = moving  # a move inside the savepoint...
    await session.flush()
    await _end(db, nested, commit=False)  # ...undone: the file is free again
    lc.file = moving
    await session.commit()
    await session.close()
    assert lc.file.path == a.file.path and files.paths() == {a.file.path}
    assert await _contents(db, "c") == (b"A", [])
    assert await _contents(db, "b") == (None, [])
    await assert_consistent(db, files)


async def test_a_file_given_up_in_a_rolled_back_savepoint_is_copied_afterwards(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    moving = la.file
    nested = await _nested(db, session)
    la.file = None
    await session.flush()
    await _end(db, nested, commit=False)  # a holds it again
    lb.file = moving
    await session.commit()
    await session.close()
    assert lb.file.path != a.file.path
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"A", [])
    await assert_consistent(db, files)


async def test_new_content_in_the_outer_copied_in_a_savepoint(db: Db, files: FaultyBackend) -> None:
    await plain(db, "b")
    session = db.session()
    lb = await by_name(session, "b")
    a = Document(name="a", file=FileObject(filename="n.txt", content=b"fresh"))
    session.add(a)
    await session.flush()
    nested = await _nested(db, session)
    lb.file = a.file
    await session.flush()
    await _end(db, nested, commit=True)
    nested = await _nested(db, session)
    lb.attachments = [a.file]
    await session.flush()
    await _end(db, nested, commit=False)
    await session.commit()
    await session.close()
    copy_path = (await loaded(db, "b")).file.path
    assert files.paths() == {a.file.path, copy_path} and copy_path != a.file.path
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"fresh", [])
    await assert_consistent(db, files)


# == expire_on_commit=True =====================================================================


async def test_an_expiring_session_copies_a_committed_rows_file(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"expired")
    await plain(db, "b")
    session = expiring_session(db)
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    await session.run_sync(lambda s: setattr(lb, "attachments", []))
    await session.commit()  # both rows expired
    await session.run_sync(lambda s: setattr(lb, "file", la.file))  # reloads both first
    await session.commit()
    copy_path = await session.run_sync(lambda s: lb.file.path)
    assert copy_path != a.file.path
    captured = await session.run_sync(lambda s: la.file)
    await session.commit()  # expired again; ``captured`` is the old instance
    await session.run_sync(lambda s: setattr(lb, "attachments", [captured]))
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    assert len(files.paths()) == 3
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"expired", [b"expired"])
    await assert_consistent(db, files)


async def test_an_expiring_session_moves_a_captured_file(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"expired")
    await plain(db, "b")
    session = expiring_session(db)
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    captured = await session.run_sync(lambda s: la.file)
    await session.commit()  # expired: a.file is loaded again, as another instance

    def move(_s: Session) -> None:
        lb.file = captured
        la.file = None

    await session.run_sync(move)
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).file.path == a.file.path
    assert files.paths() == {a.file.path}
    assert await _contents(db, "b") == (b"expired", [])
    await assert_consistent(db, files)


async def test_an_expiring_session_given_a_file_another_transaction_replaced(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"v1")
    await plain(db, "b")
    session = expiring_session(db)
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    captured = await session.run_sync(lambda s: la.file)
    await session.commit()
    other = db.session()
    (await by_name(other, "a")).file = FileObject(filename="v2.txt", content=b"v2")
    await other.commit()  # v1 is deleted after this commit
    await other.close()

    def move(_s: Session) -> None:
        lb.file = captured  # v1: neither a move (a holds v2 now) nor copyable
        la.file = None

    await session.run_sync(move)
    with pytest.raises(ObjectNotFound, match=captured.path):  # the copy finds no source
        await session.commit()
    await session.rollback()
    await session.close()
    assert await _contents(db, "a") == (b"v2", [])
    assert await _contents(db, "b") == (None, [])
    await assert_consistent(db, files)


# == a failed flush, rolled back and retried ======================================================


@pytest.mark.parametrize("failing", ["upload", "copy"])
async def test_a_copy_in_a_failed_flush_is_retried_after_rollback(
    db: Db, files: FaultyBackend, failing: str
) -> None:
    a = await committed(db, "a", b"source")
    source = (await loaded(db, "a")).file
    session = db.session()
    c = Document(name="c", file=source)  # a copy
    d = Document(name="d", file=FileObject(filename="d.txt", content=b"d"))
    session.add_all([c, d])
    # Plain uploads go first, copies after: fail the one or the other.
    files.fail_on = {files.writes + (1 if failing == "upload" else 2)}
    with pytest.raises(BackendError, match="injected failure"):
        await session.commit()
    await session.rollback()
    assert files.paths() == {a.file.path}
    files.fail_on = set()
    session.add_all([c, d])  # the same objects again
    await session.commit()
    await session.close()
    assert c.file.path != a.file.path
    assert files.paths() == {a.file.path, c.file.path, d.file.path}
    await delete_named(db, "a")
    assert await _contents(db, "c") == (b"source", [])
    assert await _contents(db, "d") == (b"d", [])
    await assert_consistent(db, files)


async def test_new_content_for_two_rows_retried_after_the_copy_failed(
    db: Db, files: FaultyBackend
) -> None:
    upload = FileObject(filename="u.txt", content=b"shared upload")
    one, two = Document(name="one", file=upload), Document(name="two", attachments=[upload])
    session = db.session()
    session.add_all([one, two])
    files.fail_on = {files.writes + 2}  # the copy
    with pytest.raises(BackendError, match="injected failure"):
        await session.commit()
    await session.rollback()
    assert files.paths() == set()
    files.fail_on = set()
    session.add_all([one, two])
    await session.commit()
    await session.close()
    assert one.file.path != two.attachments[0].path and len(files.paths()) == 2
    await delete_named(db, "one")
    assert await _contents(db, "two") == (None, [b"shared upload"])
    await assert_consistent(db, files)


async def test_a_copy_to_a_loaded_row_retried_after_a_failed_flush(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.file = la.file
    files.fail_on = {files.writes + 1}
    with pytest.raises(BackendError, match="injected failure"):
        await session.commit()
    await session.rollback()
    files.fail_on = set()
    assert files.paths() == {a.file.path, b.file.path}
    await session.run_sync(lambda s: setattr(lb, "file", la.file))  # reloaded: assign again
    await session.commit()
    await session.close()
    copy_path = (await loaded(db, "b")).file.path
    assert files.paths() == {a.file.path, copy_path}
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"A", [])
    await assert_consistent(db, files)


async def test_a_move_in_a_flush_the_database_refuses_is_retried(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.file, la.file = la.file, None
    copied = Document(name="a", file=lb.file)  # given it too; the name is taken: INSERT fails
    session.add(copied)
    with pytest.raises(DatabaseIntegrityError):
        await session.commit()
    await session.rollback()
    assert files.paths() == {a.file.path}  # the move's file stays, the copy is gone

    def move(_s: Session) -> None:
        lb.file, la.file = la.file, None

    await session.run_sync(move)
    copied.name = "copied"
    session.add(copied)  # still holding the copy it was given: uploaded again
    await session.commit()
    await session.close()
    # The file a gives up moves to one of the two rows given it; the other gets a copy.
    paths = {(await loaded(db, n)).file.path for n in ("b", "copied")}
    assert a.file.path in paths and len(paths) == 2
    assert files.paths() == paths
    assert await _contents(db, "b") == (b"A", [])
    assert await _contents(db, "copied") == (b"A", [])
    await assert_consistent(db, files)


# == KEEP_REPLACED_FILES =======================================================================


async def test_keep_replaced_files_with_a_copy_and_a_move(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    await plain(db, "c")
    session = db.session()
    session.raw.info[KEEP_REPLACED_FILES] = True
    la, lb, lc = await _rows(session, "abc")
    lb.file = la.file  # a keeps it: a copy
    await session.commit()
    assert lb.file.path != a.file.path
    lc.file, la.file = la.file, None  # a move: kept (and still referenced)
    await session.commit()
    await session.close()
    assert lc.file.path == a.file.path
    assert files.paths() == {a.file.path, lb.file.path}
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


async def test_keep_replaced_files_turned_on_after_a_file_was_given_up(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    moving = la.file
    la.file = None
    await session.flush()  # given up (obsolete, to be deleted after the commit)
    session.raw.info[KEEP_REPLACED_FILES] = True
    lb.file = moving  # free in this transaction: a move
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).file.path == a.file.path
    await assert_consistent(db, files)
    assert await _contents(db, "b") == (b"A", [])


async def test_keep_replaced_files_turned_off_after_a_file_was_given_up(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    session = db.session()
    session.raw.info[KEEP_REPLACED_FILES] = True
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    moving = la.file
    la.file = None
    await session.flush()  # given up, but kept: never deleted by this transaction
    session.raw.info[KEEP_REPLACED_FILES] = False
    lb.file = moving
    await session.commit()
    await session.close()
    assert await _contents(db, "b") == (b"A", [])
    b_path = (await loaded(db, "b")).file.path
    # Either a move, or a copy with the kept original left for gc; never a shared object.
    assert files.paths() in ({a.file.path}, {a.file.path, b_path})
    session = db.session()
    orphans = await session.run_sync(
        lambda s: find_orphans(s, [Document.file, Document.attachments], files, grace=timedelta(0))
    )
    dangling = await session.run_sync(lambda s: find_dangling(s, [Document]))
    await session.close()
    assert dangling == [] and {o.path for o in orphans} <= {a.file.path}


# == merge =====================================================================================


async def test_merging_a_detached_row_given_a_file_the_session_gives_up_moves_it(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    detached_a, detached_b = await loaded(db, "a"), await loaded(db, "b")
    detached_b.file = detached_a.file
    session = db.session()
    la = await by_name(session, "a")
    la.file = None
    await session.run_sync(lambda s: s.merge(detached_b))
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).file.path == a.file.path
    assert files.paths() == {a.file.path}
    assert await _contents(db, "b") == (b"A", [])
    await assert_consistent(db, files)


async def test_merging_two_detached_rows_swapping_files(db: Db, files: FaultyBackend) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    da, db_ = await loaded(db, "a"), await loaded(db, "b")
    da.file, db_.file = db_.file, da.file
    session = db.session()

    def merge(s: Session) -> None:
        with s.no_autoflush:  # else merging b flushes a first: a copy of b's file, then a move
            s.merge(da)
            s.merge(db_)

    await session.run_sync(merge)
    await session.commit()
    await session.close()
    assert files.paths() == {a.file.path, b.file.path}
    assert await _contents(db, "a") == (b"B", [])
    assert await _contents(db, "b") == (b"A", [])
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


async def test_merging_a_detached_row_whose_list_holds_a_kept_file_twice(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    detached_a, detached_b = await loaded(db, "a"), await loaded(db, "b")
    detached_b.attachments = [detached_a.file, detached_a.file]
    detached_b.file = detached_a.file
    session = db.session()
    await session.run_sync(lambda s: s.merge(detached_b))
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    assert len(files.paths()) == 4
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"A", [b"A", b"A"])
    assert a.file.path not in files.paths()
    await assert_consistent(db, files)


async def test_merging_a_new_row_by_primary_key_given_a_deleted_rows_file(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    b = await committed(db, "b", b"B")
    detached_a = await loaded(db, "a")
    session = db.session()
    await session.delete(await by_name(session, "a"))
    await session.flush()
    transient = Document(id=b.id, name="b", file=detached_a.file)
    await session.run_sync(lambda s: s.merge(transient))
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).file.path == a.file.path  # a deleted row's file moves
    assert files.paths() == {a.file.path}
    assert await _contents(db, "b") == (b"A", [])
    await assert_consistent(db, files)


# == another model, another path function, another backend =======================================


async def test_a_documents_file_given_to_a_report_is_copied_by_its_path_function(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"to report")
    session = db.session()
    la = await by_name(session, "a")
    report = Report(name="r", file=la.file)
    session.add(report)
    await session.commit()
    await session.close()
    assert report.file.path == "custom/r/a.txt" != a.file.path
    assert report.file.get_content() == b"to report"
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    session = db.session()
    (reloaded,) = await session.scalars(select(Report))
    await session.close()
    assert reloaded.file.get_content() == b"to report"
    await assert_consistent(db, files)


async def test_a_documents_file_moved_to_a_report_keeps_its_path(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"moved")
    session = db.session()
    la = await by_name(session, "a")
    report = Report(name="r", file=la.file)
    la.file = None
    session.add(report)
    await session.commit()
    await session.close()
    assert report.file.path == a.file.path and files.paths() == {a.file.path}
    await delete_named(db, "a")
    assert report.file.get_content() == b"moved"
    await assert_consistent(db, files)


async def test_a_copy_whose_path_function_names_the_source_fails_and_keeps_it(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="a", file=FileObject(path="custom/r/x.txt", content=b"source"))
    session.add(doc)
    await session.commit()
    assert doc.file.path == "custom/r/x.txt"
    session.add(Report(name="r", file=doc.file))  # the copy would go to custom/r/x.txt
    with pytest.raises(StoreroomError, match="custom/r/x.txt"):
        await session.commit()
    await session.rollback()
    await session.close()
    assert files.paths() == {"custom/r/x.txt"}  # nothing overwritten, nothing deleted
    assert await _contents(db, "a") == (b"source", [])
    await assert_consistent(db, files)


async def test_a_copy_into_a_column_of_another_backend(
    db: Db, files: FaultyBackend, vault: FaultyBackend
) -> None:
    a = await committed(db, "a", b"cross-backend")
    session = db.session()
    la = await by_name(session, "a")
    archive = Archive(name="ar", file=la.file)
    session.add(archive)
    await session.commit()
    await session.close()
    copy = archive.file
    assert copy.backend in ("files", "vault")
    assert (copy.backend, copy.path) != ("files", a.file.path)
    assert storages.get_backend(copy.backend).exists(copy.path)
    await delete_named(db, "a")
    session = db.session()
    (reloaded,) = await session.scalars(select(Archive))
    await session.close()
    assert reloaded.file.get_content() == b"cross-backend"
    await _assert_vault_consistent(db, files, vault)


async def test_new_content_for_two_columns_of_two_backends(
    db: Db, files: FaultyBackend, vault: FaultyBackend
) -> None:
    upload = FileObject(filename="both.txt", content=b"both")
    session = db.session()
    doc, archive = Document(name="d", file=upload), Archive(name="ar", file=upload)
    session.add_all([doc, archive])
    await session.commit()
    await session.close()
    assert doc.file.backend == "files" and archive.file.backend == "vault"
    assert files.paths() == {doc.file.path} and vault.paths() == {archive.file.path}
    await delete_named(db, "d")
    assert archive.file.get_content() == b"both"
    await _assert_vault_consistent(db, files, vault)


async def test_a_file_moved_between_backends_columns_and_back(
    db: Db, files: FaultyBackend, vault: FaultyBackend
) -> None:
    a = await committed(db, "a", b"roaming")
    session = db.session()
    la = await by_name(session, "a")
    archive = Archive(name="ar")
    session.add(archive)
    await session.commit()
    archive.file, la.file = la.file, None  # a move: the object stays where it is
    await session.commit()
    assert (archive.file.backend, archive.file.path) == ("files", a.file.path)
    la.file, archive.file = archive.file, None
    await session.commit()
    await session.close()
    assert files.paths() == {a.file.path} and vault.paths() == set()
    assert await _contents(db, "a") == (b"roaming", [])
    await _assert_vault_consistent(db, files, vault)


# == more hand-overs ===========================================================================


async def test_a_whole_list_handed_over_moves_its_files(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    a = Document(
        name="a",
        attachments=[FileObject(filename=f"{i}.txt", content=str(i).encode()) for i in range(3)],
    )
    b = Document(name="b")
    session.add_all([a, b])
    await session.commit()
    before = set(files.paths())
    b.attachments = a.attachments  # b gets its own list of the same files...
    a.attachments = []  # ...which a gives up: moves
    await session.commit()
    await session.close()
    assert files.paths() == before
    await delete_named(db, "a")
    assert await _contents(db, "b") == (None, [b"0", b"1", b"2"])
    await assert_consistent(db, files)


@pytest.mark.filterwarnings("ignore:The `objects` parameter of `Session.flush`")
@pytest.mark.parametrize("first", ["taker", "giver"])
async def test_a_partial_flush_of_one_side_of_a_move(
    db: Db, files: FaultyBackend, first: str
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    lb.file, la.file = la.file, None
    # The taker flushed alone sees a keep the file (a copy); the giver flushed first frees it.
    await session.run_sync(lambda s: s.flush([lb] if first == "taker" else [la]))
    await session.commit()
    await session.close()
    b_path = (await loaded(db, "b")).file.path
    assert (b_path == a.file.path) == (first == "giver")
    assert files.paths() == {b_path}
    assert await _contents(db, "b") == (b"A", [])
    await assert_consistent(db, files)


async def test_a_deleted_giver_whose_file_column_was_never_loaded(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"A")
    await plain(db, "b")
    detached = (await loaded(db, "a")).file
    session = db.session()
    rows = await session.scalars(
        select(Document).options(defer(Document.file)).where(Document.name == "a")
    )
    lb = await by_name(session, "b")
    await session.delete(rows[0])
    lb.file = detached
    await session.commit()
    await session.close()
    b_path = (await loaded(db, "b")).file.path
    assert files.paths() == {b_path}  # moved or copied: either way only b's object is left
    assert await _contents(db, "b") == (b"A", [])
    await assert_consistent(db, files)


async def test_a_copy_whose_path_function_names_another_rows_object_fails_and_keeps_it(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    first = await committed(db, "r", b"first report", Report)  # custom/r/r.txt
    session = db.session()
    la = await by_name(session, "a")
    la.file.filename = "r.txt"  # metadata only: written, same object
    await session.run_sync(lambda s: s.flush())
    second = Report(name="r", file=la.file)  # its copy would go to custom/r/r.txt as well
    session.add(second)
    with pytest.raises(StoreroomError, match="custom/r/r.txt"):
        await session.commit()
    await session.rollback()
    await session.close()
    assert files.paths() == {a.file.path, first.file.path}
    assert first.file.get_content() == b"first report"
    await assert_consistent(db, files)


async def test_a_list_held_across_a_rollback_and_assigned_again(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"A")
    session = db.session()
    session.add(Document(name="b", attachments=[]))
    await session.commit()
    await session.close()
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    held = lb.attachments  # its committed state is marked at the flush below
    held.append(la.file)  # a move...
    la.file = None
    await session.flush()
    await session.rollback()  # ...undone: a holds the file again
    await session.run_sync(lambda s: setattr(lb, "attachments", held))  # b wants it too
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert await _contents(db, "b") == (None, [b"A"])
    await assert_consistent(db, files)


async def test_a_giver_deleted_by_a_bulk_statement_then_its_file_taken(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    await plain(db, "c")
    session = db.session()
    la, lb, lc = await _rows(session, "abc")
    moving = la.file
    await session.execute(delete(Document).where(Document.name == "a"))
    lb.file = moving  # the deleted row's file is free: a move
    await session.flush()
    lc.attachments = [moving]  # b holds it now: a copy
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).file.path == a.file.path
    assert (await loaded(db, "c")).attachments[0].path != a.file.path
    assert len(files.paths()) == 2
    await delete_named(db, "b")
    assert await _contents(db, "c") == (None, [b"A"])
    await assert_consistent(db, files)


async def test_a_copy_in_a_savepoint_inside_a_released_one_rolled_back_with_its_parent(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    await plain(db, "c")
    session = db.session()
    la, lb, lc = await _rows(session, "abc")
    outer = await _nested(db, session)
    inner = await _nested(db, session)
    lb.file = la.file  # a copy, in the inner SAVEPOINT
    await session.flush()
    await _end(db, inner, commit=True)
    lc.file, la.file = la.file, None  # a move, in the outer SAVEPOINT
    await session.flush()
    assert len(files.paths()) == 2
    await _end(db, outer, commit=False)  # both undone: the copy is deleted, the file stays
    assert files.paths() == {a.file.path}
    await session.commit()
    await session.close()
    assert await _contents(db, "a") == (b"A", [])
    assert await _contents(db, "b") == (None, [])
    assert await _contents(db, "c") == (None, [])
    await assert_consistent(db, files)


async def test_a_copy_made_in_the_outer_moved_in_a_rolled_back_savepoint(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    await plain(db, "c")
    session = db.session()
    la, lb, lc = await _rows(session, "abc")
    lb.file = la.file  # a copy, uploaded in the outer transaction
    await session.flush()
    copy_path = lb.file.path
    nested = await _nested(db, session)
    lc.file, lb.file = lb.file, None  # the copy moves to c inside the SAVEPOINT...
    await session.flush()
    await _end(db, nested, commit=False)  # ...and back to b: it must not be deleted
    assert files.paths() == {a.file.path, copy_path}
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).file.path == copy_path
    await delete_named(db, "a")
    assert await _contents(db, "b") == (b"A", [])
    assert await _contents(db, "c") == (None, [])
    await assert_consistent(db, files)


async def test_keep_replaced_files_turned_on_before_a_bulk_update_takes_a_given_up_file(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"A")
    await plain(db, "b")
    session = db.session()
    la, lb = await by_name(session, "a"), await by_name(session, "b")
    moving = la.file
    la.file = None
    await session.flush()
    session.raw.info[KEEP_REPLACED_FILES] = True
    await session.execute(update(Document), [{"id": lb.id, "file": moving}])
    await session.commit()
    await session.close()
    await assert_consistent(db, files)
    assert await _contents(db, "b") == (b"A", [])


# == a session joined to an external transaction (SQLAlchemy's test-suite recipe) ================


async def _joined(db: Db) -> tuple[Any, Any, SessionAdapter]:
    """A connection with a transaction begun, and a session joined to it with SAVEPOINTs."""
    if db.is_async:
        connection = await db.engine.connect()
        external = await connection.begin()
        raw: Any = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
    else:
        connection = db.engine.connect()
        external = connection.begin()
        raw = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
    return connection, external, SessionAdapter(raw)


async def test_a_copy_in_a_session_joined_to_an_external_transaction_rolled_back(
    db: Db, files: FaultyBackend
) -> None:
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    connection, external, session = await _joined(db)
    try:
        la, lb = await by_name(session, "a"), await by_name(session, "b")
        lb.file = la.file  # a copy
        await session.flush()
        await session.delete(la)
        await session.commit()  # releases the session's SAVEPOINT; nothing is committed
        await session.close()
    finally:
        if db.is_async:
            await external.rollback()
            await connection.close()
        else:
            external.rollback()
            connection.close()
    wait_for_cleanup()
    assert await _contents(db, "b") == (None, [])
    assert files.paths() == {a.file.path}, "the restored row's file, and nothing else"
    assert await _contents(db, "a") == (b"A", [])
    await assert_consistent(db, files)


async def test_a_session_joined_to_an_external_transaction_deletes_after_that_commits(
    db: Db, files: FaultyBackend
) -> None:
    """The session's commit releases its SAVEPOINT only: what it gave up is deleted once
    the connection's own transaction commits, not before."""
    a = await committed(db, "a", b"A")
    await plain(db, "b")
    connection, external, session = await _joined(db)
    try:
        la, lb = await by_name(session, "a"), await by_name(session, "b")
        lb.file = la.file  # a copy
        await session.flush()
        await session.delete(la)
        await session.commit()
        await session.close()
        wait_for_cleanup()
        assert a.file.path in files.paths(), "deleted before anything was committed"
        assert len(files.paths()) == 2
        if db.is_async:
            await external.commit()
        else:
            external.commit()
    finally:
        if db.is_async:
            await connection.close()
        else:
            connection.close()
    wait_for_cleanup()
    assert a.file.path not in files.paths()
    assert await _contents(db, "b") == (b"A", [])
    await assert_consistent(db, files)
