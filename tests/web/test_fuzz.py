"""Seeded fuzzing of the signed-URL handlers and the three framework integrations.

5,600 generated requests (methods, raw paths, query strings, headers, bodies), most of them
derived from genuine signed URLs and then damaged. After every request: no 5xx, no
exception, and no byte in the store that a valid signature did not grant (objects that
existed are unchanged; new objects only at paths a genuine, undamaged PUT URL named).
"""

import asyncio
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes, urlsplit

import pytest

from storeroom import FileObject, ObstoreBackend, StorageRegistry, storages
from storeroom.signing import configure_signing
from storeroom.web import SignedUrlApp, SignedUrlWsgiApp

SECRET = "fuzz-secret-0123456789abcdef"
EXISTING = {
    "docs/report.pdf": b"%PDF-1.4 report " * 40,
    "naïve/ü.txt": b"unicode name",
    "page.html": b"<html><script>alert(1)</script>",
}
COUNTS = {"asgi": 1500, "wsgi": 1500, "litestar": 900, "fastapi": 900, "flask": 900}
METHODS = [
    "GET",
    "GET",
    "HEAD",
    "PUT",
    "PUT",
    "POST",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "get",
    "BREW",
    "PUT ",
]
JUNK = [
    "",
    "-",
    "¹",
    "²",
    "٣",
    "9" * 5000,
    "1e3",
    "0x10",
    " 5",
    "5 ",
    "+5",
    "-5",
    "\t",
    "18446744073709551616",
    "00000000000000000000007",
    "%FF",
    "\u00ff",
    "0,1",
    "*",
]


@dataclass
class Request:
    method: str
    target: bytes  # path and query, as raw bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    valid_put: str | None = None  # the object path a genuine PUT URL grants


class Generator:
    def __init__(self, seed: int, registry: StorageRegistry, helpers: bool = False) -> None:
        self.rng = random.Random(seed)
        self.registry = registry
        self.fresh = 0
        self.helpers = helpers  # the app also serves /download/<path> with file_response

    def _signed(self) -> tuple[str, bytes, str | None]:
        rng = self.rng
        if rng.random() < 0.5:
            path = rng.choice(list(EXISTING))
            url = FileObject(backend="fz", filename="x", path=path, registry=self.registry).sign(
                expires_in=600
            )
            return "GET", self._target(url), None
        self.fresh += 1
        path = rng.choice(
            [f"new/{self.fresh}.bin", f"new/ü{self.fresh}.bin", rng.choice(list(EXISTING))]
        )
        url = FileObject(
            backend="fz",
            filename="x",
            path=path,
            registry=self.registry,
            content_type="application/octet-stream",
        ).sign(for_upload=True)
        return "PUT", self._target(url), path

    @staticmethod
    def _target(url: str) -> bytes:
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}".encode()

    def _damage(self, target: bytes) -> bytes:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            spot = rng.randrange(len(target))
            return target[:spot] + bytes([rng.randrange(256)]) + target[spot + 1 :]
        if kind == 1:
            return target.replace(b"signature=", b"signature=A", 1)
        if kind == 2:
            return target.replace(b"expires=", b"expires=" + rng.choice(JUNK).encode(), 1)
        if kind == 3:
            return target.replace(b"max_size=", b"max_size=9" + rng.choice(JUNK).encode(), 1)
        if kind == 4:
            return target.split(b"?")[0]
        if kind == 5:
            return target.replace(
                b"/fz/",
                rng.choice([b"/fz/%FF", b"/fz/../", b"/nope/", b"/fz/%2e%2e/", b"//", b"/fz/\xff"]),
                1,
            )
        if kind == 6:
            return b"/files/" + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        if kind == 7:
            return target + b"&" + rng.choice([b"method=PUT", b"signature=", b"%zz", b"a=\xff"])
        return target.replace(b"method=GET", b"method=PUT", 1)

    def _headers(self) -> list[tuple[bytes, bytes]]:
        rng = self.rng
        headers: list[tuple[bytes, bytes]] = []
        options = {
            b"range": lambda: "bytes=" + rng.choice(JUNK) + "-" + rng.choice([*JUNK, "3"]),
            b"if-range": lambda: rng.choice(
                ['"abc"', 'W/"x"', "Mon, 99 Foo 2024", "", "Tue, 15 Nov 1994 08:12:31 GMT", "¹"]
            ),
            b"if-none-match": lambda: rng.choice(["*", '"x", W/"y"', ",,,", '"', "¹"]),
            b"if-modified-since": lambda: rng.choice(["garbage", "Sat, 29 Oct 1994 19:43:31"]),
            b"content-type": lambda: rng.choice(
                ["application/octet-stream", "text/html", "text/plain, text/html", "", "¹/²"]
            ),
            b"origin": lambda: rng.choice(["https://evil.example", "null", "¹"]),
            b"content-length": lambda: rng.choice(JUNK),
        }
        for name, make in options.items():
            if rng.random() < 0.3:
                headers.append((name, make().encode("utf-8")))
        return headers

    def request(self) -> Request:
        rng = self.rng
        if self.helpers and rng.random() < 0.25:
            path = quote(rng.choice(list(EXISTING)) + rng.choice(["", "", "x", "/../a"]))
            return Request(
                rng.choice(["GET", "GET", "HEAD"]),
                f"/download/{path}".encode(),
                self._headers(),
                b"",
            )
        method, target, granted = self._signed()
        original = target
        damaged = rng.random() < 0.7
        if damaged:
            target = self._damage(target)
        if rng.random() < 0.2:
            method = rng.choice(METHODS)
        headers = self._headers()
        body = rng.randbytes(rng.choice([0, 0, 1, 17, 600, 5000]))
        genuine = granted and _meaning(target) == _meaning(original)
        valid = granted if (method == "PUT" and genuine) else None
        return Request(method, target, headers, body, valid)


_SIGNED_FIELDS = ("method", "expires", "content_type", "max_size", "filename", "signature")


def _meaning(target: bytes) -> tuple[bytes, tuple[str | None, ...]]:
    """What a target grants, judged independently of the code under test: the decoded path
    and the signed query fields (the last of repeated ones, as the handler reads them)."""
    path, _, query = target.partition(b"?")
    fields = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    return unquote_to_bytes(path), tuple(fields.get(name) for name in _SIGNED_FIELDS)


# -- drivers: each sends one Request and returns the status --------------------------------------


def _asgi_driver(app: SignedUrlApp) -> Callable[[Request], int]:
    def send_one(req: Request) -> int:
        path, _, query = req.target.partition(b"?")
        headers = [h for h in req.headers if h[0] != b"content-length"]
        if any(h[0] == b"content-length" for h in req.headers) or req.body:
            headers.append((b"content-length", str(len(req.body)).encode()))
            headers += [h for h in req.headers if h[0] == b"content-length"][:1]
        messages = [{"type": "http.request", "body": req.body, "more_body": False}]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": req.method,
            "path": path.decode("latin-1"),
            "raw_path": path,
            "root_path": "",
            "query_string": query,
            "headers": headers,
        }
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))  # type: ignore[call-overload]

    return send_one


def _wsgi_driver(app: SignedUrlWsgiApp) -> Callable[[Request], int]:
    def send_one(req: Request) -> int:
        path, _, query = req.target.partition(b"?")
        environ: dict[str, object] = {
            "REQUEST_METHOD": req.method,
            "PATH_INFO": unquote_to_bytes(path.removeprefix(b"/files")).decode("latin-1"),
            "RAW_URI": req.target.decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "wsgi.input": io.BytesIO(req.body),
            "wsgi.input_terminated": True,
        }
        for name, value in req.headers:
            key = name.decode().upper().replace("-", "_")
            key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
            environ[key] = value.decode("latin-1")
        status: list[str] = []
        body = app(environ, lambda s, h, exc=None: status.append(s))
        b"".join(body)
        return int(status[0].split()[0])

    return send_one


def _printable(target: bytes) -> str:
    """The target as a URL string a test client can send (odd bytes percent-encoded)."""
    return quote(target, safe="/?&=%:+,;@!$'()*~-._")


def _http_driver(client: object, flask: bool = False) -> Callable[[Request], int]:
    def send_one(req: Request) -> int:
        method = req.method.strip().upper() or "GET"
        headers = {n.decode(): v for n, v in req.headers if n != b"content-length"}
        if flask:
            headers = {n: v.decode("latin-1") for n, v in headers.items()}  # type: ignore[misc]
            reply = client.open(
                _printable(req.target),
                method=method,  # type: ignore[attr-defined]
                headers=headers,
                data=req.body,
            )
            return int(reply.status_code)
        reply = client.request(
            method,
            _printable(req.target),
            headers=headers,  # type: ignore[attr-defined]
            content=req.body,
        )
        return int(reply.status_code)

    return send_one


def _store_state(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("target", list(COUNTS))
def test_fuzzed_requests_never_fail_or_store_unsigned_bytes(target: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    registry = storages if target in ("litestar", "fastapi", "flask") else StorageRegistry()
    backend = registry.register_backend(ObstoreBackend("fz", f"file://{root}"), overwrite=True)
    configure_signing(backend, secret=SECRET, base_url="/files", max_upload_size=4096)
    for path, data in EXISTING.items():
        backend.put(path, data)
    driver = _driver(target, registry)
    generator = Generator(
        seed=sorted(COUNTS).index(target) + 14,
        registry=registry,
        helpers=target in ("litestar", "fastapi", "flask"),
    )
    granted: set[str] = set()
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for _ in range(COUNTS[target]):
        request = generator.request()
        if request.valid_put:
            granted.add(request.valid_put)
        status = driver(request)
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500:
            failures.append(f"{status} for {request}")
        state = _store_state(root)
        for path, data in state.items():
            if path in EXISTING and data != EXISTING[path]:
                failures.append(f"{path} changed by {request}")
            elif path not in EXISTING and path not in granted:
                failures.append(f"{path} ({len(data)} bytes) stored by {request}")
    assert failures == [], failures[:3]
    assert sum(statuses.values()) == COUNTS[target]
    assert statuses.get(200, 0) > 0 and statuses.get(403, 0) > 0


def _driver(target: str, registry: StorageRegistry) -> Callable[[Request], int]:
    if target == "asgi":
        return _asgi_driver(SignedUrlApp(registry, mount_path="/files"))
    if target == "wsgi":
        return _wsgi_driver(SignedUrlWsgiApp(registry))
    if target == "litestar":
        from litestar import Litestar, get
        from litestar import Request as LitestarRequest
        from litestar.params import FromPath
        from litestar.testing import TestClient

        from storeroom.contrib.litestar import StoreroomPlugin
        from storeroom.contrib.litestar import file_response as litestar_response

        @get("/download/{path:path}")
        async def download(path: FromPath[str], request: LitestarRequest) -> Any:  # type: ignore[type-arg]
            file = FileObject(backend="fz", filename="f", path=path.lstrip("/"))
            return await litestar_response(file, request.headers)

        client = TestClient(
            Litestar([download], plugins=[StoreroomPlugin(configure=lambda: None)]),
            raise_server_exceptions=True,
        )
        return _http_driver(client)
    if target == "fastapi":
        from fastapi import FastAPI
        from fastapi import Request as FastRequest
        from fastapi.testclient import TestClient as FastClient

        from storeroom.contrib.fastapi import file_response as fastapi_response
        from storeroom.contrib.fastapi import signed_url_router

        app = FastAPI()
        app.include_router(signed_url_router("/files"))

        @app.api_route("/download/{path:path}", methods=["GET", "HEAD"])
        async def download(path: str, request: FastRequest) -> Any:
            return await fastapi_response(
                FileObject(backend="fz", filename="f", path=path), request.headers
            )

        return _http_driver(FastClient(app, raise_server_exceptions=True))
    from flask import Flask
    from flask import request as flask_request

    from storeroom.contrib.flask import Storeroom
    from storeroom.contrib.flask import file_response as flask_response

    flask_app = Flask(__name__)
    flask_app.testing = True  # exceptions propagate instead of becoming 500s
    Storeroom(flask_app, configure=lambda: None)

    @flask_app.get("/download/<path:path>")
    def download(path: str) -> Any:
        return flask_response(
            FileObject(backend="fz", filename="f", path=path), flask_request.headers
        )

    return _http_driver(flask_app.test_client(), flask=True)
