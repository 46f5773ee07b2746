"""Databases and stores for the upload-session race tests (see ``tests/uploads/reports.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storeroom import ObstoreBackend, storages
from storeroom.signing import configure_signing
from tests.servers.databases import DatabaseUrls
from tests.servers.moto import MotoServer
from tests.uploads.reports import empty_tables, staging_s3


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseUrls]:
    """A database with empty upload-session and report tables."""
    if request.param == "sqlite":
        path = tmp_path / "db.sqlite"
        found = DatabaseUrls("sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}")
    else:
        found = request.getfixturevalue(f"{request.param}_url")
    with empty_tables(found) as ready:
        yield ready


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def row_locking(request: pytest.FixtureRequest) -> Iterator[DatabaseUrls]:
    """Like ``urls``, on the databases that lock rows (SQLite locks the whole database, so a
    second writer there waits for the driver's busy timeout, then fails, rather than queueing
    behind one row)."""
    with empty_tables(request.getfixturevalue(f"{request.param}_url")) as ready:
        yield ready


@pytest.fixture
def staged(moto_server: MotoServer, s3_bucket: str) -> ObstoreBackend:
    """Backend ``docs`` on moto's S3 without a static key: uploads go to a staging path."""
    return storages.register_backend(staging_s3(moto_server, s3_bucket))


@pytest.fixture
def local(tmp_path: Path) -> ObstoreBackend:
    """Backend ``docs`` on local disk behind storeroom's HMAC handler: create-only, no staging."""
    backend = storages.register_backend(ObstoreBackend("docs", f"file://{tmp_path}/store"))
    configure_signing(backend, secret="session-races-0123456789abcdef", base_url="/files")
    return backend
