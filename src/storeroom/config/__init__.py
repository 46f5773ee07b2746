"""Configuration: environment variables, files and settings objects -> registered backends.

Every source produces :class:`BackendSpec` values, which :func:`register_specs` builds and
registers::

    from storeroom.config import configure_from_env, configure_from_file

    configure_from_env()                    # STORAGE_BACKEND, {NAME}_STORAGE_URI, STORAGE__*
    configure_from_file("storage.toml")     # [[storage.backends]] (TOML, JSON or YAML)

:class:`StorageSettings` (pydantic-settings, optional extra) is imported lazily;
:class:`StorageConfig` is its plain-dataclass twin; both are generated from one table,
:data:`SETTINGS_FIELDS`.

The rooms: :mod:`~storeroom.config.spec` (the :class:`BackendSpec` format),
:mod:`~storeroom.config.validation` (every check), :mod:`~storeroom.config.construction`
(building and registering backends), :mod:`~storeroom.config.urls` (the URL factory),
:mod:`~storeroom.config.env` and :mod:`~storeroom.config.files` (the sources),
:mod:`~storeroom.config.fields` (the settings table) and :mod:`~storeroom.masking`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storeroom.config.construction import build_backends, register_specs
from storeroom.config.dataclass import StorageConfig
from storeroom.config.env import configure_from_env, specs_from_env
from storeroom.config.errors import InvalidBackendSpec
from storeroom.config.fields import SETTINGS_FIELDS, SettingField
from storeroom.config.files import (
    InvalidConfigFile,
    configure_from_file,
    load_config_file,
    specs_from_config,
)
from storeroom.config.spec import BackendSpec, spec_from_mapping
from storeroom.config.urls import backend_from_url
from storeroom.config.validation import RESERVED_FIELDS, TYPE_ALIASES

if TYPE_CHECKING:
    from storeroom.config.settings import StorageSettings

__all__ = [
    "RESERVED_FIELDS",
    "SETTINGS_FIELDS",
    "TYPE_ALIASES",
    "BackendSpec",
    "InvalidBackendSpec",
    "InvalidConfigFile",
    "SettingField",
    "StorageConfig",
    "StorageSettings",
    "backend_from_url",
    "build_backends",
    "configure_from_env",
    "configure_from_file",
    "load_config_file",
    "register_specs",
    "spec_from_mapping",
    "specs_from_config",
    "specs_from_env",
]


def __getattr__(name: str) -> Any:
    # pydantic-settings is an optional extra: import StorageSettings only when asked for.
    if name == "StorageSettings":
        from storeroom.config.settings import StorageSettings

        return StorageSettings
    raise AttributeError(f"module 'storeroom.config' has no attribute {name!r}")
