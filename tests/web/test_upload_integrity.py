"""A rejected or broken upload never replaces what was stored, on any backend, in either app.

These drive the ASGI and WSGI apps at the protocol level (``receive`` messages, ``environ``),
which is the only way to cut a body off mid-way or send one without a length.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from storeroom import FileObject, StorageRegistry
from storeroom.backends.base import StorageBackend
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.backends.obstore import ObstoreBackend
from storeroom.signing import configure_signing
from storeroom.web import SignedUrlApp, SignedUrlWsgiApp

SECRET = "integrity-secret-0123456789abcdef"
LIMIT = 300_000
OLD = b"the version that must survive"
CHUNK = b"n" * 64_000  # five of these exceed LIMIT


def _make(kind: str, root: Path) -> StorageBackend:
    if kind == "obstore-file":
        return ObstoreBackend("up", f"file://{root}/store")
    if kind == "fsspec-file":
        return FSSpecBackend(key="up", fs="file", prefix=str(root / "store"))
    if kind == "obstore-memory":
        return ObstoreBackend("up", "memory://")
    return FSSpecBackend(key="up", fs="memory", prefix=f"/integrity-{os.getpid()}-{id(root)}")


@pytest.fixture(params=["obstore-file", "fsspec-file", "obstore-memory", "fsspec-memory"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[StorageRegistry, str]]:
    registry = StorageRegistry()
    backend = registry.register_backend(_make(request.param, tmp_path))
    configure_signing(backend, secret=SECRET, base_url="/files", max_upload_size=LIMIT)
    FileObject(backend="up", filename="doc.bin", content=OLD, registry=registry).save()
    yield registry, request.param
    if request.param == "fsspec-memory":
        backend.delete("doc.bin")


def _put_url(registry: StorageRegistry) -> tuple[str, str]:
    url = FileObject(
        backend="up", filename="doc.bin", content_type="application/octet-stream", registry=registry
    ).sign(expires_in=60, for_upload=True)
    parts = urlsplit(url)
    return parts.path, parts.query


def _store_files(tmp_path: Path) -> list[str]:
    store = tmp_path / "store"
    return sorted(p.name for p in store.rglob("*") if p.is_file()) if store.exists() else []


# -- ASGI ---------------------------------------------------------------------------------------


async def _asgi_put(
    app: SignedUrlApp,
    path: str,
    query: str,
    messages: list[dict[str, Any]],
    headers: list[tuple[bytes, bytes]],
) -> list[dict[str, Any]]:
    pending = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "PUT",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


def _status(sent: list[dict[str, Any]]) -> int | None:
    starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
    return starts[0] if starts else None


BINARY = [(b"content-type", b"application/octet-stream")]


async def test_asgi_oversize_stream_is_cut_off_and_keeps_the_old_object(
    setup: tuple[StorageRegistry, str],
    tmp_path: Path,
) -> None:
    registry, kind = setup
    path, query = _put_url(registry)
    body = [{"type": "http.request", "body": CHUNK, "more_body": True}] * 10
    sent = await _asgi_put(SignedUrlApp(registry, mount_path="/files"), path, query, body, BINARY)
    assert _status(sent) == 413
    assert registry.get_backend("up").get("doc.bin") == OLD
    if kind.endswith("-file"):
        assert _store_files(tmp_path) == ["doc.bin"]  # no temporary file left behind


async def test_asgi_client_disconnect_keeps_the_old_object(
    setup: tuple[StorageRegistry, str],
    tmp_path: Path,
) -> None:
    registry, kind = setup
    path, query = _put_url(registry)
    body = [{"type": "http.request", "body": CHUNK, "more_body": True}, {"type": "http.disconnect"}]
    sent = await _asgi_put(SignedUrlApp(registry, mount_path="/files"), path, query, body, BINARY)
    assert _status(sent) in (None, 400)  # nobody is listening; nothing is owed
    assert registry.get_backend("up").get("doc.bin") == OLD
    if kind.endswith("-file"):
        assert _store_files(tmp_path) == ["doc.bin"]


async def test_asgi_body_shorter_than_its_length_is_refused(
    setup: tuple[StorageRegistry, str],
) -> None:
    registry, _kind = setup
    path, query = _put_url(registry)
    body = [{"type": "http.request", "body": b"half", "more_body": False}]
    sent = await _asgi_put(
        SignedUrlApp(registry, mount_path="/files"),
        path,
        query,
        body,
        [*BINARY, (b"content-length", b"1000")],
    )
    assert _status(sent) == 400
    assert registry.get_backend("up").get("doc.bin") == OLD


# -- WSGI ---------------------------------------------------------------------------------------


def _wsgi_put(
    registry: StorageRegistry,
    path: str,
    query: str,
    body: bytes,
    **environ: Any,
) -> tuple[str, bytes]:
    app = SignedUrlWsgiApp(registry)
    base = {
        "REQUEST_METHOD": "PUT",
        "PATH_INFO": path.removeprefix("/files"),
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/octet-stream",
        "wsgi.input": io.BytesIO(body),
    }
    status: list[str] = []
    chunks = app({**base, **environ}, lambda s, h, exc=None: status.append(s))
    return status[0], b"".join(chunks)


def test_wsgi_oversize_chunked_upload_is_cut_off_and_keeps_the_old_object(
    setup: tuple[StorageRegistry, str],
    tmp_path: Path,
) -> None:
    registry, kind = setup
    path, query = _put_url(registry)
    status, _ = _wsgi_put(registry, path, query, CHUNK * 10, **{"wsgi.input_terminated": True})
    assert status.startswith("413")
    assert registry.get_backend("up").get("doc.bin") == OLD
    if kind.endswith("-file"):
        assert _store_files(tmp_path) == ["doc.bin"]


def test_wsgi_body_without_length_needs_a_terminated_input(
    setup: tuple[StorageRegistry, str],
) -> None:
    registry, _kind = setup
    path, query = _put_url(registry)
    status, _ = _wsgi_put(registry, path, query, b"new")
    assert status.startswith("411")
    assert registry.get_backend("up").get("doc.bin") == OLD
    status, _ = _wsgi_put(registry, path, query, b"new", **{"wsgi.input_terminated": True})
    assert status.startswith("409")  # signed uploads are create-only
    assert registry.get_backend("up").get("doc.bin") == OLD
    registry.get_backend("up").delete("doc.bin")
    status, _ = _wsgi_put(registry, path, query, b"new", **{"wsgi.input_terminated": True})
    assert status.startswith("200")
    assert registry.get_backend("up").get("doc.bin") == b"new"


def test_wsgi_body_shorter_than_its_length_keeps_the_old_object(
    setup: tuple[StorageRegistry, str],
) -> None:
    registry, _kind = setup
    path, query = _put_url(registry)
    status, text = _wsgi_put(registry, path, query, b"cut off", CONTENT_LENGTH="100000")
    assert status.startswith("400") and b"7 of 100000" in text
    assert registry.get_backend("up").get("doc.bin") == OLD


# -- A download whose object disappears between HEAD and read ------------------------------------


class VanishingBackend(ObstoreBackend):
    """Deletes the object right after answering HEAD (a concurrent delete, made certain)."""

    def head(self, path: str) -> Any:
        info = super().head(path)
        self.delete(path)
        return info

    async def head_async(self, path: str) -> Any:
        info = await super().head_async(path)
        await self.delete_async(path)
        return info


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
async def test_object_deleted_after_head_is_a_404_not_a_broken_200(
    kind: str,
    tmp_path: Path,
) -> None:
    registry = StorageRegistry()
    backend = registry.register_backend(VanishingBackend("up", f"file://{tmp_path}/s"))
    configure_signing(backend, secret=SECRET, base_url="/files")
    backend.put("gone.bin", b"soon gone")
    parts = urlsplit(
        FileObject(backend="up", filename="gone.bin", path="gone.bin", registry=registry).sign(
            expires_in=60
        )
    )
    if kind == "asgi":
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "root_path": "",
            "query_string": parts.query.encode(),
            "headers": [],
        }
        await SignedUrlApp(registry, mount_path="/files")(scope, receive, send)  # type: ignore[arg-type]
        assert _status(sent) == 404
    else:
        status: list[str] = []
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": parts.path.removeprefix("/files"),
            "QUERY_STRING": parts.query,
            "wsgi.input": io.BytesIO(),
        }
        SignedUrlWsgiApp(registry)(environ, lambda s, h, exc=None: status.append(s))
        assert status == ["404 Not Found"]
