"""One masking function for URLs: options, error messages, events, logs and the CLI."""

from __future__ import annotations

import json
import logging

import pytest

from storeroom import ObstoreBackend, events
from storeroom.errors import BackendError
from storeroom.masking import mask_text, mask_url, masked_mapping

PASSWORD = "Sup3rSecretPass"
ENDPOINT = f"http://minio-user:{PASSWORD}@127.0.0.1:9"


def test_every_url_valued_option_is_masked_whatever_its_name() -> None:
    shown = masked_mapping(
        {
            "aws_endpoint": ENDPOINT,
            "proxy_url": f"http://u:{PASSWORD}@proxy:3128",
            "client_options": {"proxy_url": f"https://:{PASSWORD}@p"},
            "google_service_account": "/keys/sa.json",
            "aws_region": "eu-west-1",
        }
    )
    assert PASSWORD not in json.dumps(shown)
    assert shown["aws_endpoint"] == "http://minio-user:***@127.0.0.1:9"
    assert shown["aws_region"] == "eu-west-1"


def test_mask_text_masks_every_url_in_a_message() -> None:
    text = (
        f"GET {ENDPOINT}/bkt/a.txt failed; see https://x.blob.core.windows.net/c/b?sv=1"
        "&sig=SIGNATURE123 and http://plain.example/path"
    )
    masked = mask_text(text)
    assert PASSWORD not in masked and "SIGNATURE123" not in masked
    assert "http://plain.example/path" in masked
    assert mask_url("not a url") == "not a url"


def test_backend_errors_events_and_logs_never_show_the_endpoint_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ObstoreBackend(
        "s3",
        "s3://bkt",
        aws_endpoint=ENDPOINT,
        aws_access_key_id="a",
        aws_secret_access_key="b",
        aws_region="us-east-1",
        aws_allow_http=True,
        retry=1,
    )
    seen: list[events.StorageEvent] = []
    events.subscribe(seen.append)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(BackendError) as caught:
            backend.get("x.txt")
    finally:
        events.unsubscribe(seen.append)
    assert "127.0.0.1:9" in str(caught.value)  # the endpoint is still named
    assert PASSWORD not in str(caught.value)
    assert seen and all(PASSWORD not in (event.error or "") for event in seen)
    assert PASSWORD not in caplog.text


def test_cli_backends_masks_url_valued_options(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from storeroom.cli import cli

    config = tmp_path / "storage.toml"
    config.write_text(
        '[backends.s3]\nurl = "s3://bkt"\n'
        f'options = {{ aws_endpoint = "{ENDPOINT}", aws_region = "us-east-1", '
        'aws_access_key_id = "AKIDEXAMPLE", aws_secret_access_key = "wJalrXUtnFEMIEXAMPLE" }\n'
    )
    for args in (
        ["--config", str(config), "backends"],
        ["--config", str(config), "backends", "--json"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert PASSWORD not in result.output and "wJalrXUtnFEMIEXAMPLE" not in result.output
        assert "127.0.0.1:9" in result.output
