"""Saves over real HTTP through a fault-injecting proxy in front of moto's S3 server.

Faults: 503 answers, dropped connections and stalled requests. A save either succeeds
(after retries) or fails with a clear storeroom error; no failed save leaves an object
behind, and every successful save's bytes are in the store.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from storeroom import BackendError, FileObject, ObstoreBackend, StoreroomError, events
from storeroom.retry import RetryPolicy
from tests.servers.moto import MotoServer
from tests.servers.proxy import RecordingProxy

pytestmark = pytest.mark.s3

FAST_RETRY = RetryPolicy(attempts=5, initial_backoff=0.01, max_backoff=0.05, deadline=20)


@dataclass
class Faulty:
    backend: ObstoreBackend
    proxy: RecordingProxy
    direct: ObstoreBackend  # the same bucket without the proxy, to check what really landed


@pytest.fixture
def faulty(moto_server: MotoServer, s3_bucket: str) -> Iterator[Faulty]:
    proxy = RecordingProxy(moto_server.endpoint, stall_seconds=2.0).start()
    common = dict(
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
        aws_region=moto_server.region,
        aws_allow_http=True,
    )
    backend = ObstoreBackend(
        "faulty",
        f"s3://{s3_bucket}/",
        aws_endpoint=proxy.endpoint,
        retry=FAST_RETRY,
        timeout=1,
        **common,
    )
    direct = ObstoreBackend(
        "direct", f"s3://{s3_bucket}/", aws_endpoint=moto_server.endpoint, **common
    )
    yield Faulty(backend, proxy, direct)
    proxy.stop()


def test_transient_503s_are_retried_until_the_save_succeeds(faulty: Faulty) -> None:
    faulty.proxy.fault = lambda n, method, path: 503 if n % 3 != 0 else None
    f = FileObject(backend=faulty.backend, filename="a.txt", content=b"survives 503s").save()
    assert f.size == 13
    assert faulty.direct.get("a.txt") == b"survives 503s"
    assert faulty.proxy.count() == 3  # two 503s, then the PUT that landed


def test_dropped_connection_is_retried(faulty: Faulty) -> None:
    faulty.proxy.fault = lambda n, method, path: "drop" if n == 1 else None
    FileObject(backend=faulty.backend, filename="b.txt", content=b"after a drop").save()
    assert faulty.direct.get("b.txt") == b"after a drop"


def test_stalled_request_times_out_and_is_retried(faulty: Faulty) -> None:
    faulty.proxy.fault = lambda n, method, path: "stall" if n == 1 else None
    FileObject(backend=faulty.backend, filename="c.txt", content=b"after a stall").save()
    assert faulty.direct.get("c.txt") == b"after a stall"


def test_persistent_failure_surfaces_a_clear_error_and_leaves_nothing(faulty: Faulty) -> None:
    faulty.proxy.fault = lambda n, method, path: 503
    with pytest.raises(BackendError) as caught:
        FileObject(backend=faulty.backend, filename="d.txt", content=b"never lands").save()
    message = str(caught.value)
    assert "'d.txt'" in message and "'faulty'" in message
    assert faulty.proxy.count() == FAST_RETRY.attempts
    assert not faulty.direct.exists("d.txt")


def test_refused_credentials_are_not_retried(faulty: Faulty) -> None:
    faulty.proxy.fault = lambda n, method, path: 403
    with pytest.raises(StoreroomError, match="credentials"):
        FileObject(backend=faulty.backend, filename="e.txt", content=b"x").save()
    assert faulty.proxy.count() == 1


def test_missing_object_is_not_retried(faulty: Faulty) -> None:
    with pytest.raises(FileNotFoundError):
        faulty.backend.get("never-saved.txt")
    assert faulty.proxy.count() == 1


def test_multipart_upload_survives_faults_on_parts(faulty: Faulty) -> None:
    data = bytes(range(256)) * (12 * 1024 * 4)  # 12 MiB
    faulty.proxy.fault = lambda n, method, path: 503 if n in (2, 4) else None
    f = FileObject(backend=faulty.backend, filename="big.bin", content=data)
    f.save(chunk_size=5 * 1024 * 1024)
    assert faulty.direct.get("big.bin") == data


def test_randomized_faults_lose_no_object(faulty: Faulty) -> None:
    """A seeded run of saves under random faults; prints the figures for the issue note."""
    rng = random.Random(8)
    injected = 0

    def fault(n: int, method: str, path: str) -> int | str | None:
        nonlocal injected
        roll = rng.random()
        if roll < 0.15:
            injected += 1
            return 503
        if roll < 0.20:
            injected += 1
            return 500
        if roll < 0.25:
            injected += 1
            return "drop"
        return None

    faulty.proxy.fault = fault
    seen: list[events.StorageEvent] = []
    operations, succeeded, failed = 150, {}, []
    with events.subscribed(seen.append):
        for i in range(operations):
            payload = f"object {i}".encode() * (i % 7 + 1)
            try:
                FileObject(backend=faulty.backend, filename=f"r/{i}.txt", content=payload).save()
                succeeded[f"r/{i}.txt"] = payload
            except StoreroomError:
                failed.append(f"r/{i}.txt")
    lost = [p for p, data in succeeded.items() if faulty.direct.get(p) != data]
    ghosts = [p for p in failed if faulty.direct.exists(p)]
    requests = faulty.proxy.count()
    print(
        f"\nfault figures: operations {operations}, faults injected {injected}, "
        f"retries {requests - operations}, failures surfaced {len(failed)}, "
        f"objects lost {len(lost)}, partial objects left by failures {len(ghosts)}"
    )
    assert lost == []
    assert ghosts == []
    assert injected > 20
    assert len([e for e in seen if e.operation == "put"]) == operations
