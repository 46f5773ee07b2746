"""storeroom.testing: memory backends that vanish after the test."""

from __future__ import annotations

from storeroom import FileObject, ObstoreBackend, StorageRegistry, storages
from storeroom.testing import memory_backends, registry_snapshot


def test_memory_backends_register_and_restore() -> None:
    registry = StorageRegistry()
    real = registry.register_backend(ObstoreBackend("private", "file:///tmp/never-used"))
    with memory_backends("private", "public", registry=registry) as backends:
        assert registry.get_backend("private") is backends["private"]
        assert registry.default_key == "private"
        FileObject(backend="public", filename="a.txt", content=b"x", registry=registry).save()
        assert backends["public"].get("a.txt") == b"x"
    assert registry.get_backend("private") is real
    assert not registry.is_registered("public")


def test_each_use_starts_empty() -> None:
    with memory_backends("test") as first:
        FileObject(backend="test", filename="a.txt", content=b"x").save()
        assert first["test"].exists("a.txt")
    with memory_backends("test") as second:
        assert not second["test"].exists("a.txt")
    assert not storages.is_registered("test")


def test_registry_snapshot_undoes_registrations() -> None:
    with registry_snapshot():
        storages.register_backend(ObstoreBackend("temporary", "memory://"))
    assert not storages.is_registered("temporary")
