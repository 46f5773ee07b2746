"""The transaction rule, on SQLite, PostgreSQL and MariaDB with sync and async drivers.

After every scenario the store holds exactly the bytes that committed rows reference:
nothing dangling, nothing orphaned.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from storeroom import BackendError, FileObject, StoreroomError, checksums
from storeroom.orm import settings
from tests.orm.conftest import Db, Document, FaultyBackend, Report, assert_consistent, row_json


async def test_insert_uploads_before_commit_and_stores_metadata_in_the_row(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="q3", file=FileObject(filename="report.pdf", content=b"%PDF q3"))
    session.add(doc)
    await session.flush()
    assert files.paths() == {doc.file.path}  # uploaded during flush, before the commit
    await session.commit()
    await session.close()
    stored = row_json(db, Document.__tablename__, "q3")
    assert stored["size"] == 7 and stored["backend"] == "files"
    assert stored["checksum"].startswith(checksums.DEFAULT_ALGORITHM + ":") and stored["etag"]
    assert stored["content_type"] == "application/pdf"
    session = db.session()
    again = (await session.scalars(select(Document).where(Document.name == "q3")))[0]
    assert again.file.get_content() == b"%PDF q3"
    await session.close()
    await assert_consistent(db, files)


async def test_rollback_deletes_what_the_transaction_uploaded(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    session.add(Document(name="gone", file=FileObject(filename="a.txt", content=b"a")))
    await session.flush()
    assert len(files.paths()) == 1
    await session.rollback()
    assert files.paths() == set()
    await session.close()


async def test_storage_failure_on_nth_upload_rolls_everything_back(
    db: Db, files: FaultyBackend
) -> None:
    files.fail_on = {2}
    session = db.session()
    session.add_all(
        [
            Document(name=f"n{i}", file=FileObject(filename=f"{i}.txt", content=b"x"))
            for i in range(3)
        ]
    )
    with pytest.raises(StoreroomError) as caught:
        await session.commit()
    assert isinstance(caught.value, BackendError)
    assert "injected failure" in str(caught.value)
    await session.rollback()
    await session.close()
    assert files.paths() == set()
    session = db.session()
    assert await session.scalars(select(Document)) == []
    await session.close()


async def test_database_failure_after_uploads_deletes_them(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    session.add(Document(name="dup", file=FileObject(filename="first.txt", content=b"1")))
    await session.commit()
    kept = files.paths()
    session.add(Document(name="dup", file=FileObject(filename="second.txt", content=b"2")))
    with pytest.raises(DatabaseIntegrityError):
        await session.commit()  # unique constraint violated after the upload
    await session.rollback()
    await session.close()
    assert files.paths() == kept
    await assert_consistent(db, files)


async def test_replace_then_commit_deletes_the_old_file(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    doc = Document(name="r", file=FileObject(filename="v1.txt", content=b"one"))
    session.add(doc)
    await session.commit()
    old_path = doc.file.path
    doc.file = FileObject(filename="v2.txt", content=b"two")
    await session.flush()
    assert old_path in files.paths()  # still there until the commit
    await session.commit()
    assert files.paths() == {doc.file.path}
    await session.close()
    await assert_consistent(db, files)


async def test_replace_then_rollback_keeps_the_old_file(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    doc = Document(name="r", file=FileObject(filename="v1.txt", content=b"one"))
    session.add(doc)
    await session.commit()
    old_path = doc.file.path
    doc.file = FileObject(filename="v2.txt", content=b"two")
    await session.flush()
    await session.rollback()
    await session.close()
    assert files.paths() == {old_path}
    await assert_consistent(db, files)


async def test_replace_of_an_unloaded_row_still_deletes_the_old_file(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="cold", file=FileObject(filename="v1.txt", content=b"one"))
    session.add(doc)
    await session.commit()
    await session.close()
    session = db.session()
    fresh = (await session.scalars(select(Document).where(Document.name == "cold")))[0]
    fresh.file = FileObject(filename="v2.txt", content=b"two")
    await session.commit()
    await session.close()
    assert len(files.paths()) == 1
    await assert_consistent(db, files)


async def test_delete_row_then_commit_deletes_its_files(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    doc = Document(
        name="d",
        file=FileObject(filename="a.txt", content=b"a"),
        attachments=[FileObject(filename="b.txt", content=b"b")],
    )
    session.add(doc)
    await session.commit()
    assert len(files.paths()) == 2
    await session.delete(doc)
    await session.flush()
    assert len(files.paths()) == 2  # not before the commit
    await session.commit()
    await session.close()
    assert files.paths() == set()


async def test_delete_row_then_rollback_keeps_its_files(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    doc = Document(name="d", file=FileObject(filename="a.txt", content=b"a"))
    session.add(doc)
    await session.commit()
    await session.delete(doc)
    await session.flush()
    await session.rollback()
    await session.close()
    assert len(files.paths()) == 1
    await assert_consistent(db, files)


async def test_savepoint_rollback_deletes_only_its_uploads(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    outer = Document(name="outer", file=FileObject(filename="o.txt", content=b"o"))
    session.add(outer)
    await session.flush()
    nested = session.begin_nested()
    if db.is_async:
        nested = await nested
    session.add(Document(name="inner", file=FileObject(filename="i.txt", content=b"i")))
    await session.flush()
    assert len(files.paths()) == 2
    if db.is_async:
        await nested.rollback()
    else:
        nested.rollback()
    assert files.paths() == {outer.file.path}
    await session.commit()
    await session.close()
    await assert_consistent(db, files)


async def test_savepoint_release_then_outer_rollback_deletes_everything(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    nested = session.begin_nested()
    if db.is_async:
        nested = await nested
    session.add(Document(name="inner", file=FileObject(filename="i.txt", content=b"i")))
    await session.flush()
    if db.is_async:
        await nested.commit()
    else:
        nested.commit()
    assert len(files.paths()) == 1
    await session.rollback()
    await session.close()
    assert files.paths() == set()


async def test_list_append_remove_and_slice_assignment(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    doc = Document(name="l", attachments=[FileObject(filename="a.txt", content=b"a")])
    session.add(doc)
    await session.commit()
    first = doc.attachments[0].path
    doc.attachments.append(FileObject(filename="b.txt", content=b"b"))
    await session.commit()
    assert len(files.paths()) == 2
    doc.attachments.remove(doc.attachments[0])
    await session.commit()
    assert first not in files.paths() and len(files.paths()) == 1
    doc.attachments[:] = [
        FileObject(filename="c.txt", content=b"c"),
        FileObject(filename="d.txt", content=b"d"),
    ]
    await session.commit()
    await session.close()
    assert len(files.paths()) == 2
    session = db.session()
    again = (await session.scalars(select(Document).where(Document.name == "l")))[0]
    assert sorted(f.filename for f in again.attachments) == ["c.txt", "d.txt"]
    assert sorted(f.get_content() for f in again.attachments) == [b"c", b"d"]
    await session.close()
    await assert_consistent(db, files)


async def test_same_filename_never_shares_an_object(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    one = Document(name="one", file=FileObject(filename="report.pdf", content=b"first"))
    two = Document(name="two", file=FileObject(filename="report.pdf", content=b"second"))
    session.add_all([one, two])
    await session.commit()
    await session.close()
    assert one.file.path != two.file.path
    assert one.file.path.endswith("/report.pdf")
    assert one.file.get_content() == b"first" and two.file.get_content() == b"second"


async def test_custom_path_function(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    report = Report(name="q4", file=FileObject(filename="summary.csv", content=b"a,b"))
    session.add(report)
    await session.commit()
    await session.close()
    assert report.file.path == "custom/q4/summary.csv"
    assert files.get("custom/q4/summary.csv") == b"a,b"


async def test_uploads_within_a_flush_are_bounded(db: Db, files: FaultyBackend) -> None:
    settings.upload_concurrency = 3
    try:
        session = db.session()
        session.add_all(
            [
                Document(name=f"c{i}", file=FileObject(filename="f.bin", content=b"z" * 1000))
                for i in range(12)
            ]
        )
        await session.commit()
        await session.close()
    finally:
        settings.upload_concurrency = 8
    assert files.writes == 12
    assert 1 <= files.max_active <= 3


async def test_referencing_an_existing_object_uploads_nothing(db: Db, files: FaultyBackend) -> None:
    files.put("legacy/contract.pdf", b"already there")
    writes_before = files.writes
    session = db.session()
    doc = Document(
        name="ref",
        file=FileObject(backend="files", filename="contract.pdf", path="legacy/contract.pdf"),
    )
    session.add(doc)
    await session.commit()
    await session.close()
    assert files.writes == writes_before
    assert doc.file.get_content() == b"already there"
