"""A process killed between upload and commit, and a long randomized run.

After SIGKILL only orphans remain (never a row pointing at missing bytes) and
``find_orphans`` finds every one; the randomized run checks, after every step, that no row
points at a missing object and that no object lacks a row.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm.attributes import flag_modified

from storeroom import FileObject, ObstoreBackend, StoreroomError, storages
from storeroom.orm import find_dangling, find_orphans
from tests.orm.conftest import SUFFIX, Db, Document, FaultyBackend

ROOT = Path(__file__).resolve().parents[2]

KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.orm import Session
    from storeroom import FileObject, ObstoreBackend, storages
    from tests.orm.conftest import Document

    url, store = sys.argv[1], sys.argv[2]
    storages.register_backend(ObstoreBackend("files", store))
    rows = [Document(name=f"k{i}", file=FileObject(filename="a.bin", content=b"k" * 1000))
            for i in range(5)]

    def die():
        sys.stdout.write("uploaded\\n"); sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if "+aiosqlite" in url or "+asyncpg" in url or "+aiomysql" in url:
        async def main():
            engine = create_async_engine(url)
            async with AsyncSession(engine) as session:
                session.add_all(rows)
                await session.flush()   # uploads done, transaction open
                die()
        asyncio.run(main())
    else:
        with Session(create_engine(url)) as session:
            session.add_all(rows)
            session.flush()
            die()
    """
)


async def test_sigkill_between_upload_and_commit_leaves_only_orphans(
    db: Db, tmp_path: Path
) -> None:
    store = f"file://{tmp_path}/store"
    backend = storages.register_backend(ObstoreBackend("files", store), overwrite=True)
    env = {**os.environ, "STOREROOM_TEST_SUFFIX": SUFFIX, "PYTHONPATH": f"{ROOT}/src:{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, db.url, store],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "uploaded"
    objects = {info.path for info in backend.list()}
    assert len(objects) == 5

    session = db.session()
    assert await session.scalars(select(Document)) == []
    dangling = await session.run_sync(lambda s: find_dangling(s, Document))
    orphans = await session.run_sync(
        lambda s: find_orphans(s, Document, "files", grace=timedelta(0))
    )
    young = await session.run_sync(lambda s: find_orphans(s, Document, "files"))
    await session.close()
    assert dangling == []
    assert {o.path for o in orphans} == objects
    assert young == []  # within the grace period an upload may belong to a live transaction


OPERATIONS = int(os.environ.get("STOREROOM_RANDOM_OPERATIONS", "200"))


@pytest.mark.slow
async def test_randomized_operations_keep_store_and_rows_consistent(
    db: Db, files: FaultyBackend
) -> None:
    rng = random.Random(20261125)
    counts: dict[str, int] = {}
    names = 0
    session = db.session()

    async def rows() -> list[Document]:
        return await session.scalars(select(Document).order_by(Document.name))

    def new_file() -> FileObject:
        return FileObject(
            filename=rng.choice(["a.pdf", "report.pdf", "b c.txt"]),
            content=os.urandom(rng.randint(0, 3000)),
        )

    for _step in range(OPERATIONS):
        existing = await rows()
        op = rng.choice(
            [
                "insert",
                "insert",
                "replace",
                "clear",
                "append",
                "remove",
                "delete",
                "rollback",
                "savepoint",
                "fail-upload",
                "fail-commit",
                "move",
                "move-in-two-flushes",
                "put-back",
                "append-then-remove",
                "new-content",
                "retry",
            ]
            if existing
            else ["insert", "fail-upload"]
        )
        counts[op] = counts.get(op, 0) + 1
        try:
            if op == "insert":
                names += 1
                session.add(
                    Document(
                        name=f"r{names}",
                        file=new_file(),
                        attachments=[new_file() for _ in range(rng.randint(0, 2))],
                    )
                )
                await session.commit()
            elif op == "replace":
                rng.choice(existing).file = new_file()
                await session.commit()
            elif op == "clear":
                rng.choice(existing).file = None
                await session.commit()
            elif op == "append":
                row = rng.choice(existing)
                row.attachments = [*(row.attachments or []), new_file()]
                await session.commit()
            elif op == "remove":
                row = rng.choice(existing)
                if row.attachments:
                    row.attachments.pop(rng.randrange(len(row.attachments)))
                await session.commit()
            elif op == "delete":
                await session.delete(rng.choice(existing))
                await session.commit()
            elif op == "rollback":
                rng.choice(existing).file = new_file()
                names += 1
                session.add(Document(name=f"r{names}", file=new_file()))
                await session.flush()
                await session.rollback()
            elif op == "savepoint":
                nested = session.begin_nested()
                if db.is_async:
                    nested = await nested
                rng.choice(existing).file = new_file()
                await session.flush()
                await (nested.rollback() if db.is_async else _sync(nested.rollback))
                await session.commit()
            elif op == "fail-upload":
                files.fail_on = {files.writes + 1}
                names += 1
                session.add(Document(name=f"r{names}", file=new_file()))
                with pytest.raises(StoreroomError):
                    await session.commit()
                await session.rollback()
            elif op == "move":  # a file changes rows within one transaction
                source, target = rng.choice(existing), rng.choice(existing)
                target.file, source.file = source.file, None
                await session.commit()
            elif op == "move-in-two-flushes":  # taken by one row, then given up by the other
                source, target = rng.choice(existing), rng.choice(existing)
                if source is not target and source.file is not None:
                    target.file = source.file
                    await session.flush()
                    source.file = None
                await session.commit()
            elif op == "put-back":  # replaced, flushed, then the old value restored
                row = rng.choice(existing)
                old = row.file
                row.file = new_file()
                await session.flush()
                row.file = old
                await session.commit()
            elif op == "append-then-remove":
                row = rng.choice(existing)
                row.attachments = list(row.attachments or [])
                row.attachments.append(new_file())
                await session.flush()
                row.attachments.pop()
                await session.commit()
            elif op == "new-content":  # set_content on a stored file
                row = rng.choice(existing)
                if row.file is not None:
                    row.file.set_content(os.urandom(rng.randint(0, 3000)))
                    flag_modified(row, "file")
                await session.commit()
            elif op == "retry":  # constraint violation, then the same row fixed and re-added
                row = Document(name=rng.choice(existing).name, file=new_file())
                session.add(row)
                with pytest.raises(DatabaseIntegrityError):
                    await session.commit()
                await session.rollback()
                names += 1
                row.name = f"r{names}"
                session.add(row)
                await session.commit()
            elif op == "fail-commit":
                session.add(Document(name=rng.choice(existing).name, file=new_file()))
                with pytest.raises(DatabaseIntegrityError):
                    await session.commit()
                await session.rollback()
        finally:
            files.fail_on = set()
        dangling = await session.run_sync(lambda s: find_dangling(s, Document))
        orphans = await session.run_sync(
            lambda s: find_orphans(s, Document, files, grace=timedelta(0))
        )
        assert dangling == [], (op, dangling)
        assert orphans == [], (op, [o.path for o in orphans])
    await session.close()
    print(
        f"\nrandomized {db.name} ({'async' if db.is_async else 'sync'}): {OPERATIONS} "
        f"operations {counts}, dangling 0, orphans 0, objects {len(files.paths())}"
    )


async def _sync(func):  # type: ignore[no-untyped-def]
    return func()
