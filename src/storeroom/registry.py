"""Named backends: :class:`StorageRegistry` and the process-wide registry ``storages``."""

from __future__ import annotations

from collections.abc import Iterator

from storeroom.backends.base import StorageBackend
from storeroom.errors import BackendAlreadyRegistered, BackendNotRegistered, ConfigurationError

__all__ = ["StorageRegistry", "storages"]


class StorageRegistry:
    """Maps backend keys to backends.

    ``FileObject(backend="private", ...)`` and ``StoredObject(backend="private")`` name
    backends by key; the registry resolves them when a file is saved or read, so backends
    can be registered at application start-up, after models are defined.
    """

    def __init__(self) -> None:
        #: The registered backends by key. Test fixtures may ``clear()`` it directly.
        self._backends: dict[str, StorageBackend] = {}
        self._default_key: str | None = None

    def __repr__(self) -> str:
        return f"StorageRegistry(keys={sorted(self._backends)!r}, default={self.default_key!r})"

    def register_backend(
        self, backend: StorageBackend, *, overwrite: bool = False, default: bool = False
    ) -> StorageBackend:
        """Register ``backend`` under its key and return it.

        Registering a second backend under a key already in use raises
        :class:`BackendAlreadyRegistered` unless ``overwrite=True``. ``default=True`` makes
        it the backend used when none is named.
        """
        if not isinstance(backend, StorageBackend):
            raise ConfigurationError(
                f"register_backend() takes a StorageBackend (ObstoreBackend, FSSpecBackend...), "
                f"got {type(backend).__name__}"
            )
        current = self._backends.get(backend.key)
        if current is not None and current is not backend and not overwrite:
            raise BackendAlreadyRegistered(
                f"backend {backend.key!r} is already registered ({current.location}); "
                "pass overwrite=True to replace it, or unregister_backend() it first"
            )
        self._backends[backend.key] = backend
        if default:
            self._default_key = backend.key
        return backend

    def unregister_backend(self, key: str) -> StorageBackend:
        """Remove and return the backend registered under ``key``."""
        backend = self.get_backend(key)
        del self._backends[key]
        if self._default_key == key:
            self._default_key = None
        return backend

    def get_backend(self, key: str | None = None) -> StorageBackend:
        """Return the backend registered under ``key`` (the default one when None)."""
        if key is None:
            return self.default
        try:
            return self._backends[key]
        except KeyError:
            raise BackendNotRegistered(self._missing_message(key)) from None

    def is_registered(self, key: str) -> bool:
        """Whether a backend is registered under ``key``."""
        return key in self._backends

    def registered_backends(self) -> list[str]:
        """The registered keys, sorted."""
        return sorted(self._backends)

    @property
    def default_key(self) -> str | None:
        """The default backend's key: the one set with ``default=True``, else the only one."""
        if self._default_key in self._backends:
            return self._default_key
        if len(self._backends) == 1:
            return next(iter(self._backends))
        if "default" in self._backends:
            return "default"
        return None

    @property
    def default(self) -> StorageBackend:
        """The backend used when a file names none."""
        key = self.default_key
        if key is None:
            registered = ", ".join(repr(k) for k in sorted(self._backends)) or "none"
            raise BackendNotRegistered(
                f"no default backend: registered: {registered}. Register one with "
                "storages.register_backend(backend, default=True), or name the backend"
            )
        return self._backends[key]

    def set_default(self, key: str) -> None:
        """Make the backend registered under ``key`` the default."""
        self.get_backend(key)
        self._default_key = key

    def clear(self) -> None:
        """Unregister every backend."""
        self._backends.clear()
        self._default_key = None

    def __contains__(self, key: object) -> bool:
        return key in self._backends

    def __iter__(self) -> Iterator[StorageBackend]:
        return iter(list(self._backends.values()))

    def __len__(self) -> int:
        return len(self._backends)

    def _missing_message(self, key: str) -> str:
        registered = ", ".join(repr(k) for k in sorted(self._backends)) or "none"
        return (
            f"backend {key!r} is not registered; registered: {registered}. Register it with "
            "storages.register_backend(...) before use."
        )


storages = StorageRegistry()
"""The process-wide registry used when no other is given."""
