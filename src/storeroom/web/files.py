"""Serving a FileObject as an HTTP response (what the framework helpers build on)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from storeroom.errors import ObjectNotFound, UnsafePath
from storeroom.file import FileObject
from storeroom.media.sniff import SNIFF_BYTES, sniff_type
from storeroom.paths import safe_path
from storeroom.registry import StorageRegistry
from storeroom.signing import SignedRequest
from storeroom.web.protocol import Download, Reply, plan_download

__all__ = [
    "FileResponsePlan",
    "aread_head",
    "plan_file_response",
    "plan_file_response_async",
    "read_head",
    "upload_target",
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


@dataclass
class FileResponsePlan:
    """Status, headers and body of a response serving a FileObject.

    ``download`` is the byte window to stream; when it is None the body is ``content`` (the
    short text of a 404 or 416, empty for a 304).
    """

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


def _planned(outcome: Download | Reply) -> FileResponsePlan:
    if isinstance(outcome, Reply):
        return FileResponsePlan(outcome.status, outcome.headers, None, outcome.body)
    return FileResponsePlan(outcome.status, outcome.headers, outcome)


def _missing() -> FileResponsePlan:
    return _planned(Reply.text(404, "not found"))


def plan_file_response(
    file: FileObject, headers: Mapping[str, str], *, attachment: bool = True
) -> FileResponsePlan:
    """Decide how to answer a request for ``file`` (honours Range and If-None-Match).

    A missing object is a 404 plan, not an exception: the helpers answer it like the
    signed-URL handler does.
    """
    try:
        info = file.storage.head(file.path)
    except (ObjectNotFound, UnsafePath):
        return _missing()
    lowered = {k.lower(): v for k, v in headers.items()}
    return _planned(plan_download(info, _grant(file, attachment), lowered, []))


async def plan_file_response_async(
    file: FileObject, headers: Mapping[str, str], *, attachment: bool = True
) -> FileResponsePlan:
    """Async form of :func:`plan_file_response`."""
    try:
        info = await file.storage.head_async(file.path)
    except (ObjectNotFound, UnsafePath):
        return _missing()
    lowered = {k.lower(): v for k, v in headers.items()}
    return _planned(plan_download(info, _grant(file, attachment), lowered, []))


def body(file: FileObject, plan: FileResponsePlan) -> Iterator[bytes]:
    """The response body's chunks (the short text of a 404/416, nothing for a 304)."""
    if plan.download is None:
        return iter((plan.content,) if plan.content else ())
    if plan.download.end <= plan.download.start:
        return iter(())
    return file.storage.stream(file.path, start=plan.download.start, end=plan.download.end)


async def abody(file: FileObject, plan: FileResponsePlan) -> AsyncIterator[bytes]:
    """Async form of :func:`body`."""
    if plan.download is None:
        if plan.content:
            yield plan.content
        return
    if plan.download.end <= plan.download.start:
        return
    chunks = await file.storage.stream_async(
        file.path, start=plan.download.start, end=plan.download.end
    )
    async for chunk in chunks:
        yield chunk
