"""The demo's settings, from the environment with embedded defaults."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ALLOWED_TYPES = (
    "image/",
    "text/",
    "application/pdf",
    "application/json",
    "application/zip",
    "application/octet-stream",
    "video/",
    "audio/",
)
#: The same, as upload-session limits (checked against the type sniffed from the bytes).
ALLOWED_PATTERNS = tuple(t + "*" if t.endswith("/") else t for t in ALLOWED_TYPES)


@dataclass(frozen=True)
class DemoSettings:
    """Where the demo keeps its data and how it is reached."""

    data_dir: Path
    host: str
    port: int
    database_url: str
    max_upload_bytes: int

    @property
    def base_url(self) -> str:
        """The address browsers use."""
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls) -> DemoSettings:
        """Read DEMO_DATA_DIR, DEMO_HOST, DEMO_PORT, DATABASE_URL, DEMO_MAX_UPLOAD_MB."""
        data_dir = Path(os.environ.get("DEMO_DATA_DIR", "data")).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            data_dir=data_dir,
            host=os.environ.get("DEMO_HOST", "127.0.0.1"),
            port=int(os.environ.get("DEMO_PORT", "8000")),
            database_url=os.environ.get(
                "DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'demo.db'}"
            ),
            max_upload_bytes=int(float(os.environ.get("DEMO_MAX_UPLOAD_MB", "512")) * 2**20),
        )

    def signing_secret(self) -> str:
        """A secret kept in the data folder (created once), unless STOREROOM_SIGNING_SECRET."""
        given = os.environ.get("STOREROOM_SIGNING_SECRET")
        if given:
            return given
        path = self.data_dir / ".signing-secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()


def type_allowed(content_type: str) -> bool:
    """Whether the demo accepts files of ``content_type``."""
    return any(content_type.startswith(prefix) for prefix in ALLOWED_TYPES)
