"""Validators and metadata on the upload stream: refusals come early, findings are right."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator, Iterator

import pytest

import storeroom
from storeroom import FileObject, StoreroomError, ValidationError
from storeroom.backends.obstore import ObstoreBackend
from storeroom.errors import ConfigurationError
from storeroom.media.probe import HEADER_LIMIT, Mp4Duration, image_header
from storeroom.media.validation import (
    ContentTypes,
    Findings,
    ImageLimits,
    MaxSize,
    PdfLimits,
    format_size,
    inspect_content,
    inspect_content_async,
    parse_size,
)
from tests.media.files import (
    image_bytes,
    mp4_parts,
    pdf_bytes,
    png_bomb_header,
    wav_bytes,
)

MIB = 1024 * 1024


class CountingSource:
    """An iterator of chunks that records how many were pulled."""

    def __init__(self, first: bytes, chunks: int, chunk_size: int = 64 * 1024) -> None:
        self.first, self.chunks, self.chunk_size, self.pulled = first, chunks, chunk_size, 0

    def __iter__(self) -> Iterator[bytes]:
        self.pulled += 1
        yield self.first
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"\x00" * self.chunk_size


async def aiter_of(source: CountingSource) -> AsyncIterator[bytes]:
    for chunk in source:
        yield chunk


def consume(content: Iterator[bytes]) -> bytes:
    return b"".join(content)


def test_validation_error_is_exported_and_a_storeroom_error() -> None:
    assert storeroom.ValidationError is ValidationError
    assert issubclass(ValidationError, StoreroomError)
    assert issubclass(ValidationError, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20 MiB", 20 * MIB), ("1.5GB", 1_500_000_000), ("512 kib", 512 * 1024), (10, 10), ("7", 7)],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["20 MX", "lots", "-1 MB", -5, True, "1e3 MB"])
def test_parse_size_refuses_unreadable_sizes(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="size"):
        parse_size(bad)  # type: ignore[arg-type]


def test_bad_rules_are_refused_at_definition() -> None:
    with pytest.raises(ConfigurationError, match="at least one pattern"):
        ContentTypes()
    with pytest.raises(ConfigurationError, match="not a media type pattern"):
        ContentTypes("images")
    with pytest.raises(ConfigurationError, match="at least one bound"):
        ImageLimits()
    with pytest.raises(ConfigurationError, match="max_pixels must be a whole number"):
        ImageLimits(max_pixels=0)
    with pytest.raises(ConfigurationError, match="max_pages"):
        PdfLimits(max_pages=-1)
    with pytest.raises(ConfigurationError, match="wrap it in a list"):
        inspect_content(b"x", MaxSize(1))  # type: ignore[arg-type]


def test_max_size_stops_the_stream_at_the_chunk_that_crosses_the_limit() -> None:
    source = CountingSource(b"x" * 1000, chunks=1000)
    content = inspect_content(source, [MaxSize("200 KiB")], filename="big.bin")
    with pytest.raises(ValidationError) as caught:
        consume(content)
    error = caught.value
    assert (error.filename, error.rule, error.limit) == ("big.bin", "MaxSize", 200 * 1024)
    assert error.value > 200 * 1024
    assert "'big.bin'" in str(error) and "MaxSize" in str(error) and "200 KiB" in str(error)
    assert source.pulled <= 5  # not the 1001 chunks the source had


def test_exactly_the_limit_passes_and_one_byte_more_is_refused() -> None:
    assert consume(inspect_content(b"a" * 100, [MaxSize(100)])) == b"a" * 100
    with pytest.raises(ValidationError, match="101 bytes exceeds the limit 100 bytes"):
        consume(inspect_content(b"a" * 101, [MaxSize(100)]))


def test_content_types_judge_the_bytes_not_the_name() -> None:
    html = b"<html><script>alert(1)</script></html>"
    with pytest.raises(ValidationError) as caught:
        consume(inspect_content(html, [ContentTypes("image/*")], filename="cat.png"))
    assert caught.value.value == "text/html"
    assert caught.value.rule == "ContentTypes"
    assert "text/html" in str(caught.value) and "image/*" in str(caught.value)
    png = image_bytes("PNG")
    content = inspect_content(png, [ContentTypes("image/*", "application/pdf")], filename="x.txt")
    assert consume(content) == png
    assert content.findings.content_type == "image/png"


def test_content_type_refusal_comes_after_the_first_bytes_only() -> None:
    source = CountingSource(b"MZ" + b"\x90" * 8000, chunks=500)
    with pytest.raises(ValidationError, match="ContentTypes"):
        consume(inspect_content(source, [ContentTypes("image/*")], filename="setup.exe"))
    assert source.pulled == 1


def test_decompression_bomb_refused_on_its_header_before_the_rest_is_read() -> None:
    # 100,000 x 100,000 pixels claimed by a few bytes; the rest would be gigabytes.
    source = CountingSource(png_bomb_header(100_000, 100_000), chunks=100_000)
    content = inspect_content(source, [ImageLimits(max_pixels=50_000_000)], filename="bomb.png")
    with pytest.raises(ValidationError) as caught:
        consume(content)
    assert caught.value.value == 10_000_000_000
    assert caught.value.limit == {"max_pixels": 50_000_000}
    assert "100000 x 100000" in str(caught.value)
    assert source.pulled == 1


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_image_metadata_from_the_header(fmt: str) -> None:
    data = image_bytes(fmt, (123, 45))
    content = inspect_content(data, [ImageLimits(min_width=100, max_height=45)])
    assert consume(content) == data
    assert content.findings.metadata == {"width": 123, "height": 45, "format": fmt.lower()}
    assert content.findings.complete


@pytest.mark.parametrize("lossless", [True, False])
def test_webp_variants_lossless_and_extended(lossless: bool) -> None:
    data = image_bytes("WEBP", (300, 200), lossless=lossless, exif=b"Exif\x00\x00" + bytes(20))
    assert image_header(data) is not None
    header = image_header(data)
    assert header is not None and (header.width, header.height) == (300, 200)


def test_jpeg_header_found_after_large_exif_segments() -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: one big APP1 segment before the frame
    data = image_bytes("JPEG", (640, 480), exif=exif.tobytes(), icc_profile=bytes(50_000))
    header = image_header(data[:200_000])
    assert header is not None and (header.width, header.height) == (640, 480)
    # cut anywhere before the frame header: "not yet", never a wrong answer
    assert image_header(data[:30_000]) is None


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (ImageLimits(min_width=200), "width 123 .* is less than min_width=200"),
        (ImageLimits(max_width=100), "width 123 .* is more than max_width=100"),
        (ImageLimits(min_height=46), "height 45 .* is less than min_height=46"),
        (ImageLimits(max_pixels=5000), "pixels 5,535 .* is more than max_pixels=5,000"),
    ],
)
def test_image_limits_each_bound(rule: ImageLimits, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        consume(inspect_content(image_bytes("PNG", (123, 45)), [rule], filename="a.png"))


def test_image_whose_size_cannot_be_read_is_refused_unless_allowed() -> None:
    tiff = image_bytes("TIFF", (10, 10))
    with pytest.raises(ValidationError, match="cannot be read from its header"):
        consume(inspect_content(tiff, [ImageLimits(max_pixels=10**6)], filename="a.tif"))
    allowed = inspect_content(tiff, [ImageLimits(max_pixels=10**6, allow_unreadable=True)])
    assert consume(allowed) == tiff


def test_truncated_jpeg_header_is_refused_by_image_limits() -> None:
    data = image_bytes("JPEG", (64, 64))[:40]
    with pytest.raises(ValidationError, match="cannot be read"):
        consume(inspect_content(data, [ImageLimits(max_pixels=10**6)]))


def test_jpeg_without_frame_header_within_the_header_limit_is_refused_early() -> None:
    # SOI, then APP segments forever: the size never comes.
    segment = b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533)
    source = CountingSource(b"\xff\xd8" + segment, chunks=10_000, chunk_size=len(segment))
    source.chunk_size = len(segment)

    def chunks() -> Iterator[bytes]:
        yield b"\xff\xd8"
        for _ in range(10_000):
            source.pulled += 1
            yield segment

    with pytest.raises(ValidationError, match="cannot be read from its header"):
        consume(inspect_content(chunks(), [ImageLimits(max_pixels=10**6)]))
    assert source.pulled * len(segment) <= HEADER_LIMIT + 2 * len(segment)


def test_non_images_pass_image_limits() -> None:
    data = b"just some text\n" * 10
    assert consume(inspect_content(data, [ImageLimits(max_pixels=1)])) == data


def test_pdf_page_count_and_limit() -> None:
    data = pdf_bytes(3)
    content = inspect_content(io.BytesIO(data), [PdfLimits(max_pages=3)], filename="a.pdf")
    assert consume(content) == data
    assert content.findings.content_type == "application/pdf"
    assert content.findings.metadata == {"pages": 3}
    with pytest.raises(ValidationError, match="4 pages is more than max_pages=3") as caught:
        consume(inspect_content(pdf_bytes(4), [PdfLimits(max_pages=3)], filename="b.pdf"))
    assert (caught.value.value, caught.value.limit) == (4, 3)


def test_pdf_refused_at_the_end_never_yields_its_last_chunk() -> None:
    data = pdf_bytes(5)
    received: list[bytes] = []
    content = inspect_content(data, [PdfLimits(max_pages=1)], chunk_size=64 * 1024)
    with pytest.raises(ValidationError):
        for chunk in content:
            received.append(chunk)
    assert len(b"".join(received)) < len(data)


def test_broken_pdf_is_refused_by_pdf_limits() -> None:
    data = b"%PDF-1.7\n" + b"garbage " * 1000
    with pytest.raises(ValidationError, match="cannot be opened"):
        consume(inspect_content(data, [PdfLimits(max_pages=10)], filename="broken.pdf"))
    plain = inspect_content(data)
    consume(plain)
    assert "pages" not in plain.findings.metadata


def test_wav_duration() -> None:
    content = inspect_content(wav_bytes(2.5))
    consume(content)
    assert content.findings.metadata == {"duration": 2.5, "format": "wav"}


def test_flac_duration_from_streaminfo() -> None:
    # STREAMINFO: 44.1 kHz, 2 channels, 16 bits, 441,000 samples = 10 s
    bits = (44100 << 44) | (1 << 41) | (15 << 36) | 441_000
    streaminfo = bytes(10) + bits.to_bytes(8, "big") + bytes(16)
    data = b"fLaC" + b"\x80" + len(streaminfo).to_bytes(3, "big") + streaminfo + bytes(100)
    content = inspect_content(data)
    consume(content)
    assert content.findings.metadata["duration"] == 10.0


@pytest.mark.parametrize("moov_last", [True, False])
def test_mp4_duration_with_moov_before_or_after_a_large_mdat(moov_last: bool) -> None:
    content = inspect_content(mp4_parts(12.345, 3 * MIB, moov_last=moov_last))
    consume(content)
    assert content.findings.metadata["duration"] == 12.345
    assert content.findings.content_type is not None


def test_mp4_walker_handles_any_chunking() -> None:
    data = b"".join(mp4_parts(3.0, 100_000))
    for size in (1, 7, 8, 9, 4096):
        walker = Mp4Duration()
        for i in range(0, len(data), size):
            walker.feed(data[i : i + size])
        assert walker.duration == 3.0, size


def test_plain_callables_see_the_complete_findings() -> None:
    seen: list[tuple[bool, int, int | None]] = []

    def square_only(findings: Findings) -> str | None:
        seen.append((findings.complete, findings.size, findings.width))
        if findings.width != findings.height:
            return f"{findings.width} x {findings.height} is not square"
        return None

    consume(inspect_content(image_bytes("PNG", (8, 8)), [square_only]))
    ((complete, size, width),) = seen
    assert complete is False and size > 0 and width == 8  # complete only once all passed
    with pytest.raises(ValidationError, match="48 is not square") as caught:
        consume(inspect_content(image_bytes("PNG", (64, 48)), [square_only], filename="w.png"))
    assert caught.value.rule.endswith("square_only")

    def raising(findings: Findings) -> None:
        raise ValueError("no files on Sundays")

    with pytest.raises(ValidationError, match="no files on Sundays"):
        consume(inspect_content(b"abc", [raising]))
    with pytest.raises(ValidationError, match="returned False"):
        consume(inspect_content(b"abc", [lambda f: False]))


def test_a_bug_in_a_callable_is_not_turned_into_a_refusal() -> None:
    def buggy(findings: Findings) -> None:
        raise KeyError("oops")

    with pytest.raises(KeyError):
        consume(inspect_content(b"abc", [buggy]))


def test_findings_object_given_by_the_caller_is_filled() -> None:
    findings = Findings()
    consume(inspect_content(image_bytes("GIF", (5, 6)), [], filename="a.gif", findings=findings))
    assert (findings.filename, findings.content_type, findings.width) == ("a.gif", "image/gif", 5)
    assert findings.size > 0 and findings.complete


def test_empty_content() -> None:
    content = inspect_content(b"", [MaxSize(10)])
    assert consume(content) == b""
    assert content.findings.size == 0 and content.findings.complete


def test_every_content_form_is_accepted(tmp_path: object) -> None:
    from pathlib import Path

    data = image_bytes("PNG", (10, 20))
    path = Path(str(tmp_path)) / "a.png"
    path.write_bytes(data)
    for content in (
        data,
        bytearray(data),
        memoryview(data),
        path,
        io.BytesIO(data),
        iter([data[:10], data[10:]]),
    ):
        inspected = inspect_content(content, [ImageLimits(max_width=10)])
        assert consume(inspected) == data
        assert inspected.findings.height == 20


async def test_async_inspection_of_async_sources() -> None:
    data = image_bytes("PNG", (10, 20))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 17):
            yield data[i : i + 17]

    inspected = inspect_content_async(chunks(), [ImageLimits(max_width=10), MaxSize("1 MiB")])
    assert b"".join([chunk async for chunk in inspected]) == data
    assert inspected.findings.metadata["height"] == 20
    pdf = inspect_content_async(pdf_bytes(2), [PdfLimits(max_pages=1)], filename="x.pdf")
    with pytest.raises(ValidationError, match="2 pages"):
        [chunk async for chunk in pdf]


async def test_async_bomb_refused_after_one_chunk() -> None:
    source = CountingSource(png_bomb_header(70_000, 70_000), chunks=10_000)
    with pytest.raises(ValidationError, match="max_pixels"):
        async for _ in inspect_content_async(aiter_of(source), [ImageLimits(max_pixels=10**7)]):
            pass
    assert source.pulled == 1


def test_sync_inspection_refuses_async_sources_clearly() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    with pytest.raises(storeroom.UnsupportedContent, match="save_async"):
        consume(inspect_content(chunks()))


def test_refused_file_is_never_stored_by_a_backend_put() -> None:
    backend = ObstoreBackend("media-memory", "memory://")
    storeroom.storages.register_backend(backend)
    content = inspect_content(
        CountingSource(png_bomb_header(100_000, 100_000), chunks=50),
        [ImageLimits(max_pixels=10**6)],
        filename="bomb.png",
    )
    with pytest.raises(ValidationError):
        FileObject(backend="media-memory", filename="bomb.png", content=content).save()
    assert list(backend.list("")) == []
    good = image_bytes("PNG", (40, 30))
    inspected = inspect_content(good, [ImageLimits(max_pixels=10**6)], filename="ok.png")
    saved = FileObject(backend="media-memory", filename="ok.png", content=inspected).save()
    assert saved.get_content() == good
    assert inspected.findings.metadata == {"width": 40, "height": 30, "format": "png"}


async def test_refused_file_is_never_stored_by_an_async_save() -> None:
    backend = ObstoreBackend("media-memory-async", "memory://")
    storeroom.storages.register_backend(backend)
    content = inspect_content_async(pdf_bytes(3), [PdfLimits(max_pages=2)], filename="a.pdf")
    with pytest.raises(ValidationError):
        await FileObject(
            backend="media-memory-async", filename="a.pdf", content=content
        ).save_async()
    await asyncio.sleep(0)
    assert [o async for o in backend.list_async("")] == []


def test_format_size() -> None:
    assert format_size(20 * MIB) == "20 MiB (20,971,520 bytes)"
    assert format_size(999) == "999 bytes"


def test_unreadable_raster_header_is_refused_once_headers_were_looked_for() -> None:
    tiff = image_bytes("TIFF", (10, 10))

    def chunks() -> Iterator[bytes]:
        yield tiff + bytes(8192)
        for _ in range(1000):
            pulled.append(1)
            yield bytes(65536)

    pulled: list[int] = []
    with pytest.raises(ValidationError, match="image/tiff"):
        consume(inspect_content(chunks(), [ImageLimits(max_pixels=10**6)], filename="a.tif"))
    assert pulled == []  # refused on the first chunk, not at the end


def test_duck_typed_rule_objects_are_accepted() -> None:
    class EvenSize:
        def check(self, findings: Findings, *, final: bool) -> None:
            if final and findings.size % 2:
                raise ValidationError(
                    "odd",
                    filename=findings.filename,
                    rule="EvenSize",
                    value=findings.size,
                    limit="even",
                )

    assert consume(inspect_content(b"ab", [EvenSize()])) == b"ab"
    with pytest.raises(ValidationError, match="odd"):
        consume(inspect_content(b"abc", [EvenSize()]))


@pytest.mark.parametrize("head", [b"%PDF-1.7\n", png_bomb_header(100, 100), b"plain text "])
def test_memory_stays_bounded_on_a_large_stream(head: bytes) -> None:
    import tracemalloc

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(64):  # 32 MiB
            yield b"\x00" * (512 * 1024)

    tracemalloc.start()
    try:
        content = inspect_content(chunks(), [MaxSize("1 GiB")])
        for _ in content:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert content.findings.size == len(head) + 32 * MIB
    assert peak < 6 * MIB, f"peak {peak / MIB:.1f} MiB while inspecting 32 MiB"
