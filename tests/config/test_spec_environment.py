# ruff: noqa: I001  (the specification's code is kept as written, imports included)
"""The specification's "Environment-Based" snippet, imports changed, and storeroom's
``configure_from_env`` reading the same variables: both register working backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from storeroom import BackendError, FileObject
from storeroom import ObstoreBackend as _ObstoreBackend
from storeroom.config import configure_from_env

# --- specification, "Configuration Strategies / Environment-Based" (imports changed) -------
import os
from storeroom import storages
from storeroom.backends.obstore import ObstoreBackend


def configure_storage_from_env():
    """Configure storage from environment variables."""
    storage_backend = os.environ.get("STORAGE_BACKEND", "local")

    if storage_backend == "s3":
        storages.register_backend(
            ObstoreBackend(
                key="default",
                fs=f"s3://{os.environ['S3_BUCKET']}/",
                aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                aws_region=os.environ.get("AWS_REGION", "us-east-1"),
            )
        )
    elif storage_backend == "minio":
        # MinIO S3-compatible storage
        storages.register_backend(
            ObstoreBackend(
                key="default",
                fs=f"s3://{os.environ['MINIO_BUCKET']}/",
                aws_access_key_id=os.environ.get("MINIO_ACCESS_KEY"),
                aws_secret_access_key=os.environ.get("MINIO_SECRET_KEY"),
                aws_endpoint=os.environ.get("MINIO_ENDPOINT", "http://localhost:9000"),
                aws_region=os.environ.get("MINIO_REGION", "us-east-1"),
                aws_allow_http=True,  # MinIO local development
            )
        )
    elif storage_backend == "gcs":
        storages.register_backend(
            ObstoreBackend(
                key="default",
                fs=f"gs://{os.environ['GCS_BUCKET']}/",
                google_service_account=os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"),
            )
        )
    elif storage_backend == "azure":
        storages.register_backend(
            ObstoreBackend(
                key="default",
                fs=f"az://{os.environ['AZURE_CONTAINER']}/",
                azure_storage_connection_string=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
            )
        )
    else:  # local
        from storeroom.backends.fsspec import FSSpecBackend

        storages.register_backend(
            FSSpecBackend(
                key="default",
                fs="file",
                prefix=os.environ.get("UPLOAD_DIR", "/var/app/uploads"),
            )
        )


# --- end of specification ------------------------------------------------------------------

CONFIGURE: dict[str, Callable[[], Any]] = {
    "spec-snippet": configure_storage_from_env,
    "storeroom.config": configure_from_env,
}
both = pytest.mark.parametrize("configure", list(CONFIGURE.values()), ids=list(CONFIGURE))


def _s3_object(server: Any, bucket: str, key: str) -> bytes:
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


@both
def test_s3_form_saves_into_the_bucket(
    configure: Callable[[], Any],
    s3_env: Any,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    round_trip: Any,
) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("S3_BUCKET", s3_bucket)
    configure()
    saved = round_trip("default")
    assert _s3_object(s3_env, s3_bucket, saved.path) == saved.get_content()


@both
def test_minio_form_reaches_its_endpoint_over_http(
    configure: Callable[[], Any],
    moto_server: Any,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    round_trip: Any,
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORAGE_BACKEND", "minio")
    monkeypatch.setenv("MINIO_BUCKET", s3_bucket)
    monkeypatch.setenv("MINIO_ACCESS_KEY", moto_server.access_key)
    monkeypatch.setenv("MINIO_SECRET_KEY", moto_server.secret_key)
    monkeypatch.setenv("MINIO_ENDPOINT", moto_server.endpoint)
    configure()
    saved = round_trip("default")
    assert _s3_object(moto_server, s3_bucket, saved.path) == saved.get_content()


@both
def test_local_form_writes_into_upload_dir(
    configure: Callable[[], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    round_trip: Any,
) -> None:
    monkeypatch.delenv("STORAGE_BACKEND", raising=False)
    monkeypatch.setenv("UPLOAD_DIR", str(tmp_path / "uploads"))
    configure()
    saved = round_trip("default")
    assert (tmp_path / "uploads" / saved.path).read_bytes() == saved.get_content()


@both
def test_gcs_form_registers_without_network(
    configure: Callable[[], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unused_port: int,
) -> None:
    # The service account points the store at a closed local port: registration succeeds
    # (nothing is contacted), the first real request fails.
    account = tmp_path / "service-account.json"
    account.write_text(
        json.dumps(
            {
                "gcs_base_url": f"http://127.0.0.1:{unused_port}",
                "disable_oauth": True,
                "client_email": "",
                "private_key": "",
                "private_key_id": "",
            }
        )
    )
    monkeypatch.setenv("STORAGE_BACKEND", "gcs")
    monkeypatch.setenv("GCS_BUCKET", "product-images")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(account))
    configure()
    backend = storages.get_backend("default")
    assert isinstance(backend, _ObstoreBackend)
    assert (backend.kind, backend.location) == ("gcs", "gs://product-images/")
    # A store built with the same options (plus allow_http and no retries) does try the port.
    probe = _ObstoreBackend(
        "probe",
        "gs://product-images/",
        google_service_account=str(account),
        google_allow_http=True,
        retry_config={"max_retries": 0},
    )
    with pytest.raises(BackendError, match=f"127.0.0.1:{unused_port}"):
        FileObject(backend=probe, filename="x.txt", content=b"x").save()


@both
def test_azure_form_round_trips_through_azurite(
    configure: Callable[[], Any],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    round_trip: Any,
) -> None:
    server, container = azurite(request)
    monkeypatch.setenv("STORAGE_BACKEND", "azure")
    monkeypatch.setenv("AZURE_CONTAINER", container)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
    configure()
    round_trip("default")


def azurite(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """The shared Azurite fixtures (they skip, or fail under CI, when Azurite cannot run)."""
    return request.getfixturevalue("azurite_server"), request.getfixturevalue("azure_container")
