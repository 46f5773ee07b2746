"""The one extension point: :class:`StorageBackend`.

A backend implements a handful of primitives (write, read, head, delete, list, copy and,
where the store can, sign), each in a sync and an async form. Everything a user calls is
built once here on top of them: path validation, reading content of any supported type,
counting and checksumming bytes as they stream, choosing between one PUT and a multipart
upload, and turning the underlying library's exceptions into storeroom's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    NamedTuple,
    NoReturn,
    Protocol,
    TypeVar,
    runtime_checkable,
)

from storeroom import checksums, events
from storeroom.backends._unfilled import unfilled
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

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "BACKEND_DEFAULT",
    "DEFAULT_READ_CHUNK_SIZE",
    "ListedBatch",
    "ListedRow",
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

BACKEND_DEFAULT = "default"
"""``put(checksum=...)`` value meaning the backend's :attr:`StorageBackend.checksum_algorithm`."""

_WHOLE_READ_CHUNK = 4 * 1024 * 1024


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


ListedRow = tuple[str, int, float | None, str | None, str | None]
"""One object as :meth:`StorageBackend.list_rows` gives it: path, size, modified, etag, version."""

ListedBatch = list[ListedRow]
"""A batch of :data:`ListedRow` (``list`` is a method name inside the backend class)."""

_ROWS_PER_BATCH = 1000


class PutResult(NamedTuple):
    """Outcome of a save: what was written, measured while it streamed.

    An immutable record (a named tuple: built in a fraction of a frozen dataclass's time,
    and every save makes one or two).
    """

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


_NO_METADATA: Mapping[str, str] = MappingProxyType({})
_SHARED_OPTIONS: dict[tuple[str | None, int, int, bool], WriteOptions] = {}


def _listed_row(info: ObjectInfo) -> ListedRow:
    when = info.last_modified
    return (info.path, info.size, when.timestamp() if when else None, info.etag, info.version)


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
    Timing starts (and an event is built) only when someone subscribed to events.
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
        if exc is None:  # the common way out, in as few calls as possible
            if self.started is not None:
                self.emit()
            return False
        self._raise_translated(exc)
        return False  # exc itself goes on

    def reraise(self, exc: BaseException) -> NoReturn:
        """End the operation with ``exc`` and raise what :meth:`end` makes of it."""
        self._raise_translated(exc)
        raise exc

    def _raise_translated(self, exc: BaseException) -> None:
        """End the operation; raise the error it makes of ``exc`` when that is another."""
        error = self.end(exc)
        if error is not exc and error is not None:
            raise error from exc

    def end(self, exc: BaseException | None) -> BaseException | None:
        """Finish the operation (emitting its event); return the error to raise, if any.

        A library error becomes storeroom's; ``GeneratorExit`` or a cancellation (the
        caller stopped early) ends the operation without an error.
        """
        error: BaseException | None = exc
        if isinstance(exc, Exception) and not isinstance(exc, StoreroomError):
            error = self.backend._error(exc, self.path, _ACTIONS[self.operation])
        if self.started is not None:
            self.emit(error if isinstance(error, Exception) else None)
        return error

    def emit(self, error: BaseException | None = None) -> None:
        """Send the operation's event, once."""
        if self.started is None:
            return
        started, self.started = self.started, None
        events.emit(
            events.StorageEvent(
                operation=self.operation,
                backend=self.backend.key,
                path=self.path,
                duration=time.perf_counter() - started,
                size=self.size,
                attempts=self.attempts,
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
        )


class _Counted:
    """A read or listing in progress: passes items through and ends its operation once.

    The operation ends when the items run out, when one fails, or when the caller stops
    early (``close()``, or the stream is dropped); each way emits the one event.
    """

    __slots__ = ("__weakref__", "_count", "_guard", "_items", "_measure", "_open")

    def __init__(self, items: Iterator[Any], guard: _Guard, measure: bool) -> None:
        self._items, self._guard, self._measure = items, guard, measure
        self._count = 0
        self._open = True

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        if not self._open:
            raise StopIteration
        try:
            item = next(self._items)
        except StopIteration:
            self._end(None)
            raise
        except BaseException as exc:
            _release(self._items)
            error = self._end(exc)
            if error is not exc and error is not None:
                raise error from exc
            raise
        self._count += len(item) if self._measure else 1
        return item

    def _end(self, exc: BaseException | None) -> BaseException | None:
        self._open = False
        self._guard.size = self._count
        return self._guard.end(exc)

    def close(self) -> None:
        """Stop reading: release the underlying stream and end the operation."""
        if self._open:
            self._end(None)
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __del__(self) -> None:
        if self._open:
            self._end(None)


def _release(items: object) -> None:
    """Release what a stream holds once a read from it failed or was cancelled: its
    ``close()``, when it has one that is not a coroutine (a local file is closed; an async
    generator, whose ``aclose()`` must be awaited, is left to be finalized)."""
    close = getattr(items, "close", None)
    if close is not None and not inspect.iscoroutinefunction(close):
        with contextlib.suppress(Exception):
            close()


class _ACounted:
    """Async form of :class:`_Counted` (``aclose()`` or dropping it ends the operation)."""

    __slots__ = ("__weakref__", "_count", "_guard", "_items", "_measure", "_open")

    def __init__(self, items: AsyncIterator[Any], guard: _Guard, measure: bool) -> None:
        self._items, self._guard, self._measure = items, guard, measure
        self._count = 0
        self._open = True

    def __aiter__(self) -> _ACounted:
        return self

    async def __anext__(self) -> Any:
        if not self._open:
            raise StopAsyncIteration
        try:
            item = await self._items.__anext__()
        except StopAsyncIteration:
            self._end(None)
            raise
        except BaseException as exc:
            _release(self._items)  # (cancelled: a read still running in a thread may finish)
            error = self._end(exc)
            if error is not exc and error is not None:
                raise error from exc
            raise
        self._count += len(item) if self._measure else 1
        return item

    def _end(self, exc: BaseException | None) -> BaseException | None:
        self._open = False
        self._guard.size = self._count
        return self._guard.end(exc)

    async def aclose(self) -> None:
        """Stop reading: release the underlying stream and end the operation."""
        if self._open:
            self._end(None)
            aclose = getattr(self._items, "aclose", None)
            if aclose is not None:
                await aclose()

    def __del__(self) -> None:
        if self._open:
            self._end(None)


class _Batches:
    """Groups listed objects into :data:`ListedBatch` lists, for the sync and async listings."""

    __slots__ = ("batch",)

    def __init__(self) -> None:
        self.batch: ListedBatch = []

    def add(self, info: ObjectInfo) -> ListedBatch | None:
        """Add ``info``; the batch, handed over, once it is full."""
        self.batch.append(_listed_row(info))
        if len(self.batch) < _ROWS_PER_BATCH:
            return None
        full, self.batch = self.batch, []
        return full


class _Upload:
    """The decisions of one save, shared by :meth:`~StorageBackend.put` and its async twin.

    Validates the path and tuning, chooses the digest, and decides how the content goes up:
    content already in memory (bytes, str) is written as it is, in one PUT or as one
    multipart upload, and hashed in a worker thread meanwhile when it is large; any other
    content streams, its head buffered to choose between one PUT and a multipart upload.
    The twins only sequence the I/O.
    """

    __slots__ = ("checksum", "hashing", "meter", "opts", "path", "prefetch", "whole")

    def __init__(
        self,
        backend: StorageBackend,
        path: str,
        content: Content,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        chunk_size: int,
        max_concurrency: int,
        checksum: str | None,
        overwrite: bool,
    ) -> None:
        self.path = safe_path(path)
        opts = backend._options(content_type, metadata, chunk_size, max_concurrency, overwrite)
        algorithm = backend.checksum_algorithm if checksum == BACKEND_DEFAULT else checksum
        self.hashing: Future[str] | None = None
        self.whole = whole = as_bytes(content)
        self.checksum: str | None = None
        if whole is not None:
            # Bytes already in memory: one digest of the whole (no hasher fed chunk by
            # chunk), in a worker thread meanwhile when they are large.
            size = len(whole)
            if size > chunk_size and not backend.served_locally:
                opts = replace(opts, multipart=True)
            if algorithm is not None and size >= checksums.BACKGROUND_THRESHOLD:
                self.hashing = checksums.digest_in_background(
                    checksums.check_algorithm(algorithm), whole
                )
            elif algorithm is not None:
                self.checksum = checksums.digest(algorithm, whole)  # (it checks the name)
        else:
            self.meter = Meter(algorithm)
            self.prefetch = Prefetch(chunk_size)
        self.opts = opts

    @property
    def read_size(self) -> int:
        """How much to read from a file source at a time."""
        return read_size_for(self.opts.chunk_size)

    def feed(self, chunk: bytes) -> bool:
        """Buffer a streamed chunk; True once the content needs a multipart upload."""
        if self.prefetch.feed(chunk):
            self.opts = replace(self.opts, multipart=True)
            return True
        return False

    def abandon(self) -> None:
        """The write failed: a background hash that has not started is not needed."""
        if self.hashing is not None:
            self.hashing.cancel()

    def finish(
        self, written: PutResult, guard: _Guard | None, digest: str | None = None
    ) -> PutResult:
        """The save's result, with the size and checksum measured on the way (for bytes
        in memory: their length, and the digest computed before or, ``digest``, beside)."""
        whole = self.whole
        if whole is not None:
            size, checksum = len(whole), self.checksum if self.hashing is None else digest
        else:
            size, checksum = self.meter.size, self.meter.checksum
        if guard is not None:
            guard.size = size
        # path, size, checksum, etag, version
        return PutResult(written[0], size, checksum, written[3], written[4])


def collect(
    chunks: Iterator[bytes], meter: Meter | None = None, *, size: int | None = None, path: str = ""
) -> bytes:
    """Concatenate ``chunks`` into one bytes object, copying each once as it arrives.

    When ``size`` is known (what the store announced for the body), the result is made at
    that size and each chunk is copied straight into it, so the bytes are copied once on
    their way from the store (see :mod:`storeroom.backends._unfilled`); a body longer or
    shorter than announced raises :class:`BackendError` naming ``path``. Otherwise BytesIO
    grows its buffer in place (``realloc``) and hands it over in ``getvalue()`` without
    another copy. Either way peak memory is the result plus one chunk. Each chunk also
    goes through ``meter`` when one is given.
    """
    assembly = _Assembly(meter, size, path)
    for chunk in chunks:
        assembly.add(chunk)
    return assembly.result()


async def collect_async(
    chunks: AsyncIterator[bytes],
    meter: Meter | None = None,
    *,
    size: int | None = None,
    path: str = "",
) -> bytes:
    """Async form of :func:`collect`."""
    assembly = _Assembly(meter, size, path)
    async for chunk in chunks:
        assembly.add(chunk)
    return assembly.result()


_METER_STEP = 4 * 1024 * 1024
"""A result filled in place goes through its meter this much at a time (a background
hasher then hashes large pieces of the result itself, not one small chunk after another)."""


class _Assembly:
    """One bytes object built from chunks (no I/O; shared by :func:`collect` and its twin)."""

    __slots__ = ("at", "buffer", "first", "meter", "metered", "path", "size", "target", "view")

    def __init__(self, meter: Meter | None, size: int | None, path: str) -> None:
        self.meter, self.size, self.path = meter, size, path
        self.first: bytes | None = None
        self.buffer: io.BytesIO | None = None
        made = None if size is None else unfilled(size)
        self.target: bytes | None = None
        self.view: memoryview | None = None
        if made is not None:
            self.target, self.view = made
        self.at = self.metered = 0

    def add(self, chunk: bytes) -> None:
        view = self.view
        if view is not None:
            at, end = self.at, self.at + len(chunk)
            if end > len(view):
                self.view = None  # never written again
                raise self._mismatch(end)
            view[at:end] = chunk
            self.at = end
            if self.meter is not None and end - self.metered >= _METER_STEP:
                self._meter_to(end)
            return
        if self.meter is not None:
            self.meter.update(chunk)
        if self.buffer is not None:
            self.buffer.write(chunk)
        elif self.first is None:
            self.first = chunk  # a single chunk is returned as it is, uncopied
        else:
            self.buffer = io.BytesIO()
            self.buffer.write(self.first)
            self.buffer.write(chunk)
            self.first = None

    def _meter_to(self, end: int) -> None:
        assert self.meter is not None and self.target is not None
        # A read-only view keeps the result alive for a hasher still working on it.
        self.meter.update(memoryview(self.target)[self.metered : end])
        self.metered = end

    def _mismatch(self, received: int) -> BackendError:
        return BackendError(
            f"the store announced {self.size} bytes for {self.path!r} but sent "
            f"{'at least ' if received > (self.size or 0) else ''}{received}; the object "
            "changed while it was read or the store's answer was cut short: read it again"
        )

    def result(self) -> bytes:
        if self.target is not None:
            if self.at != self.size:
                raise self._mismatch(self.at)
            self.view = None  # filled: nothing writes to the result from here on
            if self.meter is not None and self.metered < self.at:
                self._meter_to(self.at)
            return self.target
        if self.buffer is not None:
            return self.buffer.getvalue()
        return self.first if self.first is not None else b""


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

    #: The digest new saves record (see :mod:`storeroom.checksums`); None records none.
    checksum_algorithm: str | None = checksums.DEFAULT_ALGORITHM

    #: Whether the store answers from this machine (memory, a local directory): no request
    #: crosses a network, so content in memory goes up in one write whatever its size
    #: (splitting it only adds copies) and overlapping requests gains nothing.
    served_locally: bool = False

    @property
    def listing_directory(self) -> str | None:
        """The local directory a listing of this backend walks, when another process may walk it.

        Set (on obstore's local stores) only where any process listing that directory lists
        what :meth:`list_rows` would; the scans behind ``storeroom verify`` and ``gc`` then
        list a large store in a child process (:mod:`storeroom.backends.local_listing`).
        None, the default, keeps every listing in this process.
        """
        return None

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

    def _read_all(self, path: str, meter: Meter | None) -> bytes:
        """The whole object in one bytes object, each byte through ``meter`` if given.

        Backends may override it with a faster way than collecting chunks.
        """
        return collect(self._read(path, 0, None, _WHOLE_READ_CHUNK), meter)

    async def _read_all_async(self, path: str, meter: Meter | None) -> bytes:
        """Async form of :meth:`_read_all`."""
        chunks = await self._read_async(path, 0, None, _WHOLE_READ_CHUNK)
        return await collect_async(chunks, meter)

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

    def _retrying(self, guard: _Guard, func: Callable[[], T]) -> T:
        """Run an idempotent primitive under the retry policy, unless the store retries."""
        if self.retries_natively:
            return func()
        return self.retry.call(func, guard.retried)

    async def _aretrying(self, guard: _Guard, func: Callable[[], Awaitable[T]]) -> T:
        if self.retries_natively:
            return await func()
        return await self.retry.acall(func, guard.retried)

    @staticmethod
    def _options(
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        chunk_size: int,
        max_concurrency: int,
        overwrite: bool = True,
    ) -> WriteOptions:
        shared = not metadata and type(chunk_size) is int and type(max_concurrency) is int
        if shared:
            # Options without metadata are shared (they are frozen, their metadata an empty
            # read-only mapping): most saves use a handful of combinations.
            key = (content_type, chunk_size, max_concurrency, bool(overwrite))
            cached = _SHARED_OPTIONS.get(key)
            if cached is not None:
                return cached
        _check_tuning(chunk_size, max_concurrency)
        opts = WriteOptions(
            content_type=content_type,
            metadata=dict(metadata) if metadata else _NO_METADATA,
            chunk_size=chunk_size,
            max_concurrency=max_concurrency,
            create_only=not overwrite,
        )
        if shared:
            if len(_SHARED_OPTIONS) >= 256:
                _SHARED_OPTIONS.clear()
            _SHARED_OPTIONS[key] = opts
        return opts

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
        checksum: str | None = BACKEND_DEFAULT,
        overwrite: bool = True,
    ) -> PutResult:
        """Stream ``content`` to ``path``, replacing any object there unless ``overwrite=False``.

        Content up to ``chunk_size`` bytes is sent in one PUT; larger content as one
        multipart upload of ``chunk_size`` parts, ``max_concurrency`` at a time (content
        given as bytes goes in one write on local and memory stores). Size and checksum are
        measured on the way: ``checksum`` names the digest (see :mod:`storeroom.checksums`;
        ``"default"`` is the backend's :attr:`checksum_algorithm`, None skips it). No
        request beyond the upload is made. With ``overwrite=False`` the write is create-only
        (a conditional write on obstore stores: ``If-None-Match: *`` on S3 and GCS,
        exclusive create on local disk) and raises :class:`ObjectExists` when an object is
        already there, leaving that object untouched.
        """
        upload = _Upload(
            self,
            path,
            content,
            content_type,
            metadata,
            chunk_size,
            max_concurrency,
            checksum,
            overwrite,
        )
        path, opts, whole = upload.path, upload.opts, upload.whole
        if whole is not None and self.retries_natively and not events._subscribers:
            # As in get: no event to send, no attempt to count, only errors to translate
            # (every small save comes this way).
            try:
                written = self._write(path, whole, opts)
                digest = None if upload.hashing is None else upload.hashing.result()
            except BaseException as exc:
                upload.abandon()
                _Guard(self, path, "put").reraise(exc)
            return upload.finish(written, None, digest)
        with _Guard(self, path, "put") as guard:
            if whole is not None:
                try:
                    written = self._retrying(guard, lambda: self._write(path, whole, opts))
                except BaseException:
                    upload.abandon()
                    raise
                digest = None if upload.hashing is None else upload.hashing.result()
                return upload.finish(written, guard, digest)
            chunks = upload.meter.wrap(iter_content(content, upload.read_size))
            body: bytes | Iterator[bytes] = b""
            for chunk in chunks:
                if upload.feed(chunk):
                    body = itertools.chain(upload.prefetch.drain(), chunks)
                    break
            else:
                body = upload.prefetch.body
            return upload.finish(self._write(path, body, upload.opts), guard)

    async def put_async(
        self,
        path: str,
        content: Content,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        checksum: str | None = BACKEND_DEFAULT,
        overwrite: bool = True,
    ) -> PutResult:
        """Async form of :meth:`put`; also accepts async iterables and async file objects."""
        upload = _Upload(
            self,
            path,
            content,
            content_type,
            metadata,
            chunk_size,
            max_concurrency,
            checksum,
            overwrite,
        )
        path, opts, whole = upload.path, upload.opts, upload.whole
        hashing = upload.hashing
        digest: str | None = None
        if whole is not None and self.retries_natively and not events._subscribers:
            try:
                written = await self._write_async(path, whole, opts)
                if hashing is not None:
                    digest = await asyncio.wrap_future(hashing)
            except BaseException as exc:
                upload.abandon()
                _Guard(self, path, "put").reraise(exc)
            return upload.finish(written, None, digest)
        with _Guard(self, path, "put") as guard:
            if whole is not None:
                try:
                    written = await self._aretrying(
                        guard, lambda: self._write_async(path, whole, opts)
                    )
                except BaseException:
                    upload.abandon()
                    raise
                if hashing is not None:
                    digest = await asyncio.wrap_future(hashing)
                return upload.finish(written, guard, digest)
            chunks = upload.meter.awrap(aiter_content(content, upload.read_size))
            body: bytes | AsyncIterator[bytes] = b""
            async for chunk in chunks:
                if upload.feed(chunk):
                    body = _achain(upload.prefetch.drain(), chunks)
                    break
            else:
                body = upload.prefetch.body
            return upload.finish(await self._write_async(path, body, upload.opts), guard)

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
        guard = _Guard(self, path, "get")
        try:
            chunks = self._retrying(guard, lambda: self._read(path, start, end, chunk_size))
        except BaseException:
            with guard:
                raise
        return _Counted(chunks, guard, measure=True)

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
        guard = _Guard(self, path, "get")
        try:
            chunks = await self._aretrying(
                guard, lambda: self._read_async(path, start, end, chunk_size)
            )
        except BaseException:
            with guard:
                raise
        return _ACounted(chunks, guard, measure=True)

    def get(
        self, path: str, *, start: int = 0, end: int | None = None, meter: Meter | None = None
    ) -> bytes:
        """Return bytes ``[start, end)`` of ``path`` (the whole object by default).

        Holds the result in memory: for large objects use :meth:`stream`. A whole object
        is read into one buffer (on local disk, straight from the file). Every byte read
        also goes through ``meter`` when one is given (how ``get_content`` verifies).
        """
        if start or end is not None:
            chunks = self.stream(path, start=start, end=end, chunk_size=_WHOLE_READ_CHUNK)
            return collect(chunks, meter)
        path = safe_path(path)
        if self.retries_natively and not events._subscribers:  # has_subscribers(), inline
            # No event to send, no attempt to count: only errors to translate (the path
            # of every small read, where a guard object costs as much as the read).
            try:
                return self._read_all(path, meter)
            except BaseException as exc:
                _Guard(self, path, "get").reraise(exc)
        with _Guard(self, path, "get") as guard:
            if self.retries_natively:
                data, used = self._read_all(path, meter), None
            else:
                data, used = self._retrying(guard, lambda: _attempt(self._read_all, path, meter))
            guard.size = len(data)
            if meter is not None and used is not None:
                meter.adopt(used)
            return data

    async def get_async(
        self, path: str, *, start: int = 0, end: int | None = None, meter: Meter | None = None
    ) -> bytes:
        """Async form of :meth:`get`."""
        if start or end is not None:
            chunks = await self.stream_async(
                path, start=start, end=end, chunk_size=_WHOLE_READ_CHUNK
            )
            return await collect_async(chunks, meter)
        path = safe_path(path)
        if self.retries_natively and not events._subscribers:  # as in get
            try:
                return await self._read_all_async(path, meter)
            except BaseException as exc:
                _Guard(self, path, "get").reraise(exc)
        with _Guard(self, path, "get") as guard:
            if self.retries_natively:
                data, used = await self._read_all_async(path, meter), None
            else:
                data, used = await self._aretrying(
                    guard, lambda: _attempt_async(self._read_all_async, path, meter)
                )
            guard.size = len(data)
            if meter is not None and used is not None:
                meter.adopt(used)
            return data

    def head(self, path: str) -> ObjectInfo:
        """Return what the store knows about ``path``; ObjectNotFound if it is missing."""
        path = safe_path(path)
        with _Guard(self, path, "head") as guard:
            return self._retrying(guard, lambda: self._head(path))

    async def head_async(self, path: str) -> ObjectInfo:
        """Async form of :meth:`head`."""
        path = safe_path(path)
        with _Guard(self, path, "head") as guard:
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
        with _Guard(self, path, "delete") as guard:
            self._retrying(guard, lambda: self._delete(path))

    async def delete_async(self, path: str) -> None:
        """Async form of :meth:`delete`."""
        path = safe_path(path)
        with _Guard(self, path, "delete") as guard:
            await self._aretrying(guard, lambda: self._delete_async(path))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Iterate over the objects whose path starts with the directory ``prefix``."""
        prefix = safe_path(prefix) if prefix else ""
        return _Counted(self._list(prefix), _Guard(self, prefix, "list"), measure=False)

    def list_rows(self, prefix: str = "") -> Iterator[ListedBatch]:
        """:meth:`list` in batches of plain rows, for bulk work over a whole store.

        Each row is ``(path, size, last modified as a Unix timestamp or None, etag,
        version)``; the same objects as :meth:`list`, without an :class:`ObjectInfo` each
        (what the scans behind ``storeroom verify`` and ``gc`` read, a million objects at a
        time).
        """
        prefix = safe_path(prefix) if prefix else ""
        return _Counted(self._list_rows(prefix), _Guard(self, prefix, "list"), measure=True)

    def _list_rows(self, prefix: str) -> Iterator[ListedBatch]:
        """Batches for :meth:`list_rows` (a store with a cheaper way overrides it)."""
        batches = _Batches()
        for info in self._list(prefix):
            if (full := batches.add(info)) is not None:
                yield full
        if rest := batches.batch:
            yield rest

    def list_rows_async(self, prefix: str = "") -> AsyncIterator[ListedBatch]:
        """Async form of :meth:`list_rows`."""
        prefix = safe_path(prefix) if prefix else ""
        return _ACounted(self._list_rows_async(prefix), _Guard(self, prefix, "list"), measure=True)

    async def _list_rows_async(self, prefix: str) -> AsyncIterator[ListedBatch]:
        """Async form of :meth:`_list_rows`."""
        batches = _Batches()
        async for info in self._list_async(prefix):
            if (full := batches.add(info)) is not None:
                yield full
        if rest := batches.batch:
            yield rest

    def list_async(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Async form of :meth:`list`."""
        prefix = safe_path(prefix) if prefix else ""
        return _ACounted(self._list_async(prefix), _Guard(self, prefix, "list"), measure=False)

    def copy(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` within this backend (server-side where possible)."""
        src, dst = safe_path(src), safe_path(dst)
        with _Guard(self, src, "copy") as guard:
            self._retrying(guard, lambda: self._copy(src, dst))

    async def copy_async(self, src: str, dst: str) -> None:
        """Async form of :meth:`copy`."""
        src, dst = safe_path(src), safe_path(dst)
        with _Guard(self, src, "copy") as guard:
            await self._aretrying(guard, lambda: self._copy_async(src, dst))

    def copies_from(
        self, source: StorageBackend, *, create_only: bool = False, size: int | None = None
    ) -> bool:
        """Whether this backend's store copies ``source``'s objects itself (server-side).

        True within one backend for a copy that may replace what is at the destination.
        Stores that also reach another backend's objects (two prefixes of one bucket) or
        copy create-only override it; ``size`` (the object's, when known) lets a store
        refuse objects it cannot copy in one request. :mod:`storeroom.backends.transfer`
        asks before every copy and streams the bytes when the answer is no.
        """
        return source is self and not create_only

    def copy_from(
        self,
        source: StorageBackend,
        src: str,
        dst: str,
        *,
        create_only: bool = False,
        size: int | None = None,
    ) -> None:
        """Copy ``src`` of ``source`` to ``dst`` here, server-side (see :meth:`copies_from`).

        No byte passes through this process. With ``create_only`` an object already at
        ``dst`` raises :class:`ObjectExists` and is left as it is. ``size`` is the object's
        size when known (else, where the store needs it, one HEAD asks). A copy the store
        cannot make raises :class:`ConfigurationError`; for a copy any two backends can
        make, verified, use :func:`storeroom.backends.transfer.copy`.
        """
        src, dst = safe_path(src), safe_path(dst)
        self._check_copies_from(source, src, dst, create_only, size)
        with _Guard(self, src, "copy") as guard:
            self._retrying(guard, lambda: self._copy_from(source, src, dst, create_only))

    async def copy_from_async(
        self,
        source: StorageBackend,
        src: str,
        dst: str,
        *,
        create_only: bool = False,
        size: int | None = None,
    ) -> None:
        """Async form of :meth:`copy_from`."""
        src, dst = safe_path(src), safe_path(dst)
        if size is None and not self.copies_from(source, create_only=create_only):
            size = (await source.head_async(src)).size
        self._check_copies_from(source, src, dst, create_only, size)
        with _Guard(self, src, "copy") as guard:
            await self._aretrying(
                guard, lambda: self._copy_from_async(source, src, dst, create_only)
            )

    def _check_copies_from(
        self, source: StorageBackend, src: str, dst: str, create_only: bool, size: int | None
    ) -> None:
        if source is self and src == dst:
            raise ConfigurationError(
                f"cannot copy {src!r} onto itself in backend {self.key!r}; give another path"
            )
        if size is None and not self.copies_from(source, create_only=create_only):
            size = source.head(src).size  # (the async twin asks before calling this)
        if not self.copies_from(source, create_only=create_only, size=size):
            kind = "create-only copies" if create_only else "copies"
            raise ConfigurationError(
                f"backend {self.key!r} cannot make server-side {kind} of backend "
                f"{source.key!r}'s objects (their stores differ, or this store makes no such "
                "copy, or none of an object this size); storeroom.backends.transfer.copy "
                "streams the bytes instead"
            )

    def _copy_from(self, source: StorageBackend, src: str, dst: str, create_only: bool) -> None:
        """Primitive of :meth:`copy_from`: by default a copy within this backend."""
        self._copy(src, dst)

    async def _copy_from_async(
        self, source: StorageBackend, src: str, dst: str, create_only: bool
    ) -> None:
        """Async form of :meth:`_copy_from`."""
        await self._copy_async(src, dst)

    def _sign_plan(
        self, path: str, expires_in: int, for_upload: bool, content_type: str | None
    ) -> tuple[str, Method, str | None]:
        """Validate a signing request; sign it here when the configured signer does."""
        path = safe_path(path)
        _check_expiry(expires_in)
        method: Method = "PUT" if for_upload else "GET"
        if self.url_signer is not None and not self.signs_natively(method):
            url = self.url_signer.sign(
                self.key, path, method=method, expires_in=expires_in, content_type=content_type
            )
            return path, method, url
        return path, method, None

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
        path, method, url = self._sign_plan(path, expires_in, for_upload, content_type)
        if url is not None:
            return url
        with _Guard(self, path, "sign"):
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
        path, method, url = self._sign_plan(path, expires_in, for_upload, content_type)
        if url is not None:
            return url
        with _Guard(self, path, "sign"):
            return await self._sign_async(path, method, expires_in, content_type)


def _attempt(
    read: Callable[[str, Meter | None], bytes], path: str, meter: Meter | None
) -> tuple[bytes, Meter | None]:
    """One attempt of a whole read, metered afresh (a retry must not count bytes twice)."""
    fresh = None if meter is None else meter.fresh()
    return read(path, fresh), fresh


async def _attempt_async(
    read: Callable[[str, Meter | None], Awaitable[bytes]], path: str, meter: Meter | None
) -> tuple[bytes, Meter | None]:
    """Async form of :func:`_attempt`."""
    fresh = None if meter is None else meter.fresh()
    return await read(path, fresh), fresh


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
