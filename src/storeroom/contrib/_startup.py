"""What every framework integration does at start-up (one place, no framework code)."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike

from storeroom.registry import StorageRegistry, storages

Configure = Callable[[], object] | str | PathLike[str] | None
"""How backends get registered at start-up: a function (like the specification's
``configure_storage_from_env``), a configuration file path, or None for the environment."""


def configure_backends(configure: Configure, registry: StorageRegistry | None = None) -> None:
    """Register backends the way ``configure`` says, unless it is ``False``-y and some exist."""
    registry = registry or storages
    if callable(configure):
        configure()
        return
    from storeroom import config

    if configure is not None:
        config.configure_from_file(configure, registry, overwrite=True)
    elif not len(registry):
        config.configure_from_env(registry)
