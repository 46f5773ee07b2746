"""HTTP endpoints that start resumable upload sessions and drive S3 multipart uploads.

Mounted under a prefix (``/uploads`` say), they answer JSON:

- ``POST {prefix}/resumable`` ``{"filename", "type", "size"}``: begin a session; the answer
  is :meth:`~storeroom.uploads.resumable.ResumableTarget.to_dict` (``id``, ``protocol``,
  the tus ``endpoint``).
- Uppy's S3 multipart ("Companion") protocol, so ``@uppy/aws-s3`` needs only
  ``companionEndpoint: prefix``: ``POST {prefix}/s3/multipart`` ``{"filename", "type",
  "metadata": {"size"}}`` begins a session (``uploadId`` and ``key`` are both its id);
  ``GET .../s3/multipart/{id}/{n}`` signs part ``n``; ``GET .../s3/multipart/{id}`` lists
  the parts S3 holds (resume); ``POST .../s3/multipart/{id}/complete`` completes the
  multipart upload from the parts S3 lists (the client's list is not trusted);
  ``DELETE .../s3/multipart/{id}`` aborts it.

The application still calls :func:`storeroom.uploads.complete` (its own endpoint) to verify
the upload and attach it to a row. Who may begin an upload is the application's decision:
pass ``authorize`` (called with the request's headers; return False for 403).

:func:`route` decides what a request asks for without I/O; :func:`run` and
:func:`run_async` perform it; :class:`ResumableUploadsApp` (ASGI) and
:class:`ResumableUploadsWsgiApp` move the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from storeroom.errors import ConfigurationError
from storeroom.registry import StorageRegistry
from storeroom.uploads import resumable
from storeroom.uploads.sessions import UploadLimits, UploadRejected, UploadSessionInvalid

__all__ = [
    "Call",
    "JsonReply",
    "ResumableConfig",
    "ResumableUploadsApp",
    "ResumableUploadsWsgiApp",
    "route",
    "run",
    "run_async",
]

MAX_JSON_BODY = 64 * 1024
"""The largest request body these endpoints read (they take small JSON documents)."""


@dataclass(frozen=True, slots=True)
class ResumableConfig:
    """Where resumable uploads go and what they may be.

    Args:
        destination: A backend key, a backend or a ``StoredObject`` column (as for
            :func:`~storeroom.uploads.begin`).
        limits: Size range and allowed types (checked at begin and at completion).
        expires_in: How long a session stays open (seconds).
        registry: The registry (default ``storages``).
        authorize: Called with the request headers before a session begins; False is 403.
    """

    destination: Any
    limits: UploadLimits | None = None
    expires_in: int = resumable.DEFAULT_RESUMABLE_TTL
    registry: StorageRegistry | None = None
    authorize: Callable[[Mapping[str, str]], bool] | None = None


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A JSON answer."""

    status: int
    payload: Any = field(default_factory=dict)

    def body(self) -> bytes:
        """The encoded payload."""
        return json.dumps(self.payload).encode()


@dataclass(frozen=True, slots=True)
class Call:
    """What a request asks for: ``action`` and its arguments."""

    action: str
    session_id: str = ""
    number: int | None = None
    filename: str = ""
    content_type: str = ""
    size: Any = None
    companion: bool = False


def _error(status: int, message: str, **extra: Any) -> JsonReply:
    return JsonReply(status, {"error": message, **extra})


def _declaration(body: Any, companion: bool) -> Call | JsonReply:
    if not isinstance(body, dict):
        return _error(400, "send a JSON object with filename, type and size")
    size = body.get("size")
    if companion:
        size = (body.get("metadata") or {}).get("size", size)
        if isinstance(size, str) and size.isdigit():
            size = int(size)
    filename, content_type = body.get("filename"), body.get("type")
    if not isinstance(filename, str) or not isinstance(content_type, str):
        return _error(400, "filename and type must be strings")
    return Call(
        "begin",
        filename=filename,
        content_type=content_type or "application/octet-stream",
        size=size,
        companion=companion,
    )


def route(method: str, subpath: str, query: str, body: Any) -> Call | JsonReply:
    """What ``method`` on ``subpath`` (below the mount prefix) asks for, or the error."""
    del query  # ``key`` repeats the session id; the id in the path is what counts
    segments = [unquote(s) for s in subpath.strip("/").split("/") if s]
    if segments == ["resumable"] and method == "POST":
        return _declaration(body, companion=False)
    if segments[:2] != ["s3", "multipart"]:
        return _error(404, "not found")
    rest = segments[2:]
    if not rest:
        return (
            _declaration(body, companion=True)
            if method == "POST"
            else _error(405, "POST begins a multipart upload")
        )
    session_id = rest[0]
    if len(rest) == 1:
        if method == "GET":
            return Call("list", session_id)
        if method == "DELETE":
            return Call("abort", session_id)
        return _error(405, "GET lists the parts, DELETE aborts")
    if len(rest) == 2 and rest[1] == "complete":
        return (
            Call("finish", session_id)
            if method == "POST"
            else _error(405, "POST completes the upload")
        )
    if len(rest) == 2 and method == "GET":
        if not rest[1].isdigit() or len(rest[1]) > 5:
            return _error(400, f"part number {rest[1]!r} is not a number from 1 to 10000")
        return Call("sign", session_id, number=int(rest[1]))
    return _error(404, "not found")


def _begun(call: Call, target: resumable.ResumableTarget) -> JsonReply:
    if call.companion:
        return JsonReply(200, {"uploadId": target.id, "key": target.id})
    return JsonReply(200, target.to_dict())


_REJECTED_STATUS = {"max_size": 413, "content_type": 415}


def _failure(exc: Exception) -> JsonReply:
    if isinstance(exc, UploadRejected):
        return _error(_REJECTED_STATUS.get(exc.rule, 400), str(exc), rule=exc.rule)
    if isinstance(exc, UploadSessionInvalid):
        return _error(404, str(exc))
    return _error(501, str(exc))


def _begin_arguments(call: Call, config: ResumableConfig) -> dict[str, Any]:
    """What :func:`~storeroom.uploads.resumable.begin_resumable` is called with."""
    return {
        "destination": config.destination,
        "filename": call.filename,
        "content_type": call.content_type,
        "size": call.size,
        "limits": config.limits,
        "expires_in": config.expires_in,
        "registry": config.registry,
    }


def run(call: Call, session: Any, config: ResumableConfig) -> JsonReply:
    """Perform ``call`` with a SQLAlchemy ``Session`` (committed on success)."""
    registry = config.registry
    try:
        if call.action == "begin":
            target = resumable.begin_resumable(session, **_begin_arguments(call, config))
            session.commit()
            return _begun(call, target)
        if call.action == "sign":
            assert call.number is not None
            return JsonReply(
                200,
                resumable.sign_part(session, call.session_id, call.number, None, registry=registry),
            )
        if call.action == "list":
            parts = resumable.list_parts(session, call.session_id, registry=registry)
            return JsonReply(200, [part.to_dict() for part in parts])
        if call.action == "finish":
            resumable.finish(session, call.session_id, registry=registry)
            return JsonReply(200, {"location": "", "key": call.session_id})
        resumable.abort(session, call.session_id, registry=registry)
        session.commit()
        return JsonReply(200, {})
    except (UploadRejected, UploadSessionInvalid, ConfigurationError) as exc:
        session.rollback()
        return _failure(exc)


async def run_async(call: Call, session: Any, config: ResumableConfig) -> JsonReply:
    """Async form of :func:`run` (``session`` is an ``AsyncSession``)."""
    registry = config.registry
    try:
        if call.action == "begin":
            target = await resumable.begin_resumable_async(
                session, **_begin_arguments(call, config)
            )
            await session.commit()
            return _begun(call, target)
        if call.action == "sign":
            assert call.number is not None
            return JsonReply(
                200,
                await resumable.sign_part_async(
                    session, call.session_id, call.number, None, registry=registry
                ),
            )
        if call.action == "list":
            parts = await resumable.list_parts_async(session, call.session_id, registry=registry)
            return JsonReply(200, [part.to_dict() for part in parts])
        if call.action == "finish":
            await resumable.finish_async(session, call.session_id, registry=registry)
            return JsonReply(200, {"location": "", "key": call.session_id})
        await resumable.abort_async(session, call.session_id, registry=registry)
        await session.commit()
        return JsonReply(200, {})
    except (UploadRejected, UploadSessionInvalid, ConfigurationError) as exc:
        await session.rollback()
        return _failure(exc)


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _decide(
    config: ResumableConfig,
    method: str,
    subpath: str,
    query: str,
    headers: Mapping[str, str],
    raw: bytes | None,
) -> Call | JsonReply:
    if raw is None:
        return _error(413, f"request bodies here are JSON of at most {MAX_JSON_BODY} bytes")
    call = route(method, subpath, query, _parse(raw))
    if (
        isinstance(call, Call)
        and call.action == "begin"
        and config.authorize is not None
        and not config.authorize(headers)
    ):
        return _error(403, "you may not upload here")
    return call


def _json_headers(reply: JsonReply, body: bytes) -> list[tuple[str, str]]:
    return [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
    ]


class ResumableUploadsApp:
    """The ASGI app: ``sessions()`` opens an ``AsyncSession`` (an ``async_sessionmaker``)."""

    def __init__(
        self, sessions: Callable[[], Any], config: ResumableConfig, *, mount_path: str | None = None
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.mount_path = mount_path

    async def __call__(
        self,
        scope: Any,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        raw: bytes | None = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if raw is not None:
                raw += message.get("body", b"")
                if len(raw) > MAX_JSON_BODY:
                    raw = None  # keep draining, answer 413
            if not message.get("more_body", False):
                break
        path = scope.get("path", "")
        prefix = (self.mount_path or scope.get("root_path", "")).rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix) :]
        call = _decide(
            self.config,
            scope["method"].upper(),
            path,
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            raw,
        )
        if isinstance(call, Call):
            async with self.sessions() as session:
                call = await run_async(call, session, self.config)
        body = call.body()
        await send(
            {
                "type": "http.response.start",
                "status": call.status,
                "headers": [(k.encode(), v.encode()) for k, v in _json_headers(call, body)],
            }
        )
        await send({"type": "http.response.body", "body": body})


class ResumableUploadsWsgiApp:
    """The WSGI app: ``sessions()`` opens a ``Session`` (a ``sessionmaker``)."""

    def __init__(self, sessions: Callable[[], Any], config: ResumableConfig) -> None:
        self.sessions = sessions
        self.config = config

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        from storeroom.web.wsgi import _headers, _status

        headers = _headers(environ)
        length = headers.get("content-length", "0").strip() or "0"
        raw: bytes | None = None
        if length.isdigit() and int(length) <= MAX_JSON_BODY:
            raw = environ["wsgi.input"].read(int(length)) if int(length) else b""
        call = _decide(
            self.config,
            environ["REQUEST_METHOD"].upper(),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            headers,
            raw,
        )
        if isinstance(call, Call):
            with self.sessions() as session:
                call = run(call, session, self.config)
        body = call.body()
        start_response(_status(call.status), _json_headers(call, body))
        return [body]
