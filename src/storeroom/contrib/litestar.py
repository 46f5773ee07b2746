"""Litestar: ``StoreroomPlugin`` registers backends, mounts signed URLs, injects storage.

::

    from litestar import Litestar
    from storeroom.contrib.litestar import StoreroomPlugin

    app = Litestar(route_handlers=[...], plugins=[StoreroomPlugin(configure=configure_storage)])

Handlers can then ask for ``storages`` (the registry) by dependency injection
(``storages: NamedDependency[StorageRegistry]``, ``litestar.di``), accept uploads with
:func:`save_upload` and answer with :func:`file_response`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from litestar import Response
from litestar.config.app import AppConfig
from litestar.datastructures import UploadFile
from litestar.di import Provide
from litestar.handlers import asgi
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema
from litestar.plugins import InitPluginProtocol, OpenAPISchemaPlugin
from litestar.response import Stream
from litestar.types import Receive, Scope, Send
from typing_extensions import Unpack

from storeroom.contrib._startup import Configure, configure_backends
from storeroom.cors import CorsRules
from storeroom.file import FileObject
from storeroom.registry import StorageRegistry, storages
from storeroom.serialization import PUBLIC, FileForm
from storeroom.web.asgi import SignedUrlApp
from storeroom.web.files import (
    ResponseOptions,
    UploadOptions,
    abody,
    plan_file_response_async,
    save_untrusted_async,
)
from storeroom.web.resumable import ResumableConfig, ResumableUploadsApp

__all__ = [
    "FileObjectSchemaPlugin",
    "StoreroomPlugin",
    "file_response",
    "resumable_uploads",
    "save_upload",
]


class StoreroomPlugin(InitPluginProtocol):
    """Registers backends at start-up, mounts the signed-URL handler, provides ``storages``.

    Args:
        configure: A function that registers backends (the specification's
            ``configure_storage_from_env``), a configuration file, or None to read the
            environment (``storeroom.config.configure_from_env``).
        mount_path: Where signed URLs are served; the signers' ``base_url`` must end here.
        registry: The registry to use (default: ``storages``).
        cors: CORS rules for browser uploads to signed URLs.
        files_as: How handlers' FileObjects appear as data (responses, request bodies and
            the OpenAPI schema): the public form by default; see
            :mod:`storeroom.serialization`.
    """

    def __init__(
        self,
        configure: Configure = None,
        *,
        mount_path: str = "/files",
        registry: StorageRegistry | None = None,
        cors: CorsRules | None = None,
        files_as: FileForm = PUBLIC,
    ) -> None:
        self.configure = configure
        self.files_as = files_as
        self.mount_path = mount_path
        self.registry = registry or storages
        self.app = SignedUrlApp(self.registry, cors=cors, mount_path=mount_path)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Mount the signed-URL handler, add the start-up hook and the ``storages`` dependency."""
        signed_urls = asgi(self.mount_path, is_mount=True, copy_scope=True)(self._serve)
        app_config.route_handlers.append(signed_urls)
        app_config.on_startup.append(self._startup)
        app_config.dependencies["storages"] = Provide(self._registry, sync_to_thread=False)
        self._register_file_form(app_config)
        return app_config

    def _register_file_form(self, app_config: AppConfig) -> None:
        form = self.files_as
        app_config.type_encoders = {**(app_config.type_encoders or {}), FileObject: form.dump}
        app_config.type_decoders = [
            *(app_config.type_decoders or []),
            (lambda target: target is FileObject, lambda _target, value: form.load(value)),
        ]
        app_config.plugins.append(FileObjectSchemaPlugin(form))

    def _registry(self) -> StorageRegistry:
        return self.registry

    def _startup(self) -> None:
        configure_backends(self.configure, self.registry)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Litestar's event types are TypedDicts; the app takes the plain ASGI mapping form.
        await self.app(cast(Any, scope), cast(Any, receive), cast(Any, send))


class FileObjectSchemaPlugin(OpenAPISchemaPlugin):
    """The OpenAPI schema of FileObject in a :class:`~storeroom.serialization.FileForm`."""

    def __init__(self, form: FileForm = PUBLIC) -> None:
        self.form = form

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        """FileObject, and only it."""
        return value is FileObject

    def to_openapi_schema(self, field_definition: Any, schema_creator: Any) -> Schema:
        """The form's JSON Schema as Litestar's OpenAPI ``Schema``."""
        return _schema(self.form.json_schema())


def _schema(data: Mapping[str, Any]) -> Schema:
    if "anyOf" in data:
        return Schema(
            any_of=[_schema(s) for s in data["anyOf"]], description=data.get("description")
        )
    return Schema(
        title=data.get("title"),
        type=OpenAPIType(data["type"]),
        format=OpenAPIFormat(data["format"]) if "format" in data else None,
        description=data.get("description"),
        minimum=data.get("minimum"),
        min_length=data.get("minLength"),
        properties={k: _schema(v) for k, v in data["properties"].items()}
        if "properties" in data
        else None,
        required=data.get("required"),
        additional_properties=data.get("additionalProperties"),
    )


async def save_upload(upload: UploadFile, **options: Unpack[UploadOptions]) -> FileObject:
    """Stream Litestar's multipart ``UploadFile`` into the store, create-only, in chunks.

    ``options`` (``backend``, ``filename``, ``path``, ``column``, ``registry``,
    ``validators``) and what is checked: :func:`storeroom.web.files.save_untrusted`.
    """
    return await save_untrusted_async(upload.read, upload.filename, **options)


async def file_response(
    file: FileObject, headers: Mapping[str, str] | None = None, **options: Unpack[ResponseOptions]
) -> Response[Any]:
    """A streaming, range-capable response for ``file`` (pass ``request.headers``).

    ``options``: ``attachment``, and ``variant="thumb"`` to serve that variant, made now
    (once) if it is not yet (:class:`storeroom.web.files.ResponseOptions`).
    """
    plan = await plan_file_response_async(file, headers or {}, **options)
    fields = dict(plan.headers)
    return Stream(
        abody(plan), status_code=plan.status, headers=fields, media_type=fields.get("content-type")
    )


def resumable_uploads(
    sessions: Any, destination: Any, *, path: str = "/uploads", **options: Any
) -> Any:
    """A route handler serving resumable upload sessions under ``path``.

    ``sessions`` is an ``async_sessionmaker``; ``destination``, ``limits`` and ``options``
    (``expires_in``, ``registry``, ``authorize``) are those of
    :class:`storeroom.web.resumable.ResumableConfig`::

        app = Litestar([resumable_uploads(sessions, Document.file, limits=limits), ...])

    Point Uppy's ``@uppy/aws-s3`` at ``companionEndpoint: path`` (S3) or begin a session
    with ``POST {path}/resumable`` and give ``@uppy/tus`` its ``endpoint`` (local disk).
    """
    app = ResumableUploadsApp(sessions, ResumableConfig(destination, **options), mount_path=path)

    async def storeroom_resumable_uploads(scope: Scope, receive: Receive, send: Send) -> None:
        await app(cast(Any, scope), cast(Any, receive), cast(Any, send))

    return asgi(path, is_mount=True, copy_scope=True)(storeroom_resumable_uploads)
