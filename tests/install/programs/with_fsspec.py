"""The fsspec extra: FSSpecBackend on fsspec's memory filesystem, and s3fs/adlfs/gcsfs built."""

from storeroom import FileObject, StorageRegistry
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.config import backend_from_url

registry = StorageRegistry()
memory = registry.register_backend(FSSpecBackend("scratch", "memory", prefix="/install-test"))
memory.put("a/one.txt", b"one")
memory.put("a/two.txt", b"two")
assert memory.get("a/one.txt") == b"one"
assert sorted(info.path for info in memory.list("a")) == ["a/one.txt", "a/two.txt"]
saved = FileObject(backend="scratch", filename="f.txt", content=b"file", registry=registry).save()
assert saved.get_content() == b"file" and saved.size == 4
assert type(backend_from_url("temp", "fsspec+memory://temp")).__name__ == "FSSpecBackend"

# The cloud filesystems of the extra: built, no request made.
s3 = FSSpecBackend(
    "s3",
    "s3",
    prefix="bucket/media",
    storage_options={"key": "AKIAINSTALLTEST", "secret": "not-a-secret"},
    client_kwargs={"endpoint_url": "http://127.0.0.1:9"},
)
assert type(s3.fs).__name__ == "S3FileSystem" and s3.retries_natively
gcs = FSSpecBackend("gcs", "gcs", prefix="bucket", token="anon")
assert "GCSFileSystem" in {c.__name__ for c in type(gcs.fs).__mro__}
azure = FSSpecBackend(
    "azure",
    "abfs",
    prefix="container",
    account_name="devstoreaccount1",
    account_key="a2V5",
)
assert type(azure.fs).__name__ == "AzureBlobFileSystem"
print("fsspec ok")
