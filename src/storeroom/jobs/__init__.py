"""Background work: a small job interface and the in-process queue that runs it by default.

storeroom hands work that must not run inside a request or a database commit (the deletes
that follow a commit, later variants) to a :class:`JobQueue` as a job name and a
JSON-serialisable payload. Handlers are registered by name with :func:`job`; every job must be
idempotent, because a queue may run it more than once (retries, redelivery).

The embedded default, :class:`InProcessQueue`, runs jobs on a few worker threads of this
process, retries failures with backoff (:class:`storeroom.retry.RetryPolicy`), logs what still
fails (it never raises into the code that enqueued), and at interpreter exit waits a bounded
time for what is queued. What a process leaves undone is found later by ``storeroom gc``.
A real job queue plugs in with :func:`set_queue`.

Example::

    from storeroom.jobs import get_queue, job

    @job("example.greet")
    def greet(payload):
        print("hello", payload["name"])

    get_queue().enqueue("example.greet", {"name": "storeroom"})
    get_queue().drain(timeout=10)
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from storeroom.errors import ConfigurationError
from storeroom.retry import DEFAULT_RETRY, RetryPolicy

__all__ = [
    "InProcessQueue",
    "JobHandler",
    "JobQueue",
    "UnknownJob",
    "get_queue",
    "handler_for",
    "job",
    "registered_jobs",
    "set_queue",
]

logger = logging.getLogger("storeroom.jobs")

JobHandler = Callable[[Mapping[str, Any]], None]
"""A job's code: takes the payload, returns nothing, raises on failure (it will be retried)."""

_handlers: dict[str, JobHandler] = {}


class UnknownJob(ConfigurationError, KeyError):
    """No handler is registered under a job name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def job(name: str) -> Callable[[JobHandler], JobHandler]:
    """Register the decorated function as the handler of job ``name``.

    Registering the same function again is allowed (module reloads); another function under a
    name already taken raises :class:`~storeroom.errors.ConfigurationError`.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a job name is a non-empty string, got {name!r}")

    def register(handler: JobHandler) -> JobHandler:
        existing = _handlers.get(name)
        if existing is not None and getattr(existing, "__qualname__", None) != getattr(
            handler, "__qualname__", None
        ):
            raise ConfigurationError(
                f"job {name!r} is already handled by {existing!r}; choose another name"
            )
        _handlers[name] = handler
        return handler

    return register


def handler_for(name: str) -> JobHandler:
    """The handler registered for job ``name``; :class:`UnknownJob` if there is none."""
    try:
        return _handlers[name]
    except KeyError:
        known = ", ".join(repr(n) for n in sorted(_handlers)) or "none"
        raise UnknownJob(
            f"no handler for job {name!r}; registered: {known}. Register one with "
            "@storeroom.jobs.job(name) (and import its module) before enqueueing"
        ) from None


def registered_jobs() -> list[str]:
    """The names of all registered jobs, sorted."""
    return sorted(_handlers)


@runtime_checkable
class JobQueue(Protocol):
    """Where storeroom sends background work.

    ``payload`` is JSON-serialisable; jobs are idempotent, so a queue may deliver a job more
    than once.
    """

    def enqueue(self, name: str, payload: Mapping[str, Any]) -> None:
        """Schedule job ``name`` with ``payload``; never runs it in the caller's frame."""
        ...

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job this process enqueued so far has finished (succeeded or given up).

        Returns True if that happened within ``timeout`` seconds (None: wait for as long as it
        takes).
        """
        ...


class InProcessQueue:
    """Runs jobs on up to ``workers`` daemon threads of this process.

    A failing job is retried up to ``retry.attempts`` times in all, with ``retry``'s backoff
    and deadline (any ``Exception`` counts, since jobs are idempotent); a job that still
    fails, or has no handler, is logged at ERROR on the ``storeroom.jobs`` logger and dropped.
    At interpreter exit the queue waits up to ``exit_timeout`` seconds for what is queued.
    """

    def __init__(
        self,
        *,
        workers: int = 4,
        retry: RetryPolicy | Mapping[str, Any] | int | None = None,
        exit_timeout: float = 10.0,
    ) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigurationError(f"workers must be a whole number >= 1, got {workers!r}")
        if exit_timeout < 0:
            raise ConfigurationError(f"exit_timeout must be >= 0 seconds, got {exit_timeout!r}")
        self.workers = workers
        self.retry = RetryPolicy.from_value(retry) if retry is not None else DEFAULT_RETRY
        self.exit_timeout = exit_timeout
        self._lock = threading.Condition()
        self._queue: deque[tuple[str, Mapping[str, Any]]] = deque()
        self._unfinished = 0
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._exit_hook_registered = False

    def __repr__(self) -> str:
        return f"InProcessQueue(workers={self.workers}, unfinished={self._unfinished})"

    def enqueue(self, name: str, payload: Mapping[str, Any]) -> None:
        """Schedule job ``name``; a worker thread runs it soon."""
        with self._lock:
            self._queue.append((name, payload))
            self._unfinished += 1
            if not self._exit_hook_registered:
                atexit.register(self._drain_at_exit)
                self._exit_hook_registered = True
            if self._idle == 0 and len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"storeroom-jobs-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._lock.notify()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job enqueued so far has finished; True if it did in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._unfinished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    @property
    def pending(self) -> int:
        """Jobs enqueued and not yet finished."""
        with self._lock:
            return self._unfinished

    def _drain_at_exit(self) -> None:
        if not self.drain(self.exit_timeout):
            logger.warning(
                "%d background job(s) were still unfinished after waiting %.1f s at exit; "
                "what they would have deleted is left for storeroom gc",
                self.pending,
                self.exit_timeout,
            )

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
                while not self._queue:
                    self._lock.wait()
                self._idle -= 1
                name, payload = self._queue.popleft()
            try:
                self._run(name, payload)
            finally:
                with self._lock:
                    self._unfinished -= 1
                    if not self._unfinished:
                        self._lock.notify_all()

    def _run(self, name: str, payload: Mapping[str, Any]) -> None:
        try:
            handler = handler_for(name)
        except UnknownJob as exc:
            logger.error("dropped background job: %s", exc)
            return
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                handler(payload)
                return
            except Exception as exc:
                elapsed = time.monotonic() - started
                wait = self.retry.backoff(attempt)
                if attempt >= self.retry.attempts or elapsed + wait > self.retry.deadline:
                    logger.error(
                        "background job %r failed after %d attempt(s), giving up: %s",
                        name,
                        attempt,
                        exc,
                        exc_info=exc,
                    )
                    return
                logger.info(
                    "background job %r failed (attempt %d of %d), retrying in %.2f s: %s",
                    name,
                    attempt,
                    self.retry.attempts,
                    wait,
                    exc,
                )
            time.sleep(wait)
            attempt += 1


_queue_lock = threading.Lock()
_current: JobQueue | None = None


def get_queue() -> JobQueue:
    """The queue storeroom sends background work to (an :class:`InProcessQueue` by default)."""
    global _current
    with _queue_lock:
        if _current is None:
            _current = InProcessQueue()
        return _current


def set_queue(queue: JobQueue | None) -> JobQueue | None:
    """Use ``queue`` for background work from now on (None: back to a fresh in-process queue).

    Returns the previous queue, so a test can put it back. Jobs already enqueued stay where
    they are: drain the previous queue first if that matters.
    """
    global _current
    if queue is not None and not isinstance(queue, JobQueue):
        raise ConfigurationError(
            f"set_queue() takes an object with enqueue(name, payload) and drain(timeout), "
            f"got {type(queue).__name__}"
        )
    with _queue_lock:
        previous, _current = _current, queue
        return previous
