"""The settings fields, declared once: the table both settings classes and ``from_env`` use.

:class:`~storeroom.config.settings.StorageSettings` (pydantic) and
:class:`~storeroom.config.dataclass.StorageConfig` (a dataclass) are generated from
:data:`SETTINGS_FIELDS`; ``StorageConfig.from_env`` reads each field's
:attr:`SettingField.env_variable`, the same names pydantic-settings reads. A field added
here is a field of both classes and a variable of both loaders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ENV_PREFIX", "SETTINGS_FIELDS", "SettingField"]

ENV_PREFIX = "STORAGE_"
"""Prefix of the settings' environment variables (``STORAGE_S3_BUCKET``...)."""


@dataclass(frozen=True, slots=True)
class SettingField:
    """One setting: its name, Python type, default, whether it is a secret, what it means."""

    name: str
    type: Any
    """The value's type (secrets: the plain type; pydantic wraps them in ``SecretStr``)."""
    default: Any
    description: str
    secret: bool = False

    @property
    def env_variable(self) -> str:
        """The environment variable holding the field (``STORAGE_<NAME>``)."""
        return ENV_PREFIX + self.name.upper()


#: Every settings field, in order. ``backends`` maps further backend keys to
#: :class:`~storeroom.config.spec.BackendSpec` tables (None: none).
SETTINGS_FIELDS: tuple[SettingField, ...] = (
    SettingField(
        "backend",
        str | None,
        None,
        "Type of the 'default' backend: s3, minio, gcs, azure, local, memory or none "
        "(unset: local, or none when backends are given).",
    ),
    SettingField("s3_bucket", str | None, None, "Bucket of an s3 or minio default backend."),
    SettingField("s3_region", str, "us-east-1", "Region of an s3 or minio default backend."),
    SettingField("endpoint", str | None, None, "S3/MinIO endpoint URL."),
    SettingField("aws_access_key_id", str | None, None, "S3/MinIO access key id.", secret=True),
    SettingField(
        "aws_secret_access_key", str | None, None, "S3/MinIO secret access key.", secret=True
    ),
    SettingField("gcs_bucket", str | None, None, "Bucket of a gcs default backend."),
    SettingField(
        "google_service_account",
        str | None,
        None,
        "GCS service account (path or JSON).",
        secret=True,
    ),
    SettingField("azure_container", str | None, None, "Container of an azure default backend."),
    SettingField(
        "azure_storage_connection_string",
        str | None,
        None,
        "Azure storage connection string.",
        secret=True,
    ),
    SettingField("upload_dir", str, "/var/app/uploads", "Directory of a local default backend."),
    SettingField(
        "backends",
        dict[str, dict[str, Any]] | None,
        None,
        "Further backends: key -> BackendSpec table (JSON in STORAGE_BACKENDS).",
    ),
)
