"""One fixture, ``backend``, parametrized over every backend the behavioural suite covers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storeroom import ObstoreBackend, StorageBackend

BackendFactory = Callable[[pytest.FixtureRequest, Path], StorageBackend]


def _obstore_memory(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    return ObstoreBackend("obstore-memory", "memory://")


def _obstore_local(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    return ObstoreBackend("obstore-local", f"file://{tmp_path}/root")


def _fsspec_memory(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    from storeroom.backends.fsspec import FSSpecBackend

    # fsspec's memory filesystem is process-global: a unique prefix isolates each test.
    return FSSpecBackend("fsspec-memory", "memory", prefix=f"/t-{uuid.uuid4().hex}")


def _fsspec_local(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    from storeroom.backends.fsspec import FSSpecBackend

    return FSSpecBackend("fsspec-local", "file", prefix=str(tmp_path / "root"))


def _obstore_s3(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    server = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    return ObstoreBackend("obstore-s3", f"s3://{bucket}/prefix", **server.obstore_options())


def _fsspec_s3(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    import s3fs

    from storeroom.backends.fsspec import FSSpecBackend

    server = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    fs = s3fs.S3FileSystem(
        key=server.access_key,
        secret=server.secret_key,
        endpoint_url=server.endpoint,
        client_kwargs={"region_name": server.region},
        skip_instance_cache=True,
    )
    return FSSpecBackend("fsspec-s3", fs, prefix=f"{bucket}/prefix")


def _obstore_azure(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    server = request.getfixturevalue("azurite_server")
    container = request.getfixturevalue("azure_container")
    return ObstoreBackend("obstore-azure", f"az://{container}/prefix", **server.obstore_options())


def _fsspec_gcs(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    # Without this, gcsfs probes each bucket for hierarchical namespaces and hangs 60 s.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    from storeroom.backends.fsspec import FSSpecBackend

    server = request.getfixturevalue("fake_gcs_server")
    bucket = request.getfixturevalue("gcs_bucket")
    fs = gcsfs.GCSFileSystem(endpoint_url=server.endpoint, token="anon", skip_instance_cache=True)
    return FSSpecBackend("fsspec-gcs", fs, prefix=f"{bucket}/prefix")


FACTORIES: dict[str, BackendFactory] = {
    "obstore-memory": _obstore_memory,
    "obstore-local": _obstore_local,
    "fsspec-memory": _fsspec_memory,
    "fsspec-local": _fsspec_local,
    "obstore-s3": _obstore_s3,
    "fsspec-s3": _fsspec_s3,
    "obstore-azure": _obstore_azure,
    "fsspec-gcs": _fsspec_gcs,
}

MARKS = {
    "obstore-s3": [pytest.mark.s3],
    "fsspec-s3": [pytest.mark.s3],
    "obstore-azure": [pytest.mark.azure],
    "fsspec-gcs": [pytest.mark.gcs],
}


@pytest.fixture(
    params=[pytest.param(name, marks=MARKS.get(name, [])) for name in FACTORIES],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    """A fresh, empty backend of each kind."""
    yield FACTORIES[request.param](request, tmp_path)


LOCAL_KINDS = ("obstore-memory", "obstore-local", "fsspec-memory", "fsspec-local")


@pytest.fixture(params=LOCAL_KINDS)
def local_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    """The backends that need no server (for the slower, property-based tests)."""
    return FACTORIES[request.param](request, tmp_path)
