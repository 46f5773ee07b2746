"""An ASGI app serving storeroom's signed URLs: GET/HEAD with ranges, PUT uploads.

Mount it where the signer's ``base_url`` points (Litestar, FastAPI/Starlette and any ASGI
server can mount it). Downloads stream from the backend; uploads stream to it, with the
size limit and content type the URL was signed with enforced as the bytes arrive.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from storeroom.backends.base import DEFAULT_READ_CHUNK_SIZE
from storeroom.cors import CorsRules
from storeroom.errors import ObjectExists, ObjectNotFound
from storeroom.registry import StorageRegistry, storages
from storeroom.web.protocol import (
    ClientDisconnected,
    Reply,
    UploadTooLarge,
    Verdict,
    already_exists,
    check_complete,
    count_upload,
    declared_length,
    judge,
    plan_download,
    preflight,
    upload_content_type,
    upload_problem,
    upload_reply,
)

__all__ = ["SignedUrlApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _send_reply(send: Send, reply: Reply, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": reply.status,
                "headers": _encode(reply.headers)})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})


class SignedUrlApp:
    """The ASGI app. ``registry`` defaults to ``storages``; ``cors`` answers preflights.

    ``mount_path`` is the prefix of the URLs it serves when the framework does not say so in
    ``root_path`` (Starlette and FastAPI mounts do; Litestar's plugin passes it).
    """

    def __init__(
        self,
        registry: StorageRegistry | None = None,
        *,
        cors: CorsRules | None = None,
        chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
        mount_path: str | None = None,
    ) -> None:
        self.registry = registry or storages
        self.cors = cors
        self.chunk_size = chunk_size
        self.mount_path = mount_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope["method"].upper()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        reply = preflight(method, headers, self.cors)
        if reply is not None:
            await _send_reply(send, reply)
            return
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if raw else quote(scope.get("path", ""))
        verdict = judge(
            self.registry, method, raw_path, self.mount_path or scope.get("root_path", ""),
            scope.get("query_string", b"").decode("latin-1"), headers, self.cors,
        )
        if isinstance(verdict, Reply):
            await _send_reply(send, verdict, head=method == "HEAD")
        elif method == "PUT":
            await self._upload(verdict, headers, receive, send)
        else:
            await self._download(verdict, headers, send, head=method == "HEAD")

    async def _download(
        self, verdict: Verdict, headers: dict[str, str], send: Send, *, head: bool
    ) -> None:
        backend, grant = verdict.backend, verdict.grant
        try:
            info = await backend.head_async(grant.path)
        except ObjectNotFound:
            await _send_reply(send, Reply.text(404, "not found"), head=head)
            return
        plan = plan_download(info, grant, headers, verdict.cors)
        if isinstance(plan, Reply):
            await _send_reply(send, plan, head=head)
            return
        chunks: AsyncIterator[bytes] | None = None
        if not head and plan.end > plan.start:
            # Opened before the status goes out: an object deleted since the HEAD is a 404,
            # not a 200 that breaks off.
            try:
                chunks = await backend.stream_async(
                    grant.path, start=plan.start, end=plan.end, chunk_size=self.chunk_size
                )
            except ObjectNotFound:
                await _send_reply(send, Reply.text(404, "not found"))
                return
        await send({"type": "http.response.start", "status": plan.status,
                    "headers": _encode(plan.headers)})
        if chunks is not None:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _upload(
        self, verdict: Verdict, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        grant = verdict.grant
        problem = upload_problem(grant, headers)
        if problem is not None:
            await _send_reply(send, problem)
            return

        declared = declared_length(headers)

        async def body() -> AsyncIterator[bytes]:
            seen = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected("the client disconnected during the upload")
                chunk = message.get("body", b"")
                seen = count_upload(grant, seen, chunk)
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    check_complete(seen, declared)
                    return

        try:
            result = await verdict.backend.put_async(
                grant.path, body(), content_type=upload_content_type(grant, headers),
                overwrite=False,
            )
        except UploadTooLarge as exc:
            await _send_reply(send, Reply.text(413, str(exc), verdict.cors))
            return
        except ObjectExists:
            await _send_reply(send, already_exists(verdict.cors))
            return
        except ClientDisconnected as exc:
            # Usually nobody is listening any more; a body shorter than its Content-Length
            # from a client still connected gets told why.
            with contextlib.suppress(OSError, RuntimeError):
                await _send_reply(send, Reply.text(400, str(exc), verdict.cors))
            return
        await _send_reply(send, upload_reply(result, verdict.cors))
