"""Adversarial list columns, in-place edits and inheritance against the transaction rule.

Attacks (docs/models.md, "A stored object belongs to one row", "Cascades", "Bulk
statements"): a FileList assigned from another row (or column) gives the row its own list; a
loaded file's ``path``/``backend`` edited in place is refused; a bulk delete of a joined-table
base deletes the subclass rows' files, a bulk statement on a single-table subclass touches
only that subclass's rows, cascades declared on a base class follow its subclasses' deletes
(and, on SQLite without the foreign-key pragma, files of children the database keeps stay).
Each test checks the rule: no dangling reference, no orphan, no committed bytes deleted
while a row references them.
"""

from __future__ import annotations

import copy
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, create_engine, delete, select, update
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship
from sqlalchemy.orm.attributes import flag_modified

from storeroom import FileObject, StoredObject
from storeroom.orm import StaleFileReference, UUIDAuditBase, cascade_files, wait_for_cleanup
from tests.orm.conftest import (
    SUFFIX,
    Db,
    Document,
    FaultyBackend,
    assert_consistent,
    assert_no_shared_object,
    by_name,
    delete_named,
    loaded,
    plain,
    refused,
    with_tables,
)

# -- models of this file -----------------------------------------------------------------------


def _column(nullable: bool = True, multiple: bool = False) -> Any:
    return mapped_column(StoredObject(backend="files", multiple=multiple), nullable=nullable)


class AdvliBase(UUIDAuditBase):
    """Three joined levels (Base -> Mid -> Leaf), a file column on each level."""

    __tablename__ = f"sr_advli_base_{SUFFIX}"

    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "base"}


class AdvliMid(AdvliBase):
    __tablename__ = f"sr_advli_mid_{SUFFIX}"

    id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{AdvliBase.__tablename__}.id", ondelete="CASCADE"), primary_key=True
    )
    mfile: Mapped[FileObject | None] = _column()
    children: Mapped[list[AdvliChild]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    __mapper_args__ = {"polymorphic_identity": "mid"}


class AdvliLeaf(AdvliMid):
    __tablename__ = f"sr_advli_leaf_{SUFFIX}"

    id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{AdvliMid.__tablename__}.id", ondelete="CASCADE"), primary_key=True
    )
    lfile: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_identity": "leaf"}


class AdvliChild(UUIDAuditBase):
    """Children of the middle class, deleted by the database (declared: cascade_files)."""

    __tablename__ = f"sr_advli_child_{SUFFIX}"

    mid_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{AdvliMid.__tablename__}.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = _column()


cascade_files(AdvliMid.children)


class AdvliPlainBase(UUIDAuditBase):
    """A joined hierarchy whose subclass key has no ON DELETE CASCADE."""

    __tablename__ = f"sr_advli_nbase_{SUFFIX}"

    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "base"}


class AdvliPlainSub(AdvliPlainBase):
    __tablename__ = f"sr_advli_nsub_{SUFFIX}"

    id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{AdvliPlainBase.__tablename__}.id"), primary_key=True
    )
    sfile: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_identity": "sub"}


class AdvliShape(UUIDAuditBase):
    """Single-table: every subclass shares the base's ``file`` column."""

    __tablename__ = f"sr_advli_shape_{SUFFIX}"

    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "shape"}


class AdvliCircle(AdvliShape):
    picture: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_identity": "circle"}


class AdvliSquare(AdvliShape):
    __mapper_args__ = {"polymorphic_identity": "square"}


class AdvliMixBase(UUIDAuditBase):
    """Joined below single-table: MixMid has no table of its own, MixLeaf has one."""

    __tablename__ = f"sr_advli_mbase_{SUFFIX}"

    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "base"}


class AdvliMixMid(AdvliMixBase):
    mfile: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_identity": "mid"}


class AdvliMixLeaf(AdvliMixMid):
    __tablename__ = f"sr_advli_mleaf_{SUFFIX}"

    id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{AdvliMixBase.__tablename__}.id", ondelete="CASCADE"), primary_key=True
    )
    lfile: Mapped[FileObject | None] = _column()
    __mapper_args__ = {"polymorphic_identity": "leaf"}


class AdvliBinder(UUIDAuditBase):
    """Two list columns on one row."""

    __tablename__ = f"sr_advli_binder_{SUFFIX}"

    name: Mapped[str] = mapped_column(String(100))
    attachments: Mapped[list[FileObject] | None] = _column(multiple=True)
    extras: Mapped[list[FileObject] | None] = _column(multiple=True)


TABLES = [
    m.__table__
    for m in (
        AdvliBase,
        AdvliMid,
        AdvliLeaf,
        AdvliChild,
        AdvliPlainBase,
        AdvliPlainSub,
        AdvliShape,
        AdvliMixBase,
        AdvliMixLeaf,
        AdvliBinder,
    )
]
COLUMNS = [
    AdvliBase.file,
    AdvliMid.mfile,
    AdvliLeaf.lfile,
    AdvliChild.file,
    AdvliPlainBase.file,
    AdvliPlainSub.sfile,
    AdvliShape.file,
    AdvliCircle.picture,
    AdvliMixBase.file,
    AdvliMixMid.mfile,
    AdvliMixLeaf.lfile,
    AdvliBinder.attachments,
    AdvliBinder.extras,
]
FILE_NAMES = ("file", "mfile", "lfile", "sfile", "picture", "attachments", "extras")


@pytest.fixture
def models(db: Db) -> Iterator[Db]:
    """The ``db`` fixture plus this file's tables."""
    with with_tables(db, TABLES):
        yield db


# -- helpers -----------------------------------------------------------------------------------


def _f(name: str, content: bytes | None = None) -> FileObject:
    return FileObject(filename=f"{name}.txt", content=name.encode() if content is None else content)


def _held(row: Any) -> set[str]:
    """Paths a row (and the children it was created with) references, from its __dict__."""
    found: set[str] = set()
    for name in FILE_NAMES:
        value = row.__dict__.get(name)
        for file in [value] if isinstance(value, FileObject) else list(value or []):
            found.add(file.path)
    for child in row.__dict__.get("children") or []:
        found |= _held(child)
    return found


async def _add(db: Db, *rows: Any) -> None:
    session = db.session()
    session.add_all(list(rows))
    await session.commit()
    await session.close()


async def _consistent(db: Db, files: FaultyBackend) -> None:
    await assert_consistent(db, files, COLUMNS, COLUMNS)


async def _listed(db: Db, name: str, *contents: bytes) -> None:
    """A committed Document whose attachments hold ``contents``."""
    files = [FileObject(filename=f"{name}{i}.txt", content=c) for i, c in enumerate(contents)]
    await _add(db, Document(name=name, attachments=files))


def _contents(row: Any) -> list[bytes]:
    return [f.get_content() for f in row.attachments or []]


async def _in_nested(db: Db, session: Any, statement: Any) -> None:
    """Run ``statement`` in a SAVEPOINT that is rolled back."""
    nested = session.begin_nested()
    if db.is_async:
        nested = await nested
    await session.execute(statement)
    if db.is_async:
        await nested.rollback()
    else:
        nested.rollback()


# == lists: a list column's value belongs to its row ===========================================


@pytest.mark.parametrize("source", ["detached", "expunged"])
async def test_a_list_from_a_row_of_another_session_is_copied(
    db: Db, files: FaultyBackend, source: str
) -> None:
    await _listed(db, "a", b"one", b"two")
    await plain(db, "b")
    session = db.session()
    if source == "detached":
        a = await loaded(db, "a")  # loaded and closed in a session of its own
    else:
        a = await by_name(session, "a")
        await session.run_sync(lambda s: s.expunge(a))
    b = await by_name(session, "b")
    b.attachments = a.attachments
    assert b.attachments is not a.attachments
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    assert _contents(await loaded(db, "b")) == [b"one", b"two"]
    await delete_named(db, "a")
    assert _contents(await loaded(db, "b")) == [b"one", b"two"]
    assert len(files.paths()) == 2
    await assert_consistent(db, files)


@pytest.mark.parametrize("giver", ["set to None", "cleared in place", "row deleted"])
async def test_a_list_handed_over_in_one_flush_moves(
    db: Db, files: FaultyBackend, giver: str
) -> None:
    await _listed(db, "a", b"one", b"two")
    await plain(db, "b")
    session = db.session()
    a, b = await by_name(session, "a"), await by_name(session, "b")
    before = [f.path for f in a.attachments]
    b.attachments = a.attachments
    if giver == "set to None":
        a.attachments = None
    elif giver == "cleared in place":
        a.attachments.clear()  # a's own list: b's is another one now
        assert len(b.attachments) == 2
    else:
        await session.delete(a)
    await session.commit()
    await session.close()
    b = await loaded(db, "b")
    assert [f.path for f in b.attachments] == before  # moved, not copied
    assert _contents(b) == [b"one", b"two"]
    assert files.paths() == set(before)
    await assert_no_shared_object(db)
    await assert_consistent(db, files)


async def test_new_content_in_a_list_given_to_two_rows_is_stored_twice(
    db: Db, files: FaultyBackend
) -> None:
    await plain(db, "b")
    session = db.session()
    b = await by_name(session, "b")
    a = Document(name="a", attachments=[_f("new")])
    session.add(a)
    b.attachments = a.attachments  # a's list is not flushed yet
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    assert _contents(await loaded(db, "b")) == [b"new"]
    assert len(files.paths()) == 1
    await assert_consistent(db, files)


@pytest.mark.parametrize("move", [False, True])
async def test_a_list_handed_over_in_a_rolled_back_savepoint_leaves_nothing(
    db: Db, files: FaultyBackend, move: bool
) -> None:
    await _listed(db, "a", b"one", b"two")
    await plain(db, "b")
    before = files.paths()
    session = db.session()
    a, b = await by_name(session, "a"), await by_name(session, "b")
    nested = session.begin_nested()
    if db.is_async:
        nested = await nested
    b.attachments = a.attachments
    if move:
        a.attachments = None
    await session.flush()
    assert len(files.paths()) == (2 if move else 4)  # copies uploaded, or nothing (a move)
    if db.is_async:
        await nested.rollback()
    else:
        nested.rollback()
    assert files.paths() == before  # the copies are deleted at once
    await session.commit()
    await session.close()
    assert files.paths() == before
    assert (await loaded(db, "b")).attachments is None
    assert _contents(await loaded(db, "a")) == [b"one", b"two"]
    await assert_consistent(db, files)


async def test_slices_copies_and_sums_of_another_rows_list_are_copied(
    db: Db, files: FaultyBackend
) -> None:
    await _listed(db, "a", b"one", b"two")
    for name in "bcde":
        await plain(db, name)
    session = db.session()
    a = await by_name(session, "a")
    b, c, d, e = [await by_name(session, n) for n in "bcde"]
    b.attachments = a.attachments[:]
    c.attachments = a.attachments[0:1]
    d.attachments = list(a.attachments)
    e.attachments = a.attachments + [_f("e-new")]  # noqa: RUF005 (the + is the attack)
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    await delete_named(db, "a")
    got = {n: _contents(await loaded(db, n)) for n in "bcde"}
    assert got == {
        "b": [b"one", b"two"],
        "c": [b"one"],
        "d": [b"one", b"two"],
        "e": [b"one", b"two", b"e-new"],
    }
    assert len(files.paths()) == 8
    await assert_consistent(db, files)


async def test_another_rows_files_put_into_a_list_in_place_are_copied(
    db: Db, files: FaultyBackend
) -> None:
    await _listed(db, "a", b"one", b"two")
    await _listed(db, "f", b"f0")
    await _listed(db, "g", b"g0", b"g1")
    session = db.session()
    a, f, g = await by_name(session, "a"), await by_name(session, "f"), await by_name(session, "g")
    replaced = g.attachments[0].path
    f.attachments.extend(a.attachments)
    g.attachments[0] = a.attachments[1]
    await session.commit()
    await session.close()
    await assert_no_shared_object(db)
    assert replaced not in files.paths()  # g's replaced element went
    await delete_named(db, "a")
    assert _contents(await loaded(db, "f")) == [b"f0", b"one", b"two"]
    assert _contents(await loaded(db, "g")) == [b"two", b"g1"]
    assert len(files.paths()) == 5
    await assert_consistent(db, files)


async def test_a_list_given_back_to_its_own_row_is_not_copied(db: Db, files: FaultyBackend) -> None:
    await _listed(db, "a", b"one", b"two")
    detached = await loaded(db, "a")
    before = [f.path for f in detached.attachments]
    session = db.session()
    a = await by_name(session, "a")
    kept = a.attachments
    a.attachments = None
    await session.flush()
    a.attachments = kept  # taken back in the same transaction
    await session.commit()
    a.attachments = detached.attachments  # the same row, loaded by another session
    a.name = "renamed"
    await session.commit()
    await session.close()
    assert [f.path for f in (await loaded(db, "renamed")).attachments] == before
    assert files.paths() == set(before)
    await assert_consistent(db, files)


async def test_a_list_taken_from_another_row_tracks_in_place_changes(
    db: Db, files: FaultyBackend
) -> None:
    await _listed(db, "a", b"one", b"two")
    await plain(db, "b")
    session = db.session()
    a, b = await by_name(session, "a"), await by_name(session, "b")
    b.attachments = a.attachments
    await session.commit()
    b.attachments.append(_f("b-new"))
    await session.commit()
    popped = b.attachments.pop(0)
    await session.commit()
    removed = b.attachments[0]
    b.attachments.remove(removed)
    a.attachments.append(_f("a-new"))
    await session.commit()
    await session.close()
    assert popped.path not in files.paths() and removed.path not in files.paths()
    assert _contents(await loaded(db, "b")) == [b"b-new"]
    assert _contents(await loaded(db, "a")) == [b"one", b"two", b"a-new"]
    await assert_no_shared_object(db)
    assert len(files.paths()) == 4
    await assert_consistent(db, files)


async def test_a_rows_list_given_to_its_other_list_column_keeps_both_tracked(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    await _add(db, AdvliBinder(name="a", attachments=[_f("one")]))
    session = db.session()
    a = (await session.scalars(select(AdvliBinder)))[0]
    a.extras = a.attachments
    await session.commit()
    a.attachments.append(_f("two"))  # in place, on the list a.attachments still is
    await session.commit()
    await session.close()
    session = db.session()
    a = (await session.scalars(select(AdvliBinder)))[0]
    await session.close()
    assert [f.get_content() for f in a.attachments] == [b"one", b"two"]
    await _consistent(db, files)


async def test_pickling_a_row_with_files_fails_loudly_and_changes_nothing(
    db: Db, files: FaultyBackend
) -> None:
    await _listed(db, "a", b"one")
    session = db.session()
    a = await by_name(session, "a")
    with pytest.raises(TypeError, match="pickle"):  # the registry's backends come along
        pickle.dumps(a)
    a.attachments.append(_f("two"))  # the row still works
    await session.commit()
    await session.close()
    assert _contents(await loaded(db, "a")) == [b"one", b"two"]
    assert len(files.paths()) == 2
    await assert_consistent(db, files)


async def test_a_shallow_copy_of_a_row_shares_its_list(db: Db, files: FaultyBackend) -> None:
    """copy.copy of a mapped row shares its instance state and list: a change through the
    copy is the row's own, and the rule holds for it."""
    await _listed(db, "a", b"one")
    session = db.session()
    a = await by_name(session, "a")
    twin = copy.copy(a)
    assert twin.attachments is a.attachments
    twin.attachments.append(_f("two"))
    await session.commit()
    twin.attachments.pop(0)
    await session.commit()
    await session.close()
    assert _contents(await loaded(db, "a")) == [b"two"]
    assert len(files.paths()) == 1
    await assert_consistent(db, files)


# == in-place edits of loaded files ==============================================================


@pytest.mark.parametrize("field", ["path", "backend"])
async def test_an_edited_list_element_is_refused(db: Db, files: FaultyBackend, field: str) -> None:
    await _listed(db, "a", b"one", b"two")
    before = [f.path for f in (await loaded(db, "a")).attachments]
    session = db.session()
    a = await by_name(session, "a")
    setattr(a.attachments[1], field, "elsewhere.txt" if field == "path" else "other")
    flag_modified(a, "attachments")
    assert await refused(session, StaleFileReference, "'attachments' was edited in place")
    session = db.session()
    a = await by_name(session, "a")
    a.attachments[0].path = "elsewhere.txt"  # not flagged, but the list changes too
    a.attachments.append(_f("new"))
    assert await refused(session, StaleFileReference, "edited in place")
    assert [f.path for f in (await loaded(db, "a")).attachments] == before
    assert files.paths() == set(before)
    await assert_consistent(db, files)


async def test_edits_reverted_before_the_flush_and_metadata_edits_commit(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(Document(name="a", file=_f("f"), attachments=[_f("one"), _f("two")]))
    await session.commit()
    await session.close()
    session = db.session()
    a = await by_name(session, "a")
    before = [a.file.path] + [f.path for f in a.attachments]
    a.file.path, a.file.path = "elsewhere.txt", a.file.path
    a.file.backend, a.file.backend = "other", a.file.backend
    element = a.attachments[0]
    element.path, element.path = "elsewhere.txt", element.path
    a.attachments[1].metadata["reviewed"] = "yes"
    flag_modified(a, "file")
    flag_modified(a, "attachments")
    await session.commit()
    await session.close()
    a = await loaded(db, "a")
    assert [a.file.path] + [f.path for f in a.attachments] == before
    assert a.attachments[1].metadata == {"reviewed": "yes"}
    assert files.paths() == set(before)
    await assert_consistent(db, files)


@pytest.mark.parametrize("edited", ["file", "attachments"])
async def test_a_path_edited_to_the_rows_other_column_is_refused(
    db: Db, files: FaultyBackend, edited: str
) -> None:
    session = db.session()
    session.add(Document(name="a", file=_f("f"), attachments=[_f("one")]))
    await session.commit()
    await session.close()
    session = db.session()
    a = await by_name(session, "a")
    before = {a.file.path, a.attachments[0].path}
    if edited == "file":
        a.file.path = a.attachments[0].path
    else:
        a.attachments[0].path = a.file.path
    flag_modified(a, edited)
    assert await refused(session, StaleFileReference, f"{edited!r} was edited in place")
    a = await loaded(db, "a")
    assert {a.file.path, a.attachments[0].path} == before == files.paths()
    assert a.file.get_content() == b"f" and _contents(a) == [b"one"]
    await assert_consistent(db, files)


async def test_a_refused_edit_rolled_back_leaves_the_row_consistent(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(Document(name="a", file=_f("f"), attachments=[_f("one")]))
    await session.commit()
    await session.close()
    session = db.session()
    a = await by_name(session, "a")
    path = a.file.path
    a.file.path = "elsewhere.txt"
    flag_modified(a, "file")
    with pytest.raises(StaleFileReference, match="edited in place"):
        await session.commit()
    await session.rollback()
    await session.refresh(a)  # the rollback expired the row: read it again
    assert a.file.path == path
    a.file = _f("new")
    a.attachments.append(_f("two"))
    await session.commit()
    await session.close()
    a = await loaded(db, "a")
    assert a.file.get_content() == b"new" and _contents(a) == [b"one", b"two"]
    assert path not in files.paths() and len(files.paths()) == 3
    await assert_consistent(db, files)


@pytest.mark.parametrize("column", ["file", "attachments"])
async def test_a_metadata_edit_in_a_stale_session_says_another_transaction(
    db: Db, files: FaultyBackend, column: str
) -> None:
    session = db.session()
    session.add(Document(name="a", file=_f("f"), attachments=[_f("one")]))
    await session.commit()
    await session.close()
    stale = db.session()
    a = await by_name(stale, "a")
    await stale.commit()  # the read transaction ends; the row stays loaded
    other = db.session()
    if column == "file":
        (await by_name(other, "a")).file = _f("v2")
    else:
        (await by_name(other, "a")).attachments = [_f("v2")]
    await other.commit()
    await other.close()
    target = a.file if column == "file" else a.attachments[0]
    target.metadata["reviewed"] = "yes"
    flag_modified(a, column)
    message = await refused(stale, StaleFileReference, "another transaction")
    assert message and "edited in place" not in message
    a = await loaded(db, "a")
    assert a.file.get_content() == (b"v2" if column == "file" else b"f")
    assert _contents(a) == ([b"one"] if column == "file" else [b"v2"])
    assert len(files.paths()) == 2
    await assert_consistent(db, files)


@pytest.mark.parametrize(
    "how", ["other row written in the same flush", "moved earlier", "edited file moved on"]
)
async def test_a_path_edited_to_a_file_another_row_holds_is_refused(
    db: Db, files: FaultyBackend, how: str
) -> None:
    for name in ("a", "c"):
        await _add(db, Document(name=name, file=_f(name)))
    await plain(db, "d")
    session = db.session()
    a, c, d = [await by_name(session, n) for n in "acd"]
    target = c.file.path
    if how == "moved earlier":
        d.file, c.file = c.file, None  # a move: d holds it now
        await session.flush()
    else:
        c.file.metadata["touched"] = "yes"  # c's file column is written too
        flag_modified(c, "file")
    a.file.path = target
    if how == "edited file moved on":
        d.file, a.file = a.file, None  # a gives its (edited) file to d
    else:
        flag_modified(a, "file")
    try:
        assert await refused(session, StaleFileReference, "edited in place")
    finally:
        await assert_no_shared_object(db)
        await assert_consistent(db, files)


@pytest.mark.parametrize("flagged", [False, True])
async def test_an_edited_file_moved_to_another_row_is_refused_as_edited(
    db: Db, files: FaultyBackend, flagged: bool
) -> None:
    for name in ("a", "c"):
        await _add(db, Document(name=name, file=_f(name)))
    await plain(db, "b")
    session = db.session()
    a, b, c = [await by_name(session, n) for n in "abc"]
    edited = a.file
    edited.path = c.file.path
    if flagged:
        flag_modified(a, "file")
    b.file, a.file = edited, None
    try:
        message = await refused(session, StaleFileReference)
    finally:
        await assert_no_shared_object(db)
        await assert_consistent(db, files)
    assert message and "edited in place" in message, message
    assert "another transaction" not in message, message


async def test_a_stale_column_is_not_reported_as_another_columns_edit(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    session.add(Document(name="a", file=_f("f"), attachments=[_f("one")]))
    await session.commit()
    await session.close()
    stale = db.session()
    a = await by_name(stale, "a")
    await stale.commit()
    other = db.session()
    (await by_name(other, "a")).attachments = [_f("v2")]  # a's list element is deleted
    await other.commit()
    await other.close()
    gone = a.attachments[0].path
    a.file.path = "zz-edited.txt"  # sorts after the generated paths
    flag_modified(a, "file")
    a.attachments[0].metadata["reviewed"] = "yes"
    flag_modified(a, "attachments")
    message = await refused(stale, StaleFileReference)
    await assert_consistent(db, files)
    assert message and not ("edited in place" in message and repr(gone) in message), message


# == joined-table inheritance ====================================================================


async def _tree(db: Db) -> dict[str, Any]:
    """Rows on each level of the joined hierarchy, two children under each middle row."""
    rows: dict[str, Any] = {}
    for n in "01":
        rows[f"b{n}"] = AdvliBase(name=f"b{n}", file=_f(f"b{n}"))
        rows[f"m{n}"] = AdvliMid(
            name=f"m{n}",
            file=_f(f"m{n}-file"),
            mfile=_f(f"m{n}-mfile"),
            children=[AdvliChild(name=f"m{n}c{i}", file=_f(f"m{n}c{i}")) for i in "ab"],
        )
        rows[f"l{n}"] = AdvliLeaf(
            name=f"l{n}",
            file=_f(f"l{n}-file"),
            mfile=_f(f"l{n}-mfile"),
            lfile=_f(f"l{n}-lfile"),
            children=[AdvliChild(name=f"l{n}c{i}", file=_f(f"l{n}c{i}")) for i in "ab"],
        )
    await _add(db, *rows.values())
    return rows


def _of(rows: dict[str, Any], *names: str) -> set[str]:
    return set().union(*(_held(rows[n]) for n in names))


async def test_bulk_delete_through_the_base_of_three_joined_levels(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    rows = await _tree(db)
    assert len(files.paths()) == 20
    session = db.session()
    await session.execute(delete(AdvliBase).where(AdvliBase.name.in_(["b0", "m0", "l0"])))
    await session.commit()
    await session.close()
    assert files.paths() == _of(rows, "b1", "m1", "l1")
    session = db.session()
    leaf = (await session.scalars(select(AdvliLeaf)))[0]
    children = await session.scalars(select(AdvliChild).order_by(AdvliChild.name))
    await session.close()
    assert leaf.lfile.get_content() == b"l1-lfile" and leaf.file.get_content() == b"l1-file"
    assert [c.name for c in children] == ["l1ca", "l1cb", "m1ca", "m1cb"]
    await _consistent(db, files)


async def test_bulk_deletes_of_the_middle_and_leaf_classes_keep_the_base_rows_files(
    models: Db, files: FaultyBackend
) -> None:
    """``delete(Mid)`` deletes the middle table's rows (leaf rows and children follow by
    cascade); the base rows stay (SQLAlchemy's bulk delete of a joined subclass), and so do
    their files."""
    db = models
    rows = await _tree(db)
    session = db.session()
    await session.execute(delete(AdvliMid).where(AdvliMid.id.in_([rows["m0"].id, rows["l0"].id])))
    await session.execute(delete(AdvliLeaf).where(AdvliLeaf.id == rows["l1"].id))
    await session.commit()
    await session.close()
    base_files = {rows[n].file.path for n in ("m0", "l0", "l1")}
    kept = _of(rows, "b0", "b1", "m1") | base_files | {rows["l1"].mfile.path}
    kept |= {c.file.path for c in rows["l1"].children}
    assert files.paths() == kept
    await _consistent(db, files)


async def test_a_subclass_key_without_cascade_fails_the_bulk_delete_cleanly(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    sub = AdvliPlainSub(name="sub", file=_f("s-file"), sfile=_f("s-sfile"))
    base = AdvliPlainBase(name="base", file=_f("b-file"))
    await _add(db, sub, base)
    before = files.paths()
    session = db.session()
    try:
        with pytest.raises(DatabaseIntegrityError):
            await session.execute(delete(AdvliPlainBase))
        await session.rollback()
        await session.commit()
    finally:
        await session.close()
    assert files.paths() == before
    session = db.session()
    got = await session.scalars(select(AdvliPlainSub))
    assert got[0].sfile.get_content() == b"s-sfile"
    await session.delete(got[0])  # the unit of work deletes both tables' rows
    await session.execute(delete(AdvliPlainBase).where(AdvliPlainBase.name == "base"))
    await session.commit()
    await session.close()
    assert files.paths() == set()
    await _consistent(db, files)


@pytest.mark.parametrize("end", ["rollback", "savepoint rollback"])
async def test_a_bulk_delete_that_does_not_commit_deletes_nothing(
    models: Db, files: FaultyBackend, end: str
) -> None:
    db = models
    await _tree(db)
    before = files.paths()
    session = db.session()
    statement = delete(AdvliBase)
    if end == "rollback":
        await session.execute(statement)
        await session.rollback()
    else:
        await _in_nested(db, session, statement)
        await session.commit()
    await session.close()
    assert wait_for_cleanup(10)
    assert files.paths() == before
    session = db.session()
    leaves = await session.scalars(select(AdvliLeaf))
    await session.close()
    assert len(leaves) == 2 and all(leaf.lfile.get_content() for leaf in leaves)
    await _consistent(db, files)


async def test_unit_of_work_deletes_of_joined_subclass_rows(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    rows = await _tree(db)
    session = db.session()
    loaded_rows = {r.name: r for r in await session.scalars(select(AdvliBase))}  # polymorphic
    assert type(loaded_rows["l0"]) is AdvliLeaf and "lfile" not in loaded_rows["l0"].__dict__
    await session.delete(loaded_rows["m0"])  # children go with it (declared cascade)
    await session.delete(loaded_rows["b0"])
    # Assigning loads the old value first (IO: run_sync for AsyncSession).
    await session.run_sync(lambda s: setattr(loaded_rows["l1"], "lfile", _f("l1-new")))
    await session.commit()
    await session.close()
    new = loaded_rows["l1"].lfile.path
    kept = (_of(rows, "b1", "m1", "l0", "l1") - {rows["l1"].lfile.path}) | {new}
    assert files.paths() == kept
    await _consistent(db, files)


async def test_a_unit_of_work_delete_of_a_leaf_deletes_children_declared_on_its_parent(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    rows = await _tree(db)
    session = db.session()
    leaf = (await session.scalars(select(AdvliLeaf).where(AdvliLeaf.name == "l0")))[0]
    await session.delete(leaf)  # the database deletes l0's children (mid table cascade)
    await session.commit()
    await session.close()
    assert files.paths() == _of(rows, "b0", "b1", "m0", "m1", "l1")
    await _consistent(db, files)


async def test_bulk_delete_of_a_joined_table_below_a_single_table_class(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    leaf = AdvliMixLeaf(name="l", file=_f("l-file"), mfile=_f("l-mfile"), lfile=_f("l-lfile"))
    mid = AdvliMixMid(name="m", file=_f("m-file"), mfile=_f("m-mfile"))
    kept = AdvliMixLeaf(name="k", file=_f("k-file"), mfile=_f("k-mfile"), lfile=_f("k-lfile"))
    await _add(db, leaf, mid, kept)
    session = db.session()
    await session.execute(delete(AdvliMixBase).where(AdvliMixBase.name.in_(["l", "m"])))
    await session.commit()
    await session.close()
    assert files.paths() == _held(kept)
    await _consistent(db, files)


async def test_unit_of_work_delete_of_a_joined_table_below_a_single_table_class(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    leaf = AdvliMixLeaf(name="l", file=_f("l-file"), mfile=_f("l-mfile"), lfile=_f("l-lfile"))
    kept = AdvliMixMid(name="m", file=_f("m-file"), mfile=_f("m-mfile"))
    await _add(db, leaf, kept)
    session = db.session()
    for row in await session.scalars(select(AdvliMixBase).where(AdvliMixBase.name == "l")):
        await session.delete(row)
    await session.commit()
    await session.close()
    assert files.paths() == _held(kept)
    await _consistent(db, files)


# == single-table inheritance =====================================================================


async def _shapes(db: Db) -> dict[str, Any]:
    rows: dict[str, Any] = {
        "c0": AdvliCircle(name="c0", file=_f("c0"), picture=_f("c0-pic")),
        "c1": AdvliCircle(name="c1", file=_f("c1"), picture=_f("c1-pic")),
        "s0": AdvliSquare(name="s0", file=_f("s0")),
        "p0": AdvliShape(name="p0", file=_f("p0")),
    }
    await _add(db, *rows.values())
    return rows


async def test_single_table_deletes_through_the_base_and_the_unit_of_work(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    rows = await _shapes(db)
    session = db.session()
    await session.execute(delete(AdvliShape).where(AdvliShape.name.in_(["c0", "s0"])))
    circle = (await session.scalars(select(AdvliCircle).where(AdvliCircle.name == "c1")))[0]
    await session.delete(circle)
    await session.commit()
    await session.close()
    assert files.paths() == _held(rows["p0"])
    await _consistent(db, files)


@pytest.mark.parametrize("where", [False, True])
async def test_single_table_bulk_delete_of_a_subclass_keeps_other_rows_files(
    models: Db, files: FaultyBackend, where: bool
) -> None:
    db = models
    rows = await _shapes(db)
    statement = delete(AdvliCircle)
    if where:  # SQLAlchemy adds "kind IN ('circle')": only c0 is deleted
        statement = statement.where(AdvliShape.name.in_(["c0", "s0", "p0"]))
    session = db.session()
    await session.execute(statement)
    await session.commit()
    await session.close()
    session = db.session()
    left = sorted(r.name for r in await session.scalars(select(AdvliShape)))
    await session.close()
    assert left == (["c1", "p0", "s0"] if where else ["p0", "s0"])
    try:
        assert files.paths() == _of(rows, *left)
    finally:
        await _consistent(db, files)


async def test_single_table_bulk_update_of_a_subclass_keeps_other_rows_files(
    models: Db, files: FaultyBackend
) -> None:
    db = models
    rows = await _shapes(db)
    session = db.session()
    await session.execute(update(AdvliCircle).values(file=None))
    await session.commit()
    await session.close()
    kept = _of(rows, "s0", "p0") | {rows["c0"].picture.path, rows["c1"].picture.path}
    try:
        assert files.paths() == kept
    finally:
        await _consistent(db, files)


# == SQLite without the foreign-key pragma ========================================================


def test_without_sqlites_foreign_key_pragma_cascaded_children_keep_their_files(
    tmp_path: Any, files: FaultyBackend
) -> None:
    """Without ``PRAGMA foreign_keys=ON`` no ON DELETE CASCADE runs: children of a declared
    cascade deleted through the unit of work, subclass rows of a bulk delete of the base
    (three levels) and subclass rows without a cascading key all stay, and so do their
    files; only the files of the rows deleted go."""
    engine = create_engine(f"sqlite:///{tmp_path / 'no-pragma.sqlite'}")
    UUIDAuditBase.metadata.create_all(engine, tables=TABLES)
    try:
        with Session(engine, expire_on_commit=False) as session:
            mid = AdvliMid(
                name="m",
                file=_f("m"),
                mfile=_f("m-m"),
                children=[AdvliChild(name="c", file=_f("c"))],
            )
            leaf = AdvliLeaf(
                name="l",
                file=_f("l"),
                mfile=_f("l-m"),
                lfile=_f("l-l"),
                children=[AdvliChild(name="lc", file=_f("lc"))],
            )
            sub = AdvliPlainSub(name="s", file=_f("s"), sfile=_f("s-s"))
            session.add_all([mid, leaf, sub])
            session.commit()
        assert len(files.paths()) == 9
        with Session(engine) as session:
            # The unit of work deletes the mid and base rows; the children (not loaded,
            # passive_deletes) stay.
            session.delete(session.scalars(select(AdvliMid).where(AdvliMid.name == "m")).one())
            session.commit()
            session.execute(delete(AdvliBase))  # base rows only: mid and leaf rows stay
            session.execute(delete(AdvliPlainBase))  # no FK check: the sub row stays
            session.commit()
        assert wait_for_cleanup(10)
        gone = {mid.file.path, mid.mfile.path, leaf.file.path, sub.file.path}
        kept = _held(mid) | _held(leaf) | _held(sub)
        assert files.paths() == kept - gone
        with Session(engine) as session:
            children = session.scalars(select(AdvliChild).order_by(AdvliChild.name)).all()
            assert [c.file.get_content() for c in children] == [b"c", b"lc"]
    finally:
        UUIDAuditBase.metadata.drop_all(engine, tables=TABLES)
        engine.dispose()
