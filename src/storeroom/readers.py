"""File-like readers over stored objects, with seeking done as ranged reads.

When the object's checksum is known, a reader verifies it: every byte fetched from the
store in order from the start is hashed, and once the whole object has passed (whatever
seeks happened in between, as long as each byte was fetched in order at some point) the
digest and size must match, or the read that completed it raises
:class:`~storeroom.errors.IntegrityError`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from storeroom.checksums import matches as checksums_match
from storeroom.errors import ConfigurationError, IntegrityError
from storeroom.streams import Meter

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend

__all__ = ["AsyncObjectReader", "ObjectReader"]


class _Cursor:
    """Position bookkeeping and verification shared by the sync and async readers (no I/O)."""

    def __init__(self, size: int, path: str, checksum: str | None) -> None:
        self.size = size
        self.pos = 0
        self.buffer = b""
        self.path = path
        self.checksum = checksum
        self.meter = Meter.expecting(checksum) if checksum else None

    @property
    def fetch_from(self) -> int:
        """Where the next fetched chunk starts."""
        return self.pos + len(self.buffer)

    def fetched(self, chunk: bytes) -> None:
        """Append a chunk read from the store at :attr:`fetch_from`; verify when complete."""
        meter = self.meter
        if meter is not None and self.checksum:
            start = self.fetch_from
            if start <= meter.size < start + len(chunk):
                meter.update(chunk[meter.size - start :])
                if meter.size >= self.size:
                    self.meter = None
                    if not checksums_match(self.checksum, meter.checksum):
                        raise IntegrityError(
                            f"{self.path!r} does not match its recorded checksum "
                            f"{self.checksum}; it was changed or corrupted in the store"
                        )
        self.buffer += chunk

    def ended(self) -> None:
        """The store's stream ended at :attr:`fetch_from`: fewer bytes than recorded?"""
        if self.fetch_from < self.size:
            raise IntegrityError(
                f"{self.path!r} ended after {self.fetch_from} bytes, but {self.size} were "
                "recorded when it was saved"
            )

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


class _Reader:
    """What both readers hold: the object, how much to fetch at a time, and the cursor."""

    def __init__(
        self,
        backend: StorageBackend,
        path: str,
        size: int,
        chunk_size: int,
        *,
        checksum: str | None = None,
    ) -> None:
        self._backend = backend
        self._path = path
        self._chunk_size = chunk_size
        self._cursor = _Cursor(size, path, checksum)


class ObjectReader(_Reader, io.RawIOBase):
    """A read-only, seekable binary file over one stored object.

    Reads stream from the store; a seek starts a new ranged read at the next ``read``.
    """

    _chunks: Iterator[bytes] | None = None

    def _drop(self) -> None:
        chunks, self._chunks = self._chunks, None
        close = getattr(chunks, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        self._drop()
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._cursor.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        pos, moved = self._cursor.seek(offset, whence)
        if moved:
            self._drop()
        return pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        cursor = self._cursor
        while cursor.wants(size):
            if self._chunks is None:
                self._chunks = self._backend.stream(
                    self._path, start=cursor.fetch_from, chunk_size=self._chunk_size
                )
            chunk = next(self._chunks, b"")
            if not chunk:
                cursor.ended()
                break
            cursor.fetched(chunk)
        return cursor.take(size)

    def readall(self) -> bytes:
        return self.read(-1)


class AsyncObjectReader(_Reader):
    """Async counterpart of :class:`ObjectReader`: ``await reader.read(n)``, ``seek``, ``tell``."""

    _chunks: AsyncIterator[bytes] | None = None
    _stale: AsyncIterator[bytes] | None = None

    async def _drop(self) -> None:
        chunks, self._chunks = self._chunks, None
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncObjectReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Drop the open stream."""
        stale, self._stale = self._stale, None
        if stale is not None:
            await stale.aclose()  # type: ignore[attr-defined]
        await self._drop()

    def tell(self) -> int:
        """Current position."""
        return self._cursor.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (relative to ``whence``); the next read starts a ranged read."""
        pos, moved = self._cursor.seek(offset, whence)
        if moved and self._chunks is not None:
            # Closed at the next read or close(): seek() itself cannot await.
            self._stale, self._chunks = self._chunks, None
        return pos

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all remaining when negative)."""
        cursor = self._cursor
        while cursor.wants(size):
            if self._stale is not None:
                stale, self._stale = self._stale, None
                await stale.aclose()  # type: ignore[attr-defined]
            if self._chunks is None:
                self._chunks = await self._backend.stream_async(
                    self._path, start=cursor.fetch_from, chunk_size=self._chunk_size
                )
            chunk = await anext(self._chunks, b"")
            if not chunk:
                cursor.ended()
                break
            cursor.fetched(chunk)
        return cursor.take(size)
