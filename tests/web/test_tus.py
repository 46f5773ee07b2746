"""The tus 1.0 protocol (core, creation, termination, expiration) over ASGI and WSGI.

A resumable upload session hands out the tus endpoint; each case drives it with real HTTP
test clients against both apps, and completes it with the session's verification.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from storeroom import ObstoreBackend, StorageRegistry, checksums
from storeroom.signing import configure_signing
from storeroom.uploads import UploadLimits, complete, metadata, remove_expired
from storeroom.uploads.multipart import tus_parts, tus_parts_prefix
from storeroom.uploads.resumable import ResumableTarget, abort, begin_resumable
from storeroom.web import SignedUrlApp, SignedUrlWsgiApp

from .test_handlers import _wsgi_client

SECRET = "tus-secret-0123456789abcdef-xyz"
BASE = "http://testserver/files"
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
BODY = b"%PDF-1.4\n" + bytes(range(256)) * 4000 + b"\n%%EOF\n"
LIMITS = UploadLimits(max_size=10 << 20, content_types=["application/pdf"])


class Tus:
    """A test client for one app, with the registry and a database session."""

    def __init__(
        self,
        client: httpx.Client | httpx.AsyncClient,
        registry: StorageRegistry,
        backend: ObstoreBackend,
        db: Session,
        kind: str,
        app: Any,
    ) -> None:
        self.client, self.registry, self.backend, self.db = client, registry, backend, db
        self.kind, self.app = kind, app

    async def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        parts = urlsplit(url)
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        if isinstance(self.client, httpx.AsyncClient):
            return await self.client.request(method, target, **kwargs)
        return self.client.request(method, target, **kwargs)

    def begin(self, size: int = len(BODY), **options: Any) -> ResumableTarget:
        target = begin_resumable(
            self.db,
            "up",
            filename="talk.pdf",
            content_type="application/pdf",
            size=size,
            limits=options.pop("limits", LIMITS),
            registry=self.registry,
            **options,
        )
        self.db.commit()
        return target

    async def create(self, target: ResumableTarget, length: int = len(BODY)) -> str:
        assert target.endpoint is not None
        created = await self(
            "POST",
            target.endpoint,
            headers={
                **TUS,
                "Upload-Length": str(length),
                "Upload-Metadata": "filename dGFsay5wZGY=",
            },
        )
        assert created.status_code == 201, created.text
        assert created.headers["tus-resumable"] == "1.0.0"
        assert "upload-expires" in created.headers
        return created.headers["location"]

    async def offset(self, location: str) -> int:
        head = await self("HEAD", location, headers=TUS)
        assert head.status_code == 200
        assert head.headers["upload-length"] == str(len(BODY))
        assert head.headers["cache-control"] == "no-store"
        return int(head.headers["upload-offset"])


@pytest.fixture(params=["asgi", "wsgi"])
async def tus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tus]:
    registry = StorageRegistry()
    backend = registry.register_backend(ObstoreBackend("up", f"file://{tmp_path}/up", mkdir=True))
    configure_signing(backend, secret=SECRET, base_url=BASE)
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    metadata.create_all(engine)
    with Session(engine) as db:
        if request.param == "asgi":
            app: Any = SignedUrlApp(registry)
            transport = httpx.ASGITransport(app=app, root_path="/files")
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                yield Tus(c, registry, backend, db, "asgi", app)
        else:
            from werkzeug.middleware.dispatcher import DispatcherMiddleware

            app = SignedUrlWsgiApp(registry)
            mounted = DispatcherMiddleware(lambda e, s: [], {"/files": app})
            with _wsgi_client(mounted) as client:  # type: ignore[arg-type]
                yield Tus(client, registry, backend, db, "wsgi", app)
    engine.dispose()


async def test_upload_in_chunks_resume_and_complete(tus: Tus) -> None:
    target = tus.begin()
    assert target.protocol == "tus"
    location = await tus.create(target)
    assert await tus.offset(location) == 0
    cut = 300_000
    first = await tus(
        "PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=BODY[:cut]
    )
    assert first.status_code == 204
    assert first.headers["upload-offset"] == str(cut)
    # A client that lost track (a reload) asks where to resume; a wrong offset is refused.
    assert await tus.offset(location) == cut
    stale = await tus("PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=BODY[:10])
    assert stale.status_code == 409
    assert stale.headers["upload-offset"] == str(cut)
    second = await tus(
        "PATCH", location, headers={**PATCH, "Upload-Offset": str(cut)}, content=BODY[cut:]
    )
    assert second.status_code == 204
    assert second.headers["upload-offset"] == str(len(BODY))
    # Assembled into the session's object; the parts are gone.
    assert tus.backend.get(target.path) == BODY
    assert tus_parts(tus.backend, target.path) == []
    assert await tus.offset(location) == len(BODY)
    file = complete(tus.db, target.id, registry=tus.registry)
    tus.db.commit()
    assert file.size == len(BODY) and file.content_type == "application/pdf"
    assert file.checksum == checksums.digest(checksums.DEFAULT_ALGORITHM, BODY)
    # The upload is the session's now: it cannot be terminated or written through the URL.
    assert (await tus("DELETE", location, headers=TUS)).status_code == 409
    late = await tus(
        "PATCH", location, headers={**PATCH, "Upload-Offset": str(len(BODY))}, content=b"x"
    )
    assert late.status_code == 413


async def test_dropped_connection_keeps_what_arrived(tus: Tus) -> None:
    """A PATCH cut off mid-way stores the bytes received; the client resumes after them."""
    target = tus.begin()
    location = await tus.create(target)
    sent = 200_000
    path, _, query = urlsplit(location).path, None, urlsplit(location).query
    if tus.kind == "asgi":
        messages = [
            {"type": "http.request", "body": BODY[:sent], "more_body": True},
            {"type": "http.disconnect"},
        ]
        scope = {
            "type": "http",
            "method": "PATCH",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "/files",
            "query_string": query.encode(),
            "headers": [
                (b"tus-resumable", b"1.0.0"),
                (b"content-type", b"application/offset+octet-stream"),
                (b"upload-offset", b"0"),
                (b"content-length", str(len(BODY)).encode()),
            ],
        }
        sent_back: list[Any] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: Any) -> None:
            sent_back.append(message)

        await tus.app(scope, receive, send)
    else:

        class Dropping(io.RawIOBase):
            def __init__(self) -> None:
                self.left = sent

            def read(self, size: int = -1) -> bytes:
                if self.left <= 0:
                    raise ConnectionResetError("peer went away")
                chunk = BODY[sent - self.left : sent - self.left + min(size, self.left)]
                self.left -= len(chunk)
                return chunk

        environ = {
            "REQUEST_METHOD": "PATCH",
            "PATH_INFO": path[len("/files") :],
            "SCRIPT_NAME": "/files",
            "QUERY_STRING": query,
            "HTTP_TUS_RESUMABLE": "1.0.0",
            "HTTP_UPLOAD_OFFSET": "0",
            "CONTENT_TYPE": "application/offset+octet-stream",
            "CONTENT_LENGTH": str(len(BODY)),
            "wsgi.input": Dropping(),
        }
        list(tus.app(environ, lambda status, headers: None))
    assert await tus.offset(location) == sent
    rest = await tus(
        "PATCH", location, headers={**PATCH, "Upload-Offset": str(sent)}, content=BODY[sent:]
    )
    assert rest.status_code == 204
    assert hashlib.sha256(tus.backend.get(target.path)).digest() == hashlib.sha256(BODY).digest()


async def test_limits_and_protocol_errors(tus: Tus) -> None:
    target = tus.begin()
    assert target.endpoint is not None
    # Creation must declare exactly the session's size.
    for length, status in [(len(BODY) + 1, 413), (len(BODY) - 1, 400), ("ten", 400)]:
        refused = await tus("POST", target.endpoint, headers={**TUS, "Upload-Length": str(length)})
        assert refused.status_code == status, (length, refused.text)
    deferred = await tus("POST", target.endpoint, headers={**TUS, "Upload-Defer-Length": "1"})
    assert deferred.status_code == 400
    location = await tus.create(target)
    no_version = await tus(
        "PATCH",
        location,
        headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        content=b"x",
    )
    assert no_version.status_code == 412 and no_version.headers["tus-version"] == "1.0.0"
    wrong_type = await tus(
        "PATCH",
        location,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/pdf"},
        content=b"x",
    )
    assert wrong_type.status_code == 415
    no_offset = await tus("PATCH", location, headers=PATCH, content=b"x")
    assert no_offset.status_code == 400
    too_much = await tus(
        "PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=BODY + b"extra"
    )
    assert too_much.status_code == 413
    assert await tus.offset(location) == 0
    tampered = location.replace("max_size=", "max_size=9")
    assert (await tus("HEAD", tampered, headers=TUS)).status_code == 403
    discovery = await tus("OPTIONS", location, headers=TUS)
    assert discovery.status_code == 204
    assert discovery.headers["tus-extension"] == "creation,termination,expiration"


async def test_oversize_chunked_patch_is_cut_off(tus: Tus) -> None:
    if tus.kind == "wsgi":
        pytest.skip("the WSGI test client always sends a Content-Length")
    target = tus.begin()
    location = await tus.create(target)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(BODY) + 70_000, 65_536):
            yield (BODY + b"z" * 70_000)[start : start + 65_536]

    cut = await tus("PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=chunks())
    assert cut.status_code == 413
    assert await tus.offset(location) == 0
    assert not tus.backend.exists(target.path)


async def test_termination(tus: Tus) -> None:
    target = tus.begin()
    location = await tus.create(target)
    await tus("PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=BODY[:1000])
    gone = await tus("DELETE", location, headers=TUS)
    assert gone.status_code == 204
    assert tus_parts(tus.backend, target.path) == []
    assert (await tus("HEAD", location, headers=TUS)).status_code == 410
    assert (
        await tus("PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=b"x")
    ).status_code == 410
    assert (await tus("DELETE", location, headers=TUS)).status_code == 410


async def test_expired_link_is_gone(tus: Tus) -> None:
    target = tus.begin(expires_in=1)
    assert target.endpoint is not None
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answer = await tus("HEAD", target.endpoint, headers=TUS)
        if answer.status_code != 200:
            break
        time.sleep(0.1)
    assert answer.status_code == 410


async def test_gc_and_abort_remove_parts(tus: Tus) -> None:
    kept = tus.begin()
    dropped = tus.begin()
    for target in (kept, dropped):
        location = await tus.create(target)
        await tus("PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=BODY[:5000])
        assert len(tus_parts(tus.backend, target.path)) == 1
    abort(tus.db, dropped.id, registry=tus.registry)
    tus.db.commit()
    assert list(tus.backend.list(tus_parts_prefix(dropped.path).rstrip("/"))) == []
    removed = remove_expired(
        tus.db, registry=tus.registry, now=kept.expires_at + timedelta(seconds=1)
    )
    tus.db.commit()
    assert removed == 1
    assert list(tus.backend.list(tus_parts_prefix(kept.path).rstrip("/"))) == []


async def test_gc_with_no_grace_spares_the_parts_of_a_pending_upload(tus: Tus) -> None:
    """The parts folder of a tus upload still in progress counts as referenced (its session
    row, read by name through storeroom.uploads.layout); the parts of an aborted one go."""
    from sqlalchemy.orm import sessionmaker

    from storeroom.orm import remove_orphans

    pending = tus.begin()
    location = await tus.create(pending)
    await tus("PATCH", location, headers={**PATCH, "Upload-Offset": "0"}, content=BODY[:5000])
    tus.db.commit()
    tus.backend.put("stray/orphan.bin", b"no row, no session")
    sessions = sessionmaker(tus.db.get_bind())
    removed = [
        info.path
        for info, gone in remove_orphans(sessions, [], tus.backend, grace=timedelta(0))
        if gone
    ]
    assert removed == ["stray/orphan.bin"]
    assert len(tus_parts(tus.backend, pending.path)) == 1


async def test_replayed_single_put_is_refused_without_leftovers(tus: Tus) -> None:
    """Create-only writes stream through a scratch object on local disk; a refused one
    (the object exists) leaves nothing behind."""
    from storeroom.uploads.multipart import TUS_PREFIX

    target = tus.begin()
    assert target.endpoint is not None
    put = {"Content-Type": "application/pdf"}
    assert (await tus("PUT", target.endpoint, headers=put, content=BODY)).status_code == 200
    replay = await tus("PUT", target.endpoint, headers=put, content=BODY)
    assert replay.status_code == 409
    assert tus.backend.get(target.path) == BODY
    assert list(tus.backend.list(f"{TUS_PREFIX}/scratch")) == []
