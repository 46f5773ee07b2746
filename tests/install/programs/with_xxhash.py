"""The xxhash extra: the "xxh3-128" checksum, chosen per save and per backend in a TOML file.

Saves record ``xxh3-128:<32 hex digits>`` and full reads verify it, on local disk.
"""

from pathlib import Path

import xxhash

from storeroom import FileObject, IntegrityError, StorageRegistry, checksums
from storeroom.config import configure_from_file

assert "xxh3-128" in checksums.supported_algorithms()
Path("storage.toml").write_text("""
[[storage.backends]]
key = "scratch"
type = "local"
path = "./scratch"
checksum_algorithm = "xxh3-128"
""")
registry = StorageRegistry()
configure_from_file("storage.toml", registry)
data = b"fast, not tamper-evident" * 100
saved = FileObject(backend="scratch", filename="x.bin", content=data, registry=registry).save()
assert saved.checksum == "xxh3-128:" + xxhash.xxh3_128_hexdigest(data), saved.checksum
assert saved.get_content() == data
Path("scratch", saved.path).write_bytes(data[:-1] + b"!")  # corrupted behind storeroom's back
try:
    saved.get_content()
except IntegrityError:
    pass
else:
    raise AssertionError("a corrupted object read back without an IntegrityError")
print("xxhash ok")
