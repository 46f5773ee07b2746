"""Upload sessions: direct uploads from a browser that are server-placed, single-use and verified.

Pending sessions live in a database table (:data:`upload_sessions`) rather than in a signed
token: a token cannot be spent once (two app servers could each complete it) and cannot be
found again after a crash, whereas a row survives a restart, is shared by every app server,
is completed by one conditional ``UPDATE`` (exactly one request wins), and lets
:func:`remove_expired` find the bytes of abandoned uploads.

The flow::

    target = begin(session, Document.file, filename="cat.png", content_type="image/png",
                   size=2_048, limits=UploadLimits(max_size=10 << 20, content_types=["image/*"]))
    session.commit()                    # the session must be stored before the browser uploads
    # ... the browser sends target.instructions.method to target.instructions.url ...
    doc.file = complete(session, target.id)   # verified FileObject, owned by the row from here
    session.commit()

``complete`` checks, in order: the session exists, is not completed and has not expired; the
object exists; its size is within the limits and equal to the declared size; the type sniffed
from its first bytes is allowed; then it reads the object once to record its SHA-256. A failed
check deletes the object and raises :class:`UploadRejected` naming the rule and the value.
The completion is written in the caller's transaction: if it rolls back, the session is
pending again (and its object is removed once it expires).
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    and_,
    select,
    update,
)

from storeroom.backends.base import StorageBackend
from storeroom.errors import ConfigurationError, ObjectNotFound, StoreroomError, ValidationError
from storeroom.file import FileObject
from storeroom.media.sniff import SNIFF_BYTES, is_active_content, sniff_type
from storeroom.media.validation import ValidatorLike, inspect_content, inspect_content_async
from storeroom.orm.layout import default_path, safe_filename
from storeroom.paths import safe_path
from storeroom.registry import StorageRegistry, storages
from storeroom.streams import Meter
from storeroom.uploads.targets import UploadInstructions, enforced_limits, instructions


def finish_resumable(backend: StorageBackend, row: Any) -> None:
    """Before a resumable session is verified: complete its S3 multipart upload.

    The parts are listed from the store (never taken from the client) and must number 1 to
    n without a gap, all but the last at least 5 MiB, and add up to the declared size;
    otherwise the multipart upload is aborted and :class:`UploadRejected` raised. An upload
    no longer open (completed by an earlier attempt whose transaction rolled back) is left
    to the object check that follows.
    """
    protocol = getattr(row, "protocol", None)
    if protocol == "azure-blocks":
        _finish_azure(backend, row)
        return
    if protocol != "s3-multipart":
        return
    from storeroom.backends.obstore.direct_uploads import S3Multipart
    from storeroom.uploads.multipart import parts_problem

    store = S3Multipart(backend)
    if not store.exists(row.upload_id, row.upload_path):
        return
    parts = store.parts(row.upload_path, row.upload_id)
    problem = parts_problem(parts, row.size)
    if problem is not None:
        store.abort(row.upload_path, row.upload_id)
        raise UploadRejected(
            f"session {row.id!r}: {problem}", rule="parts", value=[part.to_dict() for part in parts]
        )
    store.finish(row.upload_path, row.upload_id, parts)


def _finish_azure(backend: StorageBackend, row: Any) -> None:
    from storeroom.backends.obstore.direct_uploads import AzureBlocks
    from storeroom.uploads.multipart import parts_problem

    store = AzureBlocks(backend)
    parts = store.parts(row.upload_path)
    if not parts:  # committed by an earlier attempt, or nothing sent: the object check tells
        return
    problem = parts_problem(parts, row.size, store.rules)
    if problem is not None:
        store.abort(row.upload_path)
        raise UploadRejected(
            f"session {row.id!r}: {problem}", rule="parts", value=[part.to_dict() for part in parts]
        )
    store.finish(row.upload_path, parts, row.content_type)


def abandon_resumable(backend: StorageBackend, row: Any) -> None:
    """Drop what a pending resumable session left at the store (parts, multipart upload)."""
    protocol = getattr(row, "protocol", None)
    if protocol == "s3-multipart" and row.upload_id:
        from storeroom.backends.obstore.direct_uploads import S3Multipart

        S3Multipart(backend).abort(row.upload_path, row.upload_id)
    elif protocol == "azure-blocks":
        from storeroom.backends.obstore.direct_uploads import AzureBlocks

        AzureBlocks(backend).abort(row.upload_path)
    elif protocol == "tus":
        from storeroom.uploads.multipart import delete_tus_parts

        delete_tus_parts(backend, row.upload_path)


__all__ = [
    "UploadLimits",
    "UploadRejected",
    "UploadSessionInvalid",
    "UploadTarget",
    "begin",
    "begin_async",
    "complete",
    "complete_async",
    "metadata",
    "remove_expired",
    "remove_expired_async",
    "upload_sessions",
]

metadata = MetaData()
"""Holds :data:`upload_sessions`; ``metadata.create_all(engine)`` (or add it to your migrations)."""

upload_sessions = Table(
    "storeroom_upload_sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("backend", String(255), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("upload_path", String(1024), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("limits", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    # The completed object as it was verified: a later object at the same path with another
    # ETag or date can only be a replay written after the row's own file was deleted.
    Column("etag", String(255), nullable=True),
    Column("stored_at", DateTime(timezone=True), nullable=True),
    # Resumable sessions: "tus" or "s3-multipart" (None: a single upload) and, for S3, the
    # multipart upload's id (aborted by remove_expired if the session is abandoned).
    Column("protocol", String(16), nullable=True),
    Column("upload_id", String(1024), nullable=True),
)
"""One row per upload session: where it goes, what was declared, when it expires."""

STAGING_PREFIX = "_uploads"
"""Where uploads land on stores that cannot refuse a second write (moved on completion)."""


class UploadRejected(StoreroomError):
    """A completed upload broke a rule; its object was deleted.

    ``rule`` names the rule (``"missing"``, ``"max_size"``, ``"min_size"``, ``"declared_size"``,
    ``"content_type"``, ``"parts"`` for a resumable S3 upload whose parts do not make the
    declared upload, and at :func:`begin` also ``"filename"``), ``value`` the offending
    value.
    """

    def __init__(self, message: str, *, rule: str, value: Any) -> None:
        super().__init__(message)
        self.rule = rule
        self.value = value


class UploadSessionInvalid(StoreroomError):
    """The upload session is unknown, already completed or expired."""


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """What an upload may be: a size range and allowed types (``image/*`` patterns).

    ``content_types`` empty allows any type; the type checked is the one sniffed from the
    bytes, never the one the client declared. Active content (HTML, SVG, XML, scripts:
    :func:`storeroom.media.sniff.is_active_content`) is refused even where a pattern
    matches it (``image/*`` matches SVG, ``text/*`` HTML) unless ``allow_active``.
    """

    max_size: int | None = None
    min_size: int = 0
    content_types: Sequence[str] = ()
    allow_active: bool = False

    def to_json(self) -> dict[str, Any]:
        """The form stored with the session."""
        return {
            "max_size": self.max_size,
            "min_size": self.min_size,
            "content_types": list(self.content_types),
            "allow_active": self.allow_active,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadLimits:
        """Inverse of :meth:`to_json`."""
        return cls(
            data.get("max_size"),
            int(data.get("min_size") or 0),
            tuple(data.get("content_types") or ()),
            bool(data.get("allow_active")),
        )

    def size_problem(self, size: int, subject: str) -> UploadRejected | None:
        """Why ``size`` bytes break these limits, or None; ``subject`` names the size."""
        if self.max_size is not None and size > self.max_size:
            return UploadRejected(
                f"{subject} {size} bytes is over the limit of {self.max_size} bytes",
                rule="max_size",
                value=size,
            )
        if size < self.min_size:
            return UploadRejected(
                f"{subject} {size} bytes is under the minimum of {self.min_size} bytes",
                rule="min_size",
                value=size,
            )
        return None

    def type_problem(self, content_type: str, subject: str) -> UploadRejected | None:
        """Why ``content_type`` is refused (naming what is allowed), or None."""
        if self.allows_type(content_type):
            return None
        allowed = ", ".join(self.content_types) or "any type"
        if not self.allow_active:
            allowed += " (no active content such as HTML)"
        return UploadRejected(
            f"{subject} {content_type!r} is not allowed; allowed: {allowed}",
            rule="content_type",
            value=content_type,
        )

    def allows_type(self, content_type: str) -> bool:
        """Whether ``content_type`` (parameters ignored) matches an allowed pattern."""
        if is_active_content(content_type) and not self.allow_active:
            return False
        if not self.content_types:
            return True
        essence = content_type.split(";", 1)[0].strip().lower()
        return any(fnmatch.fnmatchcase(essence, p.lower()) for p in self.content_types)


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """What :func:`begin` returns: the session id and the upload instructions."""

    id: str
    backend: str
    path: str
    expires_at: datetime
    instructions: UploadInstructions
    limits: UploadLimits = field(default_factory=UploadLimits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the browser."""
        return {
            "id": self.id,
            "expires_at": self.expires_at.isoformat(),
            **self.instructions.to_dict(),
        }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(slots=True)
class _Plan:
    backend: StorageBackend
    row: dict[str, Any]
    limits: UploadLimits


def _destination(destination: Any, registry: StorageRegistry) -> tuple[StorageBackend, Any, str]:
    """``(backend, model or None, column name)`` of a backend key, backend or model column."""
    if isinstance(destination, StorageBackend):
        return destination, None, "file"
    if isinstance(destination, str) or destination is None:
        return registry.get_backend(destination), None, "file"
    from storeroom.orm.types import StoredObject

    column_type = getattr(getattr(destination, "property", None), "columns", [None])[0]
    kind = getattr(column_type, "type", None)
    if not isinstance(kind, StoredObject) or kind.multiple:
        raise ConfigurationError(
            f"upload destination must be a backend key, a backend or a StoredObject column "
            f"(single file), got {destination!r}"
        )
    return registry.get_backend(kind.backend), destination.class_, destination.key


# One type, no list, no control characters: the value is signed into a header.
_DECLARED_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
    r"(\s*;\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+=(\"[^\"\x00-\x1f\x7f]*\"|[A-Za-z0-9!#$%&'*+.^_`|~-]+))*"
)


def _check_declared(filename: str, content_type: str, size: int, limits: UploadLimits) -> None:
    if not isinstance(content_type, str) or not _DECLARED_TYPE.fullmatch(content_type):
        raise UploadRejected(
            f"declared type {content_type!r} is not a single media type like 'image/png'",
            rule="content_type",
            value=content_type,
        )
    if (
        not isinstance(filename, str)
        or not filename
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in filename)
    ):
        raise UploadRejected(
            f"filename {filename!r} is empty or contains a control character",
            rule="filename",
            value=filename,
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UploadRejected(
            f"declared size must be a whole number of bytes, got {size!r}",
            rule="declared_size",
            value=size,
        )
    problem = limits.size_problem(size, "declared size") or limits.type_problem(
        content_type, "the declared type"
    )
    if problem is not None:
        raise problem


def _plan(
    destination: Any,
    filename: str,
    content_type: str,
    size: int,
    limits: UploadLimits,
    expires_in: int,
    registry: StorageRegistry | None,
) -> _Plan:
    backend, model, column = _destination(destination, registry or storages)
    _check_declared(filename, content_type, size, limits)
    if not 1 <= expires_in <= 7 * 24 * 3600:
        raise ConfigurationError(f"expires_in must be 1 s to 7 days, got {expires_in!r}")
    session_id = uuid.uuid4().hex
    name = safe_filename(filename)
    if model is not None:
        path = default_path(model, column, FileObject(backend, name))
    else:
        path = safe_path(f"uploads/{session_id}/{name}")
    staged = "create-only" not in enforced_limits(backend)
    upload_path = safe_path(f"{STAGING_PREFIX}/{session_id}/{name}") if staged else path
    now = _now()
    row = {
        "id": session_id,
        "backend": backend.key,
        "path": path,
        "upload_path": upload_path,
        "filename": filename[:255],
        "content_type": content_type,
        "size": size,
        "limits": limits.to_json(),
        "created_at": now,
        "expires_at": now + timedelta(seconds=expires_in),
        "completed_at": None,
    }
    return _Plan(backend, row, limits)


def _target(plan: _Plan, instructions_: UploadInstructions) -> UploadTarget:
    row = plan.row
    return UploadTarget(
        row["id"], row["backend"], row["path"], row["expires_at"], instructions_, plan.limits
    )


def begin(
    session: Any,
    destination: Any,
    *,
    filename: str,
    content_type: str,
    size: int,
    limits: UploadLimits | None = None,
    expires_in: int = 900,
    registry: StorageRegistry | None = None,
) -> UploadTarget:
    """Start an upload session; return the browser's instructions.

    Args:
        session: A SQLAlchemy ``Session``; the session row is added and flushed in it
            (commit before handing the instructions out).
        destination: A backend key, a backend, or a ``StoredObject`` model column
            (``Document.file``: its backend and the ORM's ``{table}/{column}/{uuid}/{name}``
            layout).
        filename: The client's name for the file; kept as ``filename``, reduced to safe
            characters in the path, never used as the path itself.
        content_type: The declared type (signed into the upload where the store allows).
        size: The declared size in bytes; the upload must be exactly this long.
        limits: Size range and allowed types (checked now against the declaration and at
            completion against the bytes).
        expires_in: Seconds the upload URL and the session stay valid.

    Raises :class:`UploadRejected` when the declaration already breaks a limit.
    """
    plan = _plan(
        destination, filename, content_type, size, limits or UploadLimits(), expires_in, registry
    )
    target = _target(
        plan,
        instructions(
            plan.backend,
            plan.row["upload_path"],
            content_type=content_type,
            size=size,
            expires_in=expires_in,
            now=plan.row["created_at"],
        ),
    )
    session.execute(upload_sessions.insert().values(**plan.row))
    return target


async def begin_async(
    session: Any,
    destination: Any,
    *,
    filename: str,
    content_type: str,
    size: int,
    limits: UploadLimits | None = None,
    expires_in: int = 900,
    registry: StorageRegistry | None = None,
) -> UploadTarget:
    """Async form of :func:`begin` (``session`` is an ``AsyncSession``)."""
    plan = _plan(
        destination, filename, content_type, size, limits or UploadLimits(), expires_in, registry
    )
    target = _target(
        plan,
        await asyncio.to_thread(
            instructions,
            plan.backend,
            plan.row["upload_path"],
            content_type=content_type,
            size=size,
            expires_in=expires_in,
            now=plan.row["created_at"],
        ),
    )
    await session.execute(upload_sessions.insert().values(**plan.row))
    return target


# -- completion: decisions ------------------------------------------------------------------


def _usable(row: Any, session_id: str, now: datetime) -> None:
    if row is None:
        raise UploadSessionInvalid(f"upload session {session_id!r} does not exist")
    if row.completed_at is not None:
        raise UploadSessionInvalid(
            f"upload session {session_id!r} was already completed; an upload is single-use"
        )
    if _aware(row.expires_at) <= now:
        raise UploadSessionInvalid(
            f"upload session {session_id!r} expired at {_aware(row.expires_at).isoformat()}; "
            "begin a new one"
        )


def _size_problem(row: Any, size: int) -> UploadRejected | None:
    problem = UploadLimits.from_json(row.limits).size_problem(size, "uploaded size")
    if problem is None and size != row.size:
        return UploadRejected(
            f"uploaded {size} bytes but {row.size} were declared", rule="declared_size", value=size
        )
    return problem


def _type_problem(row: Any, sniffed: str) -> UploadRejected | None:
    return UploadLimits.from_json(row.limits).type_problem(sniffed, "the uploaded bytes' type")


def _missing(row: Any) -> UploadRejected:
    return UploadRejected(
        f"nothing was uploaded for session {row.id!r} (no object at {row.upload_path!r})",
        rule="missing",
        value=row.upload_path,
    )


def _claim(session_id: str, now: datetime, info: Any) -> Any:
    return (
        update(upload_sessions)
        .where(
            and_(
                upload_sessions.c.id == session_id,
                upload_sessions.c.completed_at.is_(None),
                upload_sessions.c.expires_at > now,
            )
        )
        .values(completed_at=now, etag=info.etag, stored_at=info.last_modified)
    )


def _lost_race(session_id: str) -> UploadSessionInvalid:
    return UploadSessionInvalid(
        f"upload session {session_id!r} was completed by another request meanwhile"
    )


def _file(
    row: Any,
    backend: StorageBackend,
    sniffed: str,
    meter: Meter,
    info: Any,
    metadata: dict[str, Any] | None = None,
) -> FileObject:
    return FileObject(
        backend,
        row.filename,
        path=row.path,
        content_type=sniffed,
        size=meter.size,
        checksum=meter.checksum,
        etag=None if row.upload_path != row.path else info.etag,
        last_modified=info.last_modified,
        metadata=metadata,
    )


class _Sniffer:
    """Meters the whole object and keeps its first bytes for sniffing."""

    def __init__(self, backend: StorageBackend) -> None:
        # The checksum is recorded with the backend's digest, as a save would record it.
        self.meter = Meter(backend.checksum_algorithm)
        self.head = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.meter.update(chunk)
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]


def complete(
    session: Any,
    session_id: str,
    *,
    registry: StorageRegistry | None = None,
    validators: Iterable[ValidatorLike] | None = None,
) -> FileObject:
    """Verify the upload of session ``session_id`` and return its FileObject.

    Assign the result to a row and commit: the completion is recorded in the same
    transaction. Raises :class:`UploadSessionInvalid` (unknown, completed, expired) or
    :class:`UploadRejected` (the object was deleted). ``validators`` (those of
    :mod:`storeroom.media.validation`; pass the column's: ``Document.file.type.validators``)
    run on the bytes as they are read; a refusal deletes the object and raises
    :class:`~storeroom.errors.ValidationError`. What the bytes reveal (image size, PDF
    pages, duration) goes into the returned file's ``metadata``.
    """
    now = _now()
    row = session.execute(select(upload_sessions).where(upload_sessions.c.id == session_id)).first()
    _usable(row, session_id, now)
    backend = (registry or storages).get_backend(row.backend)
    finish_resumable(backend, row)
    try:
        info = backend.head(row.upload_path)
    except ObjectNotFound:
        raise _missing(row) from None
    problem = _size_problem(row, info.size)
    sniffer = _Sniffer(backend)
    inspected = None
    if problem is None:
        inspected = inspect_content(
            backend.stream(row.upload_path), validators or (), filename=row.filename
        )
        try:
            for chunk in inspected:
                sniffer.feed(chunk)
        except ValidationError:
            backend.delete(row.upload_path)
            raise
        sniffed = sniff_type(bytes(sniffer.head), row.filename)
        problem = _type_problem(row, sniffed) or _size_problem(row, sniffer.meter.size)
    if problem is not None:
        backend.delete(row.upload_path)
        raise problem
    if session.execute(_claim(session_id, now, info)).rowcount != 1:
        raise _lost_race(session_id)
    if row.upload_path != row.path:
        backend.copy(row.upload_path, row.path)
        backend.delete(row.upload_path)
    return _file(
        row,
        backend,
        sniffed,
        sniffer.meter,
        info,
        inspected.findings.metadata if inspected is not None else None,
    )


async def complete_async(
    session: Any,
    session_id: str,
    *,
    registry: StorageRegistry | None = None,
    validators: Iterable[ValidatorLike] | None = None,
) -> FileObject:
    """Async form of :func:`complete` (``session`` is an ``AsyncSession``)."""
    now = _now()
    row = (
        await session.execute(select(upload_sessions).where(upload_sessions.c.id == session_id))
    ).first()
    _usable(row, session_id, now)
    backend = (registry or storages).get_backend(row.backend)
    await asyncio.to_thread(finish_resumable, backend, row)
    try:
        info = await backend.head_async(row.upload_path)
    except ObjectNotFound:
        raise _missing(row) from None
    problem = _size_problem(row, info.size)
    sniffer = _Sniffer(backend)
    ainspected = None
    if problem is None:
        ainspected = inspect_content_async(
            await backend.stream_async(row.upload_path), validators or (), filename=row.filename
        )
        try:
            async for chunk in ainspected:
                sniffer.feed(chunk)
        except ValidationError:
            await backend.delete_async(row.upload_path)
            raise
        sniffed = sniff_type(bytes(sniffer.head), row.filename)
        problem = _type_problem(row, sniffed) or _size_problem(row, sniffer.meter.size)
    if problem is not None:
        await backend.delete_async(row.upload_path)
        raise problem
    if (await session.execute(_claim(session_id, now, info))).rowcount != 1:
        raise _lost_race(session_id)
    if row.upload_path != row.path:
        await backend.copy_async(row.upload_path, row.path)
        await backend.delete_async(row.upload_path)
    return _file(
        row,
        backend,
        sniffed,
        sniffer.meter,
        info,
        ainspected.findings.metadata if ainspected is not None else None,
    )


# -- expiry ---------------------------------------------------------------------------------


def _expired(now: datetime) -> Any:
    return select(upload_sessions).where(upload_sessions.c.expires_at <= now)


def _leftovers(row: Any) -> list[str]:
    """Objects an expired session may have left: its staging object, or its pending upload."""
    if row.completed_at is None:
        return [row.upload_path]
    return [row.upload_path] if row.upload_path != row.path else []


def _replayed(row: Any, info: Any) -> bool:
    """Whether the object now at a completed session's path is not the one it verified.

    Create-only uploads cannot replace the verified object; a different one there means
    the row's file was deleted and the URL replayed before it expired: nobody owns it.
    """
    if row.completed_at is None or row.upload_path != row.path:
        return False
    if row.etag is not None or info.etag is not None:
        return bool(row.etag != info.etag)
    if row.stored_at is None or info.last_modified is None:
        return False
    return _aware(row.stored_at) != _aware(info.last_modified)


def _has_table(session: Any) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(session.connection()).has_table(upload_sessions.name))


def remove_expired(
    session: Any, *, registry: StorageRegistry | None = None, now: datetime | None = None
) -> int:
    """Delete the objects of expired sessions and their rows; return how many were removed.

    A completed session's final object belongs to its row and is kept; what a replayed
    upload may have put at its staging path, or at its final path after the row's file was
    deleted (another ETag than the one verified), is deleted. ``storeroom gc`` calls this;
    a database without the sessions table has nothing to remove (0). Commit afterwards.
    """
    if not _has_table(session):
        return 0
    now = now or _now()
    removed = 0
    for row in session.execute(_expired(now)).all():
        backend = (registry or storages).get_backend(row.backend)
        if row.completed_at is None:
            abandon_resumable(backend, row)
        for path in _leftovers(row):
            backend.delete(path)
        if row.completed_at is not None and row.upload_path == row.path:
            try:
                if _replayed(row, backend.head(row.path)):
                    backend.delete(row.path)
            except ObjectNotFound:
                pass
        session.execute(upload_sessions.delete().where(upload_sessions.c.id == row.id))
        removed += 1
    return removed


async def remove_expired_async(
    session: Any, *, registry: StorageRegistry | None = None, now: datetime | None = None
) -> int:
    """Async form of :func:`remove_expired`."""
    if not await session.run_sync(_has_table):
        return 0
    now = now or _now()
    removed = 0
    for row in (await session.execute(_expired(now))).all():
        backend = (registry or storages).get_backend(row.backend)
        if row.completed_at is None:
            await asyncio.to_thread(abandon_resumable, backend, row)
        for path in _leftovers(row):
            await backend.delete_async(path)
        if row.completed_at is not None and row.upload_path == row.path:
            try:
                if _replayed(row, await backend.head_async(row.path)):
                    await backend.delete_async(row.path)
            except ObjectNotFound:
                pass
        await session.execute(upload_sessions.delete().where(upload_sessions.c.id == row.id))
        removed += 1
    return removed
