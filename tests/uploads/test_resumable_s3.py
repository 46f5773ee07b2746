"""Resumable (multipart) upload sessions on S3, against moto: parts, resume, completion, gc."""

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

from storeroom import ObstoreBackend, checksums, storages
from storeroom.backends.obstore.direct_uploads import MIN_PART_SIZE, S3Multipart
from storeroom.errors import ConfigurationError
from storeroom.uploads import (
    UploadLimits,
    UploadRejected,
    UploadSessionInvalid,
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

pytestmark = pytest.mark.s3

PART = MIN_PART_SIZE
# A PDF of two and a half parts: the last part is short, as S3 allows.
BODY = b"%PDF-1.4\n" + bytes(range(256)) * ((PART * 2 + PART // 2) // 256) + b"\n%%EOF\n"
LIMITS = UploadLimits(max_size=64 << 20, content_types=["application/pdf"])


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    metadata.create_all(engine)
    with Session(engine) as db:
        yield db
    engine.dispose()


@pytest.fixture
def s3(moto_server: Any, s3_bucket: str) -> ObstoreBackend:
    server = moto_server
    return storages.register_backend(
        ObstoreBackend(
            "big",
            f"s3://{s3_bucket}/prefix",
            **server.obstore_options(),
        )
    )


def _chunks(body: bytes) -> list[bytes]:
    return [body[i : i + PART] for i in range(0, len(body), PART)]


def _put(url: str, data: bytes) -> httpx.Response:
    return httpx.put(url, content=data, timeout=30)


def test_parts_resume_and_complete(s3: ObstoreBackend, session: Session) -> None:
    target = begin_resumable(
        session,
        "big",
        filename="report.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    session.commit()
    assert target.protocol == "s3-multipart"
    chunks = _chunks(BODY)
    assert len(chunks) == 3
    # The first part goes up, then the connection "drops": the client asks what is there.
    first = sign_part(session, target.id, 1, len(chunks[0]))
    assert "uploadId=" in first["url"] and "partNumber=1" in first["url"]
    assert "content-length" in first["url"].lower()  # the part's length is signed
    assert _put(first["url"], chunks[0]).status_code == 200
    stored = list_parts(session, target.id)
    assert [(p.number, p.size) for p in stored] == [(1, len(chunks[0]))]
    for number, chunk in enumerate(chunks[1:], start=2):
        response = _put(sign_part(session, target.id, number, len(chunk))["url"], chunk)
        assert response.status_code == 200
    file = complete(session, target.id)
    session.commit()
    assert file.size == len(BODY)
    assert file.content_type == "application/pdf"
    assert file.checksum == checksums.digest(checksums.DEFAULT_ALGORITHM, BODY)
    assert hashlib.sha256(s3.get(file.path)).digest() == hashlib.sha256(BODY).digest()
    # Single-use: the multipart upload is gone; no part can be signed or completed again.
    with pytest.raises(UploadSessionInvalid):
        sign_part(session, target.id, 1, 10)
    with pytest.raises(UploadSessionInvalid):
        complete(session, target.id)


def test_part_limits_checked_when_signing(s3: ObstoreBackend, session: Session) -> None:
    target = begin_resumable(
        session,
        "big",
        filename="r.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    session.commit()
    for number, size in [(0, 10), (4, 10), (10_001, 10), (1, 0), (1, len(BODY) + 1), (True, 10)]:
        with pytest.raises(UploadRejected) as caught:
            sign_part(session, target.id, number, size)  # type: ignore[arg-type]
        assert caught.value.rule == "part"


def test_declared_size_too_large_is_refused_at_begin(s3: ObstoreBackend, session: Session) -> None:
    with pytest.raises(UploadRejected) as caught:
        begin_resumable(
            session,
            "big",
            filename="r.pdf",
            content_type="application/pdf",
            size=65 << 20,
            limits=LIMITS,
        )
    assert caught.value.rule == "max_size"


def test_missing_or_short_parts_are_rejected_and_aborted(
    s3: ObstoreBackend, session: Session
) -> None:
    target = begin_resumable(
        session,
        "big",
        filename="r.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    session.commit()
    chunks = _chunks(BODY)
    _put(sign_part(session, target.id, 1, len(chunks[0]))["url"], chunks[0])
    _put(sign_part(session, target.id, 3, len(chunks[2]))["url"], chunks[2])  # a gap
    with pytest.raises(UploadRejected) as caught:
        complete(session, target.id)
    assert caught.value.rule == "parts"
    row = session.execute(metadata.tables["storeroom_upload_sessions"].select()).first()
    assert row is not None
    assert not S3Multipart(s3).exists(row.upload_id, row.upload_path)  # aborted
    assert not s3.exists(target.path)


def test_wrong_type_rejected_after_multipart_completion(
    s3: ObstoreBackend, session: Session
) -> None:
    html = b"<!doctype html><script>alert(1)</script>" + b" " * 100
    target = begin_resumable(
        session,
        "big",
        filename="r.pdf",
        content_type="application/pdf",
        size=len(html),
        limits=LIMITS,
    )
    session.commit()
    _put(sign_part(session, target.id, 1, len(html))["url"], html)
    with pytest.raises(UploadRejected) as caught:
        complete(session, target.id)
    assert caught.value.rule == "content_type"
    assert not s3.exists(target.path)


def test_abort_and_gc_drop_abandoned_multipart_uploads(
    s3: ObstoreBackend, session: Session
) -> None:
    tables = metadata.tables["storeroom_upload_sessions"]
    kept = begin_resumable(
        session,
        "big",
        filename="a.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    dropped = begin_resumable(
        session,
        "big",
        filename="b.pdf",
        content_type="application/pdf",
        size=len(BODY),
        limits=LIMITS,
    )
    session.commit()
    chunk = _chunks(BODY)[0]
    _put(sign_part(session, kept.id, 1, len(chunk))["url"], chunk)
    rows = {row.id: row for row in session.execute(tables.select()).all()}
    abort(session, dropped.id)
    session.commit()
    assert not S3Multipart(s3).exists(rows[dropped.id].upload_id, dropped.path)
    with pytest.raises(UploadSessionInvalid):
        list_parts(session, dropped.id)
    # storeroom gc, a day and a bit later: the abandoned upload and its parts are aborted.
    assert remove_expired(session, now=kept.expires_at + timedelta(seconds=1)) == 1
    session.commit()
    assert not S3Multipart(s3).exists(rows[kept.id].upload_id, kept.path)
    assert session.execute(tables.select()).all() == []


def test_single_session_is_not_a_multipart_one(s3: ObstoreBackend, session: Session) -> None:
    from storeroom.uploads import begin

    target = begin(
        session, "big", filename="r.pdf", content_type="application/pdf", size=10, limits=LIMITS
    )
    with pytest.raises(UploadSessionInvalid, match="single"):
        sign_part(session, target.id, 1, 10)


def test_store_without_resumable_protocol_is_a_clear_error(session: Session) -> None:
    storages.register_backend(ObstoreBackend("plain", "memory:///"))
    with pytest.raises(ConfigurationError, match="resumable"):
        begin_resumable(session, "plain", filename="r.pdf", content_type="application/pdf", size=10)


async def test_async_twins(s3: ObstoreBackend, tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/a.sqlite")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    async with AsyncSession(engine) as session:
        target = await begin_resumable_async(
            session,
            "big",
            filename="r.pdf",
            content_type="application/pdf",
            size=len(BODY),
            limits=LIMITS,
        )
        await session.commit()
        for number, chunk in enumerate(_chunks(BODY), start=1):
            signed = await sign_part_async(session, target.id, number, len(chunk))
            assert _put(signed["url"], chunk).status_code == 200
        assert len(await list_parts_async(session, target.id)) == 3
        file = await complete_async(session, target.id)
        await session.commit()
        assert file.size == len(BODY)
    await engine.dispose()


def _open_uploads(server: Any, bucket: str) -> list[str]:
    listed = server.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listed.get("Uploads", []) or []]


async def test_a_begin_whose_row_fails_to_insert_aborts_its_multipart_upload(
    s3: ObstoreBackend, moto_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    # No sessions table: the INSERT fails after S3 created the multipart upload.
    sync_engine = create_engine(f"sqlite:///{tmp_path}/none.sqlite")
    with Session(sync_engine) as session, pytest.raises(Exception, match="no such table"):
        begin_resumable(
            session, "big", filename="a.pdf", content_type="application/pdf", size=len(BODY)
        )
    sync_engine.dispose()
    assert _open_uploads(moto_server, s3_bucket) == []
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/none-async.sqlite")
    async with AsyncSession(engine) as session:
        with pytest.raises(Exception, match="no such table"):
            await begin_resumable_async(
                session, "big", filename="b.pdf", content_type="application/pdf", size=len(BODY)
            )
    await engine.dispose()
    assert _open_uploads(moto_server, s3_bucket) == []
