"""Finding a model and its file columns by name: what the CLI and maintenance jobs are given.

``import_model("app.models:Document")`` imports the class (the current directory is
importable, like ``python -m``); ``stored_columns(Document)`` lists its ``StoredObject``
columns. Both raise :class:`~storeroom.errors.ConfigurationError` saying what was wrong.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from storeroom.errors import ConfigurationError
from storeroom.orm.lifecycle import file_columns

__all__ = ["import_model", "stored_columns"]


def import_model(spec: str) -> type:
    """Import ``module:Class``; :class:`ConfigurationError` naming the problem."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ConfigurationError(
            f"the model must be MODULE:CLASS (e.g. app.models:Document), got {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for the model: {exc}") from None
    model = getattr(module, name, None)
    if not isinstance(model, type):
        raise ConfigurationError(f"module {module_name!r} has no class {name!r}")
    return model


def stored_columns(model: type, name: str | None = None) -> list[Any]:
    """The model's ``StoredObject`` columns (instrumented attributes), or just ``name``."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import NoInspectionAvailable

    try:
        mapper: Any = inspect(model)
    except NoInspectionAvailable:
        raise ConfigurationError(f"{model.__name__} is not a mapped SQLAlchemy model") from None
    names = [n for n, _kind in file_columns(mapper)]
    if not names:
        raise ConfigurationError(f"{model.__name__} has no StoredObject columns")
    if name is not None:
        if name not in names:
            raise ConfigurationError(
                f"{model.__name__} has no file column {name!r}; file columns: {', '.join(names)}"
            )
        names = [name]
    return [getattr(model, n) for n in names]
