"""Litestar, FastAPI and Flask: the specification's start-up snippets, uploads, downloads."""

from pathlib import Path

from storeroom import FileObject, storages
from tests.web.conftest import configure_storage_from_env

DATA = b"%PDF-1.7\n" + bytes(range(256)) * 64


# -- Litestar ----------------------------------------------------------------------------------


def test_litestar_lifespan_snippet_and_plugin(upload_dir: Path) -> None:
    from contextlib import asynccontextmanager
    from typing import Annotated

    from litestar import Litestar, Request, get, post
    from litestar.di import NamedDependency
    from litestar.enums import RequestEncodingType
    from litestar.params import Body, FromPath
    from litestar.testing import TestClient

    from storeroom.contrib.litestar import StoreroomPlugin, file_response, save_upload
    from storeroom.registry import StorageRegistry

    # The specification's lifespan (its `route_handlers=[...]` placeholder made real).
    @asynccontextmanager
    async def storage_lifespan(app: Litestar):  # type: ignore[no-untyped-def]
        """Configure storage on application startup."""
        configure_storage_from_env()
        yield
        # Cleanup if needed

    @post("/upload")
    async def upload(
        data: Annotated[dict, Body(media_type=RequestEncodingType.MULTI_PART)],  # type: ignore[type-arg]
        storages: NamedDependency[StorageRegistry],
    ) -> dict[str, str]:
        saved = await save_upload(data["file"], backend="default")
        return {
            "path": saved.path,
            "download": await saved.sign_async(expires_in=60),
            "checksum": saved.checksum or "",
            "backends": ",".join(storages.registered_backends()),
        }

    @get("/download/{path:path}")
    async def download(path: FromPath[str], request: Request) -> object:  # type: ignore[type-arg]
        file = FileObject(
            backend="default", filename=path.rsplit("/", 1)[-1], path=path.lstrip("/")
        )
        return await file_response(file, request.headers)

    app = Litestar(
        route_handlers=[upload, download],
        lifespan=[storage_lifespan],
        plugins=[StoreroomPlugin(configure=lambda: None)],
    )
    with TestClient(app=app) as client:
        assert storages.is_registered("default")
        reply = client.post("/upload", files={"file": ("report.pdf", DATA, "application/pdf")})
        assert reply.status_code == 201, reply.text
        body = reply.json()
        assert body["backends"] == "default"
        assert (upload_dir / body["path"]).read_bytes() == DATA
        signed = client.get(body["download"].replace("http://testserver", ""))
        assert signed.status_code == 200 and signed.content == DATA
        assert signed.headers["content-type"] == "application/pdf"
        ranged = client.get(f"/download/{body['path']}", headers={"Range": "bytes=0-99"})
        assert ranged.status_code == 206 and ranged.content == DATA[:100]


def test_litestar_signed_upload_url_snippet(upload_dir: Path) -> None:
    """The specification's ``generate_upload_url`` handler, imports changed and its query
    parameters declared (``FromQuery``), on local disk."""
    from litestar import Litestar, post
    from litestar.params import FromQuery
    from litestar.testing import TestClient

    from storeroom import FileObject
    from storeroom.contrib.litestar import StoreroomPlugin

    @post("/upload-url")
    async def generate_upload_url(
        filename: FromQuery[str],
        content_type: FromQuery[str],
    ) -> "dict[str, str]":
        """Generate signed upload URL with CORS support."""
        file_obj = FileObject(
            backend="default",
            filename=filename,
            content_type=content_type,
        )

        upload_url = await file_obj.sign_async(expires_in=300, for_upload=True)

        return {
            "upload_url": upload_url,
            "filename": filename,
            "content_type": content_type,
            "expires_in": 300,  # type: ignore[dict-item]
        }

    app = Litestar(
        route_handlers=[generate_upload_url],
        plugins=[StoreroomPlugin(configure=configure_storage_from_env)],
    )
    with TestClient(app=app) as client:
        reply = client.post(
            "/upload-url", params={"filename": "photo.png", "content_type": "image/png"}
        )
        assert reply.status_code == 201
        url = reply.json()["upload_url"].replace("http://testserver", "")
        put = client.put(url, content=b"\x89PNG", headers={"Content-Type": "image/png"})
        assert put.status_code == 200, put.text
        assert (upload_dir / "photo.png").read_bytes() == b"\x89PNG"
        wrong = client.put(url, content=b"x", headers={"Content-Type": "text/html"})
        assert wrong.status_code == 415


# -- FastAPI -----------------------------------------------------------------------------------


def test_fastapi_lifespan_snippet_router_and_helpers(upload_dir: Path) -> None:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request, UploadFile
    from fastapi.testclient import TestClient

    from storeroom.contrib.fastapi import file_response, save_upload, signed_url_router

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        """Configure storage on application startup."""
        configure_storage_from_env()
        yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(signed_url_router("/files"))

    @app.post("/upload")
    async def upload(file: UploadFile) -> dict[str, str]:
        saved = await save_upload(file, backend="default")
        return {"path": saved.path, "url": await saved.sign_async(expires_in=60)}

    @app.get("/download/{path:path}")
    async def download(path: str, request: Request):  # type: ignore[no-untyped-def]
        file = FileObject(backend="default", filename="report.pdf", path=path)
        return await file_response(file, request.headers)

    with TestClient(app) as client:
        reply = client.post("/upload", files={"file": ("report.pdf", DATA, "application/pdf")})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (upload_dir / body["path"]).read_bytes() == DATA
        signed = client.get(body["url"].replace("http://testserver", ""))
        assert signed.status_code == 200 and signed.content == DATA
        ranged = client.get(f"/download/{body['path']}", headers={"Range": "bytes=-10"})
        assert ranged.status_code == 206 and ranged.content == DATA[-10:]
        assert "attachment" in ranged.headers["content-disposition"]


def test_fastapi_storeroom_lifespan_reads_the_environment(upload_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from storeroom.contrib.fastapi import storeroom_lifespan

    monkeypatch.setenv("STORAGE__MEDIA__URL", f"file://{upload_dir}/media")
    app = FastAPI(lifespan=storeroom_lifespan())
    with TestClient(app):
        assert storages.get_backend("media").location.endswith("/media")


# -- Flask -------------------------------------------------------------------------------------


def test_flask_factory_snippet_and_extension(upload_dir: Path) -> None:
    from flask import Flask, request

    from storeroom.contrib.flask import Storeroom, file_response, save_upload

    storeroom = Storeroom()

    def create_app(config_name: str = "development"):  # type: ignore[no-untyped-def]
        """Flask application factory."""
        app = Flask(__name__)

        # Configure storage
        with app.app_context():
            configure_storage_from_env()

        storeroom.init_app(app, configure=lambda: None)

        @app.post("/upload")
        def upload():  # type: ignore[no-untyped-def]
            saved = save_upload(request.files["file"], backend="default")
            return {"path": saved.path, "url": saved.sign(expires_in=60)}

        @app.get("/download/<path:path>")
        def download(path: str):  # type: ignore[no-untyped-def]
            file = FileObject(backend="default", filename="r.bin", path=path)
            return file_response(file, request.headers)

        return app

    client = create_app().test_client()
    import io

    reply = client.post(
        "/upload", data={"file": (io.BytesIO(DATA), "r.bin")}, content_type="multipart/form-data"
    )
    assert reply.status_code == 200, reply.text
    body = reply.get_json()
    assert (upload_dir / body["path"]).read_bytes() == DATA
    signed = client.get(body["url"].replace("http://testserver", ""))
    assert signed.status_code == 200 and signed.data == DATA
    ranged = client.get(f"/download/{body['path']}", headers={"Range": "bytes=5-9"})
    assert ranged.status_code == 206 and ranged.data == DATA[5:10]
    target = FileObject(
        backend="default", filename="direct.bin", content_type="application/octet-stream"
    )
    put = client.put(
        target.sign(for_upload=True).replace("http://testserver", ""),
        data=b"direct",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert put.status_code == 200
    assert (upload_dir / "direct.bin").read_bytes() == b"direct"


def test_fastapi_get_storages_is_the_lifespans_registry(tmp_path: Path) -> None:
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from storeroom import ObstoreBackend, StorageRegistry
    from storeroom.contrib.fastapi import get_storages, storeroom_lifespan

    registry = StorageRegistry()

    def configure() -> None:
        registry.register_backend(ObstoreBackend("private", f"file://{tmp_path}/p"))

    app = FastAPI(lifespan=storeroom_lifespan(configure, registry))

    @app.get("/backends")
    def backends(registry: StorageRegistry = Depends(get_storages)) -> list[str]:  # noqa: B008
        return sorted(registry.registered_backends())

    with TestClient(app) as client:
        assert client.get("/backends").json() == ["private"]
    assert not storages.is_registered("private")


def test_litestar_signed_put_is_not_capped_by_the_request_body_limit(upload_dir: Path) -> None:
    """Litestar refuses request bodies over 10 MB by default; signed uploads stream past it."""
    import hashlib

    from litestar import Litestar, get
    from litestar.testing import TestClient

    from storeroom.contrib.litestar import StoreroomPlugin

    @get("/")
    async def index() -> str:
        return "ok"

    app = Litestar([index], plugins=[StoreroomPlugin(configure=configure_storage_from_env)])
    data = hashlib.sha256(b"big").digest() * (12 * 1024 * 1024 // 32)  # 12 MiB
    with TestClient(app=app) as client:
        target = FileObject(backend="default", filename="big.bin")
        put = client.put(
            target.sign(for_upload=True).replace("http://testserver", ""),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 200, put.text
    assert (upload_dir / "big.bin").read_bytes() == data
