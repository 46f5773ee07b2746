"""Resumable upload sessions on Azure (Azurite): blocks with SAS, then the block list.

Azurite verifies SAS signatures. Each part is a Put Block through a SAS URL; the server
lists the uncommitted blocks to resume and to check them, commits them with Put Block List
on the staging path, verifies, and copies to the final path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from storeroom import ObstoreBackend, storages
from storeroom.backends.obstore.direct_uploads import AzureBlocks
from storeroom.orm import wait_for_cleanup
from storeroom.uploads import (
    STAGING_PREFIX,
    UploadLimits,
    UploadRejected,
    complete,
    complete_async,
    metadata,
    remove_expired,
)
from storeroom.uploads.resumable import (
    abort,
    begin_resumable,
    begin_resumable_async,
    list_parts,
    list_parts_async,
    sign_part,
    sign_part_async,
)

pytestmark = pytest.mark.azure

BODY = b"%PDF-1.4\n" + bytes(range(256)) * 3000 + b"\n%%EOF\n"
LIMITS = UploadLimits(max_size=4 << 20, content_types=["application/pdf"])
PART = 256 * 1024


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    metadata.create_all(engine)
    with Session(engine) as db:
        yield db
    engine.dispose()


@pytest.fixture
def azure(azurite_server: Any, azure_container: str) -> ObstoreBackend:
    return storages.register_backend(
        ObstoreBackend(
            "blobs",
            f"az://{azure_container}/prefix",
            azure_storage_connection_string=azurite_server.connection_string,
        )
    )


def _chunks(body: bytes) -> list[bytes]:
    return [body[i : i + PART] for i in range(0, len(body), PART)]


def test_blocks_resume_commit_and_verify(azure: ObstoreBackend, session: Session) -> None:
    target = begin_resumable(
        session,
        "blobs",
        filename="r.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    session.commit()
    assert target.protocol == "azure-blocks"
    chunks = _chunks(BODY)
    first = sign_part(session, target.id, 1, len(chunks[0]))
    assert "comp=block" in first["url"] and "blockid=" in first["url"]
    forged = first["url"].replace("sig=", "sig=A")
    assert httpx.put(forged, content=chunks[0]).status_code == 403  # Azurite checks the SAS
    assert httpx.put(first["url"], content=chunks[0]).status_code == 201
    assert [(p.number, p.size) for p in list_parts(session, target.id)] == [(1, len(chunks[0]))]
    for number, chunk in enumerate(chunks[1:], start=2):
        url = sign_part(session, target.id, number, len(chunk))["url"]
        assert httpx.put(url, content=chunk).status_code == 201
    file = complete(session, target.id)
    session.commit()
    assert file.path == target.path and file.content_type == "application/pdf"
    assert hashlib.sha256(azure.get(target.path)).digest() == hashlib.sha256(BODY).digest()
    assert wait_for_cleanup(30)  # the staging copy is deleted after the commit
    assert [i.path for i in azure.list(f"{STAGING_PREFIX}/{target.id}")] == []


def test_gap_in_blocks_rejected_and_dropped(azure: ObstoreBackend, session: Session) -> None:
    target = begin_resumable(
        session,
        "blobs",
        filename="r.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    session.commit()
    chunks = _chunks(BODY)
    for number in (1, 3):
        httpx.put(
            sign_part(session, target.id, number, len(chunks[number - 1]))["url"],
            content=chunks[number - 1],
        )
    with pytest.raises(UploadRejected) as caught:
        complete(session, target.id)
    assert caught.value.rule == "parts"
    row = session.execute(metadata.tables["storeroom_upload_sessions"].select()).first()
    assert row is not None
    assert AzureBlocks(azure).parts(row.upload_path) == []
    assert not azure.exists(row.upload_path)


def test_wrong_type_and_part_limits(azure: ObstoreBackend, session: Session) -> None:
    html = b"<!doctype html><script>x</script>" + b" " * 50
    target = begin_resumable(
        session,
        "blobs",
        filename="r.pdf",
        content_type="application/pdf",
        size=len(html),
        limits=LIMITS,
    )
    session.commit()
    with pytest.raises(UploadRejected, match="out of range"):
        sign_part(session, target.id, 1, len(html) + 1)
    httpx.put(sign_part(session, target.id, 1, len(html))["url"], content=html)
    with pytest.raises(UploadRejected) as caught:
        complete(session, target.id)
    assert caught.value.rule == "content_type"
    assert not azure.exists(target.path)


def test_abort_and_gc_drop_uncommitted_blocks(azure: ObstoreBackend, session: Session) -> None:
    tables = metadata.tables["storeroom_upload_sessions"]
    kept = begin_resumable(
        session,
        "blobs",
        filename="a.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    dropped = begin_resumable(
        session,
        "blobs",
        filename="b.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    session.commit()
    rows = {row.id: row for row in session.execute(tables.select()).all()}
    for target in (kept, dropped):
        httpx.put(sign_part(session, target.id, 1, PART)["url"], content=BODY[:PART])
        assert len(AzureBlocks(azure).parts(rows[target.id].upload_path)) == 1
    abort(session, dropped.id)
    session.commit()
    assert AzureBlocks(azure).parts(rows[dropped.id].upload_path) == []
    assert remove_expired(session, now=kept.expires_at + timedelta(seconds=1)) == 1
    session.commit()
    assert AzureBlocks(azure).parts(rows[kept.id].upload_path) == []
    assert not azure.exists(rows[kept.id].upload_path)


async def test_async_twins(azure: ObstoreBackend, tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/a.sqlite")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    async with AsyncSession(engine) as session:
        target = await begin_resumable_async(
            session,
            "blobs",
            filename="r.pdf",
            content_type="application/pdf",
            size=len(BODY),
            limits=LIMITS,
        )
        await session.commit()
        for number, chunk in enumerate(_chunks(BODY), start=1):
            signed = await sign_part_async(session, target.id, number, len(chunk))
            async with httpx.AsyncClient() as client:
                assert (await client.put(signed["url"], content=chunk)).status_code == 201
        assert len(await list_parts_async(session, target.id)) == len(_chunks(BODY))
        file = await complete_async(session, target.id)
        await session.commit()
        assert file.size == len(BODY)
    await engine.dispose()
