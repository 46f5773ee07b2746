"""Content sniffing: the type comes from the bytes, the name only for plain text."""

from __future__ import annotations

import gzip
import io
import random
import struct
import zipfile
import zlib

import pytest

from storeroom.media.sniff import SNIFF_BYTES, is_active_content, sniff_type


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


CORPUS = [
    (_png(), "photo.png", "image/png"),
    (_png(), "evil.html", "image/png"),
    (
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64),
        None,
        "image/jpeg",
    ),
    (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x01\x00"
        b"\x01\x00\x00\x02\x02D\x01\x00;",
        "x",
        "image/gif",
    ),
    (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", "doc.txt", "application/pdf"),
    (_zip(), "bundle.zip", "application/zip"),
    (_zip(), None, "application/zip"),
    (gzip.compress(b"hello" * 20), None, "application/gzip"),
    (b"<!DOCTYPE html><html><body><script>alert(1)</script>", "evil.png", "text/html"),
    (b"  \n\t<ScRiPt>alert(document.domain)</script>", "evil.png", "text/html"),
    (b"\xef\xbb\xbf<html>", "a.jpg", "text/html"),
    (b"<!-- x --><b>hi</b>", "a.txt", "text/html"),
    (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>',
        "logo.png",
        "image/svg+xml",
    ),
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', None, "image/svg+xml"),
    (b'<?xml version="1.0"?>\n<note><to>a</to></note>', "n.txt", "application/xml"),
    (b"name,age\nann,31\n", "people.csv", "text/csv"),
    (b"just words\n", "notes.txt", "text/plain"),
    (b"just words\n", None, "text/plain"),
    (b"just words\n", "notes.png", "text/plain"),
    ("résumé: ok\n".encode(), "cv.md", "text/markdown"),
    (random.Random(1).randbytes(512), "x.txt", "application/octet-stream"),
    (b"\x00\x01\x02\x03binary", "a.csv", "application/octet-stream"),
]


@pytest.mark.parametrize(("head", "filename", "expected"), CORPUS)
def test_sniff_type_reads_the_bytes_before_the_name(
    head: bytes, filename: str | None, expected: str
) -> None:
    assert sniff_type(head, filename) == expected


def test_sniff_type_needs_only_the_head() -> None:
    data = b"<html><body>" + b"x" * (SNIFF_BYTES * 3)
    assert sniff_type(data[:SNIFF_BYTES]) == sniff_type(data) == "text/html"


def test_sniff_type_of_nothing_is_text_or_unknown() -> None:
    assert sniff_type(b"") == "text/plain"
    assert sniff_type(b"", "data.csv") == "text/csv"


def test_utf8_character_cut_by_the_head_is_still_text() -> None:
    head = ("é" * (SNIFF_BYTES // 2)).encode()[: SNIFF_BYTES - 1]
    assert sniff_type(head, "a.txt") == "text/plain"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "TEXT/HTML; charset=utf-8",
        "image/svg+xml",
        "application/xml",
        "text/xml",
        "application/atom+xml",
        "text/javascript",
        "application/javascript",
        "text/plain, text/html",
        "text/plain,image/png",
        "",
        "html",
        "text/",
        "/html",
        "text/plain;\x00",
        "text/pl ain",
        "application/xhtml+xml",
    ],
)
def test_active_or_ambiguous_types(content_type: str) -> None:
    assert is_active_content(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "image/png",
        "application/pdf",
        "application/octet-stream",
        "text/csv",
        "video/mp4",
        "application/json",
    ],
)
def test_passive_types(content_type: str) -> None:
    assert not is_active_content(content_type)
