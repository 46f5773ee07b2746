"""Moving files between backends: verified, resumable, and safe for the rows that use them.

The library behind ``storeroom migrate`` and the safe form of the specification's data
migration script:

1. :func:`plan_objects` / :func:`plan_rows` list what to copy (every object under a prefix,
   or the files a model's column references on the source backend).
2. :func:`copy_objects` streams each one to the destination with bounded concurrency,
   verifies it there (size, and SHA-256 of the bytes read back), and appends it to a
   :class:`MigrationState` journal (fsync'd), so a rerun after a crash copies only what
   is missing.
3. :func:`update_rows` then repoints rows at the destination in batches, each in its own
   transaction, and only for files the journal records as verified. The source objects
   are never deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storeroom.backends.base import StorageBackend
from storeroom.errors import IntegrityError, StoreroomError
from storeroom.file import FileObject

__all__ = [
    "CopyItem",
    "MigrationReport",
    "MigrationState",
    "copy_objects",
    "plan_objects",
    "plan_rows",
    "update_rows",
]


@dataclass(frozen=True, slots=True)
class CopyItem:
    """One object to copy: where it is, where it goes, what is known about it."""

    source: str
    destination: str
    size: int | None = None
    checksum: str | None = None
    content_type: str | None = None


@dataclass
class MigrationReport:
    """What a run did."""

    planned: int = 0
    copied: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_copied: int = 0
    rows_updated: int = 0


class MigrationState:
    """A journal of verified copies: one JSON line per object, fsync'd as it is written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.verified: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that copy is simply redone
                if entry.get("status") == "verified":
                    self.verified[entry["source"]] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def record(self, item: CopyItem, size: int, checksum: str) -> None:
        """Journal ``item`` as copied and verified."""
        entry = {"source": item.source, "destination": item.destination, "size": size,
                 "checksum": checksum, "status": "verified"}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.verified[item.source] = entry

    def close(self) -> None:
        """Close the journal file."""
        self._file.close()


def plan_objects(source: StorageBackend, prefix: str = "") -> list[CopyItem]:
    """Every object of ``source`` under ``prefix``, to be copied to the same path."""
    return [CopyItem(info.path, info.path, info.size, None, info.content_type)
            for info in source.list(prefix)]


def plan_rows(files: Iterable[FileObject], source_key: str) -> list[CopyItem]:
    """The files (from a model's column) that live on ``source_key``, deduplicated."""
    seen: dict[str, CopyItem] = {}
    for file in files:
        if file.backend == source_key and file.path not in seen:
            seen[file.path] = CopyItem(file.path, file.path, file.size, file.checksum,
                                       file.content_type)
    return list(seen.values())


async def _copy_one(
    source: StorageBackend, destination: StorageBackend, item: CopyItem, verify_read: bool
) -> tuple[int, str]:
    chunks = await source.stream_async(item.source)
    result = await destination.put_async(item.destination, chunks,
                                         content_type=item.content_type)
    checksum = result.checksum or ""
    if item.checksum and checksum != item.checksum:
        await destination.delete_async(item.destination)
        raise IntegrityError(
            f"{item.source!r} on {source.key!r} no longer matches its recorded checksum; "
            "the copy was deleted"
        )
    info = await destination.head_async(item.destination)
    if info.size != result.size:
        raise IntegrityError(
            f"{item.destination!r} on {destination.key!r} has {info.size} bytes after the "
            f"copy, expected {result.size}"
        )
    if verify_read:
        digest = hashlib.sha256()
        async for chunk in await destination.stream_async(item.destination):
            digest.update(chunk)
        if f"sha256:{digest.hexdigest()}" != checksum:
            raise IntegrityError(
                f"{item.destination!r} on {destination.key!r} reads back different bytes "
                "than were copied"
            )
    return result.size, checksum


async def _adopt(destination: StorageBackend, item: CopyItem) -> tuple[int, str] | None:
    """A copy that landed before a crash but was never journaled: verify it, keep it.

    Only possible when the source's checksum is known (files referenced by rows): the
    destination's bytes are read back and must hash to it.
    """
    if not item.checksum or not item.checksum.startswith("sha256:"):
        return None
    try:
        info = await destination.head_async(item.destination)
    except StoreroomError:
        return None
    if item.size is not None and info.size != item.size:
        return None
    digest = hashlib.sha256()
    async for chunk in await destination.stream_async(item.destination):
        digest.update(chunk)
    if f"sha256:{digest.hexdigest()}" != item.checksum:
        return None
    return info.size, item.checksum


async def copy_objects(
    source: StorageBackend,
    destination: StorageBackend,
    items: Sequence[CopyItem],
    *,
    state: MigrationState | None = None,
    concurrency: int = 8,
    verify_read: bool = True,
    dry_run: bool = False,
    on_progress: Callable[[CopyItem, int], None] | None = None,
) -> MigrationReport:
    """Copy ``items`` from ``source`` to ``destination``; see the module docstring.

    Items the ``state`` journal already records as verified are skipped after a size check
    on the destination (an object deleted since is copied again); a copy that reached the
    destination but not the journal (a crash in between) is verified against the source's
    recorded checksum and adopted instead of copied twice. Failures are collected in the
    report, not raised, so one bad object does not stop the rest.
    """
    report = MigrationReport(planned=len(items))
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: CopyItem) -> None:
        async with gate:
            done = state.verified.get(item.source) if state else None
            if done is not None:
                try:
                    info = await destination.head_async(item.destination)
                    if info.size == done["size"]:
                        report.skipped += 1
                        if on_progress:
                            on_progress(item, 0)
                        return
                except StoreroomError:
                    pass
            if dry_run:
                report.skipped += 1
                return
            adopted = await _adopt(destination, item) if state is not None else None
            if adopted is not None:
                state.record(item, *adopted)  # type: ignore[union-attr]
                report.skipped += 1
                if on_progress:
                    on_progress(item, 0)
                return
            try:
                size, checksum = await _copy_one(source, destination, item, verify_read)
            except StoreroomError as exc:
                report.failed.append((item.source, str(exc).splitlines()[0]))
                return
            if state is not None:
                state.record(item, size, checksum)
            report.copied += 1
            report.bytes_copied += size
            if on_progress:
                on_progress(item, size)

    await asyncio.gather(*(one(item) for item in items))
    return report


def update_rows(
    session_factory: Callable[[], Any],
    column: Any,
    source_key: str,
    destination_key: str,
    state: MigrationState,
    *,
    batch_size: int = 100,
) -> int:
    """Repoint rows of ``column`` from ``source_key`` to ``destination_key``, in batches.

    Only files the journal records as verified are switched; each batch is its own
    transaction; replaced source objects are kept (``KEEP_REPLACED_FILES``). Returns the
    number of rows updated.
    """
    from sqlalchemy import inspect, select

    from storeroom.orm.lifecycle import KEEP_REPLACED_FILES

    model = column.class_
    primary_key = inspect(model).primary_key[0]
    updated = 0
    last: Any = None
    while True:
        with session_factory() as session:
            session.info[KEEP_REPLACED_FILES] = True
            query = select(model).where(column.isnot(None)).order_by(primary_key)
            if last is not None:
                query = query.where(primary_key > last)
            rows = session.scalars(query.limit(batch_size)).all()
            if not rows:
                return updated
            for row in rows:
                value = getattr(row, column.key)
                files = [value] if isinstance(value, FileObject) else list(value or [])
                moved = [_moved(f, source_key, destination_key, state) for f in files]
                if any(new is not old for new, old in zip(moved, files, strict=True)):
                    setattr(row, column.key, moved[0] if isinstance(value, FileObject) else moved)
                    updated += 1
            last = getattr(rows[-1], primary_key.key)
            session.commit()


def _moved(file: FileObject, source_key: str, destination_key: str,
           state: MigrationState) -> FileObject:
    entry = state.verified.get(file.path)
    if file.backend != source_key or entry is None:
        return file
    data = file.to_dict()
    data.update(backend=destination_key, path=entry["destination"], etag=None, version=None)
    return FileObject.from_dict(data)
