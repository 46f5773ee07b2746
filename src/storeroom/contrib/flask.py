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
from werkzeug.datastructures import FileStorage

from storeroom.contrib._startup import Configure, configure_backends
from storeroom.cors import CorsRules
from storeroom.file import FileObject
from storeroom.registry import StorageRegistry, storages
from storeroom.web.files import body, plan_file_response, upload_target
from storeroom.web.wsgi import SignedUrlWsgiApp

__all__ = ["Storeroom", "file_response", "save_upload"]


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
            environ["PATH_INFO"] = "/" + subpath
            return Response.from_app(wsgi, environ)

        blueprint.add_url_rule(
            "/<path:subpath>", "signed_url", serve,
            methods=["GET", "HEAD", "PUT", "OPTIONS"], provide_automatic_options=False,
        )
        app.register_blueprint(blueprint)
        app.extensions["storeroom"] = self


def save_upload(
    upload: FileStorage,
    *,
    backend: str | None = None,
    filename: str | None = None,
    path: str | None = None,
    registry: StorageRegistry | None = None,
) -> FileObject:
    """Stream a multipart upload (``request.files[...]``) into the store, in chunks."""
    file = upload_target(filename or upload.filename, upload.mimetype,
                         backend=backend, path=path,
                         registry=registry)
    return file.save(upload.stream)


def file_response(
    file: FileObject, headers: Mapping[str, str] | None = None, *, attachment: bool = True
) -> Response:
    """A streaming, range-capable response for ``file`` (pass ``request.headers``)."""
    plan = plan_file_response(file, dict(headers or {}), attachment=attachment)
    return Response(body(file, plan), status=plan.status, headers=plan.headers,
                    direct_passthrough=True)
