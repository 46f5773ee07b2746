"""A ``bytes`` object of a known size that its maker fills in place before handing it out.

A whole read that returns ``bytes`` would otherwise copy twice: each chunk from the
network into a growing buffer, then that buffer into ``bytes`` (``bytearray`` cannot become
``bytes`` without a copy, and a 256 MiB copy into fresh memory costs about as much as
receiving it from a store on loopback). CPython's C API makes a bytes object whose contents
are not yet set (``PyBytes_FromStringAndSize(NULL, n)``) for exactly this: the caller
writes the bytes before anyone else sees the object. :func:`unfilled` does that through
``ctypes`` and returns the object with a writable view of its memory.

The view does not keep the object alive: keep both in one scope, hand out only the bytes
object (and read-only ``memoryview(obj)`` slices, which do keep it alive), and never write
through the view once the object has been handed out. Where this is not CPython, or
``ctypes`` cannot reach the C API, :func:`unfilled` returns None and callers assemble the
bytes the ordinary way.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

_PyBUF_WRITE = 0x200

_Make = Callable[[int], tuple[bytes, memoryview]]


def _api() -> _Make | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        api = ctypes.pythonapi
        new = api.PyBytes_FromStringAndSize
        address = api.PyBytes_AsString
        view = api.PyMemoryView_FromMemory
    except (AttributeError, OSError):  # pragma: no cover - an embedded or stripped CPython
        return None
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_ssize_t]
    address.restype, address.argtypes = ctypes.c_void_p, [ctypes.py_object]
    view.restype, view.argtypes = (
        ctypes.py_object,
        [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int],
    )

    def make(size: int) -> tuple[bytes, memoryview]:
        made: Any = new(None, size)
        return made, view(address(made), size, _PyBUF_WRITE)

    return make


_make = _api()

MIN_SIZE = 64 * 1024
"""Smaller results are assembled the ordinary way (a copy of this size costs next to
nothing, and CPython shares its empty and one-byte objects, which must never be written)."""


def unfilled(size: int) -> tuple[bytes, memoryview] | None:
    """A new ``bytes`` of ``size`` unset bytes and a writable view of them; None when this
    interpreter cannot make one or ``size`` is below :data:`MIN_SIZE`."""
    if _make is None or size < MIN_SIZE:
        return None
    return _make(size)
