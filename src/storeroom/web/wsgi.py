"""The WSGI twin of :mod:`storeroom.web.asgi` (Flask, Django, any WSGI server)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from storeroom.backends.base import DEFAULT_READ_CHUNK_SIZE
from storeroom.cors import CorsRules
from storeroom.errors import ObjectExists, ObjectNotFound
from storeroom.registry import StorageRegistry, storages
from storeroom.uploads.multipart import (
    assemble,
    delete_tus_parts,
    put_create_only,
    tus_part_path,
    tus_parts,
)
from storeroom.web import tus
from storeroom.web.files import missing_object
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
    undecodable_path,
    upload_content_type,
    upload_problem,
    upload_reply,
)

__all__ = ["SignedUrlWsgiApp"]

StartResponse = Callable[..., Any]


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


class SignedUrlWsgiApp:
    """The WSGI app. ``registry`` defaults to ``storages``; ``cors`` answers preflights."""

    def __init__(
        self,
        registry: StorageRegistry | None = None,
        *,
        cors: CorsRules | None = None,
        chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
    ) -> None:
        self.registry = registry or storages
        self.cors = cors
        self.chunk_size = chunk_size

    def _reply(
        self, start_response: StartResponse, reply: Reply, head: bool = False
    ) -> Iterable[bytes]:
        start_response(_status(reply.status), reply.headers)
        return [b"" if head else reply.body]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        headers = _headers(environ)
        reply = tus.discovery(method, headers) or preflight(method, headers, self.cors)
        if reply is not None:
            return self._reply(start_response, reply)
        problem = undecodable_path(environ.get("RAW_URI") or environ.get("REQUEST_URI"))
        if problem is not None:
            return self._reply(start_response, problem, head=method == "HEAD")
        # PATH_INFO arrives decoded, its bytes as latin-1 text; percent-encode those bytes
        # again so names with '%' survive and the router decodes UTF-8 once, strictly.
        path_info = environ.get("PATH_INFO", "")
        try:
            raw_path = quote(path_info.encode("latin-1"), safe="/")
        except UnicodeEncodeError:
            # Some servers hand over already-decoded text; its characters are the path.
            raw_path = quote(path_info.encode("utf-8", "surrogateescape"), safe="/")
        if tus.is_tus(method, headers):
            return self._tus(environ, method, raw_path, headers, start_response)
        verdict = judge(
            self.registry, method, raw_path, "", environ.get("QUERY_STRING", ""), headers, self.cors
        )
        if isinstance(verdict, Reply):
            return self._reply(start_response, verdict, head=method == "HEAD")
        if method == "PUT":
            return self._upload(verdict, headers, environ, start_response)
        return self._download(verdict, headers, start_response, head=method == "HEAD")

    def _download(
        self,
        verdict: Verdict,
        headers: dict[str, str],
        start_response: StartResponse,
        *,
        head: bool,
    ) -> Iterable[bytes]:
        backend, grant = verdict.backend, verdict.grant
        try:
            info = backend.head(grant.path)
        except ObjectNotFound:
            found = missing_object(backend, grant.path)  # a variant not made yet: made now
            if isinstance(found, Reply):
                return self._reply(start_response, found, head=head)
            info = found
        plan = plan_download(info, grant, headers, verdict.cors)
        if isinstance(plan, Reply):
            return self._reply(start_response, plan, head=head)
        if head or plan.end <= plan.start:
            start_response(_status(plan.status), plan.headers)
            return [b""]
        try:
            # Opened before the status goes out: an object deleted since the HEAD is a 404.
            chunks = backend.stream(
                grant.path, start=plan.start, end=plan.end, chunk_size=self.chunk_size
            )
        except ObjectNotFound:
            return self._reply(start_response, Reply.text(404, "not found"))
        start_response(_status(plan.status), plan.headers)
        return chunks

    def _upload(
        self,
        verdict: Verdict,
        headers: dict[str, str],
        environ: dict[str, Any],
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        grant = verdict.grant
        problem = upload_problem(grant, headers)
        if problem is not None:
            return self._reply(start_response, problem)
        chunks = _request_body(environ, headers, self.chunk_size, keep_partial=False)
        if isinstance(chunks, Reply):
            return self._reply(start_response, chunks)

        def body() -> Iterator[bytes]:
            seen = 0
            for chunk in chunks:
                seen = count_upload(grant, seen, chunk)
                yield chunk
            check_complete(seen, declared_length(headers))

        try:
            result = put_create_only(
                verdict.backend,
                grant.path,
                body(),
                content_type=upload_content_type(grant, headers),
            )
        except UploadTooLarge as exc:
            return self._reply(start_response, Reply.text(413, str(exc), verdict.cors))
        except ObjectExists:
            return self._reply(start_response, already_exists(verdict.cors))
        except ClientDisconnected as exc:
            return self._reply(start_response, Reply.text(400, str(exc), verdict.cors))
        return self._reply(start_response, upload_reply(result, verdict.cors))

    # -- tus ----------------------------------------------------------------------------------

    def _tus(
        self,
        environ: dict[str, Any],
        method: str,
        raw_path: str,
        headers: dict[str, str],
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        reply = tus.version_problem(method, headers)
        if reply is not None:
            return self._reply(start_response, reply)
        query = environ.get("QUERY_STRING", "")
        verdict = judge(
            self.registry, "PUT", raw_path, "", query, headers, self.cors, expired_status=410
        )
        if isinstance(verdict, Reply):
            verdict.headers.append(("tus-resumable", tus.TUS_VERSION))
            return self._reply(start_response, verdict, head=method == "HEAD")
        backend, grant, extra = verdict.backend, verdict.grant, verdict.cors
        state = _tus_state(verdict)
        if method == "POST":
            script = quote(environ.get("SCRIPT_NAME", "").encode("latin-1"), safe="/")
            location = script + raw_path + (f"?{query}" if query else "")
            return self._reply(start_response, tus.creation(grant, headers, location, state, extra))
        if method == "HEAD":
            if state.ready:  # every byte arrived but the assembly was cut short
                state = _assemble(verdict, state)
            return self._reply(start_response, tus.status(grant, state, extra), head=True)
        if method == "DELETE":
            problem = tus.termination(grant, state, extra)
            if problem is None:
                delete_tus_parts(backend, grant.path)
                backend.put(tus.tombstone_path(grant.path), b"")
                problem = tus.terminated(grant, extra)
            return self._reply(start_response, problem)
        return self._patch(verdict, state, headers, environ, start_response)

    def _patch(
        self,
        verdict: Verdict,
        state: tus.TusState,
        headers: dict[str, str],
        environ: dict[str, Any],
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        backend, grant, extra = verdict.backend, verdict.grant, verdict.cors
        problem = tus.patch_problem(grant, headers, state, extra)
        if problem is not None:
            return self._reply(start_response, problem)
        chunks = _request_body(environ, headers, self.chunk_size, keep_partial=True)
        if isinstance(chunks, Reply):
            return self._reply(start_response, chunks)

        def body() -> Iterator[bytes]:
            seen = 0
            for chunk in chunks:
                seen = tus.check_part(state, seen, chunk)
                yield chunk

        part = tus_part_path(grant.path, state.offset)
        try:
            result = put_create_only(backend, part, body(), checksum=None)
        except UploadTooLarge as exc:
            return self._reply(start_response, Reply.text(413, str(exc), extra))
        except ObjectExists:
            return self._reply(
                start_response,
                Reply.text(409, "another request is writing at this offset; ask with HEAD", extra),
            )
        if result.size == 0:
            backend.delete(part)
        state = _tus_state(verdict)
        if state.ready:
            state = _assemble(verdict, state)
        return self._reply(start_response, tus.patched(grant, state.offset, extra))


def _request_body(
    environ: dict[str, Any], headers: dict[str, str], chunk_size: int, *, keep_partial: bool
) -> Iterator[bytes] | Reply:
    """The request body in chunks, never read past its declared length; 411 when unsafe.

    Without a length, reading to the end is only safe where the server marks the input as
    terminated (chunked requests on Werkzeug, Gunicorn, ...); elsewhere it could block
    forever. With ``keep_partial`` a client that goes away ends the body (a tus part keeps
    what arrived); otherwise the read error propagates.
    """
    stream = environ["wsgi.input"]
    remaining = declared_length(headers)
    if remaining is None and not environ.get("wsgi.input_terminated"):
        return Reply.text(
            411, "send a Content-Length (this server cannot stream a body without one)"
        )

    def chunks() -> Iterator[bytes]:
        nonlocal remaining
        while remaining is None or remaining > 0:
            size = chunk_size if remaining is None else min(chunk_size, remaining)
            try:
                chunk = stream.read(size)
            except OSError:
                if keep_partial:
                    return
                raise
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk

    return chunks()


def _tus_state(verdict: Verdict) -> tus.TusState:
    backend, grant = verdict.backend, verdict.grant
    parts = tus_parts(backend, grant.path)
    try:
        assembled: int | None = backend.head(grant.path).size
    except ObjectNotFound:
        assembled = None
    ended = backend.exists(tus.tombstone_path(grant.path))
    return tus.state_of(grant, parts, assembled, ended)


def _assemble(verdict: Verdict, state: tus.TusState) -> tus.TusState:
    """Stream the parts, in order, into the upload's object; then drop them."""
    backend, grant = verdict.backend, verdict.grant
    from storeroom.backends.relay import Relay

    # The parts are read in a thread of their own: a sync obstore write cannot read a sync
    # obstore stream inside its runtime (see Relay).
    try:
        assemble(backend, grant.path, state.chain, grant.content_type, relay=Relay)
    except ObjectExists:  # a concurrent request assembled it
        pass
    delete_tus_parts(backend, grant.path)
    return _tus_state(verdict)
