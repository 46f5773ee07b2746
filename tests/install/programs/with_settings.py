"""The settings extra: StorageSettings (pydantic-settings) read from STORAGE_* variables.

The test runs this with STORAGE_BACKEND=local, STORAGE_UPLOAD_DIR and
STORAGE_BACKENDS__SCRATCH__TYPE=memory in the environment.
"""

import os
from pathlib import Path

from storeroom import FileObject, StorageRegistry
from storeroom.config import StorageSettings

settings = StorageSettings()
assert settings.backend == "local", settings
registry = StorageRegistry()
settings.register_backends(registry)
assert registry.registered_backends() == ["default", "scratch"]

upload_dir = Path(os.environ["STORAGE_UPLOAD_DIR"])
saved = FileObject(backend="default", filename="c.txt", content=b"local", registry=registry)
saved.save()
assert (upload_dir / saved.path).read_bytes() == b"local"
assert saved.get_content() == b"local"
kept = FileObject(backend="scratch", filename="m.txt", content=b"memory", registry=registry)
assert kept.save().get_content() == b"memory"
print("settings ok")
