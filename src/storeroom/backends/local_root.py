"""Keeping local-disk backends inside their root: no symbolic link is ever followed.

A link planted inside a backend's directory (``uploads/evil -> /etc``) would otherwise let
reads, writes, deletes, listings and copies reach files outside it, and ``storeroom gc``
delete them. Both local backends (obstore's LocalStore and fsspec's LocalFileSystem) call
:func:`confine` before touching a path, and :func:`contained` to drop listed objects that
sit behind a link. Links are refused whether they point in or out of the root: a link is
a name whose target can change at any moment, so the target cannot be vouched for.

The check runs just before the operation; a local user who can replace a directory of the
root with a link in between (a race of microseconds) is outside what this guards against:
such a user can already write in the root. Run the application under an account that owns
the root, with no other writer.
"""

from __future__ import annotations

import os
import stat

from storeroom.errors import UnsafePath

__all__ = ["confine", "contained", "real_root"]


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
