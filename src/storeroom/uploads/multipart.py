"""Resumable uploads at the store: S3 multipart uploads and the parts of a tus upload.

No database here: :mod:`storeroom.uploads.sessions` keeps the session row and calls these
functions. Two protocols exist:

- ``"s3-multipart"`` (S3 with static credentials): the server creates the multipart upload,
  signs each part's ``PUT`` on request (the part's exact length is signed, so S3 refuses a
  part of another size), lists the parts already stored so a client can resume, and
  completes or aborts it. The browser never completes the upload itself: the server does,
  once, after checking the parts, so the final path is written exactly once.
- ``"tus"`` (local disk, memory, fsspec: storeroom's HMAC handler, :mod:`storeroom.web`):
  the tus 1.0 protocol. Each ``PATCH`` is streamed to its own part object under
  :func:`tus_parts_prefix`; when the last byte arrives the parts are streamed, in order,
  into the upload's object and deleted. Nothing is held in memory.

Azure block blobs and GCS resumable sessions are not offered yet: :func:`resumable_protocol`
raises :class:`~storeroom.errors.ConfigurationError` for them (single uploads still work).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from storeroom.backends.base import ObjectInfo, PutResult, StorageBackend
from storeroom.errors import ConfigurationError, ObjectNotFound
from storeroom.paths import safe_path
from storeroom.uploads.targets import _hmac_signer, _s3_credentials, _s3_location

__all__ = [
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "PartInfo",
    "AzureBlocks",
    "PartRules",
    "S3Multipart",
    "TusPart",
    "part_problem",
    "resumable_protocol",
    "tus_offset",
    "tus_parts",
    "tus_parts_async",
    "tus_parts_prefix",
]

MIN_PART_SIZE = 5 * 2**20
"""S3's smallest part (all but the last)."""
MAX_PART_SIZE = 5 * 2**30
"""S3's largest part."""
MAX_PARTS = 10_000
"""S3's largest part number."""


def resumable_protocol(backend: StorageBackend) -> str:
    """``"tus"``, ``"s3-multipart"`` or ``"azure-blocks"``: how ``backend`` takes a
    resumable upload.

    Raises :class:`ConfigurationError` for stores without one here (GCS, S3 without static
    keys, Azure without an account key, stores without any signer).
    """
    if _hmac_signer(backend) is not None:
        return "tus"
    if _s3_credentials(backend) is not None:
        return "s3-multipart"
    if _azure_account(backend) is not None:
        return "azure-blocks"
    raise ConfigurationError(
        f"backend {backend.key!r} ({getattr(backend, 'kind', 'unknown')} store) has no "
        "resumable upload protocol in storeroom: resumable uploads need storeroom's HMAC "
        "handler (local disk, memory, fsspec: configure_signing), S3 with static keys or "
        "Azure with an account key; use uploads.begin for a single upload"
    )


def _azure_account(backend: StorageBackend) -> dict[str, Any] | None:
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


def part_problem(number: int, size: int | None, declared: int,
                 rules: PartRules = S3_PARTS) -> str | None:
    """Why a part of ``size`` bytes numbered ``number`` cannot belong to a ``declared`` upload.

    The limits are checked per part when its URL is signed (S3 signs the length too): a
    part is at most the store's largest and at most the declared size, and its number is
    one the store accepts and that the declared size can reach with parts of the store's
    smallest size.
    """
    most = min(rules.max_parts, max(1, math.ceil(declared / rules.min_size)))
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= most:
        return (f"part number {number!r} is out of range: a {declared}-byte upload has parts "
                f"1 to {most}")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= min(
        rules.max_size, declared
    ):
        return (f"part size {size!r} is out of range: 1 to {min(rules.max_size, declared)} "
                "bytes")
    return None


def parts_problem(parts: list[PartInfo], declared: int, rules: PartRules = S3_PARTS
                  ) -> str | None:
    """Why the stored ``parts`` do not make exactly the declared upload (None: they do)."""
    if not parts:
        return "no parts were uploaded"
    numbers = [part.number for part in parts]
    if numbers != list(range(1, len(parts) + 1)):
        return f"parts {numbers} are not numbered 1 to {len(parts)} without a gap"
    large = [part.number for part in parts if part.size > rules.max_size]
    if large:
        return f"parts {large} are over {rules.store}'s maximum of {rules.max_size} bytes"
    small = [part.number for part in parts[:-1] if part.size < rules.min_size]
    if small:
        return f"parts {small} are under {rules.store}'s minimum of {rules.min_size} bytes"
    total = sum(part.size for part in parts)
    if total != declared:
        return f"the parts hold {total} bytes but {declared} were declared"
    return None


class S3Multipart:
    """An S3 backend's multipart-upload calls (boto3 for the API, SigV4 for part URLs)."""

    def __init__(self, backend: StorageBackend) -> None:
        config = _s3_credentials(backend)
        if config is None:
            raise ConfigurationError(
                f"backend {backend.key!r} is not S3 with static credentials")
        self.backend = backend
        self.config = config
        self.bucket = str(config["bucket"])
        prefix = (getattr(backend.store, "prefix", None) or "").strip("/")  # type: ignore[attr-defined]
        self.prefix = f"{prefix}/" if prefix else ""

    def _client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - the aws extra brings both
            raise ConfigurationError(
                "S3 multipart upload sessions need boto3: pip install 'storeroom[aws]'"
            ) from exc
        config = self.config
        endpoint = config.get("endpoint") or None
        virtual = str(config.get("virtual_hosted_style_request", "")).lower() == "true"
        return boto3.client(
            "s3", endpoint_url=endpoint,
            aws_access_key_id=str(config["access_key_id"]),
            aws_secret_access_key=str(config["secret_access_key"]),
            aws_session_token=config.get("token") or config.get("session_token"),
            region_name=str(config.get("region") or "us-east-1"),
            config=Config(s3={"addressing_style": "virtual" if virtual else "path"}),
        )

    def key(self, path: str) -> str:
        """The object key of ``path`` (the backend's prefix applied)."""
        return self.prefix + safe_path(path)

    def create(self, path: str, content_type: str) -> str:
        """Start a multipart upload to ``path``; return its upload id."""
        answer = self._client().create_multipart_upload(
            Bucket=self.bucket, Key=self.key(path), ContentType=content_type)
        return str(answer["UploadId"])

    def part_url(self, path: str, upload_id: str, number: int, size: int | None, *,
                 expires_in: int, now: datetime) -> str:
        """A presigned ``PUT`` of part ``number``, exactly ``size`` bytes long if given."""
        from storeroom.uploads._sigv4 import presign

        base, key_path = _s3_location(self.backend, self.config, path)
        config = self.config
        headers = {"host": base.split("://", 1)[1]}
        if size is not None:
            headers["content-length"] = str(size)
        return presign(
            method="PUT", url_base=base, key_path=key_path, headers=headers,
            query={"partNumber": str(number), "uploadId": upload_id},
            access_key=str(config["access_key_id"]),
            secret_key=str(config["secret_access_key"]),
            session_token=config.get("token") or config.get("session_token"),
            region=str(config.get("region") or "us-east-1"), expires_in=expires_in, now=now,
        )

    def parts(self, path: str, upload_id: str) -> list[PartInfo]:
        """The parts stored so far, in order (all pages of ``ListParts``)."""
        client = self._client()
        found: list[PartInfo] = []
        marker = 0
        while True:
            answer = client.list_parts(Bucket=self.bucket, Key=self.key(path),
                                       UploadId=upload_id, PartNumberMarker=marker)
            found += [PartInfo(int(p["PartNumber"]), int(p["Size"]), str(p["ETag"]))
                      for p in answer.get("Parts", [])]
            if not answer.get("IsTruncated"):
                return found
            marker = int(answer["NextPartNumberMarker"])

    def finish(self, path: str, upload_id: str, parts: list[PartInfo]) -> None:
        """Complete the upload with ``parts`` (as :meth:`parts` listed them)."""
        self._client().complete_multipart_upload(
            Bucket=self.bucket, Key=self.key(path), UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag}
                                       for p in parts]})

    def abort(self, path: str, upload_id: str) -> None:
        """Abort the upload and drop its parts; an upload already gone is not an error."""
        client = self._client()
        try:
            client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(path),
                                          UploadId=upload_id)
        except client.exceptions.NoSuchUpload:
            pass

    def exists(self, upload_id: str, path: str) -> bool:
        """Whether the multipart upload is still open."""
        client = self._client()
        try:
            client.list_parts(Bucket=self.bucket, Key=self.key(path), UploadId=upload_id,
                              MaxParts=1)
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
        config = _azure_account(backend)
        if config is None:
            raise ConfigurationError(
                f"backend {backend.key!r} is not Azure with an account key")
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
                "'storeroom[azure]'") from exc
        config = self.config
        account = str(config["account_name"])
        endpoint = str(config.get("endpoint") or f"https://{account}.blob.core.windows.net")
        return BlobClient(account_url=endpoint, container_name=str(config["container_name"]),
                          blob_name=self.prefix + safe_path(path),
                          credential={"account_name": account,
                                      "account_key": str(config["account_key"])})

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
            content_settings=ContentSettings(content_type=content_type))

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


# -- tus parts ------------------------------------------------------------------------------

TUS_PREFIX = "_uploads/tus"


def tus_parts_prefix(path: str) -> str:
    """Where the parts of a tus upload to ``path`` are kept until the last byte arrives.

    Named by a digest of the path: one folder per upload, whatever the path's length, and
    nothing of the client's file name in it.
    """
    digest = hashlib.sha256(safe_path(path).encode()).hexdigest()[:40]
    return f"{TUS_PREFIX}/{digest}/"


@dataclass(frozen=True, slots=True)
class TusPart:
    """One stored ``PATCH`` of a tus upload: its offset, size and object path."""

    offset: int
    size: int
    path: str


def _tus_part(info: ObjectInfo, prefix: str) -> TusPart | None:
    name = info.path[len(prefix):] if info.path.startswith(prefix) else info.path
    name = name.rsplit("/", 1)[-1]
    if not name.isdigit():
        return None
    return TusPart(int(name), info.size, info.path)


def tus_part_path(path: str, offset: int) -> str:
    """The object holding the ``PATCH`` that starts at ``offset``."""
    return f"{tus_parts_prefix(path)}{offset:020d}"


def tus_offset(parts: list[TusPart]) -> int:
    """The upload's offset: the end of the contiguous run of parts from byte 0.

    A part that does not start where the previous one ends (left by a request that raced
    another) is ignored; it is removed with the others at the end.
    """
    offset = 0
    for part in sorted(parts, key=lambda p: p.offset):
        if part.offset == offset:
            offset += part.size
    return offset


def tus_chain(parts: list[TusPart]) -> list[TusPart]:
    """The contiguous run of parts from byte 0, in order (what :func:`tus_offset` counts)."""
    chain: list[TusPart] = []
    offset = 0
    for part in sorted(parts, key=lambda p: p.offset):
        if part.offset == offset and part.size > 0:
            chain.append(part)
            offset += part.size
    return chain


def tus_parts(backend: StorageBackend, path: str) -> list[TusPart]:
    """The parts stored for a tus upload to ``path``."""
    prefix = tus_parts_prefix(path)
    return [part for info in backend.list(prefix.rstrip("/"))
            if (part := _tus_part(info, prefix)) is not None]


async def tus_parts_async(backend: StorageBackend, path: str) -> list[TusPart]:
    """Async form of :func:`tus_parts`."""
    prefix = tus_parts_prefix(path)
    return [part async for info in backend.list_async(prefix.rstrip("/"))
            if (part := _tus_part(info, prefix)) is not None]


def tus_concat(backend: StorageBackend, chain: list[TusPart]) -> Iterator[bytes]:
    """The bytes of ``chain``'s parts in order, streamed."""
    for part in chain:
        for chunk in backend.stream(part.path):
            yield bytes(chunk)  # a copy: see tus_concat_async


async def tus_concat_async(backend: StorageBackend, chain: list[TusPart]
                           ) -> AsyncIterator[bytes]:
    """Async form of :func:`tus_concat`."""
    for part in chain:
        async for chunk in await backend.stream_async(part.path):
            # A copy: a chunk read by obstore can share its buffer with the rest of the read,
            # and a write holding chunks would then keep whole parts alive (measured: the
            # server's memory grew with the file's size without it).
            yield bytes(chunk)


def delete_tus_parts(backend: StorageBackend, path: str) -> None:
    """Remove every object kept for the tus upload to ``path`` (its parts, its tombstone)."""
    for info in list(backend.list(tus_parts_prefix(path).rstrip("/"))):
        try:
            backend.delete(info.path)
        except ObjectNotFound:
            pass


async def delete_tus_parts_async(backend: StorageBackend, path: str) -> None:
    """Async form of :func:`delete_tus_parts`."""
    for info in [info async for info in backend.list_async(tus_parts_prefix(path).rstrip("/"))]:
        try:
            await backend.delete_async(info.path)
        except ObjectNotFound:
            pass


# -- create-only writes that stream ---------------------------------------------------------
#
# A create-only write of a large body (``overwrite=False``) is one conditional PUT on
# obstore stores, which holds the whole body in memory (measured: the server grew by the
# body's size). So on obstore stores the body is streamed (multipart) into a scratch object,
# which is then copied to its path with obstore's copy-if-not-exists (a hard link on local
# disk): still create-only, and flat in memory. Other backends write create-only directly.


def _native_store(backend: StorageBackend) -> Any:
    from storeroom.backends.obstore import ObstoreBackend

    if isinstance(backend, ObstoreBackend) and getattr(backend, "kind", None) in (
        "local", "memory"
    ):
        return backend.store
    return None


def _scratch() -> str:
    import uuid

    return f"{TUS_PREFIX}/scratch/{uuid.uuid4().hex}"


def put_create_only(backend: StorageBackend, path: str, chunks: Iterator[bytes], *,
                    content_type: str | None = None, checksum: str | None = "sha256",
                    relay: Any = None) -> PutResult:
    """Stream ``chunks`` into a new object at ``path``; :class:`ObjectExists` if one is there.

    ``relay`` wraps ``chunks`` for the write when they are read from an obstore stream
    (a sync obstore write cannot read one: see ``storeroom.backends.transfer._Relay``).
    """
    import obstore

    from storeroom.errors import ObjectExists

    store = _native_store(backend)
    target = _scratch() if store is not None else path

    def write(body: Iterator[bytes]) -> PutResult:
        return backend.put(target, body, content_type=content_type, checksum=checksum,
                           overwrite=store is not None)

    if relay is not None:
        with relay(chunks) as relayed:
            result = write(iter(relayed))
    else:
        result = write(chunks)
    if store is None:
        return result
    try:
        obstore.copy(store, target, safe_path(path), overwrite=False)
    except obstore.exceptions.AlreadyExistsError:
        raise ObjectExists(f"an object already exists at {path!r}") from None
    finally:
        backend.delete(target)
    return replace(result, path=path)


async def put_create_only_async(backend: StorageBackend, path: str,
                                chunks: AsyncIterator[bytes], *,
                                content_type: str | None = None,
                                checksum: str | None = "sha256") -> PutResult:
    """Async form of :func:`put_create_only`."""
    import obstore

    from storeroom.errors import ObjectExists

    store = _native_store(backend)
    target = _scratch() if store is not None else path
    result = await backend.put_async(target, chunks, content_type=content_type,
                                     checksum=checksum, overwrite=store is not None)
    if store is None:
        return result
    try:
        await obstore.copy_async(store, target, safe_path(path), overwrite=False)
    except obstore.exceptions.AlreadyExistsError:
        raise ObjectExists(f"an object already exists at {path!r}") from None
    finally:
        await backend.delete_async(target)
    return replace(result, path=path)


def assemble(backend: StorageBackend, path: str, chain: list[TusPart],
             content_type: str | None, relay: Any = None) -> None:
    """Stream ``chain``'s parts, in order, into a new object at ``path`` (create-only)."""
    put_create_only(backend, path, tus_concat(backend, chain), content_type=content_type,
                    relay=relay)


async def assemble_async(backend: StorageBackend, path: str, chain: list[TusPart],
                         content_type: str | None) -> None:
    """Async form of :func:`assemble`."""
    await put_create_only_async(backend, path, tus_concat_async(backend, chain),
                                content_type=content_type)
