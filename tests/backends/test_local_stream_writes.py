"""Streamed saves on local disk are written by storeroom into the folder it opened through
no link, as small saves are: unnamed until whole, then linked (create-only) or renamed
into place, with nothing left behind however the save ends.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storeroom import FileObject, ObjectExists, ObstoreBackend
from storeroom.backends import local_root
from storeroom.backends.obstore import backend as backend_module
from storeroom.backends.obstore import local_files
from storeroom.errors import BackendError, UnsafePath
from tests.backends.descriptors import needs_proc, open_fds

CHUNK = 256 * 1024  # above the async inline limit: written in a thread


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _chunks(
    n: int, seen: list[list[str]] | None = None, root: Path | None = None
) -> Iterator[bytes]:
    for i in range(n):
        if seen is not None and root is not None:
            seen.append(_files(root))  # what a listing (or a kill) finds between chunks
        yield bytes([i]) * CHUNK


async def _achunks(n: int) -> AsyncIterator[bytes]:
    for chunk in _chunks(n):
        yield chunk


@pytest.mark.parametrize("overwrite", [False, True], ids=["create-only", "overwrite"])
def test_a_stream_has_no_name_until_it_is_whole(tmp_path: Path, overwrite: bool) -> None:
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    backend.put("d/old.bin", b"old")
    seen: list[list[str]] = []
    backend.put("d/new.bin", _chunks(4, seen, tmp_path), overwrite=overwrite, chunk_size=CHUNK)
    assert seen == [["d/old.bin"]] * 4
    assert _files(tmp_path) == ["d/new.bin", "d/old.bin"]
    assert backend.get("d/new.bin") == b"".join(_chunks(4))
    assert backend.head("d/new.bin").etag == backend.head("d/new.bin").etag  # obstore's form
    with pytest.raises(ObjectExists):
        backend.put("d/new.bin", _chunks(2), overwrite=False, chunk_size=CHUNK)
    assert backend.get("d/new.bin") == b"".join(_chunks(4))


@pytest.mark.parametrize("body", ["async-chunks", "async-bytes"])
def test_async_streams_and_large_bytes_are_written_directly(tmp_path: Path, body: str) -> None:
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    content = b"".join(_chunks(3))

    async def save() -> None:
        source = _achunks(3) if body == "async-chunks" else content
        await backend.put_async("d/a.bin", source, overwrite=False, chunk_size=CHUNK)
        with pytest.raises(ObjectExists):
            await backend.put_async("d/a.bin", content, overwrite=False)

    asyncio.run(save())
    assert backend.get("d/a.bin") == content and _files(tmp_path) == ["d/a.bin"]


def test_file_object_streams_save_on_local_disk_and_verify(tmp_path: Path) -> None:
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    saved = FileObject(backend=backend, filename="v.bin").save(_chunks(5), chunk_size=CHUNK)
    assert saved.size == 5 * CHUNK
    assert saved.get_content() == b"".join(_chunks(5))


@pytest.mark.skipif(local_root._openat2 is None, reason="this system has no openat2")
def test_a_folder_swapped_for_a_link_between_chunks_does_not_redirect_the_stream(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    backend = ObstoreBackend("local", f"file://{root}")

    def swapping() -> Iterator[bytes]:
        yield b"first "
        yield b"second "
        (root / "docs").rename(root / "docs-moved")  # the save is under way by now
        os.symlink(outside, root / "docs")
        yield b"third"

    backend.put("docs/a.bin", swapping(), overwrite=False, chunk_size=4)
    assert list(outside.iterdir()) == []
    assert (root / "docs-moved" / "a.bin").read_bytes() == b"first second third"


@needs_proc
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_that_fails_midway_leaves_nothing(tmp_path: Path, mode: str) -> None:
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    backend.put("d/kept.bin", b"kept")

    def failing() -> Iterator[bytes]:
        yield b"x" * CHUNK
        raise ValueError("the source broke")

    async def afailing() -> AsyncIterator[bytes]:
        for chunk in failing():
            yield chunk

    before = open_fds(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(BackendError, match="the source broke"):
            if mode == "sync":
                backend.put("d/new.bin", failing(), overwrite=overwrite, chunk_size=CHUNK)
            else:
                asyncio.run(
                    backend.put_async(
                        "d/new.bin", afailing(), overwrite=overwrite, chunk_size=CHUNK
                    )
                )
    assert _files(tmp_path) == ["d/kept.bin"]
    assert open_fds(tmp_path) == before


@needs_proc
def test_a_save_cancelled_while_a_chunk_is_written_in_a_thread_waits_for_it_then_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    writing, release = threading.Event(), threading.Event()
    real_write_parts = local_files.write_parts
    closed_under_it: list[bool] = []

    def slow_write_parts(fd: int, parts: list[bytes]) -> None:
        if threading.current_thread() is not threading.main_thread():
            writing.set()
            release.wait(10)
            try:
                os.fstat(fd)  # still this save's file: not closed while the thread used it
            except OSError:
                closed_under_it.append(True)
        real_write_parts(fd, parts)

    monkeypatch.setattr(local_files, "write_parts", slow_write_parts)

    async def cancel_midway() -> None:
        before = open_fds(tmp_path)
        task = asyncio.ensure_future(
            backend.put_async("d/new.bin", _achunks(3), overwrite=False, chunk_size=CHUNK)
        )
        await asyncio.to_thread(writing.wait, 10)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # it waits for the chunk its thread is writing
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_fds(tmp_path) == before

    asyncio.run(cancel_midway())
    assert closed_under_it == []
    assert _files(tmp_path) == []


def test_a_link_at_the_name_is_refused_for_streams_too(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside / "target.bin", root / "filelink.bin")
    backend = ObstoreBackend("local", f"file://{root}")
    for overwrite in (False, True):
        with pytest.raises(UnsafePath):
            backend.put("filelink.bin", _chunks(2), overwrite=overwrite, chunk_size=CHUNK)
    assert list(outside.iterdir()) == [] and _files(root) == []


@pytest.mark.parametrize(
    "sizes",
    [[10] * 300, [5 * 1024 * 1024] * 3, [1, 4 * 1024 * 1024 - 1, 7, 0, 3 * 1024 * 1024]],
    ids=["many-tiny-chunks", "chunks-above-a-batch", "batch-edges"],
)
def test_chunks_are_written_in_order_across_batches(tmp_path: Path, sizes: list[int]) -> None:
    """Chunks gather into batches (by bytes and by count), each written while the next
    gathers; the file holds every chunk in order, sync and async."""
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    chunks = [bytes([i % 251]) * size for i, size in enumerate(sizes)]

    async def achunks() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    backend.put("sync.bin", iter(chunks), chunk_size=64 * 1024)
    asyncio.run(backend.put_async("async.bin", achunks(), chunk_size=64 * 1024))
    assert backend.get("sync.bin") == backend.get("async.bin") == b"".join(chunks)


def test_a_short_writev_is_finished_by_plain_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_writev = os.writev

    def short_writev(fd: int, parts: list[bytes]) -> int:
        return real_writev(fd, [b"".join(parts)[:5]])  # as a signal or a full disk would

    monkeypatch.setattr(backend_module.os, "writev", short_writev)
    fd = os.open(tmp_path / "f.bin", os.O_WRONLY | os.O_CREAT)
    try:
        local_files.write_parts(fd, [b"abc", b"defg", b"hi"])
    finally:
        os.close(fd)
    assert (tmp_path / "f.bin").read_bytes() == b"abcdefghi"
