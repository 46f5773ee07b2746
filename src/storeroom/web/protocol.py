"""The HTTP side of signed URLs, without I/O: routing, verification, ranges, headers.

Both :mod:`storeroom.web.asgi` and :mod:`storeroom.web.wsgi` call these functions and only
move bytes themselves, so the two servers answer every request the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from storeroom.backends.base import ObjectInfo, PutResult, StorageBackend
from storeroom.cors import CorsRules, preflight_headers, response_headers
from storeroom.errors import (
    BackendNotRegistered,
    SignatureExpired,
    SignatureInvalid,
    StoreroomError,
    UnsafePath,
)
from storeroom.media.sniff import ACTIVE_CONTENT_TYPES, is_active_content
from storeroom.paths import safe_path
from storeroom.registry import StorageRegistry
from storeroom.signing import HmacUrlSigner, SignedRequest

__all__ = [
    "ClientDisconnected",
    "Download",
    "MalformedPath",
    "Reply",
    "UploadTooLarge",
    "Verdict",
    "ACTIVE_CONTENT_TYPES",
    "already_exists",
    "byte_range",
    "check_complete",
    "content_disposition",
    "declared_length",
    "download_headers",
    "count_upload",
    "http_date",
    "judge",
    "range_applies",
    "not_modified",
    "plan_download",
    "preflight",
    "upload_content_type",
    "upload_problem",
    "undecodable_path",
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
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            *(extra or []),
        ]
        return cls(status, body, headers)


@dataclass
class Verdict:
    """A verified request: the backend and what the signature grants."""

    backend: StorageBackend
    grant: SignedRequest
    cors: Headers


class MalformedPath(StoreroomError):
    """A request path that is not percent-encoded UTF-8."""


def _decode(segment: str) -> str:
    """Percent-decode ``segment`` (raw bytes carried as latin-1 text) as strict UTF-8."""
    try:
        return unquote_to_bytes(segment.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise MalformedPath(f"request path {segment!r} is not UTF-8") from None


def undecodable_path(raw_uri: str | None) -> Reply | None:
    """400 when the request target as sent (``RAW_URI``/``REQUEST_URI``) is not UTF-8.

    Some WSGI servers (Werkzeug among them) replace invalid bytes in ``PATH_INFO`` with
    U+FFFD before the app sees them; the raw target still shows what the client sent.
    """
    if not raw_uri:
        return None
    path = raw_uri.split("?", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    try:
        _decode(path)
    except MalformedPath:
        return Reply.text(400, "the request path is not percent-encoded UTF-8")
    return None


def _route(raw_path: str, prefix: str) -> tuple[str, str] | None:
    """``(backend key, object path)`` from a still-percent-encoded request path.

    ``raw_path`` is text whose characters are the request's bytes (latin-1), as ASGI's
    ``raw_path`` and WSGI's ``PATH_INFO`` carry them; raises MalformedPath for non-UTF-8.
    """
    path = raw_path.split("?", 1)[0]
    prefix = prefix.rstrip("/")
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix) :]
    backend, sep, rest = path.lstrip("/").partition("/")
    if not sep or not backend or not rest:
        return None
    return _decode(backend), _decode(rest)


def preflight(method: str, headers: Mapping[str, str], cors: CorsRules | None) -> Reply | None:
    """The answer to a CORS preflight (``OPTIONS``), or None if this is not one."""
    if method != "OPTIONS":
        return None
    if cors is None:
        return Reply.text(403, "cross-origin requests are not allowed here")
    allowed = preflight_headers(
        cors,
        headers.get("origin"),
        headers.get("access-control-request-method"),
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
    *,
    expired_status: int = 403,
) -> Verdict | Reply:
    """Route and verify a GET, HEAD or PUT; return the verdict or the error reply.

    ``raw_path`` is the request path as sent (percent-encoded); ``prefix`` is where the
    handler is mounted, stripped from it.

    403 for a bad, expired or wrong-method signature (and for an unsafe path, which no
    signature can cover), 404 for an unknown backend, 405 for other methods. tus requests
    are verified as the ``PUT`` they continue, with ``expired_status`` 410.
    """
    if method not in ("GET", "HEAD", "PUT"):
        return Reply.text(405, f"method {method} is not allowed", [("allow", "GET, HEAD, PUT")])
    try:
        routed = _route(raw_path, prefix)
    except MalformedPath:
        return Reply.text(400, "the request path is not percent-encoded UTF-8")
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
        return Reply.text(expired_status, "this link has expired")
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
    if "content-length" in headers and declared_length(headers) is None:
        if _DIGITS.fullmatch(headers["content-length"].strip()):
            return Reply.text(413, "upload larger than any this server accepts")
        return Reply.text(400, "Content-Length must be a number of bytes")
    length = declared_length(headers)
    if grant.max_size is not None and length is not None and length > grant.max_size:
        return Reply.text(413, f"upload larger than the {grant.max_size} bytes allowed")
    return None


def byte_range(header: str | None, size: int) -> tuple[int, int] | Reply | None:
    """The ``[start, end)`` a ``Range`` header asks for; None for the whole object.

    Only single ranges are served; a multi-range request gets the whole object, and so does
    a header that is not a valid byte range (both as RFC 9110 allows). A valid range that
    lies wholly past the end gets a 416 reply.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, _, last_text = header[6:].strip().partition("-")
    first, last = _position(first_text.strip()), _position(last_text.strip())
    if first is _INVALID or last is _INVALID:
        return None
    if first is None:
        if last is None:
            return None
        if last == 0 or size == 0:
            return _unsatisfiable(size)
        return max(0, size - last), size
    if last is not None and last < first:
        return None
    if first >= size:
        return _unsatisfiable(size)
    return first, min(size, last + 1) if last is not None else size


_DIGITS = re.compile(r"[0-9]+")
_INVALID = -1
# Any position past this is past the end of every object; clamping keeps int() cheap and
# within Python's limit on digits converted (a 5,000-digit position is still valid HTTP).
_HUGE = 10**18


def _position(text: str) -> int | None:
    """A byte position of a range (None: empty, _INVALID: not ASCII digits)."""
    if not text:
        return None
    if not _DIGITS.fullmatch(text):
        return _INVALID
    return int(text) if len(text) < 19 else _HUGE


def _unsatisfiable(size: int) -> Reply:
    return Reply.text(416, "range not satisfiable", [("content-range", f"bytes */{size}")])


def http_date(moment: datetime) -> str:
    """``moment`` as an HTTP date (``Last-Modified``), naive datetimes taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def range_applies(info: ObjectInfo, headers: Mapping[str, str]) -> bool:
    """Whether a ``Range`` may be honoured: ``If-Range`` absent or naming this version.

    A client resuming a download sends the ETag (or date) it saw; if the object has changed
    since, it must get the whole new object rather than a piece of it.
    """
    condition = headers.get("if-range", "").strip()
    if not condition:
        return True
    if condition.startswith('"'):
        return bool(info.etag) and condition == _quoted(info.etag or "")
    if condition.startswith("W/") or info.last_modified is None:
        return False
    try:
        return parsedate_to_datetime(condition) == parsedate_to_datetime(
            http_date(info.last_modified)
        )
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def _quoted(etag: str) -> str:
    return etag if etag.startswith(('"', "W/")) else f'"{etag}"'


def content_disposition(filename: str) -> str:
    """An ``attachment`` disposition that survives any filename (RFC 6266 + 5987)."""
    plain = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _is_active(content_type: str) -> bool:
    # Served from the application's own origin, an uploaded page could act as the signed-in
    # user (stored XSS): active and ambiguous types go out as sandboxed downloads.
    return is_active_content(content_type)


_SAFE_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


def download_headers(
    info: ObjectInfo,
    grant: SignedRequest,
    window: tuple[int, int] | None,
    extra: Headers,
) -> tuple[int, Headers]:
    """Status and headers of a GET/HEAD answer for ``info`` (206 when ``window`` is set).

    Every answer carries ``X-Content-Type-Options: nosniff``; active content (HTML, SVG,
    XML, scripts: :data:`ACTIVE_CONTENT_TYPES`) is also sent as an attachment under
    ``Content-Security-Policy: sandbox``, so an uploaded page cannot run on this origin.
    """
    content_type = grant.content_type or info.content_type or "application/octet-stream"
    active = _is_active(content_type)
    if active and ("," in content_type or not _SAFE_HEADER_VALUE.fullmatch(content_type)):
        # A list or garbage is not a type a browser should guess from.
        content_type = "application/octet-stream"
    headers: Headers = [
        ("content-type", content_type),
        ("accept-ranges", "bytes"),
        ("cache-control", "private, no-store"),
        ("x-content-type-options", "nosniff"),
    ]
    if info.etag:
        headers.append(("etag", _quoted(info.etag)))
    if info.last_modified is not None:
        headers.append(("last-modified", http_date(info.last_modified)))
    if grant.filename or active:
        name = grant.filename or grant.path.rsplit("/", 1)[-1]
        headers.append(("content-disposition", content_disposition(name)))
    if active:
        headers.append(("content-security-policy", "sandbox; default-src 'none'"))
    status = 200
    length = info.size
    if window is not None:
        start, end = window
        status, length = 206, end - start
        headers.append(("content-range", f"bytes {start}-{end - 1}/{info.size}"))
    headers.append(("content-length", str(length)))
    return status, headers + extra


def not_modified(info: ObjectInfo, headers: Mapping[str, str], extra: Headers) -> Reply | None:
    """A 304 when ``If-None-Match`` names the object's current ETag (weak comparison)."""
    wanted = headers.get("if-none-match")
    if not wanted or not info.etag:
        return None
    etag = _opaque(info.etag)
    if wanted.strip() == "*" or etag in [_opaque(tag) for tag in wanted.split(",")]:
        return Reply(304, b"", [("etag", _quoted(info.etag)), *extra])
    return None


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return (tag[2:] if tag.startswith("W/") else tag).strip('"')


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


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The body length a request announces (None: not given or not a number)."""
    length = headers.get("content-length", "").strip()
    return int(length) if _DIGITS.fullmatch(length) and len(length) < 19 else None


def check_complete(seen: int, declared: int | None) -> None:
    """Raise ClientDisconnected when a body ended before the length it announced.

    Called when the body ends, before the store commits the upload, so a connection that
    drops mid-way never replaces an object with a truncated one.
    """
    if declared is not None and seen != declared:
        raise ClientDisconnected(f"the upload ended after {seen} of {declared} bytes")


def upload_reply(result: PutResult, extra: Headers) -> Reply:
    """The answer to a successful upload: 200 with the ETag and a small JSON body."""
    body = json.dumps(
        {"path": result.path, "size": result.size, "checksum": result.checksum}
    ).encode()
    headers: Headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    if result.etag:
        headers.append(("etag", _quoted(result.etag)))
    return Reply(200, body, headers + extra)


def already_exists(extra: Headers) -> Reply:
    """409 for a PUT to a path that holds an object: signed uploads are create-only."""
    return Reply.text(
        409, "an object already exists here; upload URLs are create-only and single-use", extra
    )


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
    window = byte_range(headers.get("range"), info.size) if range_applies(info, headers) else None
    if isinstance(window, Reply):
        return window
    status, response_headers = download_headers(info, grant, window, extra)
    start, end = window if window is not None else (0, info.size)
    return Download(status, response_headers, start, end)
