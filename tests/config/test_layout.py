"""The configuration layer's rooms: one settings table, validation, construction and the URL
factory apart, and every old import path still working."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from storeroom import StorageRegistry
from storeroom.config import (
    SETTINGS_FIELDS,
    BackendSpec,
    InvalidBackendSpec,
    StorageConfig,
    StorageSettings,
)
from storeroom.config.construction import backend_options, build_backend, location_url
from storeroom.config.urls import url_type
from storeroom.config.validation import validate_spec

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_both_settings_classes_have_exactly_the_fields_of_the_table() -> None:
    names = [f.name for f in SETTINGS_FIELDS]
    assert [f.name for f in dataclasses.fields(StorageConfig)] == names
    assert list(StorageSettings.model_fields) == names
    for f in SETTINGS_FIELDS:
        assert getattr(StorageConfig(), f.name) == f.default
        assert StorageSettings.model_fields[f.name].default == f.default
        assert StorageSettings.model_fields[f.name].description == f.description


def test_secret_fields_of_the_table_are_secret_in_both_classes() -> None:
    secrets = [f for f in SETTINGS_FIELDS if f.secret]
    assert {f.name for f in secrets} >= {"aws_secret_access_key", "aws_access_key_id"}
    values = {f.name: SECRET for f in secrets}
    pydantic_settings = StorageSettings(**values)
    plain = StorageConfig(**values)
    for f in secrets:
        assert isinstance(getattr(pydantic_settings, f.name), SecretStr)
        assert getattr(plain, f.name) == SECRET
    assert SECRET not in repr(pydantic_settings) and SECRET not in repr(plain)


def test_every_field_is_read_from_its_variable_by_both_loaders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {}
    for f in SETTINGS_FIELDS:
        value = '{"extra": {"type": "memory"}}' if f.name == "backends" else f"v-{f.name}"
        environ[f.env_variable] = value
        monkeypatch.setenv(f.env_variable, value)
    plain = StorageConfig.from_env(environ)
    pydantic_settings = StorageSettings()
    for f in SETTINGS_FIELDS:
        got = getattr(pydantic_settings, f.name)
        got = got.get_secret_value() if isinstance(got, SecretStr) else got
        assert got == getattr(plain, f.name), f.name


def test_unknown_settings_fail_in_the_dataclass_naming_the_class() -> None:
    with pytest.raises(TypeError, match="StorageConfig.*'bukket'"):
        StorageConfig(bukket="x")


def test_validation_construction_and_urls_are_usable_on_their_own(tmp_path: Path) -> None:
    spec = BackendSpec(key="docs", type="minio", bucket="b", prefix="p")
    assert location_url(spec) == "s3://b/p/"
    assert backend_options(spec)["aws_endpoint"] == "http://localhost:9000"
    assert url_type("gs://bucket") == "gcs" and url_type("./here") == "local"
    backend = build_backend(BackendSpec(key="disk", type="local", path=str(tmp_path)))
    assert backend.key == "disk"
    spec.bucket = None
    with pytest.raises(InvalidBackendSpec, match="field 'bucket': missing"):
        validate_spec(spec)


def test_an_unsupported_url_scheme_names_the_backend_only_inside_a_spec() -> None:
    with pytest.raises(InvalidBackendSpec) as inside:
        BackendSpec(key="docs", url="nosuch://x")
    assert str(inside.value).startswith("backend 'docs'") and inside.value.field == "url"
    with pytest.raises(InvalidBackendSpec) as alone:
        url_type("nosuch://x")
    assert not str(alone.value).startswith("backend")


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "storeroom.config",
            [
                "BackendSpec",
                "InvalidBackendSpec",
                "backend_from_url",
                "build_backends",
                "register_specs",
                "spec_from_mapping",
                "TYPE_ALIASES",
                "RESERVED_FIELDS",
                "StorageConfig",
                "StorageSettings",
                "SETTINGS_FIELDS",
            ],
        ),
        (
            "storeroom.config.spec",
            [
                "BackendSpec",
                "InvalidBackendSpec",
                "backend_from_url",
                "build_backends",
                "register_specs",
                "spec_from_mapping",
                "parse_json_object",
                "parse_bool",
                "spec_error",
                "TYPE_ALIASES",
                "RESERVED_FIELDS",
                "SPEC_FIELDS",
            ],
        ),
    ],
)
def test_old_import_paths_keep_working(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name) is not None, f"{module}.{name}"


def test_settings_register_what_they_describe(tmp_path: Path) -> None:
    registry = StorageRegistry()
    values: dict[str, Any] = {
        "backend": "local",
        "upload_dir": str(tmp_path / "u"),
        "backends": {"scratch": {"type": "memory"}},
    }
    StorageConfig(**values).register_backends(registry)
    other = StorageRegistry()
    StorageSettings(**values).register_backends(other)
    assert registry.registered_backends() == other.registered_backends() == ["default", "scratch"]
