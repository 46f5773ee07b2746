"""Serving a FileObject as an HTTP response (what the framework helpers build on)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

from storeroom.file import FileObject
from storeroom.registry import StorageRegistry
from storeroom.signing import SignedRequest
from storeroom.web.protocol import Download, Reply, plan_download

__all__ = [
    "FileResponsePlan",
    "plan_file_response",
    "plan_file_response_async",
    "upload_target",
]


def upload_target(
    filename: str | None,
    content_type: str | None,
    *,
    backend: str | None = None,
    path: str | None = None,
    registry: StorageRegistry | None = None,
) -> FileObject:
    """The FileObject a framework's multipart upload is saved into."""
    return FileObject(
        backend=backend, filename=filename or "upload", path=path,
        content_type=content_type or None, registry=registry,
    )


@dataclass
class FileResponsePlan:
    """Status, headers and body of a response serving a FileObject."""

    status: int
    headers: list[tuple[str, str]]
    download: Download | None


def _grant(file: FileObject, attachment: bool) -> SignedRequest:
    return SignedRequest(
        backend=file.backend or "", path=file.path, method="GET", expires=0,
        content_type=file.content_type, filename=file.filename if attachment else None,
    )


def _planned(outcome: Download | Reply) -> FileResponsePlan:
    if isinstance(outcome, Reply):
        return FileResponsePlan(outcome.status, outcome.headers, None)
    return FileResponsePlan(outcome.status, outcome.headers, outcome)


def plan_file_response(
    file: FileObject, headers: Mapping[str, str], *, attachment: bool = True
) -> FileResponsePlan:
    """Decide how to answer a request for ``file`` (honours Range and If-None-Match)."""
    info = file.storage.head(file.path)
    lowered = {k.lower(): v for k, v in headers.items()}
    return _planned(plan_download(info, _grant(file, attachment), lowered, []))


async def plan_file_response_async(
    file: FileObject, headers: Mapping[str, str], *, attachment: bool = True
) -> FileResponsePlan:
    """Async form of :func:`plan_file_response`."""
    info = await file.storage.head_async(file.path)
    lowered = {k.lower(): v for k, v in headers.items()}
    return _planned(plan_download(info, _grant(file, attachment), lowered, []))


def body(file: FileObject, plan: FileResponsePlan) -> Iterator[bytes]:
    """The response body's chunks (nothing for 304/416)."""
    if plan.download is None or plan.download.end <= plan.download.start:
        return iter(())
    return file.storage.stream(file.path, start=plan.download.start, end=plan.download.end)


async def abody(file: FileObject, plan: FileResponsePlan) -> AsyncIterator[bytes]:
    """Async form of :func:`body`."""
    if plan.download is None or plan.download.end <= plan.download.start:
        return
    chunks = await file.storage.stream_async(
        file.path, start=plan.download.start, end=plan.download.end
    )
    async for chunk in chunks:
        yield chunk
