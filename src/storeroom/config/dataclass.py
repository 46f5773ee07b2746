"""A plain dataclass holding storage settings, for applications without pydantic.

:class:`StorageConfig` has the fields of :data:`~storeroom.config.fields.SETTINGS_FIELDS`
(the same as the pydantic :class:`~storeroom.config.settings.StorageSettings`) and reads the
same ``STORAGE_*`` variables with :meth:`StorageConfig.from_env`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from storeroom.config.conventions import SettingsBackends
from storeroom.config.env import read_env
from storeroom.config.fields import SETTINGS_FIELDS
from storeroom.config.validation import parse_json_object
from storeroom.masking import MASK, masked_mapping

__all__ = ["StorageConfig"]

if TYPE_CHECKING:
    _Fields = object
else:
    _Fields = dataclasses.make_dataclass(
        "StorageConfig",
        [
            (f.name, f.type, dataclasses.field(default=f.default, metadata={"setting": f}))
            for f in SETTINGS_FIELDS
        ],
        repr=False,
        slots=True,
    )
    _Fields.__module__ = __name__


class StorageConfig(SettingsBackends, _Fields):
    """Storage settings as a plain dataclass; :meth:`register_backends` registers them.

    ``backend`` selects the type of one ``"default"`` backend (``s3``, ``minio``, ``gcs``,
    ``azure``, ``local``, ``memory`` or ``none``; unset means ``local`` unless ``backends``
    is given); ``backends`` maps further keys to backend tables (the
    :class:`~storeroom.config.spec.BackendSpec` fields). The fields are
    :data:`~storeroom.config.fields.SETTINGS_FIELDS`. Secrets are masked in ``repr()``.
    """

    __slots__ = ()

    if TYPE_CHECKING:

        def __init__(self, **values: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

    def __repr__(self) -> str:
        shown = []
        for f in SETTINGS_FIELDS:
            value = getattr(self, f.name)
            if value is None or value == {}:
                continue
            if f.secret:
                value = MASK
            elif f.name == "backends":
                value = {k: masked_mapping(v) for k, v in value.items()}
            shown.append(f"{f.name}={value!r}")
        return f"StorageConfig({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageConfig:
        """Read ``STORAGE_<FIELD>`` variables (``STORAGE_BACKEND``, ``STORAGE_S3_BUCKET``,
        ...; each also as ``..._FILE``), and ``STORAGE_BACKENDS`` as a JSON object."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in SETTINGS_FIELDS:
            value = read_env(environ, f.env_variable)
            if value is None:
                continue
            if f.name == "backends":
                values[f.name] = parse_json_object(value, None, f.env_variable, "environment")
            else:
                values[f.name] = value
        return cls(**values)
