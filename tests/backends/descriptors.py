"""Counting a process's open descriptors on one folder's files (Linux ``/proc``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counting open descriptors needs /proc/self/fd"
)


def open_fds(folder: Path) -> int:
    """How many descriptors this process has open on files and folders under ``folder``.

    Only those: a connection an earlier test left in a pool may close at any moment, and
    counting every descriptor of the process made the count move by itself.
    """
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        count += target.startswith(f"{folder}/")
    return count
