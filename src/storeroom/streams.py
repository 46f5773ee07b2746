"""Turning whatever a user hands us into chunks, and measuring them as they pass.

Content may be ``bytes``/``bytearray``/``memoryview``, ``str`` (UTF-8), a path, a binary file
object (sync, or async with an awaitable ``read``), or a sync/async iterable of bytes. Sync
code accepts every form but the async ones; async code accepts all. Nothing here holds more
than one chunk, except :class:`Prefetch`, which holds at most ``limit`` bytes to decide
between a single PUT and a multipart upload.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar, Union, runtime_checkable

from storeroom import checksums
from storeroom.errors import ContentUnreadable, UnsupportedContent

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "AsyncReadable",
    "Content",
    "Meter",
    "Prefetch",
    "aiter_content",
    "as_bytes",
    "iter_content",
    "read_size_for",
]

DEFAULT_CHUNK_SIZE = 5 * 1024 * 1024
"""Part size of multipart uploads, and the largest upload done as a single PUT (5 MiB)."""

DEFAULT_MAX_CONCURRENCY = 12
"""Parts of one multipart upload sent at the same time."""

_READ_SIZE_MIN = 64 * 1024
_READ_SIZE_MAX = 8 * 1024 * 1024


@runtime_checkable
class AsyncReadable(Protocol):
    """A binary file object whose ``read`` is a coroutine (aiofiles, Starlette's UploadFile)."""

    async def read(self, size: int = -1, /) -> bytes: ...


Content = Union[
    bytes,
    bytearray,
    memoryview,
    str,
    "os.PathLike[str]",
    BinaryIO,
    AsyncReadable,
    Iterable[bytes],
    AsyncIterable[bytes],
]
"""Everything :meth:`StorageBackend.put` and :meth:`FileObject.save` accept."""


def read_size_for(chunk_size: int) -> int:
    """How many bytes to read from a file per call when uploading with ``chunk_size`` parts."""
    return max(_READ_SIZE_MIN, min(chunk_size, _READ_SIZE_MAX))


def _describe(content: object) -> str:
    return f"{type(content).__module__}.{type(content).__qualname__}"


def _is_async_source(content: object) -> bool:
    if isinstance(content, AsyncIterable):
        return True
    read = getattr(content, "read", None)
    return read is not None and inspect.iscoroutinefunction(read)


def as_bytes(content: object) -> bytes | None:
    """``content`` as bytes if it is bytes, bytearray, memoryview or str; else None."""
    if isinstance(content, bytes):
        return content
    if isinstance(content, (bytearray, memoryview)):
        return bytes(content)
    if isinstance(content, str):
        return content.encode("utf-8")
    return None


def _unsupported(content: object, *, sync: bool) -> UnsupportedContent:
    if sync and _is_async_source(content):
        return UnsupportedContent(
            f"cannot read async content ({_describe(content)}) from sync code; "
            "call the *_async method (for example save_async) instead"
        )
    return UnsupportedContent(
        f"cannot store content of type {_describe(content)}; pass bytes, str, a path, "
        "a binary file object, or a (sync or async) iterable of bytes"
    )


def _open_source(path: os.PathLike[str]) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ContentUnreadable(
            f"cannot read the content to save from {os.fspath(path)!r}: {exc.strerror or exc}"
        ) from exc


def _checked(chunk: object, *, from_file: bool = False) -> bytes:
    """A chunk from a user's file object or iterable as bytes, or a clear error."""
    if isinstance(chunk, bytes):
        return chunk
    if from_file and isinstance(chunk, str):
        raise UnsupportedContent("the file object returned str; open it in binary mode ('rb')")
    piece = as_bytes(chunk)
    if piece is None:
        raise UnsupportedContent(
            f"an iterable of content yielded {_describe(chunk)}; it must yield bytes"
        )
    return piece


@dataclass(frozen=True, slots=True)
class _Source:
    """How to read one piece of content: decided once, read by either twin."""

    kind: str
    """'bytes', 'path', 'read' (sync file), 'aread' (async file), 'iter' or 'aiter'."""
    value: Any


def _classify(content: Any, *, sync: bool) -> _Source:
    data = as_bytes(content)
    if data is not None:
        return _Source("bytes", data)
    if isinstance(content, os.PathLike):
        return _Source("path", content)
    read = getattr(content, "read", None)
    if read is not None and inspect.iscoroutinefunction(read):
        if sync:
            raise _unsupported(content, sync=True)
        return _Source("aread", read)
    if callable(read):
        return _Source("read", read)
    if isinstance(content, AsyncIterable):
        if sync:
            raise _unsupported(content, sync=True)
        return _Source("aiter", content)
    if isinstance(content, Iterable):
        return _Source("iter", content)
    raise _unsupported(content, sync=sync)


def iter_content(content: Any, read_size: int) -> Iterator[bytes]:
    """Yield ``content`` as non-empty bytes chunks, reading files ``read_size`` at a time."""
    source = _classify(content, sync=True)
    if source.kind == "bytes":
        if source.value:
            yield source.value
    elif source.kind == "path":
        with _open_source(source.value) as fileobj:
            while chunk := fileobj.read(read_size):
                yield chunk
    elif source.kind == "read":
        while chunk := source.value(read_size):
            yield _checked(chunk, from_file=True)
    else:
        for item in source.value:
            if piece := _checked(item):
                yield piece


async def aiter_content(content: Any, read_size: int) -> AsyncIterator[bytes]:
    """Async form of :func:`iter_content`; blocking reads run in a worker thread."""
    source = _classify(content, sync=False)
    if source.kind == "bytes":
        if source.value:
            yield source.value
    elif source.kind == "path":
        fileobj = await asyncio.to_thread(_open_source, source.value)
        try:
            while chunk := await asyncio.to_thread(fileobj.read, read_size):
                yield chunk
        finally:
            fileobj.close()
    elif source.kind == "read":
        while chunk := await asyncio.to_thread(source.value, read_size):
            yield _checked(chunk, from_file=True)
    elif source.kind == "aread":
        while chunk := await source.value(read_size):
            yield _checked(chunk, from_file=True)
    elif source.kind == "aiter":
        async for item in source.value:
            if piece := _checked(item):
                yield piece
    else:
        for item in source.value:
            if piece := _checked(item):
                yield piece


_Data = TypeVar("_Data", bytes, memoryview)


class Meter:
    """Counts bytes and computes a checksum of the chunks that pass through it.

    ``algorithm`` names the digest (see :mod:`storeroom.checksums`; None disables it).
    With ``background=True`` chunks are hashed in a worker thread while the caller goes on
    (for whole-object reads); call :meth:`settled` (or read :attr:`checksum`) at the end.
    """

    __slots__ = ("_hasher", "_result", "algorithm", "size")

    def __init__(
        self, algorithm: str | None = checksums.DEFAULT_ALGORITHM, *, background: bool = False
    ) -> None:
        self.algorithm = algorithm if algorithm is None else checksums.check_algorithm(algorithm)
        self.size = 0
        self._result: str | None = None
        self._hasher: checksums.Hasher | checksums.BackgroundHasher | None = None
        if self.algorithm is not None:
            hasher = checksums.new_hasher(self.algorithm, parallel=background)
            self._hasher = checksums.BackgroundHasher(hasher) if background else hasher

    @classmethod
    def expecting(cls, recorded: str | None, *, background: bool = False) -> Meter:
        """A meter hashing with the algorithm ``recorded`` names (none when nothing is)."""
        return cls(checksums.algorithm_of(recorded), background=background)

    def fresh(self) -> Meter:
        """A new meter of the same kind, having seen nothing."""
        background = isinstance(self._hasher, checksums.BackgroundHasher)
        return Meter(self.algorithm, background=background)

    def adopt(self, other: Meter) -> None:
        """Take over what ``other`` measured (the attempt that succeeded)."""
        self.size, self._hasher, self._result = other.size, other._hasher, other._result

    def update(self, chunk: _Data) -> _Data:
        """Account for ``chunk`` (bytes, or a view of them) and return it unchanged."""
        self.size += len(chunk)
        if self._hasher is not None:
            self._hasher.update(chunk)
        return chunk

    def measured(self, size: int, checksum: str | None) -> None:
        """Take a size and checksum computed elsewhere (a background hash of whole bytes)."""
        self.size, self._result, self._hasher = size, checksum, None

    def settled(self) -> Future[None] | None:
        """For a background meter, a future done once all chunks are hashed; else None."""
        hasher = self._hasher
        return hasher.settled() if isinstance(hasher, checksums.BackgroundHasher) else None

    @property
    def checksum(self) -> str | None:
        """``"<algorithm>:<hex digest>"`` of everything seen so far, or None when disabled."""
        if self._hasher is None:
            return self._result
        return f"{self.algorithm}:{self._hasher.hexdigest()}"

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``chunks`` through, metering each."""
        for chunk in chunks:
            yield self.update(chunk)

    async def awrap(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Async form of :meth:`wrap`."""
        async for chunk in chunks:
            yield self.update(chunk)


@dataclass(slots=True)
class Prefetch:
    """Buffers the head of a stream to choose between one PUT and a multipart upload.

    Feed chunks until :meth:`feed` returns True (the stream is larger than ``limit``) or the
    stream ends. A stream that ended is sent whole (:attr:`body`); otherwise the buffered
    chunks are sent first, followed by the rest of the stream.
    """

    limit: int
    buffered: list[bytes] = field(default_factory=list)
    size: int = 0

    def feed(self, chunk: bytes) -> bool:
        """Buffer ``chunk``; return True once more than ``limit`` bytes were seen."""
        self.buffered.append(chunk)
        self.size += len(chunk)
        return self.size > self.limit

    @property
    def body(self) -> bytes:
        """The whole (small) stream as one bytes object."""
        return b"".join(self.buffered)

    def drain(self) -> list[bytes]:
        """Hand over the buffered chunks, forgetting them."""
        chunks, self.buffered = self.buffered, []
        return chunks
