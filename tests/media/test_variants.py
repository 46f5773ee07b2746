"""Variant makers: thumbnails with both engines, PDF pages, bombs refused, bad input explained."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storeroom import FileObject, ValidationError
from storeroom.backends.obstore import ObstoreBackend
from storeroom.errors import ConfigurationError
from storeroom.media.variants import PdfPage, Thumbnail, VariantError, image_engine
from tests.media.files import image_bytes, pdf_bytes, pillow, png_bomb_header
from tests.servers import require_service


def engines() -> list[str]:
    return ["pyvips", "pillow"]


def need(engine: str) -> None:
    pillow()
    if engine == "pyvips":
        try:
            import pyvips  # noqa: F401
        except (ImportError, OSError) as exc:
            require_service("pyvips (libvips)", f"install storeroom[media] ({exc})")


def size_of(data: bytes) -> tuple[tuple[int, int], str]:
    Image = pillow()
    with Image.open(io.BytesIO(data)) as image:
        return image.size, str(image.format)


@pytest.mark.parametrize("engine", engines())
@pytest.mark.parametrize("fmt", ["webp", "jpeg", "png"])
def test_thumbnail_fits_the_box_and_keeps_the_aspect(engine: str, fmt: str) -> None:
    need(engine)
    maker = Thumbnail(256, 256, format=fmt, engine=engine)  # type: ignore[arg-type]
    data = maker.make(image_bytes("JPEG", (1200, 600)))
    assert size_of(data) == ((256, 128), fmt.upper())
    assert maker.content_type == f"image/{fmt}"


@pytest.mark.parametrize("engine", engines())
def test_thumbnail_crop_fills_the_box(engine: str) -> None:
    need(engine)
    data = Thumbnail(100, 100, crop=True, engine=engine).make(image_bytes("PNG", (400, 300)))  # type: ignore[arg-type]
    assert size_of(data)[0] == (100, 100)


@pytest.mark.parametrize("engine", engines())
def test_thumbnail_never_enlarges(engine: str) -> None:
    need(engine)
    data = Thumbnail(256, 256, engine=engine).make(image_bytes("GIF", (40, 20)))  # type: ignore[arg-type]
    assert size_of(data)[0] == (40, 20)


@pytest.mark.parametrize("engine", engines())
def test_thumbnail_from_every_source_form(engine: str, tmp_path: Path) -> None:
    need(engine)
    data = image_bytes("PNG", (300, 300))
    path = tmp_path / "a.png"
    path.write_bytes(data)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 100):
            yield data[i : i + 100]

    maker = Thumbnail(30, 30, engine=engine)  # type: ignore[arg-type]
    for source in (data, path, io.BytesIO(data), chunks()):
        assert size_of(maker.make(source))[0] == (30, 30)


@pytest.mark.parametrize("engine", engines())
def test_decompression_bomb_refused_from_its_header(engine: str) -> None:
    need(engine)
    bomb = png_bomb_header(60_000, 60_000) + b"\x00" * 1000
    with pytest.raises(ValidationError, match="3,600,000,000 pixels") as caught:
        Thumbnail(64, 64, engine=engine).make(bomb)  # type: ignore[arg-type]
    assert caught.value.rule == "Thumbnail"


@pytest.mark.parametrize("engine", engines())
def test_not_an_image_is_a_variant_error(engine: str) -> None:
    need(engine)
    with pytest.raises(VariantError, match="cannot make Thumbnail"):
        Thumbnail(64, 64, engine=engine).make(b"%PDF-1.4 this is not an image at all" * 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", engines())
def test_truncated_image_is_a_variant_error(engine: str) -> None:
    need(engine)
    with pytest.raises(VariantError):
        Thumbnail(64, 64, engine=engine).make(image_bytes("JPEG", (500, 500))[:300])  # type: ignore[arg-type]


async def test_make_async_from_an_async_stream() -> None:
    need("pyvips")
    data = image_bytes("WEBP", (500, 250))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    assert size_of(await Thumbnail(50, 50).make_async(chunks()))[0] == (50, 25)


def test_thumbnail_of_a_stored_file_streams_from_the_backend() -> None:
    need("pyvips")
    from storeroom import storages

    storages.register_backend(ObstoreBackend("variants-memory", "memory://"))
    original = FileObject(
        backend="variants-memory", filename="big.jpg", content=image_bytes("JPEG", (2000, 1000))
    ).save()
    assert size_of(Thumbnail(200, 200).make(original.iter_chunks()))[0] == (200, 100)


def test_pdf_page_rendered_at_the_width() -> None:
    need("pillow")
    maker = PdfPage(2, width=400, format="png")
    data = maker.make(pdf_bytes(3, size=(200, 300)))
    assert size_of(data) == ((400, 600), "PNG")
    assert maker.content_type == "image/png"


def test_pdf_page_beyond_the_end_and_broken_pdf() -> None:
    need("pillow")
    with pytest.raises(VariantError, match="has 1 page"):
        PdfPage(2).make(pdf_bytes(1))
    with pytest.raises(VariantError, match="not a readable PDF"):
        PdfPage(1).make(b"%PDF-1.7 garbage" * 100)


async def test_pdf_page_async() -> None:
    need("pillow")
    assert size_of(await PdfPage(1, width=100).make_async(pdf_bytes(1)))[0][0] == 100


def test_bad_declarations_fail_at_definition() -> None:
    with pytest.raises(ConfigurationError, match="format 'gif' is not supported"):
        Thumbnail(10, 10, format="gif")
    with pytest.raises(ConfigurationError, match="width must be a whole number"):
        Thumbnail(0, 10)
    with pytest.raises(ConfigurationError, match="quality"):
        Thumbnail(10, 10, quality=0)
    with pytest.raises(ConfigurationError, match="1-based"):
        PdfPage(0)
    with pytest.raises(ConfigurationError, match="engine must be"):
        image_engine("magick")  # type: ignore[arg-type]
