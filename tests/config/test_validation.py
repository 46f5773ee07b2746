"""Invalid configurations fail with messages naming the backend key, the field, the bad value
and the valid choices; secrets never appear in reprs, error messages or logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from storeroom import BackendAlreadyRegistered, ConfigurationError, StorageRegistry
from storeroom.config import (
    BackendSpec,
    InvalidBackendSpec,
    InvalidConfigFile,
    configure_from_env,
    configure_from_file,
    load_config_file,
    register_specs,
    spec_from_mapping,
)

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_unknown_type_lists_valid_types() -> None:
    with pytest.raises(InvalidBackendSpec) as caught:
        spec_from_mapping({"key": "images", "type": "gcss", "bucket": "b"}, source="test")
    message = str(caught.value)
    assert "backend 'images'" in message and "field 'type'" in message and "'gcss'" in message
    assert "s3, minio, gcs (or gs), azure (or az), local (or file), memory, fsspec" in message
    assert (caught.value.key, caught.value.field, caught.value.source) == ("images", "type", "test")
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize(
    ("kind", "noun"),
    [("s3", "bucket"), ("minio", "bucket"), ("gcs", "bucket"), ("azure", "container")],
)
def test_missing_bucket_names_the_field_and_a_fix(kind: str, noun: str) -> None:
    with pytest.raises(InvalidBackendSpec) as caught:
        BackendSpec(key="docs", type=kind)
    message = str(caught.value)
    assert "backend 'docs'" in message and "field 'bucket'" in message
    assert f"needs the {noun} name" in message and "url = " in message
    assert caught.value.field == "bucket"


def test_missing_bucket_in_the_environment_names_the_variable() -> None:
    with pytest.raises(InvalidBackendSpec) as caught:
        configure_from_env(StorageRegistry(), {"STORAGE_BACKEND": "s3"})
    assert "field 'S3_BUCKET'" in str(caught.value) and "STORAGE_BACKEND=s3" in str(caught.value)


def test_unknown_storage_backend_value_lists_choices() -> None:
    with pytest.raises(
        InvalidBackendSpec,
        match="'ftp' is not a supported backend type.*s3, minio, gcs, azure, local, memory, none",
    ):
        configure_from_env(StorageRegistry(), {"STORAGE_BACKEND": "ftp"})


def test_malformed_json_options_never_echo_the_value() -> None:
    environ = {
        "PUBLIC_STORAGE_URI": "s3://public/",
        "PUBLIC_STORAGE_OPTIONS": f'{{"aws_secret_access_key": "{SECRET}",}}',
    }
    with pytest.raises(InvalidBackendSpec) as caught:
        configure_from_env(StorageRegistry(), environ)
    message = str(caught.value)
    assert "backend 'public'" in message and "field 'PUBLIC_STORAGE_OPTIONS'" in message
    assert "not valid JSON" in message and "line 1 column" in message
    assert SECRET not in message


def test_json_options_must_be_an_object() -> None:
    with pytest.raises(InvalidBackendSpec, match="expected a JSON object, got a JSON list"):
        configure_from_env(
            StorageRegistry(),
            {
                "PUBLIC_STORAGE_URI": "s3://public/",
                "PUBLIC_STORAGE_OPTIONS": "[1, 2]",
            },
        )


def test_option_the_backend_does_not_accept() -> None:
    spec = spec_from_mapping(
        {
            "key": "docs",
            "type": "s3",
            "bucket": "b",
            "aws_regoin": "us-east-1",
            "aws_secret_access_key": SECRET,
        },
        source="storage.toml, storage.backends[0]",
    )
    with pytest.raises(InvalidBackendSpec) as caught:
        register_specs([spec], StorageRegistry())
    message = str(caught.value)
    assert "backend 'docs'" in message and "'aws_regoin'" in message
    assert "Valid options:" in message and "aws_region" in message
    assert "storage.toml, storage.backends[0]" in message
    assert caught.value.field == "options.aws_regoin"
    assert SECRET not in message


def test_field_that_does_not_apply_to_the_type() -> None:
    with pytest.raises(
        InvalidBackendSpec,
        match="field 'region': 'eu-west-1' does not apply "
        "to type 'gcs'. Fields for 'gcs': bucket, endpoint, prefix",
    ):
        BackendSpec(key="images", type="gcs", bucket="b", region="eu-west-1")


def test_bucket_url_of_another_store() -> None:
    with pytest.raises(InvalidBackendSpec, match="'gs://x/' is not a s3 bucket URL"):
        BackendSpec(key="docs", type="s3", bucket="gs://x/")


def test_url_of_unknown_scheme() -> None:
    with pytest.raises(InvalidBackendSpec, match="unsupported scheme 'nope://'"):
        BackendSpec(key="docs", url="nope://x/")


def test_invalid_generic_variable_name() -> None:
    with pytest.raises(InvalidBackendSpec, match="STORAGE__<KEY>__<FIELD>"):
        configure_from_env(StorageRegistry(), {"STORAGE__DOCS": "s3://x/"})


def test_invalid_boolean() -> None:
    with pytest.raises(InvalidBackendSpec, match="field 'default': 'maybe' is not a boolean"):
        configure_from_env(
            StorageRegistry(),
            {
                "STORAGE__DOCS__URL": "memory://",
                "STORAGE__DOCS__DEFAULT": "maybe",
            },
        )


def test_duplicate_keys_register_nothing(registry: StorageRegistry) -> None:
    specs = [
        BackendSpec(key="a", type="memory", source="one"),
        BackendSpec(key="a", type="memory", source="two"),
    ]
    with pytest.raises(InvalidBackendSpec, match="'a' is defined twice"):
        register_specs(specs, registry)
    assert registry.registered_backends() == []


def test_one_invalid_spec_registers_nothing(registry: StorageRegistry) -> None:
    specs = [
        BackendSpec(key="good", type="memory"),
        BackendSpec(key="bad", type="s3", bucket="b", options={"nonsense": 1}),
    ]
    with pytest.raises(InvalidBackendSpec):
        register_specs(specs, registry)
    assert registry.registered_backends() == []


def test_key_already_registered(registry: StorageRegistry) -> None:
    register_specs([BackendSpec(key="a", type="memory")], registry)
    with pytest.raises(BackendAlreadyRegistered):
        register_specs(
            [BackendSpec(key="b", type="memory"), BackendSpec(key="a", type="memory")], registry
        )
    assert registry.registered_backends() == ["a"]
    register_specs([BackendSpec(key="a", type="memory")], registry, overwrite=True)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.toml", "[[storage.backends]\nkey = ", "not valid TOML"),
        ("bad.json", "{", "not valid JSON (Expecting property name"),
        ("bad.yaml", "storage: [", "not valid YAML at line"),
        ("bad.ini", "", "unknown configuration format '.ini'; valid suffixes: .toml, .json"),
        ("empty.toml", "title = 'x'", "no storage.backends found (top-level keys: title)"),
    ],
)
def test_unreadable_config_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidConfigFile, match=re.escape(expected)):
        load_config_file(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigFile, match="cannot read the configuration file"):
        configure_from_file(tmp_path / "missing.toml")


def test_reserved_fields_are_kept_and_checked() -> None:
    spec = spec_from_mapping(
        {
            "key": "local",
            "type": "local",
            "path": "/tmp/x",
            "signing_secret": SECRET,
            "signing_base_url": "https://app.example.com/files",
            "retry": {"max_retries": 3},
            "timeout": "30",
        }
    )
    assert spec.signing_secret == SECRET
    assert spec.signing_base_url == "https://app.example.com/files"
    assert spec.retry == {"max_retries": 3} and spec.timeout == 30.0
    with pytest.raises(InvalidBackendSpec, match="field 'signing_base_url': 'ftp://x' is not"):
        BackendSpec(key="k", type="memory", signing_base_url="ftp://x")
    with pytest.raises(InvalidBackendSpec, match="field 'timeout'"):
        BackendSpec(key="k", type="memory", timeout=-1)
    with pytest.raises(InvalidBackendSpec, match="field 'retry'"):
        BackendSpec(key="k", type="memory", retry=[1])


# -- secrets ----------------------------------------------------------------------------------


def _secret_spec() -> BackendSpec:
    return spec_from_mapping(
        {
            "key": "docs",
            "url": f"s3://user:{SECRET}@bucket/?sig={SECRET}",
            "aws_secret_access_key": SECRET,
            "aws_access_key_id": SECRET,
            "azure_storage_connection_string": SECRET,
            "signing_secret": SECRET,
            "options": {"client_options": {"proxy_password": SECRET}},
        }
    )


def test_spec_repr_masks_every_secret() -> None:
    spec = _secret_spec()
    assert SECRET not in repr(spec) and SECRET not in str(spec)
    assert SECRET not in repr(spec.masked())
    assert "'aws_secret_access_key': '***'" in repr(spec)
    assert "signing_secret='***'" in repr(spec)


def test_errors_and_logs_never_contain_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigurationError) as caught:
        register_specs([_secret_spec()], StorageRegistry())
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text


def test_registration_log_shows_key_and_location_only(
    caplog: pytest.LogCaptureFixture, registry: StorageRegistry
) -> None:
    caplog.set_level(logging.INFO, logger="storeroom.config")
    register_specs(
        [
            BackendSpec(
                key="scratch",
                type="memory",
                signing_secret=SECRET,
                signing_base_url="https://app.example.com/files",
                source="test",
            )
        ],
        registry,
    )
    assert "registered storage backend 'scratch' at memory://" in caplog.text
    assert SECRET not in caplog.text


def test_secret_in_a_bad_option_value_is_redacted() -> None:
    spec = BackendSpec(
        key="docs",
        type="s3",
        bucket="bkt",
        options={"aws_secret_access_key": SECRET, "aws_access_key_id": 42},
    )
    with pytest.raises(ConfigurationError) as caught:
        spec.build()
    assert SECRET not in str(caught.value) and "docs" in str(caught.value)
    assert "aws_access_key_id='***'" in str(caught.value)


def test_secret_file_variables(tmp_path: Path, registry: StorageRegistry) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    environ = {
        "STORAGE__DOCS__URL": "s3://bucket/",
        "STORAGE__DOCS__AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "STORAGE__DOCS__AWS_SECRET_ACCESS_KEY_FILE": str(secret_file),
        "STORAGE__DOCS__AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token",
    }
    from storeroom.config import specs_from_env

    (spec,) = specs_from_env(environ)
    assert spec.options["aws_secret_access_key"] == SECRET
    assert spec.options["aws_web_identity_token_file"] == "/var/run/token"
    assert SECRET not in repr(spec)


def test_secret_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidBackendSpec, match="field 'S3_BUCKET_FILE': cannot read the file"):
        configure_from_env(
            StorageRegistry(),
            {
                "STORAGE_BACKEND": "s3",
                "S3_BUCKET_FILE": str(tmp_path / "missing"),
            },
        )
    with pytest.raises(InvalidBackendSpec, match="both S3_BUCKET and S3_BUCKET_FILE are set"):
        configure_from_env(
            StorageRegistry(),
            {
                "STORAGE_BACKEND": "s3",
                "S3_BUCKET": "b",
                "S3_BUCKET_FILE": "/x",
            },
        )


def test_masking_leaves_settings_usable(
    monkeypatch: pytest.MonkeyPatch, s3_env: Any, s3_bucket: str, round_trip: Any
) -> None:
    from pydantic import SecretStr

    spec = BackendSpec(
        key="docs",
        url=f"s3://{s3_bucket}/",
        options={
            "aws_secret_access_key": SecretStr(s3_env.secret_key),
            "aws_access_key_id": s3_env.access_key,
        },
    )
    registry = StorageRegistry()
    register_specs([spec], registry)
    round_trip("docs", registry)
