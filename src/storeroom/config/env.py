"""Backends from environment variables.

Three forms, all read by :func:`configure_from_env`:

1. The specification's single backend: ``STORAGE_BACKEND`` = ``s3`` | ``minio`` | ``gcs`` |
   ``azure`` | ``local`` (| ``memory`` | ``none``) with ``S3_BUCKET``, ``AWS_ACCESS_KEY_ID``,
   ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; ``MINIO_BUCKET``, ``MINIO_ACCESS_KEY``,
   ``MINIO_SECRET_KEY``, ``MINIO_ENDPOINT``, ``MINIO_REGION``; ``GCS_BUCKET``,
   ``GOOGLE_APPLICATION_CREDENTIALS``; ``AZURE_CONTAINER``,
   ``AZURE_STORAGE_CONNECTION_STRING``; ``UPLOAD_DIR``. Registered under the key
   ``"default"``.
2. ``{NAME}_STORAGE_URI`` with optional ``{NAME}_STORAGE_OPTIONS`` (a JSON object) and
   ``{NAME}_STORAGE_KEY``: one backend per NAME.
3. ``STORAGE__<KEY>__URL`` or ``STORAGE__<KEY>__TYPE`` with ``STORAGE__<KEY>__<FIELD>``
   (``BUCKET``, ``PREFIX``, ``REGION``, ``ENDPOINT``, ``PATH``, ``PROTOCOL``, ``DEFAULT``,
   ``OPTIONS``...) and ``STORAGE__<KEY>__<OPTION>`` (any backend option, e.g.
   ``AWS_SECRET_ACCESS_KEY``): any number of backends.

Backend keys derived from a variable name are lower-cased with ``_`` turned into ``-``
(``USER_UPLOADS_STORAGE_URI`` -> ``"user-uploads"``). Any variable ``X`` may instead be
given as ``X_FILE``, the path of a file holding the value (Docker and Kubernetes secrets);
one trailing newline is removed.

When none of these variables is set, the specification's default applies: a local backend
``"default"`` in ``UPLOAD_DIR`` (``/var/app/uploads``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from storeroom.backends.obstore.options import valid_option_names
from storeroom.config.construction import register_specs
from storeroom.config.conventions import single_backend_spec
from storeroom.config.errors import spec_error
from storeroom.config.spec import BackendSpec, spec_from_mapping
from storeroom.config.validation import parse_json_object

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend
    from storeroom.registry import StorageRegistry

__all__ = [
    "DEFAULT_UPLOAD_DIR",
    "configure_from_env",
    "key_from_name",
    "read_env",
    "specs_from_env",
]

DEFAULT_UPLOAD_DIR = "/var/app/uploads"
"""Where ``STORAGE_BACKEND=local`` stores files when ``UPLOAD_DIR`` is not set."""

_GENERIC_PREFIX = "STORAGE__"
_URI_VARIABLE = re.compile(r"^(?P<name>[A-Za-z0-9_]*[A-Za-z0-9])_STORAGE_URI(?:_FILE)?$")

# STORAGE_BACKEND -> the variables the specification reads for it.
_CONVENTION: Mapping[str, Mapping[str, str]] = {
    "s3": {
        "bucket": "S3_BUCKET",
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "region": "AWS_REGION",
    },
    "minio": {
        "bucket": "MINIO_BUCKET",
        "access_key_id": "MINIO_ACCESS_KEY",
        "secret_access_key": "MINIO_SECRET_KEY",
        "endpoint": "MINIO_ENDPOINT",
        "region": "MINIO_REGION",
    },
    "gcs": {"bucket": "GCS_BUCKET", "service_account": "GOOGLE_APPLICATION_CREDENTIALS"},
    "azure": {
        "bucket": "AZURE_CONTAINER",
        "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    },
    "local": {"upload_dir": "UPLOAD_DIR"},
}
_CONVENTION_ALIASES = {"gs": "gcs", "az": "azure", "file": "local"}
_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "s3": {"region": "us-east-1"},
    "minio": {"endpoint": "http://localhost:9000", "region": "us-east-1"},
    "local": {"upload_dir": DEFAULT_UPLOAD_DIR},
}
# Options whose own name ends in _file (they take a path, not a secret read from a file).
_FILE_OPTIONS = frozenset(
    name
    for kind in ("s3", "gcs", "azure", "local", "memory")
    for name in valid_option_names(kind)
    if name.endswith("_file")
)


def key_from_name(name: str) -> str:
    """The backend key for a variable-name fragment: ``USER_UPLOADS`` -> ``user-uploads``."""
    return name.strip("_").lower().replace("_", "-")


def _read_secret_file(variable: str, path: str, key: str | None) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise spec_error(
            key,
            "environment",
            variable,
            f"cannot read the file {path!r} ({exc.strerror or type(exc).__name__})",
            fix=f"Point {variable} at a readable file, or set {variable[:-5]} directly",
        ) from None
    return text.removesuffix("\n")


def read_env(environ: Mapping[str, str], name: str, key: str | None = None) -> str | None:
    """The value of variable ``name``, or of the file named by ``{name}_FILE``; None if
    neither is set. Setting both is an error (which of them was meant is unclear)."""
    value = environ.get(name)
    path = environ.get(name + "_FILE")
    if path is None:
        return value
    if value is not None:
        raise spec_error(
            key,
            "environment",
            name,
            f"both {name} and {name}_FILE are set",
            fix="Set only one of them",
        )
    return _read_secret_file(name + "_FILE", path, key)


def _generic_specs(environ: Mapping[str, str]) -> list[BackendSpec]:
    tables: dict[str, dict[str, str]] = {}
    names: dict[str, str] = {}
    for variable in sorted(environ):
        if not variable.upper().startswith(_GENERIC_PREFIX):
            continue
        parts = variable[len(_GENERIC_PREFIX) :].split("__")
        if len(parts) != 2 or not all(parts):
            raise spec_error(
                None,
                "environment",
                variable,
                "not of the form STORAGE__<KEY>__<FIELD>",
                fix="Use e.g. STORAGE__DOCUMENTS__URL=s3://bucket/ or "
                "STORAGE__DOCUMENTS__AWS_REGION=us-east-1",
            )
        name, field = parts[0], parts[1].lower()
        names.setdefault(name.upper(), name)
        table = tables.setdefault(name.upper(), {})
        value = environ[variable]
        key = key_from_name(name)
        if field.endswith("_file") and field not in _FILE_OPTIONS:
            field = field[:-5]
            value = _read_secret_file(variable, value, key)
        if field in table:
            raise spec_error(
                key,
                "environment",
                variable,
                f"{field!r} is set twice (directly and via _FILE)",
                fix="Set only one of them",
            )
        table[field] = value
    return [
        spec_from_mapping(
            table,
            source=f"environment {_GENERIC_PREFIX}{names[upper]}__*",
            key=key_from_name(names[upper]),
        )
        for upper, table in tables.items()
    ]


def _uri_specs(environ: Mapping[str, str]) -> list[BackendSpec]:
    specs = []
    seen: set[str] = set()
    for variable in sorted(environ):
        match = _URI_VARIABLE.match(variable)
        if not match or variable.upper().startswith(_GENERIC_PREFIX):
            continue
        name = match.group("name")
        if name in seen:
            continue
        seen.add(name)
        key = key_from_name(name)
        explicit_key = read_env(environ, f"{name}_STORAGE_KEY", key)
        key = explicit_key or key
        url = read_env(environ, f"{name}_STORAGE_URI", key)
        source = f"environment {name}_STORAGE_URI"
        options = read_env(environ, f"{name}_STORAGE_OPTIONS", key)
        spec_options: object = {}
        if options is not None and options.strip():
            spec_options = parse_json_object(options, key, f"{name}_STORAGE_OPTIONS", source)
        specs.append(
            spec_from_mapping({"url": url, "options": spec_options}, source=source, key=key)
        )
    return specs


def _conventional_spec(environ: Mapping[str, str], others: bool) -> BackendSpec | None:
    backend = read_env(environ, "STORAGE_BACKEND", "default")
    if backend is None:
        if others:
            return None
        backend = "local"
    kind = backend.strip().lower()
    kind = _CONVENTION_ALIASES.get(kind, kind)
    variables = _CONVENTION.get(kind, {})
    values: dict[str, object] = {}
    for field, variable in variables.items():
        value = read_env(environ, variable, "default")
        if value is None:
            value = _DEFAULTS.get(kind, {}).get(field)
        values[field] = value
    return single_backend_spec(
        backend,
        names={"backend": "STORAGE_BACKEND", **variables},
        source=f"environment STORAGE_BACKEND={backend}",
        allow_http=True if kind == "minio" else None,
        **values,  # type: ignore[arg-type]
    )


def specs_from_env(environ: Mapping[str, str] | None = None) -> list[BackendSpec]:
    """The backend specs the environment describes (see the module docstring for the forms).

    ``environ`` defaults to ``os.environ``. Raises :class:`InvalidBackendSpec` naming the
    variable for a malformed value.
    """
    environ = os.environ if environ is None else environ
    specs = _generic_specs(environ) + _uri_specs(environ)
    conventional = _conventional_spec(environ, others=bool(specs))
    return specs + ([conventional] if conventional is not None else [])


def configure_from_env(
    registry: StorageRegistry | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    overwrite: bool = False,
) -> list[StorageBackend]:
    """Register the backends the environment describes; returns them.

    ``registry`` defaults to ``storages`` and ``environ`` to ``os.environ``. Nothing is
    registered when any variable is invalid.
    """
    return register_specs(specs_from_env(environ), registry, overwrite=overwrite)
