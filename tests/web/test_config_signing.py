"""Signing configured through storeroom.config (files and environment)."""

from __future__ import annotations

import pytest

from storeroom import FileObject, StorageRegistry
from storeroom.config import BackendSpec, InvalidBackendSpec, configure_from_env, register_specs

SECRET = "config-secret-0123456789abcdef"


def test_spec_with_signing_secret_signs_local_urls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = StorageRegistry()
    register_specs(
        [
            BackendSpec(
                key="uploads",
                type="local",
                path=str(tmp_path),
                signing_secret=SECRET,
                signing_base_url="https://app.example.com/files",
            )
        ],
        registry,
    )
    f = FileObject(backend="uploads", filename="a.txt", content=b"x", registry=registry).save()
    assert f.sign(expires_in=60).startswith("https://app.example.com/files/uploads/a.txt?")
    assert SECRET not in repr(registry.get_backend("uploads").url_signer)


def test_signing_from_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = StorageRegistry()
    configure_from_env(
        registry,
        {
            "STORAGE__UPLOADS__URL": f"file://{tmp_path}",
            "STORAGE__UPLOADS__SIGNING_SECRET": SECRET,
            "STORAGE__UPLOADS__SIGNING_BASE_URL": "http://127.0.0.1:8000/files",
        },
    )
    url = FileObject(backend="uploads", filename="b.txt", registry=registry).sign(for_upload=True)
    assert url.startswith("http://127.0.0.1:8000/files/uploads/b.txt?") and "method=PUT" in url


def test_signing_secret_without_base_url_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidBackendSpec, match="signing_base_url") as caught:
        register_specs(
            [BackendSpec(key="uploads", type="local", path=str(tmp_path), signing_secret=SECRET)],
            StorageRegistry(),
        )
    assert SECRET not in str(caught.value)


def test_short_signing_secret_is_rejected_without_showing_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidBackendSpec, match="16 bytes") as caught:
        register_specs(
            [
                BackendSpec(
                    key="uploads",
                    type="local",
                    path=str(tmp_path),
                    signing_secret="tiny-secret",
                    signing_base_url="http://x/files",
                )
            ],
            StorageRegistry(),
        )
    assert "tiny-secret" not in str(caught.value)
