"""obstore's GCS store against fake-gcs-server: everything but uploads.

fake-gcs-server rejects obstore's XML-API uploads (see tests/servers/gcs.py), so objects are
put there through the emulator's JSON API and storeroom reads, ranges, inspects, lists and
deletes them through obstore. Uploads through GCS are covered by the gcsfs backend in the
behavioural suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storeroom import FileObject, ObjectNotFound, ObstoreBackend
from tests.servers.gcs import FakeGcsServer

pytestmark = pytest.mark.gcs


@pytest.fixture
def gcs_backend(fake_gcs_server: FakeGcsServer, gcs_bucket: str, tmp_path: Path) -> ObstoreBackend:
    fake_gcs_server.upload(gcs_bucket, "docs/a.txt", b"hello from gcs", "text/plain")
    fake_gcs_server.upload(gcs_bucket, "docs/b.bin", bytes(range(256)), "application/octet-stream")
    fake_gcs_server.upload(gcs_bucket, "other/c.txt", b"c", "text/plain")
    return ObstoreBackend(
        "images",
        f"gs://{gcs_bucket}/",
        google_service_account=str(fake_gcs_server.service_account(tmp_path)),
        google_allow_http=True,
    )


def test_read_range_head_list_and_delete(gcs_backend: ObstoreBackend) -> None:
    assert gcs_backend.get("docs/a.txt") == b"hello from gcs"
    assert gcs_backend.get("docs/b.bin", start=10, end=20) == bytes(range(10, 20))
    info = gcs_backend.head("docs/a.txt")
    assert info.size == 14
    assert info.content_type == "text/plain"
    assert sorted(i.path for i in gcs_backend.list("docs")) == ["docs/a.txt", "docs/b.bin"]
    gcs_backend.delete("other/c.txt")
    assert not gcs_backend.exists("other/c.txt")
    with pytest.raises(ObjectNotFound):
        gcs_backend.get("docs/missing")


async def test_file_object_reads_async(gcs_backend: ObstoreBackend) -> None:
    f = FileObject(backend=gcs_backend, filename="a.txt", path="docs/a.txt")
    await f.refresh_async()
    assert f.size == 14
    assert await f.get_content_async() == b"hello from gcs"
    assert [c async for c in await gcs_backend.stream_async("docs/b.bin", start=250)] == [
        bytes(range(250, 256))
    ]


def test_gcs_signs_v4_urls_with_a_service_account_key(tmp_path: Path) -> None:
    """Signing happens locally with the service account's RSA key (no emulator verifies it)."""
    import json
    from urllib.parse import parse_qs, urlsplit

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = tmp_path / "sa.json"
    account.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "signer@example.iam.gserviceaccount.com",
                "private_key": pem,
                "private_key_id": "k1",
                "disable_oauth": False,
            }
        )
    )
    backend = ObstoreBackend("images", "gs://product-images/", google_service_account=str(account))
    download = urlsplit(backend.sign("a/b.png", expires_in=300))
    upload = urlsplit(backend.sign("a/b.png", expires_in=60, for_upload=True))
    assert download.path == "/product-images/a/b.png"
    query = parse_qs(download.query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["300"]
    assert len(query["X-Goog-Signature"][0]) == 512  # 2048-bit RSA, hex
    assert parse_qs(upload.query)["X-Goog-Signature"] != query["X-Goog-Signature"]
    assert "PRIVATE KEY" not in repr(backend)
