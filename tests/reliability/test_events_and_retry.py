"""Events, the logging subscriber, and storeroom's own retry loop."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from storeroom import ConfigurationError, FileObject, ObjectNotFound, ObstoreBackend, events
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.events import LoggingSubscriber, StorageEvent
from storeroom.retry import RetryPolicy, is_transient


def test_every_operation_emits_one_event_with_size_and_duration() -> None:
    backend = ObstoreBackend("ev", "memory://")
    seen: list[StorageEvent] = []
    with events.subscribed(seen.append):
        backend.put("a.txt", b"hello")
        assert backend.get("a.txt") == b"hello"
        backend.head("a.txt")
        backend.copy("a.txt", "b.txt")
        assert [i.path for i in backend.list()] == ["a.txt", "b.txt"]
        backend.delete("b.txt")
    assert [e.operation for e in seen] == ["put", "get", "head", "copy", "list", "delete"]
    put, get = seen[0], seen[1]
    assert (put.backend, put.path, put.size, put.ok) == ("ev", "a.txt", 5, True)
    assert get.size == 5 and get.duration >= 0
    assert seen[4].size == 2  # objects listed


async def test_async_operations_and_failures_emit_events() -> None:
    backend = ObstoreBackend("ev", "memory://")
    seen: list[StorageEvent] = []
    with events.subscribed(seen.append):
        await backend.put_async("a.txt", b"x" * 10)
        chunks = [c async for c in await backend.stream_async("a.txt")]
        with pytest.raises(ObjectNotFound):
            await backend.head_async("missing.txt")
    assert b"".join(chunks) == b"x" * 10
    assert [(e.operation, e.ok) for e in seen] == [("put", True), ("get", True), ("head", False)]
    assert "ObjectNotFound" in (seen[2].error or "") and "missing.txt" in (seen[2].error or "")


def test_no_subscriber_no_event_and_broken_subscriber_does_not_break_storage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ObstoreBackend("ev", "memory://")
    backend.put("quiet.txt", b"1")  # nobody listening: nothing to check but that it works

    def broken(event: StorageEvent) -> None:
        raise RuntimeError("subscriber bug")

    with events.subscribed(broken), caplog.at_level(logging.ERROR, "storeroom.events"):
        backend.put("loud.txt", b"1")
    assert backend.get("loud.txt") == b"1"
    assert "subscriber" in caplog.text


def test_logging_subscriber_writes_structured_fields_without_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ObstoreBackend("logged", "memory://")
    with events.subscribed(LoggingSubscriber(level=logging.INFO)), caplog.at_level(logging.INFO):
        FileObject(backend=backend, filename="report.pdf", content=b"TOP-SECRET-BYTES").save()
        with pytest.raises(ObjectNotFound):
            backend.get("gone.pdf")
    ok, failed = caplog.records[-2], caplog.records[-1]
    assert ok.levelno == logging.INFO and failed.levelno == logging.WARNING
    assert ok.storage_operation == "put" and ok.storage_size == 16  # type: ignore[attr-defined]
    assert ok.storage_path == "report.pdf" and ok.storage_backend == "logged"  # type: ignore[attr-defined]
    assert "TOP-SECRET-BYTES" not in caplog.text
    assert failed.storage_error.startswith("ObjectNotFound")  # type: ignore[attr-defined]


def test_retry_policy_validation_and_conversion() -> None:
    assert RetryPolicy.from_value(3).attempts == 3
    policy = RetryPolicy.from_value({"attempts": 2, "initial_backoff": 0.5, "deadline": 10})
    config = policy.obstore_config()
    assert config["max_retries"] == 1 and config["retry_timeout"].total_seconds() == 10
    with pytest.raises(ConfigurationError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigurationError, match="unknown retry settings"):
        RetryPolicy.from_value({"tries": 3})
    assert all(0 <= policy.backoff(n) <= policy.max_backoff for n in range(1, 20))


def test_transient_errors_are_told_apart() -> None:
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(OSError(errno.ECONNRESET, "reset"))
    assert is_transient(OSError(errno.ETIMEDOUT, "timed out"))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(PermissionError("denied"))
    assert not is_transient(ValueError("bad"))


def test_transient_is_never_decided_from_message_text() -> None:
    # A path or a message that merely mentions a status code or a network word is not an
    # outage: the bug was retrying this for the whole deadline.
    assert not is_transient(OSError("cannot open q500/report.pdf"))
    assert not is_transient(OSError("503 Service Unavailable"))
    assert not is_transient(RuntimeError("connection reset while reading 504.csv"))
    assert not is_transient(OSError(errno.ENOSPC, "no space left on 500-gb disk"))
    assert not is_transient(OSError(errno.EACCES, "timeout.txt"))


def test_transient_statuses_from_http_client_errors() -> None:
    import aiohttp
    from aiohttp.client_reqrep import RequestInfo
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    info = RequestInfo(URL("http://127.0.0.1/x"), "GET", CIMultiDictProxy(CIMultiDict()))

    def response_error(status: int) -> aiohttp.ClientResponseError:
        return aiohttp.ClientResponseError(info, (), status=status, message="x")

    for status in (429, 500, 502, 503, 504):
        assert is_transient(response_error(status)), status
    for status in (400, 403, 404, 412):
        assert not is_transient(response_error(status)), status
    assert is_transient(aiohttp.ServerDisconnectedError())
    assert not is_transient(aiohttp.InvalidURL("http://[::1"))


def test_transient_kinds_from_botocore_and_wrapped_causes() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(code: str, status: int) -> ClientError:
        response = {
            "Error": {"Code": code, "Message": "500 mentioned"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return ClientError(response, "GetObject")  # type: ignore[arg-type]

    assert is_transient(client_error("SlowDown", 503))
    assert is_transient(client_error("InternalError", 500))
    assert not is_transient(client_error("NoSuchKey", 404))
    assert not is_transient(client_error("AccessDenied", 403))
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))

    # fsspec implementations re-raise library errors as OSError: the cause decides.
    def wrapped(cause: BaseException, message: str) -> OSError:
        try:
            raise OSError(message) from cause
        except OSError as exc:
            return exc

    assert is_transient(wrapped(client_error("SlowDown", 503), "failed for q500/report.pdf"))
    assert not is_transient(wrapped(client_error("NoSuchBucket", 404), "503 in the message"))


def test_dropped_bodies_and_azure_connection_errors_are_transient() -> None:
    import http.client

    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    assert is_transient(http.client.IncompleteRead(b"partial", 10))
    assert is_transient(asyncio.IncompleteReadError(b"partial", 10))
    assert is_transient(ServiceRequestError("connection refused"))
    throttled = HttpResponseError("throttled")
    throttled.status_code = 503
    assert is_transient(throttled)
    throttled.status_code = 409
    assert not is_transient(throttled)


def test_obstore_errors_are_left_to_obstore() -> None:
    import obstore
    from obstore.store import MemoryStore

    with pytest.raises(Exception) as caught:
        obstore.get(MemoryStore(), "q500/report.pdf")
    assert not is_transient(caught.value)


def test_a_path_with_a_status_in_its_name_fails_at_once() -> None:
    class MissingPaths(MemoryFileSystem):
        protocol = "missingpaths"

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.calls = 0

        def info(self, path: str, **kwargs: object) -> dict[str, object]:
            self.calls += 1
            raise OSError(f"cannot open {path}")

    fs = MissingPaths(skip_instance_cache=True)
    backend = FSSpecBackend(
        "q", fs, prefix="/q-test", retry=RetryPolicy(attempts=5, initial_backoff=0.001)
    )
    with pytest.raises(Exception, match="q500/report.pdf"):
        backend.head("q500/report.pdf")
    assert fs.calls == 1


def test_sync_and_async_retry_take_the_same_decisions() -> None:
    def run_sync(failures: list[BaseException]) -> list[int]:
        seen: list[int] = []
        pending = list(failures)

        def func() -> str:
            if pending:
                raise pending.pop(0)
            return "ok"

        policy = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)
        try:
            policy.call(func, seen.append)
        except Exception:
            seen.append(-1)
        return seen

    def run_async(failures: list[BaseException]) -> list[int]:
        seen: list[int] = []
        pending = list(failures)

        async def func() -> str:
            if pending:
                raise pending.pop(0)
            return "ok"

        policy = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)

        async def main() -> None:
            try:
                await policy.acall(func, seen.append)
            except Exception:
                seen.append(-1)

        asyncio.run(main())
        return seen

    cases: list[list[BaseException]] = [
        [],
        [ConnectionResetError()],
        [ConnectionResetError(), TimeoutError()],
        [ConnectionResetError(), TimeoutError(), ConnectionResetError()],
        [OSError("q500/report.pdf")],
        [ConnectionResetError(), ValueError("bad")],
    ]
    for failures in cases:
        assert run_sync(failures) == run_async(failures), failures
    assert run_sync(cases[2]) == [2, 3]
    assert run_sync(cases[3]) == [2, 3, -1]
    assert run_sync(cases[4]) == [-1]


class FlakyMemoryFileSystem(MemoryFileSystem):
    """A real memory filesystem whose first ``failures`` info() calls drop the connection."""

    protocol = "flakymemory"

    def __init__(self, failures: int, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.info_calls = 0

    def info(self, path: str, **kwargs: object) -> dict[str, object]:
        self.info_calls += 1
        if self.info_calls <= self.failures:
            raise ConnectionResetError("connection reset by peer")
        return super().info(path, **kwargs)


def _flaky_backend(failures: int, attempts: int) -> tuple[FSSpecBackend, FlakyMemoryFileSystem]:
    fs = FlakyMemoryFileSystem(failures, skip_instance_cache=True)
    backend = FSSpecBackend(
        "flaky",
        fs,
        prefix="/flaky-test",
        retry=RetryPolicy(attempts=attempts, initial_backoff=0.001, max_backoff=0.01),
    )
    return backend, fs


def test_storeroom_retries_filesystems_without_their_own_retries() -> None:
    backend, fs = _flaky_backend(failures=0, attempts=3)
    backend.put("a.txt", b"data")
    fs.failures, fs.info_calls = 2, 0
    seen: list[StorageEvent] = []
    with events.subscribed(seen.append):
        assert backend.head("a.txt").size == 4
    assert fs.info_calls == 3
    assert seen[-1].attempts == 3


async def test_retries_give_up_after_the_policy_and_name_the_object() -> None:
    backend, fs = _flaky_backend(failures=0, attempts=2)
    await backend.put_async("b.txt", b"data")
    fs.failures, fs.info_calls = 10, 0
    with pytest.raises(Exception, match="connection reset") as caught:
        await backend.head_async("b.txt")
    assert "'b.txt'" in str(caught.value)
    assert fs.info_calls == 2


def test_s3fs_is_left_to_retry_itself() -> None:
    import s3fs

    fs = s3fs.S3FileSystem(anon=True, skip_instance_cache=True)
    assert FSSpecBackend("s3", fs, prefix="bucket").retries_natively
    assert not FSSpecBackend("mem", "memory").retries_natively
