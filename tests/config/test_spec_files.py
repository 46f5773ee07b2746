# ruff: noqa: I001  (the specification's code is kept as written, imports included)
"""The specification's "Configuration File" snippet and its config.toml, imports changed, and
storeroom's loader for the same file (which also registers the gcs entry the snippet skips)."""

from __future__ import annotations

import tomllib
import types
from pathlib import Path
from typing import Any

import pytest

from storeroom import ObstoreBackend as _ObstoreBackend
from storeroom import storages
from storeroom.config import configure_from_file, load_config_file

# The snippet uses the third-party ``toml`` package; its ``load(path)`` is tomllib's loads.
toml = types.SimpleNamespace(load=lambda path: tomllib.loads(Path(path).read_text()))

# --- specification, "Configuration File" (imports changed) -----------------------------------
from storeroom.backends.obstore import ObstoreBackend


def configure_storage_from_file(config_path: str):
    """Configure storage from TOML file."""
    config = toml.load(config_path)

    for backend_config in config["storage"]["backends"]:
        if backend_config["type"] == "s3":
            storages.register_backend(
                ObstoreBackend(
                    key=backend_config["key"],
                    fs=backend_config["bucket"],
                    aws_region=backend_config["region"],
                )
            )


CONFIG_TOML = """
# config.toml
[storage]
[[storage.backends]]
key = "documents"
type = "s3"
bucket = "s3://company-documents/"
region = "us-west-2"

[[storage.backends]]
key = "images"
type = "gcs"
bucket = "gs://company-images/"
"""
# --- end of specification ------------------------------------------------------------------


@pytest.fixture
def config_toml(tmp_path: Path, s3_env: Any) -> Path:
    s3_env.create_bucket("company-documents")
    path = tmp_path / "config.toml"
    path.write_text(CONFIG_TOML)
    return path


def test_spec_loader_registers_the_s3_entry_only(config_toml: Path, round_trip: Any) -> None:
    configure_storage_from_file(str(config_toml))
    assert storages.registered_backends() == ["documents"]
    round_trip("documents")


def test_storeroom_loader_registers_every_entry(config_toml: Path, round_trip: Any) -> None:
    backends = configure_from_file(config_toml)
    assert [b.key for b in backends] == ["documents", "images"]
    assert storages.registered_backends() == ["documents", "images"]
    images = storages.get_backend("images")
    assert isinstance(images, _ObstoreBackend)
    assert (images.kind, images.location) == ("gcs", "gs://company-images/")
    round_trip("documents")


def test_both_loaders_reach_the_same_bucket(config_toml: Path, round_trip: Any) -> None:
    configure_storage_from_file(str(config_toml))
    saved = round_trip("documents")
    storages.clear()
    configure_from_file(config_toml)
    assert storages.get_backend("documents").get(saved.path) == saved.get_content()


def test_spec_toml_parses_into_specs(config_toml: Path) -> None:
    documents, images = load_config_file(config_toml)
    assert (documents.key, documents.type, documents.region) == ("documents", "s3", "us-west-2")
    assert documents.location_url() == "s3://company-documents/"
    assert (images.key, images.type, images.location_url()) == (
        "images",
        "gcs",
        "gs://company-images/",
    )
    assert documents.source == f"{config_toml}, storage.backends[0]"


SAME_CONFIG = {
    "json": """{"storage": {"backends": [
        {"key": "documents", "type": "s3", "bucket": "company-documents",
         "region": "us-west-2", "prefix": "inbox"},
        {"key": "scratch", "type": "local", "path": "./scratch"}]}}""",
    "yaml": """
storage:
  backends:
    - key: documents
      type: s3
      bucket: company-documents
      region: us-west-2
      prefix: inbox
    - key: scratch
      type: local
      path: ./scratch
""",
    "toml": """
[[storage.backends]]
key = "documents"
type = "s3"
bucket = "company-documents"
region = "us-west-2"
prefix = "inbox"

[[storage.backends]]
key = "scratch"
type = "local"
path = "./scratch"
""",
}


@pytest.mark.parametrize("fmt", list(SAME_CONFIG))
def test_every_format_registers_working_backends(
    fmt: str,
    tmp_path: Path,
    s3_env: Any,
    round_trip: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_env.create_bucket("company-documents")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"storage.{fmt}"
    path.write_text(SAME_CONFIG[fmt])
    configure_from_file(path)
    saved = round_trip("documents")
    assert storages.get_backend("documents").location == "s3://company-documents/inbox/"
    local = round_trip("scratch")
    assert (tmp_path / "scratch" / local.path).read_bytes() == local.get_content()
    assert saved.backend == "documents"
