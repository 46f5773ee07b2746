"""save_upload and file_response in all three frameworks, driven the way an attacker would.

The client's name never becomes the object path, the type comes from the bytes, active and
ambiguous content is served as a sandboxed attachment, and non-ASCII paths work.
"""

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storeroom import FileObject, storages
from tests.web.conftest import configure_storage_from_env

HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


@dataclass
class App:
    name: str
    post: Callable[[str, bytes, str], dict[str, Any]]
    get: Callable[..., tuple[int, dict[str, str], bytes]]
    put: Callable[..., int]


def _litestar() -> App:
    from typing import Annotated

    from litestar import Litestar, Request, get, post
    from litestar.enums import RequestEncodingType
    from litestar.params import Body, FromPath
    from litestar.testing import TestClient

    from storeroom.contrib.litestar import StoreroomPlugin, file_response, save_upload

    @post("/upload")
    async def upload(
        data: Annotated[dict, Body(media_type=RequestEncodingType.MULTI_PART)],  # type: ignore[type-arg]
    ) -> dict[str, Any]:
        saved = await save_upload(data["file"], backend="default")
        return saved.to_dict()

    @get("/download/{path:path}")
    async def download(path: FromPath[str], request: Request) -> Any:  # type: ignore[type-arg]
        file = FileObject(
            backend="default",
            filename="f",
            path=path.lstrip("/"),
            content_type=request.query_params.get("content_type"),
        )
        return await file_response(file, request.headers, attachment=False)

    client = TestClient(
        Litestar([upload, download], plugins=[StoreroomPlugin(configure=lambda: None)])
    )
    client.__enter__()
    return _wrap("litestar", client)


def _fastapi() -> App:
    from fastapi import FastAPI, Request, UploadFile
    from fastapi.testclient import TestClient

    from storeroom.contrib.fastapi import file_response, save_upload, signed_url_router

    app = FastAPI()
    app.include_router(signed_url_router("/files"))

    @app.post("/upload")
    async def upload(file: UploadFile) -> dict[str, Any]:
        return (await save_upload(file, backend="default")).to_dict()

    @app.get("/download/{path:path}")
    async def download(path: str, request: Request, content_type: str | None = None) -> Any:
        file = FileObject(backend="default", filename="f", path=path, content_type=content_type)
        return await file_response(file, request.headers, attachment=False)

    return _wrap("fastapi", TestClient(app))


def _flask() -> App:
    from flask import Flask, request

    from storeroom.contrib.flask import Storeroom, file_response, save_upload

    app = Flask(__name__)
    Storeroom(app, configure=lambda: None)

    @app.post("/upload")
    def upload() -> Any:
        return save_upload(request.files["file"], backend="default").to_dict()

    @app.get("/download/<path:path>")
    def download(path: str) -> Any:
        file = FileObject(
            backend="default",
            filename="f",
            path=path,
            content_type=request.args.get("content_type"),
        )
        return file_response(file, request.headers, attachment=False)

    client = app.test_client()

    def post(name: str, data: bytes, declared: str) -> dict[str, Any]:
        reply = client.post(
            "/upload",
            data={"file": (io.BytesIO(data), name, declared)},
            content_type="multipart/form-data",
        )
        assert reply.status_code == 200, reply.text
        return dict(reply.get_json())

    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        reply = client.get(url, headers=headers or {})
        return reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.data

    def put(url: str, data: bytes, headers: dict[str, str]) -> int:
        return int(client.put(url, data=data, headers=headers).status_code)

    return App("flask", post, get, put)


def _wrap(name: str, client: Any) -> App:
    def post(filename: str, data: bytes, declared: str) -> dict[str, Any]:
        reply = client.post("/upload", files={"file": (filename, data, declared)})
        assert reply.status_code in (200, 201), reply.text
        return dict(reply.json())

    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        encoded = {k: v.encode() for k, v in (headers or {}).items()}
        reply = client.get(url, headers=encoded)
        return reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content

    def put(url: str, data: bytes, headers: dict[str, str]) -> int:
        return int(client.put(url, content=data, headers=headers).status_code)

    return App(name, post, get, put)


@pytest.fixture(params=["litestar", "fastapi", "flask"])
def app(request: pytest.FixtureRequest, upload_dir: Path) -> Iterator[App]:
    configure_storage_from_env()
    yield {"litestar": _litestar, "fastapi": _fastapi, "flask": _flask}[request.param]()


def test_client_names_never_become_paths(app: App, upload_dir: Path) -> None:
    storages.get_backend("default").put("invoices/2024/acme.pdf", b"%PDF-1.4 the real invoice")
    first = app.post("notes.txt", b"first notes", "text/plain")
    second = app.post("notes.txt", b"second notes", "text/plain")
    hostile = app.post("invoices/2024/acme.pdf", b"%PDF-1.4 forged", "application/pdf")
    assert len({first["path"], second["path"], hostile["path"]}) == 3
    assert hostile["filename"] == "invoices/2024/acme.pdf"
    assert (upload_dir / "invoices/2024/acme.pdf").read_bytes() == b"%PDF-1.4 the real invoice"
    assert (upload_dir / first["path"]).read_bytes() == b"first notes"
    assert (upload_dir / second["path"]).read_bytes() == b"second notes"


def test_type_is_sniffed_and_active_content_is_a_sandboxed_attachment(app: App) -> None:
    saved = app.post("evil.png", HTML, "image/png")
    assert saved["content_type"] == "text/html"
    status, headers, _ = app.get(f"/download/{saved['path']}?content_type=text/html")
    assert status == 200
    assert headers["content-disposition"].startswith("attachment")
    assert "sandbox" in headers["content-security-policy"]


@pytest.mark.parametrize(
    "declared",
    ["text/plain, text/html", "text/plain,image/svg+xml", "garbage", "text/html;charset=utf-8"],
)
def test_comma_lists_and_garbage_types_are_sandboxed(app: App, declared: str) -> None:
    storages.get_backend("default").put("x/page.txt", HTML)
    quoted = declared.replace(" ", "%20").replace("+", "%2B").replace(";", "%3B")
    status, headers, _ = app.get(f"/download/x/page.txt?content_type={quoted}")
    assert status == 200
    assert headers["content-disposition"].startswith("attachment")
    assert "sandbox" in headers["content-security-policy"]
    assert "html" not in headers["content-type"] or "," not in declared


@pytest.mark.parametrize(
    "header",
    ["bytes=¹-²", "bytes=" + "9" * 5000 + "-", "bytes=0-" + "1" * 5000, "bytes=٣-٤", "bytes=--1"],
)
def test_malformed_ranges_never_500(app: App, header: str) -> None:
    storages.get_backend("default").put("r/data.bin", b"0123456789")
    status, _, body = app.get("/download/r/data.bin", headers={"Range": header})
    assert status in (200, 206, 416)
    if status == 200:
        assert body == b"0123456789"


def test_non_ascii_paths_download_and_upload(app: App, upload_dir: Path) -> None:
    backend = storages.get_backend("default")
    backend.put("résumés/naïve ü.txt", b"hello")
    get_url = FileObject(
        backend="default", filename="naïve ü.txt", path="résumés/naïve ü.txt"
    ).sign(expires_in=60)
    status, _, body = app.get(get_url.replace("http://testserver", ""))
    assert (status, body) == (200, b"hello")
    put_url = FileObject(
        backend="default",
        filename="日本.bin",
        path="新/日本.bin",
        content_type="application/octet-stream",
    ).sign(for_upload=True)
    assert (
        app.put(
            put_url.replace("http://testserver", ""),
            b"data",
            {"Content-Type": "application/octet-stream"},
        )
        == 200
    )
    assert (upload_dir / "新/日本.bin").read_bytes() == b"data"
    status, _, _ = app.get("/files/default/%FF%FE.txt?signature=x")
    assert status == 400


def test_missing_objects_and_unsatisfiable_ranges_answer_with_a_matching_body(app: App) -> None:
    status, headers, body = app.get("/download/no/such.txt")
    assert status == 404 and int(headers["content-length"]) == len(body) > 0
    storages.get_backend("default").put("r/ten.bin", b"0123456789")
    status, headers, body = app.get("/download/r/ten.bin", headers={"Range": "bytes=50-"})
    assert status == 416 and headers["content-range"] == "bytes */10"
    assert int(headers["content-length"]) == len(body)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("²", 400),
        ("-1", 400),
        ("1e3", 400),
        ("0x10", 400),
        ("5, 5", 400),
        ("", 400),
        ("9" * 5000, 413),
        ("18446744073709551616", 413),
        (" 5 ", None),
        ("5", None),
    ],
)
def test_content_length_values_are_judged_per_rfc_9110(value: str, status: int | None) -> None:
    from storeroom.signing import SignedRequest
    from storeroom.web.protocol import upload_problem

    grant = SignedRequest(backend="b", path="p", method="PUT", expires=0, max_size=100)
    problem = upload_problem(grant, {"content-length": value})
    assert (problem.status if problem else None) == status
