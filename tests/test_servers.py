"""The test servers themselves work, checked with plain clients (no storeroom code involved)."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.ext.asyncio import create_async_engine

from tests.servers import require_service, services_required
from tests.servers.azurite import AzuriteServer
from tests.servers.databases import DatabaseUrls
from tests.servers.gcs import FakeGcsServer
from tests.servers.moto import MotoServer, start_moto


def _table_name() -> str:
    return f"servers_check_{uuid.uuid4().hex[:10]}"


@pytest.mark.s3
def test_moto_stores_and_returns_an_object(moto_server: MotoServer, s3_bucket: str) -> None:
    client = moto_server.client()
    client.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"hello s3", ContentType="text/plain")

    got = client.get_object(Bucket=s3_bucket, Key="a/b.txt")

    assert got["Body"].read() == b"hello s3"
    assert got["ContentType"] == "text/plain"
    assert moto_server.endpoint.startswith("http://127.0.0.1:")


@pytest.mark.s3
def test_s3_bucket_fixture_gives_a_new_empty_bucket_each_time(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    client = moto_server.client()
    assert client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
    assert s3_bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}


@pytest.mark.s3
def test_moto_reset_drops_buckets() -> None:
    # A private server: resetting the session's one would empty other tests' buckets.
    private = start_moto()
    try:
        name = private.create_bucket("reset-me")
        client = private.client()
        client.put_object(Bucket=name, Key="k", Body=b"x")

        private.reset()

        assert client.list_buckets()["Buckets"] == []
    finally:
        private.stop()


@pytest.mark.azure
def test_azurite_stores_and_returns_a_blob(
    azurite_server: AzuriteServer, azure_container: str
) -> None:
    from azure.storage.blob import BlobServiceClient, ContentSettings

    service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    blob = service.get_blob_client(azure_container, "a/b.txt")
    blob.upload_blob(b"hello azure", content_settings=ContentSettings(content_type="text/plain"))

    assert blob.download_blob().readall() == b"hello azure"
    assert blob.get_blob_properties().content_settings.content_type == "text/plain"
    assert azurite_server.endpoint.endswith("/devstoreaccount1")
    assert azurite_server.account_name == "devstoreaccount1"


@pytest.mark.azure
def test_azurite_rejects_a_wrong_account_key(
    azurite_server: AzuriteServer, azure_container: str
) -> None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.storage.blob import BlobServiceClient

    wrong = azurite_server.connection_string.replace(
        azurite_server.account_key, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
    )
    service = BlobServiceClient.from_connection_string(wrong, retry_total=0)

    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as caught:
        service.get_blob_client(azure_container, "x").upload_blob(b"x")
    assert caught.value.status_code == 403


@pytest.mark.gcs
def test_fake_gcs_serves_an_object_uploaded_through_its_json_api(
    fake_gcs_server: FakeGcsServer, gcs_bucket: str
) -> None:
    fake_gcs_server.upload(gcs_bucket, "a/b.txt", b"hello gcs", "text/plain")

    url = f"{fake_gcs_server.endpoint}/storage/v1/b/{gcs_bucket}/o/a%2Fb.txt"
    with urllib.request.urlopen(f"{url}?alt=media", timeout=10) as response:
        assert response.read() == b"hello gcs"
    with urllib.request.urlopen(url, timeout=10) as response:
        meta = json.load(response)
    assert meta["size"] == "9"
    assert meta["contentType"] == "text/plain"


@pytest.mark.postgres
def test_postgres_creates_a_table_and_queries_it(postgres_url: DatabaseUrls) -> None:
    _sync_roundtrip(postgres_url.sync)


@pytest.mark.postgres
async def test_postgres_async_driver_connects(postgres_url: DatabaseUrls) -> None:
    await _async_roundtrip(postgres_url.async_)


@pytest.mark.mariadb
def test_mariadb_creates_a_table_and_queries_it(mariadb_url: DatabaseUrls) -> None:
    _sync_roundtrip(mariadb_url.sync)


@pytest.mark.mariadb
async def test_mariadb_async_driver_connects(mariadb_url: DatabaseUrls) -> None:
    await _async_roundtrip(mariadb_url.async_)


def _table(metadata: MetaData) -> Table:
    return Table(
        _table_name(),
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50), nullable=False),
    )


def _sync_roundtrip(url: str) -> None:
    metadata = MetaData()
    table = _table(metadata)
    engine = create_engine(url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])
        with engine.connect() as conn:
            rows = conn.execute(select(table.c.name).order_by(table.c.id)).scalars().all()
        assert rows == ["one", "two"]
    finally:
        metadata.drop_all(engine)
        engine.dispose()


async def _async_roundtrip(url: str) -> None:
    metadata = MetaData()
    table = _table(metadata)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(table.insert(), [{"id": 7, "name": "seven"}])
        async with engine.connect() as conn:
            rows = (await conn.execute(select(table.c.name))).scalars().all()
        assert rows == ["seven"]
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()


def test_require_service_skips_or_fails_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREROOM_REQUIRE_SERVICES", "1")
    assert services_required()
    with pytest.raises(pytest.fail.Exception, match="thing unavailable: because"):
        require_service("thing", "because")

    monkeypatch.delenv("STOREROOM_REQUIRE_SERVICES")
    assert not services_required()
    with pytest.raises(pytest.skip.Exception, match="thing unavailable: because"):
        require_service("thing", "because")
