"""AWS Signature V4 query presigning of a PUT with signed headers (no SDK needed).

obstore's own presigned URLs sign only ``host``; an upload session needs S3 itself to refuse a
body of another size or type and a second write, which takes ``content-length``,
``content-type`` and ``if-none-match`` among the signed headers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote

__all__ = ["presign"]

_UNRESERVED = "-_.~"


def _encode(value: str, safe: str = "") -> str:
    return quote(value, safe=_UNRESERVED + safe)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


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
) -> str:
    """A presigned URL for ``method`` on ``url_base`` + ``key_path``, signing ``headers``.

    ``url_base`` is ``scheme://host[:port]`` (path-style buckets put the bucket in
    ``key_path``); ``headers`` must include ``host``; names are lower-cased here.
    """
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now.strftime('%Y%m%d')}/{region}/{service}/aws4_request"
    signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed_names = ";".join(sorted(signed))
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_in),
        "X-Amz-SignedHeaders": signed_names,
    }
    if session_token:
        query["X-Amz-Security-Token"] = session_token
    canonical_query = "&".join(
        f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items())
    )
    canonical_uri = _encode(key_path, safe="/")
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in sorted(signed))
    canonical_request = "\n".join([
        method, canonical_uri, canonical_query, canonical_headers, signed_names,
        "UNSIGNED-PAYLOAD",
    ])
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = _hmac(("AWS4" + secret_key).encode(), now.strftime("%Y%m%d"))
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{url_base}{canonical_uri}?{canonical_query}&X-Amz-Signature={signature}"
