"""The demo's single page: list, direct-to-storage upload with progress, download, delete."""

from importlib.resources import files

PAGE = files("storeroom.demo").joinpath("page.html").read_text(encoding="utf-8")
"""The HTML (with its script) served at ``/``; ``{{MAX_BYTES}}`` and ``{{PROTOCOL}}`` are
filled in per app."""

UPLOADER = files("storeroom.demo").joinpath("static/uploader.js").read_text(encoding="utf-8")
"""The Uppy bundle (``npm run build:demo`` from ``frontend/demo-uploader.js``)."""
