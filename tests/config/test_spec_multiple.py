# ruff: noqa: I001  (the specification's code is kept as written, imports included)
"""The specification's "Multiple Backend Strategies" snippets, imports changed, and the same
backends described as a storeroom configuration file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from storeroom import ObstoreBackend as _ObstoreBackend
from storeroom.config import configure_from_file

# --- specification, "Backend per Use Case" (imports changed) -------------------------------
import os
from storeroom import storages
from storeroom.backends.obstore import ObstoreBackend
from storeroom.backends.fsspec import FSSpecBackend


def configure_multiple_backends():
    """Configure different backends for different use cases."""
    # User uploads on S3
    storages.register_backend(
        ObstoreBackend(
            key="user-uploads",
            fs="s3://user-uploads/",
            aws_region="us-west-2",
        )
    )

    # Product images on GCS
    storages.register_backend(
        ObstoreBackend(
            key="product-images",
            fs="gs://product-images/",
        )
    )

    # Documents on Azure
    storages.register_backend(
        ObstoreBackend(
            key="documents",
            fs="az://documents/",
            azure_storage_connection_string=os.environ["AZURE_STORAGE_CONNECTION_STRING"],
        )
    )

    # Temporary files locally
    storages.register_backend(
        FSSpecBackend(
            key="temp",
            fs="file",
            prefix="/tmp/uploads",
        )
    )


# --- specification, "Backend per Environment" ------------------------------------------------
def configure_environment_backends(environment: str):
    """Configure backends based on environment."""
    if environment == "production":
        # Production: cloud storage
        storages.register_backend(
            ObstoreBackend(
                key="default",
                fs="s3://production-uploads/",
                aws_region="us-west-2",
            )
        )
    elif environment == "staging":
        # Staging: separate bucket
        storages.register_backend(
            ObstoreBackend(
                key="default",
                fs="s3://staging-uploads/",
                aws_region="us-west-2",
            )
        )
    else:
        # Development/testing: local storage
        from storeroom.backends.fsspec import FSSpecBackend

        storages.register_backend(
            FSSpecBackend(
                key="default",
                fs="file",
                prefix="/tmp/dev-uploads",
            )
        )


# --- end of specification ------------------------------------------------------------------

# A fake account for the registration-only case; Azurite's well-known development key.
FAKE_AZURE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


def _azure_connection_string(request: pytest.FixtureRequest) -> str | None:
    server = request.getfixturevalue("azurite_server")
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(server.connection_string)
    try:
        client.create_container("documents")
    except ResourceExistsError:
        pass
    return str(server.connection_string)


@pytest.fixture
def scratch_dirs() -> Any:
    """The snippets write below /tmp/uploads and /tmp/dev-uploads: remove what the test
    created there."""
    created = []
    for path in (Path("/tmp/uploads"), Path("/tmp/dev-uploads")):
        if not path.exists():
            created.append(path)
    yield
    for path in created:
        shutil.rmtree(path, ignore_errors=True)


def test_backend_per_use_case(
    s3_env: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    round_trip: Any,
    scratch_dirs: None,
) -> None:
    s3_env.create_bucket("user-uploads")
    azurite = _azure_connection_string(request)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite or FAKE_AZURE)
    configure_multiple_backends()
    assert storages.registered_backends() == ["documents", "product-images", "temp", "user-uploads"]
    round_trip("user-uploads")
    temp = round_trip("temp")
    assert (Path("/tmp/uploads") / temp.path).read_bytes() == temp.get_content()
    storages.get_backend("temp").delete(temp.path)
    images = storages.get_backend("product-images")
    assert isinstance(images, _ObstoreBackend) and images.kind == "gcs"
    if azurite:
        round_trip("documents")


@pytest.mark.parametrize("environment", ["production", "staging", "development"])
def test_backend_per_environment(
    environment: str, s3_env: Any, round_trip: Any, scratch_dirs: None
) -> None:
    s3_env.create_bucket("production-uploads")
    s3_env.create_bucket("staging-uploads")
    configure_environment_backends(environment)
    saved = round_trip("default")
    location = storages.get_backend("default").location
    expected = {
        "production": "s3://production-uploads/",
        "staging": "s3://staging-uploads/",
        "development": "file:///tmp/dev-uploads",
    }[environment]
    assert location == expected
    storages.get_backend("default").delete(saved.path)


USE_CASES_TOML = """
[[storage.backends]]
key = "user-uploads"
type = "s3"
bucket = "user-uploads"
region = "us-west-2"

[[storage.backends]]
key = "product-images"
type = "gcs"
bucket = "product-images"

[[storage.backends]]
key = "documents"
type = "azure"
container = "documents"
azure_storage_connection_string = "{connection_string}"

[[storage.backends]]
key = "temp"
type = "local"
path = "{temp}"
"""


def test_backend_per_use_case_as_a_file(
    s3_env: Any, request: pytest.FixtureRequest, tmp_path: Path, round_trip: Any
) -> None:
    s3_env.create_bucket("user-uploads")
    azurite = _azure_connection_string(request)
    path = tmp_path / "storage.toml"
    path.write_text(
        USE_CASES_TOML.format(connection_string=azurite or FAKE_AZURE, temp=tmp_path / "temp")
    )
    configure_from_file(path)
    assert storages.registered_backends() == ["documents", "product-images", "temp", "user-uploads"]
    round_trip("user-uploads")
    round_trip("temp")
    if azurite:
        round_trip("documents")
