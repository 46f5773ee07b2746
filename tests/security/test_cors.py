"""CORS: rules, preflight answers for the HMAC handler, and bucket CORS on moto and Azurite."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from storeroom import storages
from storeroom.backends.obstore import ObstoreBackend
from storeroom.backends.obstore.bucket_cors import apply_bucket_cors, get_bucket_cors
from storeroom.cli.cors import cors
from storeroom.cors import CorsRules, preflight_headers, response_headers
from storeroom.errors import ConfigurationError
from tests.security.conftest import ALPHA, AwsHome
from tests.servers.azurite import AzuriteServer
from tests.servers.moto import MotoServer

APP = "https://app.example.com"
SPEC_RULE = {
    "AllowedOrigins": [APP],
    "AllowedMethods": ["GET", "PUT", "POST"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag"],
    "MaxAgeSeconds": 3000,
}


# -- rules ------------------------------------------------------------------------------------


def test_default_rule_is_the_specifications_direct_upload_rule() -> None:
    assert CorsRules(allowed_origins=(APP,)).to_s3() == SPEC_RULE
    assert CorsRules.from_s3(SPEC_RULE) == CorsRules(allowed_origins=(APP,))


def test_rules_normalise_and_validate() -> None:
    rule = CorsRules(allowed_origins=APP, allowed_methods=["get", "put"])  # type: ignore[arg-type]
    assert rule.allowed_origins == (APP,) and rule.allowed_methods == ("GET", "PUT")
    with pytest.raises(ConfigurationError, match="at least one allowed origin"):
        CorsRules(allowed_origins=())
    with pytest.raises(ConfigurationError, match="PATCH"):
        CorsRules(allowed_origins=(APP,), allowed_methods=("PATCH",))
    with pytest.raises(ConfigurationError, match="max age"):
        CorsRules(allowed_origins=(APP,), max_age_seconds=-1)
    with pytest.raises(ConfigurationError, match="more than one"):
        CorsRules(allowed_origins=("https://*.*.example.com",))


def test_gcs_and_azure_shapes() -> None:
    rule = CorsRules(allowed_origins=(APP,))
    assert rule.to_gcs() == {
        "origin": [APP],
        "method": ["GET", "PUT", "POST"],
        "responseHeader": ["ETag"],
        "maxAgeSeconds": 3000,
    }
    assert rule.to_azure()["max_age_in_seconds"] == 3000


# -- preflight for the HMAC signed-URL handler ----------------------------------------------------


def test_preflight_for_a_configured_origin_is_answered() -> None:
    headers = preflight_headers(
        CorsRules(allowed_origins=(APP,)), APP, "PUT", "Content-Type, X-Upload-Id"
    )
    assert headers == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Allow-Methods": "GET, PUT, POST",
        "Access-Control-Allow-Headers": "Content-Type, X-Upload-Id",
        "Access-Control-Expose-Headers": "ETag",
        "Access-Control-Max-Age": "3000",
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }


@pytest.mark.parametrize(
    ("origin", "method", "request_headers"),
    [
        ("https://evil.example.net", "PUT", None),
        (APP, "DELETE", None),
        (None, "PUT", None),
        (APP, None, None),
        (APP, "PUT", ["content-type", "x-secret-header"]),
    ],
)
def test_preflight_refused_for_other_origins_methods_and_headers(
    origin: str | None, method: str | None, request_headers: list[str] | None
) -> None:
    rule = CorsRules(allowed_origins=(APP,), allowed_headers=("Content-Type", "x-amz-*"))
    assert preflight_headers(rule, origin, method, request_headers) is None


def test_preflight_wildcards_and_first_matching_rule() -> None:
    rules = [
        CorsRules(
            allowed_origins=("https://*.example.com",),
            allowed_methods=("GET",),
            allowed_headers=("x-amz-*",),
            max_age_seconds=10,
        ),
        CorsRules(allowed_origins=("*",), allowed_methods=("GET", "PUT"), expose_headers=()),
    ]
    first = preflight_headers(rules, "https://eu.example.com", "GET", ["X-Amz-Date"])
    assert first is not None
    assert first["Access-Control-Allow-Origin"] == "https://eu.example.com"
    assert first["Access-Control-Max-Age"] == "10"
    second = preflight_headers(rules, "https://other.org", "PUT")
    assert second is not None
    assert second["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Expose-Headers" not in second
    assert "Access-Control-Allow-Headers" not in second


def test_response_headers_expose_etag_to_allowed_origins_only() -> None:
    rule = CorsRules(allowed_origins=(APP,))
    assert response_headers(rule, APP, "PUT") == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Expose-Headers": "ETag",
        "Vary": "Origin",
    }
    assert response_headers(rule, "https://evil.example.net", "PUT") == {}
    assert response_headers(rule, None, "GET") == {}


# -- S3 bucket CORS (moto) -------------------------------------------------------------------------


def _s3(server: MotoServer, bucket: str, **options: object) -> ObstoreBackend:
    credentials = {
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
    }
    credentials.update(options)  # type: ignore[arg-type]
    return ObstoreBackend(
        "uploads",
        fs=f"s3://{bucket}/",
        aws_endpoint=server.endpoint,
        aws_region=server.region,
        aws_allow_http=True,
        **credentials,
    )


@pytest.mark.s3
def test_s3_bucket_cors_applied_and_read_back(moto_server: MotoServer, s3_bucket: str) -> None:
    backend = _s3(moto_server, s3_bucket)
    assert get_bucket_cors(backend) == []
    apply_bucket_cors(backend, CorsRules(allowed_origins=(APP,)))
    raw = moto_server.client().get_bucket_cors(Bucket=s3_bucket)["CORSRules"]
    assert [{k: v for k, v in rule.items() if k != "ID"} for rule in raw] == [SPEC_RULE]
    assert get_bucket_cors(backend) == [CorsRules(allowed_origins=(APP,))]

    two = [
        CorsRules(allowed_origins=(APP,)),
        CorsRules(allowed_origins=("*",), allowed_methods=("GET",), max_age_seconds=60),
    ]
    apply_bucket_cors(backend, two)
    assert get_bucket_cors(backend) == two


@pytest.mark.s3
def test_s3_bucket_cors_uses_the_backends_profile(
    aws_home: AwsHome, moto_server: MotoServer, s3_bucket: str
) -> None:
    aws_home.write_profiles()
    backend = ObstoreBackend(
        "profiled",
        fs=f"s3://{s3_bucket}/",
        aws_endpoint=moto_server.endpoint,
        aws_region=moto_server.region,
        aws_allow_http=True,
        aws_profile="alpha",
    )
    apply_bucket_cors(backend, CorsRules(allowed_origins=(APP,)))
    assert get_bucket_cors(backend)[0].allowed_origins == (APP,)
    assert ALPHA[1] not in repr(backend)


def test_bucket_cors_refused_for_stores_without_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="signed-URL handler"):
        get_bucket_cors(ObstoreBackend("mem", fs="memory://"))
    gcs = ObstoreBackend("g", fs="gs://bucket", google_skip_signature=True)
    with pytest.raises(ConfigurationError, match="gcloud storage buckets update"):
        apply_bucket_cors(gcs, CorsRules(allowed_origins=(APP,)))
    with pytest.raises(ConfigurationError, match="at least one"):
        apply_bucket_cors(ObstoreBackend("mem", fs="memory://"), [])


# -- Azure (Azurite) -------------------------------------------------------------------------------


@pytest.mark.azure
def test_azure_account_cors_applied_read_back_and_answered(
    azurite_server: AzuriteServer, azure_container: str
) -> None:
    backend = ObstoreBackend(
        "az",
        fs=f"az://{azure_container}",
        azure_storage_connection_string=azurite_server.connection_string,
    )
    rule = CorsRules(allowed_origins=(APP,))
    try:
        apply_bucket_cors(backend, rule)
        assert get_bucket_cors(backend) == [rule]
        request = urllib.request.Request(
            f"{azurite_server.endpoint}/{azure_container}/upload.bin",
            method="OPTIONS",
            headers={"Origin": APP, "Access-Control-Request-Method": "PUT"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.headers["Access-Control-Allow-Origin"] == APP
            assert answer.headers["Access-Control-Max-Age"] == "3000"
    finally:
        # Azure CORS is account-wide: leave the shared emulator as other tests expect it.
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
        service.set_service_properties(cors=[])


# -- the `storeroom cors` commands -----------------------------------------------------------------


@pytest.mark.s3
def test_cli_apply_then_show_for_a_registered_backend(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    storages.register_backend(_s3(moto_server, s3_bucket))
    runner = CliRunner()
    applied = runner.invoke(
        cors,
        [
            "apply",
            "uploads",
            "--origin",
            APP,
            "--origin",
            "https://admin.example.com",
            "--method",
            "GET",
            "--method",
            "PUT",
            "--max-age",
            "600",
        ],
    )
    assert applied.exit_code == 0, applied.output
    shown = runner.invoke(cors, ["show", "uploads"])
    assert shown.exit_code == 0, shown.output
    rules = json.loads(shown.output)["CORSRules"]
    assert rules == [
        {
            "AllowedOrigins": [APP, "https://admin.example.com"],
            "AllowedMethods": ["GET", "PUT"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 600,
        }
    ]
    assert json.loads(applied.output) == json.loads(shown.output)


@pytest.mark.s3
def test_cli_accepts_a_url_with_credentials_from_the_environment(
    aws_home: AwsHome, moto_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.secret_key)
    monkeypatch.setenv("AWS_REGION", moto_server.region)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    result = CliRunner().invoke(cors, ["apply", f"s3://{s3_bucket}", "--origin", APP])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"CORSRules": [SPEC_RULE]}


def test_cli_reports_an_unknown_backend_and_a_bad_method() -> None:
    runner = CliRunner()
    missing = runner.invoke(cors, ["show", "nope"])
    assert missing.exit_code == 2 and "backend 'nope' is not configured" in missing.output
    bad = runner.invoke(cors, ["apply", "memory://", "--origin", APP, "--method", "PATCH"])
    assert bad.exit_code == 2 and "PATCH" in bad.output


def test_cli_finds_backends_through_the_shared_context(tmp_path: Path) -> None:
    from storeroom.cli import main

    config = tmp_path / "storage.toml"
    config.write_text(f'[[storage.backends]]\nkey = "disk"\ntype = "local"\npath = "{tmp_path}"\n')
    with pytest.raises(SystemExit) as missing:
        main(["--config", str(config), "cors", "show", "nope"])
    assert missing.value.code == 2
    with pytest.raises(SystemExit) as unsupported:
        main(["--config", str(config), "cors", "show", "disk"])
    assert unsupported.value.code == 2  # local disk has no bucket CORS: one clear line
