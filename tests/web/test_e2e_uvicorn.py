"""End to end over real HTTP: uvicorn on 127.0.0.1 serving signed URLs for local disk.

Sign a PUT, upload 50 MiB with a streaming HTTP client, sign a GET, download and compare.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storeroom import FileObject, StorageRegistry, checksums
from storeroom.config import configure_from_env
from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
SECRET = "e2e-secret-0123456789abcdef-xyz"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = {
        "STORAGE__UPLOADS__URL": f"file://{tmp_path}/store",
        "STORAGE__UPLOADS__SIGNING_SECRET": SECRET,
        "STORAGE__UPLOADS__SIGNING_BASE_URL": f"http://127.0.0.1:{port}/files",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.web.e2e_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": f"{ROOT}/src:{ROOT}"},
        stderr=subprocess.PIPE,
    )
    try:
        if not wait_for_port(port, 30, alive=process):
            error = process.stderr.read().decode() if process.poll() is not None else ""
            pytest.fail(f"uvicorn did not start: {error[-2000:]}")
        yield f"http://127.0.0.1:{port}", env
    finally:
        process.terminate()
        process.wait(timeout=10)


def _chunks(total: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"seed").digest() * (MiB // 32)
    sent = 0
    while sent < total:
        piece = block[: min(len(block), total - sent)]
        sent += len(piece)
        yield piece


def test_50_mib_upload_and_download_through_signed_urls(
    server: tuple[str, dict[str, str]],
) -> None:
    _base, env = server
    registry = StorageRegistry()
    configure_from_env(registry, env)
    size = 50 * MiB
    expected = hashlib.sha256(b"".join(_chunks(size))).hexdigest()

    target = FileObject(
        backend="uploads",
        filename="video.bin",
        content_type="application/octet-stream",
        registry=registry,
    )
    put_url = target.sign(expires_in=300, for_upload=True)
    with httpx.Client(timeout=120) as client:
        reply = client.put(
            put_url, content=_chunks(size), headers={"Content-Type": "application/octet-stream"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["checksum"] == checksums.digest(
            checksums.DEFAULT_ALGORITHM, b"".join(_chunks(size))
        )

        get_url = target.sign(expires_in=300)
        digest, received = hashlib.sha256(), 0
        with client.stream("GET", get_url) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                digest.update(chunk)
                received += len(chunk)
        assert received == size and digest.hexdigest() == expected

        tampered = client.get(get_url.replace("method=GET", "method=PUT"))
        assert tampered.status_code == 403
