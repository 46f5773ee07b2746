"""Issue 13, case 7: concurrent writers without explicit locks.

The file a flush replaces is the one the database holds at that moment (read under a row lock
in the flush's transaction), so racing sessions leave no orphan and never delete a file twice,
and a stale session cannot point a row back at a file another transaction replaced.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from storeroom import FileObject
from storeroom.orm import StaleFileReference, wait_for_cleanup
from tests.orm.conftest import Db, Document, FaultyBackend
from tests.orm.test_lifecycle_paths import assert_rule_holds

THREADS = 4
ITERATIONS = 25


async def test_racing_replacements_leave_no_orphan_and_delete_nothing_twice(
    db: Db, files: FaultyBackend
) -> None:
    if db.name == "sqlite":
        pytest.skip("SQLite serialises writers per database; the race needs row locks")
    session = db.session()
    session.add(Document(name="contested", file=FileObject(filename="v0.txt", content=b"v0")))
    await session.commit()
    await session.close()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def note(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    if db.is_async:

        async def writer_async(number: int) -> None:
            for i in range(ITERATIONS):
                s = db.session()
                try:
                    row = (await s.scalars(select(Document).where(Document.name == "contested")))[0]
                    row.file = FileObject(filename=f"w{number}-{i}.txt", content=b"x")
                    await s._call("commit")
                    note("committed")
                except DBAPIError:  # deadlock / serialization failure: the loser rolls back
                    await s.rollback()
                    note("rolled back")
                finally:
                    await s.close()

        await asyncio.gather(*(writer_async(n) for n in range(THREADS)))
    else:

        def writer(number: int) -> None:
            for i in range(ITERATIONS):
                with Session(db.engine, expire_on_commit=False) as s:
                    try:
                        row = s.scalars(select(Document).where(Document.name == "contested")).one()
                        row.file = FileObject(filename=f"w{number}-{i}.txt", content=b"x")
                        s.commit()
                        note("committed")
                    except DBAPIError:
                        s.rollback()
                        note("rolled back")

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    assert wait_for_cleanup(120)
    assert sum(outcomes.values()) == THREADS * ITERATIONS
    assert outcomes["committed"] >= 1
    twice = [path for path, count in Counter(files.deleted).items() if count > 1]
    assert twice == []
    session = db.session()
    row = (await session.scalars(select(Document).where(Document.name == "contested")))[0]
    await session.close()
    assert files.paths() == {row.file.path}
    await assert_rule_holds(db, files)


async def test_a_stale_sessions_metadata_edit_never_points_back_at_a_replaced_file(
    db: Db, files: FaultyBackend
) -> None:
    first = db.session()
    first.add(Document(name="m", file=FileObject(filename="a.txt", content=b"a")))
    await first.commit()
    await first.close()
    stale = db.session()
    row = (await stale.scalars(select(Document).where(Document.name == "m")))[0]
    await stale.commit()  # end the read transaction, keep the (now stale) object
    other = db.session()
    fresh = (await other.scalars(select(Document).where(Document.name == "m")))[0]
    fresh.file = FileObject(filename="b.txt", content=b"b")
    await other.commit()
    await other.close()
    replaced = row.file.path
    assert replaced not in files.paths()
    row.file.metadata["reviewed"] = "yes"
    flag_modified(row, "file")
    with pytest.raises(StaleFileReference, match=r"no longer holds.*session.refresh"):
        await stale.commit()
    await stale.rollback()
    await stale.refresh(row)
    assert row.file.filename == "b.txt"
    row.file.metadata["reviewed"] = "yes"  # applied again on the fresh copy: fine
    flag_modified(row, "file")
    await stale.commit()
    await stale.close()
    await assert_rule_holds(db, files)


async def test_a_stale_session_replacing_a_file_deletes_the_current_one_not_its_copy(
    db: Db, files: FaultyBackend
) -> None:
    first = db.session()
    first.add(Document(name="s", file=FileObject(filename="a.txt", content=b"a")))
    await first.commit()
    await first.close()
    stale = db.session()
    row: Any = (await stale.scalars(select(Document).where(Document.name == "s")))[0]
    await stale.commit()
    other = db.session()
    fresh = (await other.scalars(select(Document).where(Document.name == "s")))[0]
    fresh.file = FileObject(filename="b.txt", content=b"b")
    await other.commit()
    current = fresh.file.path
    await other.close()
    row.file = FileObject(filename="c.txt", content=b"c")
    await stale.commit()
    await stale.close()
    assert current not in files.paths()  # what the database held was replaced and deleted
    assert files.paths() == {row.file.path}
    assert Counter(files.deleted).most_common(1)[0][1] == 1
    await assert_rule_holds(db, files)
