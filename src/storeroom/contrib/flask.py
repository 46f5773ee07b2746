"""Flask: ``Storeroom`` extension (``init_app``) with a blueprint serving signed URLs.

::

    from flask import Flask
    from storeroom.contrib.flask import Storeroom

    storeroom = Storeroom()

    def create_app():
        app = Flask(__name__)
        storeroom.init_app(app, configure=configure_storage)
        return app
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, request
from typing_extensions import Unpack
from werkzeug.datastructures import FileStorage

from storeroom.contrib._startup import Configure, configure_backends
from storeroom.cors import CorsRules
from storeroom.file import FileObject
from storeroom.registry import StorageRegistry, storages
from storeroom.web.files import (
    ResponseOptions,
    UploadOptions,
    body,
    plan_file_response,
    save_untrusted,
)
from storeroom.web.resumable import ResumableConfig, ResumableUploadsWsgiApp
from storeroom.web.wsgi import SignedUrlWsgiApp

__all__ = ["Storeroom", "file_response", "resumable_upload_blueprint", "save_upload"]


class Storeroom:
    """The Flask extension: registers backends and serves signed URLs under ``mount_path``."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.registry: StorageRegistry = storages
        if app is not None:
            self.init_app(app, **options)

    def init_app(
        self,
        app: Flask,
        *,
        configure: Configure = None,
        mount_path: str = "/files",
        registry: StorageRegistry | None = None,
        cors: CorsRules | None = None,
    ) -> None:
        """Register backends now (inside the app context) and mount the signed-URL blueprint."""
        self.registry = registry or storages
        with app.app_context():
            configure_backends(configure, self.registry)
        wsgi = SignedUrlWsgiApp(self.registry, cors=cors)
        blueprint = Blueprint("storeroom", __name__, url_prefix=mount_path)

        def serve(subpath: str) -> Any:
            environ = dict(request.environ)
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + mount_path
            # The handler decodes the path itself (strict UTF-8): hand it the request's own
            # bytes (WSGI carries them as latin-1 text), not Flask's lenient decoding.
            original = environ.get("PATH_INFO", "")
            if original.startswith(mount_path + "/"):
                environ["PATH_INFO"] = original[len(mount_path) :]
            else:
                environ["PATH_INFO"] = ("/" + subpath).encode("utf-8").decode("latin-1")
            return Response.from_app(wsgi, environ)

        blueprint.add_url_rule(
            "/<path:subpath>",
            "signed_url",
            serve,
            methods=["GET", "HEAD", "PUT", "OPTIONS", "POST", "PATCH", "DELETE"],  # tus
            provide_automatic_options=False,
        )
        app.register_blueprint(blueprint)
        app.extensions["storeroom"] = self


def save_upload(upload: FileStorage, **options: Unpack[UploadOptions]) -> FileObject:
    """Stream a multipart upload (``request.files[...]``) into the store, create-only.

    ``options`` (``backend``, ``filename``, ``path``, ``column``, ``registry``,
    ``validators``) and what is checked: :func:`storeroom.web.files.save_untrusted`.
    """
    return save_untrusted(upload.stream.read, upload.filename, **options)


def file_response(
    file: FileObject, headers: Mapping[str, str] | None = None, **options: Unpack[ResponseOptions]
) -> Response:
    """A streaming, range-capable response for ``file`` (pass ``request.headers``).

    ``options``: ``attachment``, and ``variant="thumb"`` to serve that variant, made now
    (once) if it is not yet (:class:`storeroom.web.files.ResponseOptions`).
    """
    plan = plan_file_response(file, dict(headers or {}), **options)
    return Response(body(plan), status=plan.status, headers=plan.headers, direct_passthrough=True)


def resumable_upload_blueprint(
    sessions: Any, destination: Any, *, url_prefix: str = "/uploads", **options: Any
) -> Blueprint:
    """A blueprint serving resumable upload sessions under ``url_prefix``.

    ``sessions`` is a ``sessionmaker``; the other arguments are those of
    :class:`storeroom.web.resumable.ResumableConfig`::

        app.register_blueprint(resumable_upload_blueprint(Session, Document.file))
    """
    wsgi = ResumableUploadsWsgiApp(sessions, ResumableConfig(destination, **options))
    blueprint = Blueprint("storeroom_resumable", __name__, url_prefix=url_prefix)

    def serve(subpath: str) -> Any:
        environ = dict(request.environ)
        environ["PATH_INFO"] = "/" + subpath
        return Response.from_app(wsgi, environ)

    blueprint.add_url_rule("/<path:subpath>", "resumable", serve, methods=["GET", "POST", "DELETE"])
    return blueprint
