"""A whole read or save translates errors the same way whether or not anyone listens to events.

Without subscribers, ``get`` and ``put`` of bytes on a store that retries by itself skip
building their guard (the path of every small read and save); the errors they raise must
not change: storeroom's own errors pass as they are, a library's error becomes
:class:`BackendError` naming the object, the backend and the cause, and a cancellation
stays a cancellation that leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from storeroom import BackendError, ObjectExists, ObjectNotFound, ObstoreBackend, events
from storeroom.backends.obstore import local_files


@pytest.fixture(params=["no subscriber", "subscribed"])
def seen(request: pytest.FixtureRequest) -> Any:
    if request.param == "no subscriber":
        yield None
        return
    got: list[events.StorageEvent] = []
    with events.subscribed(got.append):
        yield got


def _failing(exc: BaseException) -> ObstoreBackend:
    backend = ObstoreBackend("flaky", "memory://")

    def read_all(path: str, meter: object) -> bytes:
        raise exc

    async def read_all_async(path: str, meter: object) -> bytes:
        await asyncio.sleep(0)
        raise exc

    backend._read_all = read_all  # type: ignore[method-assign]
    backend._read_all_async = read_all_async  # type: ignore[method-assign]
    return backend


async def test_a_missing_object_is_object_not_found_naming_it(seen: Any) -> None:
    backend = ObstoreBackend("mem", "memory://")
    for read in (backend.get, backend.get_async):
        with pytest.raises(ObjectNotFound, match=r"'docs/a\.pdf' does not exist in backend 'mem'"):
            result = read("docs/a.pdf")
            if asyncio.iscoroutine(result):
                await result
    if seen is not None:
        assert [(e.operation, e.error is not None) for e in seen] == [("get", True)] * 2


async def test_a_library_error_becomes_backend_error_with_its_cause(seen: Any) -> None:
    cause = RuntimeError("connection reset by the store")
    backend = _failing(cause)
    with pytest.raises(BackendError) as sync_error:
        backend.get("docs/a.pdf")
    with pytest.raises(BackendError) as async_error:
        await backend.get_async("docs/a.pdf")
    for caught in (sync_error, async_error):
        assert str(caught.value) == (
            "reading 'docs/a.pdf' on backend 'flaky' failed: "
            "RuntimeError: connection reset by the store"
        )
        assert caught.value.__cause__ is cause
    if seen is not None:
        assert len(seen) == 2 and all("BackendError" in (e.error or "") for e in seen)


async def test_a_cancelled_read_stays_cancelled(seen: Any) -> None:
    backend = _failing(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await backend.get_async("docs/a.pdf")
    with pytest.raises(asyncio.CancelledError):
        backend.get("docs/a.pdf")


# -- saves of bytes -------------------------------------------------------------------------

SIZES = [5, 2 * 1024 * 1024]  # one digest in line; one hashed in a worker thread meanwhile


@pytest.mark.parametrize("size", SIZES)
async def test_a_failed_local_save_is_backend_error_with_its_cause(
    seen: Any, tmp_path: Path, size: int
) -> None:
    backend = ObstoreBackend("loc", f"file://{tmp_path}")
    backend.put("a", b"a file where a folder would go")
    content = os.urandom(size)
    with pytest.raises(BackendError) as sync_error:
        backend.put("a/b.bin", content)
    with pytest.raises(BackendError) as async_error:
        await backend.put_async("a/b.bin", content)
    for caught in (sync_error, async_error):
        assert str(caught.value).startswith(
            "saving 'a/b.bin' on backend 'loc' failed: NotADirectoryError: "
        )
        assert isinstance(caught.value.__cause__, NotADirectoryError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    if seen is not None:
        saves = [e for e in seen if e.operation == "put"]
        assert [e.error is None for e in saves] == [True, False, False]
        assert all("BackendError" in (e.error or "") for e in saves[1:])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("url", ["memory://", "file"])
async def test_a_create_only_save_onto_an_object_is_object_exists_and_keeps_it(
    seen: Any, tmp_path: Path, size: int, url: str
) -> None:
    backend = ObstoreBackend("once", url if url == "memory://" else f"file://{tmp_path}")
    backend.put("k.bin", b"first")
    content = os.urandom(size)
    with pytest.raises(ObjectExists, match="'k.bin' already exists in backend 'once'"):
        backend.put("k.bin", content, overwrite=False)
    with pytest.raises(ObjectExists, match="'k.bin' already exists in backend 'once'"):
        await backend.put_async("k.bin", content, overwrite=False)
    assert backend.get("k.bin") == b"first"
    if seen is not None:
        saves = [e for e in seen if e.operation == "put"]
        assert [(e.error or "").split(":")[0] for e in saves] == [
            "",
            "ObjectExists",
            "ObjectExists",
        ]


async def test_a_cancelled_save_of_bytes_stays_cancelled_and_leaves_nothing(
    seen: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ObstoreBackend("loc", f"file://{tmp_path}")
    writing, release = threading.Event(), threading.Event()
    real_write_parts = local_files.write_parts

    def held_write_parts(fd: int, parts: list[bytes]) -> None:
        if threading.current_thread() is not threading.main_thread():
            writing.set()  # the bytes are being written in a worker thread
            release.wait(10)
        real_write_parts(fd, parts)

    monkeypatch.setattr(local_files, "write_parts", held_write_parts)
    content = os.urandom(2 * 1024 * 1024)  # written, and hashed, in worker threads
    save = asyncio.ensure_future(backend.put_async("c.bin", content))
    await asyncio.to_thread(writing.wait, 10)
    save.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await save
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert backend.put("after.bin", content).size == len(content)
