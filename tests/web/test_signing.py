"""HMAC URL signing: what the signature covers, rotation, expiry, and no leaked secrets."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from storeroom import (
    ConfigurationError,
    FileObject,
    ObstoreBackend,
    SignatureExpired,
    SignatureInvalid,
    SigningNotSupported,
)
from storeroom.signing import HmacUrlSigner, configure_signing

SECRET = "s3cret-signing-key-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _parts(url: str) -> tuple[str, str, dict[str, str]]:
    split = urlsplit(url)
    backend, _, path = split.path.split("/files/", 1)[1].partition("/")
    return backend, path, dict(parse_qsl(split.query))


def test_sign_and_verify_round_trip() -> None:
    clock = Clock()
    signer = HmacUrlSigner(SECRET, "https://app.example.com/files", clock=clock)
    url = signer.sign(
        "uploads",
        "a/b c.pdf",
        method="GET",
        expires_in=60,
        content_type="application/pdf",
        filename="b c.pdf",
    )
    assert url.startswith("https://app.example.com/files/uploads/a/b%20c.pdf?")
    _backend, _path, query = _parts(url)
    grant = signer.verify("uploads", "a/b c.pdf", "GET", query)
    assert (grant.path, grant.content_type, grant.filename) == (
        "a/b c.pdf",
        "application/pdf",
        "b c.pdf",
    )
    assert signer.verify("uploads", "a/b c.pdf", "HEAD", query).method == "GET"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b, p, m, q: (b, "a/other.pdf", m, q), SignatureInvalid),
        (lambda b, p, m, q: ("other", p, m, q), SignatureInvalid),
        (lambda b, p, m, q: (b, p, "PUT", q), SignatureInvalid),
        (
            lambda b, p, m, q: (b, p, m, {**q, "signature": q["signature"][:-2] + "AA"}),
            SignatureInvalid,
        ),
        (
            lambda b, p, m, q: (b, p, m, {**q, "expires": str(int(q["expires"]) + 3600)}),
            SignatureInvalid,
        ),
        (lambda b, p, m, q: (b, p, m, {**q, "content_type": "text/html"}), SignatureInvalid),
        (lambda b, p, m, q: (b, p, m, {**q, "expires": "soon"}), SignatureInvalid),
        (
            lambda b, p, m, q: (b, p, m, {k: v for k, v in q.items() if k != "signature"}),
            SignatureInvalid,
        ),
    ],
    ids=[
        "path",
        "backend",
        "method",
        "signature",
        "expiry",
        "content-type",
        "malformed",
        "unsigned",
    ],
)
def test_tampering_is_rejected(change, error) -> None:  # type: ignore[no-untyped-def]
    signer = HmacUrlSigner(SECRET, "/files")
    _b, _p, query = _parts(
        signer.sign(
            "uploads", "a/doc.pdf", method="GET", expires_in=60, content_type="application/pdf"
        )
    )
    with pytest.raises(error):
        signer.verify(*change("uploads", "a/doc.pdf", "GET", query))


def test_upload_size_limit_is_signed() -> None:
    signer = HmacUrlSigner(SECRET, "/files", max_upload_size=1000)
    _b, _p, query = _parts(signer.sign("u", "x.bin", method="PUT", expires_in=60))
    assert query["max_size"] == "1000"
    assert signer.verify("u", "x.bin", "PUT", query).max_size == 1000
    with pytest.raises(SignatureInvalid):
        signer.verify("u", "x.bin", "PUT", {**query, "max_size": "10000000"})


def test_expired_urls_are_rejected() -> None:
    clock = Clock()
    signer = HmacUrlSigner(SECRET, "/files", clock=clock)
    _b, _p, query = _parts(signer.sign("u", "x", method="GET", expires_in=30))
    clock.now += 31
    with pytest.raises(SignatureExpired):
        signer.verify("u", "x", "GET", query)


def test_secret_rotation_accepts_old_urls() -> None:
    old = HmacUrlSigner("old-secret-0123456789abcdef", "/files")
    rotated = HmacUrlSigner(
        ["new-secret-0123456789abcdef", "old-secret-0123456789abcdef"], "/files"
    )
    _b, _p, query = _parts(old.sign("u", "x", method="GET", expires_in=60))
    assert rotated.verify("u", "x", "GET", query).path == "x"
    _b, _p, fresh = _parts(rotated.sign("u", "x", method="GET", expires_in=60))
    with pytest.raises(SignatureInvalid):
        old.verify("u", "x", "GET", fresh)


def test_configuration_errors_and_secret_hygiene() -> None:
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        HmacUrlSigner("short", "/files")
    with pytest.raises(ConfigurationError, match="base_url"):
        HmacUrlSigner(SECRET, "files")
    signer = HmacUrlSigner(SECRET, "/files")
    assert SECRET not in repr(signer)
    with pytest.raises(SignatureInvalid) as caught:
        signer.verify("u", "x", "GET", {"method": "GET", "expires": "1", "signature": "x"})
    assert SECRET not in str(caught.value)


def test_file_object_sign_uses_the_hmac_signer_where_the_store_cannot_sign() -> None:
    backend = ObstoreBackend("uploads", "memory://")
    f = FileObject(backend=backend, filename="report.pdf", content=b"%PDF").save()
    with pytest.raises(SigningNotSupported, match="uploads"):
        f.sign()
    configure_signing(backend, secret=SECRET, base_url="http://127.0.0.1:8000/files")
    download = f.sign(expires_in=300)
    upload = f.sign(expires_in=300, for_upload=True)
    assert download.startswith("http://127.0.0.1:8000/files/uploads/report.pdf?")
    assert "method=GET" in download and "method=PUT" in upload
    assert "content_type=application%2Fpdf" in upload


def test_field_values_cannot_shift_into_their_neighbours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A content type carrying a separator must not forge a bigger size limit.

    Signing validates content types, so the check is switched off here to prove that the
    canonical form alone resists: under the old newline-joined form this forgery verified.
    """
    import storeroom.signing

    monkeypatch.setattr(storeroom.signing, "_check_grant", lambda *args: None)
    signer = HmacUrlSigner(SECRET, "/files", max_upload_size=1000)
    _b, _p, query = _parts(
        signer.sign("up", "a.png", method="PUT", expires_in=60, content_type="image/png\n999999999")
    )
    forged = {
        "method": "PUT",
        "expires": query["expires"],
        "content_type": "image/png",
        "max_size": "999999999",
        "filename": "1000\n",
        "signature": query["signature"],
    }
    with pytest.raises(SignatureInvalid):
        signer.verify("up", "a.png", "PUT", forged)


@pytest.mark.parametrize(
    "grant",
    [
        {"content_type": "text/html\r\nSet-Cookie: a=b"},
        {"content_type": "html"},
        {"max_size": -1},
        {"filename": "a\nb.pdf"},
    ],
    ids=["header-injection", "not-a-media-type", "negative-size", "control-in-filename"],
)
def test_unsafe_grants_are_refused_at_signing(grant: dict[str, object]) -> None:
    signer = HmacUrlSigner(SECRET, "/files")
    with pytest.raises(ConfigurationError):
        signer.sign("up", "a.bin", method="PUT", expires_in=60, **grant)  # type: ignore[arg-type]


def test_media_types_with_parameters_and_empty_values_round_trip() -> None:
    signer = HmacUrlSigner(SECRET, "/files")
    url = signer.sign(
        "up",
        "a.txt",
        method="PUT",
        expires_in=60,
        content_type='text/plain; charset="utf-8"',
        filename="",
        max_size=0,
    )
    _b, _p, query = _parts(url)
    grant = signer.verify("up", "a.txt", "PUT", query)
    assert (grant.content_type, grant.max_size, grant.filename) == (
        'text/plain; charset="utf-8"',
        0,
        None,
    )
