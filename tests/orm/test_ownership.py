"""Edges of the transaction rule: retries after a rollback, files moving between rows,
content replaced in place, and uploads that would overwrite what a committed row references.

Each scenario ends with the store holding exactly what committed rows reference.
"""

from __future__ import annotations

from io import BytesIO

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.orm.attributes import flag_modified

from storeroom import ConfigurationError, FileObject, ObstoreBackend, StoreroomError, storages
from tests.orm.conftest import Db, Document, FaultyBackend, Report, assert_consistent


async def test_storage_failure_rolls_the_transaction_back_at_once(
    db: Db, files: FaultyBackend
) -> None:
    files.fail_on = {3}
    session = db.session()
    session.add_all(
        [
            Document(name=f"n{i}", file=FileObject(filename=f"{i}.txt", content=b"x"))
            for i in range(4)
        ]
    )
    with pytest.raises(StoreroomError, match="injected failure on write 3"):
        await session.flush()
    assert files.paths() == set()  # deleted before the application even calls rollback()
    with pytest.raises(PendingRollbackError):
        await session.scalars(select(Document))
    await session.rollback()
    await session.close()


async def test_retry_after_a_failed_commit_uploads_again(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    session.add(Document(name="taken", file=FileObject(filename="a.txt", content=b"a")))
    await session.commit()
    retry = Document(name="taken", file=FileObject(filename="b.txt", content=b"bytes"))
    streamed = Document(
        name="taken2",
        attachments=[FileObject(filename="s.txt", content=BytesIO(b"seekable stream"))],
    )
    session.add_all([retry, streamed])
    with pytest.raises(DatabaseIntegrityError):
        await session.commit()
    await session.rollback()
    assert len(files.paths()) == 1  # the two uploads of the failed commit are gone
    retry.name = "fresh"
    session.add_all([retry, streamed])  # the usual retry: fix the row, add it again
    await session.commit()
    await session.close()
    assert retry.file.get_content() == b"bytes"
    assert streamed.attachments[0].get_content() == b"seekable stream"
    await assert_consistent(db, files)


async def test_retry_with_a_spent_stream_fails_clearly(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    doc = Document(name="gen", file=FileObject(filename="g.txt", content=iter([b"once"])))
    session.add(doc)
    await session.flush()
    await session.rollback()
    session.add(doc)
    with pytest.raises(ConfigurationError, match="g.txt.*cannot be read again"):
        await session.commit()
    await session.rollback()
    await session.close()
    assert files.paths() == set()


async def test_file_moved_to_another_row_survives(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    a = Document(name="a", file=FileObject(filename="x.txt", content=b"x"))
    b = Document(name="b")
    session.add_all([a, b])
    await session.commit()
    b.file, a.file = a.file, None
    await session.commit()
    assert b.file.get_content() == b"x"
    a.file = b.file  # and back, in two flushes: taken first, then given up
    await session.flush()
    b.file = None
    await session.flush()
    await session.delete(b)
    await session.commit()
    await session.close()
    assert a.file.get_content() == b"x"
    await assert_consistent(db, files)


async def test_value_restored_before_commit_is_kept(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    doc = Document(
        name="r",
        file=FileObject(filename="v1.txt", content=b"one"),
        attachments=[FileObject(filename="l1.txt", content=b"l1")],
    )
    session.add(doc)
    await session.commit()
    old, old_item = doc.file, doc.attachments[0]
    doc.file = FileObject(filename="v2.txt", content=b"two")
    doc.attachments.remove(old_item)
    await session.flush()
    doc.file = old
    doc.attachments.append(old_item)
    await session.commit()
    await session.close()
    assert doc.file.get_content() == b"one"
    assert doc.attachments[0].get_content() == b"l1"
    await assert_consistent(db, files)


async def test_item_appended_then_removed_in_one_transaction_is_deleted(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="l", attachments=[])
    session.add(doc)
    await session.commit()
    doc.attachments.append(FileObject(filename="tmp.txt", content=b"t"))
    await session.flush()
    doc.attachments.pop()
    await session.commit()
    await session.close()
    assert files.paths() == set()
    await assert_consistent(db, files)


async def test_content_replaced_in_place_never_overwrites_committed_bytes(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="p", file=FileObject(filename="v.txt", content=b"one"))
    session.add(doc)
    await session.commit()
    old_path = doc.file.path
    doc.file.set_content(b"two")
    flag_modified(doc, "file")
    await session.flush()
    assert files.get(old_path) == b"one"  # the committed bytes are untouched...
    await session.rollback()
    assert files.paths() == {old_path}  # ...and survive the rollback
    session2 = db.session()
    again = (await session2.scalars(select(Document).where(Document.name == "p")))[0]
    again.file.set_content(b"three")
    flag_modified(again, "file")
    await session2.commit()
    await session2.close()
    await session.close()
    assert again.file.path != old_path and again.file.get_content() == b"three"
    assert files.paths() == {again.file.path}
    await assert_consistent(db, files)


async def test_path_function_that_would_overwrite_the_old_file_is_refused(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    report = Report(name="q4", file=FileObject(filename="summary.csv", content=b"v1"))
    session.add(report)
    await session.commit()
    report.file = FileObject(filename="summary.csv", content=b"v2")
    with pytest.raises(ConfigurationError, match="custom/q4/summary.csv.*already references"):
        await session.commit()
    await session.rollback()
    await session.close()
    assert files.get("custom/q4/summary.csv") == b"v1"
    await assert_consistent(db, files)


async def test_deleting_a_row_with_an_unsaved_replacement_deletes_the_committed_file(
    db: Db, files: FaultyBackend
) -> None:
    session = db.session()
    doc = Document(name="d", file=FileObject(filename="a.txt", content=b"a"))
    session.add(doc)
    await session.commit()
    doc.file = FileObject(filename="b.txt", content=b"b")
    await session.delete(doc)
    await session.commit()
    await session.close()
    assert files.paths() == set()


async def test_column_backend_is_given_to_referenced_files(db: Db, files: FaultyBackend) -> None:
    other = storages.register_backend(
        ObstoreBackend("other", "memory://"), overwrite=True, default=True
    )
    try:
        files.put("legacy/old.pdf", b"old")
        session = db.session()
        doc = Document(name="ref", file=FileObject(filename="old.pdf", path="legacy/old.pdf"))
        session.add(doc)
        await session.commit()
        await session.close()
        assert doc.file.backend == "files"
        assert doc.file.get_content() == b"old"
    finally:
        storages.unregister_backend(other.key)


async def test_failed_delete_after_commit_is_logged_not_raised(
    db: Db, files: FaultyBackend, caplog: pytest.LogCaptureFixture
) -> None:
    session = db.session()
    doc = Document(name="d", file=FileObject(filename="a.txt", content=b"a"))
    session.add(doc)
    await session.commit()
    old_path = doc.file.path
    doc.file = FileObject(filename="b.txt", content=b"b")
    files.fail_deletes = True
    with caplog.at_level("WARNING", logger="storeroom.orm"):
        await session.commit()  # the commit stands; the old object becomes an orphan
    files.fail_deletes = False
    await session.close()
    assert files.paths() == {old_path, doc.file.path}
    assert any(old_path in r.getMessage() and "orphan" in r.getMessage() for r in caplog.records)
    session = db.session()
    again = (await session.scalars(select(Document)))[0]
    await session.close()
    assert again.file.get_content() == b"b"


async def test_sessionmaker_and_scoped_sessions_follow_the_rule(
    db: Db, files: FaultyBackend
) -> None:
    from sqlalchemy.ext.asyncio import async_scoped_session, async_sessionmaker
    from sqlalchemy.orm import scoped_session, sessionmaker

    if db.is_async:
        scoped = async_scoped_session(async_sessionmaker(db.engine), scopefunc=lambda: 1)
        scoped.add(Document(name="s", file=FileObject(filename="s.txt", content=b"s")))
        await scoped.flush()
        assert len(files.paths()) == 1
        await scoped.rollback()
        assert files.paths() == set()
        await scoped.remove()
    else:
        sync_scoped = scoped_session(sessionmaker(db.engine))
        sync_scoped.add(Document(name="s", file=FileObject(filename="s.txt", content=b"s")))
        sync_scoped.flush()
        assert len(files.paths()) == 1
        sync_scoped.rollback()
        assert files.paths() == set()
        sync_scoped.remove()
