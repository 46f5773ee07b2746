"""The ``storeroom`` command: inspect and move files, migrate between backends, verify, gc."""

from __future__ import annotations

from storeroom.cli.app import cli, main

__all__ = ["cli", "main"]
