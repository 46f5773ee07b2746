"""The one extension point: :class:`StorageBackend`.

A backend implements a handful of primitives (write, read, head, delete, list, copy and,
where the store can, sign), each in a sync and an async form. Everything a user calls is
built once here on top of them: path validation, reading content of any supported type,
counting and checksumming bytes as they stream, choosing between one PUT and a multipart
upload, and turning the underlying library's exceptions into storeroom's.
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from storeroom import events
from storeroom.errors import (
    BackendError,
    ConfigurationError,
    ObjectNotFound,
    SigningNotSupported,
    StoreroomError,
)
from storeroom.events import Operation
from storeroom.paths import safe_path
from storeroom.retry import DEFAULT_RETRY, RetryPolicy
from storeroom.streams import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    Content,
    Meter,
    Prefetch,
    aiter_content,
    as_bytes,
    iter_content,
    read_size_for,
)

__all__ = [
    "DEFAULT_READ_CHUNK_SIZE",
    "ObjectInfo",
    "PutResult",
    "StorageBackend",
    "UrlSigner",
    "WriteOptions",
]

T = TypeVar("T")

DEFAULT_READ_CHUNK_SIZE = 1024 * 1024
"""Smallest chunk yielded by streaming reads (the last one may be shorter)."""

Method = Literal["GET", "PUT"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object (from ``head`` or ``list``)."""

    path: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None
    version: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PutResult:
    """Outcome of a save: what was written, measured while it streamed."""

    path: str
    size: int
    checksum: str | None
    etag: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How a backend primitive should write one object."""

    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    multipart: bool = False
    create_only: bool = False
    """Fail with :class:`ObjectExists` instead of replacing an object already at the path."""


def _check_tuning(chunk_size: int, max_concurrency: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigurationError(
            f"chunk_size must be a positive number of bytes, got {chunk_size!r}"
        )
    if not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ConfigurationError(
            f"max_concurrency must be a positive integer, got {max_concurrency!r}"
        )


def _check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ConfigurationError(
            f"invalid byte range start={start!r}, end={end!r}: need 0 <= start <= end "
            "(end is exclusive, None for 'to the end')"
        )


async def _achain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


_ACTIONS: dict[Operation, str] = {
    "put": "saving",
    "get": "reading",
    "head": "inspecting",
    "delete": "deleting",
    "list": "listing",
    "copy": "copying",
    "sign": "signing",
}


class _Guard:
    """Wraps one operation: translates library errors, counts attempts, emits its event.

    A plain class rather than ``@contextmanager``: it wraps every call, including the
    small-file fast path, where a generator-based context manager costs measurably more.
    Timing starts only when someone subscribed to events.
    """

    __slots__ = ("attempts", "backend", "operation", "path", "size", "started")

    def __init__(self, backend: StorageBackend, path: str, operation: Operation) -> None:
        self.backend, self.path, self.operation = backend, path, operation
        self.size: int | None = None
        self.attempts = 1
        self.started = time.perf_counter() if events.has_subscribers() else None

    def __enter__(self) -> _Guard:
        return self

    def retried(self, attempt: int) -> None:
        """Record that attempt number ``attempt`` is starting."""
        self.attempts = attempt

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        error: BaseException | None = exc
        if isinstance(exc, Exception) and not isinstance(exc, StoreroomError):
            error = self.backend._error(exc, self.path, _ACTIONS[self.operation])
        if self.started is not None and (exc is None or isinstance(exc, Exception)):
            self.emit(error)
        if error is not exc and error is not None:
            raise error from exc
        return False

    def emit(self, error: BaseException | None = None) -> None:
        """Send the operation's event (done by ``__exit__``; streams call it at their end)."""
        if self.started is None:
            return
        events.emit(
            events.StorageEvent(
                operation=self.operation,
                backend=self.backend.key,
                path=self.path,
                duration=time.perf_counter() - self.started,
                size=self.size,
                attempts=self.attempts,
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
        )
        self.started = None


@runtime_checkable
class UrlSigner(Protocol):
    """Signs URLs for backends whose store cannot (see :mod:`storeroom.signing`)."""

    def sign(
        self,
        backend: str,
        path: str,
        *,
        method: Method,
        expires_in: int,
        content_type: str | None = None,
    ) -> str:
        """A URL granting ``method`` on ``path`` of ``backend`` for ``expires_in`` seconds."""
        ...


class StorageBackend(ABC):
    """Base class of every backend; subclasses implement the underscore primitives.

    Paths given to public methods are relative to the backend's root (bucket, prefix or
    directory) and are validated by :func:`storeroom.paths.safe_path` before any I/O.
    """

    key: str
    """The name this backend is registered under."""

    #: Whether content type and user metadata are stored with the object itself.
    stores_attributes: bool = True

    #: Signs URLs where the store cannot (local disk, memory); set by the configuration.
    url_signer: UrlSigner | None = None

    #: How failed requests are retried (see :mod:`storeroom.retry`).
    retry: RetryPolicy = DEFAULT_RETRY

    #: Whether the store's own client retries (then storeroom does not retry again).
    retries_natively: bool = False

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key.strip():
            raise ConfigurationError(f"backend key must be a non-empty string, got {key!r}")
        self.key = key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, location={self.location!r})"

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the objects live, as a URL without credentials (for messages and reprs)."""

    # -- primitives -------------------------------------------------------------------------

    @abstractmethod
    def _write(self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions) -> PutResult:
        """Store ``body`` at ``path``; size and checksum fields are filled in by the caller."""

    @abstractmethod
    async def _write_async(
        self, path: str, body: bytes | AsyncIterator[bytes], opts: WriteOptions
    ) -> PutResult:
        """Async form of :meth:`_write`."""

    @abstractmethod
    def _read(self, path: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        """Start reading bytes ``[start, end)``; raise at once if the object is missing."""

    @abstractmethod
    async def _read_async(
        self, path: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        """Async form of :meth:`_read` (awaiting it performs the request)."""

    @abstractmethod
    def _head(self, path: str) -> ObjectInfo: ...

    @abstractmethod
    async def _head_async(self, path: str) -> ObjectInfo: ...

    @abstractmethod
    def _delete(self, path: str) -> None:
        """Delete ``path``; a missing object is not an error."""

    @abstractmethod
    async def _delete_async(self, path: str) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def _list_async(self, prefix: str) -> AsyncIterator[ObjectInfo]: ...

    @abstractmethod
    def _copy(self, src: str, dst: str) -> None:
        """Copy within this backend, server-side where the store can."""

    @abstractmethod
    async def _copy_async(self, src: str, dst: str) -> None: ...

    def signs_natively(self, method: Method) -> bool:
        """Whether the store itself can sign a URL for ``method``."""
        return False

    def _sign(self, path: str, method: Method, expires_in: int, content_type: str | None) -> str:
        raise self._signing_not_supported()

    async def _sign_async(
        self, path: str, method: Method, expires_in: int, content_type: str | None
    ) -> str:
        return self._sign(path, method, expires_in, content_type)

    def _translate(self, exc: Exception, path: str) -> StoreroomError | None:
        """Map a library exception to a storeroom one (None: wrap it in BackendError)."""
        if isinstance(exc, FileNotFoundError):
            return self._not_found(path)
        return None

    # -- shared logic -----------------------------------------------------------------------

    def _signing_not_supported(self) -> SigningNotSupported:
        return SigningNotSupported(
            f"backend {self.key!r} ({self.location}) cannot sign URLs: the store has no "
            "native signing. Use an S3, GCS or Azure backend, or configure an HMAC URL "
            "signer for this backend."
        )

    def _not_found(self, path: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {path!r} does not exist in backend {self.key!r}")

    def _error(self, exc: Exception, path: str, action: str) -> StoreroomError:
        if isinstance(exc, StoreroomError):
            return exc
        mapped = self._translate(exc, path)
        if mapped is not None:
            return mapped
        return BackendError(
            f"{action} {path!r} on backend {self.key!r} failed: {type(exc).__name__}: {exc}"
        )

    def _guard(self, path: str, operation: Operation) -> _Guard:
        return _Guard(self, path, operation)

    def _retrying(self, guard: _Guard, func: Callable[[], T]) -> T:
        """Run an idempotent primitive under the retry policy, unless the store retries."""
        if self.retries_natively:
            return func()
        return self.retry.call(func, guard.retried)

    async def _aretrying(self, guard: _Guard, func: Callable[[], Awaitable[T]]) -> T:
        if self.retries_natively:
            return await func()
        return await self.retry.acall(func, guard.retried)

    def _counted(self, items: Iterator[Any], guard: _Guard, measure: bool) -> Iterator[Any]:
        """Pass ``items`` through inside ``guard``; the event fires when they run out."""
        with guard:
            count = 0
            for item in items:
                count += len(item) if measure else 1
                yield item
            guard.size = count

    async def _acounted(
        self, items: AsyncIterator[Any], guard: _Guard, measure: bool
    ) -> AsyncIterator[Any]:
        with guard:
            count = 0
            async for item in items:
                count += len(item) if measure else 1
                yield item
            guard.size = count

    @staticmethod
    def _options(
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        chunk_size: int,
        max_concurrency: int,
        overwrite: bool = True,
    ) -> WriteOptions:
        _check_tuning(chunk_size, max_concurrency)
        return WriteOptions(
            content_type=content_type,
            metadata=dict(metadata) if metadata else {},
            chunk_size=chunk_size,
            max_concurrency=max_concurrency,
            create_only=not overwrite,
        )

    @staticmethod
    def _measured(result: PutResult, meter: Meter) -> PutResult:
        return PutResult(
            path=result.path,
            size=meter.size,
            checksum=meter.checksum,
            etag=result.etag,
            version=result.version,
        )

    # -- public API -------------------------------------------------------------------------

    def put(
        self,
        path: str,
        content: Content,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        checksum: str | None = "sha256",
        overwrite: bool = True,
    ) -> PutResult:
        """Stream ``content`` to ``path``, replacing any object there unless ``overwrite=False``.

        Content up to ``chunk_size`` bytes is sent in one PUT; larger content as one
        multipart upload of ``chunk_size`` parts, ``max_concurrency`` at a time. Size and
        checksum (``checksum`` names a hashlib algorithm, None to skip) are measured on the
        way; no request beyond the upload is made. With ``overwrite=False`` the write is
        create-only (a conditional write on obstore stores: ``If-None-Match: *`` on S3 and
        GCS, exclusive create on local disk) and raises :class:`ObjectExists` when an object
        is already there, leaving that object untouched.
        """
        path = safe_path(path)
        opts = self._options(content_type, metadata, chunk_size, max_concurrency, overwrite)
        meter = Meter(checksum)
        prefetch = Prefetch(chunk_size)
        with self._guard(path, "put") as guard:
            small = _small_body(content, meter, chunk_size)
            if small is not None:
                written = self._retrying(guard, lambda: self._write(path, small, opts))
                guard.size = meter.size
                return self._measured(written, meter)
            chunks = meter.wrap(iter_content(content, read_size_for(chunk_size)))
            body: bytes | Iterator[bytes] = b""
            for chunk in chunks:
                if prefetch.feed(chunk):
                    body = itertools.chain(prefetch.drain(), chunks)
                    opts = replace(opts, multipart=True)
                    break
            else:
                body = prefetch.body
            result = self._measured(self._write(path, body, opts), meter)
            guard.size = result.size
            return result

    async def put_async(
        self,
        path: str,
        content: Content,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        checksum: str | None = "sha256",
        overwrite: bool = True,
    ) -> PutResult:
        """Async form of :meth:`put`; also accepts async iterables and async file objects."""
        path = safe_path(path)
        opts = self._options(content_type, metadata, chunk_size, max_concurrency, overwrite)
        meter = Meter(checksum)
        prefetch = Prefetch(chunk_size)
        with self._guard(path, "put") as guard:
            small = _small_body(content, meter, chunk_size)
            if small is not None:
                written = await self._aretrying(
                    guard, lambda: self._write_async(path, small, opts)
                )
                guard.size = meter.size
                return self._measured(written, meter)
            chunks = meter.awrap(aiter_content(content, read_size_for(chunk_size)))
            body: bytes | AsyncIterator[bytes] = b""
            async for chunk in chunks:
                if prefetch.feed(chunk):
                    body = _achain(prefetch.drain(), chunks)
                    opts = replace(opts, multipart=True)
                    break
            else:
                body = prefetch.body
            result = self._measured(await self._write_async(path, body, opts), meter)
            guard.size = result.size
            return result

    def stream(
        self,
        path: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Read bytes ``[start, end)`` of ``path`` as an iterator of chunks.

        The request is made before this returns, so a missing object raises
        :class:`ObjectNotFound` here rather than on the first ``next()``.
        """
        path = safe_path(path)
        _check_range(start, end)
        guard = self._guard(path, "get")
        try:
            chunks = self._retrying(guard, lambda: self._read(path, start, end, chunk_size))
        except BaseException:
            with guard:
                raise
        return self._counted(chunks, guard, measure=True)

    async def stream_async(
        self,
        path: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        """Async form of :meth:`stream`: ``async for chunk in await backend.stream_async(p)``."""
        path = safe_path(path)
        _check_range(start, end)
        guard = self._guard(path, "get")
        try:
            chunks = await self._aretrying(
                guard, lambda: self._read_async(path, start, end, chunk_size)
            )
        except BaseException:
            with guard:
                raise
        return self._acounted(chunks, guard, measure=True)

    def get(self, path: str, *, start: int = 0, end: int | None = None) -> bytes:
        """Return bytes ``[start, end)`` of ``path`` (the whole object by default).

        Holds the result in memory: for large objects use :meth:`stream`.
        """
        return b"".join(self.stream(path, start=start, end=end))

    async def get_async(self, path: str, *, start: int = 0, end: int | None = None) -> bytes:
        """Async form of :meth:`get`."""
        chunks = await self.stream_async(path, start=start, end=end)
        return b"".join([chunk async for chunk in chunks])

    def head(self, path: str) -> ObjectInfo:
        """Return what the store knows about ``path``; ObjectNotFound if it is missing."""
        path = safe_path(path)
        with self._guard(path, "head") as guard:
            return self._retrying(guard, lambda: self._head(path))

    async def head_async(self, path: str) -> ObjectInfo:
        """Async form of :meth:`head`."""
        path = safe_path(path)
        with self._guard(path, "head") as guard:
            return await self._aretrying(guard, lambda: self._head_async(path))

    def exists(self, path: str) -> bool:
        """Whether an object exists at ``path``."""
        try:
            self.head(path)
        except ObjectNotFound:
            return False
        return True

    async def exists_async(self, path: str) -> bool:
        """Async form of :meth:`exists`."""
        try:
            await self.head_async(path)
        except ObjectNotFound:
            return False
        return True

    def delete(self, path: str) -> None:
        """Delete ``path``. Deleting a missing object is not an error (deletes are idempotent)."""
        path = safe_path(path)
        with self._guard(path, "delete") as guard:
            self._retrying(guard, lambda: self._delete(path))

    async def delete_async(self, path: str) -> None:
        """Async form of :meth:`delete`."""
        path = safe_path(path)
        with self._guard(path, "delete") as guard:
            await self._aretrying(guard, lambda: self._delete_async(path))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Iterate over the objects whose path starts with the directory ``prefix``."""
        prefix = safe_path(prefix) if prefix else ""
        return self._counted(self._list(prefix), self._guard(prefix, "list"), measure=False)

    def list_async(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Async form of :meth:`list`."""
        prefix = safe_path(prefix) if prefix else ""
        return self._acounted(
            self._list_async(prefix), self._guard(prefix, "list"), measure=False
        )

    def copy(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` within this backend (server-side where possible)."""
        src, dst = safe_path(src), safe_path(dst)
        with self._guard(src, "copy") as guard:
            self._retrying(guard, lambda: self._copy(src, dst))

    async def copy_async(self, src: str, dst: str) -> None:
        """Async form of :meth:`copy`."""
        src, dst = safe_path(src), safe_path(dst)
        with self._guard(src, "copy") as guard:
            await self._aretrying(guard, lambda: self._copy_async(src, dst))

    def sign(
        self,
        path: str,
        *,
        expires_in: int = 3600,
        for_upload: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Return a URL that grants GET (or PUT with ``for_upload``) on ``path`` for a while.

        Raises :class:`SigningNotSupported` when the store cannot sign.
        """
        path = safe_path(path)
        _check_expiry(expires_in)
        method: Method = "PUT" if for_upload else "GET"
        if self.url_signer is not None and not self.signs_natively(method):
            return self.url_signer.sign(
                self.key, path, method=method, expires_in=expires_in, content_type=content_type
            )
        with self._guard(path, "sign"):
            return self._sign(path, method, expires_in, content_type)

    async def sign_async(
        self,
        path: str,
        *,
        expires_in: int = 3600,
        for_upload: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Async form of :meth:`sign`."""
        path = safe_path(path)
        _check_expiry(expires_in)
        method: Method = "PUT" if for_upload else "GET"
        if self.url_signer is not None and not self.signs_natively(method):
            return self.url_signer.sign(
                self.key, path, method=method, expires_in=expires_in, content_type=content_type
            )
        with self._guard(path, "sign"):
            return await self._sign_async(path, method, expires_in, content_type)


def _small_body(content: Content, meter: Meter, chunk_size: int) -> bytes | None:
    """``content`` as bytes when it already is bytes-like and fits one PUT (the fast path)."""
    data = as_bytes(content)
    if data is None or len(data) > chunk_size:
        return None
    return meter.update(data)


def _check_expiry(expires_in: int) -> None:
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in < 1:
        raise ConfigurationError(
            f"expires_in must be a positive number of seconds, got {expires_in!r}"
        )
    if expires_in > 7 * 24 * 3600:
        raise ConfigurationError(
            f"expires_in={expires_in} is longer than 7 days (604800 s), the longest any "
            "supported store accepts for a signed URL"
        )
