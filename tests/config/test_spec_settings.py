# ruff: noqa: I001  (the specification's code is kept as written, imports included)
"""The specification's "Pydantic Settings" snippet, imports changed, and storeroom's own
``StorageSettings`` / ``StorageConfig`` reading the same kind of variables."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from storeroom.config import StorageConfig
from storeroom.config import StorageSettings as StoreroomSettings

# --- specification, "Pydantic Settings" (imports changed) -----------------------------------
from storeroom import storages
from pydantic import Field
from pydantic_settings import BaseSettings

with warnings.catch_warnings():
    # The snippet uses pydantic v1's ``class Config``, which v2 still honours with a warning.
    warnings.simplefilter("ignore")

    class StorageSettings(BaseSettings):
        """Storage configuration settings."""

        backend: str = Field(default="local")
        s3_bucket: str | None = Field(default=None)
        s3_region: str = Field(default="us-east-1")
        aws_access_key_id: str | None = Field(default=None)
        aws_secret_access_key: str | None = Field(default=None)
        upload_dir: str = Field(default="/var/app/uploads")

        class Config:
            env_prefix = "STORAGE_"


def configure_storage(settings: StorageSettings):
    """Configure storage from Pydantic settings."""
    if settings.backend == "s3":
        from storeroom.backends.obstore import ObstoreBackend

        storages.register_backend(
            ObstoreBackend(
                key="default",
                fs=f"s3://{settings.s3_bucket}/",
                aws_access_key_id=settings.aws_access_key_id,
                aws_secret_access_key=settings.aws_secret_access_key,
                aws_region=settings.s3_region,
            )
        )
    else:
        from storeroom.backends.fsspec import FSSpecBackend

        storages.register_backend(
            FSSpecBackend(
                key="default",
                fs="file",
                prefix=settings.upload_dir,
            )
        )


# --- end of specification ------------------------------------------------------------------


@pytest.fixture
def s3_settings_env(s3_env: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("STORAGE_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("STORAGE_AWS_ACCESS_KEY_ID", s3_env.access_key)
    monkeypatch.setenv("STORAGE_AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    return s3_bucket


def test_spec_settings_register_s3(s3_settings_env: str, round_trip: Any) -> None:
    configure_storage(StorageSettings())
    assert storages.get_backend("default").location == f"s3://{s3_settings_env}/"
    round_trip("default")


def test_spec_settings_register_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, round_trip: Any
) -> None:
    monkeypatch.setenv("STORAGE_UPLOAD_DIR", str(tmp_path))
    configure_storage(StorageSettings())
    saved = round_trip("default")
    assert (tmp_path / saved.path).exists()


@pytest.mark.parametrize("settings_class", [StoreroomSettings, StorageConfig])
def test_storeroom_settings_read_the_same_variables(
    settings_class: Any, s3_settings_env: str, round_trip: Any
) -> None:
    settings = (
        StoreroomSettings() if settings_class is StoreroomSettings else (StorageConfig.from_env())
    )
    backends = settings.register_backends()
    assert [b.location for b in backends] == [f"s3://{s3_settings_env}/"]
    round_trip("default")


@pytest.mark.parametrize("settings_class", [StoreroomSettings, StorageConfig])
def test_storeroom_settings_register_named_backends(
    settings_class: Any,
    s3_env: Any,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    round_trip: Any,
    registry: Any,
) -> None:
    monkeypatch.setenv(
        "STORAGE_BACKENDS",
        f'{{"uploads": {{"url": "s3://{s3_bucket}/uploads"}}, '
        f'"scratch": {{"type": "local", "path": "{tmp_path}", "default": true}}}}',
    )
    settings = (
        settings_class() if settings_class is StoreroomSettings else (StorageConfig.from_env())
    )
    settings.register_backends(registry)
    assert registry.registered_backends() == ["scratch", "uploads"]
    assert registry.default_key == "scratch"
    round_trip("uploads", registry)
    round_trip("scratch", registry)


def test_pydantic_settings_nested_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: Any, round_trip: Any
) -> None:
    monkeypatch.setenv("STORAGE_BACKENDS__SCRATCH__TYPE", "local")
    monkeypatch.setenv("STORAGE_BACKENDS__SCRATCH__PATH", str(tmp_path))
    StoreroomSettings().register_backends(registry)
    assert registry.registered_backends() == ["scratch"]
    round_trip("scratch", registry)


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("settings_class", [StoreroomSettings, StorageConfig])
def test_settings_repr_masks_secrets(settings_class: Any) -> None:
    settings = settings_class(
        backend="s3",
        s3_bucket="bkt",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key=SECRET,
        backends={"other": {"url": "s3://other/", "aws_secret_access_key": SECRET}},
    )
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in repr(settings.specs())
