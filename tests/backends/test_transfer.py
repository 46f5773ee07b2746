"""The verified transfer module: streamed and server-side copies, each mismatch caught."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storeroom import ObstoreBackend
from storeroom.backends import transfer
from storeroom.backends.base import PutResult, WriteOptions
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.errors import ConfigurationError, IntegrityError, ObjectNotFound

DATA = b"0123456789" * 30_000  # 300 kB: several chunks


class FlippingStore(ObstoreBackend):
    """A real memory store that stores a different last byte than it was sent (bit rot)."""

    def _write(self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions) -> PutResult:
        data = body if isinstance(body, bytes) else b"".join(body)
        return super()._write(path, data[:-1] + bytes([data[-1] ^ 1]), opts)

    async def _write_async(
        self, path: str, body: bytes | AsyncIterator[bytes], opts: WriteOptions
    ) -> PutResult:
        data = body if isinstance(body, bytes) else b"".join([c async for c in body])
        return await super()._write_async(path, data[:-1] + bytes([data[-1] ^ 1]), opts)


class TruncatingStore(ObstoreBackend):
    """A real memory store that loses the last byte of every object it stores."""

    def _write(self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions) -> PutResult:
        data = body if isinstance(body, bytes) else b"".join(body)
        return super()._write(path, data[:-1], opts)


def test_digest_streams_and_names_its_algorithm() -> None:
    chunks = iter([DATA[:1000], DATA[1000:]])
    found = transfer.digest(chunks, "md5")
    assert found.size == len(DATA)
    assert found.checksum == "md5:" + hashlib.md5(DATA).hexdigest()
    assert transfer.algorithm_of("sha512:abc") == "sha512"
    assert transfer.algorithm_of(None) == "sha256"
    with pytest.raises(ConfigurationError, match="'crc99' is not available"):
        transfer.new_hash("crc99")


def test_digest_object_matches_the_checksum_recorded_at_save() -> None:
    store = ObstoreBackend("mem", "memory://")
    saved = store.put("a.bin", DATA)
    found = transfer.digest_object(store, "a.bin", transfer.algorithm_of(saved.checksum))
    assert found.checksum == saved.checksum and found.size == len(DATA)
    with pytest.raises(ObjectNotFound):
        transfer.digest_object(store, "missing.bin")


async def test_async_digest_equals_sync_digest() -> None:
    store = ObstoreBackend("mem", "memory://")
    store.put("a.bin", DATA)
    assert await transfer.digest_object_async(store, "a.bin") == transfer.digest_object(
        store, "a.bin"
    )


def test_streamed_copy_between_backends_is_verified_with_the_recorded_algorithm(
    tmp_path: Path,
) -> None:
    source = ObstoreBackend("mem", "memory://")
    destination = FSSpecBackend("fs", "file", prefix=str(tmp_path))
    saved = source.put("a.bin", DATA, checksum="md5")
    copied = transfer.copy(
        source,
        "a.bin",
        destination,
        "b/a.bin",
        size=saved.size,
        checksum=saved.checksum,
        content_type="application/pdf",
        verify_read=True,
    )
    assert copied.checksum == saved.checksum and copied.checksum.startswith("md5:")
    assert copied.size == len(DATA) and not copied.server_side
    assert (tmp_path / "b" / "a.bin").read_bytes() == DATA


def test_a_source_that_no_longer_matches_its_record_is_not_copied() -> None:
    source = ObstoreBackend("src", "memory://")
    destination = ObstoreBackend("dst", "memory://")
    saved = source.put("a.bin", DATA)
    source.put("a.bin", DATA[:-1] + b"X")  # same size, different bytes
    with pytest.raises(IntegrityError, match="not its recorded (blake3|sha256):.*copy was deleted"):
        transfer.copy(
            source, "a.bin", destination, "a.bin", size=saved.size, checksum=saved.checksum
        )
    assert not destination.exists("a.bin")
    with pytest.raises(IntegrityError, match="found more than the 5 bytes recorded"):
        transfer.copy(source, "a.bin", destination, "a.bin", size=5)
    assert not destination.exists("a.bin")
    big = len(BIG)  # recorded larger than a whole copy takes: streamed, and measured whole
    source.put("big.bin", BIG + b"!")
    with pytest.raises(IntegrityError, match=f"read {big + 1} bytes, but {big} are recorded"):
        transfer.copy(source, "big.bin", destination, "big.bin", size=big)
    assert not destination.exists("big.bin")


def test_a_store_that_loses_bytes_is_caught_by_the_size_check() -> None:
    source = ObstoreBackend("src", "memory://")
    destination = TruncatingStore("dst", "memory://")
    source.put("a.txt", b"hello")
    with pytest.raises(IntegrityError, match="has 4 bytes after the copy, expected 5"):
        transfer.copy(source, "a.txt", destination, "a.txt")
    assert not destination.exists("a.txt")


def test_a_store_that_changes_bytes_is_caught_by_reading_back() -> None:
    source = ObstoreBackend("src", "memory://")
    destination = FlippingStore("dst", "memory://")
    source.put("a.txt", b"hello")
    # Same size: the HEAD check cannot see it; reading back can.
    assert transfer.copy(source, "a.txt", destination, "unchecked.txt").size == 5
    with pytest.raises(IntegrityError, match="reads back different bytes"):
        transfer.copy(source, "a.txt", destination, "a.txt", verify_read=True)
    assert not destination.exists("a.txt")


async def test_async_copy_catches_what_the_sync_copy_catches() -> None:
    source = ObstoreBackend("src", "memory://")
    destination = FlippingStore("dst", "memory://")
    await source.put_async("a.txt", b"hello")
    with pytest.raises(IntegrityError, match="reads back different bytes"):
        await transfer.copy_async(source, "a.txt", destination, "a.txt", verify_read=True)
    assert not await destination.exists_async("a.txt")
    good = ObstoreBackend("good", "memory://")
    sync = transfer.copy(source, "a.txt", good, "s.txt", verify_read=True)
    asynchronous = await transfer.copy_async(source, "a.txt", good, "a.txt", verify_read=True)
    assert (sync.size, sync.checksum) == (asynchronous.size, asynchronous.checksum)


def test_within_one_backend_the_store_copies_and_the_size_is_checked() -> None:
    store = ObstoreBackend("mem", "memory://")
    saved = store.put("a.bin", DATA)
    copied = transfer.copy(store, "a.bin", store, "b.bin", size=saved.size, checksum=saved.checksum)
    assert copied.server_side and copied.checksum == saved.checksum
    assert store.get("b.bin") == DATA
    with pytest.raises(IntegrityError, match="expected 3"):
        transfer.copy(store, "a.bin", store, "c.bin", size=3)
    assert not store.exists("c.bin")
    with pytest.raises(ConfigurationError, match="onto itself"):
        transfer.copy(store, "a.bin", store, "a.bin")
    with pytest.raises(ConfigurationError, match="'nope' is not available"):
        transfer.copy(store, "a.bin", store, "d.bin", checksum="nope:00")
    assert not store.exists("d.bin")


async def test_existing_copy_keeps_only_a_verified_copy() -> None:
    source = ObstoreBackend("src", "memory://")
    destination = ObstoreBackend("dst", "memory://")
    saved = await source.put_async("a.txt", b"hello")
    assert await transfer.existing_copy_async(source, "a.txt", destination, "a.txt") is None
    await destination.put_async("a.txt", b"hellO")
    assert await transfer.existing_copy_async(source, "a.txt", destination, "a.txt") is None
    assert (
        transfer.existing_copy(source, "a.txt", destination, "a.txt", checksum=saved.checksum)
        is None
    )
    await destination.put_async("a.txt", b"hello")
    kept = transfer.existing_copy(
        source, "a.txt", destination, "a.txt", size=5, checksum=saved.checksum
    )
    assert kept is not None and kept.checksum == saved.checksum
    found = await transfer.existing_copy_async(source, "a.txt", destination, "a.txt")
    assert found is not None and found.size == 5
    assert destination.get("a.txt") == b"hello"  # nothing deleted


class DroppingSource(ObstoreBackend):
    """A real memory store whose reads drop the connection after ``good`` 256 KiB chunks."""

    good = 6
    sent = 0

    def _read(self, path: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        chunks = super()._read(path, start, end, chunk_size)

        def dropping() -> Iterator[bytes]:
            sent = 0
            for chunk in chunks:
                for start in range(0, len(chunk), 256 * 1024):
                    if sent == self.good:
                        raise ConnectionResetError("connection reset by peer")
                    sent += 1
                    self.sent = sent
                    yield chunk[start : start + 256 * 1024]

        return dropping()


class FailingStore(ObstoreBackend):
    """A real memory store whose writes fail after taking ``good`` chunks of the body."""

    good = 2
    taken = 0

    def _write(self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions) -> PutResult:
        if isinstance(body, bytes):
            return super()._write(path, body, opts)
        for number, _ in enumerate(body):
            self.taken = number + 1
            if self.taken == self.good:
                raise PermissionError("disk quota exceeded")
        raise AssertionError("the body should have been longer")


def _transfer_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "storeroom-transfer"]


BIG = bytes(range(256)) * 16_384  # 4 MiB: a multipart write with 1 MiB parts


def test_a_large_copy_between_two_obstore_stores_streams_in_parts() -> None:
    # A sync obstore write reads its body inside obstore's runtime; a sync obstore stream
    # read there would panic. The transfer reads the source in its own thread.
    source = ObstoreBackend("src", "memory://")
    destination = ObstoreBackend("dst", "memory://")
    saved = source.put("big.bin", BIG)
    copied = transfer.copy(
        source,
        "big.bin",
        destination,
        "big.bin",
        size=saved.size,
        checksum=saved.checksum,
        chunk_size=1024 * 1024,
        verify_read=True,
    )
    assert copied.checksum == saved.checksum and destination.get("big.bin") == BIG
    assert _transfer_threads() == []


def test_a_source_that_drops_mid_copy_fails_the_copy_and_leaves_nothing(tmp_path: Path) -> None:
    source = DroppingSource("src", "memory://")
    destination = ObstoreBackend("dst", f"file://{tmp_path}")
    source.put("big.bin", BIG)
    with pytest.raises(Exception, match="connection reset") as caught:
        transfer.copy(source, "big.bin", destination, "big.bin", chunk_size=1024 * 1024)
    assert not isinstance(caught.value, IntegrityError)
    assert not destination.exists("big.bin")
    assert list(tmp_path.rglob("*")) == []  # no partial file either
    assert _transfer_threads() == []


def test_a_destination_that_fails_mid_copy_stops_the_reader() -> None:
    source = DroppingSource("src", "memory://")
    source.good = 10**9  # 256 KiB chunks, never dropping
    destination = FailingStore("dst", "memory://")
    source.put("big.bin", BIG)
    with pytest.raises(Exception, match="disk quota exceeded"):
        transfer.copy(source, "big.bin", destination, "big.bin", chunk_size=1024 * 1024)
    assert destination.taken == 2
    assert _transfer_threads() == []
    assert source.sent < len(BIG) // (256 * 1024)  # the reader stopped early
    assert not destination.exists("big.bin")


def test_file_copy_to_handles_files_larger_than_one_part() -> None:
    from storeroom import FileObject, StorageRegistry

    registry = StorageRegistry()
    registry.register_backend(ObstoreBackend("a", "memory://"))
    registry.register_backend(ObstoreBackend("b", "memory://"))
    original = FileObject(backend="a", filename="big.bin", content=BIG, registry=registry).save()
    copy = original.copy_to("b", chunk_size=1024 * 1024)
    assert copy.checksum == original.checksum and copy.get_content() == BIG


async def test_a_create_only_copy_never_replaces_what_is_there() -> None:
    from storeroom.errors import ObjectExists

    store = ObstoreBackend("mem", "memory://")
    other = ObstoreBackend("other", "memory://")
    store.put("a.txt", b"new")
    store.put("b.txt", b"kept")
    other.put("b.txt", b"kept too")
    with pytest.raises(ObjectExists):
        transfer.copy(store, "a.txt", store, "b.txt", overwrite=False)  # within one backend
    with pytest.raises(ObjectExists):
        await transfer.copy_async(store, "a.txt", other, "b.txt", overwrite=False)
    assert store.get("b.txt") == b"kept" and other.get("b.txt") == b"kept too"
    created = transfer.copy(store, "a.txt", store, "c.txt", overwrite=False)
    assert not created.server_side and store.get("c.txt") == b"new"


async def _copy(
    asynchronous: bool,
    ends: tuple[ObstoreBackend, str, ObstoreBackend, str],
    **options: Any,
) -> transfer.Transfer:
    """``transfer.copy`` or its async twin, with the same arguments."""
    if asynchronous:
        return await transfer.copy_async(*ends, **options)
    return transfer.copy(*ends, **options)


class CountingLocal(ObstoreBackend):
    """A real local-disk store that counts what it is asked to read and how it is written."""

    def __init__(self, key: str, url: str) -> None:
        super().__init__(key, url)
        self.read_bytes = 0
        self.reads = 0
        self.bodies: list[str] = []

    def _read(self, path: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        self.reads += 1
        chunks = list(super()._read(path, start, end, chunk_size))
        self.read_bytes += sum(map(len, chunks))
        return iter(chunks)

    async def _read_async(
        self, path: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        self.reads += 1
        chunks = [c async for c in await super()._read_async(path, start, end, chunk_size)]
        self.read_bytes += sum(map(len, chunks))

        async def again() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return again()

    def _write(self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions) -> PutResult:
        self.bodies.append(type(body).__name__)
        return super()._write(path, body, opts)

    async def _write_async(
        self, path: str, body: bytes | AsyncIterator[bytes], opts: WriteOptions
    ) -> PutResult:
        self.bodies.append(type(body).__name__)
        return await super()._write_async(path, body, opts)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_small_object_is_copied_in_one_read_and_one_write_and_read_back_once(
    tmp_path: Path, asynchronous: bool
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    source = CountingLocal("src", f"file://{tmp_path / 'src'}")
    destination = CountingLocal("dst", f"file://{tmp_path / 'dst'}")
    saved = source.put("a/b.bin", DATA)
    source.reads = source.read_bytes = 0
    copied = await _copy(
        asynchronous,
        (source, "a/b.bin", destination, "a/b.bin"),
        size=saved.size,
        checksum=saved.checksum,
        verify_read=True,
        overwrite=False,
    )
    assert (copied.size, copied.checksum) == (len(DATA), saved.checksum)
    assert (source.reads, source.read_bytes) == (1, len(DATA))
    assert destination.bodies == ["bytes"]  # one create-only PUT of the whole body
    assert (destination.reads, destination.read_bytes) == (1, len(DATA))
    assert (tmp_path / "dst" / "a" / "b.bin").read_bytes() == DATA


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_an_object_larger_than_its_record_is_not_read_whole(
    tmp_path: Path, asynchronous: bool
) -> None:
    """A record saying 10 bytes for a 4 MiB object (a replaced file, a tampered table)."""
    source = CountingLocal("src", f"file://{tmp_path}")
    destination = ObstoreBackend("dst", "memory://")
    source.put("big.bin", BIG)
    source.read_bytes = 0
    with pytest.raises(IntegrityError, match="found more than the 10 bytes recorded"):
        await _copy(asynchronous, (source, "big.bin", destination, "big.bin"), size=10)
    assert source.read_bytes == 11
    assert not destination.exists("big.bin")


async def test_empty_and_exactly_limit_sized_objects_copy_both_ways(tmp_path: Path) -> None:
    source = ObstoreBackend("src", f"file://{tmp_path}")
    destination = ObstoreBackend("dst", "memory://")
    limit = b"x" * transfer.WHOLE_COPY_LIMIT
    for name, data in [("empty", b""), ("limit", limit), ("over", limit + b"y")]:
        saved = source.put(name, data)
        for i, asynchronous in enumerate((False, True)):
            copied = await _copy(
                asynchronous,
                (source, name, destination, f"{name}{i}"),
                size=saved.size,
                checksum=saved.checksum,
                verify_read=True,
            )
            assert copied.size == len(data) and destination.get(f"{name}{i}") == data


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_ranged_reads_of_local_files_match_the_memory_store(
    tmp_path: Path, asynchronous: bool
) -> None:
    local = ObstoreBackend("local", f"file://{tmp_path}")
    memory = ObstoreBackend("mem", "memory://")
    for store in (local, memory):
        store.put("a.txt", b"hello")
    for start, end in [(0, 5), (0, 10), (2, 4), (2, None), (4, 99)]:
        found = []
        for store in (local, memory):
            if asynchronous:
                found.append(await store.get_async("a.txt", start=start, end=end))
            else:
                found.append(store.get("a.txt", start=start, end=end))
        assert found[0] == found[1] == b"hello"[start:end], (start, end)
    for store in (local, memory):
        with pytest.raises(Exception) as caught:
            store.get("a.txt", start=7, end=9)
        assert "range" in str(caught.value).lower(), caught.value
        with pytest.raises(ObjectNotFound):
            store.get("missing.txt", start=0, end=3)
