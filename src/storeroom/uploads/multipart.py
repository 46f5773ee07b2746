"""Resumable uploads at the store: S3 multipart uploads and the parts of a tus upload.

No database here: :mod:`storeroom.uploads.sessions` keeps the session row and calls these
functions. Two protocols exist:

- ``"s3-multipart"`` (S3 with static credentials): the server creates the multipart upload,
  signs each part's ``PUT`` on request (the part's exact length is signed, so S3 refuses a
  part of another size), lists the parts already stored so a client can resume, and
  completes or aborts it. The browser never completes the upload itself: the server does,
  once, after checking the parts, so the final path is written exactly once.
- ``"tus"`` (local disk, memory, fsspec: storeroom's HMAC handler, :mod:`storeroom.web`):
  the tus 1.0 protocol. Each ``PATCH`` is streamed to its own part object under
  :func:`tus_parts_prefix`; when the last byte arrives the parts are streamed, in order,
  into the upload's object and deleted. Nothing is held in memory.

Azure block blobs and GCS resumable sessions are not offered yet: :func:`resumable_protocol`
raises :class:`~storeroom.errors.ConfigurationError` for them (single uploads still work).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from storeroom.backends.base import BACKEND_DEFAULT, ObjectInfo, PutResult, StorageBackend
from storeroom.backends.obstore.direct_uploads import (
    S3_PARTS,
    PartInfo,
    PartRules,
    azure_account,
    s3_static_credentials,
)
from storeroom.errors import ConfigurationError, ObjectNotFound
from storeroom.uploads.layout import TUS_PREFIX as TUS_PREFIX
from storeroom.uploads.layout import tus_parts_prefix
from storeroom.uploads.targets import _hmac_signer

__all__ = [
    "TusPart",
    "part_problem",
    "resumable_protocol",
    "tus_offset",
    "tus_parts",
    "tus_parts_async",
    "tus_parts_prefix",
]


def resumable_protocol(backend: StorageBackend) -> str:
    """``"tus"``, ``"s3-multipart"`` or ``"azure-blocks"``: how ``backend`` takes a
    resumable upload.

    Raises :class:`ConfigurationError` for stores without one here (GCS, S3 without static
    keys, Azure without an account key, stores without any signer).
    """
    if _hmac_signer(backend) is not None:
        return "tus"
    if s3_static_credentials(backend) is not None:
        return "s3-multipart"
    if azure_account(backend) is not None:
        return "azure-blocks"
    raise ConfigurationError(
        f"backend {backend.key!r} ({getattr(backend, 'kind', 'unknown')} store) has no "
        "resumable upload protocol in storeroom: resumable uploads need storeroom's HMAC "
        "handler (local disk, memory, fsspec: configure_signing), S3 with static keys or "
        "Azure with an account key; use uploads.begin for a single upload"
    )


def part_problem(
    number: int, size: int | None, declared: int, rules: PartRules = S3_PARTS
) -> str | None:
    """Why a part of ``size`` bytes numbered ``number`` cannot belong to a ``declared`` upload.

    The limits are checked per part when its URL is signed (S3 signs the length too): a
    part is at most the store's largest and at most the declared size, and its number is
    one the store accepts and that the declared size can reach with parts of the store's
    smallest size.
    """
    most = min(rules.max_parts, max(1, math.ceil(declared / rules.min_size)))
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= most:
        return (
            f"part number {number!r} is out of range: a {declared}-byte upload has parts "
            f"1 to {most}"
        )
    if size is None:
        return None
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or not 1 <= size <= min(rules.max_size, declared)
    ):
        return f"part size {size!r} is out of range: 1 to {min(rules.max_size, declared)} bytes"
    return None


def parts_problem(parts: list[PartInfo], declared: int, rules: PartRules = S3_PARTS) -> str | None:
    """Why the stored ``parts`` do not make exactly the declared upload (None: they do)."""
    if not parts:
        return "no parts were uploaded"
    numbers = [part.number for part in parts]
    if numbers != list(range(1, len(parts) + 1)):
        return f"parts {numbers} are not numbered 1 to {len(parts)} without a gap"
    large = [part.number for part in parts if part.size > rules.max_size]
    if large:
        return f"parts {large} are over {rules.store}'s maximum of {rules.max_size} bytes"
    small = [part.number for part in parts[:-1] if part.size < rules.min_size]
    if small:
        return f"parts {small} are under {rules.store}'s minimum of {rules.min_size} bytes"
    total = sum(part.size for part in parts)
    if total != declared:
        return f"the parts hold {total} bytes but {declared} were declared"
    return None


# -- tus parts ------------------------------------------------------------------------------
# Where the parts are kept (TUS_PREFIX, tus_parts_prefix) is defined in storeroom.uploads.layout,
# which storeroom's maintenance reads too.


@dataclass(frozen=True, slots=True)
class TusPart:
    """One stored ``PATCH`` of a tus upload: its offset, size and object path."""

    offset: int
    size: int
    path: str


def _tus_part(info: ObjectInfo, prefix: str) -> TusPart | None:
    name = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
    name = name.rsplit("/", 1)[-1]
    if not name.isdigit():
        return None
    return TusPart(int(name), info.size, info.path)


def tus_part_path(path: str, offset: int) -> str:
    """The object holding the ``PATCH`` that starts at ``offset``."""
    return f"{tus_parts_prefix(path)}{offset:020d}"


def tus_offset(parts: list[TusPart]) -> int:
    """The upload's offset: the end of the contiguous run of parts from byte 0.

    A part that does not start where the previous one ends (left by a request that raced
    another) is ignored; it is removed with the others at the end.
    """
    offset = 0
    for part in sorted(parts, key=lambda p: p.offset):
        if part.offset == offset:
            offset += part.size
    return offset


def tus_chain(parts: list[TusPart]) -> list[TusPart]:
    """The contiguous run of parts from byte 0, in order (what :func:`tus_offset` counts)."""
    chain: list[TusPart] = []
    offset = 0
    for part in sorted(parts, key=lambda p: p.offset):
        if part.offset == offset and part.size > 0:
            chain.append(part)
            offset += part.size
    return chain


def tus_parts(backend: StorageBackend, path: str) -> list[TusPart]:
    """The parts stored for a tus upload to ``path``."""
    prefix = tus_parts_prefix(path)
    return [
        part
        for info in backend.list(prefix.rstrip("/"))
        if (part := _tus_part(info, prefix)) is not None
    ]


async def tus_parts_async(backend: StorageBackend, path: str) -> list[TusPart]:
    """Async form of :func:`tus_parts`."""
    prefix = tus_parts_prefix(path)
    return [
        part
        async for info in backend.list_async(prefix.rstrip("/"))
        if (part := _tus_part(info, prefix)) is not None
    ]


def tus_concat(backend: StorageBackend, chain: list[TusPart]) -> Iterator[bytes]:
    """The bytes of ``chain``'s parts in order, streamed."""
    for part in chain:
        for chunk in backend.stream(part.path):
            yield bytes(chunk)  # a copy: see tus_concat_async


async def tus_concat_async(backend: StorageBackend, chain: list[TusPart]) -> AsyncIterator[bytes]:
    """Async form of :func:`tus_concat`."""
    for part in chain:
        async for chunk in await backend.stream_async(part.path):
            # A copy: a chunk read by obstore can share its buffer with the rest of the read,
            # and a write holding chunks would then keep whole parts alive (measured: the
            # server's memory grew with the file's size without it).
            yield bytes(chunk)


def delete_tus_parts(backend: StorageBackend, path: str) -> None:
    """Remove every object kept for the tus upload to ``path`` (its parts, its tombstone)."""
    for info in list(backend.list(tus_parts_prefix(path).rstrip("/"))):
        try:
            backend.delete(info.path)
        except ObjectNotFound:
            pass


async def delete_tus_parts_async(backend: StorageBackend, path: str) -> None:
    """Async form of :func:`delete_tus_parts`."""
    for info in [info async for info in backend.list_async(tus_parts_prefix(path).rstrip("/"))]:
        try:
            await backend.delete_async(info.path)
        except ObjectNotFound:
            pass


def put_create_only(
    backend: StorageBackend,
    path: str,
    chunks: Iterator[bytes],
    *,
    content_type: str | None = None,
    checksum: str | None = BACKEND_DEFAULT,
    relay: Any = None,
) -> PutResult:
    """Stream ``chunks`` into a new object at ``path``; :class:`ObjectExists` if one is there.

    ``relay`` wraps ``chunks`` for the write when they are read from an obstore stream
    (a sync obstore write cannot read one: see ``storeroom.backends.relay.Relay``).
    The write streams in bounded memory on every backend (local disk and memory stage a
    create-only stream and link it into place).
    """

    def write(body: Iterator[bytes]) -> PutResult:
        return backend.put(
            path, body, content_type=content_type, checksum=checksum, overwrite=False
        )

    if relay is None:
        return write(chunks)
    with relay(chunks) as relayed:
        return write(iter(relayed))


async def put_create_only_async(
    backend: StorageBackend,
    path: str,
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None = None,
    checksum: str | None = BACKEND_DEFAULT,
) -> PutResult:
    """Async form of :func:`put_create_only`."""
    return await backend.put_async(
        path, chunks, content_type=content_type, checksum=checksum, overwrite=False
    )


def assemble(
    backend: StorageBackend,
    path: str,
    chain: list[TusPart],
    content_type: str | None,
    relay: Any = None,
) -> None:
    """Stream ``chain``'s parts, in order, into a new object at ``path`` (create-only)."""
    put_create_only(
        backend, path, tus_concat(backend, chain), content_type=content_type, relay=relay
    )


async def assemble_async(
    backend: StorageBackend, path: str, chain: list[TusPart], content_type: str | None
) -> None:
    """Async form of :func:`assemble`."""
    await put_create_only_async(
        backend, path, tus_concat_async(backend, chain), content_type=content_type
    )
