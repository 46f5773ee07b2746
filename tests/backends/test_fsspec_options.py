"""FSSpecBackend passes every filesystem option through, including names it uses itself."""

from __future__ import annotations

import pytest

from storeroom.backends.fsspec import FSSpecBackend
from storeroom.errors import ConfigurationError


@pytest.mark.s3
def test_s3fs_key_option_reaches_the_filesystem(moto_server, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    backend = FSSpecBackend(
        "media",
        "s3",
        prefix=f"{s3_bucket}/media",
        skip_instance_cache=True,
        storage_options={
            "key": moto_server.access_key,
            "secret": moto_server.secret_key,
            "endpoint_url": moto_server.endpoint,
            "client_kwargs": {"region_name": moto_server.region},
        },
    )
    assert backend.key == "media"
    assert backend.fs.key == moto_server.access_key
    backend.put("a.txt", b"hello")
    assert backend.get("a.txt") == b"hello"


def test_the_same_option_twice_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="auto_mkdir"):
        FSSpecBackend("x", "file", auto_mkdir=True, storage_options={"auto_mkdir": False})


def test_storage_options_must_be_a_mapping() -> None:
    with pytest.raises(ConfigurationError, match="mapping"):
        FSSpecBackend("x", "memory", storage_options=["key"])  # type: ignore[arg-type]


def test_keyword_options_still_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = FSSpecBackend("x", "file", prefix=str(tmp_path), auto_mkdir=True)
    backend.put("d/e.txt", b"x")
    assert (tmp_path / "d" / "e.txt").read_bytes() == b"x"
