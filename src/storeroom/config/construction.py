"""Building backends from specs: options, location, retry, signing; registering them.

The only part of :mod:`storeroom.config` that creates backends. Nothing here does I/O except
building a local backend (which creates its directory); cloud backends are built without a
network request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from storeroom.backends.obstore.options import STORE_KINDS
from storeroom.config.errors import InvalidBackendSpec, shown, spec_error
from storeroom.config.urls import ALLOW_HTTP_OPTION, ENDPOINT_OPTION, URL_SCHEME, url_type
from storeroom.errors import ConfigurationError
from storeroom.masking import redact, reveal
from storeroom.registry import StorageRegistry, storages

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend
    from storeroom.config.specdata import SpecData

__all__ = [
    "backend_options",
    "build_backend",
    "build_backends",
    "location_url",
    "register_specs",
]

logger = logging.getLogger("storeroom.config")

_MINIO_DEFAULT_ENDPOINT = "http://localhost:9000"
_MINIO_DEFAULT_REGION = "us-east-1"


def backend_options(spec: SpecData) -> dict[str, Any]:
    """The keyword options ``spec``'s backend is built with (secrets in the clear)."""
    options = {name: reveal(value) for name, value in spec.options.items()}
    kind = spec.kind if spec.url is None else url_type(spec.url)
    endpoint: str | None = spec.endpoint
    region: str | None = spec.region
    if kind == "minio":
        endpoint = endpoint or _MINIO_DEFAULT_ENDPOINT
        region = region or _MINIO_DEFAULT_REGION
    if region is not None:
        _merge(spec, options, "region", "aws_region", region)
    if endpoint is not None:
        _merge(spec, options, "endpoint", ENDPOINT_OPTION[kind], endpoint)
        allow = ALLOW_HTTP_OPTION[kind]
        if endpoint.lower().startswith("http://") and not any(
            n in options for n in (allow, "allow_http", "client_options")
        ):
            options[allow] = True
    return options


def _merge(spec: SpecData, options: dict[str, Any], field: str, option: str, value: Any) -> None:
    if option in options and options[option] != value:
        raise spec_error(
            spec.key,
            spec.source,
            field,
            f"{value!r} conflicts with option {option}={options[option]!r}",
            fix=f"Set it once, either as {field} or as the option {option}",
        )
    options[option] = value


def location_url(spec: SpecData) -> str:
    """The URL (or fsspec protocol and prefix) ``spec``'s backend is built for."""
    kind = spec.kind
    prefix = spec.prefix.strip("/")
    if kind == "url":
        return spec.url or ""
    if kind in URL_SCHEME:
        bucket = spec.bucket or ""
        if "://" in bucket:
            bucket = bucket.split("://", 1)[1]
        base = f"{URL_SCHEME[kind]}://{bucket.strip('/')}/"
        return base + (prefix + "/" if prefix else "")
    if kind == "local":
        root = Path(spec.path or ".").expanduser().resolve()
        return (root / prefix).as_uri() if prefix else root.as_uri()
    if kind == "memory":
        return "memory://"
    bucket = (spec.bucket or "").split("://", 1)[-1].strip("/")
    return f"{spec.protocol}://" + "/".join(p for p in (bucket, prefix) if p)


def _tuning(spec: SpecData) -> dict[str, Any]:
    """``retry`` and ``timeout`` for an obstore backend (fsspec takes neither option)."""
    tuning: dict[str, Any] = {}
    scheme = urlsplit(spec.url).scheme if spec.kind == "url" and spec.url else None
    if scheme is not None and scheme not in STORE_KINDS:
        return tuning
    if spec.retry is not None:
        tuning["retry"] = spec.retry
    if spec.timeout is not None:
        tuning["timeout"] = spec.timeout
    return tuning


def _fsspec_backend(spec: SpecData) -> StorageBackend:
    try:
        from storeroom.backends.fsspec import FSSpecBackend
    except ImportError as exc:
        raise spec_error(
            spec.key,
            spec.source,
            "type",
            "'fsspec' needs the fsspec package, which is not installed",
            fix="pip install 'storeroom[fsspec]'",
        ) from exc
    bucket = (spec.bucket or "").split("://", 1)[-1].strip("/")
    prefix = "/".join(p for p in (bucket, spec.prefix.strip("/")) if p)
    if spec.protocol in ("file", "local") and spec.prefix.startswith("/") and not bucket:
        prefix = spec.prefix
    return FSSpecBackend(spec.key, spec.protocol or "", prefix=prefix, **backend_options(spec))


def _construct(spec: SpecData) -> StorageBackend:
    if spec.kind == "fsspec":
        return _fsspec_backend(spec)
    if spec.kind == "url":
        from storeroom.config.urls import backend_from_url

        return backend_from_url(spec.key, spec.url or "", **backend_options(spec), **_tuning(spec))
    from storeroom.backends.obstore import ObstoreBackend

    return ObstoreBackend(spec.key, location_url(spec), **backend_options(spec), **_tuning(spec))


def _configure(spec: SpecData, backend: StorageBackend) -> None:
    """Apply the settings every backend reads after construction: retry, signing and the
    digest new saves record."""
    if spec.checksum_algorithm is not None:
        backend.checksum_algorithm = spec.checksum_algorithm
    if spec.retry is not None:
        # Backends that retry natively got it at construction; the rest read it here.
        from storeroom.retry import RetryPolicy

        backend.retry = RetryPolicy.from_value(spec.retry)
    if spec.signing_secret is not None:
        from storeroom.signing import configure_signing

        if not spec.signing_base_url:
            raise spec_error(
                spec.key,
                spec.source,
                "signing_base_url",
                "is required with signing_secret: the URL where storeroom's web handler is mounted",
                fix="e.g. signing_base_url = 'https://app.example.com/files'",
            )
        secrets = reveal(spec.signing_secret)
        configure_signing(
            backend,
            secret=secrets.split(",") if isinstance(secrets, str) else secrets,
            base_url=spec.signing_base_url,
        )


def build_backend(spec: SpecData) -> StorageBackend:
    """Build the backend ``spec`` describes (does not register it).

    Raises :class:`~storeroom.config.errors.InvalidBackendSpec` when the backend rejects
    the spec, e.g. an option it does not accept; the message names the key, the option and
    what is valid, never a secret.
    """
    try:
        backend = _construct(spec)
        _configure(spec, backend)
        return backend
    except InvalidBackendSpec:
        raise
    except ConfigurationError as exc:
        message = redact(str(exc), spec.secrets())
        where = f" (from {spec.source})" if spec.source else ""
        if spec.key not in message:
            message = f"backend {spec.key!r}: {message}"
        if "invalid option value" in message:
            message += _odd_values_hint(spec.options)
        raise InvalidBackendSpec(
            message + where, key=spec.key, field=_option_in(message), source=spec.source
        ) from exc


def _odd_values_hint(options: Mapping[str, Any]) -> str:
    odd = [
        f"{name}={shown('options.' + name, value)}"
        for name, value in options.items()
        if not isinstance(reveal(value), str | bool | Mapping)
    ]
    if not odd:
        return ""
    return f"; field 'options': check {', '.join(odd)} (store options are strings)"


def _option_in(message: str) -> str:
    marker = "option '"
    if marker in message:
        return "options." + message.split(marker, 1)[1].split("'", 1)[0]
    return "options"


def build_backends(specs: Iterable[SpecData]) -> list[StorageBackend]:
    """Build every spec's backend; fails on the first invalid one, before any is used.

    Raises :class:`~storeroom.config.errors.InvalidBackendSpec` when two specs share a key.
    """
    specs = list(specs)
    seen: dict[str, SpecData] = {}
    for spec in specs:
        if spec.key in seen:
            first = seen[spec.key]
            raise spec_error(
                spec.key,
                spec.source,
                "key",
                f"{spec.key!r} is defined twice (also from {first.source or 'code'})",
                fix="Give each backend its own key",
            )
        seen[spec.key] = spec
    return [build_backend(spec) for spec in specs]


def register_specs(
    specs: Iterable[SpecData],
    registry: StorageRegistry | None = None,
    *,
    overwrite: bool = False,
) -> list[StorageBackend]:
    """Build and register every spec's backend; returns the backends.

    All backends are built first, so an invalid spec registers nothing. A spec with
    ``default=True`` becomes the registry's default. ``registry`` defaults to ``storages``.
    Raises :class:`~storeroom.errors.BackendAlreadyRegistered` for a key already registered
    (unless ``overwrite=True``).
    """
    registry = storages if registry is None else registry
    specs = list(specs)
    backends = build_backends(specs)
    if not overwrite:
        for backend in backends:
            if backend.key in registry:
                # Raise the registry's own error before anything is registered.
                registry.register_backend(backend)
    for spec, backend in zip(specs, backends, strict=True):
        registry.register_backend(backend, overwrite=overwrite, default=spec.default)
        logger.info(
            "registered storage backend %r at %s (from %s)",
            backend.key,
            backend.location,
            spec.source or "code",
        )
    return backends
