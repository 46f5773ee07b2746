"""The behaviour every backend must show, run against each kind of backend."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storeroom import (
    ConfigurationError,
    ObjectNotFound,
    RangeNotSatisfiable,
    StorageBackend,
    StoreroomError,
    UnsupportedContent,
    checksums,
    events,
)
from storeroom.errors import ContentUnreadable

MiB = 1024 * 1024


def _payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


class AsyncFile:
    """A file object whose read is a coroutine, like Starlette's UploadFile."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    async def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)


# -- writing and reading -------------------------------------------------------------------


def test_put_bytes_then_read_back_and_measure(backend: StorageBackend) -> None:
    data = _payload(10_000)
    result = backend.put("docs/a.bin", data, content_type="application/pdf")
    assert result.size == len(data)
    assert result.checksum == checksums.digest(checksums.DEFAULT_ALGORITHM, data)
    assert backend.get("docs/a.bin") == data
    info = backend.head("docs/a.bin")
    assert info.size == len(data)
    assert info.path == "docs/a.bin"
    assert info.last_modified is not None
    if backend.stores_attributes:
        assert info.content_type == "application/pdf"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d, p: d, id="bytes"),
        pytest.param(lambda d, p: bytearray(d), id="bytearray"),
        pytest.param(lambda d, p: memoryview(d), id="memoryview"),
        pytest.param(lambda d, p: io.BytesIO(d), id="fileobj"),
        pytest.param(lambda d, p: p, id="path"),
        pytest.param(lambda d, p: iter([d[:100], b"", d[100:]]), id="iterator"),
        pytest.param(lambda d, p: [d[:7], d[7:]], id="list"),
    ],
)
def test_put_accepts_every_sync_content_type(backend: StorageBackend, tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    data = _payload(3000, seed=1)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    backend.put("x/content.bin", make(data, source))
    assert backend.get("x/content.bin") == data


def test_put_str_is_utf8(backend: StorageBackend) -> None:
    backend.put("hello.txt", "grüße")
    assert backend.get("hello.txt") == "grüße".encode()


def test_put_empty_content(backend: StorageBackend) -> None:
    result = backend.put("empty", b"")
    assert result.size == 0
    assert backend.get("empty") == b""
    assert backend.head("empty").size == 0


async def test_put_async_accepts_async_sources(backend: StorageBackend, tmp_path: Path) -> None:
    data = _payload(50_000, seed=2)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    source = tmp_path / "s.bin"
    source.write_bytes(data)
    for name, content in [
        ("agen", chunks()),
        ("afile", AsyncFile(data)),
        ("path", source),
        ("fileobj", io.BytesIO(data)),
        ("iter", iter([data])),
    ]:
        result = await backend.put_async(f"async/{name}", content)
        assert result.size == len(data), name
        assert await backend.get_async(f"async/{name}") == data, name


def test_sync_put_rejects_async_sources_with_a_clear_error(backend: StorageBackend) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    source = chunks()
    with pytest.raises(UnsupportedContent, match="save_async"):
        backend.put("a", source)
    with pytest.raises(UnsupportedContent, match="save_async"):
        backend.put("a", AsyncFile(b"x"))
    with pytest.raises(UnsupportedContent, match="int"):
        backend.put("a", 42)  # type: ignore[arg-type]
    assert not backend.exists("a")


def test_put_missing_source_path_says_which_file(backend: StorageBackend, tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    with pytest.raises(ContentUnreadable, match="nope.bin"):
        backend.put("a", missing)


def test_multipart_upload_of_content_larger_than_chunk_size(backend: StorageBackend) -> None:
    data = _payload(11 * MiB, seed=3)
    result = backend.put("big/file.bin", io.BytesIO(data), chunk_size=5 * MiB, max_concurrency=4)
    assert result.size == len(data)
    assert backend.head("big/file.bin").size == len(data)
    assert hashlib.sha256(backend.get("big/file.bin")).digest() == hashlib.sha256(data).digest()


async def test_multipart_upload_async(backend: StorageBackend) -> None:
    data = _payload(6 * MiB, seed=4)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), MiB):
            yield data[i : i + MiB]

    result = await backend.put_async("big/async.bin", chunks(), chunk_size=5 * MiB)
    assert result.size == len(data)
    assert await backend.get_async("big/async.bin") == data


def test_stream_yields_chunks_of_at_least_chunk_size(backend: StorageBackend) -> None:
    data = _payload(3 * MiB + 17, seed=5)
    backend.put("s.bin", data)
    chunks = list(backend.stream("s.bin", chunk_size=MiB))
    assert b"".join(chunks) == data
    assert all(len(c) >= MiB for c in chunks[:-1])


async def test_stream_async(backend: StorageBackend) -> None:
    data = _payload(2 * MiB, seed=6)
    await backend.put_async("s.bin", data)
    received = [c async for c in await backend.stream_async("s.bin", chunk_size=256 * 1024)]
    assert b"".join(received) == data


def test_byte_ranges(backend: StorageBackend) -> None:
    data = bytes(range(256)) * 4
    backend.put("r.bin", data)
    assert backend.get("r.bin", start=10, end=20) == data[10:20]
    assert backend.get("r.bin", start=1000) == data[1000:]
    assert backend.get("r.bin", start=1000, end=5000) == data[1000:]
    assert backend.get("r.bin", start=5, end=5) == b""
    with pytest.raises(RangeNotSatisfiable):
        backend.get("r.bin", start=2000)
    with pytest.raises(ConfigurationError, match="start"):
        backend.get("r.bin", start=10, end=5)


async def test_byte_ranges_async(backend: StorageBackend) -> None:
    data = bytes(range(256))
    await backend.put_async("r.bin", data)
    assert await backend.get_async("r.bin", start=100, end=110) == data[100:110]
    assert await backend.get_async("r.bin", start=250) == data[250:]


def test_overwrite_replaces_content(backend: StorageBackend) -> None:
    backend.put("o.txt", b"first version")
    backend.put("o.txt", b"second")
    assert backend.get("o.txt") == b"second"
    assert backend.head("o.txt").size == 6


# -- missing objects, delete, list, copy ---------------------------------------------------


def test_missing_object_is_object_not_found_and_file_not_found(backend: StorageBackend) -> None:
    for call in (
        lambda: backend.get("missing/x"),
        lambda: backend.head("missing/x"),
        lambda: backend.stream("missing/x"),
        lambda: backend.get("missing/x", start=3, end=3),
    ):
        with pytest.raises(ObjectNotFound, match="missing/x") as caught:
            call()
        assert isinstance(caught.value, FileNotFoundError)
        assert isinstance(caught.value, StoreroomError)
        assert backend.key in str(caught.value)
    assert backend.exists("missing/x") is False


async def test_missing_object_async(backend: StorageBackend) -> None:
    with pytest.raises(FileNotFoundError):
        await backend.get_async("missing")
    with pytest.raises(ObjectNotFound):
        await backend.head_async("missing")
    assert await backend.exists_async("missing") is False


def test_delete_is_idempotent(backend: StorageBackend) -> None:
    backend.put("d/x", b"1")
    backend.delete("d/x")
    assert not backend.exists("d/x")
    backend.delete("d/x")


async def test_delete_async(backend: StorageBackend) -> None:
    await backend.put_async("d/x", b"1")
    await backend.delete_async("d/x")
    assert not await backend.exists_async("d/x")
    await backend.delete_async("d/never-was")


def test_list_with_and_without_prefix(backend: StorageBackend) -> None:
    for name in ("a/1", "a/2", "b/1", "top"):
        backend.put(name, name.encode())
    assert sorted(i.path for i in backend.list()) == ["a/1", "a/2", "b/1", "top"]
    listed = sorted(backend.list("a"), key=lambda i: i.path)
    assert [i.path for i in listed] == ["a/1", "a/2"]
    assert [i.size for i in listed] == [3, 3]


def test_list_rows_gives_what_list_gives_in_batches(backend: StorageBackend) -> None:
    # The bulk form maintenance reads: the same objects, fields and order as list().
    # Past one batch of 1,000 where writes are cheap (a network emulator takes a minute).
    local = backend.location.startswith(("file:", "memory:", "/"))
    count = 1203 if local else 23
    for i in range(count):
        backend.put(f"r/{i % 7}/{i:05d}", b"x" * (i % 5))
    backend.put("other", b"-")
    seen: list[events.StorageEvent] = []
    with events.subscribed(seen.append):
        batches = list(backend.list_rows("r"))
    rows = [row for batch in batches for row in batch]
    assert all(batches) and max(len(b) for b in batches) <= 1000
    expected = [
        (
            info.path,
            info.size,
            info.last_modified.timestamp() if info.last_modified else None,
            info.etag,
            info.version,
        )
        for info in backend.list("r")
    ]
    assert rows == expected and len(rows) == count
    listing = [e for e in seen if e.operation == "list"]
    assert len(listing) == 1 and listing[0].size == count and listing[0].error is None


async def test_list_rows_async_gives_what_list_rows_gives(backend: StorageBackend) -> None:
    # Past one batch of 1,000 where writes are cheap, as the sync test.
    count = 1003 if backend.location.startswith(("file:", "memory:", "/")) else 5
    for i in range(count):
        backend.put(f"q/{i:05d}", b"x" * (i % 5))
    batches = [batch async for batch in backend.list_rows_async("q")]
    rows = [row for batch in batches for row in batch]
    assert all(batches) and max(len(b) for b in batches) <= 1000
    assert sorted(rows) == sorted(row for batch in backend.list_rows("q") for row in batch)
    assert [row[:2] for row in sorted(rows)] == [(f"q/{i:05d}", i % 5) for i in range(count)]


async def test_list_async(backend: StorageBackend) -> None:
    await backend.put_async("l/1", b"x")
    await backend.put_async("l/2", b"yy")
    found = {i.path: i.size async for i in backend.list_async("l")}
    assert found == {"l/1": 1, "l/2": 2}


def test_list_of_empty_backend_is_empty(backend: StorageBackend) -> None:
    assert list(backend.list()) == []


def test_copy_within_backend(backend: StorageBackend) -> None:
    backend.put("src/x", b"copy me")
    backend.copy("src/x", "dst/y")
    assert backend.get("dst/y") == b"copy me"
    assert backend.get("src/x") == b"copy me"
    with pytest.raises(ObjectNotFound):
        backend.copy("src/missing", "dst/z")


async def test_copy_async(backend: StorageBackend) -> None:
    await backend.put_async("src/x", b"copy me")
    await backend.copy_async("src/x", "dst/y")
    assert await backend.get_async("dst/y") == b"copy me"


# -- failure leaves nothing behind ---------------------------------------------------------


class Boom(Exception):
    pass


def _failing_stream(data: bytes, fail_after: int) -> Iterator[bytes]:
    for i in range(0, len(data), MiB):
        if i >= fail_after:
            raise Boom("source failed")
        yield data[i : i + MiB]


@pytest.mark.parametrize("size", [MiB // 2, 7 * MiB], ids=["single-put", "multipart"])
def test_failed_source_leaves_no_partial_object(backend: StorageBackend, size: int) -> None:
    data = _payload(size + MiB, seed=7)
    with pytest.raises(Exception) as caught:
        backend.put("partial.bin", _failing_stream(data, size), chunk_size=5 * MiB)
    assert "source failed" in str(caught.value) or isinstance(caught.value, Boom)
    assert not backend.exists("partial.bin")


def test_failed_overwrite_keeps_previous_version(backend: StorageBackend) -> None:
    backend.put("keep.bin", b"good")
    data = _payload(7 * MiB, seed=8)
    with pytest.raises(Exception):
        backend.put("keep.bin", _failing_stream(data, 6 * MiB), chunk_size=5 * MiB)
    assert backend.get("keep.bin") == b"good"


async def test_failed_async_source_leaves_no_partial_object(backend: StorageBackend) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield _payload(6 * MiB)
        raise Boom("source failed")

    with pytest.raises(Exception):
        await backend.put_async("partial-async.bin", chunks(), chunk_size=5 * MiB)
    assert not await backend.exists_async("partial-async.bin")


# -- signing -------------------------------------------------------------------------------


SIGNING_KINDS = {"obstore-s3", "obstore-azure", "fsspec-s3"}


def test_signed_download_url_serves_the_bytes(
    backend: StorageBackend, request: pytest.FixtureRequest
) -> None:
    kind = backend.key
    backend.put("signed/file.txt", b"signed content", content_type="text/plain")
    if kind == "fsspec-gcs":
        # gcsfs signs with a service account's key; the emulator runs anonymously.
        from storeroom import BackendError

        with pytest.raises(BackendError, match="credentials"):
            backend.sign("signed/file.txt")
        return
    if kind not in SIGNING_KINDS:
        from storeroom import SigningNotSupported

        with pytest.raises(SigningNotSupported, match=kind):
            backend.sign("signed/file.txt")
        return
    url = backend.sign("signed/file.txt", expires_in=300)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"signed content"


def test_signed_upload_url_accepts_a_put(backend: StorageBackend) -> None:
    if backend.key not in {"obstore-s3", "obstore-azure"}:
        from storeroom import SigningNotSupported

        with pytest.raises(SigningNotSupported, match=backend.key):
            backend.sign("signed/upload.bin", expires_in=300, for_upload=True)
        return
    url = backend.sign("signed/upload.bin", expires_in=300, for_upload=True)
    headers = {"Content-Type": "application/octet-stream"}
    if backend.key == "obstore-azure":
        headers["x-ms-blob-type"] = "BlockBlob"
    req = urllib.request.Request(url, data=b"uploaded", method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as response:
        assert response.status in (200, 201)
    assert backend.get("signed/upload.bin") == b"uploaded"


def test_sign_validates_expiry(backend: StorageBackend) -> None:
    with pytest.raises(ConfigurationError, match="expires_in"):
        backend.sign("x", expires_in=0)
    with pytest.raises(ConfigurationError, match="7 days"):
        backend.sign("x", expires_in=8 * 24 * 3600)


def test_tuning_arguments_are_validated(backend: StorageBackend) -> None:
    with pytest.raises(ConfigurationError, match="chunk_size"):
        backend.put("x", b"1", chunk_size=0)
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        backend.put("x", b"1", max_concurrency=0)


def test_repr_names_backend_without_secrets(backend: StorageBackend) -> None:
    text = repr(backend)
    assert backend.key in text
    for secret in ("testing", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"):
        assert secret not in text


def test_unicode_names_round_trip(backend: StorageBackend) -> None:
    name = "dossier/résumé 2024 (final).pdf"
    backend.put(name, b"x")
    assert backend.get(name) == b"x"
    assert [i.path for i in backend.list("dossier")] == [name]


def test_create_only_write_refuses_an_existing_object_and_leaves_it(
    backend: StorageBackend,
) -> None:
    from storeroom import ObjectExists

    backend.put("create/one.txt", b"first")
    with pytest.raises(ObjectExists, match="create/one.txt"):
        backend.put("create/one.txt", b"second", overwrite=False)
    assert backend.get("create/one.txt") == b"first"
    big = _payload(6 * MiB)
    with pytest.raises(ObjectExists):
        backend.put("create/one.txt", big, overwrite=False, chunk_size=5 * MiB)
    assert backend.get("create/one.txt") == b"first"
    backend.put("create/two.txt", b"new", overwrite=False)
    assert backend.get("create/two.txt") == b"new"


async def test_create_only_write_async_refuses_an_existing_object(
    backend: StorageBackend,
) -> None:
    from storeroom import ObjectExists

    await backend.put_async("create/a.txt", b"first")
    with pytest.raises(FileExistsError):
        await backend.put_async("create/a.txt", b"second", overwrite=False)
    assert await backend.get_async("create/a.txt") == b"first"
    with pytest.raises(ObjectExists):
        await backend.put_async(
            "create/a.txt", _payload(6 * MiB), overwrite=False, chunk_size=5 * MiB
        )
    assert await backend.get_async("create/a.txt") == b"first"
