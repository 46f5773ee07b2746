"""FastAPI: a lifespan that registers backends, a router serving signed URLs, helpers.

::

    from fastapi import FastAPI
    from storeroom.contrib.fastapi import signed_url_router, storeroom_lifespan

    app = FastAPI(lifespan=storeroom_lifespan(configure_storage))
    app.include_router(signed_url_router())          # or app.mount("/files", SignedUrlApp())
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.routing import Mount
from typing_extensions import Unpack

from storeroom.contrib._startup import Configure, configure_backends
from storeroom.cors import CorsRules
from storeroom.file import FileObject
from storeroom.registry import StorageRegistry, storages
from storeroom.web import files
from storeroom.web.asgi import SignedUrlApp
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


async def file_response(
    file: FileObject,
    headers: Mapping[str, str] | None = None,
    **options: Unpack[files.ResponseOptions],
) -> StreamingResponse:
    """Starlette's streaming response for ``file``, with ranges and conditional requests.

    Pass ``request.headers``; ``variant="thumb"`` serves that variant, made now if it is not
    yet (the rest of ``options``: :class:`storeroom.web.files.ResponseOptions`).
    """
    plan = await files.plan_file_response_async(file, headers or {}, **options)
    kind = dict(plan.headers).get("content-type")
    return StreamingResponse(files.abody(plan), plan.status, dict(plan.headers), media_type=kind)


async def save_upload(upload: UploadFile, **options: Unpack[files.UploadOptions]) -> FileObject:
    """Save a FastAPI ``UploadFile`` (spooled by Starlette) as a fresh object; see
    :func:`storeroom.web.files.save_untrusted` for ``options`` and what is checked."""
    return await files.save_untrusted_async(upload.read, upload.filename, **options)


def resumable_upload_router(
    sessions: Any, destination: Any, *, path: str = "/uploads", **options: Any
) -> APIRouter:
    """An APIRouter serving resumable upload sessions under ``path``.

    ``sessions`` is an ``async_sessionmaker``; the other arguments are those of
    :class:`storeroom.web.resumable.ResumableConfig`::

        app.include_router(resumable_upload_router(sessions, Document.file, limits=limits))
    """
    router = APIRouter()
    app = ResumableUploadsApp(sessions, ResumableConfig(destination, **options))
    router.routes.append(Mount(path, app=app))
    return router
