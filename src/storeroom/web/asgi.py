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
from storeroom.uploads.multipart import (
    assemble_async,
    delete_tus_parts_async,
    put_create_only_async,
    tus_part_path,
    tus_parts_async,
)
from storeroom.web import tus
from storeroom.web.files import missing_object_async
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
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": _encode(reply.headers)}
    )
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
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        reply = tus.discovery(method, headers) or preflight(method, headers, self.cors)
        if reply is not None:
            await _send_reply(send, reply)
            return
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if raw else quote(scope.get("path", ""))
        if tus.is_tus(method, headers):
            await self._tus(scope, method, raw_path, headers, receive, send)
            return
        verdict = judge(
            self.registry,
            method,
            raw_path,
            self.mount_path or scope.get("root_path", ""),
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            self.cors,
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
            found = await missing_object_async(backend, grant.path)  # a variant: made now
            if isinstance(found, Reply):
                await _send_reply(send, found, head=head)
                return
            info = found
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
        await send(
            {"type": "http.response.start", "status": plan.status, "headers": _encode(plan.headers)}
        )
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
            result = await put_create_only_async(
                verdict.backend,
                grant.path,
                body(),
                content_type=upload_content_type(grant, headers),
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

    # -- tus ----------------------------------------------------------------------------------

    async def _tus(
        self,
        scope: Scope,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
    ) -> None:
        reply = tus.version_problem(method, headers)
        if reply is not None:
            await _send_reply(send, reply)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        verdict = judge(
            self.registry,
            "PUT",
            raw_path,
            self.mount_path or scope.get("root_path", ""),
            query,
            headers,
            self.cors,
            expired_status=410,
        )
        if isinstance(verdict, Reply):
            verdict.headers.append(("tus-resumable", tus.TUS_VERSION))
            await _send_reply(send, verdict, head=method == "HEAD")
            return
        backend, grant, extra = verdict.backend, verdict.grant, verdict.cors
        state = await _tus_state(verdict)
        if method == "POST":
            location = raw_path + (f"?{query}" if query else "")
            await _send_reply(send, tus.creation(grant, headers, location, state, extra))
        elif method == "HEAD":
            if state.ready:  # every byte arrived but the assembly was cut short
                state = await _assemble(verdict, state)
            await _send_reply(send, tus.status(grant, state, extra), head=True)
        elif method == "DELETE":
            problem = tus.termination(grant, state, extra)
            if problem is None:
                await delete_tus_parts_async(backend, grant.path)
                await backend.put_async(tus.tombstone_path(grant.path), b"")
                problem = tus.terminated(grant, extra)
            await _send_reply(send, problem)
        else:
            await self._patch(verdict, state, headers, receive, send)

    async def _patch(
        self,
        verdict: Verdict,
        state: tus.TusState,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
    ) -> None:
        backend, grant, extra = verdict.backend, verdict.grant, verdict.cors
        problem = tus.patch_problem(grant, headers, state, extra)
        if problem is not None:
            await _send_reply(send, problem)
            return

        async def body() -> AsyncIterator[bytes]:
            seen = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # keep what arrived: the client resumes after it
                chunk = message.get("body", b"")
                seen = tus.check_part(state, seen, chunk)
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        part = tus_part_path(grant.path, state.offset)
        try:
            result = await put_create_only_async(backend, part, body(), checksum=None)
        except UploadTooLarge as exc:
            await _send_reply(send, Reply.text(413, str(exc), extra))
            return
        except ObjectExists:
            await _send_reply(
                send,
                Reply.text(409, "another request is writing at this offset; ask with HEAD", extra),
            )
            return
        if result.size == 0:
            await backend.delete_async(part)
        state = await _tus_state(verdict)
        if state.ready:
            state = await _assemble(verdict, state)
        with contextlib.suppress(OSError, RuntimeError):
            await _send_reply(send, tus.patched(grant, state.offset, extra))


async def _tus_state(verdict: Verdict) -> tus.TusState:
    backend, grant = verdict.backend, verdict.grant
    parts = await tus_parts_async(backend, grant.path)
    try:
        assembled: int | None = (await backend.head_async(grant.path)).size
    except ObjectNotFound:
        assembled = None
    ended = await backend.exists_async(tus.tombstone_path(grant.path))
    return tus.state_of(grant, parts, assembled, ended)


async def _assemble(verdict: Verdict, state: tus.TusState) -> tus.TusState:
    """Stream the parts, in order, into the upload's object; then drop them."""
    backend, grant = verdict.backend, verdict.grant
    with contextlib.suppress(ObjectExists):  # a concurrent request assembled it
        await assemble_async(backend, grant.path, state.chain, grant.content_type)
    await delete_tus_parts_async(backend, grant.path)
    return await _tus_state(verdict)
