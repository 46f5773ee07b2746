"""Storage set-up shared by the framework tests: the specification's env-based start-up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storeroom import storages

SIGNING_SECRET = "framework-secret-0123456789abcdef"


def configure_storage_from_env() -> None:
    """The specification's start-up function, trimmed to its local branch (imports changed),
    plus HMAC signing so local files get working signed URLs."""
    from storeroom.backends.fsspec import FSSpecBackend
    from storeroom.signing import configure_signing

    backend = FSSpecBackend(
        key="default",
        fs="file",
        prefix=os.environ.get("UPLOAD_DIR", "/var/app/uploads"),
    )
    configure_signing(backend, secret=SIGNING_SECRET, base_url="http://testserver/files")
    storages.register_backend(backend, overwrite=True)


@pytest.fixture
def upload_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "uploads"
    monkeypatch.setenv("UPLOAD_DIR", str(directory))
    yield directory
    storages._backends.clear()
