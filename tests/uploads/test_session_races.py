"""Upload sessions against transactions that do not commit and cleanups that run meanwhile.

On real databases (SQLite, PostgreSQL, MariaDB): a completion on a staging store (Azure, on
Azurite) whose commit fails leaves nothing at the final path and can be retried; ``remove_expired`` racing a completion that has
claimed its row but not committed yet waits for it and follows its outcome; a cleanup whose
deletes fail still clears the other sessions and names the one it could not.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from storeroom import ObstoreBackend, storages
from storeroom.errors import BackendError
from storeroom.orm import wait_for_cleanup
from storeroom.signing import configure_signing
from storeroom.uploads import (
    STAGING_PREFIX,
    UploadSessionInvalid,
    begin,
    begin_async,
    complete,
    complete_async,
    remove_expired,
    remove_expired_async,
)
from tests.servers.databases import DatabaseUrls
from tests.uploads.reports import (
    LIMITS,
    PDF,
    Report,
    session_rows,
    stored,
    waiting_for_a_lock,
)


@pytest.fixture
def azure(azurite_server: Any, azure_container: str) -> ObstoreBackend:
    """Azure on Azurite: it cannot refuse a second write, so uploads go to a staging path."""
    return storages.register_backend(
        ObstoreBackend(
            "docs",
            f"az://{azure_container}/prefix",
            azure_storage_connection_string=azurite_server.connection_string,
        )
    )


# == a completion whose commit fails ==========================================================


@pytest.mark.azure
def test_a_staged_completion_whose_commit_failed_can_be_retried(
    urls: DatabaseUrls, azure: ObstoreBackend
) -> None:
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        db.add(Report(name="taken"))
        target = begin(
            db, Report.file, filename="q3.pdf", content_type="application/pdf", size=len(PDF),
            limits=LIMITS,
        )  # fmt: skip
        db.commit()
    assert target.instructions.enforced == ()  # a staging store
    sent = httpx.put(target.instructions.url, content=PDF, headers=target.instructions.headers)
    assert sent.status_code == 201

    with Session(engine) as db:
        db.add(Report(name="taken", file=complete(db, target.id)))
        with pytest.raises(IntegrityError):  # the name is taken: the commit fails
            db.commit()
        db.rollback()
    assert [row.completed_at for row in session_rows(urls)] == [None]  # pending again
    assert not azure.exists(target.path)  # the rolled-back copy is gone; the upload is staged
    assert [info.path for info in azure.list(f"{STAGING_PREFIX}/{target.id}")] != []

    with Session(engine) as db:
        file = complete(db, target.id)
        db.add(Report(name="retried", file=file))
        db.commit()
    assert file.path == target.path and file.size == len(PDF)
    assert stored(urls, "retried") == PDF
    assert wait_for_cleanup(30)  # the staging upload is deleted after the commit
    assert [info.path for info in azure.list(f"{STAGING_PREFIX}/{target.id}")] == []
    with Session(engine) as db, pytest.raises(UploadSessionInvalid, match="single-use"):
        complete(db, target.id)
    engine.dispose()


@pytest.mark.azure
async def test_a_staged_completion_whose_commit_failed_can_be_retried_async(
    urls: DatabaseUrls, azure: ObstoreBackend
) -> None:
    engine = create_async_engine(urls.async_)
    async with AsyncSession(engine) as db:
        db.add(Report(name="taken"))
        target = await begin_async(
            db, Report.file, filename="q3.pdf", content_type="application/pdf", size=len(PDF),
            limits=LIMITS,
        )  # fmt: skip
        await db.commit()
    async with httpx.AsyncClient() as client:
        sent = await client.put(
            target.instructions.url, content=PDF, headers=target.instructions.headers
        )
    assert sent.status_code == 201

    async with AsyncSession(engine) as db:
        db.add(Report(name="taken", file=await complete_async(db, target.id)))
        with pytest.raises(IntegrityError):
            await db.commit()
        await db.rollback()
    assert not await azure.exists_async(target.path)

    async with AsyncSession(engine) as db:
        file = await complete_async(db, target.id)
        db.add(Report(name="retried", file=file))
        await db.commit()
    await engine.dispose()
    assert stored(urls, "retried") == PDF
    assert wait_for_cleanup(30)
    assert [info.path for info in azure.list(f"{STAGING_PREFIX}/{target.id}")] == []


# == expiry cleanup against a completion in flight ============================================


def _cleanups_waiting(urls: DatabaseUrls) -> int:
    """How many deletes of upload-session rows wait for a row lock right now."""
    return waiting_for_a_lock(urls, "DELETE FROM storeroom_upload_sessions")


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_expiry_cleanup_waits_for_a_completion_in_flight_and_follows_its_outcome(
    row_locking: DatabaseUrls, local: ObstoreBackend, outcome: str
) -> None:
    urls = row_locking
    engine = create_async_engine(urls.async_)
    async with AsyncSession(engine) as db:
        target = await begin_async(
            db, Report.file, filename="a.pdf", content_type="application/pdf", size=len(PDF),
            limits=LIMITS, expires_in=60,
        )  # fmt: skip
        await db.commit()
    await local.put_async(target.path, PDF, overwrite=False)  # what the signed PUT does
    later = target.expires_at + timedelta(seconds=1)

    async def cleanup() -> int:
        """``storeroom gc --yes`` just after the session's expiry."""
        async with AsyncSession(engine) as gc:
            return await remove_expired_async(gc, now=later)

    async with AsyncSession(engine) as app:
        # Claimed just before the expiry, not committed yet (a large upload is read whole).
        app.add(Report(name="uploaded", file=await complete_async(app, target.id)))
        await app.flush()
        cleaner = asyncio.create_task(cleanup())
        # Until the cleanup is seen waiting for the row lock; one still running after 10 s
        # waits for something the completion holds too (the database's view of lock waits
        # can lag under load), which the outcome below judges the same way.
        deadline = time.monotonic() + 10
        while not cleaner.done() and time.monotonic() < deadline:
            if await asyncio.to_thread(_cleanups_waiting, urls):
                break
            await asyncio.sleep(0.01)
        assert not cleaner.done()  # it waits for the completion's row lock
        await (app.commit() if outcome == "commit" else app.rollback())
        removed = await asyncio.wait_for(cleaner, 60)

    if outcome == "commit":
        assert removed == 0  # completed meanwhile: not the cleanup's to remove
        assert stored(urls, "uploaded") == PDF
        assert [row.completed_at is not None for row in session_rows(urls)] == [True]
        async with AsyncSession(engine) as gc:  # the next run removes the completed row only
            assert await remove_expired_async(gc, now=later) == 1
        assert stored(urls, "uploaded") == PDF
    else:
        assert removed == 1  # still pending after the rollback: abandoned, and removed
        assert not local.exists(target.path)
        async with AsyncSession(engine) as db:
            with pytest.raises(UploadSessionInvalid, match="does not exist"):
                await complete_async(db, target.id)
    assert session_rows(urls) == []
    await engine.dispose()


# == a cleanup whose deletes fail =============================================================


class RefusingDeletes(ObstoreBackend):
    """An in-memory store whose deletes of chosen paths fail (a permission, a network error)."""

    refused: set[str]

    def _delete(self, path: str) -> None:
        if path in self.refused:
            raise ConnectionError(f"injected delete failure for {path}")
        super()._delete(path)


def test_a_failed_delete_after_the_claim_names_its_session_and_the_others_are_cleared(
    urls: DatabaseUrls,
) -> None:
    store = storages.register_backend(RefusingDeletes("docs", "memory://"))
    store.refused = set()
    configure_signing(store, secret="session-races-0123456789abcdef", base_url="/files")
    engine = create_engine(urls.sync)
    with Session(engine) as db:
        targets = [
            begin(db, "docs", filename=f"{n}.pdf", content_type="application/pdf",
                  size=len(PDF), limits=LIMITS, expires_in=60)
            for n in range(3)
        ]  # fmt: skip
        db.commit()
    for target in targets:
        store.put(target.path, PDF, overwrite=False)
    stuck = sorted(targets, key=lambda t: t.id)[1]
    store.refused = {stuck.path}
    later = max(t.expires_at for t in targets) + timedelta(seconds=1)
    with Session(engine) as db:
        with pytest.raises(BackendError) as caught:
            remove_expired(db, now=later)
    message = str(caught.value)
    assert f"expired upload session {stuck.id!r}" in message and "'docs'" in message
    assert "ConnectionError" in message and "storeroom gc" in message
    assert session_rows(urls) == []  # every claim was committed before any delete
    assert [t.path for t in targets if store.exists(t.path)] == [stuck.path]
    with Session(engine) as db:
        assert remove_expired(db, now=later) == 0
    engine.dispose()
