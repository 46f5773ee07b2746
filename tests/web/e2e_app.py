"""The app the end-to-end test and benchmarks/web_memory.py serve with uvicorn.

Backends come from the environment (``STORAGE__<KEY>__URL``, ``..._SIGNING_SECRET``,
``..._SIGNING_BASE_URL``), exactly as a deployed app would configure them.
"""

from __future__ import annotations

from storeroom.config import configure_from_env
from storeroom.registry import StorageRegistry
from storeroom.web import SignedUrlApp

registry = StorageRegistry()
configure_from_env(registry)
app = SignedUrlApp(registry, mount_path="/files")
