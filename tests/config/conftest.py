"""Fixtures for the configuration tests: a clean registry, S3 environment, round trips."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storeroom import FileObject, StorageRegistry, storages


@pytest.fixture
def registry() -> Iterator[StorageRegistry]:
    """A fresh registry for code that takes one."""
    yield StorageRegistry()


@pytest.fixture(autouse=True)
def clean_storages() -> Iterator[None]:
    """The specification's snippets register on the global ``storages``: empty it around
    every test."""
    storages.clear()
    yield
    storages.clear()


@pytest.fixture
def s3_env(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point code that names no endpoint or credentials (as the specification's snippets do)
    at the moto server, through the variables obstore and boto3 read themselves."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.secret_key)
    monkeypatch.setenv("AWS_REGION", moto_server.region)
    return moto_server


RoundTrip = Callable[..., FileObject]


@pytest.fixture
def round_trip() -> RoundTrip:
    """Save a small file through the backend registered under ``key`` and read it back
    through a fresh FileObject; returns the saved FileObject."""

    def check(key: str, registry: StorageRegistry | None = None) -> FileObject:
        registry = registry or storages
        content = f"hello from {key} {uuid.uuid4().hex}".encode()
        saved = FileObject(
            backend=key, filename=f"{uuid.uuid4().hex}.txt", content=content, registry=registry
        )
        saved.save()
        assert saved.size == len(content)
        again = FileObject(backend=key, filename=saved.filename, path=saved.path, registry=registry)
        assert again.get_content() == content
        return saved

    return check


@pytest.fixture
def unused_port() -> int:
    """A local TCP port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
