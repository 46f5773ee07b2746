"""Local files read and written by storeroom itself, for obstore's local store.

obstore's LocalStore reaches a file through a hop to its runtime's threads, and streams it
in small pieces it then joins. Reading and writing the file here is faster for small files
(no hop) and for streams (one system call per chunk), and it is what lets every path be
opened through no symbolic link (:mod:`storeroom.backends.local_root`): the descriptors
these functions use were opened that way. Files are written as obstore writes them:
unnamed (Linux's ``O_TMPFILE``) or a scratch file beside the path, named only once whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import threading
import uuid

from storeroom.backends.local_root import confine, open_folder
from storeroom.errors import BackendError

__all__ = [
    "READ_FILE",
    "Batch",
    "FileChunks",
    "NewLocalFile",
    "local_writer",
    "name_unnamed",
    "new_file",
    "open_folder_making",
    "outlive_cancellation",
    "read_and_close",
    "read_at",
    "read_opened",
    "scratch_path",
    "write_all",
    "write_parts",
]

# A scratch file for a direct write: created here or not at all, never inherited by children.
_NEW_FILE = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def read_opened(fd: int, size: int) -> bytes:
    """The ``size`` bytes of the file open as ``fd``, which is then closed."""
    try:
        if size > _ONE_READ:  # past what one read() returns: Python's loop, one buffer still
            with open(fd, "rb", closefd=False) as fileobj:
                return fileobj.read()
        return read_at(fd, 0, size)
    finally:
        os.close(fd)


def read_and_close(fd: int, start: int, size: int) -> bytes:
    """:func:`read_at`, then the file is closed."""
    try:
        return read_at(fd, start, size)
    finally:
        os.close(fd)


class FileChunks:
    """Bytes ``[start, stop)`` of a local file open as ``fd``, ``chunk_size`` at a time: an
    iterator, and an async iterator whose reads run in a worker thread.

    It owns the file: closed after the last chunk, on ``close()``/``aclose()``, or when
    dropped. One ``read`` per chunk, so it keeps one chunk in memory and streams at the
    disk's (or the page cache's) speed; obstore's LocalStore streams a file in small
    pieces it then joins, about 300 MiB/s on this project's machine against several GB/s.
    A file that ends before ``stop`` (it shrank while it was read) raises
    :class:`BackendError` rather than passing as a shorter object.
    """

    __slots__ = ("_at", "_chunk", "_closing", "_fd", "_lock", "_path", "_stop")

    def __init__(self, fd: int, start: int, stop: int, chunk_size: int, path: str) -> None:
        self._fd, self._at, self._stop, self._chunk, self._path = fd, start, stop, chunk_size, path
        self._lock = threading.Lock()  # held while a chunk is read (in a thread, async)
        self._closing = False

    def _next(self) -> bytes | None:
        """The next chunk, or None at the end (the file is closed then)."""
        with self._lock:
            if self._fd < 0:
                return None
            try:
                wanted = min(self._chunk, self._stop - self._at)
                data = read_at(self._fd, self._at, wanted)
                if len(data) < wanted:
                    raise BackendError(
                        f"{self._path!r} ended at byte {self._at + len(data)} while it was "
                        f"read up to byte {self._stop}: the file shrank during the read"
                    )
                self._at += wanted
            except BaseException:
                self._release()
                raise
            if self._at >= self._stop or self._closing:
                self._release()  # nothing more to read: the file need not wait for close()
            return data

    def _release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Stop reading and close the file (a read running in a thread closes it when done)."""
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()
        else:
            self._closing = True

    def __iter__(self) -> FileChunks:
        return self

    def __next__(self) -> bytes:
        data = self._next()
        if data is None:
            raise StopIteration
        return data

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        data = await asyncio.to_thread(self._next)
        if data is None:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def read_at(fd: int, start: int, size: int) -> bytes:
    """``size`` bytes of the file open as ``fd`` from ``start`` (fewer if it ends before):
    one ``read`` unless a signal or a shrinking file cuts it short."""
    if start:
        os.lseek(fd, start, os.SEEK_SET)
    data = os.read(fd, size)
    if len(data) < size:
        parts, got = [data], len(data)
        while got < size and (chunk := os.read(fd, size - got)):
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
    return data


READ_FILE = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_ONE_READ = 1 << 30  # Linux returns at most about 2 GiB from one read()


# Linux writes a small file unnamed (O_TMPFILE) and names it once whole: a process killed
# mid-write leaves nothing behind. Elsewhere, or on a file system without it, a scratch file.
_UNNAMED_FILE = (
    os.O_TMPFILE | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
    else 0
)


class NewLocalFile:
    """A file being written for a local store: its folder (opened through no link, or None
    where the system cannot; see :func:`open_folder`), its name there, the open file and,
    when it is not unnamed, the scratch name it has until it is renamed."""

    __slots__ = ("fd", "folder", "name", "scratch")

    def __init__(self, folder: int | None, name: str, fd: int, scratch: str | None) -> None:
        self.folder, self.name, self.fd, self.scratch = folder, name, fd, scratch

    def close(self) -> None:
        """Close the file and its folder, removing the scratch file if one is left (after a
        link, or after a failure); an unnamed file vanishes with its descriptor."""
        try:
            os.close(self.fd)
            if self.scratch is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.scratch, dir_fd=self.folder)
        finally:
            if self.folder is not None:
                os.close(self.folder)


# Chunks of a streamed local save are gathered into batches of this many bytes (or this
# many chunks), each written with one writev in a worker thread while the caller reads and
# hashes the next batch: hashing and writing each run near memory speed, so they overlap.
_BATCH_BYTES = 4 * 1024 * 1024
_BATCH_PARTS = 256


class Batch:
    """Chunks gathered for one write."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> bool:
        """Gather ``chunk``; whether the batch is now full."""
        if chunk:
            self.parts.append(chunk)
            self.size += len(chunk)
        return self.size >= _BATCH_BYTES or len(self.parts) >= _BATCH_PARTS

    def take(self) -> list[bytes]:
        """The chunks gathered so far; the batch starts again empty."""
        parts, self.parts, self.size = self.parts, [], 0
        return parts


def write_parts(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` one after the other to ``fd``: one ``writev`` (a short one finished
    with plain writes), or plain writes where the system has no ``writev``."""
    if len(parts) == 1 or not hasattr(os, "writev"):
        for part in parts:
            write_all(fd, part)
        return
    if not parts:
        return
    written = os.writev(fd, parts)
    for part in parts:
        if written >= len(part):
            written -= len(part)
            continue
        write_all(fd, part[written:] if written else part)
        written = 0


_WRITER: concurrent.futures.ThreadPoolExecutor | None = None
_WRITER_LOCK = threading.Lock()


def local_writer() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that write chunks of streamed local saves (made on first use)."""
    global _WRITER
    with _WRITER_LOCK:
        if _WRITER is None:
            _WRITER = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="storeroom-local-write"
            )
        return _WRITER


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``write`` may take fewer at a time)."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])


_COPY_STEP = 1 << 30


def copy_to_end(src: int, dst: int) -> None:
    """Copy file ``src`` from its start to its end into ``dst`` (both open descriptors).

    In the kernel where it can (``copy_file_range``: on one filesystem, no byte passes
    through this process), else by reads and writes of 1 MiB. Copies what the file holds
    until its end, as obstore's copy does.
    """
    offset = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied := os.copy_file_range(src, dst, _COPY_STEP, offset, offset):
                offset += copied
            return
        except OSError as exc:  # not across these filesystems: copy by hand from here
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    while chunk := os.pread(src, 1 << 20, offset):
        os.lseek(dst, offset, os.SEEK_SET)
        write_all(dst, chunk)
        offset += len(chunk)


async def outlive_cancellation(writing: asyncio.Future[None]) -> None:
    """Wait until ``writing`` (a write running in a worker thread) is over, even when the
    task waiting is cancelled again meanwhile: its file must not be closed under it."""
    while not writing.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({writing})
    if not writing.cancelled():
        writing.exception()  # retrieved: an error here is the failure already raised


def open_folder_making(root: str, path: str, backend: str) -> tuple[int | None, str]:
    """:func:`open_folder`, making the folders first when they do not exist (obstore makes
    them too). The existing part is checked for links before anything is made in it."""
    try:
        return open_folder(root, path, backend)
    except FileNotFoundError:
        confine(root, path, backend)
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        return open_folder(root, path, backend)


def new_file(folder: int | None, name: str) -> tuple[int, str | None]:
    """An open file to write ``name``'s bytes to, in ``folder`` (see :func:`open_folder`):
    unnamed where the system can, else a scratch file beside it (its name returned). Without
    a folder, ``name`` is the whole path and its missing folders are made."""
    try:
        return _open_new(folder, name)
    except FileNotFoundError:
        if folder is not None:
            raise
        os.makedirs(os.path.dirname(name), exist_ok=True)  # obstore makes them too
        return _open_new(folder, name)


def _open_new(folder: int | None, name: str) -> tuple[int, str | None]:
    global _UNNAMED_FILE
    if _UNNAMED_FILE:
        try:
            where = "." if folder is not None else os.path.dirname(name)
            return os.open(where, _UNNAMED_FILE, 0o666, dir_fd=folder), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            _UNNAMED_FILE = 0  # this file system cannot: scratch files from now on
    scratch = scratch_path(name)
    return os.open(scratch, _NEW_FILE, 0o666, dir_fd=folder), scratch


def name_unnamed(fd: int, folder: int | None, name: str) -> None:
    """Give the file open as ``fd`` the name ``name`` in ``folder`` (FileExistsError if
    taken): an unnamed file its first name, or a named one another (a hard link)."""
    # linkat(fd, "/proc/self/fd/<fd>", folder, name, AT_SYMLINK_FOLLOW). os.link makes that
    # call only when given a directory fd; an absolute source path ignores it.
    os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=fd, dst_dir_fd=folder)


def scratch_path(path: str) -> str:
    """Where a create-only stream is staged: beside its path, under a name no save chooses."""
    return f"{path}.{uuid.uuid4().hex}.partial"
