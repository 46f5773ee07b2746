"""Storage settings with pydantic-settings (install ``storeroom[settings]``).

:class:`StorageSettings` reads ``STORAGE_*`` environment variables (and a ``.env`` file when
asked to), validates them, keeps credentials as :class:`pydantic.SecretStr`, and registers
the backends it describes with :meth:`StorageSettings.register_backends`. Its fields are
:data:`~storeroom.config.fields.SETTINGS_FIELDS`, the same as
:class:`~storeroom.config.dataclass.StorageConfig`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from pydantic import Field, SecretStr, create_model
    from pydantic_settings import BaseSettings, SettingsConfigDict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "StorageSettings needs pydantic-settings: pip install 'storeroom[settings]'"
    ) from exc

from storeroom.config.conventions import SettingsBackends
from storeroom.config.fields import ENV_PREFIX, SETTINGS_FIELDS

__all__ = ["StorageSettings"]

if TYPE_CHECKING:
    _Fields = BaseSettings
else:
    _Fields = create_model(
        "_StorageSettingsFields",
        __base__=BaseSettings,
        __module__=__name__,
        **{
            f.name: (
                SecretStr | None if f.secret else f.type,
                Field(default=f.default, description=f.description),
            )
            for f in SETTINGS_FIELDS
        },
    )


class StorageSettings(SettingsBackends, _Fields):
    """Storage settings read from ``STORAGE_*`` variables.

    ``STORAGE_BACKEND`` selects the type of one ``"default"`` backend (``s3``, ``minio``,
    ``gcs``, ``azure``, ``local``, ``memory`` or ``none``; unset means ``local`` unless
    ``backends`` is given), located by ``STORAGE_S3_BUCKET``, ``STORAGE_S3_REGION``,
    ``STORAGE_ENDPOINT``, ``STORAGE_AWS_ACCESS_KEY_ID``, ``STORAGE_AWS_SECRET_ACCESS_KEY``,
    ``STORAGE_GCS_BUCKET``, ``STORAGE_GOOGLE_SERVICE_ACCOUNT``, ``STORAGE_AZURE_CONTAINER``,
    ``STORAGE_AZURE_STORAGE_CONNECTION_STRING`` or ``STORAGE_UPLOAD_DIR``.
    ``STORAGE_BACKENDS`` (JSON) or ``STORAGE_BACKENDS__<KEY>__<FIELD>`` add any number of
    backends, each a :class:`~storeroom.config.spec.BackendSpec` table. The fields are
    :data:`~storeroom.config.fields.SETTINGS_FIELDS`; secrets are ``SecretStr``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...

    def __repr_args__(self) -> Any:
        from storeroom.masking import masked_mapping

        for name, value in super().__repr_args__():
            if name == "backends" and isinstance(value, dict):
                yield name, {k: masked_mapping(v) for k, v in value.items()}
            else:
                yield name, value
