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

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


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
    if not isinstance(path, str):
        raise UnsafePath(f"object path must be a str, got {type(path).__name__}")
    if not path:
        raise _reject(path, "it is empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise _reject(path, "it contains a control character")
    if "\\" in path:
        raise _reject(path, "it contains a backslash")
    if path.startswith("/") or _WINDOWS_DRIVE.match(path):
        raise _reject(path, "it is absolute")
    if path.endswith("/"):
        raise _reject(path, "it ends with '/'")
    for segment in path.split("/"):
        if segment == "":
            raise _reject(path, "it contains an empty segment ('//')")
        if segment in (".", ".."):
            raise _reject(path, f"it contains a {segment!r} segment")
        if segment.strip() == "":
            raise _reject(path, "it contains a segment made only of spaces")
    if unicodedata.normalize("NFC", path) != path:
        raise _reject(path, "it is not NFC-normalised unicode")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_LENGTH:
        raise _reject(path, f"it is longer than {MAX_PATH_LENGTH} bytes")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise _reject(path, "it is not valid unicode (lone surrogate)") from None
    return path


def join_path(prefix: str, path: str) -> str:
    """Join a validated object path under a backend prefix ('' for none)."""
    path = safe_path(path)
    prefix = prefix.strip("/")
    return f"{prefix}/{path}" if prefix else path
