"""The yaml extra: backends from a YAML configuration file."""

from pathlib import Path

from storeroom import FileObject, StorageRegistry
from storeroom.config import configure_from_file, load_config_file

Path("storage.yaml").write_text("""
storage:
  backends:
    - key: scratch
      type: local
      path: ./scratch
      default: true
    - key: cache
      url: memory://
""")
specs = load_config_file("storage.yaml")
assert [spec.key for spec in specs] == ["scratch", "cache"]
registry = StorageRegistry()
configure_from_file("storage.yaml", registry)
assert registry.registered_backends() == ["cache", "scratch"] and registry.default_key == "scratch"
saved = FileObject(filename="y.txt", content=b"yaml", registry=registry).save()
assert Path("scratch", saved.path).read_bytes() == b"yaml"
assert (
    FileObject(backend="cache", filename="c.txt", content=b"c", registry=registry)
    .save()
    .get_content()
    == b"c"
)
print("yaml ok")
