"""Shared fixtures: real servers on 127.0.0.1, started once per test session.

A service that cannot run here skips its tests with a reason; with
STOREROOM_REQUIRE_SERVICES=1 (set by .ci/run) the same situation fails them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from storeroom import storages
from tests.servers import require_service
from tests.servers.azurite import AzuriteServer, start_azurite
from tests.servers.databases import MARIADB, POSTGRES, DatabaseUrls, check_connects, port_open
from tests.servers.gcs import FakeGcsServer, start_fake_gcs
from tests.servers.moto import MotoServer, start_moto


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's S3 server on 127.0.0.1 (in-process)."""
    try:
        server = start_moto()
    except ImportError as exc:
        require_service("moto S3 server", f"moto[server] is not installed ({exc})")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> str:
    """A new, empty bucket on the moto server."""
    return moto_server.create_bucket(_unique("bkt"))


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    """Azurite's blob service on 127.0.0.1 (node process, in-memory)."""
    try:
        server = start_azurite()
    except RuntimeError as exc:
        require_service("Azurite", str(exc))
    yield server
    server.stop()


@pytest.fixture
def azure_container(azurite_server: AzuriteServer) -> str:
    """A new, empty container on Azurite."""
    return azurite_server.create_container(_unique("ctr"))


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[FakeGcsServer]:
    """fake-gcs-server on 127.0.0.1 (in-memory)."""
    try:
        server = start_fake_gcs()
    except RuntimeError as exc:
        require_service("fake-gcs-server", str(exc))
    yield server
    server.stop()


@pytest.fixture
def gcs_bucket(fake_gcs_server: FakeGcsServer) -> str:
    """A new, empty bucket on the fake GCS server."""
    return fake_gcs_server.create_bucket(_unique("gbkt"))


def _database(urls: DatabaseUrls, port: int) -> DatabaseUrls:
    if not port_open(port):
        require_service(urls.name, f"nothing listens on 127.0.0.1:{port}")
    problem = check_connects(urls.sync)
    if problem:
        require_service(urls.name, problem)
    return urls


@pytest.fixture(scope="session")
def postgres_url() -> DatabaseUrls:
    """URLs of the PostgreSQL test database (psycopg / asyncpg)."""
    return _database(POSTGRES, 5432)


@pytest.fixture(scope="session")
def mariadb_url() -> DatabaseUrls:
    """URLs of the MariaDB test database (pymysql / aiomysql)."""
    return _database(MARIADB, 3306)


@pytest.fixture(autouse=True)
def _clean_default_registry() -> Iterator[None]:
    """Tests that register on the process-wide registry never leak into each other."""
    before = dict(storages._backends)
    yield
    storages._backends.clear()
    storages._backends.update(before)
