"""ObstoreBackend's option handling: what the specification passes must work."""

from __future__ import annotations

import pytest

from storeroom import ConfigurationError, ObstoreBackend
from storeroom.backends.obstore.options import (
    parse_azure_connection_string,
    split_options,
    store_kind,
)
from storeroom.masking import is_secret_option

AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def test_none_options_are_dropped_so_obstore_falls_back_to_environment() -> None:
    backend = ObstoreBackend(
        "default",
        "s3://bucket/",
        aws_access_key_id=None,
        aws_secret_access_key=None,
        aws_region="us-east-1",
    )
    assert backend.kind == "s3"
    assert backend.location == "s3://bucket/"


@pytest.mark.parametrize("value", [True, False, "true"])
def test_aws_allow_http_becomes_a_client_option(value: object) -> None:
    split = split_options("s3", {"aws_allow_http": value, "aws_region": "us-east-1"})
    assert split.client_options == {"allow_http": value}
    assert split.config == {"aws_region": "us-east-1"}
    ObstoreBackend("minio", "s3://b/", aws_allow_http=value, aws_endpoint="http://127.0.0.1:9")


def test_client_options_given_directly_are_routed() -> None:
    split = split_options(
        "gcs", {"timeout": "30s", "google_allow_http": True, "connect_timeout": "5s"}
    )
    assert split.client_options == {"timeout": "30s", "allow_http": True, "connect_timeout": "5s"}
    ObstoreBackend("g", "gs://b/", timeout="30s")


def test_unknown_option_names_it_and_lists_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        ObstoreBackend("docs", "s3://bucket/", aws_secret_acess_key="x")
    message = str(caught.value)
    assert "'aws_secret_acess_key'" in message
    assert "backend 'docs'" in message
    assert "aws_secret_access_key" in message and "aws_endpoint" in message


def test_unsupported_scheme_lists_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"ftp://.*s3://"):
        ObstoreBackend("x", "ftp://host/path")


def test_options_with_store_instance_are_rejected() -> None:
    from obstore.store import MemoryStore

    backend = ObstoreBackend("m", MemoryStore())
    assert backend.kind == "memory"
    with pytest.raises(ConfigurationError, match="store instance"):
        ObstoreBackend("m", MemoryStore(), aws_region="x")
    with pytest.raises(ConfigurationError, match="obstore store"):
        ObstoreBackend("m", object())  # type: ignore[arg-type]


def test_azure_connection_string_is_parsed() -> None:
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    )
    assert parse_azure_connection_string(conn) == {
        "account_name": "devstoreaccount1",
        "account_key": AZURITE_KEY,
        "endpoint": "http://127.0.0.1:10000/devstoreaccount1",
        "allow_http": True,
    }
    split = split_options("azure", {"azure_storage_connection_string": conn})
    assert split.client_options == {"allow_http": True}
    assert split.config["account_name"] == "devstoreaccount1"
    backend = ObstoreBackend("documents", "az://documents/", azure_storage_connection_string=conn)
    assert AZURITE_KEY not in repr(backend)


def test_azure_connection_string_variants() -> None:
    assert parse_azure_connection_string("UseDevelopmentStorage=true")["use_emulator"] is True
    parsed = parse_azure_connection_string(
        "AccountName=acct;SharedAccessSignature=sv=2020&sig=abc;EndpointSuffix=core.windows.net"
    )
    assert parsed["sas_key"] == "sv=2020&sig=abc"
    assert parsed["endpoint"] == "https://acct.blob.core.windows.net"
    with pytest.raises(ConfigurationError, match="AccountName"):
        parse_azure_connection_string("AccountKey=abc")
    with pytest.raises(ConfigurationError, match="malformed") as caught:
        parse_azure_connection_string("AccountName=a;garbage-secret")
    assert "garbage-secret" not in str(caught.value)


def test_url_credentials_never_reach_location_or_repr() -> None:
    backend = ObstoreBackend("h", "https://user:hunter2@example.com/files?sig=topsecret")
    assert "hunter2" not in repr(backend) and "topsecret" not in repr(backend)
    assert backend.location == "https://example.com/files"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("s3://b/", "s3"),
        ("s3a://b", "s3"),
        ("gs://b/", "gcs"),
        ("az://c/", "azure"),
        ("abfs://c@a.dfs.core.windows.net/", "azure"),
        ("file:///tmp", "local"),
        ("memory://", "memory"),
    ],
)
def test_store_kind(url: str, kind: str) -> None:
    assert store_kind(url) == kind


def test_secret_option_names() -> None:
    for name in (
        "aws_secret_access_key",
        "aws_access_key_id",
        "azure_storage_account_key",
        "azure_storage_connection_string",
        "google_service_account",
        "aws_session_token",
    ):
        assert is_secret_option(name), name
    for name in ("aws_region", "aws_endpoint", "bucket", "timeout"):
        assert not is_secret_option(name), name


def test_local_directory_is_created(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "does" / "not" / "exist"
    backend = ObstoreBackend("local", f"file://{target}")
    backend.put("nested/deeper/file.txt", b"x")
    assert (target / "nested" / "deeper" / "file.txt").read_bytes() == b"x"


@pytest.mark.parametrize("url", ["file://./data/up", "file:data/up", "file://data/up"])
def test_relative_file_urls_resolve_against_the_working_directory(
    url: str,
    tmp_path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = ObstoreBackend("rel", url)
    assert backend.location == f"file://{tmp_path}/data/up"
    backend.put("x.txt", b"1")
    assert (tmp_path / "data" / "up" / "x.txt").read_bytes() == b"1"
