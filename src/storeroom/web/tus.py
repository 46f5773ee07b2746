"""The tus 1.0 resumable-upload protocol on storeroom's signed URLs, without I/O.

Core protocol plus the creation, termination and expiration extensions
(https://tus.io/protocols/resumable-upload). A resumable upload session
(:func:`storeroom.uploads.resumable.begin_resumable`) hands the browser one signed ``PUT``
URL as the tus endpoint; that URL also names the upload (``POST`` answers with it as
``Location``), so the server needs no state beyond the store:

- each ``PATCH`` streams to its own part object (:func:`~storeroom.uploads.multipart.tus_part_path`,
  named by its offset, written create-only: two requests racing for one offset cannot both
  land); the upload's offset is the end of the contiguous parts from byte 0;
- a ``PATCH`` cut off mid-way keeps the bytes that arrived (tus asks servers to), so the
  client resumes from there after ``HEAD``;
- when the last byte arrives, the parts are streamed in order into the upload's object
  (create-only, with the signed content type) and deleted: memory stays flat;
- ``DELETE`` drops the parts and leaves a tombstone, so the URL answers 410 from then on;
  an upload already assembled is not deleted through it (409): it is the session's now.

The length must be exactly the size the URL was signed for (the declared size); a ``PATCH``
that would pass it is cut off with 413. :mod:`storeroom.web.asgi` and
:mod:`storeroom.web.wsgi` perform the I/O around these decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from storeroom.signing import SignedRequest
from storeroom.uploads.multipart import TusPart, tus_chain, tus_offset, tus_parts_prefix
from storeroom.web.protocol import Headers, Reply, UploadTooLarge, declared_length, http_date

__all__ = [
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "TusState",
    "check_part",
    "creation",
    "discovery",
    "is_tus",
    "patch_problem",
    "status",
    "termination",
    "tombstone_path",
    "version_problem",
]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,expiration"
OFFSET_TYPE = "application/offset+octet-stream"


def tombstone_path(path: str) -> str:
    """The marker a terminated upload leaves (its URL answers 410 while it is valid)."""
    return f"{tus_parts_prefix(path)}terminated"


def is_tus(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request is for the tus protocol (rather than a plain signed GET or PUT).

    ``POST``, ``PATCH`` and ``DELETE`` always are; ``HEAD`` and ``OPTIONS`` when they carry
    ``Tus-Resumable`` (an ``OPTIONS`` that is a CORS preflight is answered as one first).
    """
    return method in ("POST", "PATCH", "DELETE") or (
        method in ("HEAD", "OPTIONS") and "tus-resumable" in headers
    )


def _base(grant: SignedRequest, extra: Headers) -> Headers:
    expires = datetime.fromtimestamp(grant.expires, tz=timezone.utc)
    return [
        ("tus-resumable", TUS_VERSION),
        ("upload-expires", http_date(expires)),
        ("cache-control", "no-store"),
        *extra,
    ]


def _text(status: int, message: str, grant: SignedRequest | None, extra: Headers) -> Reply:
    head = _base(grant, extra) if grant is not None else [("tus-resumable", TUS_VERSION), *extra]
    return Reply.text(status, message, head)


def discovery(method: str, headers: Mapping[str, str]) -> Reply | None:
    """The answer to a tus ``OPTIONS`` (not a CORS preflight): versions and extensions."""
    if (
        method != "OPTIONS"
        or "tus-resumable" not in headers
        or ("access-control-request-method" in headers)
    ):
        return None
    return Reply(
        204,
        b"",
        [
            ("tus-resumable", TUS_VERSION),
            ("tus-version", TUS_VERSION),
            ("tus-extension", TUS_EXTENSIONS),
        ],
    )


def version_problem(method: str, headers: Mapping[str, str]) -> Reply | None:
    """412 for a client speaking another tus version (or none)."""
    if headers.get("tus-resumable", "").strip() != TUS_VERSION:
        return Reply.text(
            412,
            f"send Tus-Resumable: {TUS_VERSION} (the only version served)",
            [("tus-version", TUS_VERSION), ("tus-resumable", TUS_VERSION)],
        )
    return None


@dataclass(frozen=True, slots=True)
class TusState:
    """Where an upload stands, as the store shows it."""

    length: int
    parts: tuple[TusPart, ...] = ()
    assembled: int | None = None
    terminated: bool = False

    @property
    def offset(self) -> int:
        """Bytes received: the assembled object's size, else the contiguous parts'."""
        if self.assembled is not None:
            return self.assembled
        return tus_offset(list(self.parts))

    @property
    def chain(self) -> list[TusPart]:
        """The parts to assemble, in order."""
        return tus_chain(list(self.parts))

    @property
    def ready(self) -> bool:
        """Every byte is in parts and the object is not assembled yet."""
        return self.assembled is None and not self.terminated and self.offset == self.length


def _length(grant: SignedRequest) -> int:
    return grant.max_size if grant.max_size is not None else 0


def creation(
    grant: SignedRequest, headers: Mapping[str, str], location: str, state: TusState, extra: Headers
) -> Reply:
    """The answer to ``POST`` (creation): 201 with ``Location``, or why not."""
    if state.terminated:
        return _text(410, "this upload was terminated; begin a new one", grant, extra)
    if "upload-defer-length" in headers:
        return _text(400, "Upload-Defer-Length is not supported: send Upload-Length", grant, extra)
    length = declared_length({"content-length": headers.get("upload-length", "")})
    if length is None:
        return _text(400, "send Upload-Length (the size of the whole file in bytes)", grant, extra)
    if length != state.length:
        status = 413 if length > state.length else 400
        return _text(
            status,
            f"Upload-Length {length} is not the {state.length} bytes this upload was declared with",
            grant,
            extra,
        )
    return Reply(
        201,
        b"",
        [
            *_base(grant, extra),
            ("location", location),
            ("upload-offset", str(state.offset)),
            ("content-length", "0"),
        ],
    )


def status(grant: SignedRequest, state: TusState, extra: Headers) -> Reply:
    """The answer to ``HEAD``: the offset to resume from."""
    if state.terminated:
        return _text(410, "this upload was terminated", grant, extra)
    return Reply(
        200,
        b"",
        [
            *_base(grant, extra),
            ("upload-offset", str(state.offset)),
            ("upload-length", str(state.length)),
        ],
    )


def patch_problem(
    grant: SignedRequest, headers: Mapping[str, str], state: TusState, extra: Headers
) -> Reply | None:
    """Why a ``PATCH`` must be refused before reading its body (None: go ahead)."""
    if state.terminated:
        return _text(410, "this upload was terminated", grant, extra)
    sent = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if sent != OFFSET_TYPE:
        return _text(415, f"a PATCH must be sent as {OFFSET_TYPE}", grant, extra)
    offset = declared_length({"content-length": headers.get("upload-offset", "")})
    if offset is None:
        return _text(400, "send Upload-Offset (where this chunk starts)", grant, extra)
    if offset != state.offset:
        return Reply(
            409,
            f"Upload-Offset {offset} is not the upload's offset "
            f"{state.offset}; ask with HEAD and resume from there\n".encode(),
            [
                *_base(grant, extra),
                ("content-type", "text/plain; charset=utf-8"),
                ("upload-offset", str(state.offset)),
            ],
        )
    if "content-length" in headers:
        size = declared_length(headers)
        if size is None or offset + size > state.length:
            return _text(
                413, f"this chunk would pass the {state.length} bytes declared", grant, extra
            )
    return None


def check_part(state: TusState, seen: int, chunk: bytes) -> int:
    """Count ``chunk`` of a ``PATCH``; raise UploadTooLarge past the declared length."""
    seen += len(chunk)
    if state.offset + seen > state.length:
        raise UploadTooLarge(f"this chunk would pass the {state.length} bytes declared")
    return seen


def patched(grant: SignedRequest, offset: int, extra: Headers) -> Reply:
    """The answer to a ``PATCH`` that was stored: 204 with the new offset."""
    return Reply(204, b"", [*_base(grant, extra), ("upload-offset", str(offset))])


def termination(grant: SignedRequest, state: TusState, extra: Headers) -> Reply | None:
    """Why a ``DELETE`` cannot terminate the upload (None: terminate it, then 204)."""
    if state.terminated:
        return _text(410, "this upload was already terminated", grant, extra)
    if state.assembled is not None:
        return _text(
            409,
            "this upload is complete and belongs to its session now; it cannot be terminated",
            grant,
            extra,
        )
    return None


def terminated(grant: SignedRequest, extra: Headers) -> Reply:
    """The answer to a ``DELETE`` that terminated the upload."""
    return Reply(204, b"", _base(grant, extra))


def state_of(
    grant: SignedRequest, parts: list[TusPart], assembled: int | None, terminated_: bool
) -> TusState:
    """The state from what the store listed (parts, the object's size, the tombstone)."""
    return TusState(_length(grant), tuple(parts), assembled, terminated_)
