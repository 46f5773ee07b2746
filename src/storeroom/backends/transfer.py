"""Verified copies between backends: one object, checked by size and by checksum.

The one place that copies bytes from a backend to another (or within one): used by
:meth:`FileObject.copy_to <storeroom.file.FileObject.copy_to>`, ``storeroom cp`` and the
migration library (:mod:`storeroom.orm.migration`); ``storeroom verify --checksums`` hashes
objects with :func:`digest_object`.

- Where the destination's store can copy the source's objects itself (within one backend,
  or between two prefixes of one S3 bucket or Azure container: see
  :meth:`StorageBackend.copies_from <storeroom.backends.base.StorageBackend.copies_from>`)
  the store copies server-side (no bytes through this process); the copy is then checked
  with a HEAD (its size) and, with ``verify_read``, read back and hashed.
- Between backends the bytes stream from the source into the destination (never whole in
  memory); their size and checksum are measured on the way and must match what is
  recorded for the source. A copy that does not match is deleted before the error is
  raised. With ``verify_read`` the destination is read back and hashed as well.

A checksum is a string ``"<algorithm>:<hex digest>"`` (``"sha256:9f86..."``); a copy is
hashed with the algorithm its source's checksum names. The decisions (which steps, what to
check, what a mismatch means) are written once, as generators that yield the I/O step to
do next (httpx's ``auth_flow`` pattern); :func:`copy` and :func:`copy_async` only perform
the steps, with the sync or the async API.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from storeroom import checksums
from storeroom.backends.base import DEFAULT_READ_CHUNK_SIZE, ObjectInfo, PutResult, StorageBackend
from storeroom.backends.relay import Relay
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

WHOLE_COPY_LIMIT = 1024 * 1024
"""Objects recorded at this size or smaller are copied as one read and one write (and read
back whole), not streamed: a stream costs several round trips (and, on local disk, a thread
hand-off each) where these take one. The read asks for one byte more than recorded, so an
object larger than its record is caught, never read whole."""


def new_hash(algorithm: str) -> Any:
    """A fresh hash object for ``algorithm`` (``"blake3"``, ``"xxh3-128"``, a :mod:`hashlib` name).

    Raises :class:`~storeroom.errors.ConfigurationError` naming the algorithm when this
    Python has no such hash.
    """
    return checksums.new_hasher(algorithm)


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
    backend: StorageBackend,
    path: str,
    algorithm: str = DEFAULT_ALGORITHM,
    *,
    chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
) -> Digest:
    """Stream ``path`` from ``backend`` and return its size and checksum.

    To check a recorded checksum: ``digest_object(b, path, algorithm_of(recorded)).checksum
    == recorded``. Raises :class:`~storeroom.errors.ObjectNotFound` when it is missing.
    """
    return digest(backend.stream(path, chunk_size=chunk_size), algorithm)


async def digest_object_async(
    backend: StorageBackend,
    path: str,
    algorithm: str = DEFAULT_ALGORITHM,
    *,
    chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
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
    """One copy: what it is from and to, what is recorded, and how to write it."""

    source: StorageBackend
    src_path: str
    destination: StorageBackend
    dst_path: str
    size: int | None
    checksum: str | None
    algorithm: str
    server_side: bool
    verify_read: bool = False
    put_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        """Small enough (by its record) to copy in one read and one write."""
        return self.size is not None and 0 < self.size <= WHOLE_COPY_LIMIT

    def where(self) -> str:
        return f"{self.src_path!r} on backend {self.source.key!r}"

    def there(self) -> str:
        return f"{self.dst_path!r} on backend {self.destination.key!r}"


def _plan(
    source: StorageBackend,
    src_path: str,
    destination: StorageBackend,
    dst_path: str,
    size: int | None,
    checksum: str | None,
    overwrite: bool = True,
    verify_read: bool = False,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> _Plan:
    # Server-side where the destination's store can copy the source's objects itself (the
    # same backend, or another prefix of the same bucket; create-only where the store has
    # a conditional copy); otherwise the bytes stream through the destination's write.
    server_side = destination.copies_from(source, create_only=not overwrite, size=size)
    if source is destination and src_path == dst_path:
        raise ConfigurationError(
            f"cannot copy {src_path!r} onto itself in backend {source.key!r}; give another "
            "path or backend"
        )
    algorithm = algorithm_of(checksum)
    new_hash(algorithm)  # an unknown algorithm fails before any byte moves
    put_options = {
        "content_type": content_type,
        "metadata": metadata,
        "chunk_size": chunk_size,
        "checksum": algorithm,
        "overwrite": overwrite,
    }
    return _Plan(
        source,
        src_path,
        destination,
        dst_path,
        size,
        checksum,
        algorithm,
        server_side,
        verify_read,
        put_options,
    )


def _written_mismatch(plan: _Plan, result: PutResult) -> IntegrityError | None:
    """What is wrong with the bytes that streamed into the destination, if anything."""
    if plan.whole and plan.size is not None and result.size > plan.size:
        return IntegrityError(
            f"copying {plan.where()} found more than the {plan.size} bytes recorded (it was "
            "not read further); the copy was deleted"
        )
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


def _head_mismatch(
    plan: _Plan, info: ObjectInfo, written: PutResult | None
) -> IntegrityError | None:
    size, _ = _expected(plan, written)
    if size is not None and info.size != size:
        return IntegrityError(
            f"{plan.there()} has {info.size} bytes after the copy, expected {size}; the copy "
            "was deleted"
        )
    return None


def _read_mismatch(plan: _Plan, read: Digest, written: PutResult | None) -> IntegrityError | None:
    size, checksum = _expected(plan, written)
    if (size is not None and read.size != size) or (checksum and read.checksum != checksum):
        return IntegrityError(
            f"{plan.there()} reads back different bytes than were copied from "
            f"{plan.where()}; the copy was deleted"
        )
    return None


def _result(
    plan: _Plan, written: PutResult | None, info: ObjectInfo | None, read: Digest | None
) -> Transfer:
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


# The I/O a copy needs, named: the steps below yield these, and each twin performs them.
_COPY = "copy"  # the store copies src to dst              -> None
_PUT = "put"  # stream src into dst                       -> PutResult
_HEAD = "head"  # HEAD dst                                  -> ObjectInfo
_HEAD_OR_NONE = "head?"  # HEAD dst, None when it is missing         -> ObjectInfo | None
_DIGEST = "digest"  # read dst back and hash it                 -> Digest
_DIGEST_SOURCE = "digest source"  # read src and hash it             -> Digest
_DELETE = "delete"  # delete dst                                -> None

Steps = Generator[str, Any, Any]


def _copy_steps(plan: _Plan) -> Steps:
    """A verified copy as a sequence of I/O steps: every decision, no I/O.

    Yields the name of each step; the twin performs it and sends back its result. Returns
    the :class:`Transfer`, or raises the mismatch after the step that deletes the copy.
    """
    written: PutResult | None = None
    if plan.server_side:
        yield _COPY
    else:
        written = yield _PUT
        yield from _fail_if(_written_mismatch(plan, written))
    if plan.verify_read:
        read: Digest = yield _DIGEST
        yield from _fail_if(_read_mismatch(plan, read, written))
        return _result(plan, written, None, read)
    info: ObjectInfo = yield _HEAD
    yield from _fail_if(_head_mismatch(plan, info, written))
    return _result(plan, written, info, None)


def _fail_if(error: IntegrityError | None) -> Steps:
    if error is not None:
        yield _DELETE
        raise error


def _existing_steps(plan: _Plan) -> Steps:
    """Whether the object at the destination is already a verified copy (steps, no I/O)."""
    info: ObjectInfo | None = yield _HEAD_OR_NONE
    if info is None or (plan.size is not None and info.size != plan.size):
        return None
    expected = plan.checksum
    if not expected:
        expected = (yield _DIGEST_SOURCE).checksum
    found: Digest = yield _DIGEST
    if found.checksum != expected or (plan.size is not None and found.size != plan.size):
        return None
    return Transfer(plan.dst_path, found.size, found.checksum, info.etag, info.version)


# -- the twins: I/O only ------------------------------------------------------------------


def _run(plan: _Plan, steps: Steps) -> Any:
    """Perform ``steps`` with the sync API; returns what they return."""
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return done.value
        result = _perform(plan, step)


async def _arun(plan: _Plan, steps: Steps) -> Any:
    """Perform ``steps`` with the async API; returns what they return."""
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return done.value
        result = await _aperform(plan, step)


def _perform(plan: _Plan, step: str) -> Any:
    source, destination = plan.source, plan.destination
    if step == _PUT:
        if plan.whole:
            data = source.get(plan.src_path, end=_past_record(plan))
            return destination.put(plan.dst_path, data, **plan.put_options)
        chunks = source.stream(plan.src_path, chunk_size=DEFAULT_READ_CHUNK_SIZE)
        with Relay(chunks) as relayed:
            return destination.put(plan.dst_path, iter(relayed), **plan.put_options)
    if step == _COPY:
        return destination.copy_from(
            source,
            plan.src_path,
            plan.dst_path,
            create_only=not plan.put_options["overwrite"],
            size=plan.size,
        )
    if step in (_HEAD, _HEAD_OR_NONE):
        try:
            return destination.head(plan.dst_path)
        except ObjectNotFound:
            if step == _HEAD:
                raise
            return None
    if step in (_DIGEST, _DIGEST_SOURCE):
        backend, path = _digested(plan, step)
        if plan.whole:
            return digest((backend.get(path, end=_past_record(plan)),), plan.algorithm)
        return digest_object(backend, path, plan.algorithm)
    assert step == _DELETE, step
    return destination.delete(plan.dst_path)


async def _aperform(plan: _Plan, step: str) -> Any:
    source, destination = plan.source, plan.destination
    if step == _PUT:
        if plan.whole:
            data = await source.get_async(plan.src_path, end=_past_record(plan))
            return await destination.put_async(plan.dst_path, data, **plan.put_options)
        chunks = await source.stream_async(plan.src_path, chunk_size=DEFAULT_READ_CHUNK_SIZE)
        return await destination.put_async(plan.dst_path, chunks, **plan.put_options)
    if step == _COPY:
        return await destination.copy_from_async(
            source,
            plan.src_path,
            plan.dst_path,
            create_only=not plan.put_options["overwrite"],
            size=plan.size,
        )
    if step in (_HEAD, _HEAD_OR_NONE):
        try:
            return await destination.head_async(plan.dst_path)
        except ObjectNotFound:
            if step == _HEAD:
                raise
            return None
    if step in (_DIGEST, _DIGEST_SOURCE):
        backend, path = _digested(plan, step)
        if plan.whole:
            data = await backend.get_async(path, end=_past_record(plan))
            return digest((data,), plan.algorithm)
        return await digest_object_async(backend, path, plan.algorithm)
    assert step == _DELETE, step
    return await destination.delete_async(plan.dst_path)


def _digested(plan: _Plan, step: str) -> tuple[StorageBackend, str]:
    """Which object a digest step reads: the copy, or (to adopt one) the source."""
    if step == _DIGEST:
        return plan.destination, plan.dst_path
    return plan.source, plan.src_path


def _past_record(plan: _Plan) -> int:
    """Where a whole read stops: one byte past the recorded size, so a larger object shows."""
    assert plan.size is not None
    return plan.size + 1


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
    and hashes it (without it, the copy's size is checked with a HEAD). ``overwrite=False``
    makes the copy create-only: it raises :class:`~storeroom.errors.ObjectExists` and leaves
    the object already at ``dst_path`` untouched (within one backend such a copy is
    streamed, as the store's own copy would replace it). Raises
    :class:`~storeroom.errors.IntegrityError` (after deleting the copy) on a mismatch,
    :class:`~storeroom.errors.ObjectNotFound` for a missing source and
    :class:`~storeroom.errors.ConfigurationError` for a copy onto itself or an unknown
    checksum algorithm.
    """
    plan = _plan(
        source,
        src_path,
        destination,
        dst_path,
        size,
        checksum,
        overwrite,
        verify_read,
        content_type,
        metadata,
        chunk_size,
    )
    transfer: Transfer = _run(plan, _copy_steps(plan))
    return transfer


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
    """Async form of :func:`copy` (same steps, same checks, same errors)."""
    plan = _plan(
        source,
        src_path,
        destination,
        dst_path,
        size,
        checksum,
        overwrite,
        verify_read,
        content_type,
        metadata,
        chunk_size,
    )
    transfer: Transfer = await _arun(plan, _copy_steps(plan))
    return transfer


def existing_copy(
    source: StorageBackend,
    src_path: str,
    destination: StorageBackend,
    dst_path: str,
    *,
    size: int | None = None,
    checksum: str | None = None,
) -> Transfer | None:
    """The copy already at ``dst_path``, verified, or None when there is none to keep.

    Used to resume after a crash between a copy and its record: the destination must have
    the recorded ``size`` and hash to the recorded ``checksum`` or, without one, to a fresh
    read of the source. Nothing is deleted.
    """
    plan = _plan(source, src_path, destination, dst_path, size, checksum)
    found: Transfer | None = _run(plan, _existing_steps(plan))
    return found


async def existing_copy_async(
    source: StorageBackend,
    src_path: str,
    destination: StorageBackend,
    dst_path: str,
    *,
    size: int | None = None,
    checksum: str | None = None,
) -> Transfer | None:
    """Async form of :func:`existing_copy`."""
    plan = _plan(source, src_path, destination, dst_path, size, checksum)
    found: Transfer | None = await _arun(plan, _existing_steps(plan))
    return found
