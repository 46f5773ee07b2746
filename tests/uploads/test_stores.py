"""Upload sessions on S3 (moto) and Azure (Azurite): what each store enforces, what completion checks.

moto does not verify signatures, so the S3 tests check the signed URL itself (against
botocore's own SigV4 signer) and what moto does enforce (``If-None-Match: *``); Azurite
verifies SAS signatures, and Azure limits are checked at completion on a staging path.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from storeroom import ObstoreBackend, storages
from storeroom.backends.obstore.sigv4 import presign
from storeroom.uploads import (
    STAGING_PREFIX,
    UploadLimits,
    UploadRejected,
    begin,
    complete,
    metadata,
)

PDF = b"%PDF-1.4\n" + b"x" * 500 + b"\n%%EOF\n"
LIMITS = UploadLimits(max_size=4096, content_types=["application/pdf"])


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    metadata.create_all(engine)
    with Session(engine) as db:
        yield db
    engine.dispose()


def test_sigv4_presign_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    headers = {
        "host": "127.0.0.1:9000",
        "content-length": "42",
        "content-type": "application/pdf",
        "if-none-match": "*",
    }
    ours = presign(
        method="PUT",
        url_base="http://127.0.0.1:9000",
        key_path="/bkt/a dir/ü.pdf",
        headers=headers,
        access_key="AKID",
        secret_key="SECRET",
        region="eu-west-1",
        expires_in=600,
        now=now,
    )
    request = AWSRequest(
        method="PUT",
        url="http://127.0.0.1:9000/bkt/a%20dir/%C3%BC.pdf",
        headers={k.title(): v for k, v in headers.items()},
    )
    signer = S3SigV4QueryAuth(Credentials("AKID", "SECRET"), "s3", "eu-west-1", expires=600)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: now.replace(tzinfo=None))
    signer.add_auth(request)
    theirs = parse_qs(urlsplit(request.url).query)
    mine = parse_qs(urlsplit(ours).query)
    assert mine["X-Amz-Date"] == theirs["X-Amz-Date"]
    assert mine["X-Amz-SignedHeaders"] == theirs["X-Amz-SignedHeaders"]
    assert mine["X-Amz-Signature"] == theirs["X-Amz-Signature"]


@pytest.mark.s3
def test_s3_upload_signs_size_type_and_create_only(
    moto_server: object, s3_bucket: str, session: Session
) -> None:
    server = moto_server
    backend = storages.register_backend(
        ObstoreBackend(
            "docs",
            f"s3://{s3_bucket}/prefix",
            aws_access_key_id=server.access_key,  # type: ignore[attr-defined]
            aws_secret_access_key=server.secret_key,
            aws_endpoint=server.endpoint,  # type: ignore[attr-defined]
            aws_region=server.region,
            aws_allow_http=True,  # type: ignore[attr-defined]
        )
    )
    target = begin(
        session,
        "docs",
        filename="q3.pdf",
        content_type="application/pdf",
        size=len(PDF),
        limits=LIMITS,
    )
    session.commit()
    instructions = target.instructions
    query = parse_qs(urlsplit(instructions.url).query)
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host;if-none-match"]
    assert urlsplit(instructions.url).path == f"/{s3_bucket}/prefix/{target.path}"
    assert instructions.headers == {"Content-Type": "application/pdf", "If-None-Match": "*"}
    assert instructions.enforced == ("size", "type", "create-only")

    first = httpx.put(instructions.url, content=PDF, headers=instructions.headers)
    assert first.status_code == 200, first.text
    replay = httpx.put(instructions.url, content=b"%PDF-1.4 evil", headers=instructions.headers)
    assert replay.status_code == 412  # S3 refuses the second write
    file = complete(session, target.id)
    session.commit()
    assert backend.get(target.path) == PDF and file.size == len(PDF)


@pytest.mark.azure
def test_azure_upload_is_staged_and_checked_at_completion(
    azurite_server: object, azure_container: str, session: Session
) -> None:
    backend = storages.register_backend(
        ObstoreBackend(
            "docs",
            f"az://{azure_container}/prefix",
            azure_storage_connection_string=azurite_server.connection_string,  # type: ignore[attr-defined]
        )
    )
    target = begin(
        session,
        "docs",
        filename="q3.pdf",
        content_type="application/pdf",
        size=len(PDF),
        limits=LIMITS,
    )
    session.commit()
    instructions = target.instructions
    assert instructions.enforced == ()
    assert instructions.headers["x-ms-blob-type"] == "BlockBlob"
    assert f"/{STAGING_PREFIX}/{target.id}/" in urlsplit(instructions.url).path

    forged = instructions.url.replace("sig=", "sig=A")
    assert httpx.put(forged, content=PDF, headers=instructions.headers).status_code == 403
    assert httpx.put(instructions.url, content=PDF, headers=instructions.headers).status_code == 201
    file = complete(session, target.id)
    session.commit()
    assert backend.get(target.path) == PDF and file.path == target.path
    # A replay lands on the staging path again, never on the completed object.
    assert (
        httpx.put(
            instructions.url, content=b"%PDF-1.4 evil", headers=instructions.headers
        ).status_code
        == 201
    )
    assert backend.get(target.path) == PDF

    oversize = begin(
        session,
        "docs",
        filename="big.pdf",
        content_type="application/pdf",
        size=len(PDF),
        limits=LIMITS,
    )
    session.commit()
    big = PDF + b"y" * 5000
    assert (
        httpx.put(
            oversize.instructions.url, content=big, headers=oversize.instructions.headers
        ).status_code
        == 201
    )
    with pytest.raises(UploadRejected) as caught:
        complete(session, oversize.id)
    assert caught.value.rule == "max_size" and caught.value.value == len(big)
    assert [info.path for info in backend.list(f"{STAGING_PREFIX}/{oversize.id}")] == []


def _service_account(tmp_path: Path) -> tuple[Path, object]:
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
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
    return account, key.public_key()


def test_goog4_presign_matches_obstores_own_gcs_signer(tmp_path: Path) -> None:
    """With only ``host`` signed, our GOOG4 signer must produce obstore's URL exactly."""
    import json

    from storeroom.backends.obstore.sigv4 import presign_gcs

    account, _ = _service_account(tmp_path)
    backend = ObstoreBackend("gcs", "gs://product-images/pre", google_service_account=str(account))
    info = json.loads(account.read_text())
    for _attempt in range(5):  # both must fall in the same second
        theirs = backend.sign("a/b c.png", expires_in=60, for_upload=True)
        stamp = parse_qs(urlsplit(theirs).query)["X-Goog-Date"][0]
        now = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        ours = presign_gcs(
            method="PUT",
            url_base="https://storage.googleapis.com",
            key_path="/product-images/pre/a/b c.png",
            headers={"host": "storage.googleapis.com"},
            client_email=info["client_email"],
            private_key_pem=info["private_key"],
            expires_in=60,
            now=now,
        )
        if ours == theirs:
            break
    assert ours == theirs


def test_gcs_upload_signs_length_range_type_and_generation_match(
    tmp_path: Path, session: Session
) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    account, public_key = _service_account(tmp_path)
    storages.register_backend(
        ObstoreBackend("gdocs", "gs://product-images/", google_service_account=str(account))
    )
    target = begin(
        session,
        "gdocs",
        filename="q3.pdf",
        content_type="application/pdf",
        size=len(PDF),
        limits=LIMITS,
    )
    instructions = target.instructions
    query = parse_qs(urlsplit(instructions.url).query)
    assert query["X-Goog-SignedHeaders"] == [
        "content-type;host;x-goog-content-length-range;x-goog-if-generation-match"
    ]
    assert instructions.headers == {
        "Content-Type": "application/pdf",
        "x-goog-content-length-range": f"{len(PDF)},{len(PDF)}",
        "x-goog-if-generation-match": "0",
    }
    assert instructions.enforced == ("size", "type", "create-only")
    assert urlsplit(instructions.url).path == f"/product-images/{target.path}"
    # The signature verifies with the account's public key over the request with those
    # headers (the canonical request rebuilt here from the URL, per Google's V4 rules).
    import hashlib

    parts = urlsplit(instructions.url)
    pairs = [p for p in parts.query.split("&") if not p.startswith("X-Goog-Signature=")]
    signed = {
        "host": "storage.googleapis.com",
        **{k.lower(): v for k, v in instructions.headers.items()},
    }
    canonical = "\n".join(
        [
            "PUT",
            parts.path,
            "&".join(sorted(pairs)),
            "".join(f"{k}:{signed[k]}\n" for k in sorted(signed)),
            ";".join(sorted(signed)),
            "UNSIGNED-PAYLOAD",
        ]
    )
    stamp = query["X-Goog-Date"][0]
    to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            stamp,
            f"{stamp[:8]}/auto/storage/goog4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    signature = bytes.fromhex(query["X-Goog-Signature"][0])
    public_key.verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined]
