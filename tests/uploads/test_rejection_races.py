"""Two completions of one session that disagree: the session row decides who owns the upload.

A completion with a stricter column's validators refuses what another accepted. On
PostgreSQL and MariaDB, with two connections: a rejection waits for the row lock of a
completion that claimed the session and has not committed, then leaves the object to it if
it commits, and deletes it only if it rolled back. The other way round, on every database: a
completion that claims the session after a rejection deleted its upload (its read began
before) finds the object gone and gives its claim back, so no committed row points at
nothing. ``abort`` of a resumable session waits for a completion in flight the same way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from storeroom import ObstoreBackend
from storeroom.errors import ValidationError
from storeroom.media.validation import Findings, MaxSize
from storeroom.uploads import (
    UploadRejected,
    UploadSessionInvalid,
    UploadTarget,
    abort,
    abort_async,
    begin,
    begin_resumable,
    complete,
    complete_async,
)
from tests.servers.databases import DatabaseUrls
from tests.uploads.reports import (
    LIMITS,
    PDF,
    Report,
    reports,
    session_rows,
    stored,
    waiting_for_a_lock,
)

STRICT = [MaxSize(100)]  # another column's validators: PDF is over 100 bytes
CLAIMS = "UPDATE storeroom_upload_sessions"


@pytest.fixture(params=["local", "staged"])
def store(request: pytest.FixtureRequest) -> ObstoreBackend:
    """Local disk (create-only, the upload is the final object) or S3 staging the upload."""
    backend: ObstoreBackend = request.getfixturevalue(request.param)
    return backend


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def _uploaded(urls: DatabaseUrls, store: ObstoreBackend) -> tuple[UploadTarget, str]:
    """A committed session whose upload arrived; the target and the path the upload is at."""
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        target = begin(
            db, Report.file, filename="q3.pdf", content_type="application/pdf", size=len(PDF),
            limits=LIMITS,
        )  # fmt: skip
        db.commit()
    engine.dispose()
    if "create-only" in target.instructions.enforced:
        store.put(target.path, PDF, overwrite=False)  # what the signed PUT does
    else:
        sent = httpx.put(target.instructions.url, content=PDF, headers=target.instructions.headers)
        assert sent.status_code == 200
    (row,) = session_rows(urls)
    return target, row.upload_path


def _outcome(call: Callable[[], Any]) -> Any:
    """What ``call`` returned, or the exception it raised."""
    try:
        return call()
    except Exception as error:
        return error


def _until(condition: Callable[[], bool], also_stop: Future[Any] | None = None) -> None:
    """Poll ``condition`` (a database probe) until it holds, for at most 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (also_stop is not None and also_stop.done()):
        if condition():
            return
        time.sleep(0.01)


def _complete_strictly(urls: DatabaseUrls, session_id: str) -> Any:
    """Another request: completes with the strict validators, then rolls back."""
    engine = create_engine(urls.sync)
    try:
        with Session(engine) as db:
            return _outcome(lambda: complete(db, session_id, validators=STRICT))
    finally:
        engine.dispose()


# == a rejection against a completion that claimed the session ================================


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_rejection_waits_for_the_claiming_completion_and_follows_its_outcome(
    row_locking: DatabaseUrls, store: ObstoreBackend, pool: ThreadPoolExecutor, outcome: str
) -> None:
    urls = row_locking
    target, upload = _uploaded(urls, store)
    engine = create_engine(urls.sync)
    with Session(engine) as app:
        app.add(Report(name="accepted", file=complete(app, target.id)))  # claimed, uncommitted
        app.flush()
        strict = pool.submit(_complete_strictly, urls, target.id)
        _until(lambda: waiting_for_a_lock(urls, CLAIMS) > 0, strict)
        assert not strict.done()  # it waits for the claim's row lock before deleting
        if outcome == "commit":
            app.commit()
        else:
            app.rollback()
        refused = strict.result(60)
    engine.dispose()

    if outcome == "commit":
        # The accepted completion owns it: the rejection deleted nothing.
        assert isinstance(refused, UploadSessionInvalid), refused
        assert "completed by another request" in str(refused)
        assert isinstance(refused.__cause__, ValidationError)
        assert stored(urls, "accepted") == PDF
        assert [row.completed_at is not None for row in session_rows(urls)] == [True]
        return
    # Pending again when the rejection got the row: it deleted the upload.
    assert isinstance(refused, ValidationError), refused
    assert not store.exists(upload) and not store.exists(target.path)
    assert [row.completed_at for row in session_rows(urls)] == [None]
    assert reports(urls) == []
    engine = create_engine(urls.sync)
    with Session(engine) as db, pytest.raises(UploadRejected) as caught:
        complete(db, target.id)
    engine.dispose()
    assert caught.value.rule == "missing"


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_rejection_waits_for_the_claiming_completion_and_follows_its_outcome_async(
    row_locking: DatabaseUrls, store: ObstoreBackend, outcome: str
) -> None:
    urls = row_locking
    target, upload = _uploaded(urls, store)
    engine = create_async_engine(urls.async_)

    async def strictly() -> Any:
        async with AsyncSession(engine) as db:
            try:
                return await complete_async(db, target.id, validators=STRICT)
            except Exception as error:
                return error

    async with AsyncSession(engine) as app:
        app.add(Report(name="accepted", file=await complete_async(app, target.id)))
        await app.flush()
        strict = asyncio.create_task(strictly())
        deadline = time.monotonic() + 20
        while not strict.done() and time.monotonic() < deadline:
            if await asyncio.to_thread(waiting_for_a_lock, urls, CLAIMS):
                break
            await asyncio.sleep(0.01)
        assert not strict.done()
        await (app.commit() if outcome == "commit" else app.rollback())
        refused = await asyncio.wait_for(strict, 60)
    await engine.dispose()

    if outcome == "commit":
        assert isinstance(refused, UploadSessionInvalid), refused
        assert stored(urls, "accepted") == PDF
        assert [row.completed_at is not None for row in session_rows(urls)] == [True]
    else:
        assert isinstance(refused, ValidationError), refused
        assert not store.exists(upload) and not store.exists(target.path)
        assert [row.completed_at for row in session_rows(urls)] == [None]


# == a completion that claims after a rejection deleted the upload ============================


class Paused:
    """A validator that holds its completion at the end of the read until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, findings: Findings) -> bool:
        self.reached.set()
        assert self.release.wait(60)
        return True


def _run_in_own_loop(make: Callable[[], Any]) -> Any:
    """Run the coroutine ``make()`` returns on an event loop of this (worker) thread."""
    return asyncio.run(make())


def _claim_after_rejection(
    urls: DatabaseUrls, store: ObstoreBackend, pool: ThreadPoolExecutor, *, asynchronous: bool
) -> None:
    target, upload = _uploaded(urls, store)
    paused = Paused()

    def accepting() -> Any:
        """A completion whose read began before the rejection; its caller commits anyway."""
        engine = create_engine(urls.sync)
        try:
            with Session(engine) as db:
                outcome = _outcome(lambda: complete(db, target.id, validators=[paused]))
                db.commit()
                return outcome
        finally:
            engine.dispose()

    async def accepting_async() -> Any:
        engine = create_async_engine(urls.async_)
        try:
            async with AsyncSession(engine) as db:
                try:
                    outcome = await complete_async(db, target.id, validators=[paused])
                except Exception as error:
                    outcome = error
                await db.commit()
                return outcome
        finally:
            await engine.dispose()

    if asynchronous:
        accepted = pool.submit(_run_in_own_loop, accepting_async)
    else:
        accepted = pool.submit(accepting)
    assert paused.reached.wait(60)  # it has read and verified the upload
    refused = _complete_strictly(urls, target.id)
    assert isinstance(refused, ValidationError), refused
    assert not store.exists(upload)  # the rejection held a pending row: it deleted the upload
    paused.release.set()
    outcome = accepted.result(60)

    assert isinstance(outcome, UploadRejected), outcome
    assert outcome.rule == "missing" and "deleted after it was verified" in str(outcome)
    # Its claim was given back before its caller committed: pending, nothing stored.
    assert [row.completed_at for row in session_rows(urls)] == [None]
    assert not store.exists(target.path)


def test_a_completion_claiming_after_a_rejection_deleted_the_upload_gives_its_claim_back(
    urls: DatabaseUrls, store: ObstoreBackend, pool: ThreadPoolExecutor
) -> None:
    _claim_after_rejection(urls, store, pool, asynchronous=False)


def test_a_completion_claiming_after_a_rejection_deleted_the_upload_gives_its_claim_back_async(
    urls: DatabaseUrls, store: ObstoreBackend, pool: ThreadPoolExecutor
) -> None:
    _claim_after_rejection(urls, store, pool, asynchronous=True)


def test_a_claim_waits_for_a_rejection_holding_the_session(
    row_locking: DatabaseUrls, local: ObstoreBackend, pool: ThreadPoolExecutor
) -> None:
    urls = row_locking
    target, upload = _uploaded(urls, local)
    paused = Paused()

    def accepting() -> Any:
        engine = create_engine(urls.sync)
        try:
            with Session(engine) as db:
                return _outcome(lambda: complete(db, target.id, validators=[paused]))
        finally:
            engine.dispose()

    accepted = pool.submit(accepting)
    assert paused.reached.wait(60)
    engine = create_engine(urls.sync)
    with Session(engine) as strict:
        with pytest.raises(ValidationError):
            complete(strict, target.id, validators=STRICT)
        assert not local.exists(upload)
        paused.release.set()  # its claim now waits for the rejection's transaction
        _until(lambda: waiting_for_a_lock(urls, CLAIMS) > 0, accepted)
        assert not accepted.done()
        strict.rollback()
    engine.dispose()
    outcome = accepted.result(60)
    assert isinstance(outcome, UploadRejected) and outcome.rule == "missing", outcome
    assert [row.completed_at for row in session_rows(urls)] == [None]


# == abort against a completion in flight =====================================================


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_abort_waits_for_a_completion_in_flight_and_follows_its_outcome(
    row_locking: DatabaseUrls,
    local: ObstoreBackend,
    pool: ThreadPoolExecutor,
    outcome: str,
    asynchronous: bool,
) -> None:
    urls = row_locking
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        target = begin_resumable(
            db, Report.file, filename="big.pdf", content_type="application/pdf", size=len(PDF),
            limits=LIMITS,
        )  # fmt: skip
        db.commit()
    assert target.protocol == "tus"
    local.put(target.path, PDF, overwrite=False)  # what the tus handler assembles at the end

    def aborting() -> Any:
        with Session(engine) as db:
            result = _outcome(lambda: abort(db, target.id))
            db.commit()
            return result

    async def aborting_async() -> Any:
        async_engine = create_async_engine(urls.async_)
        try:
            async with AsyncSession(async_engine) as db:
                try:
                    result = await abort_async(db, target.id)
                except Exception as error:
                    result = error
                await db.commit()
                return result
        finally:
            await async_engine.dispose()

    with Session(engine) as app:
        app.add(Report(name="accepted", file=complete(app, target.id)))
        app.flush()
        if asynchronous:
            aborted = pool.submit(_run_in_own_loop, aborting_async)
        else:
            aborted = pool.submit(aborting)
        _until(lambda: waiting_for_a_lock(urls, "DELETE FROM storeroom_upload_sessions") > 0)
        assert not aborted.done()
        if outcome == "commit":
            app.commit()
        else:
            app.rollback()
        result = aborted.result(60)
    engine.dispose()
    if outcome == "commit":
        assert isinstance(result, UploadSessionInvalid), result
        assert stored(urls, "accepted") == PDF
        assert [row.completed_at is not None for row in session_rows(urls)] == [True]
    else:
        assert result is None
        assert not local.exists(target.path) and session_rows(urls) == []
