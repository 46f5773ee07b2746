"""The ASGI and WSGI signed-URL handlers, through real HTTP test clients.

Every case runs against both apps: downloads with ranges and conditional requests, uploads
with size and content-type limits, and the rejection matrix (tampered signature, path,
method, expiry, oversize, wrong content type).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from storeroom import FileObject, ObstoreBackend, StorageRegistry, checksums
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.cors import CorsRules
from storeroom.signing import configure_signing
from storeroom.web import SignedUrlApp, SignedUrlWsgiApp

SECRET = "handler-secret-0123456789abcdef"
BASE = "http://testserver/files"


@dataclass
class Served:
    client: httpx.Client | httpx.AsyncClient
    registry: StorageRegistry
    backend: ObstoreBackend | FSSpecBackend
    kind: str

    async def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        path = urlsplit(url)
        target = f"{path.path}?{path.query}" if path.query else path.path
        if isinstance(self.client, httpx.AsyncClient):
            return await self.client.request(method, target, **kwargs)  # type: ignore[arg-type]
        return self.client.request(method, target, **kwargs)  # type: ignore[arg-type]


def _wsgi_client(app: SignedUrlWsgiApp) -> httpx.Client:
    from werkzeug.test import Client

    werkzeug = Client(app)

    def handler(request: httpx.Request) -> httpx.Response:
        response = werkzeug.open(
            request.url.raw_path.decode(),
            method=request.method,
            headers=dict(request.headers),
            data=request.read(),
        )
        return httpx.Response(
            response.status_code,
            headers=list(response.headers.items()),
            content=response.get_data(),
        )

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://testserver")


@pytest.fixture(params=["asgi", "wsgi"])
async def served(request: pytest.FixtureRequest, tmp_path) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    registry = StorageRegistry()
    backend = registry.register_backend(ObstoreBackend("uploads", f"file://{tmp_path}/up"))
    configure_signing(backend, secret=SECRET, base_url=BASE, max_upload_size=1_000_000)
    cors = CorsRules(allowed_origins=["https://app.example.com"])
    if request.param == "asgi":
        app = SignedUrlApp(registry, cors=cors)
        # Mounted under /files, as a framework would: root_path tells the app its prefix.
        transport = httpx.ASGITransport(app=app, root_path="/files")
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield Served(c, registry, backend, "asgi")
    else:
        from werkzeug.middleware.dispatcher import DispatcherMiddleware

        wsgi = SignedUrlWsgiApp(registry, cors=cors)
        mounted = DispatcherMiddleware(lambda e, s: [], {"/files": wsgi})
        with _wsgi_client(mounted) as client:  # type: ignore[arg-type]
            yield Served(client, registry, backend, "wsgi")


def _file(served: Served, data: bytes, name: str = "report.pdf") -> FileObject:
    return FileObject(
        backend=served.backend, filename=name, content=data, registry=served.registry
    ).save()


async def test_download_whole_and_ranges(served: Served) -> None:
    data = bytes(range(256)) * 40
    f = _file(served, data)
    url = f.sign(expires_in=60)
    whole = await served.request("GET", url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "application/pdf"
    assert whole.headers["accept-ranges"] == "bytes"
    part = await served.request("GET", url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = await served.request("GET", url, headers={"Range": "bytes=-5"})
    assert tail.content == data[-5:]
    bad = await served.request("GET", url, headers={"Range": "bytes=99999-"})
    assert bad.status_code == 416
    head = await served.request("HEAD", url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))


async def test_etag_and_if_none_match(served: Served) -> None:
    url = _file(served, b"cached").sign(expires_in=60)
    first = await served.request("GET", url)
    etag = first.headers["etag"]
    again = await served.request("GET", url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


async def test_upload_through_signed_put(served: Served) -> None:
    target = FileObject(
        backend=served.backend,
        filename="upload.bin",
        content_type="application/octet-stream",
        registry=served.registry,
    )
    url = target.sign(expires_in=60, for_upload=True)
    data = bytes(range(256)) * 1000
    reply = await served.request(
        "PUT", url, content=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["checksum"] == checksums.digest(checksums.DEFAULT_ALGORITHM, data)
    assert served.backend.get("upload.bin") == data


@pytest.mark.parametrize(
    "case",
    [
        "signature",
        "path",
        "method",
        "expired",
        "oversize",
        "content-type",
        "traversal",
        "unknown-backend",
        "missing-object",
        "tampered-expiry",
        "tampered-max-size",
        "tampered-content-type",
        "put-over-existing-with-get-url",
    ],
)
async def test_rejection_matrix(served: Served, case: str) -> None:
    existing = _file(served, b"secret bytes", "doc.pdf")
    get_url = existing.sign(expires_in=60)
    put = FileObject(backend=served.backend, filename="new.pdf", registry=served.registry)
    put_url = put.sign(expires_in=60, for_upload=True)
    pdf = {"Content-Type": "application/pdf"}
    if case == "signature":
        reply = await served.request("GET", get_url[:-3] + "xyz")
        expected = 403
    elif case == "path":
        reply = await served.request("GET", get_url.replace("/doc.pdf?", "/other.pdf?"))
        expected = 403
    elif case == "method":
        reply = await served.request("PUT", get_url, content=b"overwrite", headers=pdf)
        expected = 403
    elif case == "expired":
        signer = served.backend.url_signer
        signer._clock = lambda: 0.0  # type: ignore[union-attr]
        old = existing.sign(expires_in=60)
        signer._clock = __import__("time").time  # type: ignore[union-attr]
        reply = await served.request("GET", old)
        expected = 403
    elif case == "oversize":
        reply = await served.request("PUT", put_url, content=b"x" * 1_000_001, headers=pdf)
        expected = 413
    elif case == "content-type":
        reply = await served.request(
            "PUT", put_url, content=b"<html>", headers={"Content-Type": "text/html"}
        )
        expected = 415
    elif case == "traversal":
        reply = await served.request(
            "GET", get_url.replace("/doc.pdf?", "/..%2F..%2Fetc%2Fpasswd?")
        )
        expected = 403
    elif case == "unknown-backend":
        reply = await served.request("GET", get_url.replace("/uploads/", "/nope/"))
        expected = 404
    elif case == "tampered-expiry":
        expires = parse_qs(urlsplit(get_url).query)["expires"][0]
        later = get_url.replace(f"expires={expires}", f"expires={int(expires) + 86400}")
        reply = await served.request("GET", later)
        expected = 403
    elif case == "tampered-max-size":
        bigger = put_url.replace("max_size=1000000", "max_size=9000000")
        assert bigger != put_url
        reply = await served.request("PUT", bigger, content=b"x" * 1_000_001, headers=pdf)
        expected = 403
    elif case == "tampered-content-type":
        html = put_url.replace("content_type=application%2Fpdf", "content_type=text%2Fhtml")
        assert html != put_url
        reply = await served.request(
            "PUT", html, content=b"<script>", headers={"Content-Type": "text/html"}
        )
        expected = 403
    elif case == "put-over-existing-with-get-url":
        reply = await served.request("PUT", get_url, content=b"replaced", headers=pdf)
        expected = 403
    else:
        existing.delete()
        reply = await served.request("GET", get_url)
        expected = 404
    assert reply.status_code == expected, reply.text
    assert b"secret bytes" not in reply.content
    assert not served.backend.exists("new.pdf")
    assert SECRET not in reply.text
    if case != "missing-object":
        assert served.backend.get("doc.pdf") == b"secret bytes"


@pytest.mark.parametrize("served", ["asgi"], indirect=True)  # WSGI bodies carry a length
async def test_oversize_without_content_length_is_cut_off_and_stores_nothing(
    served: Served,
) -> None:
    put = FileObject(
        backend=served.backend,
        filename="big.bin",
        content_type="application/octet-stream",
        registry=served.registry,
    )
    url = put.sign(expires_in=60, for_upload=True)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 100_000

    reply = await served.request(
        "PUT", url, content=chunks(), headers={"Content-Type": "application/octet-stream"}
    )
    assert reply.status_code == 413
    assert not served.backend.exists("big.bin")


async def test_cors_preflight(served: Served) -> None:
    url = _file(served, b"x").sign(expires_in=60)
    ok = await served.request(
        "OPTIONS",
        url,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    refused = await served.request(
        "OPTIONS",
        url,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
    )
    assert refused.status_code == 403
    get = await served.request("GET", url, headers={"Origin": "https://app.example.com"})
    assert get.headers["access-control-expose-headers"] == "ETag"


async def test_download_security_and_cache_headers(served: Served) -> None:
    page = _file(served, b"<script>alert(document.cookie)</script>", "page.html")
    reply = await served.request("GET", page.sign(expires_in=60))
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["content-disposition"].startswith('attachment; filename="page.html"')
    assert reply.headers["content-security-policy"].startswith("sandbox")
    pdf = await served.request("GET", _file(served, b"%PDF", "r.pdf").sign(expires_in=60))
    assert pdf.headers["x-content-type-options"] == "nosniff"
    assert "content-disposition" not in pdf.headers  # no filename signed: shown inline
    assert "content-security-policy" not in pdf.headers
    assert pdf.headers["last-modified"].endswith(" GMT")


async def test_conditional_and_odd_ranges(served: Served) -> None:
    data = bytes(range(100))
    url = _file(served, data, "c.bin").sign(expires_in=60)
    etag = (await served.request("HEAD", url)).headers["etag"]
    weak = await served.request("GET", url, headers={"If-None-Match": f'W/{etag}, "other"'})
    assert weak.status_code == 304
    stale = await served.request(
        "GET", url, headers={"Range": "bytes=0-9", "If-Range": '"an-older-version"'}
    )
    assert stale.status_code == 200 and stale.content == data
    fresh = await served.request("GET", url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == data[:10]
    backwards = await served.request("GET", url, headers={"Range": "bytes=9-3"})
    assert backwards.status_code == 200 and backwards.content == data  # invalid: ignored
    several = await served.request("GET", url, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == data  # multi-range: whole
    clipped = await served.request("GET", url, headers={"Range": "bytes=95-500"})
    assert clipped.status_code == 206 and clipped.content == data[95:]
    assert clipped.headers["content-range"] == "bytes 95-99/100"
