"""The demo's single page: list, direct-to-storage upload with progress, download, delete."""

from importlib.resources import files

PAGE = files("storeroom.demo").joinpath("page.html").read_text(encoding="utf-8")
"""The HTML (with its script) served at ``/``; ``{{MAX_BYTES}}`` is filled in per app."""
