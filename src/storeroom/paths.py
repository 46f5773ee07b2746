"""Validation of object paths, shared by every backend.

A path names an object inside a backend, relative to the backend's root (bucket, prefix or
directory). Backends call :func:`safe_path` before any I/O, so no name a user supplies can
reach outside that root, whichever store sits underneath.
"""

from __future__ import annotations

import re
import unicodedata

from storeroom.errors import UnsafePath

__all__ = ["MAX_PATH_LENGTH", "join_path", "safe_path"]

MAX_PATH_LENGTH = 1024
"""Longest accepted path in UTF-8 bytes (S3's and GCS's object key limit)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SUSPICIOUS_SEGMENT = re.compile(r"(?:^|/)(?:\.{1,2}|\s*)(?:/|$)")


def _reject(path: str, why: str) -> UnsafePath:
    shown = path if len(path) <= 120 else path[:117] + "..."
    return UnsafePath(
        f"unsafe object path {shown!r}: {why}. Use a relative path of '/'-separated "
        "segments without '.', '..', backslashes or control characters."
    )


def safe_path(path: str) -> str:
    """Return ``path`` if it is a safe relative object path; raise UnsafePath otherwise.

    Rejected: empty names, absolute paths (leading ``/`` or a drive letter), ``.`` and ``..``
    segments, empty segments (``a//b``), a trailing ``/``, backslashes, NUL and other control
    characters, and names longer than :data:`MAX_PATH_LENGTH` bytes. Unicode names are
    accepted when already NFC-normalised, so two spellings of one name cannot name two
    objects.
    """
    if (
        type(path) is str
        and path.isascii()
        and path.isprintable()  # for ASCII: no control characters
        and 1 < len(path) <= MAX_PATH_LENGTH
        and path[0] not in "./"
        and path[-1] != "/"
        and path[1] != ":"
        and "\\" not in path
        and " " not in path
        and "//" not in path
        and "/." not in path
    ):
        # The common case, decided by string methods alone: printable ASCII, no segment
        # that starts with a dot or holds a space, no empty segment. Anything else takes
        # the full checks.
        return path
    return _checked(path)


def _checked(path: str) -> str:
    """:func:`safe_path`'s full checks (for paths its fast test does not accept)."""
    if not isinstance(path, str):
        raise UnsafePath(f"object path must be a str, got {type(path).__name__}")
    if not path:
        raise _reject(path, "it is empty")
    if _CONTROL.search(path):
        raise _reject(path, "it contains a control character")
    if "\\" in path:
        raise _reject(path, "it contains a backslash")
    if path[0] == "/" or (path[1:2] == ":" and path[0].isalpha()):
        raise _reject(path, "it is absolute")
    if path[-1] == "/":
        raise _reject(path, "it ends with '/'")
    if _SUSPICIOUS_SEGMENT.search(path):
        for segment in path.split("/"):
            if segment == "":
                raise _reject(path, "it contains an empty segment ('//')")
            if segment in (".", ".."):
                raise _reject(path, f"it contains a {segment!r} segment")
            if segment.strip() == "":
                raise _reject(path, "it contains a segment made only of spaces")
    if not path.isascii():
        if unicodedata.normalize("NFC", path) != path:
            raise _reject(path, "it is not NFC-normalised unicode")
        try:
            encoded = path.encode("utf-8")
        except UnicodeEncodeError:
            raise _reject(path, "it is not valid unicode (lone surrogate)") from None
        if len(encoded) > MAX_PATH_LENGTH:
            raise _reject(path, f"it is longer than {MAX_PATH_LENGTH} bytes")
    elif len(path) > MAX_PATH_LENGTH:
        raise _reject(path, f"it is longer than {MAX_PATH_LENGTH} bytes")
    return path


def join_path(prefix: str, path: str) -> str:
    """Join a validated object path under a backend prefix ('' for none)."""
    path = safe_path(path)
    prefix = prefix.strip("/")
    return f"{prefix}/{path}" if prefix else path
