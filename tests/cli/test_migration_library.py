"""``storeroom.orm.migration`` as a library: journal, resume, adoption, integrity, row updates.

In-process, on memory backends (and SQLite); the kill -9 run against S3 is in
``test_migrate.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from storeroom import FileObject, StoredObject, storages
from storeroom.backends.base import PutResult
from storeroom.backends.obstore import ObstoreBackend
from storeroom.errors import BackendError
from storeroom.orm import UUIDAuditBase
from storeroom.orm.migration import (
    CopyItem,
    MigrationState,
    copy_objects,
    plan_objects,
    plan_rows,
    update_rows,
    update_rows_async,
)


class Counting(ObstoreBackend):
    """A memory backend that counts the PUTs that wrote an object, and fails chosen paths.

    A create-only PUT refused because the object is already there wrote nothing, so it is
    not counted.
    """

    def __init__(self, key: str, fail_paths: set[str] | None = None) -> None:
        super().__init__(key, "memory://")
        self.puts: list[str] = []
        self.fail_paths = fail_paths or set()

    async def put_async(self, path: str, content: Any, **kwargs: Any) -> PutResult:
        if path in self.fail_paths:
            raise BackendError(f"injected failure writing {path!r}")
        result = await super().put_async(path, content, **kwargs)
        self.puts.append(path)
        return result


def _fill(backend: ObstoreBackend, n: int) -> dict[str, bytes]:
    data = {f"docs/{i:03}.bin": bytes([i % 256]) * (100 + i) for i in range(n)}
    for path, body in data.items():
        backend.put(path, body)
    return data


async def test_copy_is_journaled_and_a_rerun_copies_nothing(tmp_path: Path) -> None:
    src, dst = ObstoreBackend("src", "memory://"), Counting("dst")
    data = _fill(src, 20)
    with MigrationState(tmp_path / "s.jsonl", "src", "dst") as state:
        report = await copy_objects(src, dst, plan_objects(src), state=state, concurrency=4)
    assert (report.planned, report.copied, report.skipped, report.failed) == (20, 20, 0, [])
    assert report.bytes_copied == sum(len(b) for b in data.values())
    assert {p: dst.get(p) for p in data} == data
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert {x["source"] for x in lines} == set(data)
    assert all(x["status"] == "verified" and x["from"] == "src" and x["to"] == "dst" for x in lines)

    with MigrationState(tmp_path / "s.jsonl", "src", "dst") as state:
        again = await copy_objects(src, dst, plan_objects(src), state=state)
    assert (again.copied, again.skipped) == (0, 20)
    assert len(dst.puts) == 20


async def test_a_second_run_with_the_same_open_journal_skips_what_the_first_copied(
    tmp_path: Path,
) -> None:
    # One journal object, two runs in one process (a retry loop): the second finds the
    # first's copies in the journal instead of trying each again and adopting it.
    src, dst = ObstoreBackend("src", "memory://"), Counting("dst")
    _fill(src, 8)
    items = list(plan_objects(src))
    with MigrationState(tmp_path / "s.jsonl", "src", "dst") as state:
        first = await copy_objects(src, dst, items[:5], state=state)
        second = await copy_objects(src, dst, items, state=state)
    assert (first.copied, first.skipped) == (5, 0)
    assert (second.copied, second.skipped, second.adopted) == (3, 5, 0)
    assert len(dst.puts) == 8


async def test_a_journaled_copy_deleted_since_is_forgotten_and_copied_again(
    tmp_path: Path,
) -> None:
    src, dst = ObstoreBackend("src", "memory://"), Counting("dst")
    _fill(src, 5)
    with MigrationState(tmp_path / "s.jsonl") as state:
        await copy_objects(src, dst, plan_objects(src), state=state)
    dst.delete("docs/002.bin")
    with MigrationState(tmp_path / "s.jsonl") as state:
        report = await copy_objects(src, dst, plan_objects(src), state=state)
    assert (report.copied, report.skipped) == (1, 4)
    assert dst.puts.count("docs/002.bin") == 2
    assert dst.get("docs/002.bin") == src.get("docs/002.bin")
    statuses = [json.loads(x)["status"] for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert statuses.count("invalid") == 1


async def test_a_copy_that_landed_without_a_journal_entry_is_adopted_not_sent_again(
    tmp_path: Path,
) -> None:
    src, dst = ObstoreBackend("src", "memory://"), Counting("dst")
    data = _fill(src, 3)
    dst.put("docs/001.bin", data["docs/001.bin"])  # as if killed between PUT and journal
    dst.put("docs/002.bin", b"something else")  # other bytes: never replaced, a failure
    with MigrationState(tmp_path / "s.jsonl") as state:
        report = await copy_objects(src, dst, plan_objects(src), state=state)
        assert set(state.verified) == {"docs/000.bin", "docs/001.bin"}
    assert (report.copied, report.adopted) == (1, 1)
    assert dst.puts == ["docs/000.bin"]
    assert dst.get("docs/002.bin") == b"something else"
    assert report.failed == [
        (
            "docs/002.bin",
            "'docs/002.bin' on backend 'dst' already holds other bytes than 'docs/002.bin' on "
            "backend 'src'; nothing was overwritten (a row may reference them). If no row "
            "does (storeroom verify --backend dst), delete that object and run again; else "
            "give the source file another path",
        )
    ]


async def test_failures_are_reported_and_only_they_are_retried(tmp_path: Path) -> None:
    src = ObstoreBackend("src", "memory://")
    _fill(src, 10)
    flaky = Counting("dst", fail_paths={"docs/003.bin", "docs/007.bin"})
    with MigrationState(tmp_path / "s.jsonl") as state:
        report = await copy_objects(src, flaky, plan_objects(src), state=state, concurrency=3)
    assert report.copied == 8
    assert sorted(p for p, _ in report.failed) == ["docs/003.bin", "docs/007.bin"]
    assert "injected failure" in report.failed[0][1]
    flaky.fail_paths.clear()
    flaky.puts.clear()
    with MigrationState(tmp_path / "s.jsonl") as state:
        report = await copy_objects(src, flaky, plan_objects(src), state=state)
    assert (report.copied, report.skipped, report.failed) == (2, 8, [])
    assert sorted(flaky.puts) == ["docs/003.bin", "docs/007.bin"]


async def test_a_source_that_no_longer_matches_its_recorded_checksum_is_not_copied(
    tmp_path: Path,
) -> None:
    src, dst = ObstoreBackend("src", "memory://"), ObstoreBackend("dst", "memory://")
    saved = src.put("a.txt", b"original")
    src.put("a.txt", b"tampered")
    item = CopyItem("a.txt", "a.txt", saved.size, saved.checksum)
    with MigrationState(tmp_path / "s.jsonl") as state:
        report = await copy_objects(src, dst, [item], state=state)
        assert state.verified == {}
    assert report.copied == 0
    assert "not its recorded" in report.failed[0][1]
    assert not dst.exists("a.txt")


def test_journal_ignores_torn_lines_other_migrations_and_invalidated_entries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.jsonl"
    entries = [
        {
            "source": "a",
            "destination": "a",
            "size": 1,
            "checksum": "sha256:x",
            "status": "verified",
            "from": "src",
            "to": "dst",
        },
        {
            "source": "b",
            "destination": "b",
            "size": 1,
            "checksum": "sha256:y",
            "status": "verified",
            "from": "src",
            "to": "elsewhere",
        },
        {
            "source": "c",
            "destination": "c",
            "size": 1,
            "checksum": "sha256:z",
            "status": "verified",
            "from": "src",
            "to": "dst",
        },
        {"source": "c", "status": "invalid", "from": "src", "to": "dst"},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + '{"source": "d", "si')
    with MigrationState(path, "src", "dst") as state:
        assert set(state.verified) == {"a"}


# -- rows ----------------------------------------------------------------------------------


class Paper(UUIDAuditBase):
    """A row owning one file, for the row-update tests."""

    __tablename__ = "migrate_lib_paper"

    name: Mapped[str]
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="old"), nullable=True)


@pytest.fixture
def backends() -> Iterator[tuple[ObstoreBackend, ObstoreBackend]]:
    old = storages.register_backend(ObstoreBackend("old", "memory://"), overwrite=True)
    new = storages.register_backend(ObstoreBackend("new", "memory://"), overwrite=True)
    yield old, new
    storages._backends.pop("old", None)
    storages._backends.pop("new", None)


def _papers(session: Session, n: int) -> None:
    session.add_all(
        [
            Paper(
                name=f"p{i}", file=FileObject(filename=f"p{i}.txt", content=f"paper {i}".encode())
            )
            for i in range(n)
        ]
    )
    session.commit()


def test_update_rows_switches_only_verified_rows_in_batches(
    tmp_path: Path, backends: tuple[ObstoreBackend, ObstoreBackend]
) -> None:
    old, new = backends
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    Paper.metadata.create_all(engine, tables=[Paper.__table__])
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        _papers(session, 25)
        files = [p.file for p in session.scalars(select(Paper))]
    items = plan_rows(files, "old")
    unverified = items.pop()  # never copied: its row must stay on "old"
    with MigrationState(tmp_path / "s.jsonl", "old", "new") as state:
        report = asyncio.run(copy_objects(old, new, items, state=state))
        assert report.copied == 24
        batches: list[int] = []
        updated = update_rows(
            factory, Paper.file, "old", "new", state, batch_size=10, on_batch=batches.append
        )
        assert update_rows(factory, Paper.file, "old", "new", state) == 0  # idempotent
    assert updated == 24
    assert len(batches) == 3 and sum(batches) == 24  # 25 rows, 10 per transaction
    with factory() as session:
        rows = session.scalars(select(Paper)).all()
    moved = [r for r in rows if r.file is not None and r.file.backend == "new"]
    assert len(moved) == 24
    assert all(r.file.get_content() == f"paper {r.name[1:]}".encode() for r in moved)
    stayed = [r for r in rows if r.file is not None and r.file.backend == "old"]
    assert [r.file.path for r in stayed] == [unverified.source]
    assert len(list(old.list())) == 25  # replaced source objects are kept


async def test_update_rows_async_with_an_async_session(
    tmp_path: Path, backends: tuple[ObstoreBackend, ObstoreBackend]
) -> None:
    old, new = backends
    sync_engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    Paper.metadata.create_all(sync_engine, tables=[Paper.__table__])
    with Session(sync_engine) as session:
        _papers(session, 5)
        files = [p.file for p in session.scalars(select(Paper))]
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    factory = async_sessionmaker(engine, expire_on_commit=False)
    with MigrationState(tmp_path / "s.jsonl", "old", "new") as state:
        await copy_objects(old, new, plan_rows(files, "old"), state=state)
        assert await update_rows_async(factory, Paper.file, "old", "new", state) == 5
    async with factory() as session:
        rows = (await session.scalars(select(Paper))).all()
    assert {r.file.backend for r in rows if r.file is not None} == {"new"}
    await engine.dispose()


def test_a_long_journal_is_read_back_line_by_line_into_its_index(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with path.open("w") as journal:
        for i in range(5000):
            journal.write(
                json.dumps(
                    {
                        "source": f"p/{i}",
                        "destination": f"p/{i}",
                        "size": i,
                        "checksum": f"sha256:{i}",
                        "status": "verified",
                        "from": "src",
                        "to": "dst",
                    }
                )
                + "\n"
            )
        for i in range(0, 5000, 2):  # every other copy invalidated since
            journal.write(
                json.dumps({"source": f"p/{i}", "status": "invalid", "from": "src", "to": "dst"})
                + "\n"
            )
    with MigrationState(path, "src", "dst") as state:
        assert len(state.verified) == 2500
        assert "p/1" in state.verified and "p/2" not in state.verified
        assert state.verified["p/3"]["size"] == 3
        assert state.verified.get("p/4") is None
        assert next(iter(state.verified)) == "p/1"
        state.forget(CopyItem("p/1", "p/1"), "test")
        assert "p/1" not in state.verified
    with MigrationState(path, "src", "dst") as state:
        assert len(state.verified) == 2499


def test_plan_scan_streams_each_referenced_file_once_from_the_rows(
    tmp_path: Path, backends: tuple[ObstoreBackend, ObstoreBackend]
) -> None:
    from storeroom.orm.maintenance import ReferenceScan
    from storeroom.orm.migration import plan_scan

    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    Paper.metadata.create_all(engine, tables=[Paper.__table__])
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        _papers(session, 12)
        first = session.scalars(select(Paper)).first()
        assert first is not None
        # Two rows, one file: built by hand, as legacy rows may be (a loaded FileObject
        # given to another row would be copied).
        session.add(Paper(name="twin", file=FileObject.from_dict(first.file.to_dict())))
        session.commit()
        files = [p.file for p in session.scalars(select(Paper))]
    with ReferenceScan(Paper.file, page_size=5) as scan, factory() as session:
        scan.read_rows(session, list_ahead={})
        assert scan.referenced_totals("old") == (12, sum(f.size for f in files[:12]))
        planned = list(plan_scan(scan, "old"))
    assert planned == sorted(plan_rows(files, "old"), key=lambda item: item.source)
    assert all(item.checksum and item.content_type == "text/plain" for item in planned)
