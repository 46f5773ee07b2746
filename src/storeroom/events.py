"""Storage events: what each backend operation did, for logs, metrics and traces.

Every public backend operation emits one :class:`StorageEvent` when it ends: ``put``,
``get`` (a whole or ranged read, emitted when the stream is exhausted, fails, or the caller
stops early: ``close()``/``aclose()``, breaking out of a loop, dropping the stream; ``size``
is then the bytes delivered), ``head``,
``delete``, ``list``, ``copy`` and ``sign``; a failed operation emits the same event with
``error`` set. Subscribers are plain callables::

    from storeroom import events

    def record(event: events.StorageEvent) -> None:
        metrics.observe(event.operation, event.duration)

    events.subscribe(record)

Emitting costs nothing measurable when nobody is subscribed. A subscriber that raises is
logged and otherwise ignored: observability must never break storage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LoggingSubscriber",
    "Operation",
    "StorageEvent",
    "emit",
    "has_subscribers",
    "subscribe",
    "subscribed",
    "unsubscribe",
]

Operation = Literal["put", "get", "head", "delete", "list", "copy", "sign"]

logger = logging.getLogger("storeroom.events")


@dataclass(frozen=True, slots=True)
class StorageEvent:
    """One finished backend operation."""

    operation: Operation
    backend: str
    path: str
    duration: float
    """Seconds from the call until the operation ended (for reads: the stream ended)."""
    size: int | None = None
    """Bytes written or read, when known."""
    attempts: int = 1
    """Attempts storeroom made; retries done inside obstore's client are not counted."""
    error: str | None = None
    """The error's type and message when the operation failed (never a secret)."""

    @property
    def ok(self) -> bool:
        """Whether the operation succeeded."""
        return self.error is None

    def fields(self) -> dict[str, Any]:
        """Flat, structured fields for a log record or a span (reserved names avoided)."""
        data: dict[str, Any] = {
            "storage_operation": self.operation,
            "storage_backend": self.backend,
            "storage_path": self.path,
            "storage_duration_ms": round(self.duration * 1000, 3),
            "storage_attempts": self.attempts,
        }
        if self.size is not None:
            data["storage_size"] = self.size
        if self.error is not None:
            data["storage_error"] = self.error
        return data


Subscriber = Callable[[StorageEvent], object]

_lock = threading.Lock()
_subscribers: tuple[Subscriber, ...] = ()


def subscribe(subscriber: Subscriber) -> Subscriber:
    """Call ``subscriber`` with every event from now on; returns it (usable as a decorator)."""
    global _subscribers
    with _lock:
        if subscriber not in _subscribers:
            _subscribers = (*_subscribers, subscriber)
    return subscriber


def unsubscribe(subscriber: Subscriber) -> None:
    """Stop calling ``subscriber`` (no error if it was not subscribed)."""
    global _subscribers
    with _lock:
        _subscribers = tuple(s for s in _subscribers if s is not subscriber)


@contextmanager
def subscribed(subscriber: Subscriber) -> Iterator[Subscriber]:
    """Subscribe for the duration of a ``with`` block."""
    subscribe(subscriber)
    try:
        yield subscriber
    finally:
        unsubscribe(subscriber)


def has_subscribers() -> bool:
    """Whether anyone listens (lets callers skip building events)."""
    return bool(_subscribers)


def emit(event: StorageEvent) -> None:
    """Deliver ``event`` to every subscriber."""
    for subscriber in _subscribers:
        try:
            subscriber(event)
        except Exception:
            logger.exception("storage event subscriber %r failed", subscriber)


class LoggingSubscriber:
    """Logs each event with structured ``extra`` fields (prefixed ``storage_``).

    Successful operations log at ``level`` (DEBUG by default), failures at WARNING. Field
    names never collide with LogRecord attributes (``filename`` is one; see the
    specification's metrics example), and paths are logged, contents and secrets never.
    """

    def __init__(self, logger_name: str = "storeroom", level: int = logging.DEBUG) -> None:
        self.logger = logging.getLogger(logger_name)
        self.level = level

    def __call__(self, event: StorageEvent) -> None:
        level = self.level if event.ok else logging.WARNING
        if not self.logger.isEnabledFor(level):
            return
        outcome = "ok" if event.ok else f"failed: {event.error}"
        self.logger.log(
            level,
            "%s %s on %s %s (%.1f ms)",
            event.operation,
            event.path,
            event.backend,
            outcome,
            event.duration * 1000,
            extra=event.fields(),
        )
