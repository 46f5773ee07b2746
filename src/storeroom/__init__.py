"""storeroom: SQLAlchemy models that own files, with the bytes on any object store.

Everything users import comes from here::

    from storeroom import FileObject, ObstoreBackend, storages
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storeroom import _shutdown as _shutdown  # waits for obstore's threads at exit
from storeroom import events
from storeroom import serialization as serialization  # gives FileObject its pydantic form
from storeroom.backends.base import ObjectInfo, PutResult, StorageBackend
from storeroom.backends.obstore import ObstoreBackend
from storeroom.errors import (
    BackendAlreadyRegistered,
    BackendError,
    BackendNotRegistered,
    ConfigurationError,
    ContentUnreadable,
    CredentialsNotFound,
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    RangeNotSatisfiable,
    SignatureExpired,
    SignatureInvalid,
    SigningNotSupported,
    StoreroomError,
    UnsafePath,
    UnsupportedContent,
    ValidationError,
)
from storeroom.file import FileObject
from storeroom.orm.types import StoredObject
from storeroom.registry import StorageRegistry, storages

if TYPE_CHECKING:
    from storeroom.backends.fsspec import FSSpecBackend

__all__ = [
    "BackendAlreadyRegistered",
    "BackendError",
    "BackendNotRegistered",
    "ConfigurationError",
    "ContentUnreadable",
    "CredentialsNotFound",
    "FSSpecBackend",
    "FileObject",
    "IntegrityError",
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "ObstoreBackend",
    "PutResult",
    "RangeNotSatisfiable",
    "SignatureExpired",
    "SignatureInvalid",
    "SigningNotSupported",
    "StorageBackend",
    "StorageRegistry",
    "StoredObject",
    "StoreroomError",
    "UnsafePath",
    "UnsupportedContent",
    "ValidationError",
    "events",
    "storages",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # fsspec is an optional extra: import its backend only when asked for.
    if name == "FSSpecBackend":
        from storeroom.backends.fsspec import FSSpecBackend

        return FSSpecBackend
    raise AttributeError(f"module 'storeroom' has no attribute {name!r}")
