"""Credential sources for ObstoreBackend, in order, against moto's S3 server.

Which source signed a request is proven by the access key id moto received (recorded by a
proxy between obstore and moto); moto accepts any key.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from storeroom import FileObject
from storeroom.backends.obstore import ObstoreBackend
from storeroom.backends.obstore.credentials import BotocoreCredentialProvider, plan_credentials
from storeroom.errors import ConfigurationError, CredentialsNotFound
from tests.security.conftest import ALPHA, BETA, DEFAULT, AwsHome, KeyRecordingProxy
from tests.servers.moto import MotoServer

pytestmark = pytest.mark.s3

SECRETS = (ALPHA[1], BETA[1], DEFAULT[1])


def _backend(proxy: KeyRecordingProxy, bucket: str, **options: Any) -> ObstoreBackend:
    return ObstoreBackend(
        "creds",
        fs=f"s3://{bucket}/",
        aws_endpoint=proxy.endpoint,
        aws_region="us-east-1",
        aws_allow_http=True,
        retry=1,
        **options,
    )


def _stored(server: MotoServer, bucket: str, key: str) -> bytes:
    # Read with explicit keys straight from moto (a boto3 client would pick up AWS_PROFILE).
    reader = ObstoreBackend(
        "reader",
        fs=f"s3://{bucket}/",
        aws_endpoint=server.endpoint,
        aws_region=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        aws_allow_http=True,
    )
    return reader.get(key)


def _save(backend: ObstoreBackend, name: str, content: bytes) -> FileObject:
    file = FileObject(backend=backend, filename=name, content=content)
    file.save()
    return file


def test_profile_chosen_by_option_signs_the_saves(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, moto_server: MotoServer, s3_bucket: str
) -> None:
    aws_home.write_profiles(default=True)
    backend = _backend(key_proxy, s3_bucket, aws_profile="beta")
    file = _save(backend, "beta.txt", b"saved with beta")
    assert _stored(moto_server, s3_bucket, file.path) == b"saved with beta"
    assert key_proxy.access_keys and set(key_proxy.access_keys) == {BETA[0]}
    assert backend.credential_plan.source == "AWS profile 'beta' (botocore)"


def test_profile_chosen_by_aws_profile_variable(
    aws_home: AwsHome,
    key_proxy: KeyRecordingProxy,
    moto_server: MotoServer,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws_home.write_profiles(default=True)
    monkeypatch.setenv("AWS_PROFILE", "alpha")
    backend = _backend(key_proxy, s3_bucket)
    file = _save(backend, "alpha.txt", b"saved with alpha")
    assert _stored(moto_server, s3_bucket, file.path) == b"saved with alpha"
    assert set(key_proxy.access_keys) == {ALPHA[0]}


async def test_default_profile_used_when_nothing_else_is_configured(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, moto_server: MotoServer, s3_bucket: str
) -> None:
    aws_home.write_profiles(default=True)
    backend = _backend(key_proxy, s3_bucket)
    file = FileObject(backend=backend, filename="default.txt", content=b"async default")
    await file.save_async()
    assert await file.get_content_async() == b"async default"
    assert set(key_proxy.access_keys) == {DEFAULT[0]}
    assert backend.credential_plan.source == "botocore default chain"


def test_explicit_keys_win_over_environment_and_profiles(
    aws_home: AwsHome,
    key_proxy: KeyRecordingProxy,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws_home.write_profiles(default=True)
    monkeypatch.setenv("AWS_PROFILE", "alpha")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    backend = _backend(
        key_proxy,
        s3_bucket,
        aws_access_key_id="AKIAEXPLICIT0000001",
        aws_secret_access_key="explicit-secret",
    )
    _save(backend, "explicit.txt", b"x")
    assert set(key_proxy.access_keys) == {"AKIAEXPLICIT0000001"}
    assert backend.credential_plan.source == "explicit options"


def test_environment_keys_win_over_aws_profile(
    aws_home: AwsHome,
    key_proxy: KeyRecordingProxy,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws_home.write_profiles(default=True)
    monkeypatch.setenv("AWS_PROFILE", "alpha")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    backend = _backend(key_proxy, s3_bucket)
    _save(backend, "env.txt", b"x")
    assert set(key_proxy.access_keys) == {"AKIAFROMENVIRONMENT"}
    assert backend.credential_plan.provider is None  # obstore reads the variables itself


def test_profile_option_wins_over_environment_keys(
    aws_home: AwsHome,
    key_proxy: KeyRecordingProxy,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws_home.write_profiles()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    backend = _backend(key_proxy, s3_bucket, aws_profile="alpha")
    _save(backend, "opt.txt", b"x")
    assert set(key_proxy.access_keys) == {ALPHA[0]}


def test_missing_profile_fails_at_first_use_listing_the_sources(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, s3_bucket: str
) -> None:
    aws_home.write_profiles()
    backend = _backend(key_proxy, s3_bucket, aws_profile="gamma")  # building does not fail
    with pytest.raises(CredentialsNotFound) as caught:
        _save(backend, "never.txt", b"x")
    message = str(caught.value)
    assert "backend 'creds'" in message
    assert "profile 'gamma'" in message
    assert "ProfileNotFound" in message
    assert f"shared credentials file: {aws_home.credentials_file} (exists)" in message
    assert f"config file: {aws_home.config_file} (missing)" in message
    assert caught.value.sources and "explicit options: aws_profile" in caught.value.sources[0]
    for secret in SECRETS:
        assert secret not in message
    assert ALPHA[0] not in message and BETA[0] not in message
    assert key_proxy.count() == 0  # nothing was sent unsigned


async def test_nothing_found_fails_at_first_use_listing_every_source(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, s3_bucket: str
) -> None:
    backend = _backend(key_proxy, s3_bucket)
    file = FileObject(backend=backend, filename="never.txt", content=b"x")
    with pytest.raises(CredentialsNotFound) as caught:
        await file.save_async()
    message = str(caught.value)
    assert "explicit options: none given" in message
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        assert name in message
    assert f"{aws_home.credentials_file} (missing)" in message
    assert "profile 'default'" in message
    assert "instance metadata" in message
    assert "container credentials" in message


def test_secrets_never_appear_in_reprs_or_plans(aws_home: AwsHome, s3_bucket: str) -> None:
    aws_home.write_profiles()
    explicit = ObstoreBackend(
        "k",
        fs=f"s3://{s3_bucket}/",
        aws_access_key_id=ALPHA[0],
        aws_secret_access_key=ALPHA[1],
    )
    profiled = ObstoreBackend("p", fs=f"s3://{s3_bucket}/", aws_profile="beta")
    provider = profiled.credential_plan.provider
    assert isinstance(provider, BotocoreCredentialProvider)
    provider()  # loads the secrets into the provider
    shown = " ".join(
        [
            repr(explicit),
            repr(explicit.credential_plan),
            repr(profiled),
            repr(profiled.credential_plan),
            repr(provider),
            str(provider.__dict__.keys()),
        ]
    )
    for secret in SECRETS:
        assert secret not in shown


def test_expiring_credentials_are_refreshed_before_they_expire(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, s3_bucket: str
) -> None:
    calls: list[datetime] = []

    def short_lived() -> dict[str, Any]:
        calls.append(datetime.now(timezone.utc))
        return {
            "access_key_id": f"AKIASHORT{len(calls):010d}",
            "secret_access_key": "short-secret",
            "token": "session-token",
            "expires_at": datetime.now(timezone.utc) + timedelta(seconds=3),
        }

    backend = _backend(key_proxy, s3_bucket, credential_provider=short_lived)
    assert backend.credential_plan.source.startswith("explicit options")
    deadline = time.monotonic() + 10
    n = 0
    while len(set(key_proxy.access_keys)) < 2 and time.monotonic() < deadline:
        _save(backend, f"short-{n}.txt", b"x")
        n += 1
    assert len(calls) >= 2, "the provider was never asked again"
    keys = [k for k in key_proxy.access_keys if k.startswith("AKIASHORT")]
    assert len(set(keys)) >= 2 and keys == sorted(keys)


def test_long_lived_credentials_are_fetched_once(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, s3_bucket: str
) -> None:
    calls: list[int] = []

    def hourly() -> dict[str, Any]:
        calls.append(1)
        return {
            "access_key_id": "AKIAHOURLY000000001",
            "secret_access_key": "hourly-secret",
            "token": None,
            "expires_at": datetime.now(timezone.utc) + timedelta(hours=1),
        }

    backend = _backend(key_proxy, s3_bucket, credential_provider=hourly)
    for n in range(3):
        _save(backend, f"hourly-{n}.txt", b"x")
    assert len(calls) == 1
    assert set(key_proxy.access_keys) == {"AKIAHOURLY000000001"}


def test_profile_with_temporary_credentials_is_refreshed_through_botocore(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, s3_bucket: str, tmp_path: Path
) -> None:
    # credential_process is how SSO helpers and vaults hand out temporary credentials.
    counter = tmp_path / "issued"
    script = tmp_path / "issue_credentials.py"
    script.write_text(
        "import json, pathlib, datetime\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "n = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(n))\n"
        "expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=60)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': f'AKIATEMP{n:011d}',\n"
        "    'SecretAccessKey': 'temp-secret', 'SessionToken': 'temp-token',\n"
        "    'Expiration': expires.isoformat()}))\n"
    )
    aws_home.config_file.write_text(
        f"[profile temporary]\ncredential_process = {sys.executable} {script}\n"
    )
    backend = _backend(key_proxy, s3_bucket, aws_profile="temporary")
    deadline = time.monotonic() + 10
    n = 0
    while len(set(key_proxy.access_keys)) < 2 and time.monotonic() < deadline:
        _save(backend, f"temp-{n}.txt", b"x")
        n += 1
    keys = set(key_proxy.access_keys)
    assert len(keys) >= 2 and all(k.startswith("AKIATEMP") for k in keys)


def test_plan_explains_the_order_without_network_io(aws_home: AwsHome) -> None:
    plan = plan_credentials(
        "s3",
        {"aws_region": "eu-west-1"},
        environ={
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_home.credentials_file),
            "AWS_CONFIG_FILE": str(aws_home.config_file),
        },
    )
    assert plan.checked[0] == "explicit options: none given"
    assert plan.checked[1].startswith("environment: none of AWS_ACCESS_KEY_ID")
    assert any(line.startswith("shared credentials file:") for line in plan.checked)
    assert plan.resolved is False

    skip = plan_credentials("s3", {"aws_skip_signature": "true"}, environ={})
    assert skip.source == "explicit options" and skip.provider is None


def test_aws_profile_on_a_non_s3_store_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="aws_profile"):
        plan_credentials("gcs", {}, aws_profile="dev", environ={})


# -- Azure and GCS chains ----------------------------------------------------------------------


def test_azure_connection_string_is_an_explicit_source(aws_home: AwsHome) -> None:
    from tests.servers.azurite import KEY

    backend = ObstoreBackend(
        "az",
        fs="az://ctr",
        azure_storage_connection_string=(
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        ),
    )
    assert backend.credential_plan.source == "explicit options"
    assert KEY not in repr(backend) + repr(backend.credential_plan)


def test_azure_without_credentials_fails_listing_the_identity_chain(
    aws_home: AwsHome, tmp_path: Path
) -> None:
    pytest.importorskip("azure.identity")
    backend = ObstoreBackend(
        "az",
        fs="az://ctr",
        azure_storage_account_name="devstoreaccount1",
        azure_storage_endpoint="http://127.0.0.1:9/devstoreaccount1",
        azure_allow_http=True,
        retry=1,
    )
    assert backend.credential_plan.source.startswith("azure-identity DefaultAzureCredential")
    with pytest.raises(CredentialsNotFound) as caught:
        backend.put("x.txt", b"x")
    message = str(caught.value)
    assert "AZURE_STORAGE_ACCOUNT_KEY" in message and "AZURE_CLIENT_ID" in message
    assert "EnvironmentCredential" in message and "ManagedIdentityCredential" in message


def test_gcs_without_credentials_fails_listing_application_default_credentials(
    aws_home: AwsHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("google.auth")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no metadata server here
    backend = ObstoreBackend("g", fs="gs://bucket", retry=1)
    with pytest.raises(CredentialsNotFound) as caught:
        backend.put("x.txt", b"x")
    message = str(caught.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message
    assert str(tmp_path / "gcloud" / "application_default_credentials.json") in message
    assert "DefaultCredentialsError" in message


async def test_async_provider_with_a_dateutil_expiry_is_accepted(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, s3_bucket: str
) -> None:
    from dateutil.tz import tzutc

    async def from_sts() -> dict[str, Any]:
        # botocore and STS answers carry dateutil's tzutc(); obstore wants timezone.utc.
        return {
            "access_key_id": "AKIAASYNC0000000001",
            "secret_access_key": "async-secret",
            "token": "t",
            "expires_at": datetime.now(tzutc()) + timedelta(hours=1),
        }

    backend = _backend(key_proxy, s3_bucket, credential_provider=from_sts)
    file = FileObject(backend=backend, filename="async.txt", content=b"x")
    await file.save_async()
    assert set(key_proxy.access_keys) == {"AKIAASYNC0000000001"}


def test_failing_provider_is_reported_as_missing_credentials(
    aws_home: AwsHome, key_proxy: KeyRecordingProxy, s3_bucket: str
) -> None:
    def vault_down() -> dict[str, Any]:
        raise ConnectionError("vault.internal:8200 refused the connection")

    backend = _backend(key_proxy, s3_bucket, credential_provider=vault_down)
    with pytest.raises(CredentialsNotFound, match="credential_provider raised ConnectionError"):
        _save(backend, "x.txt", b"x")
    assert key_proxy.count() == 0


def test_without_botocore_profiles_are_reported_not_fatal(
    aws_home: AwsHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storeroom.backends.obstore.credentials as credentials

    monkeypatch.setattr(credentials, "_has_module", lambda name: False)
    ambient = plan_credentials("s3", {}, environ={"AWS_PROFILE": "dev"})
    assert ambient.provider is None and ambient.source == "instance metadata (obstore)"
    assert any("botocore is not installed" in line for line in ambient.checked)
    with pytest.raises(ConfigurationError, match="pip install boto3"):
        plan_credentials("s3", {}, aws_profile="dev", environ={})
