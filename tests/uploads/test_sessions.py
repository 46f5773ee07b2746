"""Upload sessions: server-placed, single-use, verified at completion, expired ones removed.

The store here is local disk behind storeroom's HMAC handler (S3 and Azure: test_stores.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storeroom import FileObject, ObstoreBackend, checksums, storages
from storeroom.orm import StoredObject, wait_for_cleanup
from storeroom.signing import configure_signing
from storeroom.uploads import (
    UploadLimits,
    UploadRejected,
    UploadSessionInvalid,
    begin,
    begin_async,
    complete,
    complete_async,
    metadata,
    remove_expired,
    upload_sessions,
)
from storeroom.web import SignedUrlApp, SignedUrlWsgiApp

SECRET = "uploads-secret-0123456789abcdef"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
    b"\x00\x90wS\xde" + b"\x00" * 200
)
HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"
IMAGES = UploadLimits(max_size=10_000, content_types=["image/*"])


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    image: Mapped[FileObject | None] = mapped_column(StoredObject(backend="photos"))


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "store"
        self.backend = storages.register_backend(ObstoreBackend("photos", f"file://{self.root}"))
        configure_signing(self.backend, secret=SECRET, base_url="http://testserver/files")
        self.engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
        Base.metadata.create_all(self.engine)
        metadata.create_all(self.engine)
        from werkzeug.test import Client

        self.web = Client(SignedUrlWsgiApp())

    def send(self, instructions: Any, body: bytes) -> int:
        parts = urlsplit(instructions.url)
        assert parts.path.startswith("/files/")
        reply = self.web.open(
            parts.path.removeprefix("/files"),
            query_string=parts.query,
            method=instructions.method,
            headers=instructions.headers,
            data=body,
        )
        return int(reply.status_code)

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path)
    yield environment
    environment.engine.dispose()


def test_upload_session_happy_path_replay_and_second_completion(env: Env) -> None:
    with Session(env.engine) as session:
        target = begin(
            session,
            Photo.image,
            filename="../../etc/passwd cat.png",
            content_type="image/png",
            size=len(PNG),
            limits=IMAGES,
        )
        session.commit()
    # The server chose the path: the ORM layout, never the client's name.
    assert target.path.startswith("photos/image/") and target.path.endswith("/passwd_cat.png")
    assert target.instructions.enforced == ("size", "type", "create-only")
    assert env.send(target.instructions, PNG) == 200

    # Another app server (a new Session on the same database) completes it.
    with Session(env.engine) as session:
        file = complete(session, target.id)
        photo = Photo(image=file)
        session.add(photo)
        session.commit()
        assert file.path == target.path and file.filename == "../../etc/passwd cat.png"
        assert file.size == len(PNG) and file.content_type == "image/png"
        assert file.checksum == checksums.digest(checksums.DEFAULT_ALGORITHM, PNG)

    # Replays: the same URL cannot overwrite the object, the session cannot complete again.
    assert env.send(target.instructions, b"\x89PNG replaced") == 409
    assert env.backend.get(target.path) == PNG
    with Session(env.engine) as session, pytest.raises(UploadSessionInvalid, match="single-use"):
        complete(session, target.id)


def test_completion_rolled_back_leaves_the_session_pending(env: Env) -> None:
    with Session(env.engine) as session:
        target = begin(
            session,
            "photos",
            filename="a.png",
            content_type="image/png",
            size=len(PNG),
            limits=IMAGES,
        )
        session.commit()
    assert env.send(target.instructions, PNG) == 200
    with Session(env.engine) as session:
        complete(session, target.id)
        session.rollback()
    with Session(env.engine) as session:
        assert complete(session, target.id).size == len(PNG)
        session.commit()


@pytest.mark.parametrize(
    ("body", "declared_type", "rule"),
    [
        (HTML, "image/png", "content_type"),  # HTML bytes declared as a PNG
        (PNG[:100], "image/png", "declared_size"),  # fewer bytes than declared
    ],
)
def test_failed_check_deletes_the_object_and_names_the_rule(
    env: Env, body: bytes, declared_type: str, rule: str
) -> None:
    with Session(env.engine) as session:
        target = begin(
            session,
            Photo.image,
            filename="x.png",
            content_type=declared_type,
            size=len(HTML) if rule == "content_type" else len(PNG),
            limits=IMAGES,
        )
        session.commit()
    assert env.send(target.instructions, body) == 200
    with Session(env.engine) as session, pytest.raises(UploadRejected) as caught:
        complete(session, target.id)
    assert caught.value.rule == rule
    assert str(caught.value.value) in str(caught.value)
    assert env.files() == []


def test_the_store_refuses_what_the_signature_does_not_grant(env: Env) -> None:
    with Session(env.engine) as session:
        target = begin(
            session,
            Photo.image,
            filename="x.png",
            content_type="image/png",
            size=len(PNG),
            limits=IMAGES,
        )
        session.commit()
    too_big = env.send(target.instructions, PNG + b"\x00")
    other_type = env.send(
        type(target.instructions)(target.instructions.url, "PUT", {"Content-Type": "text/html"}),
        PNG,
    )
    assert (too_big, other_type) == (413, 415)
    assert env.files() == []


def test_declarations_over_the_limits_are_refused_at_begin(env: Env) -> None:
    with Session(env.engine) as session:
        with pytest.raises(UploadRejected) as big:
            begin(
                session,
                Photo.image,
                filename="x.png",
                content_type="image/png",
                size=10_001,
                limits=IMAGES,
            )
        with pytest.raises(UploadRejected) as html:
            begin(
                session,
                Photo.image,
                filename="x.html",
                content_type="text/html",
                size=10,
                limits=IMAGES,
            )
        assert (big.value.rule, html.value.rule) == ("max_size", "content_type")
        assert session.execute(select(upload_sessions)).all() == []


def test_missing_unknown_and_expired_sessions(env: Env) -> None:
    with Session(env.engine) as session:
        target = begin(
            session,
            Photo.image,
            filename="x.png",
            content_type="image/png",
            size=len(PNG),
            limits=IMAGES,
            expires_in=60,
        )
        session.commit()
        with pytest.raises(UploadRejected) as missing:
            complete(session, target.id)
        assert missing.value.rule == "missing"
        with pytest.raises(UploadSessionInvalid, match="does not exist"):
            complete(session, "0" * 32)
    assert env.send(target.instructions, PNG) == 200
    with Session(env.engine) as session:
        later = target.expires_at + timedelta(seconds=1)
        assert remove_expired(session, now=later - timedelta(seconds=30)) == 0
        assert remove_expired(session, now=later) == 1
        session.commit()
        assert session.execute(select(upload_sessions)).all() == []
    assert env.files() == []


def test_expiry_keeps_completed_files(env: Env) -> None:
    with Session(env.engine) as session:
        target = begin(
            session,
            Photo.image,
            filename="x.png",
            content_type="image/png",
            size=len(PNG),
            limits=IMAGES,
            expires_in=60,
        )
        session.commit()
    assert env.send(target.instructions, PNG) == 200
    with Session(env.engine) as session:
        session.add(Photo(image=complete(session, target.id)))
        session.commit()
        assert remove_expired(session, now=target.expires_at + timedelta(seconds=1)) == 1
        session.commit()
    assert env.backend.get(target.path) == PNG


async def test_async_twins(tmp_path: Path) -> None:
    root = tmp_path / "store"
    backend = storages.register_backend(ObstoreBackend("photos", f"file://{root}"))
    configure_signing(backend, secret=SECRET, base_url="http://testserver/files")
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.run_sync(Base.metadata.create_all)
    transport = httpx.ASGITransport(app=SignedUrlApp(mount_path="/files"))
    async with (
        AsyncSession(engine) as session,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        target = await begin_async(
            session,
            Photo.image,
            filename="a.png",
            content_type="image/png",
            size=len(PNG),
            limits=IMAGES,
        )
        await session.commit()
        reply = await client.put(
            target.instructions.url, content=PNG, headers=target.instructions.headers
        )
        assert reply.status_code == 200
        file = await complete_async(session, target.id)
        session.add(Photo(image=file))
        await session.commit()
        assert await file.get_content_async() == PNG
        with pytest.raises(UploadSessionInvalid):
            await complete_async(session, target.id)
    await engine.dispose()


def test_active_content_is_refused_even_where_a_pattern_matches(env: Env) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    with Session(env.engine) as session:
        target = begin(
            session,
            Photo.image,
            filename="logo.png",
            content_type="image/png",
            size=len(svg),
            limits=IMAGES,
        )
        session.commit()
    assert env.send(target.instructions, svg) == 200
    with Session(env.engine) as session, pytest.raises(UploadRejected, match="svg") as caught:
        complete(session, target.id)
    assert caught.value.rule == "content_type" and "no active content" in str(caught.value)
    assert env.files() == []


def test_a_replay_after_the_rows_file_was_deleted_is_removed_at_expiry(env: Env) -> None:
    with Session(env.engine) as session:
        target = begin(
            session,
            Photo.image,
            filename="x.png",
            content_type="image/png",
            size=len(PNG),
            limits=IMAGES,
        )
        session.commit()
    assert env.send(target.instructions, PNG) == 200
    with Session(env.engine) as session:
        photo = Photo(image=complete(session, target.id))
        session.add(photo)
        session.commit()
        session.delete(photo)
        session.commit()  # the row's file is deleted after the commit, in the background
    assert wait_for_cleanup(30)
    assert env.files() == []
    assert env.send(target.instructions, PNG) == 200  # the URL has not expired yet
    with Session(env.engine) as session:
        assert remove_expired(session, now=target.expires_at + timedelta(seconds=1)) == 1
        session.commit()
    assert env.files() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("content_type", "text/plain, text/html"),
        ("content_type", "image/png\r\nX-Evil: 1"),
        ("content_type", ""),
        ("filename", "a\x00.png"),
        ("filename", ""),
    ],
)
def test_malformed_declarations_are_refused_with_the_rule(env: Env, field: str, value: str) -> None:
    declaration = {"filename": "a.png", "content_type": "image/png", field: value}
    with Session(env.engine) as session, pytest.raises(UploadRejected) as caught:
        begin(session, Photo.image, size=10, limits=UploadLimits(allow_active=True), **declaration)
    assert caught.value.rule == field and caught.value.value == value
