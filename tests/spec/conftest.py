"""Fixtures for running the specification's snippets against real servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storeroom import storages
from tests.servers.moto import MotoServer


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """Point every AWS client (obstore, boto3, s3fs) at the moto server via the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", moto_server.region)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    yield moto_server
    storages._backends.clear()
