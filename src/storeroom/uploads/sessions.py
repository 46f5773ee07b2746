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
check deletes the object (unless another completion of the same session owns it: below) and
raises :class:`UploadRejected` naming the rule and the value.

The session row decides who owns the upload, and its lock orders the completions of one
session (two app servers, or one request retried with another column's validators):

- Accepted: the completion *claims* the row (one conditional ``UPDATE``: pending and not
  expired -> completed), which also locks it until the caller's transaction ends; it then
  checks that the object it verified is still there, unchanged, and returns its FileObject.
  The completion is written in the caller's transaction: if that does not commit, the
  session is pending again and ``complete`` can be retried.
- Rejected: before deleting anything the completion *holds* the row (an ``UPDATE`` that
  changes nothing, on a row still pending: a row lock on PostgreSQL and MariaDB, the write
  lock on SQLite). It waits there for a completion that has claimed the row and not
  committed yet; if that one commits, the row is no longer pending and the object is left
  to it (:class:`UploadSessionInvalid`, chained to the rejection). Only a completion
  holding a row that still says pending deletes the upload; the row stays locked until
  the caller's transaction ends, and a completion that claims it afterwards finds the
  object gone (:class:`UploadRejected`, rule ``"missing"``) and gives its claim back.

On a staging store (one that cannot refuse a second write: the browser uploads to
``_uploads/{session}/{name}``) the accepted upload is copied to its final path after the
claim, before the caller commits, and both copies follow that transaction
(:mod:`storeroom.uploads._staging`, on SQLAlchemy's connection and session events): a
transaction that does not commit (rollback, savepoint rollback, ``close()``, a failed
flush, the rollback of an outer transaction the session joined) deletes the final copy
while it still holds the row lock, so a completion waiting for that lock never loses its
own copy (a COMMIT the database refuses deletes it just after); the staging upload is kept
for a retry. A commit has the job queue delete the
staging upload. Only a process that dies mid-transaction leaves a final copy behind: the
session is still pending, so a retry overwrites it and :func:`remove_expired` deletes it.

:func:`remove_expired` claims expired rows (deleting them, waiting for the row lock of a
completion in flight) and commits before it deletes any object, so a session completed
meanwhile keeps its object.

The table's name and the paths sessions use are defined in :mod:`storeroom.uploads.layout`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import uuid
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn, TypeVar, cast

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
from storeroom.errors import (
    BackendError,
    ConfigurationError,
    ObjectNotFound,
    StoreroomError,
    ValidationError,
)
from storeroom.file import FileObject
from storeroom.media.sniff import SNIFF_BYTES, is_active_content, sniff_type
from storeroom.media.validation import ValidatorLike, inspect_content, inspect_content_async
from storeroom.orm.layout import default_path, safe_filename
from storeroom.paths import safe_path
from storeroom.registry import StorageRegistry, storages
from storeroom.streams import Meter
from storeroom.uploads import _staging
from storeroom.uploads.layout import SESSIONS_TABLE, staging_path
from storeroom.uploads.layout import STAGING_PREFIX as STAGING_PREFIX
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
    SESSIONS_TABLE,
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


class UploadRejected(StoreroomError):
    """A completed upload broke a rule; its object was deleted.

    (Rules ``"missing"`` and ``"changed"``: the object was deleted or replaced after it was
    verified; the session is left pending.)

    ``rule`` names the rule (``"missing"``, ``"max_size"``, ``"min_size"``, ``"declared_size"``,
    ``"content_type"``, ``"parts"`` for a resumable S3 upload whose parts do not make the
    declared upload, ``"changed"`` for an object replaced after it was verified, and at
    :func:`begin` also ``"filename"``), ``value`` the offending value. A
    :class:`~storeroom.errors.ValidationError` of the validators given to :func:`complete`
    is raised as it is.
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
    upload_path = staging_path(session_id, name) if staged else path
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


def _hold(session_id: str) -> Any:
    """Lock the row of session ``session_id`` if it is still pending (changes nothing).

    A row lock on PostgreSQL and MariaDB (SQLite: the database's write lock), waiting for a
    completion that claimed the row and has not committed; the database then reads the row
    again, so one that committed leaves nothing to match.
    """
    return (
        update(upload_sessions)
        .where(and_(upload_sessions.c.id == session_id, upload_sessions.c.completed_at.is_(None)))
        .values(expires_at=upload_sessions.c.expires_at)
    )


def _unclaim(session_id: str) -> Any:
    """Undo :func:`_claim` in this transaction (the row stays locked until it ends)."""
    return (
        update(upload_sessions)
        .where(upload_sessions.c.id == session_id)
        .values(completed_at=None, etag=None, stored_at=None)
    )


def _lost_race(session_id: str) -> UploadSessionInvalid:
    return UploadSessionInvalid(
        f"upload session {session_id!r} was completed by another request, or removed as "
        "expired, meanwhile; an upload is single-use"
    )


def _same_object(verified: Any, now: Any) -> bool:
    """Whether ``now`` (a HEAD) is still the object ``verified`` was taken from."""
    if now is None or now.size != verified.size:
        return False
    if verified.etag is not None and now.etag is not None:
        return bool(verified.etag == now.etag)
    return bool(verified.last_modified == now.last_modified)


def _gone(row: Any, path: str, now: Any) -> UploadRejected:
    if now is None:
        return UploadRejected(
            f"the upload of session {row.id!r} at {path!r} was deleted after it was verified "
            "(a completion of the same session rejected it meanwhile); begin a new session",
            rule="missing",
            value=path,
        )
    return UploadRejected(
        f"the upload of session {row.id!r} at {path!r} was replaced after it was verified; "
        "begin a new session",
        rule="changed",
        value=path,
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


@dataclass(slots=True)
class _Read:
    """What reading an upload once found: its meter and first bytes, or why it was refused."""

    sniffer: _Sniffer
    metadata: dict[str, Any] | None
    refused: ValidationError | None


# -- the I/O of completion and expiry, named: the flows below yield these steps, and each twin
# -- performs them (httpx's auth_flow pattern), so the sequence and its decisions exist once.

_EXECUTE = "execute"  # session.execute(statement)                   -> Result
_COMMIT = "commit"  # session.commit()                               -> None
_HAS_TABLE = "has table"  # whether the sessions table exists           -> bool
_CALL = "call"  # a sync-only function (in a worker thread when async) -> its result
_HEAD = "head"  # backend.head(path), None when nothing is there      -> ObjectInfo | None
_READ = "read"  # stream the object through the validators, meter it  -> _Read
_COPY = "copy"  # backend.copy(src, dst)                              -> None
_DELETE = "delete"  # backend.delete(path)                             -> None
_WATCH = "watch"  # the copy follows the claim's transaction (_staging) -> StagedCompletion

_T = TypeVar("_T")
Step = tuple[Any, ...]
Flow = Generator[Step, Any, _T]


def _completion(
    session_id: str, registry: StorageRegistry | None, validators: Iterable[ValidatorLike]
) -> Flow[FileObject]:
    """:func:`complete` as steps: every decision, no I/O."""
    now = _now()
    row = (
        yield (_EXECUTE, select(upload_sessions).where(upload_sessions.c.id == session_id))
    ).first()
    _usable(row, session_id, now)
    backend = (registry or storages).get_backend(row.backend)
    yield (_CALL, finish_resumable, backend, row)
    source = row.upload_path
    info = yield (_HEAD, backend, source)
    if info is None and row.upload_path != row.path:
        # Nothing staged, but a copy at the final path: left by a completion whose
        # transaction ended without a word (its process died). A pending session's final
        # path holds nothing else.
        source = row.path
        info = yield (_HEAD, backend, source)
    if info is None:
        raise _missing(row)
    read: _Read | None = None
    problem: StoreroomError | None = _size_problem(row, info.size)
    if problem is None:
        read = yield (_READ, backend, source, tuple(validators), row.filename)
        problem = read.refused or _read_problem(row, read)
    if problem is not None:
        yield from _rejection(row, backend, problem)
    assert read is not None  # no problem found means the object was read
    if (yield (_EXECUTE, _claim(session_id, now, info))).rowcount != 1:
        raise _lost_race(session_id)
    # The row is locked by this transaction from here. A completion that rejected the
    # upload may have deleted it before the claim (holding the row, pending, in turn).
    yield from _unchanged(row, backend, source, info, None)
    if source != row.path:
        queued = registry is None or registry is storages  # the job looks the backend up there
        watched = yield (_WATCH, backend, source, row.path, queued)
        try:
            yield (_COPY, backend, source, row.path)
        except Exception:
            yield from _give_back(row, backend, watched)
            raise
        # Unchanged before and after the copy: the copy is of the object verified.
        yield from _unchanged(row, backend, source, info, watched)
    return _file(row, backend, _sniffed(row, read), read.sniffer.meter, info, read.metadata)


def _rejection(row: Any, backend: StorageBackend, problem: StoreroomError) -> Flow[NoReturn]:
    """Delete the upload ``problem`` refuses, unless another completion owns it; raise."""
    if (yield (_EXECUTE, _hold(row.id))).rowcount != 1:
        # Completed by a completion that accepted it (or removed as expired): not ours.
        raise _lost_race(row.id) from problem
    # This transaction holds the row, still pending: no completion has claimed it, and
    # none can until this transaction ends.
    for path in dict.fromkeys([row.upload_path, row.path]):
        yield (_DELETE, backend, path)
    raise problem


def _unchanged(
    row: Any,
    backend: StorageBackend,
    source: str,
    verified: Any,
    watched: _staging.StagedCompletion | None,
) -> Flow[None]:
    """Raise (after giving the claim back) if the object at ``source`` is not the verified one."""
    now = yield (_HEAD, backend, source)
    if not _same_object(verified, now):
        yield from _give_back(row, backend, watched)
        raise _gone(row, source, now)


def _give_back(
    row: Any, backend: StorageBackend, watched: _staging.StagedCompletion | None
) -> Flow[None]:
    """Undo this completion's claim (and its copy) in the caller's transaction."""
    if watched is not None:
        watched.forget()
        try:
            yield (_DELETE, backend, row.path)
        except Exception:  # the session is pending: remove_expired deletes it later
            pass
    yield (_EXECUTE, _unclaim(row.id))


def _sniffed(row: Any, read: _Read) -> str:
    return sniff_type(bytes(read.sniffer.head), row.filename)


def _read_problem(row: Any, read: _Read) -> UploadRejected | None:
    return _type_problem(row, _sniffed(row, read)) or _size_problem(row, read.sniffer.meter.size)


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

    A rejection deletes the object only while the session row, locked by this transaction,
    still says pending: if another completion of the same session (with other validators)
    accepted it and commits meanwhile, this one raises :class:`UploadSessionInvalid` and the
    object stays. Roll back after a rejection: the row stays locked until then.

    On a staging store the verified object is copied to its final path before the caller
    commits. If that transaction does not commit, the copy is deleted and the session is
    pending again, with the upload still at its staging path for a retry; after the commit
    the staging upload is deleted in the background (``storeroom.orm.wait_for_cleanup()``
    waits for it).
    """
    return _run(session, _completion(session_id, registry, validators or ()))


async def complete_async(
    session: Any,
    session_id: str,
    *,
    registry: StorageRegistry | None = None,
    validators: Iterable[ValidatorLike] | None = None,
) -> FileObject:
    """Async form of :func:`complete` (``session`` is an ``AsyncSession``)."""
    return await _arun(session, _completion(session_id, registry, validators or ()))


# -- expiry ---------------------------------------------------------------------------------


def _expired(now: datetime) -> Any:
    # One order for every cleaner, so two running at once take row locks in the same order.
    return (
        select(upload_sessions)
        .where(upload_sessions.c.expires_at <= now)
        .order_by(upload_sessions.c.id)
    )


def _claim_expired(row: Any, now: datetime) -> Any:
    """Delete ``row`` if it is still expired and still in the state it was read in.

    The row lock of a completion not committed yet makes this wait; the database then
    re-reads the row, so a session completed meanwhile is no longer pending and is left.
    """
    state = upload_sessions.c.completed_at
    return upload_sessions.delete().where(
        and_(
            upload_sessions.c.id == row.id,
            upload_sessions.c.expires_at <= now,
            state.is_(None) if row.completed_at is None else state.is_not(None),
        )
    )


def _leftovers(row: Any) -> list[str]:
    """Objects an expired session may have left: its staging object, or its pending upload
    (and, staged, a final copy left by a completion whose process died before its commit)."""
    if row.completed_at is None:
        return list(dict.fromkeys([row.upload_path, row.path]))
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


def _clear(backend: StorageBackend, row: Any) -> Flow[None]:
    """Delete what the claimed session ``row`` left at its store (steps)."""
    if row.completed_at is None:
        yield (_CALL, abandon_resumable, backend, row)
    for path in _leftovers(row):
        yield (_DELETE, backend, path)
    if row.completed_at is not None and row.upload_path == row.path:
        info = yield (_HEAD, backend, row.path)
        if info is not None and _replayed(row, info):
            yield (_DELETE, backend, row.path)


def _not_cleared(failures: list[tuple[Any, Exception]]) -> BackendError:
    row, error = failures[0]
    others = f" (and {len(failures) - 1} more sessions)" if len(failures) > 1 else ""
    return BackendError(
        f"deleting what expired upload session {row.id!r} left on backend {row.backend!r} "
        f"failed{others}: {type(error).__name__}: {error}. The session rows are removed "
        "already; `storeroom gc` deletes the objects left behind as orphans once they are "
        "older than its grace period."
    )


def _removal(registry: StorageRegistry | None, now: datetime) -> Flow[int]:
    """:func:`remove_expired` as steps: claim and commit first, then delete objects."""
    if not (yield (_HAS_TABLE,)):
        return 0
    expired = (yield (_EXECUTE, _expired(now))).all()
    # Every backend before any claim: a session of an unregistered backend stops the run
    # before a row is removed whose objects could then not be deleted.
    backends = {row.backend: (registry or storages).get_backend(row.backend) for row in expired}
    claimed = []
    for row in expired:
        if (yield (_EXECUTE, _claim_expired(row, now))).rowcount == 1:
            claimed.append(row)
    yield (_COMMIT,)
    failures: list[tuple[Any, Exception]] = []
    for row in claimed:
        try:
            yield from _clear(backends[row.backend], row)
        except Exception as error:  # the other sessions' objects are still deleted
            failures.append((row, error))
    if failures:
        raise _not_cleared(failures) from failures[0][1]
    return len(claimed)


def remove_expired(
    session: Any, *, registry: StorageRegistry | None = None, now: datetime | None = None
) -> int:
    """Remove expired sessions and what they left in the stores; return how many were removed.

    First claims the expired sessions: deletes each row that is still expired and still
    pending (or still completed) as it was read, waiting for the row lock of a completion
    in flight, and **commits** ``session``. Only then does it delete the objects of the
    sessions it claimed, so a session completed meanwhile keeps its object. Deleted are a
    pending session's upload (staged: also a final copy left by a completion whose process
    died before its commit), and what a replayed upload may have put at a completed
    session's staging path, or at its final path after the row's file was deleted (another
    ETag than the one verified); a completed session's own final object belongs to its row
    and is kept. ``storeroom gc`` calls this; a database without the sessions table has
    nothing to remove (0).

    Raises :class:`~storeroom.errors.BackendError` when deleting some objects failed (after
    trying every claimed session); those objects are left to ``storeroom gc`` as orphans.
    """
    return _run(session, _removal(registry, now or _now()))


async def remove_expired_async(
    session: Any, *, registry: StorageRegistry | None = None, now: datetime | None = None
) -> int:
    """Async form of :func:`remove_expired`."""
    return await _arun(session, _removal(registry, now or _now()))


# -- the twins: I/O only --------------------------------------------------------------------


def _run(session: Any, flow: Flow[_T]) -> _T:
    """Perform ``flow``'s steps with the sync API; a step's error is raised inside the flow."""
    sent: Any = None
    error: Exception | None = None
    while True:
        try:
            step = flow.send(sent) if error is None else flow.throw(error)
        except StopIteration as done:
            return cast(_T, done.value)
        try:
            sent, error = _perform(session, step), None
        except Exception as failed:
            sent, error = None, failed


async def _arun(session: Any, flow: Flow[_T]) -> _T:
    """Perform ``flow``'s steps with the async API; a step's error is raised inside the flow."""
    sent: Any = None
    error: Exception | None = None
    while True:
        try:
            step = flow.send(sent) if error is None else flow.throw(error)
        except StopIteration as done:
            return cast(_T, done.value)
        try:
            sent, error = await _aperform(session, step), None
        except Exception as failed:
            sent, error = None, failed


def _perform(session: Any, step: Step) -> Any:
    kind = step[0]
    if kind == _EXECUTE:
        return session.execute(step[1])
    if kind == _COMMIT:
        return session.commit()
    if kind == _HAS_TABLE:
        return _has_table(session)
    if kind == _CALL:
        return step[1](*step[2:])
    if kind == _WATCH:
        connection = session.connection(bind_arguments={"clause": upload_sessions.select()})
        return _staging.watch(session, connection, *step[1:4], queued=step[4])
    backend: StorageBackend = step[1]
    if kind == _HEAD:
        try:
            return backend.head(step[2])
        except ObjectNotFound:
            return None
    if kind == _READ:
        return _read(backend, *step[2:])
    if kind == _COPY:
        return backend.copy(step[2], step[3])
    assert kind == _DELETE, kind
    return backend.delete(step[2])


async def _aperform(session: Any, step: Step) -> Any:
    kind = step[0]
    if kind == _EXECUTE:
        return await session.execute(step[1])
    if kind == _COMMIT:
        return await session.commit()
    if kind == _HAS_TABLE:
        return await session.run_sync(_has_table)
    if kind == _CALL:
        return await asyncio.to_thread(step[1], *step[2:])
    if kind == _WATCH:
        connection = await session.connection(bind_arguments={"clause": upload_sessions.select()})
        return _staging.watch(
            session.sync_session, connection.sync_connection, *step[1:4], queued=step[4]
        )
    backend: StorageBackend = step[1]
    if kind == _HEAD:
        try:
            return await backend.head_async(step[2])
        except ObjectNotFound:
            return None
    if kind == _READ:
        return await _read_async(backend, *step[2:])
    if kind == _COPY:
        return await backend.copy_async(step[2], step[3])
    assert kind == _DELETE, kind
    return await backend.delete_async(step[2])


def _read(
    backend: StorageBackend, path: str, validators: Sequence[ValidatorLike], filename: str
) -> _Read:
    sniffer = _Sniffer(backend)
    inspected = inspect_content(backend.stream(path), validators, filename=filename)
    try:
        for chunk in inspected:
            sniffer.feed(chunk)
    except ValidationError as refused:
        return _Read(sniffer, None, refused)
    return _Read(sniffer, inspected.findings.metadata, None)


async def _read_async(
    backend: StorageBackend, path: str, validators: Sequence[ValidatorLike], filename: str
) -> _Read:
    sniffer = _Sniffer(backend)
    inspected = inspect_content_async(
        await backend.stream_async(path), validators, filename=filename
    )
    try:
        async for chunk in inspected:
            sniffer.feed(chunk)
    except ValidationError as refused:
        return _Read(sniffer, None, refused)
    return _Read(sniffer, inspected.findings.metadata, None)
