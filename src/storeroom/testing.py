"""Helpers for testing applications that use storeroom.

``memory_backends("public", "private")`` registers fresh in-memory backends under the given
keys for the duration of a ``with`` block (or a pytest fixture) and restores the registry
afterwards, so tests never touch real storage and never see each other's files::

    @pytest.fixture(autouse=True)
    def storage():
        with memory_backends("private", "public") as backends:
            yield backends
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from storeroom.backends.base import StorageBackend
from storeroom.backends.obstore import ObstoreBackend
from storeroom.registry import StorageRegistry, storages

__all__ = ["memory_backends", "registry_snapshot"]


@contextmanager
def registry_snapshot(registry: StorageRegistry | None = None) -> Iterator[StorageRegistry]:
    """Restore ``registry`` (the default one) to its current backends when the block ends."""
    registry = registry or storages
    saved = dict(registry._backends)
    saved_default = registry._default_key
    try:
        yield registry
    finally:
        registry._backends.clear()
        registry._backends.update(saved)
        registry._default_key = saved_default


@contextmanager
def memory_backends(
    *keys: str, registry: StorageRegistry | None = None, default: str | None = None
) -> Iterator[dict[str, StorageBackend]]:
    """Register an empty in-memory backend under each key; undo it when the block ends.

    Backends already registered under those keys are replaced for the duration. The first
    key (or ``default``) becomes the registry's default backend.
    """
    if not keys:
        keys = ("default",)
    with registry_snapshot(registry) as active:
        backends: dict[str, StorageBackend] = {}
        for key in keys:
            backends[key] = active.register_backend(
                ObstoreBackend(key, "memory://"),
                overwrite=True,
                default=key == (default or keys[0]),
            )
        yield backends
