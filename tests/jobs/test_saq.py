"""The SAQ adapter with real worker subprocesses, on Redis and on PostgreSQL.

The queue lives on Redis (127.0.0.1:6379, db 7 unless STOREROOM_TEST_REDIS says otherwise) or
on PostgreSQL (the test database, STOREROOM_TEST_DATABASE); the handlers record their effects
in Redis either way. Without a service (or SAQ) the tests skip with the reason;
STOREROOM_REQUIRE_SERVICES=1 makes that a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storeroom.errors import ConfigurationError
from storeroom.jobs import JobQueue, get_queue, set_queue
from tests.servers import require_service, stop_process
from tests.servers.databases import DATABASE, check_connects

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("STOREROOM_TEST_REDIS", "redis://127.0.0.1:6379/7")
POSTGRES_URL = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_client():  # type: ignore[no-untyped-def]
    try:
        import redis
        import saq  # noqa: F401
    except ImportError as exc:
        require_service("SAQ on Redis", f"install storeroom[saq] ({exc})")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_URL} does not answer ({exc})")
    return client


@pytest.fixture(scope="module", params=["redis", "postgres"])
def queue_url(request: pytest.FixtureRequest, redis_client) -> str:  # type: ignore[no-untyped-def]
    if request.param == "redis":
        return REDIS_URL
    try:
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        require_service("SAQ on PostgreSQL", f"install storeroom[saq] ({exc})")
    problem = check_connects(f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}")
    if problem:
        require_service("PostgreSQL", problem)
    return POSTGRES_URL


class Run:
    """One queue name, its key prefix, and the worker subprocesses started for it."""

    def __init__(self, client, url: str) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.url = url
        self.name = f"t-{uuid.uuid4().hex[:10]}"
        self.prefix = f"storeroom-test:{self.name}"
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            "STOREROOM_JOBS_TEST_REDIS": REDIS_URL,
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storeroom.jobs.saq",
                "--url",
                self.url,
                "--name",
                self.name,
                "--import",
                "tests.jobs.saq_handlers",
                "--concurrency",
                str(concurrency),
                "--sweep",
                "1",
            ],
            env=env,
        )
        self.workers.append(process)
        return process

    def done(self) -> set[int]:
        return {int(n) for n in self.client.smembers(f"{self.prefix}:done")}

    def runs(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.client.hgetall(f"{self.prefix}:runs").items()}

    def wait_for(self, condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            for worker in self.workers:
                if (
                    worker.returncode is None
                    and worker.poll() is not None
                    and worker.returncode != -9
                ):
                    pytest.fail(
                        f"a worker exited with {worker.returncode} while waiting for {what}"
                    )
            time.sleep(0.05)
        pytest.fail(f"timed out after {seconds} s waiting for {what}; done: {sorted(self.done())}")

    def cleanup(self) -> None:
        for worker in self.workers:
            stop_process(worker)
        for pattern in (f"{self.prefix}:*", f"saq:{self.name}:*"):
            for key in self.client.scan_iter(pattern):
                self.client.delete(key)
        if self.url.startswith("postgres"):
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as connection:
                # A test that never reached the queue leaves a fresh database without SAQ's table.
                if connection.execute("SELECT to_regclass('saq_jobs')").fetchone()[0]:
                    connection.execute("DELETE FROM saq_jobs WHERE queue = %s", (self.name,))


@pytest.fixture
def run(redis_client, queue_url: str) -> Iterator[Run]:  # type: ignore[no-untyped-def]
    current = Run(redis_client, queue_url)
    try:
        yield current
    finally:
        current.cleanup()


def make_queue(run: Run, **options: object):  # type: ignore[no-untyped-def]
    from storeroom.jobs.saq import SaqQueue

    return SaqQueue(run.url, name=run.name, **options)  # type: ignore[arg-type]


def test_adapter_implements_the_protocol_and_plugs_in(run: Run) -> None:
    queue = make_queue(run)
    try:
        assert isinstance(queue, JobQueue)
        previous = set_queue(queue)
        try:
            assert get_queue() is queue
        finally:
            set_queue(previous)
    finally:
        queue.close()


def test_bad_configuration_is_refused() -> None:
    pytest.importorskip("saq")
    from storeroom.jobs.saq import SaqQueue

    with pytest.raises(ConfigurationError, match="redis://"):
        SaqQueue("ftp://example.invalid/queue")
    with pytest.raises(ConfigurationError, match="heartbeat must be a whole number"):
        SaqQueue(REDIS_URL, heartbeat=0)
    with pytest.raises(ConfigurationError, match="URL or a saq.Queue"):
        SaqQueue(42)


def test_jobs_run_on_workers_and_failures_are_retried(run: Run) -> None:
    queue = make_queue(run, retry_delay=0.05)
    try:
        for number in range(10):
            queue.enqueue(
                "test.record", {"n": number, "prefix": run.prefix, "fail_first": number % 3 == 0}
            )
        assert not queue.drain(timeout=0)  # no worker yet: nothing can have finished
        run.start_worker()
        assert queue.drain(timeout=60)
        assert run.done() == set(range(10))
        runs = run.runs()
        # failed once, then retried; the rest once each (the worker sweeps every second, and
        # a sweep that lands while a job is being taken must leave it alone)
        assert runs == {n: 2 if n % 3 == 0 else 1 for n in range(10)}, runs
    finally:
        queue.close()


def test_key_makes_a_queued_job_unique(run: Run) -> None:
    queue = make_queue(run)
    try:
        for _ in range(3):
            queue.enqueue("test.record", {"n": 1, "prefix": run.prefix}, key=f"{run.name}-one")
        queue.enqueue("test.record", {"n": 2, "prefix": run.prefix}, key=f"{run.name}-two")
        if run.url == REDIS_URL:
            assert run.client.llen(f"saq:{run.name}:queued") == 2  # one job per key
        run.start_worker()
        assert queue.drain(timeout=60)
        assert run.done() == {1, 2}
    finally:
        queue.close()


async def test_async_enqueue_and_drain(run: Run) -> None:
    queue = make_queue(run)
    try:
        for number in range(5):
            await queue.enqueue_async("test.record", {"n": number, "prefix": run.prefix})
        run.start_worker()
        assert await queue.drain_async(timeout=60)
        assert run.done() == set(range(5))
    finally:
        queue.close()


def test_worker_killed_mid_job_loses_nothing(run: Run) -> None:
    """N jobs, 2 workers, one SIGKILLed while it runs a job: every job's effect lands."""
    total = 40
    queue = make_queue(run, heartbeat=2, retry_delay=0.05)
    try:
        # Job 0 holds its worker for 3 s: the one running it is the one killed, mid-job.
        queue.enqueue("test.record", {"n": 0, "prefix": run.prefix, "hold": 3})
        for number in range(1, total):
            queue.enqueue("test.record", {"n": number, "prefix": run.prefix, "sleep": 0.05})
        first, second = run.start_worker(), run.start_worker()
        run.wait_for(
            lambda: run.client.get(f"{run.prefix}:holding") is not None, 60, "job 0 to start"
        )
        holder = int(run.client.get(f"{run.prefix}:holding"))
        victim = first if first.pid == holder else second
        survivor = second if victim is first else first
        assert holder == victim.pid
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert 0 not in run.done()  # killed before job 0 finished
        run.wait_for(lambda: run.done() == set(range(total)), 120, "every job to be done")
        assert queue.drain(timeout=60)
        runs = run.runs()
        assert runs[0] >= 2, runs  # job 0 ran again after its worker died
        assert survivor.poll() is None
        by = {int(k): int(v) for k, v in run.client.hgetall(f"{run.prefix}:by").items()}
        assert by[0] == survivor.pid
    finally:
        queue.close()


def test_worker_exits_cleanly_on_sigterm(run: Run) -> None:
    worker = run.start_worker()
    queue = make_queue(run)
    try:
        queue.enqueue("test.record", {"n": 7, "prefix": run.prefix})
        assert queue.drain(timeout=60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        queue.close()


def test_unknown_job_fails_in_the_worker_and_drain_still_returns(run: Run) -> None:
    queue = make_queue(run, retries=1)
    try:
        queue.enqueue("test.nobody-handles-this", {})
        run.start_worker()
        assert queue.drain(timeout=60)
        assert run.done() == set()
    finally:
        queue.close()


def test_a_sweep_leaves_a_job_being_taken_alone_and_requeues_one_whose_taker_died(
    redis_client, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A worker takes a job in two steps (move its id to the active list, then record it as
    active). SAQ's own sweep, landing in between, aborts and re-queues the job, which then
    runs twice (SAQ issues 124 and 277). Ours waits: only a job still recorded as queued
    after the grace period (its taker died in between) is queued again."""
    import asyncio

    from saq.job import Status
    from saq.utils import now

    from storeroom.jobs import saq as adapter

    monkeypatch.setattr(adapter, "_QUEUED_GRACE", 1.5)
    name = f"t-{uuid.uuid4().hex[:10]}"

    async def scenario() -> None:
        queue = adapter._worker_queue(REDIS_URL, name)
        await queue.connect()
        try:
            taken = await queue.enqueue(adapter.FUNCTION, key="taken", name="x", payload={})
            died = await queue.enqueue(adapter.FUNCTION, key="died", name="x", payload={})
            for _ in (taken, died):  # step one of taking each, as a worker's dequeue does
                assert await queue.redis.lmove(queue._queued, queue._active, "RIGHT", "LEFT")

            async def sweep() -> list[str]:
                await queue.redis.delete(queue._sweep)  # the lock: one sweep per test step
                return list(await queue.sweep(lock=1))

            assert await sweep() == []  # both look like a job being taken: left alone
            taken.attempts += 1
            taken.started = now()
            await taken.update(status=Status.ACTIVE)  # step two for "taken"
            await asyncio.sleep(1.6)
            assert await sweep() == [died.id]  # "died" stayed queued past the grace
            await taken.refresh()
            await died.refresh()
            assert (taken.status, taken.attempts) == (Status.ACTIVE, 1)
            assert died.status == Status.QUEUED and died.error == queue.swept_error_message
            active = await queue.redis.lrange(queue._active, 0, -1)
            queued = await queue.redis.lrange(queue._queued, 0, -1)
            assert (active, queued) == ([taken.id.encode()], [died.id.encode()])
        finally:
            keys = [k async for k in queue.redis.scan_iter(f"saq:*{name}*")]
            if keys:
                await queue.redis.delete(*keys)
            await queue.disconnect()

    asyncio.run(scenario())
