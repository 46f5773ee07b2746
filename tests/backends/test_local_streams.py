"""Streamed reads of local files: storeroom reads the file it opened through no link, one
``pread`` (or ``read``) per chunk, and owns that file until the stream ends.

Held to what obstore's LocalStore returns for the same ranges; the file is closed however
the stream ends (read to the end, closed early, dropped unread, cancelled mid-chunk), and a
file that shrinks while it is read is an error, never a shorter object.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from pathlib import Path

import obstore
import pytest
from obstore.store import LocalStore

from storeroom import ObstoreBackend
from storeroom.backends.obstore import local_files
from storeroom.errors import BackendError, ObjectNotFound, RangeNotSatisfiable
from tests.backends.descriptors import needs_proc, open_fds

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def local(tmp_path: Path) -> ObstoreBackend:
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    backend.put("d/data.bin", DATA)
    return backend


@pytest.mark.parametrize(
    ("start", "end", "chunk"),
    [(0, None, 1000), (1, None, 4096), (100, 5000, 700), (0, 99_999, 3000), (10_239, None, 2)],
)
def test_ranges_stream_as_obstore_reads_them_in_chunks_of_the_size_asked(
    local: ObstoreBackend, tmp_path: Path, start: int, end: int | None, chunk: int
) -> None:
    raw = LocalStore(str(tmp_path))
    options: dict[str, object] = (
        {"range": (start, end)} if end is not None else {"range": {"offset": start}}
    )
    expected = bytes(obstore.get(raw, "d/data.bin", options=options).bytes())  # type: ignore[arg-type]
    chunks = list(local.stream("d/data.bin", start=start, end=end, chunk_size=chunk))
    assert b"".join(chunks) == expected == DATA[start:end]
    assert all(len(c) == chunk for c in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk

    async def read_async() -> list[bytes]:
        stream = await local.stream_async("d/data.bin", start=start, end=end, chunk_size=chunk)
        return [c async for c in stream]

    assert asyncio.run(read_async()) == chunks


def test_a_missing_file_and_a_start_past_the_end_fail_before_the_first_chunk(
    local: ObstoreBackend,
) -> None:
    with pytest.raises(ObjectNotFound):
        local.stream("d/missing.bin", chunk_size=10)
    with pytest.raises(RangeNotSatisfiable):
        local.stream("d/data.bin", start=len(DATA) + 5, chunk_size=10)


@needs_proc
def test_the_file_is_closed_however_the_stream_ends(local: ObstoreBackend, tmp_path: Path) -> None:
    before = open_fds(tmp_path)
    assert b"".join(local.stream("d/data.bin", chunk_size=1000)) == DATA  # to the end
    stream = local.stream("d/data.bin", chunk_size=1000)
    next(stream)
    stream.close()  # closed early
    stream = local.stream("d/data.bin", chunk_size=1000)
    del stream  # dropped unread
    gc.collect()

    async def early_async() -> None:
        stream = await local.stream_async("d/data.bin", chunk_size=1000)
        await stream.__anext__()
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(early_async())
    assert open_fds(tmp_path) == before


@needs_proc
def test_a_chunk_read_cancelled_midway_closes_the_file_once_its_thread_is_done(
    local: ObstoreBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task awaiting a chunk is cancelled and the stream closed while the worker thread
    is still reading: the file stays open for that read and is closed right after it."""
    reading, release = threading.Event(), threading.Event()
    real_read_at = local_files.read_at

    def slow_read_at(fd: int, start: int, size: int) -> bytes:
        if threading.current_thread() is not threading.main_thread():
            reading.set()
            release.wait(10)
        return real_read_at(fd, start, size)

    async def cancel_midway() -> None:
        before = open_fds(tmp_path)
        stream = await local.stream_async("d/data.bin", chunk_size=4000)
        monkeypatch.setattr(local_files, "read_at", slow_read_at)
        task = asyncio.ensure_future(stream.__anext__())
        await asyncio.to_thread(reading.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()  # type: ignore[attr-defined]
        assert open_fds(tmp_path) == before + 1  # the read in the thread still uses it
        release.set()
        for _ in range(500):  # the thread finishes its read, then closes the file
            if open_fds(tmp_path) == before:
                break
            await asyncio.sleep(0.01)
        assert open_fds(tmp_path) == before

    asyncio.run(cancel_midway())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_file_that_shrinks_while_it_is_streamed_is_an_error(
    local: ObstoreBackend, tmp_path: Path, mode: str
) -> None:
    def cut() -> None:
        os.truncate(tmp_path / "d" / "data.bin", 2500)

    if mode == "sync":
        stream = local.stream("d/data.bin", chunk_size=2000)
        assert next(stream) == DATA[:2000]
        cut()
        with pytest.raises(BackendError, match="ended at byte 2500 while it was read up to"):
            next(stream)
        return

    async def read_async() -> None:
        stream = await local.stream_async("d/data.bin", chunk_size=2000)
        assert await stream.__anext__() == DATA[:2000]
        cut()
        with pytest.raises(BackendError, match="shrank during the read"):
            await stream.__anext__()

    asyncio.run(read_async())


def test_a_file_replaced_mid_stream_is_read_whole_as_it_was_opened(
    local: ObstoreBackend,
) -> None:
    stream = local.stream("d/data.bin", chunk_size=4000)
    first = next(stream)
    local.put("d/data.bin", b"replaced")  # a new file renamed over the path
    assert first + b"".join(stream) == DATA
    assert local.get("d/data.bin") == b"replaced"
