"""Where the ORM stores a file: unique destination paths.

The default layout is ``{table}/{column}/{uuid}/{filename}``: a fresh UUID per upload, so two
rows that upload ``report.pdf`` never share an object, and the original name stays
readable in the store. The filename is reduced to safe characters (letters, digits, ``.``,
``-``, ``_``). Pass ``path=`` to :class:`StoredObject` (a function of the row, the column
name and the FileObject) to choose another layout.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storeroom.paths import safe_path

if TYPE_CHECKING:
    from storeroom.file import FileObject

__all__ = ["PathFunction", "default_path", "safe_filename"]

PathFunction = Callable[[Any, str, "FileObject"], str]
"""``(row, column name, file) -> object path``; the result must pass :func:`safe_path`."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# A name safe_filename returns unchanged: allowed characters only, none of ``._`` at the ends.
_ALREADY_SAFE = re.compile(r"[A-Za-z0-9-](?:[A-Za-z0-9._-]*[A-Za-z0-9-])?")


def safe_filename(name: str, *, max_length: int = 120) -> str:
    """``name`` reduced to letters, digits, ``.``, ``-`` and ``_`` (``file`` if nothing is left).

    Accents are dropped (``résumé.pdf`` -> ``resume.pdf``), other characters become ``_``,
    leading dots are removed (no hidden files, no ``..``), and long names keep their
    extension.
    """
    if len(name) <= max_length and _ALREADY_SAFE.fullmatch(name):
        return name
    return _reduced(name, max_length)


def _reduced(name: str, max_length: int) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", ascii_name).strip("._ ") or "file"
    if len(cleaned) > max_length:
        stem, dot, ext = cleaned.rpartition(".")
        ext = ext[:16] if dot else ""
        cleaned = (stem if dot else cleaned)[: max_length - len(ext) - 1] + (
            f".{ext}" if ext else ""
        )
    return cleaned


@functools.lru_cache(maxsize=1024)
def _prefix(table: str, column: str) -> str:
    return f"{safe_filename(table)}/{safe_filename(column)}/"


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex`` without building a UUID object (a third of the time)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def default_path(row: Any, column: str, file: FileObject) -> str:
    """``{table}/{column}/{uuid4 hex}/{safe filename}``."""
    table = getattr(getattr(row, "__table__", None), "name", None) or type(row).__name__
    return safe_path(f"{_prefix(str(table), column)}{_uuid4_hex()}/{safe_filename(file.filename)}")
