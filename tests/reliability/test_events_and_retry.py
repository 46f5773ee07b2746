"""Events, the logging subscriber, and storeroom's own retry loop."""

from __future__ import annotations

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
    assert is_transient(OSError("503 Service Unavailable"))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(PermissionError("denied"))
    assert not is_transient(ValueError("bad"))


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
        "flaky", fs, prefix="/flaky-test",
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
