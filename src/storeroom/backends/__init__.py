"""Storage backends. ``FSSpecBackend`` lives in :mod:`storeroom.backends.fsspec` (needs fsspec)."""

from __future__ import annotations

from storeroom.backends.base import ObjectInfo, PutResult, StorageBackend, WriteOptions
from storeroom.backends.obstore import ObstoreBackend

__all__ = ["ObjectInfo", "ObstoreBackend", "PutResult", "StorageBackend", "WriteOptions"]
