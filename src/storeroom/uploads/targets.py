"""How a browser uploads straight to a store: the URL, method and headers, per kind of store.

- local disk, memory, fsspec (storeroom's HMAC URL, served by :mod:`storeroom.web`): the
  handler enforces the size cap and the content type, and writes create-only.
- S3 with static credentials: a SigV4 URL that signs ``content-length``, ``content-type`` and
  ``if-none-match: *``, so S3 refuses another size, another type and a second write.
- GCS with a service-account key: a V4 URL that signs ``content-type``,
  ``x-goog-content-length-range`` (exactly the declared size) and
  ``x-goog-if-generation-match: 0``, so GCS refuses another size, another type and a second
  write.
- S3 without static keys, GCS without a key file, Azure: the store's own signed URL (it
  signs the host only); everything is checked at completion.

Where the store cannot refuse a second write, the browser uploads to a staging path and
completion copies the verified object to its final path (see :mod:`storeroom.uploads.sessions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storeroom.backends.base import StorageBackend
from storeroom.backends.obstore.direct_uploads import (
    gcs_signing_account,
    presign_s3_put,
    s3_location,
    s3_static_credentials,
)
from storeroom.errors import ConfigurationError
from storeroom.signing import HmacUrlSigner

__all__ = ["UploadInstructions", "enforced_limits", "instructions"]


@dataclass(frozen=True, slots=True)
class UploadInstructions:
    """What the browser needs to upload: send ``method`` to ``url`` with ``headers``.

    ``fields`` holds form fields for stores that take a form POST (empty for PUT).
    ``enforced`` names the limits the store itself enforces (``"size"``, ``"type"``,
    ``"create-only"``); the others are checked at completion.
    """

    url: str
    method: str
    headers: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    enforced: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the browser."""
        return {
            "url": self.url,
            "method": self.method,
            "headers": dict(self.headers),
            "fields": dict(self.fields),
            "enforced": list(self.enforced),
        }


def _hmac_signer(backend: StorageBackend) -> HmacUrlSigner | None:
    signer = backend.url_signer
    if isinstance(signer, HmacUrlSigner) and not backend.signs_natively("PUT"):
        return signer
    return None


def enforced_limits(backend: StorageBackend) -> tuple[str, ...]:
    """The limits ``backend``'s store enforces on a direct upload (see the module table)."""
    if _hmac_signer(backend) is not None:
        return ("size", "type", "create-only")
    if s3_static_credentials(backend) is not None or gcs_signing_account(backend) is not None:
        return ("size", "type", "create-only")
    return ()


def instructions(
    backend: StorageBackend,
    path: str,
    *,
    content_type: str,
    size: int,
    expires_in: int,
    now: datetime,
) -> UploadInstructions:
    """Sign a direct upload of exactly ``size`` bytes of ``content_type`` to ``path``."""
    signer = _hmac_signer(backend)
    if signer is not None:
        url = signer.sign(
            backend.key,
            path,
            method="PUT",
            expires_in=expires_in,
            content_type=content_type,
            max_size=size,
        )
        return UploadInstructions(
            url, "PUT", {"Content-Type": content_type}, enforced=enforced_limits(backend)
        )
    config = s3_static_credentials(backend)
    if config is not None:
        base, key_path = s3_location(backend, config, path)
        headers = {
            "content-length": str(size),
            "content-type": content_type,
            "if-none-match": "*",
        }
        url = presign_s3_put(config, base, key_path, headers, expires_in=expires_in, now=now)
        return UploadInstructions(
            url,
            "PUT",
            {"Content-Type": content_type, "If-None-Match": "*"},
            enforced=enforced_limits(backend),
        )
    account = gcs_signing_account(backend)
    if account is not None:
        from storeroom.backends.obstore.sigv4 import presign_gcs

        base = str(account.get("gcs_base_url") or "https://storage.googleapis.com").rstrip("/")
        prefix = (getattr(backend.store, "prefix", None) or "").strip("/")  # type: ignore[attr-defined]
        key = f"{prefix}/{path}" if prefix else path
        sent = {
            "Content-Type": content_type,
            "x-goog-content-length-range": f"{size},{size}",
            "x-goog-if-generation-match": "0",
        }
        url = presign_gcs(
            method="PUT",
            url_base=base,
            key_path=f"/{account['bucket']}/{key}",
            headers={**sent, "host": base.split("://", 1)[1]},
            client_email=str(account["client_email"]),
            private_key_pem=str(account["private_key"]),
            expires_in=expires_in,
            now=now,
        )
        return UploadInstructions(url, "PUT", sent, enforced=enforced_limits(backend))
    if not backend.signs_natively("PUT"):
        raise ConfigurationError(
            f"backend {backend.key!r} cannot take direct uploads: its store does not sign URLs "
            "and it has no HMAC signer; call storeroom.signing.configure_signing(backend, "
            "secret=..., base_url=...) and mount storeroom.web"
        )
    url = backend.sign(path, expires_in=expires_in, for_upload=True, content_type=content_type)
    headers = {"Content-Type": content_type}
    if getattr(backend, "kind", None) == "azure":
        headers["x-ms-blob-type"] = "BlockBlob"
    return UploadInstructions(url, "PUT", headers)
