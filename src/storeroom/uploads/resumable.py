"""Resumable upload sessions: large uploads that survive a dropped connection or a reload.

The same sessions as :mod:`storeroom.uploads.sessions` (one row each, single-use,
server-placed, verified by :func:`~storeroom.uploads.sessions.complete`), uploaded in parts::

    target = begin_resumable(session, Document.file, filename="talk.mp4",
                             content_type="video/mp4", size=5 << 30, limits=limits)
    session.commit()
    # tus (local disk, memory): the browser's tus client talks to target.endpoint
    # s3-multipart: the browser asks sign_part(...) for each part's URL, list_parts(...)
    #               to resume; the server never trusts the client's list of parts
    doc.file = complete(session, target.id)   # S3: completes the multipart upload first
    session.commit()

:func:`~storeroom.uploads.sessions.remove_expired` (``storeroom gc``) aborts the multipart
uploads and deletes the tus parts of abandoned sessions. Every function has an ``_async``
twin; both call the same decisions and only differ in how they wait for I/O.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select

from storeroom.backends.base import StorageBackend
from storeroom.backends.obstore.direct_uploads import S3_PARTS, AzureBlocks, PartInfo, S3Multipart
from storeroom.registry import StorageRegistry, storages
from storeroom.uploads.multipart import (
    delete_tus_parts,
    part_problem,
    resumable_protocol,
)
from storeroom.uploads.sessions import (
    UploadLimits,
    UploadRejected,
    UploadSessionInvalid,
    _now,
    _Plan,
    _plan,
    _usable,
    upload_sessions,
)

logger = logging.getLogger("storeroom.uploads")

__all__ = [
    "ResumableTarget",
    "abort",
    "abort_async",
    "begin_resumable",
    "begin_resumable_async",
    "finish",
    "finish_async",
    "list_parts",
    "list_parts_async",
    "sign_part",
    "sign_part_async",
]

DEFAULT_RESUMABLE_TTL = 24 * 3600
"""A resumable session stays open a day by default (long uploads, flaky networks)."""


@dataclass(frozen=True, slots=True)
class ResumableTarget:
    """What :func:`begin_resumable` returns.

    ``protocol`` is ``"tus"`` (send the file with a tus 1.0 client to ``endpoint``),
    ``"s3-multipart"`` or ``"azure-blocks"`` (ask :func:`sign_part` for each part's URL and
    ``PUT`` it there; ``part_size`` is a good size).
    """

    id: str
    backend: str
    path: str
    expires_at: datetime
    protocol: str
    endpoint: str | None = None
    part_size: int = 8 * 2**20
    limits: UploadLimits = field(default_factory=UploadLimits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the browser."""
        return {
            "id": self.id,
            "expires_at": self.expires_at.isoformat(),
            "protocol": self.protocol,
            "endpoint": self.endpoint,
            "part_size": self.part_size,
        }


def _part_size(size: int) -> int:
    """Parts of 8 MiB, larger when 10,000 of them would not hold ``size``."""
    from storeroom.backends.obstore.direct_uploads import MAX_PARTS

    part = 8 * 2**20
    while part * MAX_PARTS < size:
        part *= 2
    return part


def _resumable_plan(
    destination: Any,
    filename: str,
    content_type: str,
    size: int,
    limits: UploadLimits | None,
    expires_in: int,
    registry: StorageRegistry | None,
) -> tuple[_Plan, str]:
    plan = _plan(
        destination, filename, content_type, size, limits or UploadLimits(), expires_in, registry
    )
    protocol = resumable_protocol(plan.backend)
    if protocol != "azure-blocks":
        # The server completes a multipart upload (once) and the tus handler writes
        # create-only: either way the final path is written once, so no staging copy. An
        # Azure SAS that allows Put Block allows a whole Put Blob too: staged, as single
        # uploads are, and copied on completion.
        plan.row["upload_path"] = plan.row["path"]
    plan.row["protocol"] = protocol
    return plan, protocol


def _tus_endpoint(plan: _Plan, expires_in: int) -> str:
    from storeroom.uploads.targets import _hmac_signer

    signer = _hmac_signer(plan.backend)
    assert signer is not None  # resumable_protocol said "tus"
    row = plan.row
    return signer.sign(
        plan.backend.key,
        row["upload_path"],
        method="PUT",
        expires_in=expires_in,
        content_type=row["content_type"],
        max_size=row["size"],
    )


def _target(plan: _Plan, protocol: str, endpoint: str | None) -> ResumableTarget:
    row = plan.row
    return ResumableTarget(
        row["id"],
        row["backend"],
        row["path"],
        row["expires_at"],
        protocol,
        endpoint,
        _part_size(row["size"]),
        plan.limits,
    )


def _start(plan: _Plan, protocol: str, expires_in: int) -> str | None:
    """The store-side start (I/O for S3): the tus endpoint or the multipart upload id."""
    if protocol == "tus":
        return _tus_endpoint(plan, expires_in)
    if protocol == "azure-blocks":
        return None  # blocks need no start
    plan.row["upload_id"] = S3Multipart(plan.backend).create(
        plan.row["upload_path"], plan.row["content_type"]
    )
    return None


def _undo_start(plan: _Plan) -> None:
    """The session's row was not written: abort the S3 multipart upload :func:`_start`
    created (best effort: one left behind is aborted by ``storeroom gc`` once older than its
    grace, since no pending session names it)."""
    upload_id = plan.row.get("upload_id")
    if not upload_id:
        return
    try:
        S3Multipart(plan.backend).abort(plan.row["upload_path"], upload_id)
    except Exception as exc:
        logger.warning(
            "could not abort the multipart upload of %r after its session's row failed to "
            "insert (storeroom gc aborts it later): %s",
            plan.row["upload_path"],
            exc,
        )


def begin_resumable(
    session: Any,
    destination: Any,
    *,
    filename: str,
    content_type: str,
    size: int,
    limits: UploadLimits | None = None,
    expires_in: int = DEFAULT_RESUMABLE_TTL,
    registry: StorageRegistry | None = None,
) -> ResumableTarget:
    """Start a resumable upload session (arguments as :func:`~storeroom.uploads.begin`).

    Raises :class:`UploadRejected` when the declaration breaks a limit and
    :class:`~storeroom.errors.ConfigurationError` for a store without a resumable protocol.
    """
    plan, protocol = _resumable_plan(
        destination, filename, content_type, size, limits, expires_in, registry
    )
    endpoint = _start(plan, protocol, expires_in)
    try:
        session.execute(upload_sessions.insert().values(**plan.row))
    except BaseException:
        _undo_start(plan)
        raise
    return _target(plan, protocol, endpoint)


async def begin_resumable_async(
    session: Any,
    destination: Any,
    *,
    filename: str,
    content_type: str,
    size: int,
    limits: UploadLimits | None = None,
    expires_in: int = DEFAULT_RESUMABLE_TTL,
    registry: StorageRegistry | None = None,
) -> ResumableTarget:
    """Async form of :func:`begin_resumable`."""
    plan, protocol = _resumable_plan(
        destination, filename, content_type, size, limits, expires_in, registry
    )
    endpoint = await asyncio.to_thread(_start, plan, protocol, expires_in)
    try:
        await session.execute(upload_sessions.insert().values(**plan.row))
    except BaseException:
        # Shielded: a cancelled begin still aborts what it started.
        await asyncio.shield(asyncio.to_thread(_undo_start, plan))
        raise
    return _target(plan, protocol, endpoint)


# -- parts ----------------------------------------------------------------------------------

_PARTED = ("s3-multipart", "azure-blocks")


def _pending(row: Any, session_id: str, protocol: str | None = None) -> None:
    _usable(row, session_id, _now())
    if row.protocol is None or (protocol is not None and row.protocol not in _PARTED):
        raise UploadSessionInvalid(
            f"upload session {session_id!r} is a {row.protocol or 'single'} upload, "
            f"not {'one sent in parts' if protocol else 'a resumable one'}"
        )


def _select(session_id: str) -> Any:
    return select(upload_sessions).where(upload_sessions.c.id == session_id)


def _signed_part(
    row: Any, backend: StorageBackend, number: int, size: int | None, expires_in: int
) -> dict[str, Any]:
    rules = AzureBlocks.rules if row.protocol == "azure-blocks" else S3_PARTS
    problem = part_problem(number, size, row.size, rules)
    if problem is not None:
        raise UploadRejected(f"session {row.id!r}: {problem}", rule="part", value=(number, size))
    if row.protocol == "azure-blocks":
        return {
            "url": AzureBlocks(backend).part_url(row.upload_path, number, expires_in=expires_in),
            "headers": {},
        }
    url = S3Multipart(backend).part_url(
        row.upload_path, row.upload_id, number, size, expires_in=expires_in, now=_now()
    )
    return {"url": url, "headers": {}}


def sign_part(
    session: Any,
    session_id: str,
    number: int,
    size: int | None,
    *,
    expires_in: int = 900,
    registry: StorageRegistry | None = None,
) -> dict[str, Any]:
    """The presigned ``PUT`` (``{"url", "headers"}``) of part ``number``, ``size`` bytes.

    The part's length is signed: S3 refuses a body of another size. ``size=None`` (clients
    that do not say, such as Uppy's Companion protocol) signs no length; the parts' sizes
    are then checked when the upload is finished. Raises
    :class:`UploadRejected` (rule ``"part"``) for a number or size no part of the declared
    upload can have, :class:`UploadSessionInvalid` for a finished or expired session or one
    not sent in parts (tus, single). Azure signs no length: its blocks' sizes are checked
    when the upload is finished.
    """
    row = session.execute(_select(session_id)).first()
    _pending(row, session_id, "parts")
    backend = (registry or storages).get_backend(row.backend)
    return _signed_part(row, backend, number, size, expires_in)


async def sign_part_async(
    session: Any,
    session_id: str,
    number: int,
    size: int | None,
    *,
    expires_in: int = 900,
    registry: StorageRegistry | None = None,
) -> dict[str, Any]:
    """Async form of :func:`sign_part` (signing is local: no store request)."""
    row = (await session.execute(_select(session_id))).first()
    _pending(row, session_id, "parts")
    backend = (registry or storages).get_backend(row.backend)
    return _signed_part(row, backend, number, size, expires_in)


def _parts(row: Any, backend: StorageBackend) -> list[PartInfo]:
    if row.protocol == "azure-blocks":
        return AzureBlocks(backend).parts(row.upload_path)
    return S3Multipart(backend).parts(row.upload_path, row.upload_id)


def list_parts(
    session: Any, session_id: str, *, registry: StorageRegistry | None = None
) -> list[PartInfo]:
    """The parts S3 already holds for session ``session_id`` (a client resumes after them)."""
    row = session.execute(_select(session_id)).first()
    _pending(row, session_id, "parts")
    return _parts(row, (registry or storages).get_backend(row.backend))


async def list_parts_async(
    session: Any, session_id: str, *, registry: StorageRegistry | None = None
) -> list[PartInfo]:
    """Async form of :func:`list_parts`."""
    row = (await session.execute(_select(session_id))).first()
    _pending(row, session_id, "parts")
    return await asyncio.to_thread(_parts, row, (registry or storages).get_backend(row.backend))


def _drop(row: Any, backend: StorageBackend) -> None:
    from storeroom.uploads.sessions import abandon_resumable

    abandon_resumable(backend, row)
    if row.protocol == "tus":
        delete_tus_parts(backend, row.upload_path)
    # A pending session's objects (assembled, committed or completed by a client; a final
    # copy left by a completion that never committed) are nobody's.
    for path in dict.fromkeys([row.upload_path, row.path]):
        backend.delete(path)


def _remove_pending(session_id: str) -> Any:
    """Delete the row if still pending: waits for the row lock of a completion in flight,
    which, once committed, no longer matches."""
    return upload_sessions.delete().where(
        and_(upload_sessions.c.id == session_id, upload_sessions.c.completed_at.is_(None))
    )


def _removed(rowcount: int, session_id: str) -> None:
    if rowcount != 1:
        raise UploadSessionInvalid(
            f"upload session {session_id!r} was completed or removed meanwhile; nothing was aborted"
        )


def abort(session: Any, session_id: str, *, registry: StorageRegistry | None = None) -> None:
    """Give up a pending resumable session: drop its parts and its row (commit afterwards).

    The row is removed first, in the caller's transaction (waiting for a completion of the
    same session in flight): if that completion commits, :class:`UploadSessionInvalid` is
    raised and nothing is deleted.
    """
    row = session.execute(_select(session_id)).first()
    _pending(row, session_id)
    backend = (registry or storages).get_backend(row.backend)
    _removed(session.execute(_remove_pending(session_id)).rowcount, session_id)
    _drop(row, backend)


async def abort_async(
    session: Any, session_id: str, *, registry: StorageRegistry | None = None
) -> None:
    """Async form of :func:`abort`."""
    row = (await session.execute(_select(session_id))).first()
    _pending(row, session_id)
    backend = (registry or storages).get_backend(row.backend)
    _removed((await session.execute(_remove_pending(session_id))).rowcount, session_id)
    await asyncio.to_thread(_drop, row, backend)


def _finish(row: Any, backend: StorageBackend) -> None:
    from storeroom.uploads.sessions import finish_resumable

    finish_resumable(backend, row)


def finish(session: Any, session_id: str, *, registry: StorageRegistry | None = None) -> None:
    """Complete session ``session_id``'s S3 multipart upload now, without verifying it.

    For clients that end with a "complete" call of their own (Uppy's S3 plugin): the parts
    are checked as :func:`~storeroom.uploads.complete` checks them, and
    :func:`~storeroom.uploads.complete` still verifies size, type and checksum afterwards.
    A tus session needs nothing here (the handler assembles it at the last byte).
    """
    row = session.execute(_select(session_id)).first()
    _pending(row, session_id)
    _finish(row, (registry or storages).get_backend(row.backend))


async def finish_async(
    session: Any, session_id: str, *, registry: StorageRegistry | None = None
) -> None:
    """Async form of :func:`finish`."""
    row = (await session.execute(_select(session_id))).first()
    _pending(row, session_id)
    await asyncio.to_thread(_finish, row, (registry or storages).get_backend(row.backend))
