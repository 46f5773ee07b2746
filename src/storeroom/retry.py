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
import errno
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from storeroom.errors import ConfigurationError, StoreroomError

__all__ = [
    "DEFAULT_RETRY",
    "TRANSIENT_ERRNOS",
    "TRANSIENT_ERROR_CODES",
    "TRANSIENT_STATUSES",
    "RetryPolicy",
    "RetryState",
    "is_transient",
]

T = TypeVar("T")

#: HTTP statuses another attempt may fix: timeout, throttling, server errors.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: OSError errno kinds of a dropped or unreachable connection.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNRESET",
        "ECONNREFUSED",
        "ECONNABORTED",
        "ETIMEDOUT",
        "EPIPE",
        "EAGAIN",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "ENETRESET",
        "EHOSTDOWN",
    )
    if hasattr(errno, name)
)

#: Error codes S3-compatible stores (botocore ``response["Error"]["Code"]``) use for
#: throttling and server trouble.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
    }
)

# Exception classes of HTTP client libraries (matched by module and name, so that storeroom
# needs none of them installed) that mean the connection dropped or timed out.
_TRANSIENT_KINDS = frozenset(
    {
        ("aiohttp", "ServerDisconnectedError"),
        ("aiohttp", "ServerTimeoutError"),
        ("aiohttp", "ClientConnectorError"),
        ("aiohttp", "ClientOSError"),
        ("aiohttp", "ClientPayloadError"),
        ("aiohttp", "ConnectionTimeoutError"),
        ("aiohttp", "SocketTimeoutError"),
        ("botocore", "EndpointConnectionError"),
        ("botocore", "ConnectionClosedError"),
        ("botocore", "ReadTimeoutError"),
        ("botocore", "ConnectTimeoutError"),
        ("urllib3", "ProtocolError"),
        ("urllib3", "ReadTimeoutError"),
        ("urllib3", "ConnectTimeoutError"),
        ("urllib3", "NewConnectionError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
        ("httpx", "TransportError"),
        ("azure", "ServiceRequestError"),
        ("azure", "ServiceResponseError"),
        ("http", "IncompleteRead"),
        ("asyncio", "IncompleteReadError"),
    }
)
# Kinds that look like connection trouble but that no retry fixes.
_PERMANENT_KINDS = frozenset(
    {
        "SSLError",
        "ClientSSLError",
        "ClientConnectorCertificateError",
        "ClientConnectorSSLError",
        "ClientConnectorDNSError",
    }
)
# Errors that say what is wrong with the request itself, never retried.
_PERMANENT = (
    StoreroomError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,
    TypeError,
    KeyError,
)


def _kinds(exc: BaseException) -> set[tuple[str, str]]:
    return {(cls.__module__.partition(".")[0], cls.__name__) for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    """The HTTP status an error carries: aiohttp's ``status``, Azure's ``status_code``,
    gcsfs's and urllib's ``code``, botocore's ``response`` metadata."""
    for name in ("status", "status_code", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        return code if isinstance(code, str) else None
    return None


def _transient_one(exc: BaseException) -> bool | None:
    """True/False when ``exc`` alone decides, None when its cause should decide."""
    if isinstance(exc, _PERMANENT):
        return False
    kinds = _kinds(exc)
    if any(name in _PERMANENT_KINDS for _, name in kinds):
        return False
    code = _error_code(exc)
    if code is not None and code in TRANSIENT_ERROR_CODES:
        return True
    status = _status(exc)
    if status is not None:
        return status in TRANSIENT_STATUSES
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if kinds & _TRANSIENT_KINDS:
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in TRANSIENT_ERRNOS
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt might succeed: dropped connections, timeouts, throttling, 5xx.

    Decided from what the error is, never from its message: the HTTP status it carries
    (:data:`TRANSIENT_STATUSES`), a store's error code (:data:`TRANSIENT_ERROR_CODES`), its
    kind (``ConnectionError``, ``TimeoutError``, the connection errors of aiohttp, botocore,
    urllib3, requests, httpx and azure-core) or its ``errno`` (:data:`TRANSIENT_ERRNOS`),
    then the same for the error it was raised from. obstore's errors are never transient
    here: obstore's client has already retried what could be retried. Errors about the
    request itself (storeroom errors, not found, permission, bad value) are never transient.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        decided = _transient_one(current)
        if decided is not None:
            return decided
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return False


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
        if (
            not isinstance(self.attempts, int)
            or isinstance(self.attempts, bool)
            or (self.attempts < 1)
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

    def begin(self, on_retry: Callable[[int], None] | None = None) -> RetryState:
        """The retry decisions for one call: what :meth:`call` and :meth:`acall` consult."""
        return RetryState(self, on_retry)

    def call(self, func: Callable[[], T], on_retry: Callable[[int], None] | None = None) -> T:
        """Run ``func`` until it succeeds, fails for good, or the policy is spent.

        ``on_retry`` is called with the number of the attempt about to start (2, 3, ...).
        """
        state = self.begin(on_retry)
        while True:
            try:
                return func()
            except Exception as exc:
                if not state.retry_after(exc):
                    raise
            time.sleep(state.wait)

    async def acall(
        self, func: Callable[[], Awaitable[T]], on_retry: Callable[[int], None] | None = None
    ) -> T:
        """Async form of :meth:`call` (same decisions; waits with ``asyncio.sleep``)."""
        state = self.begin(on_retry)
        while True:
            try:
                return await func()
            except Exception as exc:
                if not state.retry_after(exc):
                    raise
            await asyncio.sleep(state.wait)


@dataclass(slots=True)
class RetryState:
    """The decisions of one retried call, shared by the sync and async twins.

    The twins only call the function and sleep; this says whether to try again and how long
    to wait first. No I/O here.
    """

    policy: RetryPolicy
    on_retry: Callable[[int], None] | None = None
    attempt: int = 1
    """The number of the attempt running or about to run (1-based)."""
    wait: float = 0.0
    """Seconds to wait before the next attempt (set by :meth:`retry_after`)."""
    started: float = field(default_factory=time.monotonic)

    def retry_after(self, exc: Exception) -> bool:
        """Whether to try again after ``exc``; sets :attr:`wait` and counts the attempt."""
        policy = self.policy
        if self.attempt >= policy.attempts or not is_transient(exc):
            return False
        wait = policy.backoff(self.attempt)
        if time.monotonic() - self.started + wait > policy.deadline:
            return False
        self.wait = wait
        self.attempt += 1
        if self.on_retry is not None:
            self.on_retry(self.attempt)
        return True


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
