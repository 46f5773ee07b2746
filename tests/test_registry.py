"""The backend registry."""

from __future__ import annotations

import pytest

from storeroom import (
    BackendAlreadyRegistered,
    BackendNotRegistered,
    ConfigurationError,
    FileObject,
    ObstoreBackend,
    StorageRegistry,
    storages,
)


def test_register_get_and_iterate() -> None:
    registry = StorageRegistry()
    public = registry.register_backend(ObstoreBackend("public", "memory://"))
    private = registry.register_backend(ObstoreBackend("private", "memory://"))
    assert registry.get_backend("public") is public
    assert registry.is_registered("private") and "private" in registry
    assert set(registry) == {public, private}
    assert len(registry) == 2
    assert registry.registered_backends() == ["private", "public"]


def test_unknown_key_lists_registered_keys() -> None:
    registry = StorageRegistry()
    registry.register_backend(ObstoreBackend("private", "memory://"))
    registry.register_backend(ObstoreBackend("public", "memory://"))
    with pytest.raises(BackendNotRegistered) as caught:
        registry.get_backend("privat")
    message = str(caught.value)
    assert message == (
        "backend 'privat' is not registered; registered: 'private', 'public'. "
        "Register it with storages.register_backend(...) before use."
    )
    assert isinstance(caught.value, KeyError)


def test_re_registering_a_key_needs_overwrite() -> None:
    registry = StorageRegistry()
    first = registry.register_backend(ObstoreBackend("k", "memory://"))
    registry.register_backend(first)  # the same instance again is harmless
    second = ObstoreBackend("k", "memory://")
    with pytest.raises(BackendAlreadyRegistered, match="overwrite=True"):
        registry.register_backend(second)
    registry.register_backend(second, overwrite=True)
    assert registry.get_backend("k") is second


def test_unregister_and_clear() -> None:
    registry = StorageRegistry()
    registry.register_backend(ObstoreBackend("a", "memory://"), default=True)
    registry.register_backend(ObstoreBackend("b", "memory://"))
    registry.unregister_backend("a")
    assert not registry.is_registered("a")
    assert registry.default_key == "b"
    registry.clear()
    assert len(registry) == 0
    with pytest.raises(BackendNotRegistered, match="no default backend"):
        registry.get_backend()


def test_default_backend_rules() -> None:
    registry = StorageRegistry()
    registry.register_backend(ObstoreBackend("only", "memory://"))
    assert registry.default.key == "only"
    registry.register_backend(ObstoreBackend("other", "memory://"))
    assert registry.default_key is None
    registry.register_backend(ObstoreBackend("default", "memory://"))
    assert registry.default_key == "default"
    registry.set_default("other")
    assert registry.get_backend().key == "other"


def test_register_rejects_non_backends() -> None:
    with pytest.raises(ConfigurationError, match="StorageBackend"):
        StorageRegistry().register_backend("memory://")  # type: ignore[arg-type]


def test_spec_fixture_pattern_clears_backends_dict() -> None:
    backend = ObstoreBackend("test", "memory://")
    storages.register_backend(backend)
    try:
        FileObject(backend="test", filename="a.txt", content=b"x").save()
        assert storages.get_backend("test").get("a.txt") == b"x"
    finally:
        storages._backends.clear()
    assert not storages.is_registered("test")
