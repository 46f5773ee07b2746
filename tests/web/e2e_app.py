"""The apps the end-to-end test and benchmarks/web_memory.py serve on 127.0.0.1.

Backends come from the environment (``STORAGE__<KEY>__URL``, ``..._SIGNING_SECRET``,
``..._SIGNING_BASE_URL``), exactly as a deployed app would configure them. ``app`` is the
ASGI handler mounted at ``/files``; ``wsgi_app`` its WSGI twin, mounted the same way.
"""

from __future__ import annotations

from typing import Any

from storeroom.config import configure_from_env
from storeroom.registry import StorageRegistry
from storeroom.web import SignedUrlApp, SignedUrlWsgiApp

registry = StorageRegistry()
configure_from_env(registry)
app = SignedUrlApp(registry, mount_path="/files")
_wsgi = SignedUrlWsgiApp(registry)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    """``SignedUrlWsgiApp`` under ``/files`` (what a WSGI dispatcher would do)."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/files/"):
        environ = {**environ, "SCRIPT_NAME": "/files", "PATH_INFO": path[len("/files") :]}
    return _wsgi(environ, start_response)
