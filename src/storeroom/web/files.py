"""Serving a FileObject as an HTTP response, and saving an untrusted upload (what the
framework helpers and the signed-URL handlers build on).

Variants: a request for a variant that is recorded (or, for a signed URL, whose path is a
variant's) but not made yet makes it, once, and serves it (:func:`plan_file_response` with
``variant=``, :func:`missing_object`); see docs/variants.md.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from typing_extensions import Unpack

from storeroom.backends.base import ObjectInfo, StorageBackend
from storeroom.errors import ConfigurationError, ObjectNotFound, UnsafePath, ValidationError
from storeroom.file import FileObject
from storeroom.media.sniff import SNIFF_BYTES, sniff_type
from storeroom.media.validation import ValidatorLike, column_validators
from storeroom.media.variants import VariantError, VariantNotDeclared
from storeroom.paths import safe_path
from storeroom.registry import StorageRegistry
from storeroom.signing import SignedRequest
from storeroom.web.protocol import Download, Reply, plan_download

__all__ = [
    "FileResponsePlan",
    "ResponseOptions",
    "UploadOptions",
    "abody",
    "aread_head",
    "body",
    "missing_object",
    "missing_object_async",
    "plan_file_response",
    "plan_file_response_async",
    "read_head",
    "save_untrusted",
    "save_untrusted_async",
    "upload_target",
    "variant_reply",
]

READ_SIZE = 256 * 1024


def _server_path(filename: str, column: Any) -> tuple[str | None, str]:
    """``(backend key or None, fresh object path)``: the ORM layout of ``column`` if given."""
    from storeroom.orm.layout import default_path, safe_filename

    if column is None:
        return None, safe_path(f"uploads/{uuid.uuid4().hex}/{safe_filename(filename)}")
    kind = getattr(column.property.columns[0], "type", None)
    placeholder = FileObject(getattr(kind, "backend", None), filename)
    return getattr(kind, "backend", None), default_path(column.class_, column.key, placeholder)


def upload_target(
    filename: str | None,
    head: bytes,
    *,
    backend: str | None = None,
    path: str | None = None,
    column: Any = None,
    registry: StorageRegistry | None = None,
) -> FileObject:
    """The FileObject an untrusted upload is saved into.

    The client's ``filename`` is kept as ``filename`` only: the object path is ``path`` when
    the server gives one, else fresh (``column``'s ORM layout, or ``uploads/{uuid}/{name}``).
    The content type is sniffed from ``head``, the upload's first bytes; whatever the
    client declared is ignored.
    """
    name = filename or "upload"
    column_backend, fresh = _server_path(name, column)
    return FileObject(
        backend=backend or column_backend,
        filename=name,
        path=path or fresh,
        content_type=sniff_type(head, name),
        registry=registry,
    )


def read_head(read: Callable[[int], bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first :data:`SNIFF_BYTES` of a stream and an iterator over all of it, in chunks."""
    head = b""
    while len(head) < SNIFF_BYTES:
        chunk = read(SNIFF_BYTES - len(head))
        if not chunk:
            break
        head += chunk

    def chunks() -> Iterator[bytes]:
        if head:
            yield head
        while chunk := read(READ_SIZE):
            yield chunk

    return head, chunks()


async def aread_head(read: Callable[[int], Awaitable[bytes]]) -> tuple[bytes, AsyncIterator[bytes]]:
    """Async form of :func:`read_head` (``read`` is an upload's ``async read(n)``)."""
    head = b""
    while len(head) < SNIFF_BYTES:
        chunk = await read(SNIFF_BYTES - len(head))
        if not chunk:
            break
        head += chunk

    async def chunks() -> AsyncIterator[bytes]:
        if head:
            yield head
        while chunk := await read(READ_SIZE):
            yield chunk

    return head, chunks()


class UploadOptions(TypedDict, total=False):
    """Where and how ``save_upload`` (every framework helper) stores an untrusted upload."""

    backend: str | None
    """The backend's key (default: ``column``'s, else the default backend)."""
    filename: str | None
    """The name to record instead of the client's (kept as ``filename`` only, never a path)."""
    path: str | None
    """The object path (default: fresh, ``column``'s ORM layout or ``uploads/{uuid}/{name}``)."""
    column: Any
    """A ``StoredObject`` column (``Model.file``): its backend, layout, validators, variants."""
    registry: StorageRegistry | None
    """The registry to resolve ``backend`` in (default: ``storages``)."""
    validators: Iterable[ValidatorLike] | None
    """The validators to run on the bytes (default: ``column``'s)."""


def _untrusted(head: bytes, client_name: str | None, options: UploadOptions) -> FileObject:
    return upload_target(
        options.get("filename") or client_name,
        head,
        backend=options.get("backend"),
        path=options.get("path"),
        column=options.get("column"),
        registry=options.get("registry"),
    )


def _screening(options: UploadOptions) -> dict[str, Any]:
    """The keywords of the create-only save: the validators given, else the column's."""
    validators = column_validators(options.get("column"), options.get("validators"))
    return {"overwrite": False, "validators": validators}


def _recorded(file: FileObject, options: UploadOptions) -> FileObject:
    """The saved file with its column's variants recorded (made on first request)."""
    column = options.get("column")
    if column is None:
        return file
    from storeroom.orm.variants import record_column_variants

    return record_column_variants(file, column)


def save_untrusted(
    read: Callable[[int], bytes], client_name: str | None, **options: Unpack[UploadOptions]
) -> FileObject:
    """Stream an upload (``read(n)``, named ``client_name`` by the client) into the store.

    Create-only, in chunks. The object path is fresh (:func:`upload_target`); the client's
    name is kept only as ``filename``. The content type is sniffed from the first bytes,
    never taken from the client. The validators (``options["validators"]``, default the
    column's) run on the bytes as they stream: a refused file raises
    :class:`~storeroom.errors.ValidationError` and is not kept. What the bytes reveal (image
    size, PDF pages) goes into ``metadata``, and the column's variants are recorded.
    """
    head, chunks = read_head(read)
    file = _untrusted(head, client_name, options)
    return _recorded(file.save(chunks, **_screening(options)), options)


async def save_untrusted_async(
    read: Callable[[int], Awaitable[bytes]],
    client_name: str | None,
    **options: Unpack[UploadOptions],
) -> FileObject:
    """Async form of :func:`save_untrusted` (``read`` is an upload's ``async read(n)``)."""
    head, chunks = await aread_head(read)
    file = _untrusted(head, client_name, options)
    return _recorded(await file.save_async(chunks, **_screening(options)), options)


@dataclass
class FileResponsePlan:
    """Status, headers and body of a response serving a FileObject.

    ``file`` is what is served (the variant, when one was asked for). ``download`` is the
    byte window to stream; when it is None the body is ``content`` (the short text of a
    404, 416 or 422, empty for a 304).
    """

    file: FileObject
    status: int
    headers: list[tuple[str, str]]
    download: Download | None
    content: bytes = b""


def _grant(file: FileObject, attachment: bool) -> SignedRequest:
    return SignedRequest(
        backend=file.backend or "",
        path=file.path,
        method="GET",
        expires=0,
        content_type=file.content_type,
        filename=file.filename if attachment else None,
    )


def _planned(file: FileObject, outcome: Download | Reply) -> FileResponsePlan:
    if isinstance(outcome, Reply):
        return FileResponsePlan(file, outcome.status, outcome.headers, None, outcome.body)
    return FileResponsePlan(file, outcome.status, outcome.headers, outcome)


_VARIANT_FAILURES = (ObjectNotFound, ConfigurationError, VariantError, ValidationError)


def variant_reply(error: Exception) -> Reply:
    """The answer to a request for a variant that could not be served.

    404 for a variant not declared for the file (or not for its type), an original that is
    gone, or a path that is not a variant's; 422 when the original cannot be made into the
    variant (not a readable image or PDF, over the maker's ``max_pixels``); 500 for a server
    whose columns declare the variant ambiguously. The message says which.
    """
    if isinstance(error, VariantNotDeclared):
        return Reply.text(404, f"no such variant: {error}")
    if isinstance(error, ObjectNotFound):
        return Reply.text(404, "not found")
    if isinstance(error, (VariantError, ValidationError)):
        return Reply.text(422, f"the variant cannot be made from this file: {error}")
    return Reply.text(500, f"the variant cannot be made here: {error}")


def missing_object(backend: StorageBackend, path: str) -> ObjectInfo | Reply:
    """What to serve for ``path`` when it is not in ``backend``.

    A variant's path (``<original>.variants/<name>.<format>``) gets the variant, made now
    (once, however many requests ask: :func:`storeroom.orm.variants.ensure_variant_at`);
    any other path, or a variant that cannot be made, gets the reply saying why.
    """
    from storeroom.orm.variants import ensure_variant_at, split_variant_path

    if split_variant_path(path) is None:
        return Reply.text(404, "not found")
    try:
        ensure_variant_at(backend, path)
        return backend.head(path)
    except _VARIANT_FAILURES as exc:
        return variant_reply(exc)


async def missing_object_async(backend: StorageBackend, path: str) -> ObjectInfo | Reply:
    """Async form of :func:`missing_object`."""
    from storeroom.orm.variants import ensure_variant_at_async, split_variant_path

    if split_variant_path(path) is None:
        return Reply.text(404, "not found")
    try:
        await ensure_variant_at_async(backend, path)
        return await backend.head_async(path)
    except _VARIANT_FAILURES as exc:
        return variant_reply(exc)


class ResponseOptions(TypedDict, total=False):
    """How ``file_response`` (every framework helper) serves a file."""

    attachment: bool
    """Send it as a download named after ``filename`` (default True); False to show it
    inline (an ``<img>``), where its type allows."""
    variant: str | None
    """Serve this variant of the file instead (``"thumb"``), made now (once) if it is
    recorded but not made yet; an undeclared variant is a 404, an original that cannot be
    made into it a 422 (:func:`variant_reply`)."""


def _plan(
    file: FileObject,
    found: ObjectInfo | Reply,
    headers: Mapping[str, str],
    options: ResponseOptions,
) -> FileResponsePlan:
    if isinstance(found, Reply):
        return _planned(file, found)
    lowered = {k.lower(): v for k, v in headers.items()}
    grant = _grant(file, options.get("attachment", True))
    return _planned(file, plan_download(found, grant, lowered, []))


def _served(file: FileObject, variant: str | None) -> FileObject | Reply:
    """What a response serves: ``file``, or its recorded variant ``variant`` (or a 404)."""
    if variant is None:
        return file
    try:
        return file.variant(variant)
    except ConfigurationError as exc:
        return variant_reply(VariantNotDeclared(str(exc)))


def _made(original: FileObject, served: FileObject, variant: str | None) -> ObjectInfo | Reply:
    """What to serve when ``served`` is not in the store: a recorded variant is made now."""
    if variant is None:
        return missing_object(served.storage, served.path)
    from storeroom.orm.variants import ensure_variant

    try:
        made = ensure_variant(original, variant)
        return made.storage.head(made.path)
    except _VARIANT_FAILURES as exc:
        return variant_reply(exc)


async def _made_async(
    original: FileObject, served: FileObject, variant: str | None
) -> ObjectInfo | Reply:
    if variant is None:
        return await missing_object_async(served.storage, served.path)
    from storeroom.orm.variants import ensure_variant_async

    try:
        made = await ensure_variant_async(original, variant)
        return await made.storage.head_async(made.path)
    except _VARIANT_FAILURES as exc:
        return variant_reply(exc)


def plan_file_response(
    file: FileObject, headers: Mapping[str, str], **options: Unpack[ResponseOptions]
) -> FileResponsePlan:
    """Decide how to answer a request for ``file`` (honours Range and If-None-Match).

    ``options``: :class:`ResponseOptions`. A missing object, or a variant that cannot be
    served, is a plan with the status and short text of :func:`variant_reply`, not an
    exception: the helpers answer it like the signed-URL handler does. A variant that
    exists costs one request (its ``head``), as any file does.
    """
    served = _served(file, options.get("variant"))
    if isinstance(served, Reply):
        return _plan(file, served, headers, options)
    found: ObjectInfo | Reply
    try:
        found = served.storage.head(served.path)
    except UnsafePath:
        found = Reply.text(404, "not found")
    except ObjectNotFound:
        found = _made(file, served, options.get("variant"))
    return _plan(served, found, headers, options)


async def plan_file_response_async(
    file: FileObject, headers: Mapping[str, str], **options: Unpack[ResponseOptions]
) -> FileResponsePlan:
    """Async form of :func:`plan_file_response`."""
    served = _served(file, options.get("variant"))
    if isinstance(served, Reply):
        return _plan(file, served, headers, options)
    found: ObjectInfo | Reply
    try:
        found = await served.storage.head_async(served.path)
    except UnsafePath:
        found = Reply.text(404, "not found")
    except ObjectNotFound:
        found = await _made_async(file, served, options.get("variant"))
    return _plan(served, found, headers, options)


def body(plan: FileResponsePlan) -> Iterator[bytes]:
    """The response body's chunks (the short text of a 404/416/422, nothing for a 304)."""
    if plan.download is None:
        return iter((plan.content,) if plan.content else ())
    if plan.download.end <= plan.download.start:
        return iter(())
    file = plan.file
    return file.storage.stream(file.path, start=plan.download.start, end=plan.download.end)


async def abody(plan: FileResponsePlan) -> AsyncIterator[bytes]:
    """Async form of :func:`body`."""
    if plan.download is None:
        if plan.content:
            yield plan.content
        return
    if plan.download.end <= plan.download.start:
        return
    file = plan.file
    chunks = await file.storage.stream_async(
        file.path, start=plan.download.start, end=plan.download.end
    )
    async for chunk in chunks:
        yield chunk
