"""File-like readers over stored objects, with seeking done as ranged reads."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from storeroom.errors import ConfigurationError

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend

__all__ = ["AsyncObjectReader", "ObjectReader"]


class _Cursor:
    """Position bookkeeping shared by the sync and async readers (no I/O)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pos = 0
        self.buffer = b""

    def seek(self, offset: int, whence: int) -> tuple[int, bool]:
        """Move; return the new position and whether the open stream must be dropped."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ConfigurationError(f"invalid whence {whence!r}; use 0, 1 or 2")
        target = base + offset
        if target < 0:
            raise ConfigurationError(f"cannot seek to negative position {target}")
        moved = target != self.pos
        self.pos = target
        if moved:
            self.buffer = b""
        return target, moved

    def take(self, size: int) -> bytes:
        """Remove up to ``size`` bytes (all when negative) from the buffer and advance."""
        if size < 0 or size >= len(self.buffer):
            data, self.buffer = self.buffer, b""
        else:
            data, self.buffer = self.buffer[:size], self.buffer[size:]
        self.pos += len(data)
        return data

    def wants(self, size: int) -> bool:
        """Whether more bytes must be fetched to answer a read of ``size``."""
        if self.pos >= self.size:
            return False
        return size < 0 or len(self.buffer) < size


class ObjectReader(io.RawIOBase):
    """A read-only, seekable binary file over one stored object.

    Reads stream from the store; a seek starts a new ranged read at the next ``read``.
    """

    def __init__(self, backend: StorageBackend, path: str, size: int, chunk_size: int) -> None:
        super().__init__()
        self._backend = backend
        self._path = path
        self._chunk_size = chunk_size
        self._cursor = _Cursor(size)
        self._chunks: Iterator[bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._cursor.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        pos, moved = self._cursor.seek(offset, whence)
        if moved:
            self._chunks = None
        return pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        cursor = self._cursor
        while cursor.wants(size):
            if self._chunks is None:
                start = cursor.pos + len(cursor.buffer)
                self._chunks = self._backend.stream(
                    self._path, start=start, chunk_size=self._chunk_size
                )
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            cursor.buffer += chunk
        return cursor.take(size)

    def readall(self) -> bytes:
        return self.read(-1)


class AsyncObjectReader:
    """Async counterpart of :class:`ObjectReader`: ``await reader.read(n)``, ``seek``, ``tell``."""

    def __init__(self, backend: StorageBackend, path: str, size: int, chunk_size: int) -> None:
        self._backend = backend
        self._path = path
        self._chunk_size = chunk_size
        self._cursor = _Cursor(size)
        self._chunks: AsyncIterator[bytes] | None = None

    async def __aenter__(self) -> AsyncObjectReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Drop the open stream."""
        self._chunks = None

    def tell(self) -> int:
        """Current position."""
        return self._cursor.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (relative to ``whence``); the next read starts a ranged read."""
        pos, moved = self._cursor.seek(offset, whence)
        if moved:
            self._chunks = None
        return pos

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all remaining when negative)."""
        cursor = self._cursor
        while cursor.wants(size):
            if self._chunks is None:
                start = cursor.pos + len(cursor.buffer)
                self._chunks = await self._backend.stream_async(
                    self._path, start=start, chunk_size=self._chunk_size
                )
            chunk = await anext(self._chunks, b"")
            if not chunk:
                break
            cursor.buffer += chunk
        return cursor.take(size)
