"""A read or listing that the caller stops early still emits its one storage event."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from storeroom import FileObject, ObstoreBackend, events
from storeroom.backends.fsspec import FSSpecBackend

DATA = bytes(range(256)) * 4096  # 1 MiB


def _backends(tmp_path: Path) -> list[object]:
    return [
        ObstoreBackend("mem", "memory://"),
        ObstoreBackend("disk", f"file://{tmp_path}/o"),
        FSSpecBackend("fs", "file", prefix=str(tmp_path / "f")),
    ]


@pytest.fixture
def seen() -> list[events.StorageEvent]:
    got: list[events.StorageEvent] = []
    with events.subscribed(got.append):
        yield got


def _reads(seen: list[events.StorageEvent]) -> list[events.StorageEvent]:
    return [e for e in seen if e.operation == "get"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_stream_closed_after_one_chunk_emits_one_event(
    index: int, tmp_path: Path, seen: list[events.StorageEvent]
) -> None:
    backend = _backends(tmp_path)[index]
    backend.put("big.bin", DATA)  # type: ignore[attr-defined]
    seen.clear()
    chunks = backend.stream("big.bin", chunk_size=64 * 1024)  # type: ignore[attr-defined]
    first = next(chunks)
    chunks.close()
    chunks.close()  # closing twice is harmless and emits nothing more
    (event,) = _reads(seen)
    assert event.ok and event.path == "big.bin" and event.size == len(first)


def test_stream_dropped_without_reading_or_closing_emits_one_event(
    tmp_path: Path, seen: list[events.StorageEvent]
) -> None:
    backend = ObstoreBackend("disk", f"file://{tmp_path}/o")
    backend.put("big.bin", DATA)
    seen.clear()
    chunks = backend.stream("big.bin")
    del chunks
    gc.collect()
    (event,) = _reads(seen)
    assert event.ok and event.size == 0


def test_reader_stopping_early_emits_one_event_per_stream(
    tmp_path: Path, seen: list[events.StorageEvent]
) -> None:
    backend = ObstoreBackend("disk", f"file://{tmp_path}/o")
    f = FileObject(backend=backend, filename="big.bin", content=DATA).save()
    seen.clear()
    with f.open(chunk_size=64 * 1024) as reader:
        reader.read(10)
        reader.seek(500_000)  # drops the first stream
        reader.read(10)
    assert len(_reads(seen)) == 2 and all(e.ok for e in _reads(seen))
    seen.clear()
    for _chunk in f.iter_chunks(chunk_size=64 * 1024):
        break
    gc.collect()
    assert len(_reads(seen)) == 1


async def test_async_stream_closed_early_emits_one_event(
    tmp_path: Path, seen: list[events.StorageEvent]
) -> None:
    for backend in _backends(tmp_path):
        backend.put("big.bin", DATA)  # type: ignore[attr-defined]
        seen.clear()
        chunks = await backend.stream_async("big.bin", chunk_size=64 * 1024)  # type: ignore[attr-defined]
        first = await chunks.__anext__()
        await chunks.aclose()
        (event,) = _reads(seen)
        assert event.ok and event.size == len(first)
    f = FileObject(backend=backend, filename="big.bin", size=len(DATA))
    seen.clear()
    async with await f.open_async(chunk_size=64 * 1024) as reader:
        await reader.read(10)
    assert len(_reads(seen)) == 1


def test_listing_stopped_early_emits_one_event(
    tmp_path: Path, seen: list[events.StorageEvent]
) -> None:
    backend = ObstoreBackend("mem", "memory://")
    for i in range(5):
        backend.put(f"d/{i}", b"x")
    seen.clear()
    listing = backend.list("d")
    next(listing)
    listing.close()
    (event,) = [e for e in seen if e.operation == "list"]
    assert event.ok and event.size == 1


def test_failed_stream_emits_the_error_once(
    tmp_path: Path, seen: list[events.StorageEvent]
) -> None:
    backend = ObstoreBackend("disk", f"file://{tmp_path}/o")
    with pytest.raises(FileNotFoundError):
        backend.stream("missing.bin")
    (event,) = _reads(seen)
    assert not event.ok and "ObjectNotFound" in (event.error or "")
    seen.clear()
    with pytest.raises(FileNotFoundError):
        backend.get("missing.bin")
    (event,) = _reads(seen)
    assert not event.ok
