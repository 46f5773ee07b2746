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
   verified and that are still on the destination; a row is switched only if it still
   holds what the batch read (compare-and-swap). The source objects are never deleted.

Two backends over one location (one folder, or overlapping prefixes of one bucket) are
refused: a "copy" between them would find every object already there, and the cleanup of
the source would then delete the files the switched rows point at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storeroom.backends import transfer
from storeroom.backends.base import ObjectInfo, StorageBackend
from storeroom.errors import ConfigurationError, ObjectExists, ObjectNotFound, StoreroomError
from storeroom.file import FileObject

if TYPE_CHECKING:
    from storeroom.orm.maintenance import ReferenceScan

__all__ = [
    "CopyItem",
    "MigrationReport",
    "MigrationState",
    "copy_objects",
    "default_concurrency",
    "plan_objects",
    "plan_objects_async",
    "plan_listing",
    "plan_rows",
    "plan_scan",
    "repoint",
    "update_rows",
    "update_rows_async",
]

ProgressCallback = Callable[["CopyItem", int], None]
SkipCallback = Callable[[str, str], None]
"""``on_skipped(source path, reason)`` of :func:`update_rows`."""

logger = logging.getLogger("storeroom.migration")


@dataclass(frozen=True, slots=True)
class CopyItem:
    """One object to copy: where it is, where it goes, what is known about it.

    ``checksum`` (``"sha256:<hex>"``) is the one recorded when the file was saved, if
    known; the copy must hash to it. ``variant_of`` is set on a variant of a planned file
    (``<path>.variants/<name>.<format>``): one not made yet on the source is no failure.
    """

    source: str
    destination: str
    size: int | None = None
    checksum: str | None = None
    content_type: str | None = None
    variant_of: str | None = None


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
    variants_not_made: int = 0
    """Variants a row records that were not made yet on the source (made on first request
    on the destination, by :func:`storeroom.orm.variants.ensure_variant`)."""


class _Verified(Mapping[str, dict[str, Any]]):
    """The journal's verified copies by source path, read from its on-disk index."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __getitem__(self, source: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT destination, size, checksum FROM verified WHERE source = ?", (source,)
        ).fetchone()
        if row is None:
            raise KeyError(source)
        return {
            "source": source,
            "destination": row[0],
            "size": row[1],
            "checksum": row[2],
            "status": "verified",
        }

    def __iter__(self) -> Iterator[str]:
        for (source,) in self._db.execute("SELECT source FROM verified ORDER BY source"):
            yield source

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT count(*) FROM verified").fetchone()[0]
        return count


_SYNC_LINES = 1000  # journal lines written between two fsyncs
_SYNC_SECONDS = 1.0  # ... or seconds, whichever comes first
_FLUSH_LINES = 64  # journal lines handed to the operating system at once
_FLUSH_SECONDS = 0.1  # ... or after this long, whichever comes first


class MigrationState:
    """A journal of verified copies: one JSON line per object, appended as each is verified.

    Lines record the source and destination backend keys; opened with ``source_key`` and
    ``destination_key``, the journal ignores lines of other migrations. A line cut short by
    a crash is ignored (that copy is redone). Usable as a context manager.

    Memory stays flat however long the journal is: on opening, it is read back line by line
    into an index in a temporary SQLite file (``directory``: where it goes), which
    :attr:`verified` reads. Lines are handed to the operating system 64 at a time or every
    0.1 s, so a killed process loses at most those; they are fsync'd every 1,000 lines or
    second and on :meth:`sync` and :meth:`close`. A copy whose line a kill or a power loss
    takes away is found on the destination by the next run (its create-only write finds
    it), verified again and adopted, never trusted blindly.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        source_key: str | None = None,
        destination_key: str | None = None,
        *,
        directory: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.source_key = source_key
        self.destination_key = destination_key
        # The backends copy_objects last used with this journal: update_rows checks the
        # copies on that destination (a sharded worker's backends are in no registry).
        self._backends: tuple[StorageBackend, StorageBackend] | None = None
        handle, self._index_path = tempfile.mkstemp(
            prefix="storeroom-journal-", suffix=".sqlite", dir=directory
        )
        os.close(handle)
        self._db = sqlite3.connect(self._index_path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8192"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE verified (source TEXT PRIMARY KEY, destination TEXT, "
            "size INTEGER, checksum TEXT) WITHOUT ROWID"
        )
        self.verified: Mapping[str, dict[str, Any]] = _Verified(self._db)
        """Journal entries of verified copies, by source path (read from the index)."""
        if self.path.exists():
            self._load()
        self.resumed = len(self.verified) > 0
        """Whether the journal held verified copies when opened or when a run with it ended
        (else no lookup can hit an entry this run did not write)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        if self._file.tell() and not _ends_with_newline(self.path):
            self._file.write("\n")  # a line cut short by a kill must not absorb the next
        self._unsynced = 0
        self._unflushed = 0
        self._synced_at = self._flushed_at = time.monotonic()

    def _load(self) -> None:
        db = self._db
        db.execute("BEGIN")
        with self.path.open(encoding="utf-8") as journal:
            for line in journal:  # streamed: the file is never read whole
                try:
                    entry = json.loads(line)
                    source = entry["source"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
                if not isinstance(entry, dict) or not self._ours(entry):
                    continue
                if entry.get("status") == "verified":
                    db.execute(
                        "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?)",
                        (
                            source,
                            entry.get("destination", source),
                            entry.get("size"),
                            entry.get("checksum"),
                        ),
                    )
                else:
                    db.execute("DELETE FROM verified WHERE source = ?", (source,))
        db.execute("COMMIT")

    def _ours(self, entry: dict[str, Any]) -> bool:
        return all(
            want is None or entry.get(name, want) == want
            for name, want in (("from", self.source_key), ("to", self.destination_key))
        )

    def _append(self, entry: dict[str, Any]) -> None:
        if self.source_key is not None:
            entry["from"] = self.source_key
        if self.destination_key is not None:
            entry["to"] = self.destination_key
        self._file.write(json.dumps(entry) + "\n")
        self._unsynced += 1
        self._unflushed += 1
        now = time.monotonic()
        if self._unsynced >= _SYNC_LINES or now - self._synced_at >= _SYNC_SECONDS:
            self.sync()
        elif self._unflushed >= _FLUSH_LINES or now - self._flushed_at >= _FLUSH_SECONDS:
            self._flush(now)

    def _flush(self, now: float) -> None:
        self._file.flush()
        self._unflushed = 0
        self._flushed_at = now
        if self._db.in_transaction:  # the index is rebuilt from the journal: no fsync
            self._db.execute("COMMIT")

    def sync(self) -> None:
        """Make every line written so far durable (fsync)."""
        now = time.monotonic()
        self._flush(now)
        if self._unsynced:
            os.fsync(self._file.fileno())
            self._unsynced = 0
        self._synced_at = now

    def record(self, item: CopyItem, size: int, checksum: str) -> None:
        """Journal ``item`` as copied and verified (survives a kill when this returns)."""
        self._append(
            {
                "source": item.source,
                "destination": item.destination,
                "size": size,
                "checksum": checksum,
                "status": "verified",
            }
        )
        if not self._db.in_transaction:  # one index transaction per group of journal lines
            self._db.execute("BEGIN")
        self._db.execute(
            "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?)",
            (item.source, item.destination, size, checksum),
        )

    def forget(self, item: CopyItem, reason: str) -> None:
        """Journal that ``item``'s earlier copy is no longer valid (e.g. gone from the store)."""
        if item.source in self.verified:
            self._db.execute("DELETE FROM verified WHERE source = ?", (item.source,))
            self._append({"source": item.source, "status": "invalid", "reason": reason})

    def close(self) -> None:
        """Make the journal durable, close it, and delete the index."""
        if not self._file.closed:
            self.sync()
            self._file.close()
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._index_path)

    def __enter__(self) -> MigrationState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as journal:
        journal.seek(-1, os.SEEK_END)
        return journal.read(1) == b"\n"


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
            seen[file.path] = CopyItem(
                file.path, file.path, file.size, file.checksum, file.content_type
            )
    return list(seen.values())


def plan_listing(
    scan: ReferenceScan, source: StorageBackend, prefix: str = ""
) -> Iterator[CopyItem]:
    """Every object of ``source`` under ``prefix``, listed once into ``scan``'s on-disk
    index and streamed from it in path order (the bounded-memory form of
    :func:`plan_objects`)."""
    return (_planned(info) for info in scan.objects(source, prefix=prefix))


def plan_scan(
    scan: ReferenceScan, source_key: str, state: MigrationState | None = None
) -> Iterator[CopyItem]:
    """The files a scan's rows reference on ``source_key``, once each, in path order.

    ``scan`` is a :class:`~storeroom.orm.maintenance.ReferenceScan` whose
    :meth:`~storeroom.orm.maintenance.ReferenceScan.read_rows` has run: the rows were read
    in pages into its on-disk index, so however many rows and files there are, this
    streams them (the bounded-memory form of :func:`plan_rows`).

    With ``state`` (the journal of this migration, opened with its destination key), files
    whose rows an earlier run of it already repointed are planned too, after the others:
    the copy counts them as already done, so a run resumed after a kill during
    :func:`update_rows` reports the same totals as one run that was never interrupted.
    """
    for path, size, checksum, content_type, variants in scan.referenced_files(source_key):
        yield from _with_variants(CopyItem(path, path, size, checksum, content_type), variants)
    moved_to = state.destination_key if state is not None else None
    if state is None or moved_to is None or moved_to == source_key:
        return
    for path, size, checksum, content_type, variants in scan.referenced_files(moved_to):
        entry = state.verified.get(path)
        if (
            entry is not None
            and entry["destination"] == path
            and not scan.is_referenced(source_key, path)
        ):
            item = CopyItem(path, path, size, checksum, content_type)
            yield from _with_variants(item, variants)


def _with_variants(item: CopyItem, variants: list[str]) -> Iterator[CopyItem]:
    """The file, then the variants its row records: they move with it (same paths), so the
    records stay true on the destination."""
    yield item
    for path in variants:
        yield CopyItem(path, path, variant_of=item.source)


async def _copy_one(
    source: StorageBackend,
    destination: StorageBackend,
    item: CopyItem,
    verify_read: bool,
    overwrite: bool = True,
) -> tuple[int, str]:
    copied = await transfer.copy_async(
        source,
        item.source,
        destination,
        item.destination,
        size=item.size,
        checksum=item.checksum,
        content_type=item.content_type,
        verify_read=verify_read,
        overwrite=overwrite,
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
        source,
        item.source,
        destination,
        item.destination,
        size=item.size,
        checksum=item.checksum,
    )
    if found is None:
        return None
    return found.size, found.checksum or ""


async def _already_done(destination: StorageBackend, item: CopyItem, state: MigrationState) -> bool:
    """Journaled as verified, and still there with that size (else forgotten)."""
    if not state.resumed:
        return False  # a fresh journal holds only this run's copies, each planned once
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


_LOCAL_SCHEMES = ("file", "memory", "")
CONCURRENCY_LOCAL = 4
"""Copies at once when both stores are local disk or memory: the CPU is the limit, and
more copies in flight only add thread hand-offs (measured: 16 used more CPU for no more
objects per second than 4 on two cores)."""
CONCURRENCY_REMOTE = 64
"""Copies at once when either store is across a network (latency is the limit)."""


def default_concurrency(source: StorageBackend, destination: StorageBackend) -> int:
    """How many copies to run at once between these two stores.

    Local disk and memory are limited by this process's CPU, so a few copies keep it
    busy; object stores over a network are limited by round trips, so many more copies
    overlap their latency.
    """

    def scheme(backend: StorageBackend) -> str:
        try:
            location = str(backend.location)
        except Exception:  # a backend without a location: assume a remote store
            return "remote"
        return location.split("://", 1)[0].lower() if "://" in location else ""

    if scheme(source) in _LOCAL_SCHEMES and scheme(destination) in _LOCAL_SCHEMES:
        return CONCURRENCY_LOCAL
    return CONCURRENCY_REMOTE


class _Copier:
    """One migration's copy loop, shared by every concurrent worker of :func:`copy_objects`."""

    def __init__(
        self,
        source: StorageBackend,
        destination: StorageBackend,
        state: MigrationState | None,
        verify_read: bool,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.source = source
        self.destination = destination
        self.state = state
        self.verify_read = verify_read
        self.on_progress = on_progress
        self.report = MigrationReport()
        # Within one backend the store's own copy is kept (a create-only copy would stream).
        self.create_first = state is not None and source is not destination

    async def one(self, item: CopyItem) -> None:
        report, state = self.report, self.state
        report.planned += 1
        size = 0
        try:
            if state is not None and await _already_done(self.destination, item, state):
                report.skipped += 1
            else:
                adopted, size, checksum = await self._copy_or_adopt(item)
                if state is not None:
                    state.record(item, size, checksum)
                if adopted:
                    report.adopted += 1
                    report.skipped += 1
                    size = 0
                else:
                    report.copied += 1
                    report.bytes_copied += size
        except (StoreroomError, OSError) as exc:
            if not (isinstance(exc, ObjectNotFound) and item.variant_of is not None):
                report.failed.append(
                    (item.source, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                )
                return
            report.variants_not_made += 1  # not made yet: made on first request there
        if self.on_progress is not None:
            self.on_progress(item, size)

    async def _copy_or_adopt(self, item: CopyItem) -> tuple[bool, int, str]:
        """Copy ``item``, or adopt the verified copy already there: (adopted, size, checksum).

        A create-only write finds an object already at the destination without a HEAD
        before every copy; only then is it read back and compared. Another file there is
        never replaced (a row of the destination may reference it): ObjectExists.
        """
        if not self.create_first:
            if (
                self.state is not None
                and (found := await _adopt(self.source, self.destination, item)) is not None
            ):
                return (True, *found)
            return (False, *await self._copy(item))
        try:
            return (False, *await self._copy(item, overwrite=False))
        except ObjectExists:
            found = await _adopt(self.source, self.destination, item)
            if found is not None:
                return (True, *found)
        raise ObjectExists(_taken_message(item, self.source, self.destination))

    async def _copy(self, item: CopyItem, overwrite: bool = True) -> tuple[int, str]:
        return await _copy_one(self.source, self.destination, item, self.verify_read, overwrite)


def _taken_message(item: CopyItem, source: StorageBackend, destination: StorageBackend) -> str:
    return (
        f"{item.destination!r} on backend {destination.key!r} already holds other bytes than "
        f"{item.source!r} on backend {source.key!r}; nothing was overwritten (a row may "
        f"reference them). If no row does (storeroom verify --backend {destination.key}), "
        "delete that object and run again; else give the source file another path"
    )


def _check_journal_keys(state: MigrationState, source_key: str, destination_key: str) -> None:
    """Refuse a journal opened for another pair of backends (its entries are not ours)."""
    for role, journal_key, key in (
        ("source", state.source_key, source_key),
        ("destination", state.destination_key, destination_key),
    ):
        if journal_key is not None and journal_key != key:
            raise ConfigurationError(
                f"the journal {str(state.path)!r} was opened for {role} {journal_key!r}, but "
                f"this run's {role} is {key!r}; open the journal of this migration, "
                f"MigrationState(path, {source_key!r}, {destination_key!r})"
            )


def _place(backend: StorageBackend) -> tuple[Hashable, tuple[str, ...]] | None:
    """Which store holds ``backend``'s objects, and the folder (path parts) they are under;
    None when that cannot be told (a backend of another kind)."""
    from storeroom.backends.obstore import ObstoreBackend

    # A local directory, links resolved (ObstoreBackend's and FSSpecBackend's local roots).
    root = getattr(backend, "_root", None)
    if isinstance(root, str):
        return ("file",), _parts(root)
    if isinstance(backend, ObstoreBackend):
        store: Any = backend.store
        if backend.kind == "memory":
            return ("memory", id(store)), ()
        if backend.kind == "local":
            return ("file",), _parts(str(getattr(store, "prefix", None) or "/"))
        config = dict(getattr(store, "config", None) or {})
        identity = tuple(str(config.get(name)) for name in _STORE_IDENTITY)
        return (backend.kind, *identity), _parts(str(getattr(store, "prefix", None) or ""))
    fs, prefix = getattr(backend, "fs", None), getattr(backend, "prefix", None)
    if fs is not None and isinstance(prefix, str):  # an FSSpecBackend not on local disk
        protocol = getattr(fs, "protocol", None)
        if "memory" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,)):
            return ("fsspec-memory",), _parts(prefix)  # one store per process, shared
        return ("fsspec", id(fs)), _parts(prefix)  # fsspec caches one instance per options
    return None


_STORE_IDENTITY = ("bucket", "container_name", "account_name", "endpoint", "use_emulator", "url")
"""The options of a remote obstore store that say which store it is (not how to reach it)."""


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def _refuse_shared_location(source: StorageBackend, destination: StorageBackend) -> None:
    """Refuse two backends over one location (the same folder or bucket prefix, or one
    inside the other): every object would be found already "copied", and the source's
    cleanup would delete what the switched rows then point at."""
    if source is destination:
        return
    mine, theirs = _place(source), _place(destination)
    if mine is None or theirs is None or mine[0] != theirs[0]:
        return
    (_store, a), (_same, b) = mine, theirs
    if a[: len(b)] != b and b[: len(a)] != a:
        return
    if a == b:
        where = f"one location ({source.location})"
    else:
        outer, inner = (source, destination) if len(a) < len(b) else (destination, source)
        where = f"overlapping locations ({inner.location} is inside {outer.location})"
    raise ConfigurationError(
        f"backends {source.key!r} and {destination.key!r} keep their objects in {where}: "
        "a copy between them would find objects already there, and a gc of one would "
        "delete files that rows of the other point at (above all the cleanup of "
        f"{source.key!r} once rows point at {destination.key!r}). Migrate to a backend over "
        "another folder or bucket prefix"
    )


async def copy_objects(
    source: StorageBackend,
    destination: StorageBackend,
    items: Iterable[CopyItem],
    *,
    state: MigrationState | None = None,
    concurrency: int | None = None,
    verify_read: bool = True,
    on_progress: ProgressCallback | None = None,
) -> MigrationReport:
    """Copy ``items`` from ``source`` to ``destination``, ``concurrency`` at a time.

    ``items`` may be any iterable, a generator included: it is consumed as the copies go,
    never held in memory. ``concurrency`` defaults to :func:`default_concurrency` (4
    between local stores, 64 when one is across a network).

    Each object is streamed (:func:`storeroom.backends.transfer.copy_async`), never held
    whole in memory; its checksum (with the algorithm of the item's recorded checksum,
    SHA-256 without one) is computed on the way and must equal the recorded one, and so
    must its size (if known); the destination is then checked with a HEAD or, with
    ``verify_read``, read back and hashed. Verified copies are journaled in
    ``state``.

    Items the journal already records as verified are skipped after a size check on the
    destination (an object deleted or changed since is copied again). With a journal, the
    copy is written create-only: a copy that reached the destination but not the journal
    (a crash in between) makes it fail, and is then verified and adopted instead of copied
    twice. Other bytes already at the destination path are never replaced (a row of the
    destination may reference them): that object fails. Failures are collected in the
    report, not raised, so one bad object does not stop the rest. ``on_progress(item,
    bytes_copied)`` is called once per item that is done (``bytes_copied`` is 0 when it
    was skipped or adopted).

    Raises :class:`~storeroom.errors.ConfigurationError` before copying anything when
    ``state`` was opened for other backend keys, or when the two backends keep their
    objects in one location (one folder, or one bucket prefix inside the other).
    """
    if state is not None:
        _check_journal_keys(state, source.key, destination.key)
    _refuse_shared_location(source, destination)
    if state is not None:
        state._backends = (source, destination)
    if concurrency is None:
        concurrency = default_concurrency(source, destination)
    copier = _Copier(source, destination, state, verify_read, on_progress)
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await copier.one(item)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        if state is not None and len(state.verified) > 0:
            # A later run with the same journal (in this process) looks its items up.
            state.resumed = True
    return copier.report


def repoint(value: Any, source_key: str, destination_key: str, state: MigrationState) -> Any | None:
    """The column value with its verified files moved to ``destination_key``, or None.

    ``value`` is a FileObject or a list of them. A file is moved only when it lives on
    ``source_key`` and the journal records its copy as verified with the same size and
    checksum the file records. Returns None when nothing changes. This trusts the journal:
    :func:`update_rows` first confirms that the copies are still on the destination.
    """
    return _repoint(value, source_key, destination_key, state.verified)


def _repoint(
    value: Any, source_key: str, destination_key: str, verified: Mapping[str, dict[str, Any]]
) -> Any | None:
    """:func:`repoint` with the verified copies by source path (the journal's, or a batch's)."""
    files = _files_of(value)
    moved = [_moved(f, source_key, destination_key, verified) for f in files]
    if all(new is old for new, old in zip(moved, files, strict=True)):
        return None
    return moved[0] if isinstance(value, FileObject) else moved


def _files_of(value: Any) -> list[FileObject]:
    return [value] if isinstance(value, FileObject) else list(value or [])


def _journaled(
    file: FileObject, source_key: str, verified: Mapping[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The journal entry of ``file``'s verified copy, if the file may move to it."""
    if file.backend != source_key:
        return None
    entry = verified.get(file.path)
    if entry is None:
        return None
    if (file.size is not None and file.size != entry["size"]) or (
        file.checksum and file.checksum != entry["checksum"]
    ):
        return None  # the row changed since the copy: leave it on the source
    return entry


def _moved(
    file: FileObject,
    source_key: str,
    destination_key: str,
    verified: Mapping[str, dict[str, Any]],
) -> FileObject:
    entry = _journaled(file, source_key, verified)
    if entry is None:
        return file
    data = file.to_dict()
    data.update(
        backend=destination_key,
        path=entry["destination"],
        etag=None,
        version=None,
        size=entry["size"],
        checksum=entry["checksum"],
    )
    return FileObject.from_dict(data)


_CLAIM_ROWS = 500
"""Rows checked by one statement (a parameter each; SQLite before 3.32 takes 999)."""
_CLAIM_ATTEMPTS = 3
"""Times a row may change between a batch's read and its write before it is left as it is."""
_HEADS_AT_ONCE = 16
"""HEAD requests in flight while a batch's copies are confirmed on a remote destination."""


class _BatchChanged(Exception):
    """Rows of a batch changed between its read and its write: the batch is read again."""

    def __init__(self, keys: list[tuple[Any, ...]]) -> None:
        super().__init__(f"{len(keys)} rows changed since the batch was read")
        self.keys = keys


@dataclass(slots=True)
class _ReadRow:
    """A row of a batch as read: the entity, its primary key, its column as stored (text),
    and the source path of the (first) file it moves, to name it in reports."""

    row: Any
    key: tuple[Any, ...]
    stored: str
    moves: str = ""


def _stored_text(column: Any, dialect: Any) -> Any:
    """``column`` as the database stores it, as text: what a claim compares.

    SQLite and MariaDB store JSON as text (MariaDB with a binary collation), compared as
    it is; elsewhere the value is cast (PostgreSQL's JSONB prints one canonical text).
    """
    from sqlalchemy import Text, cast, type_coerce

    if dialect.name == "sqlite" or getattr(dialect, "is_mariadb", False):
        return type_coerce(column, Text)
    return cast(column, Text)


def _locks_on_read(dialect: Any) -> bool:
    """Whether ``SELECT ... FOR UPDATE`` locks rows on this database (SQLite ignores it)."""
    return dialect.name in ("postgresql", "mysql", "mariadb", "oracle")


def _backends_for_rows(
    state: MigrationState, source_key: str, destination_key: str
) -> tuple[StorageBackend | None, StorageBackend]:
    """The source (None if unknown) and destination backends of :func:`update_rows`: those
    :func:`copy_objects` used with ``state``, else the registered ones."""
    from storeroom.registry import storages

    used = state._backends

    def find(key: str, at: int) -> StorageBackend | None:
        if used is not None and used[at].key == key:
            return used[at]
        return storages.get_backend(key) if storages.is_registered(key) else None

    destination = find(destination_key, 1)
    if destination is None:
        from storeroom.errors import BackendNotRegistered

        raise BackendNotRegistered(
            f"backend {destination_key!r} is not registered; update_rows confirms each copy "
            "is still there before switching rows to it. Register it with "
            "storages.register_backend(...), or run copy_objects with this journal first"
        )
    return find(source_key, 0), destination


@dataclass
class _RowBatches:
    """The decisions of :func:`update_rows` and its async twin, written once (no I/O).

    Each batch: :meth:`start` prepares the session and gives the query, :meth:`read` takes
    the rows and names the copies to confirm on the destination, :meth:`apply` takes
    their sizes there and repoints the rows, :meth:`committed` follows the commit (or
    :meth:`changed` a batch whose rows changed meanwhile: it is read again). The twins
    only open sessions, run the query, ask the destination and commit.
    """

    column: Any
    source_key: str
    destination_key: str
    state: MigrationState
    batch_size: int
    on_batch: Callable[[int], None] | None
    record_batch: Callable[[int], Any] | None
    on_skipped: SkipCallback | None
    updated: int = 0
    _last: Any = None
    _next: Any = None
    _changed: int = 0
    _rows: list[_ReadRow] = field(default_factory=list)
    _entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    _claims: list[_ReadRow] = field(default_factory=list)
    _conflicts: dict[tuple[Any, ...], int] = field(default_factory=dict)
    _stored: Any = None

    def __post_init__(self) -> None:
        from sqlalchemy import inspect

        self._mapper: Any = inspect(self.column.class_)
        self._table_column: Any = self.column.property.columns[0]
        self._table: Any = self._table_column.table
        self._pk: list[Any] = list(self._table.primary_key.columns)
        self._pk_names = [self._mapper.get_property_by_column(c).key for c in self._pk]
        self._order: Any = self._mapper.primary_key[0]
        self._order_name = self._mapper.get_property_by_column(self._order).key

    def start(self, session: Any) -> Any:
        """Mark ``session`` to keep the source objects and to claim the rows it writes; the
        next batch's query."""
        from sqlalchemy import event, select

        from storeroom.orm.lifecycle import KEEP_REPLACED_FILES

        sync = getattr(session, "sync_session", session)  # an AsyncSession's
        sync.info[KEEP_REPLACED_FILES] = True
        # Within the flush, once every other listener ran: the last moment before the write.
        event.listen(sync, "before_flush", self._claim)
        self._stored = _stored_text(self._table_column, sync.get_bind(mapper=self._mapper).dialect)
        query = (
            select(self.column.class_, self._stored.label("storeroom_stored"))
            .where(self.column.isnot(None))
            .order_by(self._order)
        )
        if self._last is not None:
            query = query.where(self._order > self._last)
        # Locks the batch's rows where the database can; the claim makes the write a
        # compare-and-swap everywhere (SQLite ignores FOR UPDATE).
        return query.limit(self.batch_size).with_for_update()

    def read(self, rows: Sequence[Any]) -> list[str] | None:
        """Take the batch's ``(row, stored text)`` results; the destination paths of the
        copies it would switch to, to confirm there. None when no rows are left."""
        if not rows:
            return None
        read_rows = (
            _ReadRow(row, tuple(getattr(row, name) for name in self._pk_names), stored)
            for row, stored in rows
        )
        # A row that kept changing while being switched is left as it is (reported).
        self._rows = [r for r in read_rows if self._conflicts.get(r.key, 0) < _CLAIM_ATTEMPTS]
        self._next = getattr(rows[-1][0], self._order_name)
        self._entries = {}
        for read in self._rows:
            for file in _files_of(getattr(read.row, self.column.key)):
                entry = _journaled(file, self.source_key, self.state.verified)
                if entry is not None:
                    self._entries[file.path] = entry
        return [entry["destination"] for entry in self._entries.values()]

    def apply(self, sizes: Sequence[int | None]) -> None:
        """Forget the copies gone from the destination (or changed there), then repoint
        the rows in memory to the copies that are there."""
        for (source, entry), size in zip(list(self._entries.items()), sizes, strict=True):
            journaled, path = entry["size"], entry["destination"]
            if size == journaled:
                continue
            if size is None:
                why, what = "missing on the destination", "is gone (deleted since it was copied)"
            else:
                why = f"destination has {size} bytes, journaled {journaled}"
                what = f"has {size} bytes, not the {journaled} copied"
            del self._entries[source]
            self.state.forget(CopyItem(source, path), why)
            self._skip(
                source,
                f"its copy {path!r} on backend {self.destination_key!r} {what}; forgotten "
                "from the journal, so running the migration again copies it again and then "
                "switches its row",
            )
        self._claims = []
        for read in self._rows:
            value = getattr(read.row, self.column.key)
            new = _repoint(value, self.source_key, self.destination_key, self._entries)
            if new is not None:
                read.moves = next(f.path for f in _files_of(value) if f.path in self._entries)
                setattr(read.row, self.column.key, new)
                self._claims.append(read)
        self._changed = len(self._claims)

    def _claim(self, session: Any, _flush: Any, _instances: Any) -> None:
        """Before the flush writes the repointed rows: lock them, and go on only if each
        still holds what the batch read (a compare-and-swap: the check and the write are
        in one transaction, with the rows locked in between); else raise
        :class:`_BatchChanged`, and the batch is read again."""
        claims, self._claims = self._claims, []
        if not claims:
            return
        from sqlalchemy import select, tuple_, update

        connection = session.connection(bind_arguments={"mapper": self._mapper})
        locks_on_read = _locks_on_read(connection.dialect)
        column, pk = self._table_column, self._pk
        now: dict[tuple[Any, ...], Any] = {}
        for start in range(0, len(claims), _CLAIM_ROWS):
            keys = [read.key for read in claims[start : start + _CLAIM_ROWS]]
            within = pk[0].in_([k[0] for k in keys]) if len(pk) == 1 else tuple_(*pk).in_(keys)
            if not locks_on_read:
                # SQLite ignores FOR UPDATE: a write takes the database's write lock, so no
                # other transaction can commit between the check below and the commit.
                connection.execute(update(self._table).where(within).values({column: column}))
            check = select(*pk, self._stored.label("storeroom_stored")).where(within)
            for found in connection.execute(check.with_for_update() if locks_on_read else check):
                now[tuple(found[:-1])] = found[-1]
        changed = [read.key for read in claims if now.get(read.key) != read.stored]
        if changed:
            raise _BatchChanged(changed)

    def changed(self, error: _BatchChanged) -> None:
        """The batch's write was refused: rows changed since it was read (it is read again;
        a row that keeps changing is then left as it is)."""
        for key in error.keys:
            conflicts = self._conflicts[key] = self._conflicts.get(key, 0) + 1
            if conflicts == _CLAIM_ATTEMPTS:
                moves = next(r.moves for r in self._rows if r.key == key)
                self._skip(
                    moves,
                    f"its row (primary key {', '.join(map(str, key))}) changed {conflicts} "
                    "times while it was being switched (another transaction wrote it); left "
                    "as that transaction wrote it: run the migration again",
                )

    def _skip(self, path: str, reason: str) -> None:
        if self.on_skipped is not None:
            self.on_skipped(path, reason)
        else:
            logger.warning("not switched to %s: %s: %s", self.destination_key, path, reason)

    def recording(self) -> Any | None:
        """The statement that records this batch in its own transaction, if any."""
        if self.record_batch is None or not self._changed:
            return None
        return self.record_batch(self._changed)

    def committed(self) -> None:
        """Count the batch just committed and report it; the next batch starts after it."""
        self._last, self._conflicts = self._next, {}
        self.updated += self._changed
        if self.on_batch is not None:
            self.on_batch(self._changed)


def _prepare_rows(
    column: Any,
    source_key: str,
    destination_key: str,
    state: MigrationState,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    record_batch: Callable[[int], Any] | None,
    on_skipped: SkipCallback | None,
) -> tuple[_RowBatches, StorageBackend]:
    """Check the arguments of :func:`update_rows` (refused before any row is read)."""
    _check_journal_keys(state, source_key, destination_key)
    source, destination = _backends_for_rows(state, source_key, destination_key)
    if source is not None:
        _refuse_shared_location(source, destination)
    batches = _RowBatches(
        column,
        source_key,
        destination_key,
        state,
        batch_size,
        on_batch,
        record_batch,
        on_skipped,
    )
    return batches, destination


def _sizes(
    destination: StorageBackend, paths: Sequence[str], pool: ThreadPoolExecutor | None
) -> list[int | None]:
    """The size of each object at ``paths`` (None: missing), HEADs overlapping on a pool."""

    def size(path: str) -> int | None:
        try:
            return destination.head(path).size
        except ObjectNotFound:
            return None

    if pool is None or len(paths) < 2:
        return [size(path) for path in paths]
    return list(pool.map(size, paths))


async def _sizes_async(destination: StorageBackend, paths: Sequence[str]) -> list[int | None]:
    """Async form of :func:`_sizes` (HEADs overlapping unless the store is local)."""

    async def size(path: str) -> int | None:
        try:
            return (await destination.head_async(path)).size
        except ObjectNotFound:
            return None

    if destination.served_locally or len(paths) < 2:
        return [await size(path) for path in paths]
    limit = asyncio.Semaphore(_HEADS_AT_ONCE)

    async def bounded(path: str) -> int | None:
        async with limit:
            return await size(path)

    return list(await asyncio.gather(*(bounded(path) for path in paths)))


def update_rows(
    session_factory: Callable[[], Any],
    column: Any,
    source_key: str,
    destination_key: str,
    state: MigrationState,
    *,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
    record_batch: Callable[[int], Any] | None = None,
    on_skipped: SkipCallback | None = None,
) -> int:
    """Repoint the rows of ``column`` (``Document.file``) from one backend to another.

    ``session_factory()`` returns a new ``Session``. Rows are read in primary-key order,
    ``batch_size`` at a time, each batch in its own transaction; only files for which
    :func:`repoint` finds a verified journal entry are switched, and only once their copies
    are confirmed on the destination (a HEAD each, with the journaled size): a copy gone
    since (a gc of the destination while a long copy ran) is forgotten from the journal,
    so a rerun copies it again, and its row stays. The switch is a compare-and-swap: a
    row is written only if it still holds what the batch read (a batch whose rows another
    transaction changed meanwhile is read again, on every database), so a concurrent
    write is never overwritten. The source objects are kept (the session's
    ``KEEP_REPLACED_FILES``).

    ``on_skipped(source path, reason)`` is called for each file left on the source that a
    rerun may switch (its copy is gone from the destination, or its row kept changing);
    without it these are logged as warnings (logger ``storeroom.migration``).
    ``on_batch(rows_updated)`` follows each commit. ``record_batch(rows_updated)`` may
    return a SQL statement, run in the batch's own transaction: progress recorded with it
    survives exactly when the batch does (a kill can take neither or both). The
    destination backend is the one :func:`copy_objects` used with ``state``, else the one
    registered under ``destination_key``. Returns the number of rows updated; running it
    again is harmless.

    Raises :class:`~storeroom.errors.ConfigurationError` before reading any row when
    ``state`` was opened for other backend keys, or when the two backends keep their
    objects in one location; :class:`~storeroom.errors.BackendNotRegistered` when the
    destination backend cannot be found.
    """
    state.sync()  # a row may point at a copy only once its journal line is durable
    batches, destination = _prepare_rows(
        column,
        source_key,
        destination_key,
        state,
        batch_size,
        on_batch,
        record_batch,
        on_skipped,
    )
    pool = (
        None
        if destination.served_locally
        else ThreadPoolExecutor(_HEADS_AT_ONCE, thread_name_prefix="storeroom-migrate-head")
    )
    try:
        while True:
            with session_factory() as session:
                wanted = batches.read(session.execute(batches.start(session)).all())
                if wanted is None:
                    return batches.updated
                batches.apply(_sizes(destination, wanted, pool))
                try:
                    if (recording := batches.recording()) is not None:
                        session.execute(recording)
                    session.commit()
                except _BatchChanged as changed:
                    batches.changed(changed)
                    continue
            batches.committed()
    finally:
        if pool is not None:
            pool.shutdown()


async def update_rows_async(
    session_factory: Callable[[], Any],
    column: Any,
    source_key: str,
    destination_key: str,
    state: MigrationState,
    *,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
    record_batch: Callable[[int], Any] | None = None,
    on_skipped: SkipCallback | None = None,
) -> int:
    """:func:`update_rows` with an ``AsyncSession`` factory (e.g. ``async_sessionmaker``)."""
    state.sync()  # a row may point at a copy only once its journal line is durable
    batches, destination = _prepare_rows(
        column,
        source_key,
        destination_key,
        state,
        batch_size,
        on_batch,
        record_batch,
        on_skipped,
    )
    while True:
        async with session_factory() as session:
            wanted = batches.read((await session.execute(batches.start(session))).all())
            if wanted is None:
                return batches.updated
            batches.apply(await _sizes_async(destination, wanted))
            try:
                if (recording := batches.recording()) is not None:
                    await session.execute(recording)
                await session.commit()
            except _BatchChanged as changed:
                batches.changed(changed)
                continue
        batches.committed()
