"""FileObject: saving, reading, copying, signing and serialising through a backend."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storeroom import (
    BackendNotRegistered,
    ConfigurationError,
    FileObject,
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    ObstoreBackend,
    StorageRegistry,
    checksums,
)
from storeroom.backends.fsspec import FSSpecBackend


@pytest.fixture
def registry(tmp_path) -> Iterator[StorageRegistry]:  # type: ignore[no-untyped-def]
    registry = StorageRegistry()
    registry.register_backend(ObstoreBackend("mem", "memory://"), default=True)
    registry.register_backend(ObstoreBackend("disk", f"file://{tmp_path}/disk"))
    registry.register_backend(FSSpecBackend("fs", "file", prefix=str(tmp_path / "fs")))
    yield registry


def test_save_records_size_checksum_type_and_clears_content(registry: StorageRegistry) -> None:
    data = b"%PDF-1.7 hello"
    f = FileObject(backend="disk", filename="report.pdf", content=data, registry=registry)
    assert f.has_pending_content
    assert f.save() is f
    assert not f.has_pending_content
    assert f.size == len(data)
    assert f.checksum == checksums.digest(checksums.DEFAULT_ALGORITHM, data)
    assert f.content_type == "application/pdf"
    assert f.etag
    assert f.last_modified is not None and f.last_modified.tzinfo is not None
    assert f.get_content() == data
    assert f.backend == "disk"
    assert f.storage is registry.get_backend("disk")


def test_content_type_defaults(registry: StorageRegistry) -> None:
    assert FileObject(backend="mem", filename="x.png").content_type == "image/png"
    assert FileObject(backend="mem", filename="noext").content_type == "application/octet-stream"
    assert FileObject(backend="mem", filename="x.png", content_type="a/b").content_type == "a/b"


def test_backend_none_uses_registry_default(registry: StorageRegistry) -> None:
    f = FileObject(filename="d.txt", content=b"x", registry=registry).save()
    assert f.backend == "mem"
    assert registry.get_backend("mem").get("d.txt") == b"x"


def test_unregistered_backend_key_fails_clearly(registry: StorageRegistry) -> None:
    f = FileObject(backend="nope", filename="a", content=b"x", registry=registry)
    with pytest.raises(BackendNotRegistered, match="'nope' is not registered"):
        f.save()


def test_backend_instance_is_accepted_and_compares_as_key() -> None:
    backend = ObstoreBackend("local-legacy", "memory://")
    f = FileObject(backend=backend, filename="a.txt", content=b"x").save()
    assert f.backend == "local-legacy"
    assert f.storage is backend
    assert f.get_content() == b"x"


def test_save_without_content_is_an_error(registry: StorageRegistry) -> None:
    with pytest.raises(ConfigurationError, match="nothing to save"):
        FileObject(backend="mem", filename="a", registry=registry).save()


def test_save_accepts_content_argument_and_tuning(registry: StorageRegistry) -> None:
    data = b"v" * (6 * 1024 * 1024)
    f = FileObject(backend="disk", filename="video.mp4", registry=registry)
    f.save(io.BytesIO(data), chunk_size=5 * 1024 * 1024, max_concurrency=2)
    assert f.size == len(data)
    assert f.content_type == "video/mp4"


async def test_async_twins(registry: StorageRegistry) -> None:
    f = FileObject(backend="fs", filename="a/b.txt", content=b"async bytes", registry=registry)
    await f.save_async()
    assert await f.get_content_async() == b"async bytes"
    assert await f.read_range_async(6) == b"bytes"
    assert await f.exists_async()
    refreshed = await f.refresh_async()
    assert refreshed.size == 11
    chunks = [c async for c in await f.aiter_chunks(chunk_size=4)]
    assert b"".join(chunks) == b"async bytes"
    reader = await f.open_async()
    reader.seek(6)
    assert await reader.read(3) == b"byt"
    assert await reader.read() == b"es"
    await f.delete_async()
    assert not await f.exists_async()
    with pytest.raises(ObjectNotFound):
        await f.get_content_async()


def test_open_gives_seekable_reader(registry: StorageRegistry) -> None:
    data = bytes(range(256)) * 100
    f = FileObject(backend="disk", filename="r.bin", content=data, registry=registry).save()
    with f.open(chunk_size=1000) as reader:
        assert reader.read(10) == data[:10]
        reader.seek(20_000)
        assert reader.read(5) == data[20_000:20_005]
        reader.seek(-3, io.SEEK_END)
        assert reader.read() == data[-3:]
        assert reader.tell() == len(data)


def test_iter_chunks_verifies_checksum_on_full_reads(registry: StorageRegistry) -> None:
    f = FileObject(backend="mem", filename="t.txt", content=b"original", registry=registry).save()
    f.storage.put("t.txt", b"tampered")  # changed behind storeroom's back, same size
    with pytest.raises(IntegrityError, match="checksum"):
        f.get_content()
    f.storage.put("t.txt", b"short")
    with pytest.raises(IntegrityError, match="5 bytes"):
        list(f.iter_chunks())
    assert f.read_range(0, 3) == b"sho"  # ranges are not verified


def test_copy_to_another_backend_streams_and_verifies(registry: StorageRegistry) -> None:
    data = b"x" * 100_000
    src = FileObject(
        backend="disk", filename="c.bin", metadata={"owner": "ann"}, content=data, registry=registry
    ).save()
    copy = src.copy_to("fs")
    assert copy.backend == "fs"
    assert copy.path == "c.bin"
    assert copy.checksum == src.checksum
    assert copy.metadata == {"owner": "ann"}
    assert copy.get_content() == data


async def test_copy_to_async_and_within_backend(registry: StorageRegistry) -> None:
    src = FileObject(backend="mem", filename="c.txt", content=b"abc", registry=registry)
    await src.save_async()
    other = await src.copy_to_async("disk", "moved/c.txt")
    assert await other.get_content_async() == b"abc"
    same = await src.copy_to_async("mem", "c2.txt")
    assert await same.get_content_async() == b"abc"
    with pytest.raises(ConfigurationError, match="onto itself"):
        await src.copy_to_async("mem")


async def test_create_only_copies_never_replace_what_is_there(registry: StorageRegistry) -> None:
    src = FileObject(backend="mem", filename="c.txt", content=b"new", registry=registry).save()
    FileObject(backend="mem", filename="taken.txt", content=b"old", registry=registry).save()
    FileObject(backend="disk", filename="taken.txt", content=b"old", registry=registry).save()
    with pytest.raises(ObjectExists):
        src.copy_to("mem", "taken.txt", overwrite=False)  # within one backend
    with pytest.raises(ObjectExists):
        await src.copy_to_async("disk", "taken.txt", overwrite=False)  # between two
    assert registry.get_backend("mem").get("taken.txt") == b"old"
    assert registry.get_backend("disk").get("taken.txt") == b"old"
    free = await src.copy_to_async("disk", "free.txt", overwrite=False)
    assert free.get_content() == b"new" and free.checksum == src.checksum
    assert src.copy_to("mem", "taken.txt").get_content() == b"new"  # overwrite by default


def test_copy_of_corrupted_source_raises_and_leaves_no_copy(registry: StorageRegistry) -> None:
    src = FileObject(backend="mem", filename="c.txt", content=b"abc", registry=registry).save()
    src.storage.put("c.txt", b"xyz")
    with pytest.raises(IntegrityError, match="copy was deleted"):
        src.copy_to("disk")
    assert not registry.get_backend("disk").exists("c.txt")


def test_to_dict_from_dict_round_trip(registry: StorageRegistry) -> None:
    f = FileObject(
        backend="mem",
        filename="a b.txt",
        path="u/1/a b.txt",
        metadata={"k": "v"},
        content=b"hi",
        registry=registry,
    ).save()
    data = f.to_dict()
    assert data["backend"] == "mem" and data["path"] == "u/1/a b.txt"
    assert isinstance(data["last_modified"], str)
    again = FileObject.from_dict(data, registry=registry)
    assert again == f
    assert again.last_modified == f.last_modified
    assert again.get_content() == b"hi"
    with pytest.raises(ConfigurationError, match="unknown FileObject fields"):
        FileObject.from_dict({**data, "bogus": 1})


_records = st.fixed_dictionaries(
    {},
    optional={
        "backend": st.one_of(st.none(), st.sampled_from(["mem", "disk", ""])),
        "filename": st.sampled_from(["a.txt", "photo.JPG", "noext", ""]),
        "path": st.sampled_from(["u/1/a.txt", "x", "a/b c.pdf"]),
        "content_type": st.one_of(st.none(), st.sampled_from(["", "image/png"])),
        "size": st.one_of(st.none(), st.integers(0, 10**12)),
        "checksum": st.one_of(st.none(), st.just("blake3:" + "ab" * 32)),
        "etag": st.one_of(st.none(), st.just('"1-2-3"')),
        "version": st.one_of(st.none(), st.just("v7")),
        "last_modified": st.one_of(
            st.none(), st.just("2026-11-30T07:00:00.123456+00:00"), st.just("2026-11-30")
        ),
        "metadata": st.one_of(st.none(), st.just({}), st.just({"k": "v", "n": 1})),
    },
)


@settings(max_examples=400, deadline=None)
@given(data=_records)
def test_from_dict_builds_exactly_what_the_constructor_builds(data: dict[str, Any]) -> None:
    # from_dict sets the fields of a record directly (the ORM's load path); the result must
    # be the FileObject the constructor makes from the same values, or the same error.
    def through_init() -> FileObject:
        values = dict(data)
        if isinstance(values.get("last_modified"), str):
            values["last_modified"] = datetime.fromisoformat(values["last_modified"])
        return FileObject(**values)

    try:
        expected = through_init()
    except ConfigurationError as exc:
        with pytest.raises(ConfigurationError, match=re.escape(str(exc))):
            FileObject.from_dict(data)
        return
    got = FileObject.from_dict(data)
    for name in FileObject.__slots__:
        assert getattr(got, name) == getattr(expected, name), name
    assert got.metadata is not data.get("metadata")


def test_from_dict_refuses_an_unknown_field_in_place_of_a_known_one() -> None:
    # Ten fields, as to_dict writes, but one of them unknown: refused, naming it, as a
    # record with an extra field is.
    data = FileObject(backend="mem", filename="a.txt").to_dict()
    del data["version"]
    data["bogus"] = 1
    with pytest.raises(ConfigurationError, match=r"unknown FileObject fields \['bogus'\]"):
        FileObject.from_dict(data)
    del data["bogus"]  # nine of ten: the missing one is None
    assert FileObject.from_dict(data).version is None
    data["backend"] = 7  # not a key: the constructor's error
    with pytest.raises(ConfigurationError, match="backend must be a backend key"):
        FileObject.from_dict(data)


def test_repr_is_short_and_has_no_content() -> None:
    f = FileObject(backend="mem", filename="a.txt", content=b"secret-content")
    assert "secret-content" not in repr(f)
    assert "pending=True" in repr(f)


def test_sign_on_store_without_signing_names_backend(registry: StorageRegistry) -> None:
    from storeroom import SigningNotSupported

    f = FileObject(backend="disk", filename="a.txt", content=b"x", registry=registry).save()
    with pytest.raises(SigningNotSupported, match="'disk'"):
        f.sign(expires_in=60)


def test_refresh_updates_from_store(registry: StorageRegistry) -> None:
    f = FileObject(backend="mem", filename="r.txt", content=b"12345", registry=registry).save()
    stale = FileObject(backend="mem", filename="r.txt", registry=registry)
    stale.refresh()
    assert stale.size == 5
    assert stale.etag == f.etag
    assert stale.content_type == "text/plain"
    assert isinstance(stale.last_modified, datetime)
    assert stale.last_modified.tzinfo == timezone.utc
