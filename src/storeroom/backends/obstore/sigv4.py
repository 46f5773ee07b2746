"""Query presigning with signed headers: AWS Signature V4 and its GCS form (GOOG4-RSA).

obstore's own presigned URLs sign only ``host``; an upload session needs the store itself to
refuse a body of another size or type and a second write, which takes headers such as
``content-length``, ``content-type`` and ``if-none-match`` (S3) or
``x-goog-content-length-range`` and ``x-goog-if-generation-match`` (GCS) among the signed
headers. Both schemes share the canonical request; they differ in names and the final step
(HMAC chain for AWS, an RSA signature by the service account's key for GCS).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote

__all__ = ["presign", "presign_gcs"]

_UNRESERVED = "-_.~"


def _encode(value: str, safe: str = "") -> str:
    return quote(value, safe=_UNRESERVED + safe)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical(
    method: str, key_path: str, query: dict[str, str], headers: Mapping[str, str]
) -> tuple[str, str, str]:
    """``(canonical request, canonical query, signed header names)``."""
    signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed_names = ";".join(sorted(signed))
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in sorted(signed))
    canonical_request = "\n".join(
        [
            method,
            _encode(key_path, safe="/"),
            canonical_query,
            canonical_headers,
            signed_names,
            "UNSIGNED-PAYLOAD",
        ]
    )
    return canonical_request, canonical_query, signed_names


def presign_gcs(
    *,
    method: str,
    url_base: str,
    key_path: str,
    headers: Mapping[str, str],
    client_email: str,
    private_key_pem: str,
    expires_in: int,
    now: datetime,
) -> str:
    """A GCS V4 signed URL (``GOOG4-RSA-SHA256``) signing ``headers`` (``host`` included)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now.strftime('%Y%m%d')}/auto/storage/goog4_request"
    names = ";".join(sorted(name.lower() for name in headers))
    query = {
        "X-Goog-Algorithm": "GOOG4-RSA-SHA256",
        "X-Goog-Credential": f"{client_email}/{scope}",
        "X-Goog-Date": stamp,
        "X-Goog-Expires": str(expires_in),
        "X-Goog-SignedHeaders": names,
    }
    canonical_request, canonical_query, _ = _canonical(method, key_path, query, headers)
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            stamp,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the service account key is not an RSA key")
    signature = key.sign(string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()).hex()
    return f"{url_base}{_encode(key_path, safe='/')}?{canonical_query}&X-Goog-Signature={signature}"


def presign(
    *,
    method: str,
    url_base: str,
    key_path: str,
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    region: str,
    expires_in: int,
    now: datetime,
    session_token: str | None = None,
    service: str = "s3",
    query: Mapping[str, str] | None = None,
) -> str:
    """A presigned URL for ``method`` on ``url_base`` + ``key_path``, signing ``headers``.

    ``url_base`` is ``scheme://host[:port]`` (path-style buckets put the bucket in
    ``key_path``); ``headers`` must include ``host``; names are lower-cased here. ``query``
    adds parameters to sign (``partNumber`` and ``uploadId`` of a multipart part).
    """
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now.strftime('%Y%m%d')}/{region}/{service}/aws4_request"
    signed_names = ";".join(sorted(name.lower() for name in headers))
    signed_query = dict(query or {})
    signed_query.update(
        {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires_in),
            "X-Amz-SignedHeaders": signed_names,
        }
    )
    if session_token:
        signed_query["X-Amz-Security-Token"] = session_token
    canonical_request, canonical_query, _ = _canonical(method, key_path, signed_query, headers)
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + secret_key).encode(), now.strftime("%Y%m%d"))
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{url_base}{_encode(key_path, safe='/')}?{canonical_query}&X-Amz-Signature={signature}"
