"""storeroom's background jobs on SAQ (Simple Async Queue), with Redis or PostgreSQL.

Why SAQ: storeroom's users write Litestar and FastAPI applications, which are async. SAQ is
async from end to end (enqueueing is one awaited Redis or PostgreSQL call, workers are
asyncio), it is the queue the Litestar ecosystem already integrates (litestar-saq, Advanced
Alchemy's reference application), it runs on Redis *or* on the PostgreSQL the application
already has, and it has what storeroom's guarantee needs built in: retries with backoff, a
per-job heartbeat, and a sweep that re-queues the jobs of a worker that died. Celery and
Dramatiq are sync-first with heavier brokers; arq is Redis-only with no PostgreSQL option;
procrastinate is PostgreSQL-only.

Use it in the application (once, at start-up)::

    from storeroom.jobs import set_queue
    from storeroom.jobs.saq import SaqQueue

    set_queue(SaqQueue("redis://localhost:6379/0"))

and run workers, which import the modules that register handlers with ``@job``::

    python -m storeroom.jobs.saq --url redis://localhost:6379/0 --import myapp.jobs

How "a worker killed mid-job loses nothing" holds: a job stays in SAQ's active list until a
worker finishes it; while its handler runs, the worker refreshes the job's heartbeat every
third of ``heartbeat`` seconds. A worker that dies (SIGKILL, OOM, power) stops refreshing; a
surviving worker's sweep (every ``sweep`` seconds) finds the job stale and queues it again.
A handler that raises is retried, with backoff; failures and deaths together get ``retries``
attempts in all, after which the job is given up and kept as failed in SAQ (visible in its
web UI and to ``queue.jobs``). So a job may run more than once: handlers must be idempotent
(storeroom's are).

The adapter's enqueue and drain are sync (the :class:`~storeroom.jobs.JobQueue` protocol)
with async twins; both drive one private event loop thread that owns the SAQ queue and its
connection, so the adapter can be used from sync code, from any thread, and from async code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import importlib
import logging
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from storeroom.errors import ConfigurationError
from storeroom.jobs import handler_for, set_queue

__all__ = [
    "FUNCTION",
    "SaqQueue",
    "current_attempt",
    "main",
    "run_job",
    "run_worker",
    "worker_settings",
]

logger = logging.getLogger("storeroom.jobs.saq")

FUNCTION = "storeroom.run_job"
"""The SAQ function name under which every storeroom job is enqueued."""

_FINISHED = frozenset({"complete", "failed", "aborted"})
_ATTEMPT: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "storeroom_saq_attempt", default=None
)
T = TypeVar("T")


def _saq() -> Any:
    try:
        import saq
    except ImportError as exc:
        raise ConfigurationError(
            "the SAQ job queue is not installed; install it with pip install 'storeroom[saq]'"
        ) from exc
    return saq


def _make_queue(queue: Any, name: str) -> Any:
    saq = _saq()
    if isinstance(queue, str):
        try:
            return saq.Queue.from_url(queue, name=name)
        except Exception as exc:  # saq raises its own InvalidUrlError and redis' ValueError
            raise ConfigurationError(
                f"cannot use {queue.split('@')[-1]!r} as a SAQ queue: {exc}. Give a "
                "redis://, rediss:// or postgres:// URL"
            ) from exc
    if isinstance(queue, saq.Queue):
        return queue
    raise ConfigurationError(f"queue is a URL or a saq.Queue, got {type(queue).__name__}")


class _LoopThread:
    """One event loop on a daemon thread; coroutines from any thread run on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("SaqQueue's sync methods cannot be called from its own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class SaqQueue:
    """A :class:`~storeroom.jobs.JobQueue` that sends jobs to SAQ workers.

    ``queue`` is a ``redis://`` or ``postgres://`` URL (or a ``saq.Queue`` used by nothing
    else: its connection is driven from this adapter's own loop). ``name`` is the SAQ queue
    name workers must listen on. Each job gets ``retries`` attempts in all, with
    ``retry_delay`` seconds before the first retry (doubled each time, up to
    ``retry_backoff`` seconds), a run-time limit of ``timeout`` seconds, and is taken back
    from a worker that has not refreshed its heartbeat for ``heartbeat`` seconds.
    """

    def __init__(
        self,
        queue: Any,
        *,
        name: str = "storeroom",
        retries: int = 5,
        retry_delay: float = 1.0,
        retry_backoff: float = 60.0,
        timeout: int = 600,
        heartbeat: int = 30,
    ) -> None:
        for label, value in (("retries", retries), ("timeout", timeout), ("heartbeat", heartbeat)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{label} must be a whole number >= 1, got {value!r}")
        self.name = name
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_backoff = retry_backoff
        self.timeout = timeout
        self.heartbeat = heartbeat
        self._queue = _make_queue(queue, name)
        self._loop = _LoopThread(f"storeroom-saq-{name}")
        self._connected = False
        self._connect_lock: asyncio.Lock | None = None
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SaqQueue(name={self.name!r}, pending={len(self._pending)})"

    async def _ensure(self) -> Any:
        if self._connect_lock is None:  # created on the adapter's loop, its only user
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if not self._connected:
                await self._queue.connect()
                self._connected = True
        return self._queue

    async def _enqueue(self, name: str, payload: Mapping[str, Any], key: str | None) -> None:
        queue = await self._ensure()
        job_key = key or uuid.uuid4().hex
        await queue.enqueue(
            FUNCTION,
            key=job_key,
            kwargs={"name": name, "payload": dict(payload)},
            retries=self.retries,
            retry_delay=self.retry_delay,
            retry_backoff=self.retry_backoff,
            timeout=self.timeout,
            heartbeat=self.heartbeat,
        )
        with self._lock:
            self._pending.add(job_key)

    def enqueue(self, name: str, payload: Mapping[str, Any], *, key: str | None = None) -> None:
        """Send job ``name`` to the workers (a Redis/PostgreSQL round trip, then return).

        ``key`` makes the job unique while it is queued or running: enqueueing the same key
        again then does nothing (useful for "make this variant once"). From async code,
        prefer :meth:`enqueue_async`, which does not block the event loop.
        """
        self._loop.run(self._enqueue(name, payload, key))

    async def enqueue_async(
        self, name: str, payload: Mapping[str, Any], *, key: str | None = None
    ) -> None:
        """Async form of :meth:`enqueue`."""
        await self._loop.run_async(self._enqueue(name, payload, key))

    async def _drain(self, timeout: float | None) -> bool:
        queue = await self._ensure()
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = 0.01
        while True:
            with self._lock:
                keys = list(self._pending)
            if not keys:
                return True
            jobs = await queue.jobs(keys)
            done = {
                key
                for key, found in zip(keys, jobs, strict=True)
                if found is None or str(getattr(found.status, "value", found.status)) in _FINISHED
            }
            with self._lock:
                self._pending -= done
                if not self._pending:
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(wait)
            wait = min(wait * 2, 0.5)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job this adapter enqueued has finished (completed or given up)."""
        return self._loop.run(self._drain(timeout))

    async def drain_async(self, timeout: float | None = None) -> bool:
        """Async form of :meth:`drain`."""
        return await self._loop.run_async(self._drain(timeout))

    def close(self) -> None:
        """Disconnect and stop the adapter's loop thread."""
        if self._connected:
            self._loop.run(self._queue.disconnect())
            self._connected = False
        self._loop.stop()


async def run_job(ctx: Mapping[str, Any], *, name: str, payload: Mapping[str, Any]) -> None:
    """The SAQ function behind every storeroom job: runs the handler registered as ``name``.

    The (sync) handler runs in a worker thread while this coroutine refreshes the job's
    heartbeat, so a long job is not mistaken for a dead one; an exception from the handler
    fails this attempt and SAQ retries it.
    """
    handler = handler_for(name)
    job = ctx.get("job")
    beat = max(0.2, (getattr(job, "heartbeat", 0) or 30) / 3)
    if job is not None:  # the handler's thread gets a copy of this context
        _ATTEMPT.set((int(job.attempts), int(job.retries)))
    task = asyncio.ensure_future(asyncio.to_thread(handler, payload))
    while True:
        done, _ = await asyncio.wait({task}, timeout=beat)
        if done:
            task.result()
            return
        if job is not None:
            await job.update()


def current_attempt() -> tuple[int, int] | None:
    """``(attempt, attempts allowed)`` of the SAQ job whose handler calls this, else None.

    SAQ counts an attempt when a worker takes the job, so a handler killed before it
    could record anything still counts: a handler that keeps its own tally (the sharded
    maintenance runs) takes SAQ's to know when SAQ will give up.
    """
    return _ATTEMPT.get()


_SWEEP_ABORT = 1.0
_QUEUED_GRACE = 10.0


def _worker_queue(queue: Any, name: str) -> Any:
    """The worker's queue: SAQ's, with a sweep that waits 1 s, not 5 s, per stale job, and
    (on Redis) never sweeps a job a live worker has just taken.

    A sweep first asks a stale job's worker to abort and waits for an answer; a dead worker
    never answers, and SAQ waits for each such job in turn, so after a worker with 8 jobs in
    flight was killed the last of them came back 40 s later. Live workers check for aborts
    every second, so 1 s is still enough for them.
    """
    if not isinstance(queue, str):
        return _make_queue(queue, name)
    scheme = queue.split(":", 1)[0].lower()
    if scheme.startswith("redis"):
        return _redis_worker_queue().from_url(queue, name=name)
    if scheme.startswith("postgres"):
        from saq.queue.postgres import PostgresQueue

        class _Queue(PostgresQueue):
            async def sweep(self, lock: int = 60, abort: float = _SWEEP_ABORT) -> list[str]:
                return list(await super().sweep(lock, abort=min(abort, _SWEEP_ABORT)))

        return _Queue.from_url(queue, name=name)
    return _make_queue(queue, name)  # raises the usual error


def _redis_worker_queue() -> type[Any]:
    """SAQ's Redis queue with a sweep that leaves a just-taken job alone.

    A worker takes a job in two steps: it moves the job's id from the queued list to the
    active list, then (one round trip later) records the job as active. SAQ's own sweep
    treats any job in the active list whose record is not "active" as abandoned, so a sweep
    that lands between those two steps aborts and re-queues a job that is starting to run:
    it then runs twice, and a job meant to be given up after its last attempt is run again
    instead (SAQ issues 124 and 277). Here a job in the active list still recorded as queued
    is swept only when this worker has seen it so, with the same attempt count, for
    ``_QUEUED_GRACE`` seconds: long after any live worker records it, soon enough for a
    worker that died in between.
    """
    from saq.job import Status
    from saq.queue.redis import RedisQueue

    class _Queue(RedisQueue):
        _queued_since: dict[bytes, tuple[float, int]]

        async def sweep(self, lock: int = 60, abort: float = _SWEEP_ABORT) -> list[str]:
            redis: Any = self.redis  # its stubs type every command as sync-or-async
            if not await redis.set(self._sweep, 1, ex=lock, nx=True):
                return []  # another worker swept less than ``lock`` seconds ago
            ids = await redis.lrange(self._active, 0, -1)
            records = await redis.mget(ids) if ids else []
            seen = getattr(self, "_queued_since", {})
            self._queued_since = {}
            now = time.monotonic()
            swept: list[bytes] = []
            for job_id, record in zip(ids, records, strict=True):
                job = self.deserialize(record)
                if job is None:  # its record expired or was deleted: drop the id
                    pipe: Any
                    async with redis.pipeline(transaction=True) as pipe:
                        pipe.lrem(self._active, 0, job_id)
                        pipe.zrem(self._incomplete, job_id)
                        await pipe.execute()
                    swept.append(job_id)
                    continue
                if job.status == Status.QUEUED:
                    since, attempts = seen.get(job_id, (now, job.attempts))
                    if attempts != job.attempts:
                        since = now
                    if now - since < _QUEUED_GRACE:
                        self._queued_since[job_id] = (since, job.attempts)
                        continue
                elif job.status == Status.ACTIVE and not job.stuck:
                    continue
                logger.info("sweeping job %s (%s, attempt %s)", job.key, job.status, job.attempts)
                swept.append(job_id)
                await self.abort(job, error=self.swept_error_message)
                try:
                    await job.refresh(min(abort, _SWEEP_ABORT))
                except asyncio.TimeoutError:
                    pass  # its worker is dead: nobody answers the abort
                if job.retryable:
                    await self.retry(job, error=self.swept_error_message)
                else:
                    await self.finish(job, Status.ABORTED, error=self.swept_error_message)
            return [job_id.decode() for job_id in swept]

    return _Queue


def worker_settings(
    queue: Any,
    *,
    name: str = "storeroom",
    concurrency: int = 10,
    sweep: int = 10,
    imports: Sequence[str] = (),
) -> dict[str, Any]:
    """SAQ worker settings that run storeroom's jobs (for ``saq module.settings`` too).

    ``imports`` are modules that register handlers (imported now); ``sweep`` is how often, in
    seconds, the worker looks for jobs whose worker died.
    """
    _saq()
    for module in imports:
        importlib.import_module(module)
    saq_queue = _worker_queue(queue, name)

    async def startup(ctx: dict[str, Any]) -> None:
        # Jobs that enqueue more work (from worker threads) send it to the same queue.
        if isinstance(queue, str):
            set_queue(SaqQueue(queue, name=name))

    return {
        "queue": saq_queue,
        "functions": [(FUNCTION, run_job)],
        "concurrency": concurrency,
        "timers": {"sweep": sweep},
        "startup": startup,
    }


def run_worker(
    queue: Any,
    *,
    name: str = "storeroom",
    concurrency: int = 10,
    sweep: int = 10,
    imports: Sequence[str] = (),
) -> None:
    """Run a SAQ worker for storeroom's jobs until SIGINT or SIGTERM."""
    saq = _saq()
    settings = worker_settings(
        queue, name=name, concurrency=concurrency, sweep=sweep, imports=imports
    )
    worker = saq.Worker(**settings)

    async def serve() -> None:
        await worker.queue.connect()
        try:
            await worker.start()
        finally:
            await worker.queue.disconnect()

    asyncio.run(serve())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m storeroom.jobs.saq``: run a worker."""
    parser = argparse.ArgumentParser(
        prog="python -m storeroom.jobs.saq",
        description="Run a SAQ worker for storeroom's background jobs.",
    )
    parser.add_argument("--url", required=True, help="redis:// or postgres:// URL of the queue")
    parser.add_argument("--name", default="storeroom", help="SAQ queue name (default storeroom)")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module registering @job handlers (repeatable)",
    )
    parser.add_argument("--concurrency", type=int, default=10, help="jobs at once (default 10)")
    parser.add_argument(
        "--sweep",
        type=int,
        default=10,
        help="seconds between looks for jobs of dead workers (default 10)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    run_worker(
        args.url,
        name=args.name,
        concurrency=args.concurrency,
        sweep=args.sweep,
        imports=args.imports,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
