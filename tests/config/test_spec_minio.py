# ruff: noqa: I001, F811  (the specification's code is kept as written, imports included)
"""The specification's "MinIO / Application Configuration" snippets, imports changed: the
``.env`` file, the settings dataclass and ``configure_minio_storage``, run against moto (an
S3-compatible server on plain HTTP, as MinIO is in development)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from storeroom.config import configure_from_env

# --- specification, ".env" -------------------------------------------------------------------
DOTENV = """
# .env
PUBLIC_STORAGE_URI=s3://public/
PUBLIC_STORAGE_OPTIONS={"aws_access_key_id":"minioadmin","aws_secret_access_key":"minioadmin","aws_endpoint":"http://localhost:9000","aws_region":"us-east-1","aws_allow_http":true}

PRIVATE_STORAGE_URI=s3://private/
PRIVATE_STORAGE_OPTIONS={"aws_access_key_id":"minioadmin","aws_secret_access_key":"minioadmin","aws_endpoint":"http://localhost:9000","aws_region":"us-east-1","aws_allow_http":true}
"""

# --- specification, "Settings dataclass" -----------------------------------------------------
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StorageSettings:
    """Storage configuration settings."""

    PUBLIC_STORAGE_KEY: str = field(default="public")
    PUBLIC_STORAGE_URI: str = field(default="s3://public/")
    PUBLIC_STORAGE_OPTIONS: dict[str, Any] = field(default_factory=dict)

    PRIVATE_STORAGE_KEY: str = field(default="private")
    PRIVATE_STORAGE_URI: str = field(default="s3://private/")
    PRIVATE_STORAGE_OPTIONS: dict[str, Any] = field(default_factory=dict)


# --- specification, "Backend registration" (imports changed) ---------------------------------
from storeroom import storages
from storeroom.backends.obstore import ObstoreBackend


def configure_minio_storage(settings: StorageSettings):
    """Configure MinIO storage backends."""
    # Public storage
    storages.register_backend(
        ObstoreBackend(
            key=settings.PUBLIC_STORAGE_KEY,
            fs=settings.PUBLIC_STORAGE_URI,
            **settings.PUBLIC_STORAGE_OPTIONS,
        )
    )

    # Private storage
    storages.register_backend(
        ObstoreBackend(
            key=settings.PRIVATE_STORAGE_KEY,
            fs=settings.PRIVATE_STORAGE_URI,
            **settings.PRIVATE_STORAGE_OPTIONS,
        )
    )


# --- end of specification ------------------------------------------------------------------


def dotenv(server: Any) -> dict[str, str]:
    """The specification's .env, pointed at the test server (moto accepts any credentials)."""
    text = DOTENV.replace("http://localhost:9000", server.endpoint)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


@pytest.fixture
def minio(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for bucket in ("public", "private"):
        moto_server.create_bucket(bucket)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    return dotenv(moto_server)


def test_spec_dataclass_registers_both_buckets(minio: dict[str, str], round_trip: Any) -> None:
    settings = StorageSettings(
        PUBLIC_STORAGE_URI=minio["PUBLIC_STORAGE_URI"],
        PUBLIC_STORAGE_OPTIONS=json.loads(minio["PUBLIC_STORAGE_OPTIONS"]),
        PRIVATE_STORAGE_URI=minio["PRIVATE_STORAGE_URI"],
        PRIVATE_STORAGE_OPTIONS=json.loads(minio["PRIVATE_STORAGE_OPTIONS"]),
    )
    configure_minio_storage(settings)
    assert storages.registered_backends() == ["private", "public"]
    round_trip("public")
    round_trip("private")


def test_dotenv_variables_register_both_buckets(
    minio: dict[str, str], monkeypatch: pytest.MonkeyPatch, round_trip: Any
) -> None:
    for name, value in minio.items():
        monkeypatch.setenv(name, value)
    backends = configure_from_env()
    assert sorted(b.key for b in backends) == ["private", "public"]
    saved = round_trip("public")
    # The bytes are in the public bucket, not the private one.
    assert storages.get_backend("public").exists(saved.path)
    assert not storages.get_backend("private").exists(saved.path)
    round_trip("private")


def test_production_minio_snippet_registers_without_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --- specification, "Production Configuration" (imports changed) ---
    # Production settings
    MINIO_ENDPOINT = "https://minio.example.com"
    MINIO_ACCESS_KEY = "production-access-key"  # Use secrets manager
    MINIO_SECRET_KEY = "production-secret-key"  # Use secrets manager

    storages.register_backend(
        ObstoreBackend(
            key="default",
            fs="s3://production-bucket/",
            aws_access_key_id=MINIO_ACCESS_KEY,
            aws_secret_access_key=MINIO_SECRET_KEY,
            aws_endpoint=MINIO_ENDPOINT,
            aws_region="us-east-1",
            aws_allow_http=False,  # HTTPS in production
        )
    )
    # --- end of specification ---
    backend = storages.get_backend("default")
    assert backend.location == "s3://production-bucket/"
    assert MINIO_SECRET_KEY not in repr(backend)
