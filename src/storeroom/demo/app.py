"""The demo's Litestar application."""

from __future__ import annotations

import os
import uuid
from typing import Annotated, Any, cast

from litestar import Litestar, MediaType, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Body, FromPath, JSONBody
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from storeroom import storages, uploads
from storeroom.backends.obstore import ObstoreBackend
from storeroom.contrib.litestar import StoreroomPlugin, resumable_uploads, save_upload
from storeroom.demo.models import TeamFile, TeamPhoto
from storeroom.demo.page import PAGE, UPLOADER
from storeroom.demo.settings import ALLOWED_PATTERNS, DemoSettings, type_allowed
from storeroom.errors import ConfigurationError, ValidationError
from storeroom.orm import UUIDAuditBase
from storeroom.orm.variants import record_column_variants, schedule_variants
from storeroom.signing import configure_signing
from storeroom.uploads.multipart import resumable_protocol

__all__ = ["create_app"]

UPLOAD_TTL = 600

# What a rejected upload's rule means to the person uploading, and the status it gets.
_REJECTIONS = {
    "max_size": (413, "{name} is larger than the {limit} limit."),
    "declared_size": (400, "{name} arrived incomplete; please upload again."),
    "min_size": (400, "{name} is empty: there is nothing to store."),
    "content_type": (415, "{name}: its contents ({value}) are not a type this app accepts."),
    "missing": (400, "{name} did not reach storage; please upload again."),
}


def configure_storage(settings: DemoSettings) -> None:
    """The environment's backends if any are set, else local disk under the data folder."""
    from storeroom.config import configure_from_env

    if any(k.startswith(("STORAGE__", "STORAGE_BACKEND")) for k in os.environ):
        configure_from_env(storages, overwrite=True)
        return
    backend = ObstoreBackend("private", f"file://{settings.data_dir / 'uploads'}")
    configure_signing(
        backend,
        secret=settings.signing_secret(),
        base_url=f"{settings.base_url}/files",
        max_upload_size=settings.max_upload_bytes,
    )
    storages.register_backend(backend, overwrite=True)


def _problem(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _rejection(rejected: uploads.UploadRejected, settings: DemoSettings) -> HTTPException:
    """The upload's object is already deleted; tell the person why, in their terms."""
    status, template = _REJECTIONS.get(rejected.rule, (400, "{name} was refused."))
    return _problem(
        status,
        template.format(
            name="The file",
            value=rejected.value,
            limit=f"{settings.max_upload_bytes / 2**20:.0f} MiB",
        ),
    )


def _photo_refused(error: ValidationError, name: str) -> HTTPException:
    """A file the image-only column refused, explained from what its bytes are."""
    if error.rule == "ContentTypes":
        return _problem(
            415,
            f"{name}: its contents are {error.value}; the team photo must be a PNG, JPEG, "
            "GIF or WebP image.",
        )
    return _problem(422, f"{name} was refused: {error}")


def create_app(settings: DemoSettings | None = None) -> Litestar:
    """Build the demo app (settings default to the environment)."""
    settings = settings or DemoSettings.from_env()
    engine: AsyncEngine = create_async_engine(settings.database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    limits = uploads.UploadLimits(
        max_size=settings.max_upload_bytes, min_size=1, content_types=ALLOWED_PATTERNS
    )

    async def create_tables() -> None:
        async with engine.begin() as conn:
            tables = [cast(Table, model.__table__) for model in (TeamFile, TeamPhoto)]
            await conn.run_sync(UUIDAuditBase.metadata.create_all, tables=tables)
            await conn.run_sync(uploads.metadata.create_all)
        async with sessions() as session:  # uploads abandoned before the last shutdown
            await uploads.remove_expired_async(session)
            await session.commit()

    async def describe(row: TeamFile) -> dict[str, Any]:
        return {
            "id": str(row.id),
            "name": row.name,
            "size": row.file.size,
            "content_type": row.file.content_type,
            "uploaded": row.created_at.isoformat(timespec="seconds"),
            "download_url": await row.url(),
            "preview_url": await row.preview_url(),
        }

    @get("/", media_type=MediaType.HTML)
    async def index() -> str:
        try:  # tus for local disk, S3 multipart for S3; other stores upload in one PUT
            protocol = resumable_protocol(storages.get_backend("private"))
        except ConfigurationError:
            protocol = "single"
        return PAGE.replace("{{MAX_BYTES}}", str(settings.max_upload_bytes)).replace(
            "{{PROTOCOL}}", protocol
        )

    @get("/static/uploader.js", media_type="text/javascript")
    async def uploader_script() -> Response[str]:
        # Uppy, bundled at build time (npm run build:demo): nothing comes from a CDN.
        return Response(
            UPLOADER, media_type="text/javascript", headers={"cache-control": "no-cache"}
        )

    @get("/api/files")
    async def list_files() -> list[dict[str, Any]]:
        async with sessions() as session:
            rows = (
                await session.scalars(select(TeamFile).order_by(TeamFile.created_at.desc()))
            ).all()
            return [await describe(row) for row in rows]

    @post("/api/uploads")
    async def start_upload(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        name = str(data.get("name") or "").strip()
        size = data.get("size")
        content_type = str(data.get("content_type") or "application/octet-stream")
        if not name:
            raise _problem(400, "Choose a file first.")
        if not isinstance(size, int) or size <= 0:
            raise _problem(400, f"{name} is empty: there is nothing to store.")
        if size > settings.max_upload_bytes:
            raise _problem(
                413,
                f"{name} is {size / 2**20:.1f} MiB; the limit is "
                f"{settings.max_upload_bytes / 2**20:.0f} MiB.",
            )
        if not type_allowed(content_type):
            raise _problem(415, f"{name}: files of type {content_type} are not accepted.")
        # A session stored in the database: single-use, server-placed, survives restarts.
        async with sessions() as session:
            target = await uploads.begin_async(
                session,
                TeamFile.file,
                filename=name,
                content_type=content_type,
                size=size,
                limits=limits,
                expires_in=UPLOAD_TTL,
            )
            await session.commit()
        return {
            "upload_id": target.id,
            "upload_url": target.instructions.url,
            "method": target.instructions.method,
            "headers": target.instructions.headers,
        }

    @post("/api/uploads/{upload_id:str}/complete")
    async def complete_upload(upload_id: FromPath[str]) -> dict[str, Any]:
        async with sessions() as session:
            try:
                file = await uploads.complete_async(session, upload_id)
            except uploads.UploadSessionInvalid:
                raise _problem(
                    404, "This upload is unknown, finished or expired; please upload again."
                ) from None
            except uploads.UploadRejected as rejected:
                raise _rejection(rejected, settings) from None
            # Its previews: recorded with the row, made by a job after the commit (or by the
            # signed-URL handler, if the browser asks first).
            row = TeamFile(name=file.filename, file=record_column_variants(file, TeamFile.file))
            session.add(row)
            await session.commit()
        schedule_variants([row.file])
        return await describe(row)

    async def photo_preview() -> dict[str, Any]:
        async with sessions() as session:
            photo = await session.scalar(
                select(TeamPhoto).order_by(TeamPhoto.created_at.desc()).limit(1)
            )
        if photo is None:
            return {"preview_url": None}
        return {"preview_url": await photo.image.variant("thumb").sign_async(expires_in=3600)}

    @get("/api/photo")
    async def team_photo() -> dict[str, Any]:
        return await photo_preview()

    @post("/api/photo")
    async def upload_team_photo(
        data: Annotated[UploadFile, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> dict[str, Any]:
        # Through the column's validators, as the bytes stream in: a refused file is not kept.
        try:
            image = await save_upload(data, column=TeamPhoto.image)
        except ValidationError as error:
            raise _photo_refused(error, data.filename or "The file") from None
        async with sessions() as session:
            session.add(TeamPhoto(image=image))
            await session.commit()
        schedule_variants([image])
        return await photo_preview()

    @delete("/api/files/{file_id:uuid}", status_code=200)
    async def delete_file(file_id: FromPath[uuid.UUID]) -> dict[str, str]:
        async with sessions() as session:
            row = await session.get(TeamFile, file_id)
            if row is None:
                raise NotFoundException("no such file")
            await session.delete(row)
            await session.commit()  # the stored file is deleted after the commit
        return {"deleted": str(file_id)}

    @get("/healthz")
    async def health() -> Response[str]:
        return Response("ok", media_type=MediaType.TEXT)

    return Litestar(
        route_handlers=[
            index,
            uploader_script,
            list_files,
            start_upload,
            complete_upload,
            team_photo,
            upload_team_photo,
            delete_file,
            health,
            # Resumable uploads (tus / Uppy's S3 multipart protocol) of TeamFiles.
            resumable_uploads(
                sessions, TeamFile.file, path="/uploads", limits=limits, expires_in=UPLOAD_TTL * 6
            ),
        ],
        plugins=[StoreroomPlugin(configure=lambda: configure_storage(settings))],
        on_startup=[create_tables],
        on_shutdown=[engine.dispose],
    )
