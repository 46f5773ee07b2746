"""Upload sessions on PostgreSQL and MariaDB: persisted, completed exactly once under races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from storeroom import ObstoreBackend, storages
from storeroom.signing import configure_signing
from storeroom.uploads import (
    UploadLimits,
    UploadSessionInvalid,
    begin,
    begin_async,
    complete,
    complete_async,
    metadata,
    remove_expired,
    remove_expired_async,
)
from tests.servers.databases import DatabaseUrls

PDF = b"%PDF-1.7\n" + b"y" * 300


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseUrls]:
    found: DatabaseUrls = request.getfixturevalue(f"{request.param}_url")
    backend = storages.register_backend(ObstoreBackend("docs", f"file://{tmp_path}/store"))
    configure_signing(backend, secret="db-uploads-secret-0123456789", base_url="/files")
    engine = create_engine(found.sync)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    yield found
    metadata.drop_all(engine)
    engine.dispose()


def test_exactly_one_of_two_racing_completions_wins(urls: DatabaseUrls) -> None:
    engine = create_engine(urls.sync, pool_size=4)
    with Session(engine) as db:
        target = begin(
            db,
            "docs",
            filename="a.pdf",
            content_type="application/pdf",
            size=len(PDF),
            limits=UploadLimits(max_size=1000),
        )
        db.commit()
    storages.get_backend("docs").put(target.path, PDF, overwrite=False)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def racer() -> None:
        with Session(engine) as db:
            barrier.wait()
            try:
                complete(db, target.id)
                db.commit()
                outcomes.append("won")
            except UploadSessionInvalid:
                db.rollback()
                outcomes.append("refused")

    threads = [threading.Thread(target=racer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["refused", "won"]
    engine.dispose()


async def test_async_session_on_a_real_database(urls: DatabaseUrls) -> None:
    engine = create_async_engine(urls.async_)
    async with AsyncSession(engine) as db:
        target = await begin_async(
            db,
            "docs",
            filename="a.pdf",
            content_type="application/pdf",
            size=len(PDF),
            expires_in=60,
        )
        await db.commit()
        await storages.get_backend("docs").put_async(target.path, PDF, overwrite=False)
        file = await complete_async(db, target.id)
        await db.commit()
        assert file.size == len(PDF) and file.content_type == "application/pdf"
        pending = await begin_async(
            db,
            "docs",
            filename="b.pdf",
            content_type="application/pdf",
            size=len(PDF),
            expires_in=60,
        )
        await db.commit()
        await storages.get_backend("docs").put_async(pending.path, PDF, overwrite=False)
        later = pending.expires_at + timedelta(seconds=1)
        assert await remove_expired_async(db, now=later) == 2
        await db.commit()
    assert storages.get_backend("docs").exists(target.path)
    assert not storages.get_backend("docs").exists(pending.path)
    await engine.dispose()


def test_remove_expired_without_the_table_removes_nothing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/empty.db")
    with Session(engine) as db:
        assert remove_expired(db) == 0
    engine.dispose()
