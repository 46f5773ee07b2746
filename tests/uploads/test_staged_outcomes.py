"""A staged completion follows its transaction: what each way of ending it leaves in the store.

The store is moto's S3 without a static key, so the browser uploads to a staging path and
``complete`` copies the verified object to its final path before the caller commits. On
SQLite, PostgreSQL and MariaDB, sync and async, a completion whose transaction does not commit
(rollback, close, a failed flush, a SAVEPOINT rolled back, the rollback of an outer transaction
the session joined, a COMMIT the database refuses) leaves nothing at the final path and the
upload at its staging path, the session pending, and a retry completes it; one that commits
keeps the final object and the staging upload is deleted.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from storeroom import ObstoreBackend, storages
from storeroom.errors import BackendError
from storeroom.media.validation import Findings
from storeroom.orm import wait_for_cleanup
from storeroom.uploads import (
    UploadRejected,
    UploadSessionInvalid,
    UploadTarget,
    begin,
    complete,
    complete_async,
    remove_expired,
)
from tests.servers.databases import DatabaseUrls
from tests.servers.moto import MotoServer
from tests.uploads.reports import (
    LIMITS,
    PDF,
    Report,
    reports,
    session_rows,
    staging_s3,
    stored,
)


def _uploaded(urls: DatabaseUrls, store: ObstoreBackend) -> tuple[UploadTarget, str]:
    """A committed session whose upload the browser sent; the target and its staging path."""
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        db.add(Report(name="taken"))
        target = begin(
            db, Report.file, filename="q3.pdf", content_type="application/pdf", size=len(PDF),
            limits=LIMITS,
        )  # fmt: skip
        db.commit()
    engine.dispose()
    assert target.instructions.enforced == ()  # a staging store
    sent = httpx.put(target.instructions.url, content=PDF, headers=target.instructions.headers)
    assert sent.status_code == 200
    (row,) = session_rows(urls)
    assert row.upload_path != target.path and store.exists(row.upload_path)
    return target, row.upload_path


def _left_nothing(
    urls: DatabaseUrls,
    store: ObstoreBackend,
    target: UploadTarget,
    staging: str,
    names: tuple[str, ...] = ("taken",),
) -> None:
    """The claim did not commit: no final copy, the upload staged, the session pending."""
    assert not store.exists(target.path)
    assert store.get(staging) == PDF
    assert [row.completed_at for row in session_rows(urls)] == [None]
    assert reports(urls) == list(names)


def _retry_commits(
    urls: DatabaseUrls, store: ObstoreBackend, target: UploadTarget, staging: str
) -> None:
    """A retried completion commits: the final object only, the session single-use."""
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        file = complete(db, target.id)
        db.add(Report(name="retried", file=file))
        db.commit()
    assert file.path == target.path and stored(urls, "retried") == PDF
    assert wait_for_cleanup(30)
    assert not store.exists(staging)
    with Session(engine) as db, pytest.raises(UploadSessionInvalid, match="single-use"):
        complete(db, target.id)
    engine.dispose()


# == sync ======================================================================================


# Each ending returns the names of the reports committed in the end.


def _rollback(db: Session, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="a", file=complete(db, target.id)))
    db.flush()
    db.rollback()
    return ("taken",)


def _close(db: Session, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="a", file=complete(db, target.id)))
    db.flush()
    db.close()  # neither commit nor rollback
    return ("taken",)


def _failed_flush(db: Session, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="taken", file=complete(db, target.id)))
    with pytest.raises(IntegrityError):  # the name is taken: the commit's flush fails
        db.commit()
    db.rollback()
    return ("taken",)


def _savepoint_rolled_back(db: Session, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="kept"))
    savepoint = db.begin_nested()
    db.add(Report(name="a", file=complete(db, target.id)))
    db.flush()
    savepoint.rollback()
    db.commit()  # the rest of the transaction, without the claim
    return ("kept", "taken")


ENDINGS: dict[str, Callable[[Session, UploadTarget], tuple[str, ...]]] = {
    "rollback": _rollback,
    "close": _close,
    "failed flush": _failed_flush,
    "savepoint rolled back": _savepoint_rolled_back,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_staged_completion_that_does_not_commit_leaves_no_final_copy(
    urls: DatabaseUrls, staged: ObstoreBackend, ending: str
) -> None:
    target, staging = _uploaded(urls, staged)
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        names = ENDINGS[ending](db, target)
    engine.dispose()
    _left_nothing(urls, staged, target, staging, names)
    _retry_commits(urls, staged, target, staging)


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
def test_a_staged_completion_in_a_joined_outer_transaction_follows_that_transaction(
    urls: DatabaseUrls, staged: ObstoreBackend, outcome: str
) -> None:
    target, staging = _uploaded(urls, staged)
    engine = create_engine(urls.sync)
    with engine.connect() as connection:
        outer = connection.begin()
        with Session(bind=connection) as db:  # joins the outer transaction
            db.add(Report(name="a", file=complete(db, target.id)))
            db.commit()  # the outer transaction's owner decides
        assert staged.exists(target.path)  # still undecided
        if outcome == "rollback":
            outer.rollback()
        else:
            outer.commit()
    engine.dispose()
    if outcome == "rollback":
        _left_nothing(urls, staged, target, staging)
        _retry_commits(urls, staged, target, staging)
        return
    assert stored(urls, "a") == PDF
    assert [row.completed_at is not None for row in session_rows(urls)] == [True]
    # Not this session's commit: the staging upload waits for remove_expired.
    later = target.expires_at + timedelta(seconds=1)
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        assert remove_expired(db, now=later) == 1
    engine.dispose()
    assert not staged.exists(staging) and stored(urls, "a") == PDF


@pytest.mark.postgres
def test_a_staged_completion_whose_commit_the_database_refuses_leaves_no_final_copy(
    postgres_url: DatabaseUrls, staged: ObstoreBackend
) -> None:
    from tests.uploads.reports import empty_tables

    with empty_tables(postgres_url) as urls:
        target, staging = _uploaded(urls, staged)
        engine = create_engine(urls.sync)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS deferred_names"))
            conn.execute(
                text("CREATE TABLE deferred_names (name text UNIQUE DEFERRABLE INITIALLY DEFERRED)")
            )
        try:
            with Session(engine) as db:
                db.add(Report(name="a", file=complete(db, target.id)))
                db.execute(text("INSERT INTO deferred_names VALUES ('x'), ('x')"))
                with pytest.raises(IntegrityError):  # checked by the COMMIT itself
                    db.commit()
                assert staged.exists(target.path)  # the session's transaction is still open
                db.rollback()
            _left_nothing(urls, staged, target, staging)
            _retry_commits(urls, staged, target, staging)
        finally:
            with engine.begin() as conn:
                conn.execute(text("DROP TABLE deferred_names"))
            engine.dispose()


# == async =====================================================================================


async def _rollback_async(db: AsyncSession, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="a", file=await complete_async(db, target.id)))
    await db.flush()
    await db.rollback()
    return ("taken",)


async def _close_async(db: AsyncSession, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="a", file=await complete_async(db, target.id)))
    await db.flush()
    await db.close()
    return ("taken",)


async def _failed_flush_async(db: AsyncSession, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="taken", file=await complete_async(db, target.id)))
    with pytest.raises(IntegrityError):
        await db.commit()
    await db.rollback()
    return ("taken",)


async def _savepoint_rolled_back_async(db: AsyncSession, target: UploadTarget) -> tuple[str, ...]:
    db.add(Report(name="kept"))
    savepoint = await db.begin_nested()
    db.add(Report(name="a", file=await complete_async(db, target.id)))
    await db.flush()
    await savepoint.rollback()
    await db.commit()
    return ("kept", "taken")


ASYNC_ENDINGS: dict[str, Callable[[AsyncSession, UploadTarget], Awaitable[tuple[str, ...]]]] = {
    "rollback": _rollback_async,
    "close": _close_async,
    "failed flush": _failed_flush_async,
    "savepoint rolled back": _savepoint_rolled_back_async,
}


@pytest.mark.parametrize("ending", list(ASYNC_ENDINGS))
async def test_a_staged_completion_that_does_not_commit_leaves_no_final_copy_async(
    urls: DatabaseUrls, staged: ObstoreBackend, ending: str
) -> None:
    target, staging = _uploaded(urls, staged)
    engine = create_async_engine(urls.async_)
    async with AsyncSession(engine) as db:
        names = await ASYNC_ENDINGS[ending](db, target)
        assert not await staged.exists_async(target.path)  # before the session is closed
    await engine.dispose()
    _left_nothing(urls, staged, target, staging, names)
    _retry_commits(urls, staged, target, staging)


async def test_a_staged_completion_async_commits_its_final_copy_and_drops_the_staging_one(
    urls: DatabaseUrls, staged: ObstoreBackend
) -> None:
    target, staging = _uploaded(urls, staged)
    engine = create_async_engine(urls.async_)
    async with AsyncSession(engine) as db:
        db.add(Report(name="a", file=await complete_async(db, target.id)))
        await db.commit()
    await engine.dispose()
    assert stored(urls, "a") == PDF
    assert wait_for_cleanup(30)
    assert not staged.exists(staging)


# == what a dead process leaves ================================================================


def test_a_final_copy_left_by_a_dead_completion_is_reused_or_removed_with_its_session(
    urls: DatabaseUrls, staged: ObstoreBackend
) -> None:
    target, staging = _uploaded(urls, staged)
    # A completion whose process died after its copy: no event ran, the session is pending.
    staged.copy(staging, target.path)
    later = target.expires_at + timedelta(seconds=1)
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        assert remove_expired(db, now=later) == 1
    engine.dispose()
    assert not staged.exists(target.path) and not staged.exists(staging)


def test_a_final_copy_without_its_staging_upload_is_verified_where_it_is(
    urls: DatabaseUrls, staged: ObstoreBackend
) -> None:
    target, staging = _uploaded(urls, staged)
    staged.copy(staging, target.path)
    staged.delete(staging)  # what a completion of an earlier storeroom version left
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        db.add(Report(name="a", file=complete(db, target.id)))
        db.commit()
    engine.dispose()
    assert stored(urls, "a") == PDF


# == faults during the copy, a replaced upload ================================================


class FaultyCopies(ObstoreBackend):
    """S3 whose copies fail (a network error) or, once made, hang until cancelled."""

    copies = "work"  # "work", "fail" or "hang"
    copied: asyncio.Event | None = None

    def _copy(self, src: str, dst: str) -> None:
        if self.copies == "fail":
            super()._copy(src, dst)  # what arrived before the connection broke
            raise ConnectionError("injected copy failure")
        super()._copy(src, dst)

    async def _copy_async(self, src: str, dst: str) -> None:
        await super()._copy_async(src, dst)
        if self.copies == "fail":
            raise ConnectionError("injected copy failure")
        if self.copies == "hang":
            assert self.copied is not None
            self.copied.set()
            await asyncio.Event().wait()  # until cancelled


@pytest.fixture
def faulty(moto_server: MotoServer, s3_bucket: str) -> FaultyCopies:
    backend = staging_s3(moto_server, s3_bucket, FaultyCopies)
    assert isinstance(backend, FaultyCopies)
    storages.register_backend(backend)
    return backend


def test_a_failed_copy_gives_the_claim_back_and_leaves_no_final_copy(
    urls: DatabaseUrls, faulty: FaultyCopies
) -> None:
    target, staging = _uploaded(urls, faulty)
    faulty.copies = "fail"
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        with pytest.raises(BackendError, match="injected copy failure"):
            complete(db, target.id)
        db.commit()  # a caller that carries on: the claim was given back
    engine.dispose()
    _left_nothing(urls, faulty, target, staging, ("taken",))
    faulty.copies = "work"
    _retry_commits(urls, faulty, target, staging)


async def test_a_failed_copy_gives_the_claim_back_and_leaves_no_final_copy_async(
    urls: DatabaseUrls, faulty: FaultyCopies
) -> None:
    target, staging = _uploaded(urls, faulty)
    faulty.copies = "fail"
    engine = create_async_engine(urls.async_)
    async with AsyncSession(engine) as db:
        with pytest.raises(BackendError, match="injected copy failure"):
            await complete_async(db, target.id)
        await db.commit()
    await engine.dispose()
    _left_nothing(urls, faulty, target, staging, ("taken",))
    faulty.copies = "work"
    _retry_commits(urls, faulty, target, staging)


async def test_a_completion_cancelled_after_its_copy_leaves_no_final_copy(
    urls: DatabaseUrls, faulty: FaultyCopies
) -> None:
    target, staging = _uploaded(urls, faulty)
    faulty.copies, faulty.copied = "hang", asyncio.Event()
    engine = create_async_engine(urls.async_)

    async def request() -> None:
        async with AsyncSession(engine) as db:  # the request's session, closed on the way out
            db.add(Report(name="a", file=await complete_async(db, target.id)))
            await db.commit()

    task = asyncio.create_task(request())
    await asyncio.wait_for(faulty.copied.wait(), 30)
    assert faulty.exists(target.path)  # copied, claim uncommitted
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await engine.dispose()
    _left_nothing(urls, faulty, target, staging, ("taken",))
    faulty.copies = "work"
    _retry_commits(urls, faulty, target, staging)


def test_an_upload_replaced_after_it_was_verified_is_refused(
    urls: DatabaseUrls, staged: ObstoreBackend
) -> None:
    target, staging = _uploaded(urls, staged)
    replaced = threading.Event()

    def replay(findings: Findings) -> bool:
        """Runs once the upload was read: the browser sends other bytes to the same URL."""
        other = PDF.replace(b"x", b"y")
        sent = httpx.put(
            target.instructions.url, content=other, headers=target.instructions.headers
        )
        replaced.set()
        return sent.status_code == 200

    engine = create_engine(urls.sync)
    with Session(engine) as db:
        with pytest.raises(UploadRejected) as caught:
            complete(db, target.id, validators=[replay])
        db.commit()
    engine.dispose()
    assert replaced.is_set()
    assert caught.value.rule == "changed" and caught.value.value == staging
    assert not staged.exists(target.path)  # the unverified bytes never reach the final path
    assert [row.completed_at for row in session_rows(urls)] == [None]


# == seeded random sequences ===================================================================


@pytest.mark.parametrize("seed", [7, 2024])
def test_random_endings_never_leave_a_final_copy_without_a_committed_claim(
    urls: DatabaseUrls, staged: ObstoreBackend, seed: int
) -> None:
    """Three sessions; each step completes one and ends its transaction some way; after each
    step a session has a final object exactly when its completion committed."""
    rng = random.Random(seed)
    sessions = [_uploaded_named(urls, staged, f"s{n}") for n in range(3)]
    committed: set[str] = set()
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        db.add(Report(name="taken"))
        db.commit()
    for step in range(12):
        target, _staging = rng.choice(sessions)
        ending = rng.choice(["commit", "rollback", "close", "failed flush", "savepoint"])
        with Session(engine) as db:
            if target.id in committed:
                with pytest.raises(UploadSessionInvalid):
                    complete(db, target.id)
            elif ending == "commit":
                db.add(Report(name=f"r{step}", file=complete(db, target.id)))
                db.commit()
                committed.add(target.id)
            elif ending == "failed flush":
                db.add(Report(name="taken", file=complete(db, target.id)))
                with pytest.raises(IntegrityError):
                    db.commit()
                db.rollback()
            elif ending == "savepoint":
                savepoint = db.begin_nested()
                complete(db, target.id)
                savepoint.rollback()
                db.commit()
            else:
                complete(db, target.id)
                if ending == "rollback":
                    db.rollback()
        assert wait_for_cleanup(30)
        completed = {row.id for row in session_rows(urls) if row.completed_at is not None}
        assert completed == committed, (seed, step, ending)
        for target, staging in sessions:
            done = target.id in committed
            assert staged.exists(target.path) == done, (seed, step, ending, target.id)
            assert staged.exists(staging) != done, (seed, step, ending, target.id)
    engine.dispose()


def _uploaded_named(
    urls: DatabaseUrls, store: ObstoreBackend, filename: str
) -> tuple[UploadTarget, str]:
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        target = begin(
            db, Report.file, filename=f"{filename}.pdf", content_type="application/pdf",
            size=len(PDF), limits=LIMITS,
        )  # fmt: skip
        db.commit()
    engine.dispose()
    sent = httpx.put(target.instructions.url, content=PDF, headers=target.instructions.headers)
    assert sent.status_code == 200
    row = next(row for row in session_rows(urls) if row.id == target.id)
    return target, row.upload_path
