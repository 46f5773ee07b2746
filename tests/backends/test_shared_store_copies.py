"""Server-side copies between two backends on one bucket (S3 on moto, Azure on Azurite).

A copy between two prefixes of one bucket is made by the store: no byte passes through this
process (counted by a recording proxy on S3), the create-only form leaves what is already
there untouched, and the verified copy still reads the result back against the record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storeroom import ObstoreBackend
from storeroom.backends import transfer
from storeroom.errors import ConfigurationError, IntegrityError, ObjectExists, ObjectNotFound
from storeroom.orm.migration import CopyItem, copy_objects
from tests.servers.proxy import RecordingProxy

DATA = b"shared bucket " * 300_000  # 4.2 MB: S3 copies create-only from 4 MiB on
SMALL = b"shared bucket " * 1000


def _s3(moto: Any, bucket: str, prefix: str, endpoint: str, **extra: Any) -> ObstoreBackend:
    return ObstoreBackend(
        f"s3-{prefix}",
        f"s3://{bucket}/{prefix}",
        aws_access_key_id=moto.access_key,
        aws_secret_access_key=moto.secret_key,
        aws_endpoint=endpoint,
        aws_region=moto.region,
        aws_allow_http=True,
        **extra,
    )


@pytest.fixture
def s3_pair(moto_server: Any, s3_bucket: str) -> Iterator[tuple[Any, Any, RecordingProxy]]:
    """Two backends on one bucket (prefixes ``old`` and ``new``) that copy create-only."""
    proxy = RecordingProxy(moto_server.endpoint).start()
    conditional = {"aws_copy_if_not_exists": "multipart"}
    old = _s3(moto_server, s3_bucket, "old", proxy.endpoint, **conditional)
    new = _s3(moto_server, s3_bucket, "new", proxy.endpoint, **conditional)
    yield old, new, proxy
    proxy.stop()


@pytest.mark.s3
async def test_a_copy_between_prefixes_of_one_bucket_is_made_by_s3(
    s3_pair: tuple[ObstoreBackend, ObstoreBackend, RecordingProxy],
    moto_server: Any,
    s3_bucket: str,
) -> None:
    old, new, proxy = s3_pair
    saved = old.put("a/file.bin", DATA)
    assert new.copies_from(old, create_only=True, size=len(DATA))
    proxy.clear()
    copied = transfer.copy(
        old,
        "a/file.bin",
        new,
        "b/file.bin",
        size=saved.size,
        checksum=saved.checksum,
        overwrite=False,
        verify_read=True,
    )
    assert copied.server_side and copied.checksum == saved.checksum
    assert new.get("b/file.bin") == DATA
    # The source was never read here: the copy is requests about the destination only
    # (the multipart copy of a create-only write, then the read-back of the copy).
    reads_of_source = [r for r in proxy.requests if r.method == "GET" and "/old/" in r.path]
    assert reads_of_source == []
    assert any(r.method == "PUT" and "/new/b/file.bin" in r.path for r in proxy.requests)

    # Below 4 MiB a create-only copy streams: the multipart copy costs more than it saves.
    old.put("a/small.bin", SMALL)
    assert not new.copies_from(old, create_only=True, size=len(SMALL))
    assert new.copies_from(old, size=len(SMALL))  # a replacing copy is one request at any size
    small = transfer.copy(old, "a/small.bin", new, "b/small.bin", size=len(SMALL), overwrite=False)
    assert not small.server_side and new.get("b/small.bin") == SMALL

    # Create-only: a second copy finds the object and changes nothing.
    old.put("a/other.bin", DATA[::-1])
    with pytest.raises(ObjectExists, match="b/file.bin"):
        new.copy_from(old, "a/other.bin", "b/file.bin", create_only=True)
    with pytest.raises(ObjectExists):
        await new.copy_from_async(old, "a/other.bin", "b/file.bin", create_only=True)
    assert new.get("b/file.bin") == DATA
    # The refused copies were multipart copies completed conditionally: none is left open
    # (its parts would be billed, invisibly).
    assert moto_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

    # A missing source is named with its own backend; a copy onto itself is refused.
    with pytest.raises(ObjectNotFound, match="'a/missing.bin' does not exist in backend 's3-old'"):
        new.copy_from(old, "a/missing.bin", "b/missing.bin", size=len(DATA))
    with pytest.raises(ObjectNotFound, match="backend 's3-old'"):
        await new.copy_from_async(old, "a/missing.bin", "b/missing.bin", size=len(DATA))
    with pytest.raises(ConfigurationError, match="onto itself"):
        new.copy_from(new, "b/file.bin", "b/file.bin")

    # A replacing copy, async, and to a path of its own.
    await new.copy_from_async(old, "a/other.bin", "b/file.bin")
    assert new.get("b/file.bin") == DATA[::-1]


@pytest.mark.s3
def test_a_server_side_copy_is_still_verified_against_the_record(
    s3_pair: tuple[ObstoreBackend, ObstoreBackend, RecordingProxy],
) -> None:
    old, new, _proxy = s3_pair
    old.put("a/file.bin", DATA)
    wrong = "sha256:" + "0" * 64  # the row's record says other bytes were saved
    with pytest.raises(IntegrityError, match="reads back different bytes"):
        transfer.copy(
            old,
            "a/file.bin",
            new,
            "b/file.bin",
            size=len(DATA),
            checksum=wrong,
            overwrite=False,
            verify_read=True,
        )
    assert not new.exists("b/file.bin")  # the mismatching copy was deleted


@pytest.mark.s3
def test_only_stores_that_share_the_bucket_copy_server_side(
    moto_server: Any, s3_bucket: str
) -> None:
    endpoint = moto_server.endpoint
    plain_old = _s3(moto_server, s3_bucket, "old", endpoint)
    plain_new = _s3(moto_server, s3_bucket, "new", endpoint)
    # Without a conditional copy configured, only replacing copies are server-side.
    assert plain_new.copies_from(plain_old, size=10)
    assert not plain_new.copies_from(plain_old, create_only=True, size=10)
    with pytest.raises(ConfigurationError, match="cannot make server-side create-only"):
        plain_old.put("x.bin", b"0123456789")
        plain_new.copy_from(plain_old, "x.bin", "y.bin", create_only=True)
    # How each one writes does not matter: the destination's conditional copy does.
    conditional_new = _s3(
        moto_server, s3_bucket, "new", endpoint, aws_copy_if_not_exists="multipart"
    )
    assert conditional_new.copies_from(plain_old, create_only=True, size=len(DATA))
    # The size must be known and fit one request; other buckets and credentials never share.
    assert not plain_new.copies_from(plain_old, size=None)
    assert not plain_new.copies_from(plain_old, size=5 * 1024**3 + 1)
    other_bucket = _s3(moto_server, moto_server.create_bucket(s3_bucket + "-b"), "new", endpoint)
    assert not other_bucket.copies_from(plain_old, size=10)
    other_key = ObstoreBackend(
        "s3-other-key",
        f"s3://{s3_bucket}/new",
        aws_access_key_id="someone-else",
        aws_secret_access_key=moto_server.secret_key,
        aws_endpoint=endpoint,
        aws_region=moto_server.region,
        aws_allow_http=True,
    )
    assert not other_key.copies_from(plain_old, size=10)
    local = ObstoreBackend("mem", "memory://")
    assert not plain_new.copies_from(local, size=10) and not local.copies_from(plain_new, size=10)
    # Without a conditional copy, a create-only transfer streams through a conditional PUT.
    copied = transfer.copy(plain_old, "x.bin", plain_new, "y.bin", size=10, overwrite=False)
    assert not copied.server_side and plain_new.get("y.bin") == b"0123456789"


@pytest.mark.s3
async def test_a_migration_between_prefixes_copies_server_side_and_resumes(
    s3_pair: tuple[ObstoreBackend, ObstoreBackend, RecordingProxy], tmp_path: Any
) -> None:
    from storeroom.orm.migration import MigrationState

    old, new, proxy = s3_pair
    items = []
    for i in range(8):
        saved = old.put(f"docs/{i:02d}.bin", DATA[: len(DATA) - i])
        items.append(CopyItem(saved.path, saved.path, saved.size, saved.checksum))
    proxy.clear()
    with MigrationState(tmp_path / "journal", old.key, new.key) as state:
        report = await copy_objects(old, new, items[:5], state=state)
    assert report.copied == 5 and not report.failed
    # A crash after the store copied but before the journal recorded: the create-only
    # copy finds it, verifies it and adopts it instead of copying twice.
    new.copy_from(old, items[5].source, items[5].destination, create_only=True)
    with MigrationState(tmp_path / "journal", old.key, new.key) as state:  # a new run
        report = await copy_objects(old, new, items, state=state)
    # (skipped counts the adopted copy too)
    assert (report.copied, report.skipped, report.adopted) == (2, 6, 1) and not report.failed
    reads_of_source = [r for r in proxy.requests if r.method == "GET" and "/old/" in r.path]
    assert reads_of_source == []
    for item in items:
        assert new.get(item.destination) == old.get(item.source)


@pytest.mark.azure
async def test_a_copy_between_prefixes_of_one_container_is_made_by_azure(
    azurite_server: Any, azure_container: str
) -> None:
    def backend(prefix: str) -> ObstoreBackend:
        return ObstoreBackend(
            f"az-{prefix}",
            f"az://{azure_container}/{prefix}",
            azure_storage_connection_string=azurite_server.connection_string,
        )

    old, new = backend("old"), backend("new")
    saved = old.put("a/file.bin", DATA)
    assert new.copies_from(old, create_only=True, size=len(DATA))
    copied = await transfer.copy_async(
        old,
        "a/file.bin",
        new,
        "b/file.bin",
        size=saved.size,
        checksum=saved.checksum,
        overwrite=False,
        verify_read=True,
    )
    assert copied.server_side and new.get("b/file.bin") == DATA
    old.put("a/other.bin", b"different")
    with pytest.raises(ObjectExists):
        new.copy_from(old, "a/other.bin", "b/file.bin", create_only=True)
    assert new.get("b/file.bin") == DATA
    assert not new.copies_from(old, create_only=True, size=256 * 1024**2 + 1)
