"""A whole read translates errors the same way whether or not anyone listens to events.

Without subscribers, ``get`` on a store that retries by itself skips building its guard
(the path of every small read); the errors it raises must not change: storeroom's own
errors pass as they are, a library's error becomes :class:`BackendError` naming the
object, the backend and the cause, and a cancellation stays a cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storeroom import BackendError, ObjectNotFound, ObstoreBackend, events


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
