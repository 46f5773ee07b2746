"""Moving files between backends: verified, resumable, and safe for the rows that use them.

The library behind ``storeroom migrate`` and the safe form of the specification's data
migration script:

1. :func:`plan_objects` / :func:`plan_rows` list what to copy (every object under a prefix,
   or the files a model's column references on the source backend).
2. :func:`copy_objects` streams each one to the destination with bounded concurrency,
   verifies it there (:mod:`storeroom.backends.transfer`: size, the checksum computed on the
   way against the one recorded for the file, and by default the checksum of the bytes read
   back), and appends it to a
   :class:`MigrationState` journal (fsync'd), so a rerun after a crash copies only what is
   missing.
3. :func:`update_rows` / :func:`update_rows_async` then repoint rows at the destination in
   batches, each in its own transaction, and only for files the journal records as
   verified. The source objects are never deleted.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from storeroom.backends import transfer
from storeroom.backends.base import ObjectInfo, StorageBackend
from storeroom.errors import ObjectNotFound, StoreroomError
from storeroom.file import FileObject

__all__ = [
    "CopyItem",
    "MigrationReport",
    "MigrationState",
    "copy_objects",
    "plan_objects",
    "plan_objects_async",
    "plan_rows",
    "repoint",
    "update_rows",
    "update_rows_async",
]

ProgressCallback = Callable[["CopyItem", int], None]


@dataclass(frozen=True, slots=True)
class CopyItem:
    """One object to copy: where it is, where it goes, what is known about it.

    ``checksum`` (``"sha256:<hex>"``) is the one recorded when the file was saved, if
    known; the copy must hash to it.
    """

    source: str
    destination: str
    size: int | None = None
    checksum: str | None = None
    content_type: str | None = None


@dataclass
class MigrationReport:
    """What a run did: counts, bytes, failures (source path, one-line reason), rows."""

    planned: int = 0
    copied: int = 0
    skipped: int = 0
    """Already verified on the destination (journaled by an earlier run, or adopted)."""
    adopted: int = 0
    """Found complete on the destination without a journal entry (a crash after the PUT)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_copied: int = 0
    rows_updated: int = 0


class MigrationState:
    """A journal of verified copies: one JSON line per object, fsync'd as it is written.

    Lines record the source and destination backend keys; opened with ``source_key`` and
    ``destination_key``, the journal ignores lines of other migrations. A line cut short by
    a crash is ignored (that copy is redone). Usable as a context manager.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        source_key: str | None = None,
        destination_key: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.source_key = source_key
        self.destination_key = destination_key
        self.verified: dict[str, dict[str, Any]] = {}
        """Journal entries of verified copies, by source path."""
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    source = entry["source"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
                if not self._ours(entry):
                    continue
                if entry.get("status") == "verified":
                    self.verified[source] = entry
                else:
                    self.verified.pop(source, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def _ours(self, entry: dict[str, Any]) -> bool:
        return all(want is None or entry.get(name, want) == want
                   for name, want in (("from", self.source_key),
                                      ("to", self.destination_key)))

    def _append(self, entry: dict[str, Any]) -> None:
        if self.source_key is not None:
            entry["from"] = self.source_key
        if self.destination_key is not None:
            entry["to"] = self.destination_key
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def record(self, item: CopyItem, size: int, checksum: str) -> None:
        """Journal ``item`` as copied and verified (durable when this returns)."""
        entry = {"source": item.source, "destination": item.destination, "size": size,
                 "checksum": checksum, "status": "verified"}
        self._append(entry)
        self.verified[item.source] = entry

    def forget(self, item: CopyItem, reason: str) -> None:
        """Journal that ``item``'s earlier copy is no longer valid (e.g. gone from the store)."""
        if self.verified.pop(item.source, None) is not None:
            self._append({"source": item.source, "status": "invalid", "reason": reason})

    def close(self) -> None:
        """Close the journal file."""
        self._file.close()

    def __enter__(self) -> MigrationState:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _planned(info: ObjectInfo) -> CopyItem:
    return CopyItem(info.path, info.path, info.size, None, info.content_type)


def plan_objects(source: StorageBackend, prefix: str = "") -> list[CopyItem]:
    """Every object of ``source`` under ``prefix``, to be copied to the same path."""
    return [_planned(info) for info in source.list(prefix)]


async def plan_objects_async(source: StorageBackend, prefix: str = "") -> list[CopyItem]:
    """Async form of :func:`plan_objects`."""
    return [_planned(info) async for info in source.list_async(prefix)]


def plan_rows(files: Iterable[FileObject], source_key: str) -> list[CopyItem]:
    """The files (e.g. of a model's column) that live on ``source_key``, deduplicated."""
    seen: dict[str, CopyItem] = {}
    for file in files:
        if file.backend == source_key and file.path not in seen:
            seen[file.path] = CopyItem(file.path, file.path, file.size, file.checksum,
                                       file.content_type)
    return list(seen.values())


async def _copy_one(
    source: StorageBackend, destination: StorageBackend, item: CopyItem, verify_read: bool
) -> tuple[int, str]:
    copied = await transfer.copy_async(
        source, item.source, destination, item.destination, size=item.size,
        checksum=item.checksum, content_type=item.content_type, verify_read=verify_read,
    )
    return copied.size, copied.checksum or ""


async def _adopt(
    source: StorageBackend, destination: StorageBackend, item: CopyItem
) -> tuple[int, str] | None:
    """A copy that landed before a crash but was never journaled: verify it, keep it.

    The destination's bytes must hash to the file's recorded checksum or, without one, to
    a fresh read of the source. Returns None (copy it) when there is nothing to adopt.
    """
    found = await transfer.existing_copy_async(
        source, item.source, destination, item.destination, size=item.size,
        checksum=item.checksum,
    )
    if found is None:
        return None
    return found.size, found.checksum or ""


async def _already_done(
    destination: StorageBackend, item: CopyItem, state: MigrationState
) -> bool:
    """Journaled as verified, and still there with that size (else forgotten)."""
    done = state.verified.get(item.source)
    if done is None:
        return False
    try:
        info = await destination.head_async(item.destination)
    except ObjectNotFound:
        state.forget(item, "missing on the destination")
        return False
    if info.size != done["size"]:
        state.forget(item, f"destination has {info.size} bytes, journaled {done['size']}")
        return False
    return True


async def copy_objects(
    source: StorageBackend,
    destination: StorageBackend,
    items: Iterable[CopyItem],
    *,
    state: MigrationState | None = None,
    concurrency: int = 8,
    verify_read: bool = True,
    on_progress: ProgressCallback | None = None,
) -> MigrationReport:
    """Copy ``items`` from ``source`` to ``destination``, ``concurrency`` at a time.

    Each object is streamed (:func:`storeroom.backends.transfer.copy_async`), never held
    whole in memory; its checksum (with the algorithm of the item's recorded checksum,
    SHA-256 without one) is computed on the way and must equal the recorded one, and so
    must its size (if known); the destination is then checked with a HEAD or, with
    ``verify_read``, read back and hashed. Verified copies are journaled in
    ``state``.

    Items the journal already records as verified are skipped after a size check on the
    destination (an object deleted or changed since is copied again). A copy that reached
    the destination but not the journal (a crash in between) is verified and adopted
    instead of copied twice. Failures are collected in the report, not raised, so one bad
    object does not stop the rest. ``on_progress(item, bytes_copied)`` is called once per
    item that is done (``bytes_copied`` is 0 when it was skipped or adopted).
    """
    report = MigrationReport()
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            report.planned += 1
            try:
                if state is not None and await _already_done(destination, item, state):
                    report.skipped += 1
                    size = 0
                elif state is not None and (adopted := await _adopt(source, destination,
                                                                    item)) is not None:
                    state.record(item, *adopted)
                    report.adopted += 1
                    report.skipped += 1
                    size = 0
                else:
                    size, checksum = await _copy_one(source, destination, item, verify_read)
                    if state is not None:
                        state.record(item, size, checksum)
                    report.copied += 1
                    report.bytes_copied += size
            except (StoreroomError, OSError) as exc:
                report.failed.append((item.source, str(exc).splitlines()[0] if str(exc)
                                      else type(exc).__name__))
                continue
            if on_progress is not None:
                on_progress(item, size)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return report


def repoint(value: Any, source_key: str, destination_key: str,
            state: MigrationState) -> Any | None:
    """The column value with its verified files moved to ``destination_key``, or None.

    ``value`` is a FileObject or a list of them. A file is moved only when it lives on
    ``source_key`` and the journal records its copy as verified with the same size and
    checksum the file records. Returns None when nothing changes.
    """
    files = [value] if isinstance(value, FileObject) else list(value or [])
    moved = [_moved(f, source_key, destination_key, state) for f in files]
    if all(new is old for new, old in zip(moved, files, strict=True)):
        return None
    return moved[0] if isinstance(value, FileObject) else moved


def _moved(file: FileObject, source_key: str, destination_key: str,
           state: MigrationState) -> FileObject:
    entry = state.verified.get(file.path)
    if file.backend != source_key or entry is None:
        return file
    if (file.size is not None and file.size != entry["size"]) or (
        file.checksum and file.checksum != entry["checksum"]
    ):
        return file  # the row changed since the copy: leave it on the source
    data = file.to_dict()
    data.update(backend=destination_key, path=entry["destination"], etag=None, version=None,
                size=entry["size"], checksum=entry["checksum"])
    return FileObject.from_dict(data)


@dataclass
class _RowBatches:
    """The decisions of :func:`update_rows` and its async twin, written once (no I/O).

    Each batch: :meth:`start` prepares the session and gives the query, :meth:`apply`
    repoints the rows read (False: none left), and :meth:`committed` follows the commit.
    The twins only open sessions, run the query and commit.
    """

    column: Any
    source_key: str
    destination_key: str
    state: MigrationState
    batch_size: int
    on_batch: Callable[[int], None] | None
    updated: int = 0
    _last: Any = None
    _changed: int = 0

    def start(self, session: Any) -> Any:
        """Mark ``session`` to keep the source objects; the next batch's query."""
        from sqlalchemy import inspect, select

        from storeroom.orm.lifecycle import KEEP_REPLACED_FILES

        session.info[KEEP_REPLACED_FILES] = True
        model = self.column.class_
        primary_key = inspect(model).primary_key[0]
        query = select(model).where(self.column.isnot(None)).order_by(primary_key)
        if self._last is not None:
            query = query.where(primary_key > self._last)
        # Locks the batch's rows on databases that can, so an application writing the same
        # rows concurrently is not overwritten.
        return query.limit(self.batch_size).with_for_update()

    def apply(self, rows: Sequence[Any]) -> bool:
        """Repoint ``rows`` in memory; False when there were none (the run is over)."""
        if not rows:
            return False
        changed = 0
        for row in rows:
            new = repoint(getattr(row, self.column.key), self.source_key,
                          self.destination_key, self.state)
            if new is not None:
                setattr(row, self.column.key, new)
                changed += 1
        from sqlalchemy import inspect

        key = inspect(self.column.class_).primary_key[0].key
        self._last = getattr(rows[-1], key)
        self._changed = changed
        return True

    def committed(self) -> None:
        """Count the batch just committed and report it."""
        self.updated += self._changed
        if self.on_batch is not None:
            self.on_batch(self._changed)


def update_rows(
    session_factory: Callable[[], Any],
    column: Any,
    source_key: str,
    destination_key: str,
    state: MigrationState,
    *,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Repoint the rows of ``column`` (``Document.file``) from one backend to another.

    ``session_factory()`` returns a new ``Session``. Rows are read in primary-key order,
    ``batch_size`` at a time, each batch in its own transaction; only files for which
    :func:`repoint` finds a verified journal entry are switched, so a row never points at
    an object that is not verified on the destination. The source objects are kept (the
    session's ``KEEP_REPLACED_FILES``). ``on_batch(rows_updated)`` follows each commit.
    Returns the number of rows updated; running it again is harmless.
    """
    batches = _RowBatches(column, source_key, destination_key, state, batch_size, on_batch)
    while True:
        with session_factory() as session:
            query = batches.start(session)
            if not batches.apply(session.scalars(query).all()):
                return batches.updated
            session.commit()
        batches.committed()


async def update_rows_async(
    session_factory: Callable[[], Any],
    column: Any,
    source_key: str,
    destination_key: str,
    state: MigrationState,
    *,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """:func:`update_rows` with an ``AsyncSession`` factory (e.g. ``async_sessionmaker``)."""
    batches = _RowBatches(column, source_key, destination_key, state, batch_size, on_batch)
    while True:
        async with session_factory() as session:
            query = batches.start(session)
            if not batches.apply((await session.scalars(query)).all()):
                return batches.updated
            await session.commit()
        batches.committed()
