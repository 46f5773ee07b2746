"""A stored object belongs to one row: a file given to a second row is copied, never shared.

Deleting a row deletes its files after the commit. If two rows referenced one object,
deleting either would leave the other pointing at nothing, so a row given a file that
another row keeps gets its own copy during the flush (create-only, verified against the
recorded checksum, deleted again if the transaction does not commit). A file that its row
gives up in the same transaction moves instead. Each scenario runs on SQLite, PostgreSQL
and MariaDB, sync and async, and ends with the store holding exactly what rows reference.
"""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from storeroom import ConfigurationError, FileObject, IntegrityError, ObjectNotFound
from storeroom.orm import wait_for_cleanup
from tests.orm.conftest import (
    Db,
    Document,
    FaultyBackend,
    assert_consistent,
    by_name,
    committed,
    loaded,
)


async def test_a_file_given_to_a_second_row_is_copied_and_outlives_the_first(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    first = Document(name="first", file=FileObject(filename="a.txt", content=b"shared?"))
    session.add(first)
    await session.commit()
    second = Document(name="second", file=first.file)
    session.add(second)
    await session.commit()
    assert second.file is not first.file
    assert second.file.path != first.file.path
    assert second.file.checksum == first.file.checksum and second.file.size == 7
    await session.delete(first)
    await session.commit()
    await session.close()
    wait_for_cleanup()
    assert not files.exists(first.file.path)
    assert (await loaded(db, "second")).file.get_content() == b"shared?"
    await assert_consistent(db, files)


async def test_a_file_loaded_in_another_session_is_copied(db: Db, files: FaultyBackend) -> None:
    await committed(db, "source", b"from elsewhere")
    source_file = (await loaded(db, "source")).file  # its session is closed
    session = db.session()
    session.add(Document(name="target", file=source_file))
    await session.commit()
    await session.close()
    target = await loaded(db, "target")
    assert target.file.path != source_file.path
    assert sorted(o.path for o in files.list("")) == sorted([source_file.path, target.file.path])
    await assert_consistent(db, files)


async def test_new_content_given_to_two_rows_is_stored_twice(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    upload = FileObject(filename="twice.txt", content=b"one upload, two rows")
    one, two = Document(name="one", file=upload), Document(name="two", file=upload)
    session.add_all([one, two])
    await session.commit()
    assert one.file.path != two.file.path
    await session.delete(one)
    await session.commit()
    await session.close()
    wait_for_cleanup()
    assert (await loaded(db, "two")).file.get_content() == b"one upload, two rows"
    await assert_consistent(db, files)


async def test_a_file_appended_to_another_rows_list_is_copied(db: Db, files: FaultyBackend) -> None:
    await committed(db, "owner", b"attached")
    session = db.session()
    owner = await by_name(session, "owner")
    other = Document(name="other", attachments=[])
    session.add(other)
    await session.commit()
    other.attachments.append(owner.file)
    await session.commit()
    assert other.attachments[0] is not owner.file
    assert other.attachments[0].path != owner.file.path
    other.attachments.pop()  # the copy goes; the owner's file stays
    await session.commit()
    await session.close()
    wait_for_cleanup()
    assert (await loaded(db, "owner")).file.get_content() == b"attached"
    await assert_consistent(db, files)


async def test_a_file_its_row_gives_up_moves_without_a_copy(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    a, b = Document(name="a", file=FileObject(filename="m.txt", content=b"m")), Document(name="b")
    session.add_all([a, b])
    await session.commit()
    path = a.file.path
    b.file, a.file = a.file, None  # in one flush
    await session.commit()
    assert b.file.path == path
    a.file = FileObject(filename="n.txt", content=b"n")
    await session.flush()
    restored = b.file
    b.file = None
    await session.flush()
    a.file = restored  # given up by b earlier in this transaction: moves back
    await session.commit()
    await session.close()
    assert a.file.path == path and [o.path for o in files.list("")] == [path]
    await assert_consistent(db, files)


async def test_a_rolled_back_copy_is_deleted_and_made_again_on_retry(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "kept", b"keep me")
    kept = (await loaded(db, "kept")).file
    session = db.session()
    session.add(Document(name="kept", file=kept))  # the name is taken: the INSERT fails
    with pytest.raises(DatabaseIntegrityError):
        await session.commit()
    await session.rollback()
    await session.close()
    assert [o.path for o in files.list("")] == [kept.path]  # the copy is gone
    session = db.session()
    retry = Document(name="retry", file=kept)
    session.add(retry)
    await session.commit()
    await session.close()
    assert retry.file.path != kept.path and retry.file.get_content() == b"keep me"
    await assert_consistent(db, files)


async def test_a_copy_of_a_missing_object_fails_the_flush_and_writes_nothing(
    db: Db, files: FaultyBackend
) -> None:
    gone = (await committed(db, "gone", b"soon deleted")).file
    files.delete(gone.path)  # behind the database's back
    session = db.session()
    session.add(Document(name="dangling", file=gone))
    with pytest.raises(ObjectNotFound):
        await session.commit()
    await session.rollback()
    await session.close()
    assert list(files.list("")) == []
    session = db.session()
    names = await session.scalars(select(Document.name))
    await session.close()
    assert names == ["gone"]


async def test_a_copy_of_corrupted_bytes_fails_the_flush_and_leaves_no_copy(
    db: Db, files: FaultyBackend
) -> None:
    source = (await committed(db, "source", b"original bytes")).file
    files.put(source.path, b"tampered bytes")  # same size, other bytes
    session = db.session()
    session.add(Document(name="copy", file=source))
    with pytest.raises(IntegrityError, match="checksum"):
        await session.commit()
    await session.rollback()
    await session.close()
    assert [o.path for o in files.list("")] == [source.path]


async def test_bulk_statements_refuse_a_file_another_row_keeps(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "held", b"held")
    await committed(db, "other", b"other")
    held, other = await loaded(db, "held"), await loaded(db, "other")
    session = db.session()
    with pytest.raises(ConfigurationError, match="another row references"):
        await session.execute(insert(Document), [{"name": "bulk", "file": held.file}])
    await session.rollback()
    with pytest.raises(ConfigurationError, match="another row references"):
        await session.execute(update(Document), [{"id": other.id, "file": held.file}])
    await session.rollback()
    # Setting a row's own file again, and moving one in the same statement, are allowed.
    await session.execute(
        update(Document),
        [{"id": held.id, "file": None}, {"id": other.id, "file": held.file}],
    )
    await session.execute(update(Document), [{"id": other.id, "file": held.file}])
    await session.commit()
    await session.close()
    assert (await loaded(db, "other")).file.get_content() == b"held"
    assert sorted(files.paths()) == [held.file.path]  # other's own file was replaced
    # A file given up earlier in the transaction moves into an inserted row.
    session = db.session()
    other = await by_name(session, "other")
    moving = other.file
    other.file = None
    await session.flush()
    await session.execute(insert(Document), [{"name": "inserted", "file": moving}])
    await session.commit()
    await session.close()
    assert (await loaded(db, "inserted")).file.get_content() == b"held"
    assert sorted(files.paths()) == [moving.path]
    await assert_consistent(db, files)


async def test_a_copy_made_in_a_rolled_back_savepoint_is_deleted(
    db: Db, files: FaultyBackend
) -> None:
    kept = (await committed(db, "kept", b"kept")).file
    source_file = (await loaded(db, "kept")).file
    session = db.session()
    nested = session.begin_nested()
    if db.is_async:
        nested = await nested
    session.add(Document(name="copy", file=source_file))
    await session.flush()
    assert len(files.paths()) == 2
    if db.is_async:
        await nested.rollback()
    else:
        nested.rollback()
    assert files.paths() == {kept.path}
    await session.commit()
    await session.close()
    await assert_consistent(db, files)


async def test_a_file_given_up_in_one_flush_and_taken_in_the_next_moves(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "giver", b"g")
    session = db.session()
    giver = await by_name(session, "giver")
    moving = giver.file
    giver.file = None
    await session.flush()
    taker = Document(name="taker", file=moving)
    session.add(taker)
    await session.commit()
    await session.close()
    assert taker.file is moving and files.paths() == {moving.path}
    await assert_consistent(db, files)


async def test_a_copy_of_another_rows_list_gets_copies_of_its_files(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    a = Document(name="a", attachments=[FileObject(filename="l.txt", content=b"list item")])
    b = Document(name="b")
    session.add_all([a, b])
    await session.commit()
    b.attachments = list(a.attachments or [])
    await session.commit()
    assert b.attachments is not None and a.attachments is not None
    assert b.attachments[0].path != a.attachments[0].path
    await session.delete(a)
    await session.commit()
    await session.close()
    assert (await loaded(db, "b")).attachments[0].get_content() == b"list item"
    await assert_consistent(db, files)
