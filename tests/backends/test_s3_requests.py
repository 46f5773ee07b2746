"""What a save costs on S3, counted by a recording proxy between obstore and moto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storeroom import FileObject, ObstoreBackend
from tests.servers.proxy import RecordingProxy

pytestmark = pytest.mark.s3

MiB = 1024 * 1024


@pytest.fixture
def proxied_s3(moto_server, s3_bucket) -> Iterator[tuple[ObstoreBackend, RecordingProxy]]:  # type: ignore[no-untyped-def]
    proxy = RecordingProxy(moto_server.endpoint).start()
    backend = ObstoreBackend(
        "s3",
        f"s3://{s3_bucket}/",
        **{**moto_server.obstore_options(), "aws_endpoint": proxy.endpoint},
    )
    yield backend, proxy
    proxy.stop()


def test_small_save_is_exactly_one_put_and_no_head(proxied_s3) -> None:  # type: ignore[no-untyped-def]
    backend, proxy = proxied_s3
    for i in range(20):
        f = FileObject(backend=backend, filename=f"f{i}.txt", content=b"x" * 4096).save()
        assert f.size == 4096 and f.etag
    assert proxy.count("PUT") == 20
    assert proxy.count("HEAD") == 0
    assert proxy.count() == 20


async def test_small_async_save_is_exactly_one_put(proxied_s3) -> None:  # type: ignore[no-untyped-def]
    backend, proxy = proxied_s3
    await FileObject(backend=backend, filename="a.txt", content=b"abc").save_async()
    assert [(r.method, r.status) for r in proxy.requests] == [("PUT", 200)]


def test_large_save_is_one_multipart_upload(proxied_s3) -> None:  # type: ignore[no-untyped-def]
    backend, proxy = proxied_s3
    data = b"m" * (12 * MiB)
    FileObject(backend=backend, filename="big.bin").save(iter([data]), chunk_size=5 * MiB)
    methods = [(r.method, "uploads" in r.query, "uploadId" in r.query) for r in proxy.requests]
    assert methods[0] == ("POST", True, False)  # create the multipart upload
    assert methods[-1] == ("POST", False, True)  # complete it
    parts = [m for m in methods if m[0] == "PUT"]
    assert len(parts) == 3  # 5 + 5 + 2 MiB
    assert proxy.count("HEAD") == 0
    assert len(methods) == 5


def test_content_type_and_metadata_are_object_attributes(proxied_s3) -> None:  # type: ignore[no-untyped-def]
    backend, _proxy = proxied_s3
    FileObject(backend=backend, filename="r.pdf", metadata={"owner": "ann"}, content=b"%PDF").save()
    info = backend.head("r.pdf")
    assert info.content_type == "application/pdf"
    assert info.metadata.get("owner") == "ann"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_large_create_only_save_streams_as_multipart_after_one_head(  # type: ignore[no-untyped-def]
    proxied_s3, mode: str
) -> None:
    """obstore would buffer a conditional multipart write whole and send one PUT."""
    from storeroom import ObjectExists

    backend, proxy = proxied_s3
    chunks = [b"c" * MiB] * 12
    target = FileObject(backend=backend, filename="create.bin", path=f"create-{mode}.bin")
    if mode == "sync":
        target.save(iter(chunks), chunk_size=5 * MiB, overwrite=False)
    else:
        await target.save_async(iter(chunks), chunk_size=5 * MiB, overwrite=False)
    methods = [(r.method, "uploads" in r.query, "uploadId" in r.query) for r in proxy.requests]
    assert methods[0][0] == "HEAD"  # the path is free
    assert methods[1] == ("POST", True, False)  # then a streamed multipart upload
    assert len([m for m in methods if m[0] == "PUT"]) == 3
    assert target.size == 12 * MiB
    before = proxy.count()
    with pytest.raises(ObjectExists, match=f"create-{mode}.bin"):
        FileObject(backend=backend, filename="x", path=f"create-{mode}.bin").save(
            iter(chunks), chunk_size=5 * MiB, overwrite=False
        )
    assert [r.method for r in proxy.requests[before:]] == ["HEAD"]  # nothing uploaded
    assert backend.head(f"create-{mode}.bin").size == 12 * MiB
