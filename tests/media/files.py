"""Files made here, in memory, for the media tests (no binary fixtures in the repository)."""

from __future__ import annotations

import io
import struct
import wave
import zlib

from tests.servers import require_service


def pillow():  # type: ignore[no-untyped-def]
    try:
        from PIL import Image
    except ImportError as exc:
        require_service("Pillow", f"install storeroom[media] ({exc})")
    return Image


def pdfium():  # type: ignore[no-untyped-def]
    try:
        import pypdfium2
    except ImportError as exc:
        require_service("pypdfium2", f"install storeroom[media] ({exc})")
    return pypdfium2


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    Image = pillow()
    image = Image.new("RGB", size, (200, 40, 90))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def pdf_bytes(pages: int, size: tuple[float, float] = (200, 300)) -> bytes:
    pypdfium2 = pdfium()
    document = pypdfium2.PdfDocument.new()
    for _ in range(pages):
        document.new_page(*size)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def png_bomb_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height (no pixel data follows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def mp4_parts(seconds: float, mdat_size: int, *, moov_last: bool = True) -> list[bytes]:
    """An ISO media file as chunks: ftyp, a large mdat, then moov with mvhd (or moov first)."""
    timescale = 1000
    mvhd = box(
        b"mvhd",
        bytes(4) + struct.pack(">IIII", 0, 0, timescale, int(seconds * timescale)) + bytes(80),
    )
    moov = box(b"moov", mvhd + box(b"trak", bytes(16)))
    ftyp = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
    mdat_header = struct.pack(">I", 8 + mdat_size) + b"mdat"
    filler = [bytes(min(65536, mdat_size - i)) for i in range(0, mdat_size, 65536)]
    if moov_last:
        return [ftyp, mdat_header, *filler, moov]
    return [ftyp + moov, mdat_header, *filler]
