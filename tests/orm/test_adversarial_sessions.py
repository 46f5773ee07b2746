"""Adversarial session use against the transaction rule (docs/models.md).

Ordinary SQLAlchemy calls (merge, make_transient, expunge, copies, in-place edits,
inheritance, cascades, deferred loading, refresh, two sessions) each checked against the
three parts of the rule: no dangling reference, no orphan of a transaction that does not
commit, no committed bytes deleted while a row references them. Cases that break the rule
today are marked ``xfail(strict=True)`` with the violation in the reason (docs/models.md
lists them); strict, so a fix shows up as a failure until its marker is removed.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, create_engine, delete, insert, select, update
from sqlalchemy.orm import (
    Mapped,
    defer,
    load_only,
    make_transient,
    make_transient_to_detached,
    mapped_column,
)
from sqlalchemy.orm.attributes import flag_modified

from storeroom import ConfigurationError, FileObject, StoredObject
from storeroom.orm import (
    StaleFileReference,
    UUIDAuditBase,
    wait_for_cleanup,
)
from tests.orm.conftest import (
    SUFFIX,
    CascadeAlbum,
    CascadeNote,
    CascadePhoto,
    Db,
    Document,
    FaultyBackend,
    Folder,
    Item,
    assert_consistent,
    assert_no_shared_object,
    by_name,
    committed,
    expiring_session,
    loaded,
    plain,
    references,
    refused,
    with_tables,
)

# -- models of this file: joined-table and single-table inheritance ---------------------------


class Asset(UUIDAuditBase):
    """The base of a joined-table hierarchy; the file column lives on the subclass table."""

    __tablename__ = f"sr_adv_asset_{SUFFIX}"

    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "asset"}


class Image(Asset):
    __tablename__ = f"sr_adv_image_{SUFFIX}"

    id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{Asset.__tablename__}.id", ondelete="CASCADE"), primary_key=True
    )
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="files"), nullable=True)
    __mapper_args__ = {"polymorphic_identity": "image"}


class Shape(UUIDAuditBase):
    """The base of a single-table hierarchy; only the subclass maps the file column."""

    __tablename__ = f"sr_adv_shape_{SUFFIX}"

    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "shape"}


class Circle(Shape):
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="files"), nullable=True)
    __mapper_args__ = {"polymorphic_identity": "circle"}


ADV_TABLES = [Asset.__table__, Image.__table__, Shape.__table__]


@pytest.fixture
def inheritance(db: Db) -> Iterator[Db]:
    """The ``db`` fixture plus this file's inheritance tables."""
    with with_tables(db, ADV_TABLES):
        yield db


# == what broke the rule: fixed cases assert the fix; the others are xfail (strict) ===========

# -- moves: a file one row gives up is taken by one row only ------------------------------------


async def test_a_file_given_up_once_moves_to_one_row_only(db: Db, files: FaultyBackend) -> None:
    await committed(db, "giver", b"given once")
    await plain(db, "first")
    await plain(db, "second")
    session = db.session()
    giver = await by_name(session, "giver")
    first, second = await by_name(session, "first"), await by_name(session, "second")
    moving = giver.file
    giver.file = None
    await session.flush()
    first.file = moving  # a move: giver gave it up
    await session.flush()
    second.file = moving  # first keeps it: second must get a copy
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    session = db.session()
    await session.delete(await by_name(session, "first"))
    await session.commit()
    await session.close()
    assert (await loaded(db, "second")).file.get_content() == b"given once"
    await assert_consistent(db, files)


async def test_bulk_inserts_take_a_given_up_file_once(db: Db, files: FaultyBackend) -> None:
    await committed(db, "giver", b"g")
    session = db.session()
    giver = await by_name(session, "giver")
    moving = giver.file
    giver.file = None
    await session.flush()
    await session.execute(insert(Document), [{"name": "one", "file": moving}])
    try:
        with pytest.raises(ConfigurationError, match="another row references"):
            await session.execute(insert(Document), [{"name": "two", "file": moving}])
        await session.commit()
    finally:
        await session.close()
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


async def test_a_stale_session_cannot_move_a_file_another_transaction_replaced(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "owner", b"v1")
    await plain(db, "taker")
    stale = db.session()
    owner, taker = await by_name(stale, "owner"), await by_name(stale, "taker")
    await stale.commit()  # the read transaction ends; the objects stay loaded
    other = db.session()
    (await by_name(other, "owner")).file = FileObject(filename="v2.txt", content=b"v2")
    await other.commit()  # owner's v1 is deleted after this commit
    await other.close()
    assert owner.file.path not in files.paths()
    taker.file, owner.file = owner.file, None  # a move, as the stale session sees it
    assert await refused(stale, StaleFileReference, "another transaction")
    await assert_consistent(db, files)


async def test_two_sessions_moving_one_file_to_two_rows(db: Db, files: FaultyBackend) -> None:
    await committed(db, "source", b"contested")
    await plain(db, "left")
    await plain(db, "right")
    a, b = db.session(), db.session()
    a_source, left = await by_name(a, "source"), await by_name(a, "left")
    b_source, right = await by_name(b, "source"), await by_name(b, "right")
    await b.commit()  # b's read transaction ends (SQLite: b must not block a's write)
    left.file, a_source.file = a_source.file, None
    await a.commit()
    await a.close()
    right.file, b_source.file = b_source.file, None  # b's copy of source is stale now
    assert await refused(b, StaleFileReference)
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


# -- one list object given to two rows -----------------------------------------------------------


async def test_a_list_assigned_from_another_row_is_not_shared(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    a = Document(name="a", attachments=[FileObject(filename="l.txt", content=b"list")])
    session.add(a)
    await session.commit()
    await session.close()
    await plain(db, "b")
    session = db.session()
    a, b = await by_name(session, "a"), await by_name(session, "b")
    b.attachments = a.attachments  # the very same FileList object
    assert b.attachments is not a.attachments  # b gets its own list of the same files
    a.attachments.append(FileObject(filename="m.txt", content=b"more"))
    b.attachments.append(FileObject(filename="n.txt", content=b"b's own"))  # still tracked
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    a, b = await loaded(db, "a"), await loaded(db, "b")
    assert [f.get_content() for f in a.attachments] == [b"list", b"more"]
    assert [f.get_content() for f in b.attachments] == [b"list", b"b's own"]
    session = db.session()
    await session.delete(await by_name(session, "a"))
    await session.commit()
    await session.close()
    assert [f.get_content() for f in (await loaded(db, "b")).attachments] == [b"list", b"b's own"]
    await assert_consistent(db, files)


# -- a file column never loaded on a row created in this session -------------------------------


async def test_a_file_given_to_a_row_inserted_in_this_session_is_copied(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "template", b"template")
    session = db.session()
    template = await by_name(session, "template")
    draft = Document(name="draft")
    session.add(draft)
    await session.commit()
    template.file.metadata["used"] = "yes"
    flag_modified(template, "file")
    draft.file = template.file
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


async def test_a_file_given_to_a_row_inserted_in_this_session_is_copied_without_refusal(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "template", b"template")
    session = db.session()
    template = await by_name(session, "template")
    draft = Document(name="draft")
    session.add(draft)
    await session.commit()
    draft.file = template.file
    assert await refused(session, StaleFileReference) is None  # it was, before the fix
    paths = {row: path for row, _backend, path in await references(db)}
    assert paths["draft"] != paths["template"]
    assert (await loaded(db, "draft")).file.get_content() == b"template"
    await assert_consistent(db, files)


# -- a FileObject edited in place --------------------------------------------------------------


async def test_a_path_edited_in_place_to_another_rows_upload_is_refused(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "a", b"a")
    await committed(db, "b", b"b")
    session = db.session()
    a, b = await by_name(session, "a"), await by_name(session, "b")
    a.file = FileObject(filename="new.txt", content=b"new")
    await session.flush()
    b.file.path = a.file.path
    flag_modified(b, "file")
    assert await refused(session, StaleFileReference, "edited in place")
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


# -- serialised and rebuilt FileObjects ----------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="rule 3: FileObject.from_dict(f.to_dict()) (a JSON/pydantic round trip of a loaded "
    "file) forgets that a row holds the object (_in_row is not serialised), so a second row "
    "given it shares the object; docs/models.md only mentions FileObject(backend=, path=) "
    "built by hand",
)
async def test_a_file_rebuilt_from_its_dict_is_copied(db: Db, files: FaultyBackend) -> None:
    await committed(db, "source", b"serialised")
    session = db.session()
    rebuilt = FileObject.from_dict((await by_name(session, "source")).file.to_dict())
    session.add(Document(name="target", file=rebuilt))
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


# -- committed deletes that leave their files behind (orphans after the commit) -----------------


async def test_bulk_delete_through_the_joined_base_deletes_the_subclass_file(
    inheritance: Db, files: FaultyBackend
) -> None:
    db = inheritance
    await committed(db, "gone", b"img", Image)
    kept = await committed(db, "kept", b"kept", Image)
    session = db.session()
    await session.execute(delete(Asset).where(Asset.name == "gone"))
    await session.commit()
    await session.close()
    assert files.paths() == {kept.file.path}
    await assert_consistent(db, files, [Image.file, Circle.file], [Image, Circle])


async def test_a_cascaded_child_that_took_a_file_in_the_transaction_takes_it_along(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "giver", b"moved into a photo")
    session = db.session()
    album = CascadeAlbum(name="al")
    session.add(album)
    await session.flush()
    photo = CascadePhoto(album_id=album.id)
    session.add(photo)
    await session.commit()
    giver = await by_name(session, "giver")
    photo.file, giver.file = giver.file, None
    await session.flush()
    await session.delete(album)  # passive_deletes: the database deletes the photo
    await session.commit()
    await session.close()
    assert files.paths() == set()
    await assert_consistent(db, files)


# == what holds =================================================================================

# -- merge, make_transient, expunge --------------------------------------------------------------


async def test_merging_a_detached_row_with_new_content_replaces_the_file(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "m", b"old")
    await committed(db, "unchanged", b"same")
    detached, same = await loaded(db, "m"), await loaded(db, "unchanged")
    old = detached.file.path
    detached.file = FileObject(filename="new.txt", content=b"new")
    session = db.session()
    await session.run_sync(lambda s: (s.merge(detached), s.merge(same)))  # same: no change
    await session.commit()
    await session.close()
    assert detached.file.path not in (old, same.file.path)
    assert files.paths() == {
        (await loaded(db, "m")).file.path,
        same.file.path,
    }
    assert (await loaded(db, "m")).file.get_content() == b"new"
    await assert_consistent(db, files)


async def test_merging_a_row_given_another_rows_file_copies_it(
    db: Db, files: FaultyBackend
) -> None:
    doc = await committed(db, "m", b"old")
    await committed(db, "o", b"other")
    detached, other = await loaded(db, "m"), await loaded(db, "o")
    detached.file = other.file
    transient = Document(id=doc.id, name="m", file=other.file)  # merge by primary key
    for value in (detached, transient):
        session = db.session()
        await session.run_sync(lambda s, v=value: s.merge(v))
        await session.commit()
        await session.close()
        await assert_no_shared_object(db)
    session = db.session()
    await session.delete(await by_name(session, "o"))
    await session.commit()
    await session.close()
    assert (await loaded(db, "m")).file.get_content() == b"other"
    assert len(files.paths()) == 1
    await assert_consistent(db, files)


async def test_a_row_cloned_with_make_transient_gets_its_own_copy(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "orig", b"orig")
    session = db.session()
    row = await by_name(session, "orig")
    original = row.file.path
    await session.run_sync(lambda s: (s.expunge(row), make_transient(row)))
    row.id, row.name = uuid.uuid4(), "clone"
    session.add(row)
    await session.commit()
    await session.close()
    assert row.file.path != original
    await assert_no_shared_object(db)
    session = db.session()
    await session.delete(await by_name(session, "orig"))
    await session.commit()
    await session.close()
    assert (await loaded(db, "clone")).file.get_content() == b"orig"
    await assert_consistent(db, files)


async def test_an_expunged_row_added_back_and_replaced_keeps_the_rule(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "e", b"one")
    session = db.session()
    row = await by_name(session, "e")
    await session.run_sync(lambda s: s.expunge(row))
    row.file = FileObject(filename="two.txt", content=b"two")
    session.add(row)
    await session.commit()
    await session.close()
    assert files.paths() == {row.file.path}
    await assert_consistent(db, files)


async def test_a_row_made_detached_by_hand_deletes_what_the_database_holds(
    db: Db, files: FaultyBackend
) -> None:
    doc = await committed(db, "orig", b"orig")
    ghost = Document(id=doc.id, name="orig", file=FileObject(filename="g.txt", content=b"g"))
    session = db.session()
    await session.run_sync(lambda s: (make_transient_to_detached(ghost), s.add(ghost)))
    await session.delete(ghost)
    await session.commit()
    await session.close()
    assert files.paths() == set()  # the committed file went; the ghost's was never written
    assert await references(db) == []
    await assert_consistent(db, files)


# -- copies of FileObjects, in-place edits ------------------------------------------------------


async def test_a_shallow_copy_of_a_loaded_file_is_copied(db: Db, files: FaultyBackend) -> None:
    await committed(db, "orig", b"orig")
    session = db.session()
    row = await by_name(session, "orig")
    session.add(Document(name="c", file=copy.copy(row.file)))
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    assert len(files.paths()) == 2
    await assert_consistent(db, files)


async def test_a_deep_copy_of_a_loaded_file_fails_loudly_and_writes_nothing(
    db: Db, files: FaultyBackend
) -> None:
    await committed(db, "orig", b"orig")
    row = await loaded(db, "orig")
    with pytest.raises(TypeError, match="pickle"):  # the registry's backends come along
        copy.deepcopy(row.file)
    assert len(files.paths()) == 1


async def test_in_place_edits_of_a_loaded_file(db: Db, files: FaultyBackend) -> None:
    await committed(db, "e", b"e")
    session = db.session()
    row = await by_name(session, "e")
    path = row.file.path
    row.file.path = "elsewhere.txt"  # not flagged: never written
    row.name = "renamed"
    await session.commit()
    assert (await loaded(db, "renamed")).file.path == path
    row.file.path = "elsewhere.txt"  # flagged: refused before anything is written
    flag_modified(row, "file")
    assert await refused(session, StaleFileReference, "'file' was edited in place")
    session = db.session()
    row = await by_name(session, "renamed")
    row.file.backend = "other"
    flag_modified(row, "file")
    assert await refused(session, StaleFileReference, "edited in place")
    session = db.session()
    row = await by_name(session, "renamed")
    row.file.metadata["reviewed"] = "yes"  # metadata only: written
    flag_modified(row, "file")
    await session.commit()
    await session.close()
    again = await loaded(db, "renamed")
    assert again.file.path == path and again.file.metadata == {"reviewed": "yes"}
    assert files.paths() == {path}
    await assert_consistent(db, files)


# -- inheritance ---------------------------------------------------------------------------------


async def test_joined_subclass_rows_through_the_base_class(
    inheritance: Db, files: FaultyBackend
) -> None:
    db = inheritance
    await committed(db, "del", b"d", Image)
    await committed(db, "rep", b"r", Image)
    session = db.session()
    rows = {r.name: r for r in await session.scalars(select(Asset))}  # polymorphic load
    assert all(type(r) is Image and "file" not in r.__dict__ for r in rows.values())
    await session.delete(rows["del"])
    # Not loaded: what it replaces is read at the flush (no IO here, fine for AsyncSession).
    rows["rep"].file = FileObject(filename="new.png", content=b"new")
    await session.commit()
    await session.close()
    assert files.paths() == {rows["rep"].file.path}
    await assert_consistent(db, files, [Image.file, Circle.file], [Image, Circle])
    session = db.session()
    given = (await session.scalars(select(Image)))[0].file
    with pytest.raises(ConfigurationError, match="another row references"):
        await session.execute(insert(Image), [{"name": "bulk", "file": given}])
    await session.rollback()
    session.add(Image(name="copy", file=given))
    await session.commit()
    await session.close()
    assert len(files.paths()) == 2
    await assert_consistent(db, files, [Image.file, Circle.file], [Image, Circle])


async def test_single_table_subclass_rows_deleted_through_the_base(
    inheritance: Db, files: FaultyBackend
) -> None:
    db = inheritance
    session = db.session()
    session.add_all(
        [Circle(name=n, file=FileObject(filename=f"{n}.txt", content=b"c")) for n in "abc"]
    )
    session.add(Shape(name="plain"))
    await session.commit()
    await session.close()
    session = db.session()
    # Through the base: the subclass's file column is not loaded.
    rows = {r.name: r for r in await session.scalars(select(Shape))}
    assert type(rows["a"]) is Circle and "file" not in rows["a"].__dict__
    kept = (await session.scalars(select(Circle.file).where(Circle.name == "c")))[0].path
    await session.delete(rows["a"])
    await session.delete(rows["plain"])
    await session.execute(update(Shape).where(Shape.name == "b").values(name="bb"))
    await session.execute(delete(Shape).where(Shape.name == "bb"))
    await session.commit()
    await session.close()
    assert files.paths() == {kept}
    await assert_consistent(db, files, [Image.file, Circle.file], [Image, Circle])


# -- cascades ------------------------------------------------------------------------------------


async def test_a_delete_orphan_childs_file_moves_or_is_copied(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    folder = Folder(
        name="f",
        items=[Item(file=FileObject(filename=f"{i}.txt", content=str(i).encode())) for i in "12"],
    )
    session.add(folder)
    await session.commit()
    await session.close()
    await plain(db, "same-flush")
    await plain(db, "next-flush")
    session = db.session()
    folder = (await session.scalars(select(Folder)))[0]
    first, second = folder.items
    same = await by_name(session, "same-flush")
    same.file = first.file  # the orphan is found during the flush: a copy
    folder.items.remove(first)
    await session.flush()
    folder.items.remove(second)
    await session.flush()
    later = await by_name(session, "next-flush")
    later.file = second.file  # its row is gone: a move
    await session.commit()
    await session.close()
    assert same.file.path != first.file.path and later.file.path == second.file.path
    assert files.paths() == {same.file.path, later.file.path}
    await assert_consistent(db, files)


async def test_a_declared_database_cascade_with_a_file_copied_out_first(
    db: Db, files: FaultyBackend
) -> None:
    await plain(db, "keeper")
    session = db.session()
    album = CascadeAlbum(name="al")
    session.add(album)
    await session.flush()
    photo = CascadePhoto(album_id=album.id, file=FileObject(filename="p.jpg", content=b"p"))
    session.add(photo)
    await session.commit()
    keeper = await by_name(session, "keeper")
    keeper.file = photo.file  # the photo keeps it: a copy
    await session.delete(album)
    await session.commit()
    await session.close()
    assert files.paths() == {keeper.file.path} and keeper.file.path != photo.file.path
    await assert_consistent(db, files)


# -- deferred columns, expire, refresh, populate_existing ---------------------------------------


async def test_deferred_and_expired_file_columns(db: Db, files: FaultyBackend) -> None:
    for name in ("d1", "d2", "d3"):
        await committed(db, name, name.encode())
    session = db.session()
    rows = await session.scalars(
        select(Document).options(defer(Document.file)).order_by(Document.name)
    )
    await session.delete(rows[0])
    # Not loaded: what it replaces is read at the flush (no IO here, fine for AsyncSession).
    rows[1].file = FileObject(filename="n.txt", content=b"n")
    await session.commit()
    only = await session.scalars(
        select(Document).options(load_only(Document.name)).where(Document.name == "d3")
    )
    await session.run_sync(lambda s: s.expire(only[0], ["file"]))
    only[0].file = None
    await session.commit()
    await session.close()
    assert files.paths() == {rows[1].file.path}
    await assert_consistent(db, files)


async def test_file_columns_assigned_after_commit_expired_them(
    db: Db, files: FaultyBackend
) -> None:
    """expire_on_commit=True (SQLAlchemy's default): assigning to an expired file column
    does no IO (an AsyncSession would raise MissingGreenlet); the flush reads what it
    replaces, so the replaced file goes, a file taken from a row that keeps it is copied,
    and one taken from a row that gives it up moves."""
    for name in ("a", "b", "c", "d", "e"):
        await committed(db, name, name.encode())
    session = expiring_session(db)
    a, b, c, d, e = [await by_name(session, n) for n in "abcde"]
    kept, moving, replaced = e.file, d.file, c.file
    await session.commit()  # every attribute expired
    a.file = FileObject(filename="new.txt", content=b"new")
    b.file = kept  # e keeps it: b gets a copy
    d.file, c.file = None, moving  # d gives it up: c takes it (c's own file goes)
    a.attachments = [FileObject(filename="l.txt", content=b"list")]
    await session.commit()
    await session.close()
    got = {n: await loaded(db, n) for n in "abcde"}
    assert got["a"].file.get_content() == b"new"
    assert got["b"].file.get_content() == b"e" and got["b"].file.path != kept.path
    assert got["c"].file.path == moving.path and got["c"].file.get_content() == b"d"
    assert got["d"].file is None
    assert got["e"].file.path == kept.path and got["e"].file.get_content() == b"e"
    assert [f.get_content() for f in got["a"].attachments] == [b"list"]
    # a's new file and list item, b's copy, c's (moved from d), e's; a's, b's and c's old
    # files are gone.
    assert len(files.paths()) == 5 and replaced.path not in files.paths()
    await assert_consistent(db, files)


async def test_refresh_and_populate_existing_mid_transaction(db: Db, files: FaultyBackend) -> None:
    await committed(db, "p", b"p")
    session = db.session()
    row = await by_name(session, "p")
    old = row.file.path
    row.file = FileObject(filename="n.txt", content=b"n")
    await session.flush()
    new = row.file.path
    await session.refresh(row)
    assert row.file.path == new
    reloaded = await session.scalars(select(Document).execution_options(populate_existing=True))
    assert reloaded[0].file.path == new
    row.file = FileObject(filename="unflushed.txt", content=b"u")
    await session.refresh(row)  # drops the unflushed change: nothing uploaded for it
    await session.commit()
    await session.close()
    assert old != new and files.paths() == {new}
    await assert_consistent(db, files)


def test_without_sqlites_foreign_key_pragma_a_bulk_delete_keeps_the_childrens_files(
    tmp_path: Any, files: FaultyBackend
) -> None:
    """SQLite runs ON DELETE CASCADE only with ``PRAGMA foreign_keys=ON``; without it the
    children (declared cascades, joined-table subclass rows) stay, and so must their files."""
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{tmp_path / 'no-pragma.sqlite'}")
    tables = [CascadeAlbum.__table__, CascadePhoto.__table__, CascadeNote.__table__, *ADV_TABLES]
    UUIDAuditBase.metadata.create_all(engine, tables=tables)
    try:
        with Session(engine) as session:
            album = CascadeAlbum(name="al")
            session.add(album)
            session.flush()
            session.add(
                CascadePhoto(album_id=album.id, file=FileObject(filename="p", content=b"p"))
            )
            session.add(Image(name="img", file=FileObject(filename="i", content=b"i")))
            session.commit()
            kept = files.paths()
            assert len(kept) == 2
            session.execute(delete(CascadeAlbum))
            session.execute(delete(Asset))
            session.commit()
        assert wait_for_cleanup(10)
        assert files.paths() == kept  # the child rows are still there, referencing them
        with Session(engine) as session:
            photo = session.scalars(select(CascadePhoto)).one()
            assert photo.file.get_content() == b"p"
    finally:
        UUIDAuditBase.metadata.drop_all(engine, tables=tables)
        engine.dispose()


# == a session with two engines to one database ================================================


@pytest.mark.timeout(120)
async def test_a_session_with_two_engines_to_one_database(db: Db, files: FaultyBackend) -> None:
    """binds= with a second engine for Report: each mapper's rows are read and locked through
    the connection its bind gives, so the flush does not wait on a lock of its own."""
    if db.name == "sqlite":
        pytest.skip("SQLite lets one connection write at a time: two engines cannot both write")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.orm import Session

    from tests.orm.conftest import Report, SessionAdapter

    a = await committed(db, "a", b"A")
    r = await committed(db, "r", b"R", model=Report)
    second = create_async_engine(db.url) if db.is_async else create_engine(db.url)
    binds = {Document: db.engine, Report: second}
    maker: Any = AsyncSession if db.is_async else Session
    try:
        session = SessionAdapter(maker(binds=binds, expire_on_commit=False))
        doc = await by_name(session, "a")
        report = (await session.scalars(select(Report)))[0]
        doc.file = FileObject(filename="a.txt", content=b"A2")
        report.file = FileObject(filename="r2.txt", content=b"R2")
        await session.commit()
        moved = FileObject(filename="moved.txt", content=b"M")
        doc.attachments = [moved]
        report.file = None  # type: ignore[assignment]
        await session.delete(report)
        await session.commit()
        await session.close()
    finally:
        if db.is_async:
            await second.dispose()
        else:
            second.dispose()
    assert wait_for_cleanup(60)
    assert a.file.path not in files.paths() and r.file.path not in files.paths()
    assert (await loaded(db, "a")).file.get_content() == b"A2"
    assert len(files.paths()) == 2
    await assert_consistent(db, files)
