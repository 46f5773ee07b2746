"""The HTTP side of signed URLs, without I/O: routing, verification, ranges, headers.

Both :mod:`storeroom.web.asgi` and :mod:`storeroom.web.wsgi` call these functions and only
move bytes themselves, so the two servers answer every request the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from storeroom.backends.base import ObjectInfo, PutResult, StorageBackend
from storeroom.cors import CorsRules, preflight_headers, response_headers
from storeroom.errors import (
    BackendNotRegistered,
    SignatureExpired,
    SignatureInvalid,
    StoreroomError,
    UnsafePath,
)
from storeroom.paths import safe_path
from storeroom.registry import StorageRegistry
from storeroom.signing import HmacUrlSigner, SignedRequest

__all__ = [
    "ClientDisconnected",
    "Download",
    "Reply",
    "UploadTooLarge",
    "Verdict",
    "byte_range",
    "content_disposition",
    "download_headers",
    "count_upload",
    "judge",
    "not_modified",
    "plan_download",
    "preflight",
    "upload_content_type",
    "upload_problem",
    "upload_reply",
]

Headers = list[tuple[str, str]]


@dataclass
class Reply:
    """A complete small response (errors, preflights, 304s)."""

    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=list)

    @classmethod
    def text(cls, status: int, message: str, extra: Headers | None = None) -> Reply:
        body = (message + "\n").encode()
        headers = [("content-type", "text/plain; charset=utf-8"),
                   ("content-length", str(len(body))), *(extra or [])]
        return cls(status, body, headers)


@dataclass
class Verdict:
    """A verified request: the backend and what the signature grants."""

    backend: StorageBackend
    grant: SignedRequest
    cors: Headers


def _route(raw_path: str, prefix: str) -> tuple[str, str] | None:
    """``(backend key, object path)`` from a still-percent-encoded request path."""
    path = raw_path.split("?", 1)[0]
    prefix = prefix.rstrip("/")
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix):]
    backend, sep, rest = path.lstrip("/").partition("/")
    if not sep or not backend or not rest:
        return None
    return unquote(backend), unquote(rest)


def preflight(
    method: str, headers: Mapping[str, str], cors: CorsRules | None
) -> Reply | None:
    """The answer to a CORS preflight (``OPTIONS``), or None if this is not one."""
    if method != "OPTIONS":
        return None
    if cors is None:
        return Reply.text(403, "cross-origin requests are not allowed here")
    allowed = preflight_headers(
        cors, headers.get("origin"), headers.get("access-control-request-method"),
        headers.get("access-control-request-headers"),
    )
    if allowed is None:
        return Reply.text(403, "CORS preflight refused for this origin, method or header")
    return Reply(204, b"", list(allowed.items()))


def judge(
    registry: StorageRegistry,
    method: str,
    raw_path: str,
    prefix: str,
    query_string: str,
    headers: Mapping[str, str],
    cors: CorsRules | None,
) -> Verdict | Reply:
    """Route and verify a GET, HEAD or PUT; return the verdict or the error reply.

    ``raw_path`` is the request path as sent (percent-encoded); ``prefix`` is where the
    handler is mounted, stripped from it.

    403 for a bad, expired or wrong-method signature (and for an unsafe path, which no
    signature can cover), 404 for an unknown backend, 405 for other methods.
    """
    if method not in ("GET", "HEAD", "PUT"):
        return Reply.text(405, f"method {method} is not allowed", [("allow", "GET, HEAD, PUT")])
    routed = _route(raw_path, prefix)
    if routed is None:
        return Reply.text(404, "not found")
    key, object_path = routed
    try:
        safe_path(object_path)
        backend = registry.get_backend(key)
    except UnsafePath:
        return Reply.text(403, "forbidden path")
    except BackendNotRegistered:
        return Reply.text(404, "not found")
    signer = backend.url_signer
    if not isinstance(signer, HmacUrlSigner):
        return Reply.text(404, "not found")
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    try:
        grant = signer.verify(key, object_path, method, query)
    except SignatureExpired:
        return Reply.text(403, "this link has expired")
    except SignatureInvalid:
        return Reply.text(403, "invalid signature")
    extra = response_headers(cors, headers.get("origin"), method) if cors else {}
    return Verdict(backend, grant, list(extra.items()))


def upload_problem(grant: SignedRequest, headers: Mapping[str, str]) -> Reply | None:
    """Why an upload must be refused before reading its body (None: go ahead)."""
    if grant.content_type:
        sent = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if sent != grant.content_type.split(";", 1)[0].strip().lower():
            return Reply.text(415, f"this link accepts only {grant.content_type} uploads")
    length = headers.get("content-length", "")
    if grant.max_size is not None and length.isdigit() and int(length) > grant.max_size:
        return Reply.text(413, f"upload larger than the {grant.max_size} bytes allowed")
    return None


def byte_range(header: str | None, size: int) -> tuple[int, int] | Reply | None:
    """The ``[start, end)`` a ``Range`` header asks for; None for the whole object.

    Only single ranges are served; a multi-range request gets the whole object (which RFC
    9110 allows). An unsatisfiable range gets a 416 reply.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise ValueError
            start, end = max(0, size - length), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return Reply.text(416, "range not satisfiable", [("content-range", f"bytes */{size}")])
    return start, end


def content_disposition(filename: str) -> str:
    """An ``attachment`` disposition that survives any filename (RFC 6266 + 5987)."""
    plain = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download_headers(
    info: ObjectInfo,
    grant: SignedRequest,
    window: tuple[int, int] | None,
    extra: Headers,
) -> tuple[int, Headers]:
    """Status and headers of a GET/HEAD answer for ``info`` (206 when ``window`` is set)."""
    content_type = grant.content_type or info.content_type or "application/octet-stream"
    headers: Headers = [("content-type", content_type), ("accept-ranges", "bytes"),
                        ("cache-control", "private, no-store")]
    if info.etag:
        headers.append(("etag", info.etag if info.etag.startswith('"') else f'"{info.etag}"'))
    if grant.filename:
        headers.append(("content-disposition", content_disposition(grant.filename)))
    status = 200
    length = info.size
    if window is not None:
        start, end = window
        status, length = 206, end - start
        headers.append(("content-range", f"bytes {start}-{end - 1}/{info.size}"))
    headers.append(("content-length", str(length)))
    return status, headers + extra


def not_modified(info: ObjectInfo, headers: Mapping[str, str], extra: Headers) -> Reply | None:
    """A 304 when ``If-None-Match`` names the object's current ETag."""
    wanted = headers.get("if-none-match")
    if not wanted or not info.etag:
        return None
    etag = info.etag.strip('"')
    if wanted.strip() == "*" or etag in [t.strip().strip('"') for t in wanted.split(",")]:
        return Reply(304, b"", [("etag", f'"{etag}"'), *extra])
    return None


class UploadTooLarge(StoreroomError):
    """An upload through a signed URL exceeded the size the URL allows."""


class ClientDisconnected(StoreroomError):
    """The client went away before the upload was complete."""


def count_upload(grant: SignedRequest, seen: int, chunk: bytes) -> int:
    """Add ``chunk`` to the bytes received so far; raise UploadTooLarge past the limit."""
    seen += len(chunk)
    if grant.max_size is not None and seen > grant.max_size:
        raise UploadTooLarge(f"upload larger than the {grant.max_size} bytes allowed")
    return seen


def upload_reply(result: PutResult, extra: Headers) -> Reply:
    """The answer to a successful upload: 200 with the ETag and a small JSON body."""
    body = json.dumps({"path": result.path, "size": result.size,
                       "checksum": result.checksum}).encode()
    headers: Headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    if result.etag:
        headers.append(("etag", result.etag if result.etag.startswith('"') else f'"{result.etag}"'))
    return Reply(200, body, headers + extra)


def upload_content_type(grant: SignedRequest, headers: Mapping[str, str]) -> str | None:
    """The content type to store an upload with."""
    return grant.content_type or headers.get("content-type") or None


@dataclass
class Download:
    """How to answer a GET/HEAD: status, headers and the byte window to stream."""

    status: int
    headers: Headers
    start: int
    end: int


def plan_download(
    info: ObjectInfo, grant: SignedRequest, headers: Mapping[str, str], extra: Headers
) -> Download | Reply:
    """Everything about a download but the bytes: 304, 416, 206 or 200 and their headers."""
    reply = not_modified(info, headers, extra)
    if reply is not None:
        return reply
    window = byte_range(headers.get("range"), info.size)
    if isinstance(window, Reply):
        return window
    status, response_headers = download_headers(info, grant, window, extra)
    start, end = window if window is not None else (0, info.size)
    return Download(status, response_headers, start, end)
