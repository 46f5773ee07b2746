"""The specification's single-backend convention: ``STORAGE_BACKEND`` plus a few values.

``STORAGE_BACKEND`` (or a settings object's ``backend`` field) names the type of the one
``"default"`` backend; bucket, credentials, region and directory come from type-specific
values. The environment loader and both settings classes share this one mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from storeroom.config.construction import register_specs
from storeroom.config.errors import spec_error
from storeroom.config.fields import SETTINGS_FIELDS
from storeroom.config.spec import BackendSpec, spec_from_mapping
from storeroom.config.validation import TYPE_ALIASES

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend
    from storeroom.registry import StorageRegistry

__all__ = ["NO_BACKEND", "SettingsBackends", "single_backend_spec", "specs_from_settings"]

#: ``STORAGE_BACKEND`` value meaning "register no default backend".
NO_BACKEND = "none"


def single_backend_spec(
    backend: str,
    *,
    key: str = "default",
    bucket: str | None = None,
    region: str | None = None,
    endpoint: str | None = None,
    access_key_id: Any = None,
    secret_access_key: Any = None,
    service_account: Any = None,
    connection_string: Any = None,
    upload_dir: str | None = None,
    allow_http: bool | None = None,
    names: Mapping[str, str] | None = None,
    source: str | None = None,
) -> BackendSpec | None:
    """The spec of the one backend that ``backend`` (``s3``, ``minio``, ``gcs``, ``azure``,
    ``local``, ``memory`` or ``none``) selects, or None for ``none``.

    ``names`` maps ``backend``/``bucket``/``upload_dir`` to the variable or field the value
    came from, so that errors name what the user has to set. Values that are None are left
    out (obstore then reads its own environment variables and instance credentials).
    """
    names = dict(names or {})
    backend_name = names.get("backend", "backend")
    kind = str(backend).strip().lower()
    if kind == NO_BACKEND:
        return None
    if kind not in TYPE_ALIASES or TYPE_ALIASES[kind] == "fsspec":
        choices = "s3, minio, gcs, azure, local, memory, none"
        raise spec_error(
            key,
            source,
            backend_name,
            f"{backend!r} is not a supported backend type",
            fix=f"Valid values: {choices}",
        )
    kind = TYPE_ALIASES[kind]
    options: dict[str, Any] = {}
    if kind in ("s3", "minio", "gcs", "azure") and not bucket:
        bucket_name = names.get("bucket", "bucket")
        noun = "container" if kind == "azure" else "bucket"
        raise spec_error(
            key,
            source,
            bucket_name,
            f"not set; {backend_name}={kind} needs the {noun} name",
            fix=f"Set {bucket_name} (or {bucket_name}_FILE)"
            if bucket_name.isupper()
            else f"Set {bucket_name}",
        )
    if kind in ("s3", "minio"):
        options.update(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key)
        if allow_http is not None:
            options["aws_allow_http"] = allow_http
    elif kind == "gcs":
        options["google_service_account"] = service_account
    elif kind == "azure":
        options["azure_storage_connection_string"] = connection_string
    options = {name: value for name, value in options.items() if value is not None}
    return BackendSpec(
        key=key,
        type=kind,
        bucket=bucket if kind not in ("local", "memory") else None,
        region=region if kind in ("s3", "minio") else None,
        endpoint=endpoint if kind in ("s3", "minio") else None,
        path=upload_dir if kind == "local" else None,
        options=options,
        source=source,
    )


def specs_from_settings(
    values: Mapping[str, Any], *, source: str, env_prefix: str = "STORAGE_"
) -> list[BackendSpec]:
    """The specs a settings object describes (``values`` holds the fields of
    :data:`~storeroom.config.fields.SETTINGS_FIELDS`).

    ``backends`` (a mapping of key -> backend table) registers any number of backends;
    ``backend`` selects the type of the one ``"default"`` backend, whose location comes from
    ``s3_bucket``/``s3_region``/``endpoint``/``aws_*`` (s3 and minio), ``gcs_bucket``/
    ``google_service_account``, ``azure_container``/``azure_storage_connection_string`` or
    ``upload_dir``. When ``backend`` is unset it is ``local`` if ``backends`` is empty, and
    ``none`` otherwise.
    """
    tables = values.get("backends") or {}
    if not isinstance(tables, Mapping):
        raise spec_error(
            None,
            source,
            "backends",
            f"expected a mapping of key -> table, got {type(tables).__name__}",
        )
    specs = [
        spec_from_mapping(table, source=f"{source}.backends[{key!r}]", key=str(key))
        for key, table in tables.items()
    ]
    backend = values.get("backend")
    if backend is None:
        backend = NO_BACKEND if specs else "local"
    kind = TYPE_ALIASES.get(str(backend).lower(), str(backend).lower())
    names = {
        "backend": "backend",
        "bucket": {"gcs": "gcs_bucket", "azure": "azure_container"}.get(kind, "s3_bucket"),
    }
    if env_prefix and source.startswith("environment"):
        names = {n: env_prefix + v.upper() for n, v in names.items()}
    bucket = values.get(names["bucket"].removeprefix(env_prefix).lower())
    endpoint = values.get("endpoint")
    single = single_backend_spec(
        backend,
        bucket=bucket,
        region=values.get("s3_region"),
        endpoint=endpoint,
        access_key_id=values.get("aws_access_key_id"),
        secret_access_key=values.get("aws_secret_access_key"),
        service_account=values.get("google_service_account"),
        connection_string=values.get("azure_storage_connection_string"),
        upload_dir=values.get("upload_dir"),
        names=names,
        source=source,
    )
    return specs + ([single] if single is not None else [])


class SettingsBackends:
    """What both settings classes do with their fields: describe and register backends.

    Mixed into :class:`~storeroom.config.settings.StorageSettings` and
    :class:`~storeroom.config.dataclass.StorageConfig`, whose fields are
    :data:`~storeroom.config.fields.SETTINGS_FIELDS`.
    """

    __slots__ = ()

    def specs(self) -> list[BackendSpec]:
        """The backend specs these settings describe (secrets stay wrapped, e.g. SecretStr)."""
        values = {f.name: getattr(self, f.name) for f in SETTINGS_FIELDS}
        return specs_from_settings(values, source=type(self).__name__)

    def register_backends(
        self, registry: StorageRegistry | None = None, *, overwrite: bool = False
    ) -> list[StorageBackend]:
        """Register the backends on ``registry`` (default ``storages``); returns them."""
        return register_specs(self.specs(), registry, overwrite=overwrite)
