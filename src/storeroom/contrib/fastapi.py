"""FastAPI: a lifespan that registers backends, a router serving signed URLs, helpers.

::

    from fastapi import FastAPI
    from storeroom.contrib.fastapi import signed_url_router, storeroom_lifespan

    app = FastAPI(lifespan=storeroom_lifespan(configure_storage))
    app.include_router(signed_url_router())          # or app.mount("/files", SignedUrlApp())
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.routing import Mount

from storeroom.contrib._startup import Configure, configure_backends
from storeroom.cors import CorsRules
from storeroom.file import FileObject
from storeroom.media.validation import ValidatorLike, save_inspected_async
from storeroom.registry import StorageRegistry, storages
from storeroom.web.asgi import SignedUrlApp
from storeroom.web.files import abody, aread_head, plan_file_response_async, upload_target
from storeroom.web.resumable import ResumableConfig, ResumableUploadsApp

__all__ = [
    "file_response",
    "get_storages",
    "resumable_upload_router",
    "save_upload",
    "signed_url_router",
    "storeroom_lifespan",
]


def storeroom_lifespan(
    configure: Configure = None, registry: StorageRegistry | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan`` that registers backends before the app serves requests."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_backends(configure, registry)
        app.state.storeroom_registry = registry or storages
        yield

    return lifespan


def signed_url_router(
    mount_path: str = "/files",
    registry: StorageRegistry | None = None,
    cors: CorsRules | None = None,
) -> APIRouter:
    """An APIRouter that serves signed URLs under ``mount_path``."""
    router = APIRouter()
    router.routes.append(Mount(mount_path, app=SignedUrlApp(registry, cors=cors)))
    return router


def get_storages(request: Request) -> StorageRegistry:
    """Dependency: the registry (``Depends(get_storages)``).

    The one :func:`storeroom_lifespan` was given, else the default ``storages``.
    """
    registry = getattr(request.app.state, "storeroom_registry", None)
    return registry if isinstance(registry, StorageRegistry) else storages


async def save_upload(
    upload: UploadFile,
    *,
    backend: str | None = None,
    filename: str | None = None,
    path: str | None = None,
    column: Any = None,
    registry: StorageRegistry | None = None,
    validators: Iterable[ValidatorLike] | None = None,
) -> FileObject:
    """Stream a multipart upload into the store (create-only) and return its FileObject.

    The object path is fresh: ``path`` if the server gives one, else ``column``'s ORM layout
    (``{table}/{column}/{uuid}/{name}``) or ``uploads/{uuid}/{name}``; the client's
    name is kept only as ``filename``. The content type is sniffed from the first bytes,
    never taken from the client. ``validators`` (default: ``column``'s) run on the bytes as
    they stream; a refused file raises :class:`~storeroom.errors.ValidationError` and is not
    kept. What the bytes reveal (image size, PDF pages) goes into ``metadata``. Starlette
    spools large parts to a temporary file; it is read in chunks, never whole.
    """
    head, chunks = await aread_head(upload.read)
    file = upload_target(
        filename or upload.filename,
        head,
        backend=backend,
        path=path,
        column=column,
        registry=registry,
    )
    return await save_inspected_async(file, chunks, validators, column)


async def file_response(
    file: FileObject, headers: Mapping[str, str] | None = None, *, attachment: bool = True
) -> StreamingResponse:
    """A streaming, range-capable response for ``file`` (pass ``request.headers``)."""
    plan = await plan_file_response_async(file, headers or {}, attachment=attachment)
    response_headers: dict[str, Any] = dict(plan.headers)
    return StreamingResponse(
        abody(file, plan),
        status_code=plan.status,
        headers=response_headers,
        media_type=response_headers.get("content-type"),
    )


def resumable_upload_router(
    sessions: Any,
    destination: Any,
    *,
    path: str = "/uploads",
    limits: Any = None,
    **options: Any,
) -> APIRouter:
    """An APIRouter serving resumable upload sessions under ``path``.

    ``sessions`` is an ``async_sessionmaker``; the other arguments are those of
    :class:`storeroom.web.resumable.ResumableConfig`::

        app.include_router(resumable_upload_router(sessions, Document.file, limits=limits))
    """
    router = APIRouter()
    app = ResumableUploadsApp(sessions, ResumableConfig(destination, limits, **options))
    router.routes.append(Mount(path, app=app))
    return router
