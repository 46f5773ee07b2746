"""Listing a store into a scan's SQLite index: in this process, or for local disk in a child.

The scans behind ``storeroom verify``, ``gc`` and ``find_orphans``
(:class:`storeroom.orm.maintenance.ReferenceScan`) read every reference from the database
while they list the store. Both halves are Python work (rows turned into tuples and bound
into SQLite statements), so in one process they take turns on the interpreter lock:
reading a million references and listing a million local files took as long side by side
as one after the other. Another process can walk a local directory just as well, so a large
scan hands that listing to a child: :class:`ChildListing` starts ``sys.executable`` on
:func:`main`, which fills the same SQLite file through the same code (:func:`fill`) and
exits. The child lists by a walk of its own (:func:`walk`, a third less work than obstore's
listing), and by obstore's (:func:`list_batches`) when the tree holds anything the walk
leaves to obstore, a symbolic link for one. A scan's own process lists a small local store
the same way. Unlike obstore's, a scan's walk lists a name holding a control character
(obstore's whole listing fails on one), and leaves out, naming it, one that is not valid
UTF-8.

The child imports this module, :mod:`storeroom.backends.local_root`,
:mod:`storeroom.backends.relay`, :mod:`storeroom.errors` and obstore, nothing else of
storeroom: the packages above them are stood in for by empty modules, so their
``__init__`` (SQLAlchemy and the rest, half a second) never runs. It starts in about a
tenth of a second. Anything that keeps the child from finishing (an interpreter that
cannot import obstore, a directory it cannot read, a kill) makes :meth:`ChildListing.run`
return None; the caller then lists in its own process, where an
error is raised as any listing raises it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import obstore
from arro3.core import DataType

from storeroom.backends.local_root import ListingCheck, contained, stat_confined
from storeroom.backends.relay import Relay
from storeroom.errors import UnsafePath

if TYPE_CHECKING:
    from storeroom.backends.base import ListedBatch

__all__ = [
    "CACHE_KIB",
    "LIST_CHUNK",
    "ChildListing",
    "Irregular",
    "Stopped",
    "UNLISTED_SHOWN",
    "Unlisted",
    "changed_at",
    "connect",
    "fill",
    "in_shard",
    "insert_many",
    "list_batches",
    "sql_text",
    "walk",
]

CACHE_KIB = 16 * 1024  # SQLite's page cache per index file
_ROWS_PER_STATEMENT = 50
LIST_CHUNK = 1000  # objects per batch obstore hands over
UNLISTED_SHOWN = 20
"""How many of the names a walk left out are named in its report (all are counted)."""
_MICROSECONDS = DataType.timestamp("us", tz="UTC")
_INT64 = DataType.int64()
_INTERPRETER = re.compile(r"(python|pypy)[0-9.]*w?(\.exe)?$", re.IGNORECASE)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


# One level of a walk: the directory's descriptor, its entries, its path as a key prefix.
_Level = tuple[int, Iterator[os.DirEntry[str]], str]


class Irregular(Exception):
    """:func:`walk` met something only obstore's own listing answers for exactly."""


class Stopped(Exception):
    """The listing's child was stopped (:meth:`ChildListing.stop`) before it finished."""


def connect(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to a scan's index file: no journal, no syncing, a capped page cache."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    for pragma in (
        "journal_mode=OFF",
        "synchronous=OFF",
        "temp_store=FILE",
        f"cache_size=-{CACHE_KIB}",
        "busy_timeout=60000",  # a child listing into the same file holds its lock a moment
    ):
        db.execute(f"PRAGMA {pragma}")
    return db


def insert_many(db: sqlite3.Connection, head: str, row: str, rows: Sequence[Any]) -> None:
    """``head`` + ``VALUES row, row, ...`` for ``rows``, 50 rows per statement.

    One statement per row (``executemany``) costs half as much again: each row is bound,
    stepped and reset on its own, and lets go of the interpreter lock once.
    """
    size = _ROWS_PER_STATEMENT
    whole = len(rows) - len(rows) % size
    if whole:
        statement = f"{head} VALUES {', '.join([row] * size)}"
        for start in range(0, whole, size):
            db.execute(statement, list(itertools.chain.from_iterable(rows[start : start + size])))
    if whole < len(rows):
        db.executemany(f"{head} VALUES {row}", rows[whole:])


def sql_text(value: str) -> str:
    """``value`` as an SQLite string literal (one statement for a whole listing's rows)."""
    return "'" + value.replace("'", "''") + "'"


def in_shard(path: str | None, index: int, count: int, variants: str = "") -> bool:
    """Whether ``path`` falls in shard ``index`` of ``count`` (a missing path: shard 0).

    The shard is the CRC-32 of the path modulo ``count``. With ``variants`` (what joins a
    file's path to its variants' paths, ``".variants/"``), a path holding it is hashed only
    up to its first occurrence, so a file, its variants and theirs fall in one shard.
    """
    if path is None:
        return index == 0
    if variants:
        cut = path.find(variants)
        if cut > 0:
            path = path[:cut]
    return zlib.crc32(path.encode("utf-8", "surrogatepass")) % count == index


def list_batches(store: Any, prefix: str, check: ListingCheck | None) -> Iterator[ListedBatch]:
    """obstore's listing of ``store`` under ``prefix`` as rows, without files behind a link.

    obstore hands each batch over as Arrow columns (``return_arrow``), so no dictionary
    and no ``datetime`` is built per object: listing a million local files into a scan's
    index took 12.2 s this way against 14.7 to 16.8 s with a dictionary per object. ``check``
    (local disk) drops the files reached through a symbolic link.
    """
    for batch in obstore.list(store, prefix or None, chunk_size=LIST_CHUNK, return_arrow=True):
        paths = batch["path"].to_pylist()
        micros = batch["last_modified"].cast(_MICROSECONDS).cast(_INT64).to_pylist()
        rows = list(
            zip(
                paths,
                batch["size"].to_pylist(),
                [None if at is None else at / 1_000_000 for at in micros],
                batch["e_tag"].to_pylist(),
                batch["version"].to_pylist(),
                strict=True,
            )
        )
        if check is not None:
            rows = [row for row in rows if check.contained(row[0])]
        if rows:
            yield rows


def walk(
    root: str,
    prefix: str = "",
    chunk: int = LIST_CHUNK,
    *,
    unlisted: Callable[[str], None] | None = None,
) -> Iterator[ListedBatch]:
    """The rows obstore's listing of ``root`` under ``prefix`` gives, from a walk of our own.

    obstore stats each file three times by its full path (its walk follows links, then it
    asks whether the path is a file, then for its metadata), and most of its listing's
    time is the kernel looking those paths up again: a million local files took 9.9 s to
    list. This walk reads each directory through a descriptor and stats each file once,
    relative to it: 6.8 s for the same million.

    It yields exactly what :func:`list_batches` would for a plain tree: regular files (no
    directory, FIFO or socket), obstore's staging files (``name#123``) left out, obstore's
    etag (inode, modification time in microseconds, size, in hex) and modification time.
    Anything else raises :class:`Irregular` and is left to obstore, which answers for it
    in its own words: a symbolic link (storeroom drops what a link reaches; obstore also
    reports a loop of links), a name that is not printable text (undecodable bytes,
    control characters), a prefix that is no plain directory, a directory that cannot be
    read. A file or directory that vanishes during the walk is skipped, as obstore skips
    it. The order is obstore's too: each directory's entries as the system reads them,
    a subdirectory's files before its next sibling.

    With ``unlisted``, the walk also answers for names that obstore's listing refuses
    outright (its whole listing fails on one of them): a name holding an ASCII control
    character is listed as it is (no path storeroom writes holds one, so it can only be an
    orphan, and gc skips it), as is any other unprintable name that is valid unicode
    (obstore lists those as they are); a name that is not valid UTF-8 cannot be a path at
    all, so it is passed to ``unlisted`` (its path under the root, as ``repr`` shows its
    bytes) and left out. Scans list this way, so that one stray name cannot stop
    ``verify`` and ``gc``.
    """
    if prefix and not contained(root, prefix):
        raise Irregular(f"the prefix {prefix!r} goes through a link")
    top = root + "/" + prefix if prefix else root
    # One open directory per level of the current path (not per directory seen), as
    # obstore's walk holds them.
    stack: list[_Level] = []
    try:
        _enter(stack, os.open(top, _DIRECTORY), prefix + "/" if prefix else "")
        rows: ListedBatch = []
        while stack:
            fd, entries, base = stack[-1]
            for entry in entries:
                name = entry.name
                if not name.isprintable():
                    if unlisted is None:
                        raise Irregular(f"the name {name!r} in {base or '/'!r}")
                    if not _decodable(name):
                        unlisted(repr(os.fsencode(base + name)))  # as bytes: no text to show
                        continue
                if entry.is_file(follow_symlinks=False):
                    _, hashed, suffix = name.partition("#")
                    if hashed and suffix.isdecimal() and suffix.isascii():
                        continue  # obstore's staging file of a write in progress
                    try:
                        found = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    micros = found.st_mtime_ns // 1000
                    if micros < 0:  # obstore clamps its etag's time, not its date
                        raise Irregular(f"{base + name!r} was modified before 1970")
                    size = found.st_size
                    etag = f'"{found.st_ino:x}-{micros:x}-{size:x}"'
                    rows.append((base + name, size, micros / 1_000_000, etag, None))
                    if len(rows) >= chunk:
                        yield rows
                        rows = []
                elif entry.is_dir(follow_symlinks=False):
                    try:
                        _enter(stack, os.open(name, _DIRECTORY, dir_fd=fd), base + name + "/")
                    except FileNotFoundError:
                        continue
                    break  # into the subdirectory; this one's entries go on after it
                elif entry.is_symlink():
                    raise Irregular(f"the symbolic link {base + name!r}")
            else:
                stack.pop()
                _close(fd, entries)
        if rows:
            yield rows
    except OSError as exc:
        raise Irregular(f"walking {top!r}: {exc}") from None
    finally:
        for fd, entries, _ in stack:
            _close(fd, entries)


def changed_at(root: str, path: str) -> float | None:
    """When the file at ``path`` under ``root`` last changed, as gc measures its age: the
    later of its modification time and its status change time (seconds since the epoch).

    A copy within a local store is a hard link to its source's file, so it keeps the
    source's modification time; making the link changes the file's status change time.
    (That time also moves when a file is renamed, or its permissions or times change: a
    file then counts as younger than it is, and waits for a later gc.) None when the file
    is gone or cannot be reached without following a link.
    """
    try:
        found = stat_confined(root, path)
    except (OSError, UnsafePath):
        return None
    return max(found.st_mtime, found.st_ctime)


def _decodable(name: str) -> bool:
    """Whether ``name`` (as the system decodes it, undecodable bytes as lone surrogates) is
    valid unicode text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _enter(stack: list[_Level], fd: int, base: str) -> None:
    """Push the directory open as ``fd`` (its entries read from it) onto the walk's stack."""
    try:
        stack.append((fd, os.scandir(fd), base))
    except BaseException:
        os.close(fd)
        raise


def _close(fd: int, entries: Iterator[os.DirEntry[str]]) -> None:
    close = getattr(entries, "close", None)
    if close is not None:
        close()
    os.close(fd)


class Unlisted:
    """Collects the names a :func:`walk` left out (call it with each): how many, and the
    first :data:`UNLISTED_SHOWN` of them."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def __call__(self, name: str) -> None:
        self.count += 1
        if len(self.shown) < UNLISTED_SHOWN:
            self.shown.append(name)

    def clear(self) -> None:
        """Forget the names collected so far (the walk's listing was given up)."""
        self.shown.clear()
        self.count = 0


def fill(
    db: sqlite3.Connection,
    key: str,
    batches: Iterable[ListedBatch],
    keep: Callable[[str], bool] | None,
) -> int:
    """Replace backend ``key``'s rows of the index's ``obj`` table by ``batches``' rows.

    Only the rows whose path ``keep`` accepts are kept (all when it is None). One
    transaction, rolled back when ``batches`` raises; returns how many rows went in.
    """
    db.execute("BEGIN")
    try:
        db.execute("DROP INDEX IF EXISTS obj_at")
        db.execute("DELETE FROM obj WHERE backend = ?", (key,))
        values = f"({sql_text(key)}, ?, ?, ?, ?, ?)"
        count = 0
        for rows in batches:
            if keep is not None:
                rows = [listed_row for listed_row in rows if keep(listed_row[0])]
            insert_many(db, "INSERT INTO obj", values, rows)
            count += len(rows)
    except BaseException:
        db.execute("ROLLBACK")  # the index as it was: the listing can be done again
        raise
    db.execute("COMMIT")
    return count


# The child's first lines: stand in for storeroom's packages so that importing this module
# runs none of their __init__, then hand over to main().
_BOOT = """\
import json, sys, types
spec = json.loads(sys.argv[1])
sys.path[:] = spec["sys_path"]
for name, where in spec["packages"]:
    package = types.ModuleType(name)
    package.__path__ = [where]
    sys.modules[name] = package
from storeroom.backends.local_listing import main
main(spec)
"""


def _interpreter() -> str | None:
    """The Python interpreter to start the child with, or None when there is none to trust.

    In a frozen application (PyInstaller and the like) ``sys.executable`` is the
    application itself, and in an embedding server (uWSGI, for one) it may be the server's
    binary: started with the child's arguments, either would do something else entirely.
    So only a program named like an interpreter (``python3.12``, ``pypy3``,
    ``pythonw.exe``) is started.
    """
    python = sys.executable
    if not python or getattr(sys, "frozen", False):
        return None
    if not _INTERPRETER.match(os.path.basename(python)):
        return None
    return python


class ChildListing:
    """One local directory listed into an index file by a child process.

    :meth:`run` blocks until the child ends; :meth:`stop`, from any thread, kills it.
    """

    def __init__(
        self,
        index: str,
        key: str,
        root: str,
        prefix: str,
        shard: tuple[int, int] | None,
        variants: str = "",
    ) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        self._spec = {
            "index": index,
            "key": key,
            "root": root,
            "prefix": prefix,
            "shard": list(shard) if shard is not None else None,
            "variants": variants,
            "parent": os.getpid(),
            "sys_path": [entry for entry in sys.path if isinstance(entry, str)],
            "packages": [
                ("storeroom", os.path.dirname(here)),
                ("storeroom.backends", here),
            ],
        }
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self.error = ""
        """Why the child did not finish (its last lines of output), when it did not."""
        self.note = ""
        """Why the child listed with obstore rather than :func:`walk`, when it did."""
        self.unlisted: list[str] = []
        """Names the walk left out, not being valid UTF-8 (the first :data:`UNLISTED_SHOWN`)."""
        self.unlisted_count = 0
        """How many names the walk left out in all."""

    def run(self) -> int | None:
        """List; how many objects went in, or None when the child could not do it.

        Raises :class:`Stopped` when :meth:`stop` ended it.
        """
        python = _interpreter()
        if python is None:
            self.error = f"no Python interpreter to start: sys.executable is {sys.executable!r}" + (
                " in a frozen application" if getattr(sys, "frozen", False) else ""
            )
            return None
        with self._lock:
            if self._stopped:
                raise Stopped
            try:
                self._child = subprocess.Popen(
                    [python, "-I", "-c", _BOOT, json.dumps(self._spec)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:
                self.error = f"could not start {python!r}: {exc}"
                return None
        out, err = self._child.communicate()
        if self._stopped:
            raise Stopped
        if self._child.returncode == 0:
            try:
                told = json.loads(out)
                objects = int(told["objects"])
            except (ValueError, KeyError, TypeError):
                pass
            else:
                self.note = str(told.get("note", ""))
                self.unlisted = [str(name) for name in told.get("unlisted", ())]
                self.unlisted_count = int(told.get("unlisted_count", len(self.unlisted)))
                return objects
        self.error = (err or out).decode("utf-8", "replace").strip()[-2000:] or (
            f"exit status {self._child.returncode}"
        )
        return None

    def stop(self) -> None:
        """Kill the child (if it runs) and make :meth:`run` raise :class:`Stopped`."""
        with self._lock:
            self._stopped = True
            if self._child is not None and self._child.poll() is None:
                self._child.kill()


def main(spec: Mapping[str, Any]) -> None:
    """The child: list ``spec["root"]`` under ``spec["prefix"]`` into ``spec["index"]``.

    By :func:`walk` (names that are not valid UTF-8 left out, and told in its output);
    when the tree holds something the walk leaves to obstore (:class:`Irregular`), what it
    wrote is rolled back and obstore lists the tree instead.
    """
    from obstore.store import LocalStore

    root, parent, prefix = spec["root"], spec["parent"], spec["prefix"]
    shard, variants = spec["shard"], spec.get("variants", "")
    keep = None if shard is None else (lambda path: in_shard(path, shard[0], shard[1], variants))
    unlisted = Unlisted()

    def watched(batches: Iterator[ListedBatch]) -> Iterator[ListedBatch]:
        for rows in batches:
            if os.getppid() != parent:  # the scan's process is gone: stop here
                raise SystemExit(3)
            yield rows

    note = ""
    db = connect(spec["index"])
    try:
        try:
            # The walk and the inserts take turns in this thread: in two threads they
            # would contend for the interpreter lock (11.7 s a million files, not 9.2 s).
            count = fill(db, spec["key"], watched(walk(root, prefix, unlisted=unlisted)), keep)
        except Irregular as why:
            unlisted.clear()
            note = f"listed by obstore: {why}"
            # obstore's walk runs outside the interpreter lock: a few batches ahead of the
            # inserts, in a thread of its own, as in a scan's own process.
            obstore_rows = list_batches(LocalStore(root), prefix, ListingCheck(root))
            with Relay(watched(obstore_rows)) as listed:
                count = fill(db, spec["key"], listed, keep)
    finally:
        db.close()
    told = {"objects": count, "note": note}
    if unlisted.count:
        told.update(unlisted=unlisted.shown, unlisted_count=unlisted.count)
    sys.stdout.write(json.dumps(told))
