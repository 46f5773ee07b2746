"""A plain dataclass holding storage settings, for applications without pydantic.

:class:`StorageConfig` has the same fields as the pydantic
:class:`~storeroom.config.settings.StorageSettings` and reads the same ``STORAGE_*``
variables with :meth:`StorageConfig.from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from storeroom.config.conventions import specs_from_settings
from storeroom.config.env import read_env
from storeroom.config.masking import MASK, is_secret_field, masked_mapping
from storeroom.config.spec import parse_json_object, register_specs

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend
    from storeroom.config.spec import BackendSpec
    from storeroom.registry import StorageRegistry

__all__ = ["StorageConfig"]

_ENV_PREFIX = "STORAGE_"


@dataclass(slots=True, repr=False)
class StorageConfig:
    """Storage settings as a plain dataclass; :meth:`register_backends` registers them.

    ``backend`` selects the type of one ``"default"`` backend (``s3``, ``minio``, ``gcs``,
    ``azure``, ``local``, ``memory`` or ``none``; unset means ``local`` unless ``backends``
    is given); ``backends`` maps further keys to backend tables (the
    :class:`~storeroom.config.spec.BackendSpec` fields). Secrets are masked in ``repr()``.
    """

    backend: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    endpoint: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    gcs_bucket: str | None = None
    google_service_account: str | None = None
    azure_container: str | None = None
    azure_storage_connection_string: str | None = None
    upload_dir: str = "/var/app/uploads"
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == {}:
                continue
            if is_secret_field(f.name):
                value = MASK
            elif f.name == "backends":
                value = {k: masked_mapping(v) for k, v in value.items()}
            shown.append(f"{f.name}={value!r}")
        return f"StorageConfig({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageConfig:
        """Read ``STORAGE_<FIELD>`` variables (``STORAGE_BACKEND``, ``STORAGE_S3_BUCKET``,
        ...; each also as ``..._FILE``), and ``STORAGE_BACKENDS`` as a JSON object."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = _ENV_PREFIX + f.name.upper()
            value = read_env(environ, name)
            if value is None:
                continue
            if f.name == "backends":
                values[f.name] = parse_json_object(value, None, name, "environment")
            else:
                values[f.name] = value
        return cls(**values)

    def specs(self) -> list[BackendSpec]:
        """The backend specs these settings describe."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return specs_from_settings(values, source="StorageConfig")

    def register_backends(
        self, registry: StorageRegistry | None = None, *, overwrite: bool = False
    ) -> list[StorageBackend]:
        """Register the backends on ``registry`` (default ``storages``); returns them."""
        return register_specs(self.specs(), registry, overwrite=overwrite)
