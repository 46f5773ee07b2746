"""The ``storeroom`` command: inspect and move files, migrate between backends, verify, gc.

``cli`` is the click group (all commands registered, see :mod:`storeroom.cli.commands`);
``main`` is the console script.
"""

from __future__ import annotations

from storeroom.cli import commands as _commands  # noqa: F401 - registers the commands
from storeroom.cli.app import cli, main

__all__ = ["cli", "main"]
