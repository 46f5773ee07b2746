"""Azurite, the Azure Blob Storage emulator (npm package ``azurite``), on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class AzuriteServer:
    """A running Azurite blob service."""

    endpoint: str
    account_name: str = ACCOUNT
    account_key: str = KEY
    _process: Any = field(default=None, repr=False)
    _workdir: str | None = field(default=None, repr=False)

    @property
    def connection_string(self) -> str:
        """An Azure storage connection string for this server."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.endpoint};"
        )

    def obstore_options(self) -> dict[str, Any]:
        """The options an ``ObstoreBackend`` on ``az://`` needs to reach this server."""
        return {"azure_storage_connection_string": self.connection_string}

    def create_container(self, name: str) -> str:
        """Create container ``name`` (no error if it exists) and return the name."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.connection_string)
        try:
            client.create_container(name)
        except ResourceExistsError:
            pass
        return name

    def stop(self) -> None:
        """Stop the node process and remove its working directory."""
        stop_process(self._process)
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)


def azurite_entry() -> Path | None:
    """Path of Azurite's blob server script, when node_modules has it."""
    entry = ROOT / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
    return entry if entry.exists() else None


def start_azurite() -> AzuriteServer:
    """Start Azurite's blob service in memory on a free port; raise RuntimeError if it can't."""
    node = shutil.which("node")
    entry = azurite_entry()
    if node is None:
        raise RuntimeError("node is not installed (needed to run Azurite)")
    if entry is None:
        raise RuntimeError("node_modules/azurite is missing; run `npm ci` (make venv does)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    process = subprocess.Popen(
        [
            node,
            str(entry),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--silent",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = AzuriteServer(
        endpoint=f"http://127.0.0.1:{port}/{ACCOUNT}", _process=process, _workdir=workdir
    )
    if not wait_for_port(port, 30, alive=process):
        error = b""
        if process.poll() is not None and process.stderr is not None:
            error = process.stderr.read()
        server.stop()
        raise RuntimeError(f"Azurite did not start on port {port}: {error.decode()[-500:]}")
    return server
