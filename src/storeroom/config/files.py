"""Backends from configuration files: TOML, JSON and YAML (YAML needs PyYAML).

Every format holds the same structure, a list of backend tables under ``storage.backends``::

    [[storage.backends]]
    key = "documents"
    type = "s3"
    bucket = "s3://company-documents/"
    region = "us-west-2"

Each table is a :class:`~storeroom.config.spec.BackendSpec` (``key``, ``type`` or ``url``,
``bucket``, ``prefix``, ``region``, ``endpoint``, ``path``, ``protocol``, ``default``,
``options``...); any other entry is a backend option (``aws_access_key_id = "..."``).
``storage.backends`` may also be a table of tables keyed by backend key.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from storeroom.config.construction import register_specs
from storeroom.config.errors import InvalidBackendSpec
from storeroom.config.spec import BackendSpec, spec_from_mapping

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend
    from storeroom.registry import StorageRegistry

__all__ = [
    "FORMATS",
    "InvalidConfigFile",
    "configure_from_file",
    "load_config_file",
    "specs_from_config",
]

#: File suffix -> format name.
FORMATS: Mapping[str, str] = {
    ".toml": "toml",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
}


class InvalidConfigFile(InvalidBackendSpec):
    """A configuration file cannot be read or parsed, or lacks ``storage.backends``."""


def _parse(path: Path, text: str, fmt: str) -> Any:
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfigFile(
                f"{path}: not valid TOML ({exc}); values are not shown as they may hold secrets",
                source=str(path),
            ) from None
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidConfigFile(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                source=str(path),
            ) from None
    try:
        yaml = importlib.import_module("yaml")
    except ImportError as exc:
        raise InvalidConfigFile(
            f"{path}: reading YAML needs PyYAML: pip install 'storeroom[yaml]'",
            source=str(path),
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InvalidConfigFile(f"{path}: not valid YAML{where}", source=str(path)) from None


def specs_from_config(data: Any, source: str = "configuration") -> list[BackendSpec]:
    """The specs in an already parsed configuration (``{"storage": {"backends": [...]}}``).

    A mapping holding ``backends`` directly is accepted too.
    """
    if not isinstance(data, Mapping):
        raise InvalidConfigFile(
            f"{source}: expected a table with storage.backends, got {type(data).__name__}",
            field="storage.backends",
            source=source,
        )
    storage = data.get("storage", data)
    backends = storage.get("backends") if isinstance(storage, Mapping) else None
    if backends is None:
        raise InvalidConfigFile(
            f"{source}: no storage.backends found (top-level keys: "
            f"{', '.join(map(str, data)) or 'none'}); add [[storage.backends]] tables with "
            "key and type (or url)",
            field="storage.backends",
            source=source,
        )
    if isinstance(backends, Mapping):
        return [
            spec_from_mapping(table, source=f"{source}, storage.backends.{key}", key=str(key))
            for key, table in backends.items()
        ]
    if not isinstance(backends, list):
        raise InvalidConfigFile(
            f"{source}: storage.backends must be a list of tables, got {type(backends).__name__}",
            field="storage.backends",
            source=source,
        )
    return [
        spec_from_mapping(table, source=f"{source}, storage.backends[{index}]")
        for index, table in enumerate(backends)
    ]


def load_config_file(path: str | os.PathLike[str]) -> list[BackendSpec]:
    """Read the backend specs from a TOML, JSON or YAML file (chosen by suffix)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidConfigFile(
            f"{path}: unknown configuration format {path.suffix or '(no suffix)'!r}; "
            f"valid suffixes: {', '.join(FORMATS)}",
            field="path",
            source=str(path),
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfigFile(
            f"{path}: cannot read the configuration file ({exc.strerror or exc})",
            field="path",
            source=str(path),
        ) from exc
    return specs_from_config(_parse(path, text, fmt), source=str(path))


def configure_from_file(
    path: str | os.PathLike[str],
    registry: StorageRegistry | None = None,
    *,
    overwrite: bool = False,
) -> list[StorageBackend]:
    """Register the backends a configuration file describes; returns them.

    ``registry`` defaults to ``storages``. Nothing is registered when any entry is invalid.
    """
    return register_specs(load_config_file(path), registry, overwrite=overwrite)
