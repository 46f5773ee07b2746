"""Orphans, dangling references and mismatches, counted exactly, on every database and driver.

Rows own files (one per row and lists of them); then the store and the rows are made to
disagree on purpose: objects no row references, rows whose object was never written (one in
a list among good ones), an object shorter than its row says, one whose bytes differ from
the recorded checksum. Every finder must report exactly those, honour the grace period and
the prefix, read rows in pages, and ``remove_orphans`` must keep an orphan that a row
started to reference between the scan and the delete.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from storeroom import FileObject, storages
from storeroom.backends.base import ObjectInfo
from storeroom.errors import ConfigurationError, StoreroomError
from storeroom.orm import (
    ReferenceScan,
    collect_findings,
    find_dangling,
    find_orphans,
    iter_findings,
    maintenance,
    remove_orphans,
)
from storeroom.orm.variants import variant_path
from tests.orm.conftest import Db, Document, FaultyBackend, Report

TARGET = [Document, Report]
ROWS = 5
# 5 documents x (file + 2 attachments) + 1 report + dangling + short + wrong + a list of 2
REFERENCES = ROWS * 3 + 1 + 3 + 2
ORPHANS = ["elsewhere/orphan-3.bin", "stray/orphan-1.bin", "stray/orphan-2.bin"]
DANGLING = ["never/uploaded.txt", "never/in-list.txt"]


async def _seed(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    session.add_all(
        [
            Document(
                name=f"d{i}",
                file=FileObject(filename=f"f{i}.txt", content=f"file {i}".encode()),
                attachments=[
                    FileObject(filename=f"a{i}-{j}.txt", content=b"attached") for j in range(2)
                ],
            )
            for i in range(ROWS)
        ]
    )
    session.add(Report(name="r", file=FileObject(filename="r.txt", content=b"report")))
    await session.commit()
    for path in ORPHANS:
        files.put(path, b"nobody references me")
    files.put("stray/short.bin", b"12345")
    files.put("stray/wrong.bin", b"abc")
    files.put("listed/ok.bin", b"ok")
    session.add_all(
        [
            Document(
                name="dangling",
                file=FileObject(
                    backend="files", filename="gone.txt", path="never/uploaded.txt", size=3
                ),
            ),
            Document(
                name="short",
                file=FileObject(
                    backend="files", filename="short.bin", path="stray/short.bin", size=4
                ),
            ),
            Document(
                name="wrong",
                file=FileObject(
                    backend="files",
                    filename="wrong.bin",
                    path="stray/wrong.bin",
                    size=3,
                    checksum="sha256:" + "0" * 64,
                ),
            ),
            Document(
                name="list",
                attachments=[
                    FileObject(backend="files", filename="ok.bin", path="listed/ok.bin", size=2),
                    FileObject(
                        backend="files", filename="lost.txt", path="never/in-list.txt", size=1
                    ),
                ],
            ),
        ]
    )
    await session.commit()
    await session.close()


async def _run(db: Db, func: Any) -> Any:
    session = db.session()
    try:
        return await session.run_sync(func)
    finally:
        await session.close()


async def test_counts_are_exact_with_lists_checksums_and_grace(
    db: Db, files: FaultyBackend
) -> None:
    await _seed(db, files)
    dangling = await _run(db, lambda s: find_dangling(s, TARGET))
    # In row order within each column; the columns in the order named.
    assert [(d.model, d.column, d.file.path) for d in dangling] == [
        ("Document", "file", "never/uploaded.txt"),
        ("Document", "attachments", "never/in-list.txt"),
    ]
    assert dangling[0].file.filename == "gone.txt" and dangling[0].file.size == 3
    assert len(dangling[0].primary_key) == 1 and dangling[0].primary_key[0] is not None

    orphans = await _run(db, lambda s: find_orphans(s, TARGET, "files", grace=timedelta(0)))
    assert [o.path for o in orphans] == ORPHANS
    assert all(o.size == len(b"nobody references me") for o in orphans)
    # Within the grace period the same objects may belong to a transaction in flight.
    assert await _run(db, lambda s: find_orphans(s, TARGET, files)) == []
    # Naming only some columns makes the others' files look like orphans.
    partial = await _run(db, lambda s: find_orphans(s, Report, files, grace=timedelta(0)))
    assert len(partial) == len(ORPHANS) + ROWS * 3 + 3  # short, wrong and listed/ok too

    report = await _run(
        db,
        lambda s: collect_findings(
            s, TARGET, orphans_in="files", grace=timedelta(0), checksums=True
        ),
    )
    assert report["summary"] == {
        "references": REFERENCES,
        "dangling": 2,
        "mismatched": 2,
        "orphans": 3,
        "orphans_checked": True,
        "checksums_read": True,
    }
    assert sorted(
        (m["path"], m["kind"], m["recorded"], m["stored"]) for m in report["mismatched"]
    ) == [
        ("stray/short.bin", "size", 4, 5),
        (
            "stray/wrong.bin",
            "checksum",
            "sha256:" + "0" * 64,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
    ]
    assert [d["path"] for d in report["dangling"]] == DANGLING
    assert [o["path"] for o in report["orphans"]] == ORPHANS

    # Without --checksums only the size is compared; no orphans asked for, none listed.
    quick = await _run(db, lambda s: list(iter_findings(s, TARGET)))
    sections = [section for section, _entry in quick]
    assert sections == ["dangling", "dangling", "mismatched", "summary"]
    assert quick[-1][1]["orphans_checked"] is False and quick[-1][1]["orphans"] == 0


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("stray", ORPHANS[1:]),
        ("stray/", ORPHANS[1:]),
        ("/stray/", ORPHANS[1:]),
        ("elsewhere", ORPHANS[:1]),
        ("str", []),
        ("never", []),
    ],
)
async def test_orphans_under_a_prefix_are_those_inside_that_directory(
    db: Db, files: FaultyBackend, prefix: str, expected: list[str]
) -> None:
    await _seed(db, files)
    found = await _run(
        db, lambda s: find_orphans(s, TARGET, "files", prefix=prefix, grace=timedelta(0))
    )
    assert [o.path for o in found] == expected

    # The same through a scan that lists only the prefix (nothing listed ahead).
    def scan_prefix(session: Session) -> list[str]:
        with ReferenceScan(TARGET) as scan:
            scan.read_rows(session, list_ahead={})
            return [o.path for o in scan.orphans(files, prefix=prefix, grace=timedelta(0))]

    assert await _run(db, scan_prefix) == expected


async def test_dangling_and_mismatched_share_one_comparison_redone_when_rows_change(
    db: Db, files: FaultyBackend
) -> None:
    # dangling() compares every reference with the listing once; mismatched() reads the
    # same comparison. Reading the rows again must compare again: a row deleted since must
    # drop out of both answers.
    await _seed(db, files)

    def scan(session: Session) -> list[list[str]]:
        with ReferenceScan(TARGET) as scan:
            scan.read_rows(session)
            answers = [
                [d.file.path for d in scan.dangling()],
                [m.file.path for m in scan.mismatched()],
                [m.file.path for m in scan.mismatched()],  # asked twice: the same
            ]
            table = Document.__table__.name
            session.connection().exec_driver_sql(
                f"DELETE FROM {table} WHERE name IN ('short', 'dangling')"
            )
            scan.read_rows(session)
            answers += [
                [m.file.path for m in scan.mismatched()],  # mismatched first this time
                [d.file.path for d in scan.dangling()],
            ]
            return answers

    assert await _run(db, scan) == [
        DANGLING,
        ["stray/short.bin"],
        ["stray/short.bin"],
        [],
        DANGLING[1:],
    ]


async def test_rows_are_read_in_pages_smaller_than_the_table(db: Db, files: FaultyBackend) -> None:
    await _seed(db, files)
    engine = db.engine.sync_engine if db.is_async else db.engine
    seen: list[dict[str, Any]] = []

    def record(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if "CAST" in statement.upper() and "FROM sr_document" in statement:
            seen.append(dict(context.execution_options))

    event.listen(engine, "before_cursor_execute", record)
    try:
        report = await _run(
            db,
            lambda s: collect_findings(
                s, TARGET, orphans_in="files", grace=timedelta(0), checksums=True, page_size=2
            ),
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert report["summary"]["references"] == REFERENCES
    assert (
        report["summary"]["dangling"],
        report["summary"]["mismatched"],
        report["summary"]["orphans"],
    ) == (2, 2, 3)
    assert len(seen) == 2  # Document.file and Document.attachments
    assert all(
        options.get("yield_per") == 2 and options.get("stream_results") for options in seen
    ), seen


def test_page_size_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="page_size must be a positive integer, got 0"):
        ReferenceScan(Document, page_size=0)


async def test_remove_orphans_keeps_one_a_row_started_to_reference(
    db: Db, files: FaultyBackend
) -> None:
    await _seed(db, files)
    engine = create_engine(db.sync_url)
    plain = sessionmaker(engine, expire_on_commit=False)
    calls = 0

    def sessions() -> Session:
        # Between the scan and the delete, a row adopts one of the orphans.
        nonlocal calls
        calls += 1
        if calls == 2:
            with plain() as session:
                session.add(
                    Document(
                        name="adopter",
                        file=FileObject(
                            backend="files", filename="o.bin", path="stray/orphan-2.bin"
                        ),
                    )
                )
                session.commit()
        return plain()

    try:
        outcome = list(remove_orphans(sessions, TARGET, "files", grace=timedelta(0)))
    finally:
        engine.dispose()
    assert [(o.path, deleted) for o, deleted in outcome] == [
        ("elsewhere/orphan-3.bin", True),
        ("stray/orphan-1.bin", True),
        ("stray/orphan-2.bin", False),
    ]
    assert not files.exists("stray/orphan-1.bin") and not files.exists("elsewhere/orphan-3.bin")
    assert files.exists("stray/orphan-2.bin")
    assert await _run(db, lambda s: find_orphans(s, TARGET, files, grace=timedelta(0))) == []


@pytest.mark.parametrize("mode", ["selected", "one-path-a-query", "every-row"])
async def test_gc_reads_again_only_the_references_that_could_adopt_a_candidate(
    db: Db, files: FaultyBackend, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # Before each batch of deletes, remove_orphans reads again the references to the batch's
    # candidates' paths:
    # picked by the query on PostgreSQL and SQLite (a query per path here, to cross the
    # chunks), or every row (too many candidates; MariaDB, whose collation would call
    # "Case" and "case" equal). Whichever way, a row that adopted a candidate through its
    # file, its list or a variant's original keeps it; a path that differs only in case or
    # merely starts like a candidate's adopts nothing.
    if mode == "one-path-a-query":
        monkeypatch.setattr(maintenance, "_PATHS_PER_QUERY", 1)
    if mode == "every-row":
        monkeypatch.setattr(maintenance, "_RECHECK_AT_MOST", 0)
    await _seed(db, files)
    variant = variant_path("stray/orig.png", "thumb", "png")
    for path in ("stray/Case.bin", variant, "stray/prefix.bin"):
        files.put(path, b"an orphan at first")
    engine = create_engine(db.sync_url)
    plain = sessionmaker(engine, expire_on_commit=False)
    reads: list[tuple[Collection[str] | None, int]] = []
    real = ReferenceScan.read_rows

    def read_rows(scan: ReferenceScan, session: Session, **options: Any) -> int:
        count = real(scan, session, **options)
        reads.append((options.get("paths"), count))
        return count

    monkeypatch.setattr(ReferenceScan, "read_rows", read_rows)

    def adopt() -> None:
        def ref(path: str) -> FileObject:
            return FileObject(backend="files", filename=path.rsplit("/", 1)[-1], path=path)

        with plain() as session:
            session.add_all(
                [
                    Document(
                        name="adopter",
                        file=ref("stray/orphan-2.bin"),
                        attachments=[ref("elsewhere/orphan-3.bin"), ref("stray/orig.png")],
                    ),
                    Document(name="other case", file=ref("stray/case.bin")),
                    Document(name="longer", file=ref("stray/prefix.bin.old")),
                ]
            )
            session.commit()

    calls = 0

    def sessions() -> Session:
        nonlocal calls
        calls += 1
        if calls == 2:
            adopt()  # between the scan and the delete
        return plain()

    try:
        outcome = dict(
            (o.path, deleted)
            for o, deleted in remove_orphans(sessions, TARGET, "files", grace=timedelta(0))
        )
    finally:
        engine.dispose()
    assert outcome == {
        "elsewhere/orphan-3.bin": False,
        "stray/orphan-1.bin": True,
        "stray/orphan-2.bin": False,
        "stray/Case.bin": True,
        variant: False,
        "stray/prefix.bin": True,
    }
    assert {path for path, deleted in outcome.items() if not deleted} <= files.paths()
    assert not {path for path, deleted in outcome.items() if deleted} & files.paths()
    # Read again batch by batch, just before each batch's deletes: the first batch holds
    # one candidate (elsewhere/orphan-3.bin, first in path order).
    (first, everything), *rechecks = reads
    assert first is None and everything == REFERENCES
    assert len(rechecks) > 1
    if mode == "every-row":
        assert all(asked is None and found == REFERENCES + 5 for asked, found in rechecks)
    else:
        assert rechecks[0] == ({"elsewhere/orphan-3.bin"}, 1)
        assert set().union(*(asked or () for asked, _ in rechecks)) == {*outcome, "stray/orig.png"}
        # orphan-2, orphan-3 and the variant's original, each read once
        assert sum(found for _, found in rechecks) == 3


async def test_gc_with_no_orphan_reads_the_rows_once(db: Db, files: FaultyBackend) -> None:
    await _seed(db, files)
    for path in ORPHANS:
        files.delete(path)
    engine = create_engine(db.sync_url)
    made: list[Session] = []

    def sessions() -> Session:
        made.append(sessionmaker(engine)())
        return made[-1]

    try:
        assert list(remove_orphans(sessions, TARGET, "files", grace=timedelta(0))) == []
    finally:
        engine.dispose()
    assert len(made) == 1


async def test_a_row_holding_many_files_in_a_list_is_read_whole_and_counted(
    db: Db, files: FaultyBackend
) -> None:
    many = 300
    for i in range(many):
        files.put(f"bulk/{i:04d}.bin", b"b")
    session = db.session()
    session.add(
        Document(
            name="bulk",
            attachments=[
                FileObject(backend="files", filename=f"{i}.bin", path=f"bulk/{i:04d}.bin", size=1)
                for i in range(many + 1)  # the last was never written
            ],
        )
    )
    await session.commit()
    await session.close()
    report = await _run(
        db,
        lambda s: collect_findings(
            s, Document, orphans_in="files", grace=timedelta(0), page_size=1
        ),
    )
    assert report["summary"]["references"] == many + 1
    assert [d["path"] for d in report["dangling"]] == [f"bulk/{many:04d}.bin"]
    assert report["orphans"] == [] and report["mismatched"] == []


class _BrokenListing(FaultyBackend):
    """Lists a few objects, then the connection drops."""

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        for number, info in enumerate(super()._list(prefix)):
            if number == 3:
                raise ConnectionError("listing interrupted")
            yield info


async def test_a_listing_that_fails_in_its_thread_fails_the_scan_and_leaves_no_files(
    db: Db, tmp_path: Path
) -> None:
    broken = storages.register_backend(_BrokenListing("files"), overwrite=True)
    await _seed(db, broken)
    scans = tmp_path / "scans"
    scans.mkdir()

    def scan(session: Session) -> None:
        with ReferenceScan(TARGET, directory=str(scans)) as index:
            index.read_rows(session)  # lists "files" in a thread meanwhile

    with pytest.raises(StoreroomError, match="listing interrupted"):
        await _run(db, scan)
    assert list(scans.iterdir()) == []


async def test_an_index_write_that_fails_in_its_thread_fails_the_scan_and_leaves_no_files(
    db: Db, files: FaultyBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # References go into the index in a thread of their own: a failure there (a full
    # disk) reaches the caller, and the scan's files are still removed.
    await _seed(db, files)
    monkeypatch.setattr(maintenance, "_BATCH", 4)  # several batches from the 21 references
    written: list[int] = []
    real = maintenance._insert_many

    def failing(db: Any, head: str, row: str, rows: list[Any]) -> None:
        if head.startswith("INSERT INTO main.ref") and written:
            raise sqlite3.OperationalError("database or disk is full")
        written.append(len(rows))
        real(db, head, row, rows)

    monkeypatch.setattr(maintenance, "_insert_many", failing)
    scans = tmp_path / "scans"
    scans.mkdir()

    def scan(session: Session) -> None:
        with ReferenceScan(TARGET, directory=str(scans)) as index:
            index.read_rows(session)

    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        await _run(db, scan)
    assert written and list(scans.iterdir()) == []


@pytest.mark.parametrize("count", [1, 2, 3, 7])
async def test_shards_together_find_exactly_what_one_scan_finds(
    db: Db, files: FaultyBackend, count: int
) -> None:
    from storeroom.orm.maintenance import Shard

    await _seed(db, files)
    whole = await _run(
        db,
        lambda s: collect_findings(
            s, TARGET, orphans_in="files", grace=timedelta(0), checksums=True
        ),
    )
    parts = [
        await _run(
            db,
            lambda s, k=k: collect_findings(
                s,
                TARGET,
                orphans_in="files",
                grace=timedelta(0),
                checksums=True,
                shard=Shard(k, count),
            ),
        )
        for k in range(count)
    ]
    for section in ("dangling", "mismatched", "orphans"):
        assert sorted(e["path"] for p in parts for e in p[section]) == sorted(
            e["path"] for e in whole[section]
        )
    for name in ("references", "dangling", "mismatched", "orphans"):
        assert sum(p["summary"][name] for p in parts) == whole["summary"][name]
    # Each path is in exactly one shard.
    paths = [f"p/{i}" for i in range(200)]
    assert (
        sorted(sum(Shard(k, count).contains(p) for k in range(count)) for p in paths) == [1] * 200
    )


@pytest.mark.parametrize(("index", "count"), [(-1, 2), (2, 2), (0, 0), (0, True)])
def test_a_shard_outside_its_split_is_refused(index: int, count: int) -> None:
    from storeroom.orm.maintenance import Shard

    with pytest.raises(ConfigurationError, match="a shard is an index"):
        Shard(index, count)


async def test_many_dangling_references_are_confirmed_together_and_reported_in_row_order(
    db: Db, files: FaultyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing objects are confirmed with HEADs that overlap, in groups; the findings must
    be the same, in the same order, as when they are confirmed one at a time."""
    from storeroom.orm import maintenance

    session = db.session()
    for i in range(600):
        path = f"many/{i:04d}.txt"
        if i % 2:
            files.put(path, b"here")
        session.add(
            Document(name=f"m{i}", file=FileObject(backend="files", filename="x", path=path))
        )
    await session.commit()
    await session.close()
    together = await _run(db, lambda s: find_dangling(s, [Document]))
    monkeypatch.setattr(maintenance, "_CONFIRMING", 1)
    one_by_one = await _run(db, lambda s: find_dangling(s, [Document]))
    paths = [d.file.path for d in together]
    assert sorted(paths) == [f"many/{i:04d}.txt" for i in range(0, 600, 2)]  # 2 groups
    assert paths == [d.file.path for d in one_by_one]
    assert [d.primary_key for d in together] == [d.primary_key for d in one_by_one]


@pytest.mark.parametrize("count", [0, 1, 49, 50, 51, 149, 150, 5000])
def test_rows_are_inserted_fifty_to_a_statement_with_none_lost_or_repeated(count: int) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)")
    rows = [(i, f"p/{i}", bytes([i % 256])) for i in range(count)]
    maintenance._insert_many(db, "INSERT INTO t", "(?, ?, ?)", rows)
    assert db.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows


def test_an_old_sqlite_is_asked_for_at_most_999_paths_a_query() -> None:
    # SQLite before 3.32 binds at most 999 values in one statement.
    class Dialect:
        def __init__(self, name: str, version: tuple[int, ...] | None) -> None:
            self.name = name
            self.dbapi = type("dbapi", (), {"sqlite_version_info": version})

    assert maintenance._paths_per_query(Dialect("sqlite", (3, 31, 1))) == 999
    assert maintenance._paths_per_query(Dialect("sqlite", (3, 40, 1))) == 10_000
    assert maintenance._paths_per_query(Dialect("sqlite", None)) == 10_000
    assert maintenance._paths_per_query(Dialect("postgresql", (3, 31, 1))) == 10_000


# -- gc's multipart sweep and sharded runs ---------------------------------------------------


@pytest.mark.s3
def test_gc_aborts_stale_multipart_uploads_but_not_those_of_upload_sessions_in_progress(
    moto_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    import httpx
    from sqlalchemy import update

    from storeroom import ObstoreBackend
    from storeroom.uploads import complete, upload_sessions
    from storeroom.uploads import metadata as upload_metadata
    from storeroom.uploads.resumable import begin_resumable, sign_part

    big = storages.register_backend(
        ObstoreBackend("big", f"s3://{s3_bucket}/prefix", **moto_server.obstore_options()),
        overwrite=True,
    )
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    upload_metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    body = b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"\n%%EOF\n"

    def begin(session: Session, name: str) -> Any:
        return begin_resumable(
            session, "big", filename=name, content_type="application/pdf", size=len(body)
        )

    with sessions() as session:
        pending, expired = begin(session, "pending.pdf"), begin(session, "expired.pdf")
        session.commit()
        session.execute(
            update(upload_sessions)
            .where(upload_sessions.c.id == expired.id)
            .values(expires_at=expired.expires_at.replace(year=2000))
        )
        session.commit()
    client = moto_server.client()
    client.create_multipart_upload(Bucket=s3_bucket, Key="prefix/crashed.bin")  # no session
    client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/not-ours.bin")

    def open_uploads() -> set[str]:
        listed = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads") or []
        return {upload["Key"] for upload in listed}

    # moto dates every upload 2010: all are older than any grace here.
    expected = {
        (f"prefix/{pending.path}", False),  # its session is in progress: kept
        (f"prefix/{expired.path}", True),
        ("prefix/crashed.bin", True),
    }
    dry = maintenance.remove_incomplete_uploads(sessions, "big", grace=timedelta(0), dry_run=True)
    assert {(upload.key, abort) for upload, abort in dry} == expected
    assert len(open_uploads()) == 4
    done = maintenance.remove_incomplete_uploads(sessions, "big", grace=timedelta(0))
    assert {(upload.key, abort) for upload, abort in done} == expected
    assert open_uploads() == {f"prefix/{pending.path}", "elsewhere/not-ours.bin"}
    # The session in progress still completes.
    with sessions() as session:
        url = sign_part(session, pending.id, 1, len(body))["url"]
        assert httpx.put(url, content=body, timeout=30).status_code == 200
        file = complete(session, pending.id)
        session.commit()
    assert big.get(file.path) == body
    engine.dispose()


class _Jobs:
    """Collects the jobs a sharded run enqueues, to run them here (no queue, no worker)."""

    retries = 1

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def enqueue(self, _name: str, payload: dict[str, Any], key: str) -> None:
        self.payloads.append(payload)


@pytest.fixture
def cli_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """(database URL, Document of tests.cli.models) on SQLite, with backends ``local`` and
    ``other`` on local disk in the environment, as sharded workers read them."""
    import sys
    import uuid

    monkeypatch.setenv("STOREROOM_CLI_TABLE", f"shard_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("STORAGE__LOCAL__URL", f"file://{tmp_path}/local")
    monkeypatch.setenv("STORAGE__OTHER__URL", f"file://{tmp_path}/other")
    monkeypatch.delitem(sys.modules, "tests.cli.models", raising=False)
    from storeroom import ObstoreBackend
    from tests.cli.models import Document as CliDocument

    storages.register_backend(ObstoreBackend("local", f"file://{tmp_path}/local"), overwrite=True)
    url = f"sqlite:///{tmp_path}/app.db"
    engine = create_engine(url)
    CliDocument.metadata.create_all(engine, tables=[CliDocument.__table__])
    engine.dispose()
    yield url, CliDocument
    sys.modules.pop("tests.cli.models", None)


def _run_shards(kind: str, params: dict[str, Any], url: str, shards: int) -> str:
    from storeroom.orm.sharded import run_shard, start_run

    jobs = _Jobs()
    run = start_run(kind, params, shards=shards, database=url, queue=jobs)
    for payload in jobs.payloads:
        run_shard(payload)
    return run


@pytest.mark.filterwarnings("ignore:This declarative base already contains a class")
def test_sharded_gc_counts_skipped_orphans_apart_from_kept_ones(
    cli_model: tuple[str, Any], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from storeroom.cli.app import Context
    from storeroom.cli.sharded import jobs
    from storeroom.orm.sharded import run_counts, run_findings, run_status

    url, CliDocument = cli_model
    engine = create_engine(url)
    with Session(engine) as session:
        session.add(CliDocument(name="kept", file=FileObject(filename="k.txt", content=b"k")))
        session.commit()
    engine.dispose()
    local = storages.get_backend("local")
    local.put("stray/orphan.bin", b"an orphan")
    (tmp_path / "local" / "copied\\by hand.bin").write_bytes(b"a name storeroom won't touch")
    params = {"models": ["tests.cli.models:Document"], "backend": "local", "grace": 0}
    run = _run_shards("gc", params, url, shards=2)
    assert run_counts(run_status(url, run)) == {"deleted": 1, "kept": 0, "skipped": 1, "failed": 0}
    found = list(run_findings(url, run))
    assert [(section, entry["path"]) for section, entry in found] == [
        ("deleted", "stray/orphan.bin"),
        ("skipped", "copied\\by hand.bin"),
    ]
    assert found[1][1]["kind"] == "unsafe" and "backslash" in found[1][1]["reason"]
    shown = CliRunner().invoke(jobs, ["status", run, "--database", url], obj=Context(None))
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "deleted stray/orphan.bin"
    assert lines[1].startswith("skipped ") and "backslash" in lines[1]
    assert lines[-1] == "1 orphans deleted, 1 skipped"


@pytest.mark.filterwarnings("ignore:This declarative base already contains a class")
def test_sharded_migrate_reports_rows_left_on_the_source(
    cli_model: tuple[str, Any], tmp_path: Path
) -> None:
    # A trigger rewrites the row whenever it is written (another writer, every time): the
    # switch refuses to overwrite it, leaves it on the source and says so (on_skipped),
    # counted and reported apart, as one process does.
    from click.testing import CliRunner
    from sqlalchemy import text

    from storeroom.cli.app import Context
    from storeroom.cli.sharded import jobs
    from storeroom.orm.sharded import run_counts, run_findings, run_status

    url, CliDocument = cli_model
    table = CliDocument.__tablename__
    engine = create_engine(url)
    with Session(engine) as session:
        session.add(CliDocument(name="busy", file=FileObject(filename="b.txt", content=b"b")))
        session.commit()
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TRIGGER {table}_rewritten AFTER UPDATE OF file ON {table} BEGIN "
                f"UPDATE {table} SET file = json_set(file, '$.metadata.seen', random()) "
                "WHERE id = NEW.id; END"
            )
        )
    engine.dispose()
    params = {
        "models": ["tests.cli.models:Document"],
        "source": "local",
        "destination": "other",
        "state_dir": str(tmp_path / "journals"),
        "update_rows": True,
    }
    (tmp_path / "journals").mkdir()
    run = _run_shards("migrate", params, url, shards=1)
    counts = run_counts(run_status(url, run))
    assert (counts["copied"], counts["rows_updated"], counts["left"]) == (1, 0, 1)
    ((section, entry),) = list(run_findings(url, run))
    assert section == "left" and "changed 3 times" in entry["reason"]
    shown = CliRunner().invoke(jobs, ["status", run, "--database", url], obj=Context(None))
    assert shown.exit_code == 1
    assert f"left on the source for the next run: {entry['path']}: " in shown.stderr
    assert shown.stdout.splitlines()[-1].endswith("rows left on the source for the next run 1")
