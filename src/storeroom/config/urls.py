"""The URL factory: which backend a URL names, and building it.

``s3://``, ``gs://``, ``az://`` (``abfs://``...), ``file://``, ``memory://`` and
``http(s)://`` build an obstore backend; a plain path builds one on that directory; any
protocol fsspec knows (or ``fsspec+<protocol>://``) builds an fsspec backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from storeroom.backends.obstore.options import STORE_KINDS, store_kind
from storeroom.config.errors import InvalidBackendSpec, spec_error
from storeroom.errors import ConfigurationError
from storeroom.masking import masked

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend

__all__ = [
    "ALLOW_HTTP_OPTION",
    "ENDPOINT_OPTION",
    "URL_SCHEME",
    "backend_from_url",
    "fsspec_knows",
    "url_type",
]

#: Spec type -> the URL scheme of its bucket URLs.
URL_SCHEME: Mapping[str, str] = {"s3": "s3", "minio": "s3", "gcs": "gs", "azure": "az"}
#: Spec type -> the obstore option an ``endpoint`` becomes.
ENDPOINT_OPTION: Mapping[str, str] = {
    "s3": "aws_endpoint",
    "minio": "aws_endpoint",
    "gcs": "google_base_url",
    "azure": "azure_storage_endpoint",
}
#: Spec type -> the obstore option that allows plain-http endpoints.
ALLOW_HTTP_OPTION: Mapping[str, str] = {
    "s3": "aws_allow_http",
    "minio": "aws_allow_http",
    "gcs": "google_allow_http",
    "azure": "azure_allow_http",
}


def url_type(
    url: str, *, key: str | None = None, source: str | None = None, in_spec: bool = False
) -> str:
    """The spec type a URL selects: an obstore kind ('s3', 'gcs', ...), 'fsspec' or 'local'.

    Raises :class:`InvalidBackendSpec` for a scheme nothing handles; with ``in_spec`` the
    message names the backend ``key`` and ``source`` like every spec error.
    """
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if not scheme:
        return "local"
    if scheme.startswith("fsspec+"):
        return "fsspec"
    if scheme in STORE_KINDS:
        return STORE_KINDS[scheme]
    if fsspec_knows(scheme):
        return "fsspec"
    valid = ", ".join(f"{s}://" for s in STORE_KINDS)
    problem = f"{masked('url', url)!r} has an unsupported scheme {scheme + '://'!r}"
    fix = f"Use one of {valid}, a local path, or an fsspec protocol (fsspec+<protocol>://...)"
    if in_spec:
        raise spec_error(key, source, "url", problem, fix=fix)
    raise InvalidBackendSpec(f"{problem}. {fix}", field="url")


def fsspec_knows(protocol: str) -> bool:
    """Whether fsspec is installed and has an implementation for ``protocol``."""
    try:
        fsspec_registry = importlib.import_module("fsspec.registry")
    except ImportError:
        return False
    return protocol in fsspec_registry.known_implementations or protocol in fsspec_registry.registry


def backend_from_url(key: str, url: str, **options: Any) -> StorageBackend:
    """Build the backend a URL names, choosing the backend type from its scheme.

    - ``s3://``, ``gs://``, ``az://`` (``abfs://``, ...), ``file://``, ``memory://``,
      ``http(s)://``: an :class:`~storeroom.backends.obstore.ObstoreBackend`.
    - A plain path (``/var/app/uploads``, ``./uploads``): an ObstoreBackend on that
      directory, created when missing.
    - ``fsspec+<protocol>://rest`` or any other protocol fsspec knows (``sftp://``,
      ``webdav://``...): an :class:`~storeroom.backends.fsspec.FSSpecBackend` for that
      protocol with prefix ``rest``.

    ``options`` go to the backend (obstore option names for obstore URLs, storage options
    for fsspec). Raises :class:`~storeroom.errors.ConfigurationError` for an unsupported
    scheme or an option the backend does not accept.

    Example::

        backend_from_url("docs", "s3://company-documents/", aws_region="us-west-2")
    """
    from storeroom.backends.obstore import ObstoreBackend

    kind = url_type(url)
    if kind == "local" and not url.lower().startswith("file:"):
        return ObstoreBackend(key, Path(url).expanduser().resolve().as_uri(), **options)
    if kind != "fsspec":
        store_kind(url)
        return ObstoreBackend(key, url, **options)
    try:
        from storeroom.backends.fsspec import FSSpecBackend
    except ImportError as exc:
        raise ConfigurationError(
            f"backend {key!r}: {masked('url', url)!r} needs fsspec: pip install 'storeroom[fsspec]'"
        ) from exc
    scheme, _, rest = url.partition("://")
    protocol = scheme.lower().removeprefix("fsspec+")
    return FSSpecBackend(key, protocol, prefix=rest, **options)
