"""Storage settings with pydantic-settings (install ``storeroom[settings]``).

:class:`StorageSettings` reads ``STORAGE_*`` environment variables (and a ``.env`` file when
asked to), validates them, keeps credentials as :class:`pydantic.SecretStr`, and registers
the backends it describes with :meth:`StorageSettings.register_backends`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from pydantic import Field, SecretStr
    from pydantic_settings import BaseSettings, SettingsConfigDict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "StorageSettings needs pydantic-settings: pip install 'storeroom[settings]'"
    ) from exc

from storeroom.config.conventions import specs_from_settings
from storeroom.config.spec import register_specs

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend
    from storeroom.config.spec import BackendSpec
    from storeroom.registry import StorageRegistry

__all__ = ["StorageSettings"]


class StorageSettings(BaseSettings):
    """Storage settings read from ``STORAGE_*`` variables.

    ``STORAGE_BACKEND`` selects the type of one ``"default"`` backend (``s3``, ``minio``,
    ``gcs``, ``azure``, ``local``, ``memory`` or ``none``; unset means ``local`` unless
    ``backends`` is given), located by ``STORAGE_S3_BUCKET``, ``STORAGE_S3_REGION``,
    ``STORAGE_ENDPOINT``, ``STORAGE_AWS_ACCESS_KEY_ID``, ``STORAGE_AWS_SECRET_ACCESS_KEY``,
    ``STORAGE_GCS_BUCKET``, ``STORAGE_GOOGLE_SERVICE_ACCOUNT``, ``STORAGE_AZURE_CONTAINER``,
    ``STORAGE_AZURE_STORAGE_CONNECTION_STRING`` or ``STORAGE_UPLOAD_DIR``.
    ``STORAGE_BACKENDS`` (JSON) or ``STORAGE_BACKENDS__<KEY>__<FIELD>`` add any number of
    backends, each a :class:`~storeroom.config.spec.BackendSpec` table.
    """

    model_config = SettingsConfigDict(
        env_prefix="STORAGE_", env_nested_delimiter="__", extra="ignore"
    )

    backend: str | None = Field(default=None, description="Type of the 'default' backend.")
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    endpoint: str | None = Field(default=None, description="S3/MinIO endpoint URL.")
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    gcs_bucket: str | None = None
    google_service_account: SecretStr | None = None
    azure_container: str | None = None
    azure_storage_connection_string: SecretStr | None = None
    upload_dir: str = "/var/app/uploads"
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def __repr_args__(self) -> Any:
        from storeroom.config.masking import masked_mapping

        for name, value in super().__repr_args__():
            if name == "backends" and isinstance(value, dict):
                yield name, {k: masked_mapping(v) for k, v in value.items()}
            else:
                yield name, value

    def specs(self) -> list[BackendSpec]:
        """The backend specs these settings describe (secrets stay SecretStr)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return specs_from_settings(values, source="StorageSettings")

    def register_backends(
        self, registry: StorageRegistry | None = None, *, overwrite: bool = False
    ) -> list[StorageBackend]:
        """Register the backends on ``registry`` (default ``storages``); returns them."""
        return register_specs(self.specs(), registry, overwrite=overwrite)
