"""Fixtures for the credential tests: a clean environment with a temporary HOME, and a proxy
that records which access key signed each request."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.servers.moto import MotoServer
from tests.servers.proxy import RecordingProxy

ALPHA = ("AKIAALPHA0000000001", "alpha-secret-value-do-not-print")
BETA = ("AKIABETA00000000002", "beta-secret-value-do-not-print")
DEFAULT = ("AKIADEFAULT00000003", "default-secret-value-do-not-print")

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


@dataclass
class KeyRecordingProxy(RecordingProxy):
    """A RecordingProxy that also records the access key id of each signed request."""

    access_keys: list[str] = field(default_factory=list)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler()
        proxy = self

        class Handler(base):  # type: ignore[valid-type,misc]
            def _forward(self) -> None:
                match = _CREDENTIAL.search(self.headers.get("Authorization", ""))
                if match:
                    with proxy._lock:
                        proxy.access_keys.append(match.group(1))
                super()._forward()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler


@dataclass
class AwsHome:
    """A temporary HOME with ~/.aws/credentials and ~/.aws/config."""

    home: Path
    credentials_file: Path
    config_file: Path

    def write_profiles(self, *, default: bool = False) -> None:
        """Profiles ``alpha`` and ``beta`` (and ``default`` when asked)."""
        sections = []
        if default:
            sections.append(
                f"[default]\naws_access_key_id = {DEFAULT[0]}\n"
                f"aws_secret_access_key = {DEFAULT[1]}\n"
            )
        sections.append(
            f"[alpha]\naws_access_key_id = {ALPHA[0]}\naws_secret_access_key = {ALPHA[1]}\n"
        )
        sections.append(
            f"[beta]\naws_access_key_id = {BETA[0]}\naws_secret_access_key = {BETA[1]}\n"
        )
        self.credentials_file.write_text("\n".join(sections))


@pytest.fixture
def aws_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AwsHome:
    """No AWS_* variables, HOME in a temp dir, instance metadata lookups disabled."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "AZURE_", "GOOGLE_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    credentials = home / ".aws" / "credentials"
    config = home / ".aws" / "config"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    # Keeps botocore's chain from waiting on an EC2 metadata service that is not there.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return AwsHome(home, credentials, config)


@pytest.fixture
def key_proxy(moto_server: MotoServer) -> Iterator[KeyRecordingProxy]:
    """A proxy in front of moto that records the access key of every request."""
    proxy = KeyRecordingProxy(moto_server.endpoint).start()
    yield proxy
    proxy.stop()
