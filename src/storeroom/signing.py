"""HMAC-signed URLs for backends whose store cannot sign (local disk, memory, fsspec).

A signed URL names the backend, the object path, the method (GET or PUT) and an expiry,
and for uploads optionally the largest accepted size and the required content type; an
HMAC-SHA256 over all of them, keyed with a secret, makes the URL unforgeable. Several
secrets can be configured: URLs are signed with the first and accepted with any, so a
secret can be rotated without breaking URLs already handed out. storeroom's web handler
(:mod:`storeroom.web`) verifies them and serves the bytes.

::

    from storeroom.signing import configure_signing

    configure_signing(backend, secret=os.environ["STOREROOM_SIGNING_SECRET"],
                      base_url="https://app.example.com/files")
    url = FileObject(backend="uploads", filename="a.pdf").sign(expires_in=300)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from storeroom.backends.base import Method, StorageBackend
from storeroom.errors import ConfigurationError, SignatureExpired, SignatureInvalid
from storeroom.paths import safe_path

__all__ = ["HmacUrlSigner", "SignedRequest", "configure_signing"]

_MIN_SECRET_BYTES = 16


def _secret_bytes(secret: str | bytes) -> bytes:
    data = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(data) < _MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"a signing secret must be at least {_MIN_SECRET_BYTES} bytes long (got "
            f'{len(data)}); generate one with `python -c "import secrets; '
            'print(secrets.token_urlsafe(32))"`'
        )
    return data


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a verified signed URL grants."""

    backend: str
    path: str
    method: Method
    expires: int
    content_type: str | None = None
    max_size: int | None = None
    filename: str | None = None


def _canonical(request: SignedRequest) -> bytes:
    # A JSON array, not joined text: no field value (a content type or filename chosen by a
    # client, say) can shift bytes into its neighbour and so forge a different grant.
    fields = [
        "storeroom-v2",
        request.method,
        request.backend,
        request.path,
        request.expires,
        request.content_type,
        request.max_size,
        request.filename,
    ]
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode()


# type/subtype with optional parameters; no control characters (the value becomes a header).
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
    r"(\s*;\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+=(\"[^\"\x00-\x1f\x7f]*\"|[A-Za-z0-9!#$%&'*+.^_`|~-]+))*"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_grant(content_type: str | None, max_size: int | None, filename: str | None) -> None:
    if content_type is not None and not _CONTENT_TYPE.fullmatch(content_type):
        raise ConfigurationError(
            f"content_type {content_type!r} is not a media type like 'image/png'; "
            "pass a valid type (or None to accept any)"
        )
    if max_size is not None and (
        not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0
    ):
        raise ConfigurationError(
            f"max_size must be a non-negative number of bytes or None, got {max_size!r}"
        )
    if filename is not None and _CONTROL.search(filename):
        raise ConfigurationError(f"filename {filename!r} contains a control character")


class HmacUrlSigner:
    """Signs and verifies storeroom URLs with HMAC-SHA256.

    Args:
        secrets: One secret or several (the first signs, any verifies), each at least 16
            bytes; never shown in reprs, logs or errors.
        base_url: Where :mod:`storeroom.web` is mounted, e.g. ``https://app.example.com/files``.
        max_upload_size: Default size limit written into upload URLs (None: no limit).
        clock: Seconds since the epoch (tests substitute a fixed clock).
    """

    def __init__(
        self,
        secrets: str | bytes | Sequence[str | bytes],
        base_url: str,
        *,
        max_upload_size: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        items = [secrets] if isinstance(secrets, (str, bytes)) else list(secrets)
        if not items:
            raise ConfigurationError("HmacUrlSigner needs at least one secret")
        self._keys = [_secret_bytes(s) for s in items]
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://", "/")):
            raise ConfigurationError(
                f"signing base_url must be an absolute http(s) URL or a path starting with "
                f"'/', got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.max_upload_size = max_upload_size
        self._clock: Callable[[], float] = clock or time.time

    def __repr__(self) -> str:
        return f"HmacUrlSigner(base_url={self.base_url!r}, secrets=<{len(self._keys)} hidden>)"

    def _mac(self, key: bytes, request: SignedRequest) -> str:
        digest = hmac.new(key, _canonical(request), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(
        self,
        backend: str,
        path: str,
        *,
        method: Method,
        expires_in: int,
        content_type: str | None = None,
        max_size: int | None = None,
        filename: str | None = None,
    ) -> str:
        """A URL granting ``method`` on ``backend``/``path`` for ``expires_in`` seconds."""
        if method not in ("GET", "PUT"):
            raise ConfigurationError(f"signed URLs are for GET or PUT, not {method!r}")
        if method == "PUT" and max_size is None:
            max_size = self.max_upload_size
        content_type, filename = content_type or None, filename or None
        _check_grant(content_type, max_size, filename)
        request = SignedRequest(
            backend=backend,
            path=safe_path(path),
            method=method,
            expires=int(self._clock()) + int(expires_in),
            content_type=content_type,
            max_size=max_size,
            filename=filename,
        )
        query = {"method": request.method, "expires": str(request.expires)}
        if request.content_type:
            query["content_type"] = request.content_type
        if request.max_size is not None:
            query["max_size"] = str(request.max_size)
        if request.filename:
            query["filename"] = request.filename
        query["signature"] = self._mac(self._keys[0], request)
        location = f"{quote(backend, safe='')}/{quote(request.path, safe='/')}"
        return f"{self.base_url}/{location}?{urlencode(query)}"

    def verify(
        self, backend: str, path: str, method: str, query: Mapping[str, str]
    ) -> SignedRequest:
        """Check a request against its signature; return what it grants.

        Raises :class:`SignatureInvalid` (tampered, wrong method or path, malformed) or
        :class:`SignatureExpired`. Comparison is constant-time; every configured secret is
        tried.
        """
        signature = query.get("signature", "")
        try:
            expires = int(query.get("expires", ""))
            max_size = int(query["max_size"]) if "max_size" in query else None
        except ValueError:
            raise SignatureInvalid("signed URL has a malformed expiry or size") from None
        granted = query.get("method", "")
        if granted != method.upper() and not (granted == "GET" and method.upper() == "HEAD"):
            raise SignatureInvalid(
                f"signed URL grants {granted or 'nothing'}, not {method.upper()}"
            )
        request = SignedRequest(
            backend=backend,
            path=path,
            method=granted,  # type: ignore[arg-type]
            expires=expires,
            content_type=query.get("content_type") or None,
            max_size=max_size,
            filename=query.get("filename") or None,
        )
        # Bytes, not text: compare_digest refuses non-ASCII text, and a query is untrusted.
        offered = signature.encode("utf-8", "surrogateescape")
        if not any(
            hmac.compare_digest(self._mac(key, request).encode(), offered) for key in self._keys
        ):
            raise SignatureInvalid("signed URL signature does not match")
        if expires < self._clock():
            raise SignatureExpired("signed URL has expired; ask for a new one")
        return request


def configure_signing(
    backend: StorageBackend,
    *,
    secret: str | bytes | Sequence[str | bytes],
    base_url: str,
    max_upload_size: int | None = None,
) -> HmacUrlSigner:
    """Give ``backend`` an HMAC URL signer (used where its store cannot sign); return it."""
    signer = HmacUrlSigner(secret, base_url, max_upload_size=max_upload_size)
    backend.url_signer = signer
    return signer
