"""Integrity: checksums verified on full reads and copies; S3 checksum headers on upload."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import blake3
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storeroom import (
    ConfigurationError,
    FileObject,
    IntegrityError,
    ObjectExists,
    ObstoreBackend,
    StorageBackend,
    StoredObject,
    checksums,
    storages,
)
from tests.servers.moto import MotoServer
from tests.servers.proxy import RecordingProxy


@pytest.mark.s3
def test_s3_checksum_algorithm_sends_a_checksum_the_server_verifies(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    proxy = RecordingProxy(moto_server.endpoint).start()
    try:
        backend = ObstoreBackend(
            "checked",
            f"s3://{s3_bucket}/",
            **{**moto_server.obstore_options(), "aws_endpoint": proxy.endpoint},
            aws_checksum_algorithm="SHA256",
        )
        FileObject(backend=backend, filename="c.txt", content=b"checked bytes").save()
    finally:
        proxy.stop()
    (put,) = proxy.requests
    assert put.method == "PUT" and "x-amz-checksum-sha256" in put.headers
    assert moto_server.client().get_object(Bucket=s3_bucket, Key="c.txt")["Body"].read() == (
        b"checked bytes"
    )


def test_corruption_in_the_store_is_detected_on_full_read_and_named() -> None:
    backend = ObstoreBackend("store", "memory://")
    f = FileObject(backend=backend, filename="ledger.csv", content=b"a,b\n1,2\n").save()
    backend.put("ledger.csv", b"a,b\n1,3\n")
    with pytest.raises(IntegrityError) as caught:
        f.get_content()
    assert "'ledger.csv'" in str(caught.value) and "'store'" in str(caught.value)


# -- every read path detects corruption, with every supported digest ------------------------

ALGORITHMS = checksums.supported_algorithms()
ORIGINAL = bytes(range(256)) * 64  # 16 KiB
CORRUPT = ORIGINAL[:100] + bytes([ORIGINAL[100] ^ 1]) + ORIGINAL[101:]  # same size


def _corrupted(backend: StorageBackend, algorithm: str, path: str = "doc.bin") -> FileObject:
    """A file saved with ``algorithm``, whose stored bytes were then flipped in place."""
    f = FileObject(backend=backend, filename=path, content=ORIGINAL).save(checksum=algorithm)
    assert f.checksum is not None and f.checksum.startswith(algorithm + ":")
    backend.put(path, CORRUPT, checksum=None)
    return f


def _read_through_reader(f: FileObject) -> bytes:
    with f.open(chunk_size=4096) as reader:
        return reader.read()


async def _read_through_async_reader(f: FileObject) -> bytes:
    async with await f.open_async(chunk_size=4096) as reader:
        return await reader.read()


async def _aread_chunks(f: FileObject) -> bytes:
    return b"".join([chunk async for chunk in await f.aiter_chunks(chunk_size=4096)])


SYNC_PATHS = {
    "get_content": lambda f: f.get_content(),
    "iter_chunks": lambda f: b"".join(f.iter_chunks(chunk_size=4096)),
    "open().read()": _read_through_reader,
}
ASYNC_PATHS = {
    "get_content_async": lambda f: f.get_content_async(),
    "aiter_chunks": _aread_chunks,
    "open_async().read()": _read_through_async_reader,
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("read", list(SYNC_PATHS))
@pytest.mark.parametrize("where", ["memory", "local"])
def test_every_sync_read_path_detects_corruption_with_every_digest(
    algorithm: str, read: str, where: str, tmp_path: Path
) -> None:
    backend = _backend(where, tmp_path)
    f = _corrupted(backend, algorithm)
    with pytest.raises(IntegrityError, match="checksum"):
        SYNC_PATHS[read](f)
    # The untouched original still reads back whole through the same path.
    backend.put("doc.bin", ORIGINAL, checksum=None)
    assert SYNC_PATHS[read](f) == ORIGINAL


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("read", list(ASYNC_PATHS))
@pytest.mark.parametrize("where", ["memory", "local"])
async def test_every_async_read_path_detects_corruption_with_every_digest(
    algorithm: str, read: str, where: str, tmp_path: Path
) -> None:
    backend = _backend(where, tmp_path)
    f = _corrupted(backend, algorithm)
    with pytest.raises(IntegrityError, match="checksum"):
        await ASYNC_PATHS[read](f)
    backend.put("doc.bin", ORIGINAL, checksum=None)
    assert await ASYNC_PATHS[read](f) == ORIGINAL


def _backend(where: str, tmp_path: Path) -> ObstoreBackend:
    if where == "local":
        return ObstoreBackend("disk", f"file://{tmp_path}/root")
    return ObstoreBackend("mem", "memory://")


@pytest.mark.parametrize("algorithm", ["blake3", "sha256", "md5", "xxh3-128"])
def test_copy_between_backends_refuses_corrupted_bytes(algorithm: str, tmp_path: Path) -> None:
    source = ObstoreBackend("src", "memory://")
    target = ObstoreBackend("dst", f"file://{tmp_path}/dst")
    f = _corrupted(source, algorithm)
    with pytest.raises(IntegrityError):
        f.copy_to(target)
    assert not target.exists("doc.bin")
    # A good copy keeps the recorded algorithm, so the records compare.
    source.put("doc.bin", ORIGINAL, checksum=None)
    copied = f.copy_to(target)
    assert copied.checksum == f.checksum and copied.get_content() == ORIGINAL


@pytest.mark.parametrize("algorithm", ["blake3", "sha256", "xxh3-128"])
async def test_async_copy_refuses_corrupted_bytes(algorithm: str) -> None:
    source, target = ObstoreBackend("src", "memory://"), ObstoreBackend("dst", "memory://")
    f = _corrupted(source, algorithm)
    with pytest.raises(IntegrityError):
        await f.copy_to_async(target)
    assert not await target.exists_async("doc.bin")


@pytest.mark.parametrize("algorithm", ["blake3", "sha256", "xxh3-128"])
@pytest.mark.parametrize("where", ["memory", "local"])
async def test_large_whole_reads_hashed_in_the_background_still_detect_corruption(
    algorithm: str, where: str, tmp_path: Path
) -> None:
    backend = _backend(where, tmp_path)
    big = os.urandom(9 * 1024 * 1024)  # past the background and the whole-read chunk sizes
    f = FileObject(backend=backend, filename="big.bin", content=big).save(checksum=algorithm)
    assert f.checksum == checksums.digest(algorithm, big)
    assert f.get_content() == big and await f.get_content_async() == big
    backend.put("big.bin", big[:-1] + bytes([big[-1] ^ 0xFF]), checksum=None)
    with pytest.raises(IntegrityError):
        f.get_content()
    with pytest.raises(IntegrityError):
        await f.get_content_async()
    backend.put("big.bin", big[:-1], checksum=None)  # truncated: caught by size
    with pytest.raises(IntegrityError, match="bytes"):
        f.get_content()


class _Base(DeclarativeBase):
    pass


class _Doc(_Base):
    __tablename__ = "integrity_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[Any] = mapped_column(StoredObject(backend="integrity-orm"))


def test_orm_read_back_detects_corruption(tmp_path: Path) -> None:
    backend = ObstoreBackend("integrity-orm", "memory://")
    storages.register_backend(backend, overwrite=True)
    engine = create_engine(f"sqlite:///{tmp_path}/orm.db")
    _Base.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.add(_Doc(id=1, file=FileObject(filename="r.bin", content=ORIGINAL)))
            session.commit()
        with Session(engine) as session:
            stored = session.get(_Doc, 1)
            assert stored is not None
            assert stored.file.get_content() == ORIGINAL
            backend.put(stored.file.path, CORRUPT, checksum=None)
        with Session(engine) as session:
            loaded = session.get(_Doc, 1)
            assert loaded is not None
            with pytest.raises(IntegrityError):
                loaded.file.get_content()
    finally:
        engine.dispose()
        storages._backends.pop("integrity-orm", None)


# -- old sha256 records, digest selection --------------------------------------------------


def test_old_sha256_records_still_verify_on_every_path() -> None:
    backend = ObstoreBackend("legacy", "memory://")
    backend.put("old.bin", ORIGINAL, checksum=None)
    record = "sha256:" + hashlib.sha256(ORIGINAL).hexdigest()
    old = FileObject.from_dict(
        {
            "backend": "legacy",
            "filename": "old.bin",
            "path": "old.bin",
            "size": len(ORIGINAL),
            "checksum": record,
        }
    )
    old.backend = backend
    assert old.get_content() == ORIGINAL
    assert b"".join(old.iter_chunks(chunk_size=1000)) == ORIGINAL
    assert _read_through_reader(old) == ORIGINAL
    wrong = FileObject(
        backend=backend,
        filename="old.bin",
        size=len(ORIGINAL),
        checksum="sha256:" + hashlib.sha256(b"other").hexdigest(),
    )
    with pytest.raises(IntegrityError, match="sha256:"):
        wrong.get_content()
    # Upper-case hex and algorithm names written by other tools compare equal.
    upper = FileObject(backend=backend, filename="old.bin", checksum=record.upper())
    assert upper.get_content() == ORIGINAL


def test_default_digest_is_blake3_and_sha256_stays_selectable() -> None:
    backend = ObstoreBackend("digests", "memory://")
    assert checksums.DEFAULT_ALGORITHM == "blake3"
    f = FileObject(backend=backend, filename="a.bin", content=b"abc").save()
    assert f.checksum == "blake3:" + blake3.blake3(b"abc").hexdigest()
    f = FileObject(backend=backend, filename="b.bin", content=b"abc").save(checksum="sha256")
    assert f.checksum == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    backend.checksum_algorithm = "sha256"
    f = FileObject(backend=backend, filename="c.bin", content=b"abc").save()
    assert f.checksum is not None and f.checksum.startswith("sha256:")
    assert backend.put("d.bin", b"abc", checksum=None).checksum is None


def test_unknown_digest_is_refused_before_anything_is_written() -> None:
    backend = ObstoreBackend("digests", "memory://")
    with pytest.raises(ConfigurationError, match="'crc99'.*supported: .*blake3.*sha256"):
        FileObject(backend=backend, filename="x.bin", content=b"x").save(checksum="crc99")
    assert not backend.exists("x.bin")
    with pytest.raises(IntegrityError, match="malformed"):
        FileObject(backend=backend, filename="x.bin", checksum="deadbeef").get_content()


@pytest.mark.parametrize("algorithm", ["blake3", "sha256", "xxh3-128"])
@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024 + 1])
async def test_every_content_kind_records_the_same_checksum_sync_and_async(
    algorithm: str, size: int, tmp_path: Path
) -> None:
    data = os.urandom(size)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    expected = checksums.digest(algorithm, data)
    backend = ObstoreBackend("kinds", "memory://")

    async def agen() -> Any:
        yield data

    kinds: list[Any] = [data, bytearray(data), memoryview(data), source, [data], iter([data])]
    for i, content in enumerate(kinds):
        result = backend.put(f"s{i}", content, checksum=algorithm)
        assert (result.size, result.checksum) == (size, expected)
    for i, content in enumerate([*kinds[:4], [data], iter([data]), agen()]):
        if isinstance(content, Path):
            content = source
        result = await backend.put_async(f"a{i}", content, checksum=algorithm)
        assert (result.size, result.checksum) == (size, expected)
    with source.open("rb") as fileobj:
        assert backend.put("file", fileobj, checksum=algorithm).checksum == expected
    with source.open("rb") as fileobj:
        assert (await backend.put_async("afile", fileobj, checksum=algorithm)).checksum == expected


def test_whole_bytes_save_that_fails_records_nothing(tmp_path: Path) -> None:
    backend = ObstoreBackend("disk", f"file://{tmp_path}/root")
    big = os.urandom(2 * 1024 * 1024)  # hashed in the background while written
    FileObject(backend=backend, filename="taken.bin", content=b"first").save()
    f = FileObject(backend=backend, filename="taken.bin", content=big)
    with pytest.raises(ObjectExists):
        f.save(overwrite=False)
    assert f.checksum is None and f.has_pending_content
    assert backend.get("taken.bin") == b"first"


# -- readers verify what they read front to back -------------------------------------------


def test_reader_verifies_after_seeking_around_and_not_on_partial_reads() -> None:
    backend = ObstoreBackend("readers", "memory://")
    f = FileObject(backend=backend, filename="doc.bin", content=ORIGINAL).save()
    with f.open(chunk_size=4096) as reader:  # intact: seeks and partial reads are quiet
        assert reader.read(50) == ORIGINAL[:50]
        reader.seek(8000)
        assert reader.read(10) == ORIGINAL[8000:8010]
        reader.seek(0)
        assert reader.read() == ORIGINAL
    backend.put("doc.bin", CORRUPT, checksum=None)
    with f.open(chunk_size=4096) as reader, pytest.raises(IntegrityError):
        reader.seek(12000)
        reader.read()  # the tail, fetched out of order: not yet verifiable
        reader.seek(0)
        reader.read()  # now every byte passed in order
    backend.put("doc.bin", ORIGINAL[:-10], checksum=None)
    with f.open(chunk_size=4096) as reader, pytest.raises(IntegrityError, match="ended"):
        reader.read()
