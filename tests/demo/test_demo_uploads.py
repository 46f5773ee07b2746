"""The demo's upload API as an attacker drives it: replays, lies about the type, restarts.

The demo runs as its own process (as in the browser test), so a restart is a real one and
its models stay out of this test process's metadata.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


class Demo:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("STORAGE__", "STORAGE_BACKEND", "DATABASE_URL"))
        }
        self.env.update(
            DEMO_PORT=str(self.port),
            DEMO_DATA_DIR=str(data),
            DEMO_MAX_UPLOAD_MB="1",
            PYTHONPATH=f"{ROOT}/src",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storeroom.demo"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_for_port(self.port, 30, alive=self.process):
            pytest.fail(f"demo did not start: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def start_upload(self, name: str, data: bytes, content_type: str) -> dict[str, Any]:
        reply = httpx.post(
            f"{self.url}/api/uploads",
            json={"name": name, "size": len(data), "content_type": content_type},
        )
        assert reply.status_code == 201, reply.text
        return dict(reply.json())

    def put(self, target: dict[str, Any], data: bytes) -> int:
        return httpx.request(
            target["method"], target["upload_url"], content=data, headers=target["headers"]
        ).status_code

    def complete(self, target: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}/api/uploads/{target['upload_id']}/complete")

    def stored(self) -> list[Path]:
        return [p for p in (self.data / "uploads").rglob("*") if p.is_file()]

    def stored_once_deletes_ran(self, seconds: float = 30) -> list[Path]:
        """What is stored once the deletes that follow a commit had time to run.

        They run in the background after the commit (docs/models.md), so right after the
        response they may not have finished; wait for the store to settle, bounded.
        """
        deadline = time.monotonic() + seconds
        while (found := self.stored()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path / "data")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_replayed_upload_and_second_completion_are_refused(demo: Demo) -> None:
    target = demo.start_upload("a.png", PNG, "image/png")
    assert demo.put(target, PNG) == 200
    done = demo.complete(target)
    assert done.status_code == 201 and done.json()["size"] == len(PNG)
    assert demo.put(target, b"\x89PNG replaced") == 409
    assert demo.complete(target).status_code == 404
    files = httpx.get(f"{demo.url}/api/files").json()
    assert [f["size"] for f in files] == [len(PNG)]
    httpx.delete(f"{demo.url}/api/files/{files[0]['id']}")
    assert demo.stored_once_deletes_ran() == []
    # Within the URL's lifetime a replay can recreate an object no row references; the
    # expiry sweep (which `storeroom gc` runs) removes it.
    demo.put(target, PNG)
    demo.stop()
    sweep = subprocess.run(
        [sys.executable, "-c", _SWEEP, str(demo.data)],
        env=demo.env,
        capture_output=True,
        timeout=120,
    )
    assert sweep.stdout.strip() == b"1", sweep.stderr.decode()
    assert demo.stored() == []


_SWEEP = """
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from storeroom import uploads
from storeroom.demo.app import configure_storage
from storeroom.demo.settings import DemoSettings

settings = DemoSettings.from_env()
configure_storage(settings)
engine = create_engine(f"sqlite:///{Path(sys.argv[1]) / 'demo.db'}")
with Session(engine) as session:
    later = datetime.now(timezone.utc) + timedelta(days=1)
    print(uploads.remove_expired(session, now=later))
    session.commit()
"""


def test_html_declared_as_an_image_is_refused_and_removed(demo: Demo) -> None:
    page = b"<!doctype html><script>alert(1)</script>"
    target = demo.start_upload("cat.png", page, "image/png")
    assert demo.put(target, page) == 200
    done = demo.complete(target)
    assert done.status_code == 415 and "text/html" in done.json()["detail"]
    assert demo.stored() == []


def test_a_pending_upload_survives_a_restart(demo: Demo) -> None:
    target = demo.start_upload("a.png", PNG, "image/png")
    assert demo.put(target, PNG) == 200
    demo.stop()
    demo.start()
    done = demo.complete(target)
    assert done.status_code == 201, done.text
