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
the root, with no other writer.
"""

from __future__ import annotations

import contextlib
import os
import stat

from storeroom.errors import UnsafePath

__all__ = ["ListingCheck", "confine", "contained", "real_root"]


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
