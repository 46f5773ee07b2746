"""Direct and resumable uploads at the obstore provider's stores: who can sign what, and the
S3 multipart and Azure block-blob calls behind storeroom's upload sessions.

:mod:`storeroom.uploads` decides (limits, sessions, verification); this module holds what
needs the provider: the static credentials and service accounts a URL can be signed with,
S3 object URLs, boto3 for S3 multipart uploads and azure-storage-blob for block lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from storeroom.backends.base import StorageBackend
from storeroom.errors import ConfigurationError
from storeroom.paths import safe_path

__all__ = [
    "AZURE_BLOCKS",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "S3_PARTS",
    "AzureBlocks",
    "PartInfo",
    "PartRules",
    "S3Multipart",
    "azure_account",
    "gcs_signing_account",
    "s3_location",
    "s3_static_credentials",
]

MIN_PART_SIZE = 5 * 2**20
"""S3's smallest part (all but the last)."""
MAX_PART_SIZE = 5 * 2**30
"""S3's largest part."""
MAX_PARTS = 10_000
"""S3's largest part number."""


def s3_static_credentials(backend: StorageBackend) -> dict[str, Any] | None:
    """The S3 store's configuration when it has static keys (URLs can be signed locally)."""
    if getattr(backend, "kind", None) != "s3":
        return None
    config = dict(getattr(getattr(backend, "store", None), "config", None) or {})
    plan = getattr(backend, "credential_plan", None)
    if getattr(plan, "provider", None) is not None:
        return None
    if not config.get("access_key_id") or not config.get("secret_access_key"):
        return None
    return config


def presign_s3_put(
    config: dict[str, Any],
    base: str,
    key_path: str,
    headers: dict[str, str],
    *,
    expires_in: int,
    now: datetime,
    query: dict[str, str] | None = None,
) -> str:
    """A SigV4-presigned ``PUT`` URL signed with the static keys in ``config``.

    ``base`` and ``key_path`` come from :func:`s3_location`; ``headers`` (besides ``host``,
    added here) are signed, so the client must send them exactly.
    """
    from storeroom.backends.obstore.sigv4 import presign

    return presign(
        method="PUT",
        url_base=base,
        key_path=key_path,
        headers={**headers, "host": base.split("://", 1)[1]},
        query=query,
        access_key=str(config["access_key_id"]),
        secret_key=str(config["secret_access_key"]),
        session_token=config.get("token") or config.get("session_token"),
        region=str(config.get("region") or "us-east-1"),
        expires_in=expires_in,
        now=now,
    )


def gcs_signing_account(backend: StorageBackend) -> dict[str, Any] | None:
    """The service account (client_email, private_key) a GCS backend signs with, if any."""
    if getattr(backend, "kind", None) != "gcs":
        return None
    config = dict(getattr(getattr(backend, "store", None), "config", None) or {})
    try:
        import cryptography  # noqa: F401  (the RSA signature needs it)

        if config.get("service_account_key"):
            account = json.loads(str(config["service_account_key"]))
        elif config.get("service_account"):
            account = json.loads(Path(str(config["service_account"])).read_text())
        else:
            return None
    except (ImportError, OSError, ValueError):
        return None
    if not account.get("client_email") or not account.get("private_key"):
        return None
    return {**account, "bucket": config.get("bucket")}


def s3_location(backend: StorageBackend, config: dict[str, Any], path: str) -> tuple[str, str]:
    """``(scheme://host, /key path)`` of ``path`` in the S3 store, path- or virtual-hosted."""
    bucket = str(config["bucket"])
    prefix = (getattr(backend.store, "prefix", None) or "").strip("/")  # type: ignore[attr-defined]
    key = f"{prefix}/{path}" if prefix else path
    endpoint = str(config.get("endpoint") or "").rstrip("/")
    virtual = str(config.get("virtual_hosted_style_request", "")).lower() == "true"
    region = str(config.get("region") or "us-east-1")
    if not endpoint:
        return f"https://{bucket}.s3.{region}.amazonaws.com", f"/{key}"
    if virtual:
        scheme, _, host = endpoint.partition("://")
        return f"{scheme}://{bucket}.{host}", f"/{key}"
    return endpoint, f"/{bucket}/{key}"


def azure_account(backend: StorageBackend) -> dict[str, Any] | None:
    """The Azure store's configuration when it has an account key (SAS and block lists)."""
    if getattr(backend, "kind", None) != "azure":
        return None
    config = dict(getattr(getattr(backend, "store", None), "config", None) or {})
    if not config.get("account_name") or not config.get("account_key"):
        return None
    return config


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One part of an S3 multipart upload as the store holds it."""

    number: int
    size: int
    etag: str

    def to_dict(self) -> dict[str, Any]:
        """The form Uppy's ``listParts`` expects."""
        return {"PartNumber": self.number, "Size": self.size, "ETag": self.etag}


@dataclass(frozen=True, slots=True)
class PartRules:
    """A store's rules for parts: smallest (all but the last), largest, how many."""

    store: str
    min_size: int
    max_size: int
    max_parts: int


S3_PARTS = PartRules("S3", MIN_PART_SIZE, MAX_PART_SIZE, MAX_PARTS)
AZURE_BLOCKS = PartRules("Azure", 1, 4000 * 2**20, 50_000)


class S3Multipart:
    """An S3 backend's multipart-upload calls (boto3 for the API, SigV4 for part URLs)."""

    def __init__(self, backend: StorageBackend) -> None:
        config = s3_static_credentials(backend)
        if config is None:
            raise ConfigurationError(f"backend {backend.key!r} is not S3 with static credentials")
        self.backend = backend
        self.config = config
        self.bucket = str(config["bucket"])
        prefix = (getattr(backend.store, "prefix", None) or "").strip("/")  # type: ignore[attr-defined]
        self.prefix = f"{prefix}/" if prefix else ""

    def _client(self) -> Any:
        from storeroom.backends.obstore.clients import s3_client

        return s3_client(getattr(self.backend, "store"))[0]  # noqa: B009

    def key(self, path: str) -> str:
        """The object key of ``path`` (the backend's prefix applied)."""
        return self.prefix + safe_path(path)

    def create(self, path: str, content_type: str) -> str:
        """Start a multipart upload to ``path``; return its upload id."""
        answer = self._client().create_multipart_upload(
            Bucket=self.bucket, Key=self.key(path), ContentType=content_type
        )
        return str(answer["UploadId"])

    def part_url(
        self,
        path: str,
        upload_id: str,
        number: int,
        size: int | None,
        *,
        expires_in: int,
        now: datetime,
    ) -> str:
        """A presigned ``PUT`` of part ``number``, exactly ``size`` bytes long if given."""
        base, key_path = s3_location(self.backend, self.config, path)
        headers = {} if size is None else {"content-length": str(size)}
        return presign_s3_put(
            self.config,
            base,
            key_path,
            headers,
            query={"partNumber": str(number), "uploadId": upload_id},
            expires_in=expires_in,
            now=now,
        )

    def parts(self, path: str, upload_id: str) -> list[PartInfo]:
        """The parts stored so far, in order (all pages of ``ListParts``)."""
        client = self._client()
        found: list[PartInfo] = []
        marker = 0
        while True:
            answer = client.list_parts(
                Bucket=self.bucket, Key=self.key(path), UploadId=upload_id, PartNumberMarker=marker
            )
            found += [
                PartInfo(int(p["PartNumber"]), int(p["Size"]), str(p["ETag"]))
                for p in answer.get("Parts", [])
            ]
            if not answer.get("IsTruncated"):
                return found
            marker = int(answer["NextPartNumberMarker"])

    def finish(self, path: str, upload_id: str, parts: list[PartInfo]) -> None:
        """Complete the upload with ``parts`` (as :meth:`parts` listed them)."""
        self._client().complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key(path),
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )

    def abort(self, path: str, upload_id: str) -> None:
        """Abort the upload and drop its parts; an upload already gone is not an error."""
        client = self._client()
        try:
            client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key(path), UploadId=upload_id
            )
        except client.exceptions.NoSuchUpload:
            pass

    def exists(self, upload_id: str, path: str) -> bool:
        """Whether the multipart upload is still open."""
        client = self._client()
        try:
            client.list_parts(
                Bucket=self.bucket, Key=self.key(path), UploadId=upload_id, MaxParts=1
            )
        except client.exceptions.NoSuchUpload:
            return False
        return True


class AzureBlocks:
    """An Azure backend's block-blob calls: SAS URLs for Put Block, the block list for the rest.

    Blocks are named ``base64("000001")`` .. by part number (Azure wants ids of one length).
    The server lists the uncommitted blocks (to resume and to check them) and commits them
    with Put Block List; an abandoned upload's blocks are dropped by committing an empty
    list and deleting that empty blob.
    """

    rules = AZURE_BLOCKS

    def __init__(self, backend: StorageBackend) -> None:
        config = azure_account(backend)
        if config is None:
            raise ConfigurationError(f"backend {backend.key!r} is not Azure with an account key")
        self.backend = backend
        self.config = config
        prefix = (getattr(backend.store, "prefix", None) or "").strip("/")  # type: ignore[attr-defined]
        self.prefix = f"{prefix}/" if prefix else ""

    @staticmethod
    def block_id(number: int) -> str:
        """The block id of part ``number`` (base64 of six digits)."""
        import base64

        return base64.b64encode(f"{number:06d}".encode()).decode()

    def _blob(self, path: str) -> Any:
        try:
            from azure.storage.blob import BlobClient
        except ImportError as exc:  # pragma: no cover - the azure extra brings it
            raise ConfigurationError(
                "Azure block upload sessions need azure-storage-blob: pip install "
                "'storeroom[azure]'"
            ) from exc
        config = self.config
        account = str(config["account_name"])
        endpoint = str(config.get("endpoint") or f"https://{account}.blob.core.windows.net")
        return BlobClient(
            account_url=endpoint,
            container_name=str(config["container_name"]),
            blob_name=self.prefix + safe_path(path),
            credential={"account_name": account, "account_key": str(config["account_key"])},
        )

    def part_url(self, path: str, number: int, *, expires_in: int) -> str:
        """A SAS URL for Put Block of part ``number`` (send it with ``PUT``)."""
        from urllib.parse import quote

        url = self.backend.sign(path, expires_in=expires_in, for_upload=True)
        return f"{url}&comp=block&blockid={quote(self.block_id(number), safe='')}"

    def parts(self, path: str) -> list[PartInfo]:
        """The uncommitted blocks, as parts in order (unknown ids are left out)."""
        import base64

        from azure.core.exceptions import ResourceNotFoundError

        try:
            _, uncommitted = self._blob(path).get_block_list("uncommitted")
        except ResourceNotFoundError:
            return []
        found = []
        for block in uncommitted:
            try:
                name = block.id
                if not name.isdigit():
                    name = base64.b64decode(name).decode()
                found.append(PartInfo(int(name), int(block.size), block.id))
            except (ValueError, UnicodeDecodeError):
                continue
        return sorted(found, key=lambda part: part.number)

    def finish(self, path: str, parts: list[PartInfo], content_type: str) -> None:
        """Put Block List: commit ``parts`` in order as the blob."""
        from azure.storage.blob import BlobBlock, ContentSettings

        self._blob(path).commit_block_list(
            # The SDK base64-encodes ids itself: hand it the six digits.
            [BlobBlock(block_id=f"{part.number:06d}") for part in parts],
            content_settings=ContentSettings(content_type=content_type),
        )

    def abort(self, path: str) -> None:
        """Drop the uncommitted blocks (commit an empty list, delete that blob)."""
        from azure.core.exceptions import ResourceNotFoundError

        if not self.parts(path):
            return
        blob = self._blob(path)
        blob.commit_block_list([])
        try:
            blob.delete_blob()
        except ResourceNotFoundError:
            pass
