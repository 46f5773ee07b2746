"""The demo's upload API as an attacker drives it: replays, lies about the type, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from storeroom import storages
from storeroom.demo.app import create_app
from storeroom.demo.settings import DemoSettings

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DemoSettings:
    for name in list(__import__("os").environ):
        if name.startswith(("STORAGE__", "STORAGE_BACKEND")):
            monkeypatch.delenv(name)
    return DemoSettings(data_dir=tmp_path, host="127.0.0.1", port=8000,
                        database_url=f"sqlite+aiosqlite:///{tmp_path}/demo.db",
                        max_upload_bytes=1 << 20)


def _client(settings: DemoSettings) -> Any:
    from litestar.testing import TestClient

    return TestClient(create_app(settings))


def _start(client: Any, name: str, data: bytes, content_type: str) -> dict[str, Any]:
    reply = client.post("/api/uploads", json={"name": name, "size": len(data),
                                              "content_type": content_type})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def _put(client: Any, target: dict[str, Any], data: bytes) -> int:
    url = urlsplit(target["upload_url"])
    return int(client.request(target["method"], f"{url.path}?{url.query}", content=data,
                              headers=target["headers"]).status_code)


def test_replayed_upload_and_second_completion_are_refused(settings: DemoSettings) -> None:
    with _client(settings) as client:
        target = _start(client, "a.png", PNG, "image/png")
        assert _put(client, target, PNG) == 200
        done = client.post(f"/api/uploads/{target['upload_id']}/complete")
        assert done.status_code == 201 and done.json()["size"] == len(PNG)
        assert _put(client, target, b"\x89PNG replaced") == 409
        again = client.post(f"/api/uploads/{target['upload_id']}/complete")
        assert again.status_code == 404
        files = client.get("/api/files").json()
        assert [f["size"] for f in files] == [len(PNG)]
        client.delete(f"/api/files/{files[0]['id']}")
        # After the row and its file are gone, a replay within the URL's lifetime can
        # recreate an object no row references; expiry removes it.
        _put(client, target, PNG)
    storages._backends.clear()
    _remove_expired(settings)
    assert not [p for p in (settings.data_dir / "uploads").rglob("*") if p.is_file()]


def _remove_expired(settings: DemoSettings) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from storeroom import uploads
    from storeroom.demo.app import configure_storage

    configure_storage(settings)
    engine = create_engine(f"sqlite:///{settings.data_dir}/demo.db")
    with Session(engine) as session:
        later = datetime.now(timezone.utc) + timedelta(days=1)
        assert uploads.remove_expired(session, now=later) == 1
        session.commit()
    engine.dispose()
    storages._backends.clear()


def test_html_declared_as_an_image_is_refused_and_removed(settings: DemoSettings) -> None:
    page = b"<!doctype html><script>alert(1)</script>"
    with _client(settings) as client:
        target = _start(client, "cat.png", page, "image/png")
        assert _put(client, target, page) == 200
        done = client.post(f"/api/uploads/{target['upload_id']}/complete")
        assert done.status_code == 415 and "text/html" in done.json()["detail"]
        assert not [p for p in (settings.data_dir / "uploads").rglob("*") if p.is_file()]
    storages._backends.clear()


def test_a_pending_upload_survives_a_restart(settings: DemoSettings) -> None:
    with _client(settings) as client:
        target = _start(client, "a.png", PNG, "image/png")
        assert _put(client, target, PNG) == 200
    storages._backends.clear()
    with _client(settings) as restarted:
        done = restarted.post(f"/api/uploads/{target['upload_id']}/complete")
        assert done.status_code == 201, done.text
    storages._backends.clear()
