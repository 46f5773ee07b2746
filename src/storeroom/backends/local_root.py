"""Keeping local-disk backends inside their root: no symbolic link is ever followed.

A link planted inside a backend's directory (``uploads/evil -> /etc``) would otherwise let
reads, writes, deletes, listings and copies reach files outside it, and ``storeroom gc``
delete them. Both local backends (obstore's LocalStore and fsspec's LocalFileSystem) call
:func:`confine` before touching a path, and :class:`ListingCheck` (:func:`contained` made
cheap for a whole listing) to drop listed objects that sit behind a link. Links are refused
whether they point in or out of the root: a link is a name whose target can change at any
moment, so the target cannot be vouched for.

The check runs just before the operation; a local user who can replace a directory of the
root with a link in between (a race of microseconds) is outside what this guards against:
such a user can already write in the root. Run the application under an account that owns
the root, with no other writer. Where storeroom works on a file itself (the direct reads,
writes, heads and deletes of local files) on Linux 5.6 or later, :func:`open_confined`,
:func:`open_folder` and :func:`stat_confined` leave no such race: the kernel resolves the
whole path in one ``openat2`` call that refuses any link on the way, and a write or delete
works by name in the folder it opened that way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
import sys
from collections.abc import Callable

from storeroom.errors import UnsafePath

__all__ = [
    "ListingCheck",
    "confine",
    "contained",
    "open_confined",
    "open_folder",
    "real_root",
    "stat_confined",
]


def real_root(root: str) -> str:
    """The root's canonical absolute path (a root that is itself a link is resolved once)."""
    return os.path.realpath(os.path.expanduser(root))


def _link_in(root: str, path: str) -> str | None:
    """The first component of ``path`` under ``root`` that is a symbolic link, or None."""
    current = root
    for part in path.split("/"):
        if not part or part == ".":
            continue
        if part == "..":
            return path
        current = current + "/" + part
        try:
            mode = os.lstat(current).st_mode  # one call tells both "a link?" and "exists?"
        except OSError:
            return None  # nothing further down exists (or is reachable), so no link there
        if stat.S_ISLNK(mode):
            return current
    return None


def confine(root: str, path: str, backend: str = "") -> None:
    """Raise :class:`UnsafePath` when ``path`` (relative to ``root``) goes through a link.

    ``root`` must come from :func:`real_root`.
    """
    link = _link_in(root, path)
    if link is not None:
        where = f" of backend {backend!r}" if backend else ""
        raise UnsafePath(
            f"path {path!r}{where} goes through the symbolic link {link!r}; local backends "
            f"never follow links (root: {root!r}). Remove the link or store the file itself."
        )


def open_confined(root: str, path: str, flags: int, mode: int = 0o666, backend: str = "") -> int:
    """``os.open(root/path, flags, mode)``, refusing a symbolic link anywhere on the way.

    On Linux 5.6 or later this is one ``openat2`` call with ``RESOLVE_NO_SYMLINKS``: the
    kernel checks every component as it resolves the path, so no link planted before or
    during the call is followed, and it costs one system call instead of an ``lstat`` per
    component and the open. Elsewhere it is :func:`confine`, then ``os.open`` (with the race
    the module describes). ``root`` must come from :func:`real_root`. Raises
    :class:`UnsafePath` when a link is met, and ``OSError`` as ``os.open`` would otherwise.
    """
    name = root + "/" + path if path else root
    if _openat2 is None or "/../" in f"/{path}/":
        confine(root, path, backend)  # ".." is refused there, and named
        return os.open(name, flags, mode)
    while True:
        fd = _openat2(os.fsencode(name), flags, mode)
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code != errno.EINTR:
            break
    if code == errno.ELOOP:
        confine(root, path, backend)  # names the link, when it is still there
        where = f" of backend {backend!r}" if backend else ""
        raise UnsafePath(
            f"path {path!r}{where} goes through a symbolic link; local backends never follow "
            f"links (root: {root!r}). Remove the link or store the file itself."
        )
    raise OSError(code, os.strerror(code), name)


def open_folder(root: str, path: str, backend: str = "") -> tuple[int | None, str]:
    """The folder of ``path`` (relative to ``root``) opened through no link, and the file's
    name in it: ``(folder_fd, name)``, for ``os`` calls with ``dir_fd=folder_fd``.

    A write that creates, links and renames its file by name in that folder cannot be led
    out of the root by a link planted in between. Where the system has no ``openat2``
    (or no ``O_PATH``), the folder is checked with :func:`confine` and ``(None, full
    path)`` is returned: the same calls then take the path itself. ``FileNotFoundError``
    when the folder does not exist; the caller closes the folder.
    """
    if _openat2 is None or not _FOLDER:
        confine(root, path, backend)
        return None, root + "/" + path
    cut = path.rfind("/")
    folder = open_confined(root, path[:cut] if cut >= 0 else "", _FOLDER, 0, backend)
    return folder, path[cut + 1 :]


def stat_confined(root: str, path: str, backend: str = "") -> os.stat_result:
    """``os.stat(root/path)``, refusing a symbolic link anywhere on the way.

    With ``openat2`` (and ``O_PATH``, which opens nothing for reading or writing) the path
    is resolved once, refusing links, and the result is the ``fstat`` of what was found;
    elsewhere :func:`confine`, then ``os.stat``. Raises :class:`UnsafePath` when a link is
    met, and ``OSError`` as ``os.stat`` would otherwise.
    """
    if _openat2 is None or not _FOLDER:
        confine(root, path, backend)
        return os.stat(root + "/" + path if path else root)
    fd = open_confined(root, path, _FOUND, 0, backend)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


_FOUND = os.O_PATH | os.O_CLOEXEC if hasattr(os, "O_PATH") else 0
_FOLDER = (
    os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    if hasattr(os, "O_PATH") and hasattr(os, "O_DIRECTORY")
    else 0
)


class _OpenHow(ctypes.Structure):
    """Linux's ``struct open_how``, the argument of ``openat2``."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


# openat2's number is 437 on every architecture that numbers new system calls alike (not
# on alpha or mips; they and any other system keep the lstat checks).
_OPENAT2_ARCHES = {"x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "ppc64", "s390x"}
_RESOLVE_NO_SYMLINKS = 0x04
_TMPFILE = getattr(os, "O_TMPFILE", 0)


def _find_openat2() -> Callable[[bytes, int, int], int] | None:
    """A caller of Linux's ``openat2`` (returning the fd, or -1 with ``errno`` set), or None
    where the system does not have it (another system, a kernel before 5.6, a sandbox
    that refuses the call)."""
    if sys.platform != "linux" or platform.machine() not in _OPENAT2_ARCHES:
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    number, here, size = ctypes.c_long(437), ctypes.c_int(-100), ctypes.c_size_t(24)
    hows: dict[tuple[int, int], _OpenHow] = {}  # a few flag sets: built once each

    def openat2(name: bytes, flags: int, mode: int) -> int:
        how = hows.get((flags, mode))
        if how is None:
            creates = flags & os.O_CREAT or flags & _TMPFILE == _TMPFILE != 0
            # openat2 refuses a mode with flags that create nothing (open ignores it)
            how = hows[flags, mode] = _OpenHow(flags, mode if creates else 0, _RESOLVE_NO_SYMLINKS)
        return int(syscall(number, here, name, ctypes.byref(how), size))

    probe = openat2(b"/", os.O_RDONLY | os.O_CLOEXEC, 0)
    if probe < 0:
        return None  # ENOSYS (an old kernel) or EPERM (a sandbox): keep the lstat checks
    os.close(probe)
    return openat2


_openat2 = _find_openat2()


def contained(root: str, path: str) -> bool:
    """Whether ``path`` (relative to ``root``) reaches its object without a link."""
    return _link_in(root, path) is None


class ListingCheck:
    """:func:`contained` for the paths of one listing, without repeating work.

    A listing walks one directory after another, so consecutive paths share their leading
    directories. The check remembers the last directory it found free of links and looks
    only at the components after the part a new path shares with it. Within that directory
    the first file's name is checked with one ``lstat``. From the second file on, the
    directory is read once and the names of the links in it are kept. That read costs no
    ``stat`` per entry, and every later file of the directory is checked against those
    names. It holds one directory's path and the names of the links in it, so memory stays
    flat however long the listing. A file that becomes a link after the directory was read
    is still listed (a listing is no snapshot either); every operation on it checks again
    (:func:`confine`).
    """

    __slots__ = ("_blocked", "_clean", "_directory", "_files", "_folder", "_links", "_root")

    def __init__(self, root: str) -> None:
        self._root = root
        self._clean: list[str] = []  # components of the last directory found free of links
        self._folder: str | None = None  # the last path's folder, as the listing spells it
        self._blocked = False  # whether that folder is reached through a link
        self._directory = root  # that folder's absolute path
        self._files = 0  # files of that directory checked so far
        self._links: frozenset[str] | None = None  # names of the links in it, once read

    def contained(self, path: str) -> bool:
        """Whether ``path`` (relative to the root) reaches its object without a link."""
        cut = path.rfind("/")
        folder, name = path[:cut] if cut >= 0 else "", path[cut + 1 :]
        if folder != self._folder:  # another directory: most paths of a listing skip this
            self._enter(folder)
        if self._blocked:
            return False
        if name in ("", ".", ".."):
            return _link_in(self._root, path) is None
        self._files += 1
        if self._files == 2:  # read once; if it cannot be read, each name is checked alone
            with contextlib.suppress(OSError), os.scandir(self._directory) as entries:
                self._links = frozenset(e.name for e in entries if e.is_symlink())
        if self._links is not None:
            return name not in self._links
        return _link_in(self._directory, name) is None

    def _enter(self, folder: str) -> None:
        """Check the components of ``folder`` that the last clean directory does not share."""
        self._folder, self._files, self._links = folder, 0, None
        folders = folder.split("/") if folder else []
        clean = self._clean
        shared = 0
        for mine, known in zip(folders, clean, strict=False):
            if mine != known:
                break
            shared += 1
        del clean[shared:]
        base = self._root + "".join("/" + part for part in folders[:shared])
        self._blocked = shared < len(folders) and (
            _link_in(base, "/".join(folders[shared:])) is not None
        )
        if not self._blocked:
            clean.extend(folders[shared:])
        self._directory = self._root + "".join("/" + part for part in folders)
