"""Verified copies between backends: one object, checked by size and by checksum.

The one place that copies bytes from a backend to another (or within one): used by
:meth:`FileObject.copy_to <storeroom.file.FileObject.copy_to>`, ``storeroom cp`` and the
migration library (:mod:`storeroom.orm.migration`); ``storeroom verify --checksums`` hashes
objects with :func:`digest_object`.

- Within one backend the store copies server-side (no bytes through this process); the copy
  is then checked with a HEAD (its size) and, with ``verify_read``, read back and hashed.
- Between backends the bytes stream from the source into the destination (never whole in
  memory); their size and checksum are measured on the way and must match what is
  recorded for the source. A copy that does not match is deleted before the error is
  raised. With ``verify_read`` the destination is read back and hashed as well.

A checksum is a string ``"<algorithm>:<hex digest>"`` (``"sha256:9f86..."``); a copy is
hashed with the algorithm its source's checksum names. Decisions (what to check, what a
mismatch means) are plain functions here; :func:`copy` and :func:`copy_async` only
sequence the I/O around them.
"""

from __future__ import annotations

import contextvars
import hashlib
import queue
import threading
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from storeroom.backends.base import DEFAULT_READ_CHUNK_SIZE, ObjectInfo, PutResult, StorageBackend
from storeroom.errors import ConfigurationError, IntegrityError, ObjectNotFound
from storeroom.streams import DEFAULT_CHUNK_SIZE

__all__ = [
    "DEFAULT_ALGORITHM",
    "Digest",
    "Transfer",
    "adigest",
    "algorithm_of",
    "copy",
    "copy_async",
    "digest",
    "digest_object",
    "digest_object_async",
    "existing_copy",
    "existing_copy_async",
    "new_hash",
]

DEFAULT_ALGORITHM = "sha256"
"""The algorithm used when the source records no checksum."""


def new_hash(algorithm: str) -> Any:
    """A fresh hash object for ``algorithm`` (a :mod:`hashlib` name such as ``"sha256"``).

    Raises :class:`~storeroom.errors.ConfigurationError` naming the algorithm when this
    Python has no such hash.
    """
    try:
        return hashlib.new(algorithm)
    except (ValueError, TypeError) as exc:
        available = ", ".join(sorted(hashlib.algorithms_guaranteed))
        raise ConfigurationError(
            f"checksum algorithm {algorithm!r} is not available; available: {available}"
        ) from exc


def algorithm_of(checksum: str | None) -> str:
    """The algorithm a checksum string names (``"md5:..."`` -> ``"md5"``), else sha256."""
    if not checksum or ":" not in checksum:
        return DEFAULT_ALGORITHM
    return checksum.split(":", 1)[0].lower()


@dataclass(frozen=True, slots=True)
class Digest:
    """Size and checksum (``"<algorithm>:<hex>"``) of a stream of bytes."""

    size: int
    checksum: str


class _Hashing:
    """Counts and hashes chunks; the state both digest twins share."""

    __slots__ = ("_hash", "algorithm", "size")

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._hash = new_hash(algorithm)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._hash.update(chunk)

    def result(self) -> Digest:
        return Digest(self.size, f"{self.algorithm}:{self._hash.hexdigest()}")


def digest(chunks: Iterable[bytes], algorithm: str = DEFAULT_ALGORITHM) -> Digest:
    """Size and checksum of ``chunks``, read one at a time (never joined in memory)."""
    hashing = _Hashing(algorithm)
    for chunk in chunks:
        hashing.update(chunk)
    return hashing.result()


async def adigest(chunks: AsyncIterable[bytes], algorithm: str = DEFAULT_ALGORITHM) -> Digest:
    """Async form of :func:`digest`."""
    hashing = _Hashing(algorithm)
    async for chunk in chunks:
        hashing.update(chunk)
    return hashing.result()


def digest_object(
    backend: StorageBackend, path: str, algorithm: str = DEFAULT_ALGORITHM,
    *, chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
) -> Digest:
    """Stream ``path`` from ``backend`` and return its size and checksum.

    To check a recorded checksum: ``digest_object(b, path, algorithm_of(recorded)).checksum
    == recorded``. Raises :class:`~storeroom.errors.ObjectNotFound` when it is missing.
    """
    return digest(backend.stream(path, chunk_size=chunk_size), algorithm)


async def digest_object_async(
    backend: StorageBackend, path: str, algorithm: str = DEFAULT_ALGORITHM,
    *, chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
) -> Digest:
    """Async form of :func:`digest_object`."""
    return await adigest(await backend.stream_async(path, chunk_size=chunk_size), algorithm)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A verified copy: where it landed and what was verified."""

    path: str
    size: int
    checksum: str | None
    """The copy's checksum: measured (streamed copies, read-backs) or the source's recorded
    one (server-side copies, which the store makes byte for byte)."""
    etag: str | None = None
    version: str | None = None
    server_side: bool = False
    """Copied by the store itself, without the bytes passing through this process."""


# -- decisions (no I/O) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    source: StorageBackend
    src_path: str
    destination: StorageBackend
    dst_path: str
    size: int | None
    checksum: str | None
    algorithm: str
    server_side: bool

    def where(self) -> str:
        return f"{self.src_path!r} on backend {self.source.key!r}"

    def there(self) -> str:
        return f"{self.dst_path!r} on backend {self.destination.key!r}"


def _plan(
    source: StorageBackend, src_path: str, destination: StorageBackend, dst_path: str,
    size: int | None, checksum: str | None, overwrite: bool = True,
) -> _Plan:
    # A store's own copy replaces what is at the destination: a create-only copy streams
    # instead, through the destination's conditional write.
    server_side = source is destination and overwrite
    if source is destination and src_path == dst_path:
        raise ConfigurationError(
            f"cannot copy {src_path!r} onto itself in backend {source.key!r}; give another "
            "path or backend"
        )
    algorithm = algorithm_of(checksum)
    new_hash(algorithm)  # an unknown algorithm fails before any byte moves
    return _Plan(source, src_path, destination, dst_path, size, checksum, algorithm,
                 server_side)


def _written_mismatch(plan: _Plan, result: PutResult) -> IntegrityError | None:
    """What is wrong with the bytes that streamed into the destination, if anything."""
    if plan.size is not None and result.size != plan.size:
        return IntegrityError(
            f"copying {plan.where()} read {result.size} bytes, but {plan.size} are recorded; "
            "the copy was deleted"
        )
    if plan.checksum and result.checksum != plan.checksum:
        return IntegrityError(
            f"copying {plan.where()} read bytes hashing to {result.checksum}, not its "
            f"recorded {plan.checksum}; the copy was deleted"
        )
    return None


def _expected(plan: _Plan, written: PutResult | None) -> tuple[int | None, str | None]:
    if written is not None:
        return written.size, written.checksum
    return plan.size, plan.checksum


def _head_mismatch(plan: _Plan, info: ObjectInfo, written: PutResult | None
                   ) -> IntegrityError | None:
    size, _ = _expected(plan, written)
    if size is not None and info.size != size:
        return IntegrityError(
            f"{plan.there()} has {info.size} bytes after the copy, expected {size}; the copy "
            "was deleted"
        )
    return None


def _read_mismatch(plan: _Plan, read: Digest, written: PutResult | None
                   ) -> IntegrityError | None:
    size, checksum = _expected(plan, written)
    if (size is not None and read.size != size) or (checksum and read.checksum != checksum):
        return IntegrityError(
            f"{plan.there()} reads back different bytes than were copied from "
            f"{plan.where()}; the copy was deleted"
        )
    return None


def _result(plan: _Plan, written: PutResult | None, info: ObjectInfo | None,
            read: Digest | None) -> Transfer:
    size, checksum = _expected(plan, written)
    if read is not None:
        size, checksum = read.size, read.checksum
    elif info is not None:
        size = info.size
    return Transfer(
        path=plan.dst_path,
        size=size if size is not None else 0,
        checksum=checksum,
        etag=(info.etag if info is not None else None) or (written.etag if written else None),
        version=(info.version if info is not None else None)
        or (written.version if written else None),
        server_side=plan.server_side,
    )


def _put_options(plan: _Plan, content_type: str | None, metadata: Mapping[str, str] | None,
                 chunk_size: int, overwrite: bool) -> dict[str, Any]:
    return {"content_type": content_type, "metadata": metadata, "chunk_size": chunk_size,
            "checksum": plan.algorithm, "overwrite": overwrite}


class _Relay:
    """Reads a source stream in a thread of its own and hands its chunks over a small queue.

    A sync obstore write consumes its body inside obstore's runtime, where a sync obstore
    stream cannot be read (the runtime would have to start inside itself: a panic, not an
    error). Reading the source in another thread keeps the two apart, and lets reading and
    writing overlap. At most ``depth`` chunks wait in between, so memory stays bounded. An
    error reading the source is raised to the writer; when the writer stops early, the
    reader stops after its current chunk and the source stream is closed.
    """

    _END = object()

    def __init__(self, chunks: Iterator[bytes], depth: int = 4) -> None:
        self._chunks = chunks
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # The reader runs in a copy of this context, so storage events it emits carry the
        # caller's context variables (trace spans, request ids).
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._read,), name="storeroom-transfer",
                                        daemon=True)

    def __enter__(self) -> _Relay:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a reader waiting for room in the queue
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _read(self) -> None:
        item: Any = self._END
        try:
            for chunk in self._chunks:
                self._queue.put(chunk)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the writer, which raises it
            item = exc
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        if not self._stop.is_set():
            self._queue.put(item)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


# -- the twins: I/O only ------------------------------------------------------------------


def copy(
    source: StorageBackend,
    src_path: str,
    destination: StorageBackend,
    dst_path: str,
    *,
    size: int | None = None,
    checksum: str | None = None,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    verify_read: bool = False,
    overwrite: bool = True,
) -> Transfer:
    """Copy ``src_path`` of ``source`` to ``dst_path`` of ``destination``, verified.

    ``size`` and ``checksum`` are what is recorded for the source (either may be None);
    the copy must match them. ``content_type`` and ``metadata`` are written with a streamed
    copy (a server-side copy keeps the source's). ``verify_read`` also reads the copy back
    and hashes it. ``overwrite=False`` makes the copy create-only: it raises
    :class:`~storeroom.errors.ObjectExists` and leaves the object already at ``dst_path``
    untouched (within one backend such a copy is streamed, as the store's own copy would
    replace it). Raises :class:`~storeroom.errors.IntegrityError` (after deleting the copy)
    on a mismatch, :class:`~storeroom.errors.ObjectNotFound` for a missing source and
    :class:`~storeroom.errors.ConfigurationError` for a copy onto itself or an unknown
    checksum algorithm.
    """
    plan = _plan(source, src_path, destination, dst_path, size, checksum, overwrite)
    written: PutResult | None = None
    if plan.server_side:
        source.copy(src_path, dst_path)
    else:
        chunks = source.stream(src_path, chunk_size=DEFAULT_READ_CHUNK_SIZE)
        with _Relay(chunks) as relayed:
            written = destination.put(
                dst_path, iter(relayed),
                **_put_options(plan, content_type, metadata, chunk_size, overwrite),
            )
        _fail_if(destination, dst_path, _written_mismatch(plan, written))
    info: ObjectInfo | None = None
    read: Digest | None = None
    if verify_read:
        read = digest_object(destination, dst_path, plan.algorithm)
        _fail_if(destination, dst_path, _read_mismatch(plan, read, written))
    else:
        info = destination.head(dst_path)
        _fail_if(destination, dst_path, _head_mismatch(plan, info, written))
    return _result(plan, written, info, read)


async def copy_async(
    source: StorageBackend,
    src_path: str,
    destination: StorageBackend,
    dst_path: str,
    *,
    size: int | None = None,
    checksum: str | None = None,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    verify_read: bool = False,
    overwrite: bool = True,
) -> Transfer:
    """Async form of :func:`copy` (same checks, same errors)."""
    plan = _plan(source, src_path, destination, dst_path, size, checksum, overwrite)
    written: PutResult | None = None
    if plan.server_side:
        await source.copy_async(src_path, dst_path)
    else:
        chunks = await source.stream_async(src_path, chunk_size=DEFAULT_READ_CHUNK_SIZE)
        written = await destination.put_async(
            dst_path, chunks, **_put_options(plan, content_type, metadata, chunk_size, overwrite)
        )
        await _afail_if(destination, dst_path, _written_mismatch(plan, written))
    info: ObjectInfo | None = None
    read: Digest | None = None
    if verify_read:
        read = await digest_object_async(destination, dst_path, plan.algorithm)
        await _afail_if(destination, dst_path, _read_mismatch(plan, read, written))
    else:
        info = await destination.head_async(dst_path)
        await _afail_if(destination, dst_path, _head_mismatch(plan, info, written))
    return _result(plan, written, info, read)


def _fail_if(destination: StorageBackend, path: str, error: IntegrityError | None) -> None:
    if error is not None:
        destination.delete(path)
        raise error


async def _afail_if(destination: StorageBackend, path: str,
                    error: IntegrityError | None) -> None:
    if error is not None:
        await destination.delete_async(path)
        raise error


# -- is the copy already there? -------------------------------------------------------------


def _existing_expected(plan: _Plan, info: ObjectInfo) -> bool:
    """Whether a HEAD of the destination leaves it a candidate (size as expected)."""
    return plan.size is None or info.size == plan.size


def _existing_result(plan: _Plan, info: ObjectInfo, expected: str, found: Digest
                     ) -> Transfer | None:
    if found.checksum != expected or (plan.size is not None and found.size != plan.size):
        return None
    return Transfer(plan.dst_path, found.size, found.checksum, info.etag, info.version)


def existing_copy(
    source: StorageBackend, src_path: str, destination: StorageBackend, dst_path: str,
    *, size: int | None = None, checksum: str | None = None,
) -> Transfer | None:
    """The copy already at ``dst_path``, verified, or None when there is none to keep.

    Used to resume after a crash between a copy and its record: the destination must have
    the recorded ``size`` and hash to the recorded ``checksum`` or, without one, to a fresh
    read of the source. Nothing is deleted.
    """
    plan = _plan(source, src_path, destination, dst_path, size, checksum)
    try:
        info = destination.head(dst_path)
    except ObjectNotFound:
        return None
    if not _existing_expected(plan, info):
        return None
    expected = checksum or digest_object(source, src_path, plan.algorithm).checksum
    found = digest_object(destination, dst_path, plan.algorithm)
    return _existing_result(plan, info, expected, found)


async def existing_copy_async(
    source: StorageBackend, src_path: str, destination: StorageBackend, dst_path: str,
    *, size: int | None = None, checksum: str | None = None,
) -> Transfer | None:
    """Async form of :func:`existing_copy`."""
    plan = _plan(source, src_path, destination, dst_path, size, checksum)
    try:
        info = await destination.head_async(dst_path)
    except ObjectNotFound:
        return None
    if not _existing_expected(plan, info):
        return None
    expected = checksum or (await digest_object_async(source, src_path, plan.algorithm)).checksum
    found = await digest_object_async(destination, dst_path, plan.algorithm)
    return _existing_result(plan, info, expected, found)
