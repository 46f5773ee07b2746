"""The resumable-upload endpoints mounted in Litestar, FastAPI and Flask, over HTTP.

Each framework mounts them in a few lines; a tus upload to local disk (begin, create,
PATCH in two chunks with a resume in between) and an S3 multipart upload to moto through
Uppy's Companion protocol (begin, sign, list, complete) run through each, and the session's
completion verifies the bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from storeroom import ObstoreBackend, checksums, storages
from storeroom.signing import configure_signing
from storeroom.uploads import UploadLimits, complete, metadata

BODY = b"%PDF-1.4\n" + bytes(range(256)) * (6 * 2**20 // 256) + b"\n%%EOF\n"
LIMITS = UploadLimits(max_size=64 << 20, content_types=["application/pdf"])
TUS = {"Tus-Resumable": "1.0.0"}

Request = Callable[..., tuple[int, dict[str, str], Any]]


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    url = f"{tmp_path}/db.sqlite"
    engine = create_engine(f"sqlite:///{url}")
    metadata.create_all(engine)
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{url}")
    yield sessionmaker(engine), async_sessionmaker(async_engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[ObstoreBackend]:
    backend = ObstoreBackend("big", f"file://{tmp_path}/store", mkdir=True)
    configure_signing(
        backend, secret="endpoint-secret-0123456789abcdef", base_url="http://testserver/files"
    )
    storages.register_backend(backend, overwrite=True)
    yield backend
    storages._backends.clear()


@pytest.fixture
def s3(moto_server: Any, s3_bucket: str) -> Iterator[ObstoreBackend]:
    backend = storages.register_backend(
        ObstoreBackend(
            "big",
            f"s3://{s3_bucket}",
            **moto_server.obstore_options(),
        ),
        overwrite=True,
    )
    yield backend
    storages._backends.clear()


def _local_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def tus_flow(request: Request, sync_sessions: Any, backend: ObstoreBackend) -> None:
    status, _, target = request(
        "POST",
        "/uploads/resumable",
        json={"filename": "talk.pdf", "type": "application/pdf", "size": len(BODY)},
    )
    assert status == 200, target
    assert target["protocol"] == "tus"
    status, headers, _ = request(
        "POST", _local_path(target["endpoint"]), headers={**TUS, "Upload-Length": str(len(BODY))}
    )
    assert status == 201
    location = headers["location"]
    patch = {**TUS, "Content-Type": "application/offset+octet-stream"}
    half = len(BODY) // 2
    status, _, _ = request(
        "PATCH", location, headers={**patch, "Upload-Offset": "0"}, content=BODY[:half]
    )
    assert status == 204
    status, headers, _ = request("HEAD", location, headers=TUS)
    assert int(headers["upload-offset"]) == half
    status, headers, _ = request(
        "PATCH", location, headers={**patch, "Upload-Offset": str(half)}, content=BODY[half:]
    )
    assert status == 204 and int(headers["upload-offset"]) == len(BODY)
    with sync_sessions() as db:
        file = complete(db, target["id"])
        db.commit()
    assert file.checksum == checksums.digest(checksums.DEFAULT_ALGORITHM, backend.get(file.path))


def s3_flow(request: Request, sync_sessions: Any, backend: ObstoreBackend) -> None:
    status, _, begun = request(
        "POST",
        "/uploads/s3/multipart",
        json={
            "filename": "talk.pdf",
            "type": "application/pdf",
            "metadata": {"size": len(BODY), "name": "talk.pdf"},
        },
    )
    assert status == 200, begun
    session_id = begun["uploadId"]
    assert begun["key"] == session_id
    pieces = [BODY[: 5 * 2**20], BODY[5 * 2**20 :]]
    for number, piece in enumerate(pieces, start=1):
        status, _, signed = request(
            "GET", f"/uploads/s3/multipart/{session_id}/{number}?key={session_id}"
        )
        assert status == 200, signed
        put = httpx.put(signed["url"], content=piece, timeout=30)
        assert put.status_code == 200 and put.headers["etag"]
        if number == 1:  # resume: the parts S3 holds
            status, _, parts = request("GET", f"/uploads/s3/multipart/{session_id}")
            assert [p["PartNumber"] for p in parts] == [1]
    status, _, done = request(
        "POST",
        f"/uploads/s3/multipart/{session_id}/complete",
        json={"parts": [{"PartNumber": 9, "ETag": "forged"}]},
    )
    assert status == 200, done  # the server lists the parts itself
    with sync_sessions() as db:
        file = complete(db, session_id)
        db.commit()
    assert hashlib.sha256(backend.get(file.path)).digest() == hashlib.sha256(BODY).digest()
    # Errors are JSON with the rule.
    status, _, refused = request(
        "POST",
        "/uploads/s3/multipart",
        json={"filename": "x.pdf", "type": "application/pdf", "metadata": {"size": 65 << 20}},
    )
    assert status == 413 and refused["rule"] == "max_size"
    status, _, gone = request("GET", f"/uploads/s3/multipart/{session_id}/1")
    assert status == 404, gone
    status, _, bad = request("GET", "/uploads/s3/multipart/abc/notanumber")
    assert status == 400 and "part number" in bad["error"]


def _client(kind: str, sync_sessions: Any, async_sessions: Any) -> Iterator[Request]:
    if kind == "litestar":
        from litestar import Litestar
        from litestar.testing import TestClient

        from storeroom.contrib.litestar import StoreroomPlugin, resumable_uploads

        app = Litestar(
            [resumable_uploads(async_sessions, "big", limits=LIMITS)],
            plugins=[StoreroomPlugin(configure=lambda: None)],
        )
        with TestClient(app=app, base_url="http://testserver") as client:
            yield _httpx_request(client)
    elif kind == "fastapi":
        from fastapi import FastAPI
        from fastapi.testclient import TestClient as FastClient

        from storeroom.contrib.fastapi import resumable_upload_router, signed_url_router

        fast = FastAPI()
        fast.include_router(signed_url_router())
        fast.include_router(resumable_upload_router(async_sessions, "big", limits=LIMITS))
        with FastClient(fast, base_url="http://testserver") as client:
            yield _httpx_request(client)
    else:
        from flask import Flask

        from storeroom.contrib.flask import Storeroom, resumable_upload_blueprint

        flask = Flask(__name__)
        Storeroom(flask, configure=lambda: None)
        flask.register_blueprint(resumable_upload_blueprint(sync_sessions, "big", limits=LIMITS))
        client = flask.test_client()

        def request(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
            if "content" in kwargs:
                kwargs["data"] = kwargs.pop("content")
            response = client.open(url, method=method, **kwargs)
            headers = {k.lower(): v for k, v in response.headers.items()}
            body = response.get_json(silent=True)
            return response.status_code, headers, body

        yield request


def _httpx_request(client: Any) -> Request:
    def request(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        response = client.request(method, url, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return response.status_code, dict(response.headers), body

    return request


@pytest.mark.parametrize("kind", ["litestar", "fastapi", "flask"])
def test_tus_through_framework(
    kind: str, databases: tuple[Any, Any], local: ObstoreBackend
) -> None:
    sync_sessions, async_sessions = databases
    for request in _client(kind, sync_sessions, async_sessions):
        tus_flow(request, sync_sessions, local)


@pytest.mark.s3
@pytest.mark.parametrize("kind", ["litestar", "fastapi", "flask"])
def test_s3_multipart_through_framework(
    kind: str, databases: tuple[Any, Any], s3: ObstoreBackend
) -> None:
    sync_sessions, async_sessions = databases
    for request in _client(kind, sync_sessions, async_sessions):
        s3_flow(request, sync_sessions, s3)


def test_authorize_and_bad_bodies(databases: tuple[Any, Any], local: ObstoreBackend) -> None:
    from flask import Flask

    from storeroom.contrib.flask import resumable_upload_blueprint

    flask = Flask(__name__)
    flask.register_blueprint(
        resumable_upload_blueprint(
            databases[0],
            "big",
            limits=LIMITS,
            authorize=lambda headers: headers.get("authorization") == "Bearer ok",
        )
    )
    client = flask.test_client()
    declared = {"filename": "a.pdf", "type": "application/pdf", "size": 10}
    assert client.post("/uploads/resumable", json=declared).status_code == 403
    ok = client.post("/uploads/resumable", json=declared, headers={"Authorization": "Bearer ok"})
    assert ok.status_code == 200
    assert (
        client.post(
            "/uploads/resumable", data=b"not json", headers={"Authorization": "Bearer ok"}
        ).status_code
        == 400
    )
    huge = client.post("/uploads/resumable", data=b"x" * 70_000)
    assert huge.status_code == 413
    wrong = client.post(
        "/uploads/resumable",
        json={**declared, "type": "text/html"},
        headers={"Authorization": "Bearer ok"},
    )
    assert wrong.status_code == 415 and wrong.get_json()["rule"] == "content_type"
    assert client.get("/uploads/elsewhere").status_code == 404
