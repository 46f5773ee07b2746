"""Retry policy: how often and how long storeroom retries a failed storage request.

One :class:`RetryPolicy` per backend. obstore backends hand it to obstore's own HTTP client
(which retries 5xx answers, dropped connections and timeouts of idempotent requests), so no
request is ever retried twice over. Backends without such a client (fsspec) retry
idempotent operations here, with exponential backoff, full jitter and a total deadline.
Errors that another attempt cannot fix (bad credentials, a missing bucket or object, an
unsafe path, a bad argument) are never retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from storeroom.errors import ConfigurationError, StoreroomError

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "is_transient"]

T = TypeVar("T")

_TRANSIENT_WORDS = (
    "timed out", "timeout", "connection reset", "connection refused", "connection aborted",
    "broken pipe", "temporarily unavailable", "service unavailable", "slowdown", "slow down",
    "internalerror", "internal error", "503", "500", "502", "504", "throttl",
    "serverdisconnected", "server disconnected", "remote end closed",
)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt might succeed: network failures, timeouts, 5xx, throttling."""
    if isinstance(exc, StoreroomError):
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError, ValueError, TypeError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in _TRANSIENT_WORDS)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts, exponential backoff with full jitter, and a deadline over all attempts."""

    attempts: int = 4
    """Total attempts including the first (1 disables retries)."""
    initial_backoff: float = 0.1
    """Seconds before the first retry (before jitter)."""
    max_backoff: float = 5.0
    """Longest wait between two attempts, in seconds."""
    multiplier: float = 2.0
    """Growth of the backoff from one retry to the next."""
    deadline: float = 60.0
    """Seconds after which no new attempt starts."""
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or (
            self.attempts < 1
        ):
            problems.append(f"attempts must be a whole number >= 1, got {self.attempts!r}")
        for name in ("initial_backoff", "max_backoff", "deadline"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.multiplier, (int, float)) or self.multiplier < 1:
            problems.append(f"multiplier must be a number >= 1, got {self.multiplier!r}")
        if problems:
            raise ConfigurationError("invalid retry policy: " + "; ".join(problems))

    @classmethod
    def from_value(cls, value: RetryPolicy | Mapping[str, Any] | int | None) -> RetryPolicy:
        """Build from a policy, a mapping of its fields, or a number of attempts."""
        if value is None:
            return DEFAULT_RETRY
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(attempts=value)
        if isinstance(value, Mapping):
            known = {"attempts", "initial_backoff", "max_backoff", "multiplier", "deadline"}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigurationError(
                    f"unknown retry settings {unknown}; valid: {sorted(known)}"
                )
            return cls(**dict(value))
        raise ConfigurationError(
            f"retry must be a RetryPolicy, a mapping of its settings or a number of attempts, "
            f"got {type(value).__name__}"
        )

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), with full jitter."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return self._random.uniform(0, ceiling)

    def obstore_config(self) -> dict[str, Any]:
        """The same policy as obstore's ``retry_config``."""
        return {
            "max_retries": self.attempts - 1,
            "retry_timeout": timedelta(seconds=self.deadline),
            "backoff": {
                "init_backoff": timedelta(seconds=self.initial_backoff),
                "max_backoff": timedelta(seconds=self.max_backoff),
                "base": float(self.multiplier),
            },
        }

    def _next_wait(self, attempt: int, started: float, exc: Exception) -> float | None:
        if attempt >= self.attempts or not is_transient(exc):
            return None
        wait = self.backoff(attempt)
        if time.monotonic() - started + wait > self.deadline:
            return None
        return wait

    def call(self, func: Callable[[], T], on_retry: Callable[[int], None] | None = None) -> T:
        """Run ``func`` until it succeeds, fails for good, or the policy is spent."""
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return func()
            except Exception as exc:
                wait = self._next_wait(attempt, started, exc)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1
            if on_retry is not None:
                on_retry(attempt)

    async def acall(
        self, func: Callable[[], Awaitable[T]], on_retry: Callable[[int], None] | None = None
    ) -> T:
        """Async form of :meth:`call`."""
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return await func()
            except Exception as exc:
                wait = self._next_wait(attempt, started, exc)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1
            if on_retry is not None:
                on_retry(attempt)


DEFAULT_RETRY = RetryPolicy()
"""Four attempts, 0.1 s to 5 s apart, within 60 s."""


def timeout_option(value: float | int | str | timedelta) -> str | timedelta:
    """A timeout in obstore's form: numbers are seconds."""
    if isinstance(value, bool):
        raise ConfigurationError(f"timeout must be seconds or a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ConfigurationError(f"timeout must be positive, got {value!r}")
        return f"{value}s"
    return value
