"""Variants served lazily: by the signed-URL handlers (ASGI and WSGI) and the framework helpers.

A variant that is recorded but not made yet is made on its first request, once, however many
requests ask at the same time (one write, counted from the storage events and by listing the
store); a loser of a race between processes serves the winner's object. A signed URL is
scoped to one path: the original's URL never serves a variant, nor the reverse. An
undeclared variant is a 404 saying so; an original that cannot be made into the variant is
a 422 and leaves no variant behind.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import Request as FastApiRequest
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from storeroom import FileObject, events
from storeroom.backends.obstore import ObstoreBackend
from storeroom.errors import ObjectExists
from storeroom.media.variants import PdfPage, Thumbnail
from storeroom.orm import UUIDAuditBase
from storeroom.orm.types import StoredObject
from storeroom.orm.variants import record_column_variants, variant_path
from storeroom.registry import StorageRegistry
from storeroom.signing import configure_signing
from storeroom.web.asgi import SignedUrlApp
from storeroom.web.wsgi import SignedUrlWsgiApp
from tests.media.files import image_bytes, pdf_bytes, pillow

SECRET = "variants-secret-0123456789abcdef"
BASE = "http://testserver.local/files"


class CountingThumbnail(Thumbnail):
    """A real thumbnail maker that also counts how many times it made one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made = 0
        self._guard = threading.Lock()

    def make(self, source: Any) -> bytes:
        with self._guard:
            self.made += 1
        return super().make(source)


CARD = CountingThumbnail(64, 64, format="webp", engine="pillow")


class WebVariantPhoto(UUIDAuditBase):
    """Images and PDFs with a 64-pixel card and a cover of the first page."""

    __tablename__ = "sr_web_variant_photo"

    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject] = mapped_column(
        StoredObject(
            backend="web-variants",
            variants={"card": CARD, "cover": PdfPage(1, width=60, format="png")},
        )
    )


class RacedBackend(ObstoreBackend):
    """Local disk where another process writes each variant just before this one does."""

    winner = b"written by another process"

    def put(self, path: str, data: Any, **options: Any) -> Any:
        if ".variants/" in path:
            super().put(path, self.winner, overwrite=False)
        return super().put(path, data, **options)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[StorageRegistry]:
    registry = StorageRegistry()
    backend = ObstoreBackend("web-variants", f"file://{tmp_path}")
    configure_signing(backend, secret=SECRET, base_url=BASE)
    registry.register_backend(backend)
    CARD.made = 0
    yield registry


def stored(registry: StorageRegistry) -> list[str]:
    return sorted(info.path for info in registry.get_backend("web-variants").list())


def original(registry: StorageRegistry, data: bytes, name: str = "cat.png") -> FileObject:
    """A file stored outside the flush (no job), its variants recorded as save_upload does."""
    file = FileObject(
        backend="web-variants", filename=name, path=f"photos/{name}", registry=registry
    ).save(data)
    return record_column_variants(file, WebVariantPhoto.file, _sniffed(data))


def _sniffed(data: bytes) -> str:
    from storeroom.media.sniff import sniff_type

    return sniff_type(data[:4096])


def natural_size(data: bytes) -> tuple[int, int]:
    with pillow().open(io.BytesIO(data)) as image:
        return image.size  # type: ignore[no-any-return]


class PutCounter:
    """Successful writes per path, from the storage events."""

    def __init__(self) -> None:
        self.writes: dict[str, int] = {}
        self._guard = threading.Lock()

    def __call__(self, event: events.StorageEvent) -> None:
        if event.operation == "put" and event.ok:
            with self._guard:
                self.writes[event.path] = self.writes.get(event.path, 0) + 1


@pytest.fixture
def puts() -> Iterator[PutCounter]:
    counter = PutCounter()
    with events.subscribed(counter):
        yield counter


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# -- the ASGI handler: concurrent requests with asyncio.gather --------------------------------


async def test_asgi_makes_a_missing_variant_once_for_concurrent_requests(
    registry: StorageRegistry, puts: PutCounter
) -> None:
    file = original(registry, image_bytes("PNG", (640, 480)))
    card = file.variant("card")
    url = local(card.sign(expires_in=60))
    assert stored(registry) == ["photos/cat.png"]
    app = SignedUrlApp(registry, mount_path="/files")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
        replies = await asyncio.gather(*(client.get(url) for _ in range(8)))
    assert [r.status_code for r in replies] == [200] * 8, replies[0].text
    assert len({r.content for r in replies}) == 1
    assert natural_size(replies[0].content) == (64, 48)
    assert {r.headers["content-type"] for r in replies} == {"image/webp"}
    assert CARD.made == 1
    assert puts.writes.get(card.path) == 1
    assert stored(registry) == ["photos/cat.png", card.path]
    assert card.path == variant_path("photos/cat.png", "card", "webp")


def test_wsgi_makes_a_missing_variant_once_for_concurrent_requests(
    registry: StorageRegistry, puts: PutCounter
) -> None:
    from werkzeug.test import Client

    file = original(registry, image_bytes("JPEG", (300, 600)), "tall.jpg")
    card = file.variant("card")
    url = local(card.sign(expires_in=60))
    app = SignedUrlWsgiApp(registry)
    start = threading.Barrier(8)

    def request(_: int) -> tuple[int, bytes]:
        start.wait(10)
        reply = Client(app).get(url.removeprefix("/files"))
        return reply.status_code, reply.get_data()

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(request, range(8)))
    assert {status for status, _ in replies} == {200}
    assert len({data for _, data in replies}) == 1
    assert natural_size(replies[0][1]) == (32, 64)
    assert CARD.made == 1
    assert puts.writes.get(card.path) == 1
    assert stored(registry) == ["photos/tall.jpg", card.path]


async def test_a_loser_across_processes_serves_the_winners_object(tmp_path: Path) -> None:
    registry = StorageRegistry()
    backend = RacedBackend("web-variants", f"file://{tmp_path}")
    configure_signing(backend, secret=SECRET, base_url=BASE)
    registry.register_backend(backend)
    card = original(registry, image_bytes("PNG", (100, 100))).variant("card")
    app = SignedUrlApp(registry, mount_path="/files")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
        reply = await client.get(local(card.sign(expires_in=60)))
    assert reply.status_code == 200
    assert reply.content == RacedBackend.winner  # ours was refused (create-only); theirs served
    with pytest.raises(ObjectExists):
        backend.put(card.path, b"again", overwrite=False)


# -- what a signed URL may serve -------------------------------------------------------------


@pytest.fixture
def asgi(registry: StorageRegistry) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=SignedUrlApp(registry, mount_path="/files"))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver.local")


async def test_signed_urls_are_scoped_to_the_original_or_the_variant(
    registry: StorageRegistry, asgi: httpx.AsyncClient
) -> None:
    file = original(registry, image_bytes("PNG", (200, 100)))
    card = file.variant("card")
    original_url, card_url = local(file.sign(expires_in=60)), local(card.sign(expires_in=60))
    async with asgi as client:
        for url, other in ((original_url, card_url), (card_url, original_url)):
            swapped = other.split("?")[0] + "?" + url.split("?")[1]
            assert (await client.get(swapped)).status_code == 403
        assert stored(registry) == ["photos/cat.png"]  # nothing made by a refused request
        served = await client.get(card_url)
        assert served.status_code == 200 and natural_size(served.content) == (64, 32)
        whole = await client.get(original_url)
        assert whole.content == file.get_content()


async def test_an_undeclared_variant_is_a_404_saying_so(
    registry: StorageRegistry, asgi: httpx.AsyncClient
) -> None:
    file = original(registry, image_bytes("PNG", (200, 100)))
    backend = registry.get_backend("web-variants")
    nope = backend.sign(variant_path(file.path, "nope", "webp"), expires_in=60)
    async with asgi as client:
        reply = await client.get(local(nope))
        assert reply.status_code == 404
        assert "no such variant" in reply.text and "'nope'" in reply.text
        # A PDF's cover is declared, but not a card of a PDF.
        pdf = original(registry, pdf_bytes(1), "report.pdf")
        card_of_pdf = backend.sign(variant_path(pdf.path, "card", "webp"), expires_in=60)
        reply = await client.get(local(card_of_pdf))
        assert reply.status_code == 404 and "application/pdf" in reply.text
        cover = await client.get(local(pdf.variant("cover").sign(expires_in=60)))
        assert cover.status_code == 200 and natural_size(cover.content) == (60, 90)
        # The original of a variant is gone: a plain 404.
        gone = backend.sign(variant_path("photos/gone.png", "card", "webp"), expires_in=60)
        assert (await client.get(local(gone))).status_code == 404
    assert not [p for p in stored(registry) if "nope" in p or "gone" in p]


async def test_a_corrupt_original_is_a_422_and_leaves_no_variant(
    registry: StorageRegistry, asgi: httpx.AsyncClient
) -> None:
    good = image_bytes("PNG", (300, 300))
    broken = original(registry, good[:60] + b"\x00garbage" * 50, "broken.png")
    assert "card" in broken.metadata["variants"]
    async with asgi as client:
        reply = await client.get(local(broken.variant("card").sign(expires_in=60)))
    assert reply.status_code == 422
    assert "cannot be made from this file" in reply.text
    assert stored(registry) == ["photos/broken.png"]


# -- the framework helpers: file_response(file, headers, variant=...) ------------------------


def _rows(registry: StorageRegistry) -> dict[str, FileObject]:
    return {
        "cat": original(registry, image_bytes("PNG", (640, 320))),
        "broken": original(registry, image_bytes("PNG", (64, 64))[:60] + b"\x01" * 200, "b.png"),
    }


def _check_helper_replies(
    registry: StorageRegistry, files: dict[str, FileObject], replies: list[tuple[int, bytes]]
) -> None:
    assert {status for status, _ in replies} == {200}
    assert len({data for _, data in replies}) == 1
    assert natural_size(replies[0][1]) == (64, 32)
    assert CARD.made == 1
    assert files["cat"].variant("card").path in stored(registry)


async def test_litestar_file_response_serves_a_variant_made_once(
    registry: StorageRegistry, puts: PutCounter
) -> None:
    from litestar import Litestar, Request, get
    from litestar.params import FromPath
    from litestar.testing import AsyncTestClient

    from storeroom.contrib.litestar import file_response

    files = _rows(registry)

    @get("/photos/{name:str}/{variant:str}")
    async def photo(name: FromPath[str], variant: FromPath[str], request: Request) -> Any:  # type: ignore[type-arg]
        return await file_response(files[name], request.headers, variant=variant, attachment=False)

    async with AsyncTestClient(app=Litestar([photo])) as client:
        replies = await asyncio.gather(*(client.get("/photos/cat/card") for _ in range(8)))
        _check_helper_replies(registry, files, [(r.status_code, r.content) for r in replies])
        assert replies[0].headers["content-type"] == "image/webp"
        assert "content-disposition" not in replies[0].headers
        missing = await client.get("/photos/cat/nope")
        assert missing.status_code == 404 and "no variant 'nope'" in missing.text
        corrupt = await client.get("/photos/broken/card")
        assert corrupt.status_code == 422 and "cannot be made" in corrupt.text
    assert puts.writes.get(files["cat"].variant("card").path) == 1
    assert not any("b.png.variants" in p for p in stored(registry))


async def test_fastapi_file_response_serves_a_variant_made_once(
    registry: StorageRegistry, puts: PutCounter
) -> None:
    from fastapi import FastAPI

    from storeroom.contrib.fastapi import file_response

    files = _rows(registry)
    app = FastAPI()

    @app.get("/photos/{name}/{variant}")
    async def photo(name: str, variant: str, request: FastApiRequest) -> Any:
        return await file_response(files[name], request.headers, variant=variant)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
        replies = await asyncio.gather(*(client.get("/photos/cat/card") for _ in range(8)))
        _check_helper_replies(registry, files, [(r.status_code, r.content) for r in replies])
        assert (await client.get("/photos/cat/nope")).status_code == 404
        assert (await client.get("/photos/broken/card")).status_code == 422
    assert puts.writes.get(files["cat"].variant("card").path) == 1


def test_flask_file_response_serves_a_variant_made_once(
    registry: StorageRegistry, puts: PutCounter
) -> None:
    from flask import Flask, request

    from storeroom.contrib.flask import file_response

    files = _rows(registry)
    app = Flask(__name__)

    @app.get("/photos/<name>/<variant>")
    def photo(name: str, variant: str) -> Any:
        return file_response(files[name], request.headers, variant=variant)

    start = threading.Barrier(8)

    def get(_: int) -> tuple[int, bytes]:
        start.wait(10)
        reply = app.test_client().get("/photos/cat/card")
        return reply.status_code, reply.get_data()

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(get, range(8)))
    _check_helper_replies(registry, files, replies)
    client = app.test_client()
    missing = client.get("/photos/cat/nope")
    assert missing.status_code == 404 and b"no variant 'nope'" in missing.get_data()
    assert client.get("/photos/broken/card").status_code == 422
    assert puts.writes.get(files["cat"].variant("card").path) == 1
