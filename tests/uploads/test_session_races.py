"""Upload sessions against transactions that do not commit and cleanups that run meanwhile.

On real databases (SQLite, PostgreSQL, MariaDB): a completion on a staging store (Azure, on
Azurite) whose commit fails can be retried; ``remove_expired`` racing a completion that has
claimed its row but not committed yet waits for it and follows its outcome; a cleanup whose
deletes fail still clears the other sessions and names the one it could not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import String, create_engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storeroom import FileObject, ObstoreBackend, storages
from storeroom.errors import BackendError
from storeroom.orm import StoredObject
from storeroom.signing import configure_signing
from storeroom.uploads import (
    STAGING_PREFIX,
    UploadLimits,
    UploadSessionInvalid,
    begin,
    begin_async,
    complete,
    complete_async,
    metadata,
    remove_expired,
    remove_expired_async,
    upload_sessions,
)
from tests.servers.databases import DatabaseUrls

PDF = b"%PDF-1.4\n" + b"x" * 500 + b"\n%%EOF\n"
LIMITS = UploadLimits(max_size=4096, content_types=["application/pdf"])


class Base(DeclarativeBase):
    pass


class Report(Base):
    __tablename__ = "race_reports"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="docs"))


@contextmanager
def _empty_tables(found: DatabaseUrls) -> Iterator[DatabaseUrls]:
    engine = create_engine(found.sync)
    for tables in (metadata, Base.metadata):
        tables.drop_all(engine)
        tables.create_all(engine)
    try:
        yield found
    finally:
        for tables in (metadata, Base.metadata):
            tables.drop_all(engine)
        engine.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseUrls]:
    """A database with empty upload-session and report tables."""
    if request.param == "sqlite":
        path = tmp_path / "db.sqlite"
        found = DatabaseUrls("sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}")
    else:
        found = request.getfixturevalue(f"{request.param}_url")
    with _empty_tables(found) as ready:
        yield ready


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def row_locking(request: pytest.FixtureRequest) -> Iterator[DatabaseUrls]:
    """Like ``urls``, on the databases that lock rows (SQLite locks the whole database, so a
    cleanup there fails with 'database is locked' instead of waiting)."""
    with _empty_tables(request.getfixturevalue(f"{request.param}_url")) as ready:
        yield ready


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


@pytest.fixture
def local(tmp_path: Path) -> ObstoreBackend:
    """Local disk behind storeroom's HMAC handler: create-only, no staging."""
    backend = storages.register_backend(ObstoreBackend("docs", f"file://{tmp_path}/store"))
    configure_signing(backend, secret="session-races-0123456789abcdef", base_url="/files")
    return backend


def _session_rows(urls: DatabaseUrls) -> list[Any]:
    engine = create_engine(urls.sync)
    try:
        with Session(engine) as db:
            return list(db.execute(select(upload_sessions)).all())
    finally:
        engine.dispose()


def _stored(urls: DatabaseUrls, name: str) -> bytes:
    """The bytes of Report ``name``'s committed file, read back from its store."""
    engine = create_engine(urls.sync)
    try:
        with Session(engine) as db:
            report = db.execute(select(Report).where(Report.name == name)).scalar_one()
            assert report.file is not None
            return report.file.get_content()
    finally:
        engine.dispose()


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
    assert [row.completed_at for row in _session_rows(urls)] == [None]  # pending again

    with Session(engine) as db:
        file = complete(db, target.id)
        db.add(Report(name="retried", file=file))
        db.commit()
    assert file.path == target.path and file.size == len(PDF)
    assert _stored(urls, "retried") == PDF
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

    async with AsyncSession(engine) as db:
        file = await complete_async(db, target.id)
        db.add(Report(name="retried", file=file))
        await db.commit()
    await engine.dispose()
    assert _stored(urls, "retried") == PDF
    assert [info.path for info in azure.list(f"{STAGING_PREFIX}/{target.id}")] == []


# == expiry cleanup against a completion in flight ============================================


def _cleanups_waiting(urls: DatabaseUrls) -> int:
    """How many deletes of upload-session rows wait for a row lock right now."""
    query = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database() AND query LIKE 'DELETE FROM storeroom_upload_sessions%'",
        "mariadb": "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = "
        "'LOCK WAIT' AND trx_query LIKE 'DELETE FROM storeroom_upload_sessions%'",
    }[urls.name]
    engine = create_engine(urls.sync)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


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
        assert _stored(urls, "uploaded") == PDF
        assert [row.completed_at is not None for row in _session_rows(urls)] == [True]
        async with AsyncSession(engine) as gc:  # the next run removes the completed row only
            assert await remove_expired_async(gc, now=later) == 1
        assert _stored(urls, "uploaded") == PDF
    else:
        assert removed == 1  # still pending after the rollback: abandoned, and removed
        assert not local.exists(target.path)
        async with AsyncSession(engine) as db:
            with pytest.raises(UploadSessionInvalid, match="does not exist"):
                await complete_async(db, target.id)
    assert _session_rows(urls) == []
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
    assert _session_rows(urls) == []  # every claim was committed before any delete
    assert [t.path for t in targets if store.exists(t.path)] == [stuck.path]
    with Session(engine) as db:
        assert remove_expired(db, now=later) == 0
    engine.dispose()
