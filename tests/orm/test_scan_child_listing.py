"""A large scan lists local disk in a child process: the same answers, and nothing left behind.

:class:`~storeroom.orm.ReferenceScan` hands the listing of a local store to a child process
once it has read enough references (``maintenance._LIST_APART_AFTER``; 0 here, so every scan
does). Each test runs the real child: the answers must equal those of a listing in this
process (links planted in the store, shards, prefixes included); a child that cannot start,
fails, is killed or prints nonsense must leave the listing to this process; a scan that
fails while its child lists must kill the child; and a child whose scan's process is gone
must stop without writing.
"""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storeroom import FileObject, ObstoreBackend, StoredObject, events, storages
from storeroom.backends import local_listing
from storeroom.orm import ReferenceScan, collect_findings, find_dangling, maintenance
from storeroom.orm.maintenance import Shard
from tests.orm.conftest import Db
from tests.orm.test_maintenance import ORPHANS, TARGET, _run, _seed


class Spy:
    """Records what each child listing of the test returned (None: it did not finish)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.results: list[int | None] = []
        self.listings: list[local_listing.ChildListing] = []
        real = local_listing.ChildListing.run

        def run(listing: local_listing.ChildListing) -> int | None:
            self.listings.append(listing)
            result = real(listing)
            self.results.append(result)
            return result

        monkeypatch.setattr(local_listing.ChildListing, "run", run)


@pytest.fixture(params=["plain", "links"])
def disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ObstoreBackend]:
    """The backend ``files`` on local disk: plain, or with a link to a file and one to a
    directory (which the child's own walk leaves to obstore's listing)."""
    root = tmp_path / "store"
    backend = ObstoreBackend("files", f"file://{root}", mkdir=True)
    storages.register_backend(backend, overwrite=True)
    (root / "stray").mkdir(parents=True)
    if request.param == "links":
        outside = tmp_path / "outside"
        (outside / "deep").mkdir(parents=True)
        (outside / "secret.bin").write_bytes(b"not the store's")
        (outside / "deep" / "more.bin").write_bytes(b"nor this")
        os.symlink(outside / "secret.bin", root / "stray" / "linked.bin")
        os.symlink(outside / "deep", root / "linked-dir")
    yield backend


def _walked(disk: ObstoreBackend, listings: list[local_listing.ChildListing]) -> None:
    """Each child walked the store itself, unless links sent it to obstore's listing."""
    linked = os.path.islink(os.path.join(str(disk.listing_directory), "linked-dir"))
    assert listings
    for listing in listings:
        if linked:
            assert (
                listing.note.startswith("listed by obstore: ") and "symbolic link" in listing.note
            )
        else:
            assert listing.note == ""


@pytest.fixture
def apart(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """Every scan lists its local stores in a child; the spy sees each child's result."""
    monkeypatch.setattr(maintenance, "_LIST_APART_AFTER", 0)
    return Spy(monkeypatch)


def _report(session: Session) -> dict[str, Any]:
    return collect_findings(session, TARGET, orphans_in="files", grace=timedelta(0))


async def test_a_child_listing_finds_exactly_what_this_process_finds(
    db: Db, disk: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _seed(db, disk)
    here = await _run(db, _report)
    assert [o["path"] for o in here["orphans"]] == ORPHANS  # the links are never listed

    monkeypatch.setattr(maintenance, "_LIST_APART_AFTER", 0)
    spy = Spy(monkeypatch)
    assert await _run(db, _report) == here
    assert spy.results and None not in spy.results
    _walked(disk, spy.listings)

    # Each shard's child keeps that shard's paths only; together they are the whole answer.
    def sharded(session: Session) -> list[str]:
        found: list[str] = []
        for index in range(3):
            with ReferenceScan(TARGET, shard=Shard(index, 3)) as scan:
                scan.read_rows(session)
                found += [o.path for o in scan.orphans("files", grace=timedelta(0))]
        return sorted(found)

    assert await _run(db, sharded) == sorted(ORPHANS)
    assert len(spy.results) == 1 + 3 and None not in spy.results
    _walked(disk, spy.listings)


async def test_a_child_lists_only_the_prefix_asked_for(
    db: Db, disk: ObstoreBackend, apart: Spy
) -> None:
    await _seed(db, disk)

    def under(session: Session) -> list[str]:
        with ReferenceScan(TARGET) as scan:
            scan.read_rows(session, list_ahead={"files": "stray"})
            return [o.path for o in scan.orphans("files", prefix="stray", grace=timedelta(0))]

    assert await _run(db, under) == ORPHANS[1:]
    # Only the prefix went through the child: its count is the objects under stray/
    # (two orphans, short.bin and wrong.bin; not the link).
    assert apart.results == [4]
    _walked(disk, apart.listings)


class Base(DeclarativeBase):
    pass


class Counted(Base):
    __tablename__ = "sr_scan_counted"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[Any] = mapped_column(StoredObject(backend="files"), nullable=True)


class Coded(Base):
    __tablename__ = "sr_scan_coded"
    code: Mapped[str] = mapped_column(primary_key=True)
    file: Mapped[Any] = mapped_column(StoredObject(backend="files"), nullable=True)


class Paired(Base):
    __tablename__ = "sr_scan_paired"
    a: Mapped[int] = mapped_column(primary_key=True)
    b: Mapped[str] = mapped_column(primary_key=True)
    file: Mapped[Any] = mapped_column(StoredObject(backend="files"), nullable=True)


class Keyed(Base):
    __tablename__ = "sr_scan_keyed"
    key: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    file: Mapped[Any] = mapped_column(StoredObject(backend="files"), nullable=True)


@pytest.fixture
def sqlite_session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path / 'rows.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _missing(name: str) -> FileObject:
    return FileObject(backend="files", filename=name, path=f"never/{name}", size=1)


def test_findings_carry_each_kind_of_primary_key(
    sqlite_session: Session, disk: ObstoreBackend, apart: Spy
) -> None:
    # Integer and string keys are kept as they are in the index, any other pickled: the
    # findings give each back as the row's primary key.
    key = uuid.uuid4()
    sqlite_session.add_all(
        [
            Counted(id=7, file=_missing("a")),
            Counted(id=-(2**62), file=_missing("b")),
            Coded(code="x'); DROP TABLE ref; --", file=_missing("c")),
            Paired(a=1, b="one", file=_missing("d")),
            Keyed(key=key, file=_missing("e")),
        ]
    )
    sqlite_session.commit()
    found = find_dangling(sqlite_session, [Counted.file, Coded.file, Paired.file, Keyed.file])
    assert [(d.model, d.primary_key) for d in found] == [
        ("Counted", (-(2**62),)),
        ("Counted", (7,)),
        ("Coded", ("x'); DROP TABLE ref; --",)),
        ("Paired", (1, "one")),
        ("Keyed", (key,)),
    ]
    assert apart.results and None not in apart.results


@pytest.mark.parametrize(
    ("row", "keys", "kept"),
    [
        ((5, "json"), 1, 5),
        (("name", "json"), 1, "name"),
        ((2**63 - 1, "json"), 1, 2**63 - 1),
        ((-(2**63), "json"), 1, -(2**63)),
    ],
)
def test_integer_and_string_keys_are_kept_as_they_are(row: Any, keys: int, kept: Any) -> None:
    assert maintenance._row_key(row, keys) == kept


@pytest.mark.parametrize(
    "row",
    [(2**63, "json"), (-(2**63) - 1, "json"), (True, "json"), (b"k", "json"), (1.5, "json")],
)
def test_any_other_lone_key_is_pickled(row: Any) -> None:
    # Out of SQLite's integer range, a bool (an int subclass), bytes, a float: pickled, so
    # they come back exactly (a bool as a bool, bytes as bytes).
    key = maintenance._row_key(row, 1)
    assert isinstance(key, bytes) and pickle.loads(key) == (row[0],)
    assert type(pickle.loads(key)[0]) is type(row[0])


def test_a_composite_key_is_pickled() -> None:
    key = maintenance._row_key((1, "b", "json"), 2)
    assert isinstance(key, bytes) and pickle.loads(key) == (1, "b")


def _seed_rows(session: Session, disk: ObstoreBackend) -> None:
    session.add_all([Counted(id=i, file=FileObject(content=b"x", filename="x")) for i in range(3)])
    session.add(Counted(id=99, file=_missing("gone")))
    session.commit()
    disk.put("stray/orphan.bin", b"orphan")


def _orphans(session: Session) -> list[str]:
    with ReferenceScan(Counted) as scan:
        scan.read_rows(session)
        return [o.path for o in scan.orphans("files", grace=timedelta(0))]


@pytest.mark.parametrize(
    "broken",
    [
        "import sys; sys.exit('an interpreter without obstore')",
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        "print('not a count')",
        'print(\'{"objects": "many"}\')',
    ],
    ids=["fails", "killed", "nonsense", "bad-count"],
)
def test_a_child_that_does_not_finish_leaves_the_listing_to_this_process(
    sqlite_session: Session,
    disk: ObstoreBackend,
    apart: Spy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    _seed_rows(sqlite_session, disk)
    monkeypatch.setattr(local_listing, "_BOOT", broken)
    with caplog.at_level(logging.DEBUG, logger="storeroom.orm"):
        assert _orphans(sqlite_session) == ["stray/orphan.bin"]
    assert apart.results == [None]
    assert "listing backend 'files' in a child process failed, listing it here" in caplog.text
    assert apart.listings[0].error  # why, in its words (or its exit status)


def test_no_interpreter_to_start_leaves_the_listing_to_this_process(
    sqlite_session: Session, disk: ObstoreBackend, apart: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_rows(sqlite_session, disk)
    started: list[Any] = []
    real_popen = local_listing.subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        started.append(args[0][0])
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(local_listing.subprocess, "Popen", popen)
    # An interpreter's name that is not there: the start fails, this process lists.
    missing = str(disk.listing_directory) + "/python3"
    monkeypatch.setattr(sys, "executable", missing)
    assert _orphans(sqlite_session) == ["stray/orphan.bin"]
    assert apart.results == [None] and "could not start" in apart.listings[-1].error
    assert started == [missing]
    # No interpreter, an embedding server's binary, a frozen application: nothing is
    # started at all (started with the child's arguments, they would do something else).
    for executable, frozen in (("", False), ("/usr/bin/uwsgi", False), ("/opt/app/app", True)):
        monkeypatch.setattr(sys, "executable", executable)
        monkeypatch.setattr(sys, "frozen", frozen, raising=False)
        assert _orphans(sqlite_session) == ["stray/orphan.bin"]
        assert "no Python interpreter to start" in apart.listings[-1].error
    assert apart.results == [None] * 4 and started == [missing]


def test_a_scan_that_fails_while_its_child_lists_kills_the_child(
    sqlite_session: Session,
    disk: ObstoreBackend,
    apart: Spy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _seed_rows(sqlite_session, disk)
    monkeypatch.setattr(local_listing, "_BOOT", "import time; time.sleep(600)")
    started: list[Any] = []
    real_popen = local_listing.subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(local_listing.subprocess, "Popen", popen)

    def failing(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(maintenance, "_insert_many", failing)
    scans = tmp_path / "scans"
    scans.mkdir()
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        with ReferenceScan(Counted, directory=str(scans)) as scan:
            scan.read_rows(sqlite_session)
    assert len(started) == 1 and started[0].wait(timeout=30) == -9  # killed, not finished
    assert list(scans.iterdir()) == []


def test_a_child_whose_scan_is_gone_stops_without_writing(
    disk: ObstoreBackend, tmp_path: Path
) -> None:
    disk.put("a/one.bin", b"1")
    index = str(tmp_path / "index.sqlite")
    db = local_listing.connect(index)
    db.execute(
        "CREATE TABLE obj (backend TEXT, path TEXT, size INTEGER, modified REAL, etag TEXT, version TEXT)"
    )
    db.execute("INSERT INTO obj VALUES ('files', 'kept', 1, NULL, NULL, NULL)")
    listing = local_listing.ChildListing(index, "files", str(disk.listing_directory), "", None)
    listing._spec["parent"] = -1  # not the child's parent: as if the scan's process died
    assert listing.run() is None
    assert "exit status 3" in listing.error
    assert db.execute("SELECT backend, path FROM obj").fetchall() == [("files", "kept")]
    db.close()


def test_a_child_listing_is_one_list_event_with_the_count(
    sqlite_session: Session, disk: ObstoreBackend, apart: Spy
) -> None:
    _seed_rows(sqlite_session, disk)
    seen: list[events.StorageEvent] = []
    with events.subscribed(seen.append):
        assert _orphans(sqlite_session) == ["stray/orphan.bin"]
    listed = [e for e in seen if e.operation == "list"]
    assert [(e.backend, e.size, e.error) for e in listed] == [("files", 4, None)]
    assert apart.results == [4]


def test_a_small_scan_lists_here(
    sqlite_session: Session, disk: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Below _LIST_APART_AFTER references a child would not repay its start.
    _seed_rows(sqlite_session, disk)
    spy = Spy(monkeypatch)
    assert _orphans(sqlite_session) == ["stray/orphan.bin"]
    assert spy.results == []


def test_only_obstores_own_local_listing_may_be_listed_elsewhere(tmp_path: Path) -> None:
    local = ObstoreBackend("l", f"file://{tmp_path}", mkdir=True)
    assert local.listing_directory == os.path.realpath(tmp_path)
    assert ObstoreBackend("m", "memory://").listing_directory is None

    class Filtered(ObstoreBackend):
        def _list(self, prefix: str) -> Iterator[Any]:
            return iter(())

    # A subclass that changes what a listing yields keeps its listings in this process.
    assert Filtered("f", f"file://{tmp_path}").listing_directory is None
    pytest.importorskip("fsspec")
    from storeroom.backends.fsspec import FSSpecBackend

    assert FSSpecBackend("s", "file", prefix=str(tmp_path)).listing_directory is None


def test_no_child_starts_once_the_scan_has_failed(
    sqlite_session: Session, disk: ObstoreBackend, apart: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lister thread can reach the child's start just after the scan failed and stopped
    # its children: it must not start one (the scan would wait for its whole listing).
    started: list[Any] = []
    monkeypatch.setattr(local_listing.subprocess, "Popen", lambda *a, **k: started.append(a))
    with ReferenceScan(Counted) as scan:
        scan._stop_children()
        with pytest.raises(local_listing.Stopped):
            scan._list("files", apart=True)
    assert started == [] and apart.listings and apart.results == []


def test_reading_the_references_leaves_the_listings_file_free(
    sqlite_session: Session, disk: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the references go into the scan's own file (one transaction), a listing writes
    # the listing's file. Nothing in that transaction may lock the listing's file: the
    # listing would stop until the commit (a child's stopped for 7 s at a million rows).
    _seed_rows(sqlite_session, disk)
    seen: list[str] = []
    real = maintenance.ReferenceScan._load_references

    def load(scan: ReferenceScan, *args: Any) -> int:
        count = real(scan, *args)
        assert scan._db.in_transaction  # read, not yet committed
        other = local_listing.connect(scan._paths[1])
        try:
            other.execute("PRAGMA busy_timeout=0")
            other.execute("BEGIN EXCLUSIVE")  # refused while any other connection reads
            other.execute("ROLLBACK")
            seen.append("free")
        except sqlite3.OperationalError as exc:
            seen.append(str(exc))
        finally:
            other.close()
        return count

    monkeypatch.setattr(maintenance.ReferenceScan, "_load_references", load)
    assert _orphans(sqlite_session) == ["stray/orphan.bin"]
    assert seen == ["free"]


def test_a_child_that_leaves_its_walk_to_obstore_says_why(
    sqlite_session: Session,
    disk: ObstoreBackend,
    apart: Spy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _seed_rows(sqlite_session, disk)
    with caplog.at_level(logging.DEBUG, logger="storeroom.orm"):
        assert _orphans(sqlite_session) == ["stray/orphan.bin"]
    assert apart.results == [4]
    _walked(disk, apart.listings)
    linked = os.path.islink(os.path.join(str(disk.listing_directory), "linked-dir"))
    assert ("backend 'files': listed by obstore: " in caplog.text) == linked


def test_a_listing_that_fails_half_way_leaves_the_index_as_it_was(tmp_path: Path) -> None:
    db = local_listing.connect(str(tmp_path / "index.sqlite"))
    db.execute(
        "CREATE TABLE obj (backend TEXT, path TEXT, size INTEGER, modified REAL, etag TEXT, version TEXT)"
    )
    db.execute("INSERT INTO obj VALUES ('files', 'kept', 1, NULL, NULL, NULL)")

    def batches() -> Iterator[list[Any]]:
        yield [("new", 1, None, None, None)]
        raise local_listing.Irregular("a link, say")

    with pytest.raises(local_listing.Irregular):
        local_listing.fill(db, "files", batches(), None)
    assert not db.in_transaction
    assert db.execute("SELECT backend, path FROM obj").fetchall() == [("files", "kept")]
    # Listed again, the rows replace the old ones once.
    rows = [("a", 1, None, None, None), ("b", 2, None, None, None)]
    assert local_listing.fill(db, "files", iter([rows]), None) == 2
    assert db.execute("SELECT path FROM obj ORDER BY path").fetchall() == [("a",), ("b",)]
    db.close()


def test_the_comparison_reads_the_references_in_the_listings_order(
    sqlite_session: Session, disk: ObstoreBackend
) -> None:
    # From the references' index alone (no lookup of each row), in path order: each
    # lookup in the listing's index then falls next to the last.
    _seed_rows(sqlite_session, disk)
    sqlite_session.add(Counted(id=100, file=FileObject(content=b"x", filename="y")))
    sqlite_session.commit()
    disk.put(sqlite_session.get(Counted, 100).file.path, b"longer")  # type: ignore[union-attr]
    with ReferenceScan(Counted) as scan:
        scan.read_rows(sqlite_session)
        assert [d.file.path for d in scan.dangling()] == ["never/gone"]
        assert [(m.recorded, m.stored) for m in scan.mismatched()] == [(1, 6)]
        plan = scan._db.execute("EXPLAIN QUERY PLAN " + maintenance._COMPARE).fetchall()
    details = [row[-1] for row in plan]
    assert "SCAN r USING COVERING INDEX ref_at" in details, details
