"""What a file's headers say, read as its bytes stream past: image size, audio/video duration.

Everything here is pure parsing of bytes already received; nothing decodes pixels or samples,
so a decompression bomb (a small PNG that claims 100,000 x 100,000 pixels) is measured, not
inflated. Which formats, and where the answer is found:

- Image width and height: PNG (IHDR), GIF (logical screen), JPEG (the first SOF marker, after
  any EXIF/ICC segments), WebP (VP8, VP8L and VP8X), BMP. Found in the first
  :data:`HEADER_LIMIT` bytes or not at all.
- Duration: WAV (``fmt `` byte rate and ``data`` size), FLAC (STREAMINFO), and ISO base media
  files (MP4, M4A, MOV, 3GP: the ``mvhd`` box, wherever ``moov`` is, even after ``mdat``; the
  walker skips ``mdat`` without buffering it). MP3, Ogg, WebM and AVI durations need frame
  scanning or an index and are not read (not cheap on a stream).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "HEADER_LIMIT",
    "ImageHeader",
    "Mp4Duration",
    "audio_duration",
    "image_format",
    "image_header",
    "may_have_duration",
]

HEADER_LIMIT = 1024 * 1024
"""Bytes from the start of a file within which an image's size must appear (1 MiB: JPEG
headers carry EXIF and ICC segments of up to 64 KiB each before the frame header)."""


class Unreadable(ValueError):
    """The bytes claim a format but its header is malformed."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """An image's size and format as its header states them."""

    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def image_format(head: bytes) -> str | None:
    """The raster format the first bytes show (``"png"``, ``"jpeg"``, ...), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 18 and head[14] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"
    return None


def image_header(head: bytes) -> ImageHeader | None:
    """The size stated by an image's header, or None if ``head`` does not reach it yet.

    Raises :class:`Unreadable` when the bytes are of a known format but its header is
    malformed; returns None too for bytes of no format this module reads.
    """
    kind = image_format(head)
    if kind is None:
        return None
    size = _PARSERS[kind](head)
    if size is None:
        return None
    width, height = size
    if width <= 0 or height <= 0:
        raise Unreadable(f"{kind} header states a size of {width} x {height}")
    return ImageHeader(width, height, kind)


def _png(head: bytes) -> tuple[int, int] | None:
    if len(head) < 24:
        return None
    if head[12:16] != b"IHDR":
        raise Unreadable("PNG does not start with an IHDR chunk")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _gif(head: bytes) -> tuple[int, int] | None:
    if len(head) < 10:
        return None
    width, height = struct.unpack("<HH", head[6:10])
    return int(width), int(height)


def _bmp(head: bytes) -> tuple[int, int] | None:
    if len(head) < 26:
        return None
    if head[14] == 12:
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    return abs(int(width)), abs(int(height))


def _webp(head: bytes) -> tuple[int, int] | None:
    if len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise Unreadable("WebP VP8 frame has no start code")
        width, height = struct.unpack("<HH", head[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L":
        if head[20] != 0x2F:
            raise Unreadable("WebP VP8L stream has no signature byte")
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    raise Unreadable(f"WebP has an unknown first chunk {chunk!r}")


# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def _jpeg(head: bytes) -> tuple[int, int] | None:
    pos = 2
    while True:
        if pos >= len(head):
            return None
        if head[pos] != 0xFF:
            raise Unreadable(f"JPEG has no marker at byte {pos}")
        while pos < len(head) and head[pos] == 0xFF:
            pos += 1  # a marker, possibly after fill bytes
        if pos >= len(head):
            return None
        marker = head[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise Unreadable("JPEG reaches its image data before any frame header")
        if pos + 2 > len(head):
            return None
        (length,) = struct.unpack(">H", head[pos : pos + 2])
        if length < 2:
            raise Unreadable(f"JPEG segment at byte {pos} has length {length}")
        if marker in _SOF:
            if pos + 7 > len(head):
                return None
            height, width = struct.unpack(">HH", head[pos + 3 : pos + 7])
            return int(width), int(height)
        pos += length


_PARSERS = {"png": _png, "gif": _gif, "bmp": _bmp, "webp": _webp, "jpeg": _jpeg}


def may_have_duration(head: bytes) -> bool:
    """Whether the first (at least 12) bytes are WAV or FLAC, whose header gives a duration."""
    return (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or head[:4] == b"fLaC"


def audio_duration(head: bytes) -> tuple[float, str] | None:
    """(seconds, format) for WAV or FLAC whose header lies in ``head``; None otherwise."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav(head)
    if head[:4] == b"fLaC" and len(head) >= 26:
        value = int.from_bytes(head[18:26], "big")
        rate = value >> 44
        samples = value & ((1 << 36) - 1)
        if rate and samples:
            return samples / rate, "flac"
    return None


def _wav(head: bytes) -> tuple[float, str] | None:
    pos = 12
    byte_rate = None
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and pos + 20 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
        elif chunk == b"data":
            return (size / byte_rate, "wav") if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


class Mp4Duration:
    """Finds the ``mvhd`` duration of an ISO base media file (MP4, MOV, M4A) as it streams.

    Feed it every chunk in order; it keeps at most one box header in memory and skips box
    bodies (``mdat`` included) by counting bytes. ``duration`` is set once found.
    """

    _CONTAINERS = frozenset({b"moov"})

    def __init__(self) -> None:
        self.duration: float | None = None
        self.done = False
        self._buf = bytearray()
        self._skip = 0
        self._want = 8
        self._box: tuple[bytes, int] | None = None  # (type, header length) of a pending mvhd

    def feed(self, chunk: bytes) -> None:
        """Consume the next chunk of the file."""
        view = memoryview(chunk)
        while view and not self.done:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            step = min(self._want - len(self._buf), len(view))
            self._buf += view[:step]
            view = view[step:]
            if len(self._buf) < self._want:
                return
            self._step()

    def _step(self) -> None:
        buf = bytes(self._buf)
        if self._box is not None:  # the body of mvhd has arrived
            self._mvhd(buf)
            self.done = True
            return
        size, kind = struct.unpack(">I4s", buf[:8])
        header = 8
        if size == 1:
            if len(buf) < 16:
                self._want = 16
                return
            (size,) = struct.unpack(">Q", buf[8:16])
            header = 16
        self._buf.clear()
        self._want = 8
        if size == 0 or (size < header):
            self.done = True  # box runs to the end of the file, or a corrupt size
            return
        if kind in self._CONTAINERS:
            return  # descend: its children follow
        if kind == b"mvhd":
            self._box = (kind, header)
            self._want = min(size - header, 32)
            return
        self._skip = size - header

    def _mvhd(self, body: bytes) -> None:
        version = body[0]
        try:
            if version == 1:
                timescale, duration = struct.unpack(">IQ", body[20:32])
            else:
                timescale, duration = struct.unpack(">II", body[12:20])
        except struct.error:
            return
        if timescale and duration != 0xFFFFFFFF:
            self.duration = duration / timescale
