"""Variant makers: a thumbnail of an image, a picture of a PDF page, made from a source stream.

A maker is a small declarative value (``Thumbnail(256, 256, format="webp")``,
``PdfPage(1, width=800)``) whose :meth:`~Thumbnail.make` reads the original's bytes (anything
``FileObject.save`` accepts: bytes, a path, a file, an iterator of chunks, or a FileObject's
``iter_chunks()``) and returns the variant's bytes (small: a variant is a preview). ``make_async``
runs the same work in a worker thread and takes async sources too.

Images are made with pyvips (libvips) when it is importable, else with Pillow. Measured on
24-megapixel sources (``benchmarks/media.py``, docs/variants.md): on a JPEG both shrink while
decoding and are close (Pillow 0.12 s and +4 MiB, pyvips 0.15 s and +7 MiB); on a PNG, which
cannot be decoded at a smaller scale, pyvips took half the time and a fifth of the memory
(0.33 s and +37 MiB against 0.66 s and +185 MiB), because libvips streams the rows while
Pillow holds the whole decoded image. pyvips is therefore the default, with bounded memory
whatever the format; Pillow is the fallback (``engine="pillow"`` forces it) and needs a
seekable file, so the source is spooled to a temporary file first. PDF pages are rendered
with pypdfium2. All three come with ``pip install 'storeroom[media]'``.

Before any pixel is decoded, the image header is read (:mod:`storeroom.media.probe`) and an
image of more than ``max_pixels`` is refused with :class:`~storeroom.errors.ValidationError`.
"""

from __future__ import annotations

import abc
import asyncio
import io
import tempfile
from collections.abc import Iterator
from typing import IO, Any, Literal

from storeroom.errors import ConfigurationError, StoreroomError, ValidationError
from storeroom.media import probe
from storeroom.streams import aiter_content, iter_content

__all__ = ["PdfPage", "Thumbnail", "VariantError", "VariantNotDeclared", "image_engine"]

Engine = Literal["auto", "pyvips", "pillow"]
_FORMATS = {"webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png", "avif": "image/avif"}
_READ_SIZE = 256 * 1024
_SPOOL_MEMORY = 1024 * 1024


class VariantError(StoreroomError):
    """A variant could not be made from its source (not an image, a corrupt file, no engine)."""


class VariantNotDeclared(ConfigurationError, LookupError):
    """A variant was asked for that the file does not have: not declared on its column, or
    not made from files of its type (a ``ConfigurationError``; web handlers answer 404)."""


def image_engine(engine: Engine = "auto") -> str:
    """The image library that ``engine`` resolves to here: ``"pyvips"`` or ``"pillow"``.

    ``"auto"`` prefers pyvips and falls back to Pillow; a named engine that is not installed
    raises :class:`~storeroom.errors.ConfigurationError`.
    """
    if engine not in ("auto", "pyvips", "pillow"):
        raise ConfigurationError(f"engine must be 'auto', 'pyvips' or 'pillow', got {engine!r}")
    if engine in ("auto", "pyvips"):
        try:
            import pyvips  # noqa: F401

            return "pyvips"
        except (ImportError, OSError) as exc:  # OSError: the wrapper without libvips itself
            if engine == "pyvips":
                raise ConfigurationError(
                    f"pyvips is not usable ({exc}); install it with pip install 'storeroom[media]'"
                ) from exc
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "making image variants needs pyvips or Pillow; install them with "
            "pip install 'storeroom[media]'"
        ) from exc
    return "pillow"


def _check_format(format: str) -> str:
    fmt = format.lower()
    if fmt not in _FORMATS:
        raise ConfigurationError(
            f"variant format {format!r} is not supported; choose one of {', '.join(_FORMATS)}"
        )
    return fmt


def _check_dimension(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16384:
        raise ConfigurationError(f"{name} must be a whole number from 1 to 16384, got {value!r}")
    return value


class _Spool:
    """The source's chunks, with the first ones kept to read the header; at most one chunk
    (plus up to HEADER_LIMIT of head) in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.head = bytearray()
        self.pending: list[bytes] = []

    def header(self) -> probe.ImageHeader | None:
        for chunk in self.chunks:
            self.pending.append(chunk)
            self.head += chunk[: probe.HEADER_LIMIT - len(self.head)]
            try:
                found = probe.image_header(bytes(self.head))
            except probe.Unreadable as exc:
                raise VariantError(f"the source is not a readable image: {exc}") from exc
            if found is not None or len(self.head) >= probe.HEADER_LIMIT:
                return found
            if probe.image_format(bytes(self.head)) is None and len(self.head) >= 32:
                return None
        return None

    def rest(self) -> Iterator[bytes]:
        while self.pending:
            yield self.pending.pop(0)
        yield from self.chunks

    def to_file(self) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
        for chunk in self.rest():
            spool.write(chunk)
        spool.seek(0)
        return spool


async def _gather(content: Any) -> Iterator[bytes]:
    # Async sources are copied to a spool on the loop, then the CPU work runs in a thread.
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
    async for chunk in aiter_content(content, _READ_SIZE):
        await asyncio.to_thread(spool.write, chunk)
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        with spool:
            while chunk := spool.read(_READ_SIZE):
                yield chunk

    return chunks()


class _Maker(abc.ABC):
    """What every maker shares: its output type, the async form, equality by settings."""

    format: str

    @abc.abstractmethod
    def _settings(self) -> tuple[object, ...]:
        """What makes two makers of this kind make the same bytes."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._settings()))

    @property
    def content_type(self) -> str:
        """The media type of what :meth:`make` returns."""
        return _FORMATS[self.format]

    @abc.abstractmethod
    def make(self, source: Any) -> bytes:
        """The variant's bytes, made from ``source`` (bytes, path, file or chunk iterator)."""

    async def make_async(self, source: Any) -> bytes:
        """:meth:`make` in a worker thread; ``source`` may also be async."""
        return await asyncio.to_thread(self.make, await _gather(source))


class Thumbnail(_Maker):
    """An image shrunk to fit within ``width`` x ``height`` (aspect kept; never enlarged).

    ``crop=True`` fills the box exactly, cutting the overflow from the centre. ``format`` is
    webp, jpeg, png or avif; ``quality`` applies to the lossy ones. Images of more than
    ``max_pixels`` are refused from their header (a decompression bomb is never decoded).
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        format: str = "webp",
        quality: int = 80,
        crop: bool = False,
        max_pixels: int = 100_000_000,
        engine: Engine = "auto",
    ) -> None:
        self.width = _check_dimension("width", width)
        self.height = _check_dimension("height", height)
        self.format = _check_format(format)
        if not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ConfigurationError(f"quality must be from 1 to 100, got {quality!r}")
        self.quality = quality
        self.crop = crop
        self.max_pixels = max_pixels
        self.engine = engine
        image_engine(engine)  # fail at declaration, not at the first upload

    def __repr__(self) -> str:
        return f"Thumbnail({self.width}, {self.height}, format={self.format!r})"

    def _settings(self) -> tuple[object, ...]:
        return (self.width, self.height, self.format, self.quality, self.crop, self.max_pixels)

    def accepts(self, content_type: str | None) -> bool:
        """Whether a file of ``content_type`` (sniffed) gets this variant: raster images."""
        return bool(
            content_type and content_type.startswith("image/") and content_type != "image/svg+xml"
        )

    def make(self, source: Any) -> bytes:
        """The thumbnail's bytes, made from ``source`` (bytes, path, file or chunk iterator)."""
        spool = _Spool(iter_content(source, _READ_SIZE))
        header = spool.header()
        if header is not None and header.pixels > self.max_pixels:
            raise ValidationError(
                f"image of {header.width} x {header.height} = {header.pixels:,} pixels is more "
                f"than the thumbnail's max_pixels={self.max_pixels:,}",
                filename=None,
                rule="Thumbnail",
                value=header.pixels,
                limit=self.max_pixels,
            )
        if image_engine(self.engine) == "pyvips":
            return self._pyvips(spool.rest())
        with spool.to_file() as file:
            return self._pillow(file)

    def _pyvips(self, chunks: Iterator[bytes]) -> bytes:
        import pyvips

        source = pyvips.SourceCustom()
        leftover = bytearray()

        def read(size: int) -> bytes:
            while not leftover:
                chunk = next(chunks, None)
                if chunk is None:
                    return b""
                leftover.extend(chunk)
            piece = bytes(leftover[:size])
            del leftover[:size]
            return piece

        source.on_read(read)
        try:
            image = pyvips.Image.thumbnail_source(
                source,
                self.width,
                height=self.height,
                size="down",
                crop="centre" if self.crop else "none",
            )
            if image.hasalpha() and self.format == "jpeg":
                image = image.flatten(background=[255, 255, 255])
            options = "" if self.format == "png" else f"[Q={self.quality}]"
            return bytes(image.write_to_buffer(f".{self.format}{options}"))
        except pyvips.Error as exc:
            raise VariantError(f"cannot make {self!r}: {exc.message.strip()}") from exc

    def _pillow(self, file: IO[bytes]) -> bytes:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(file) as image:
                image.draft("RGB", (self.width, self.height))  # JPEG: decode at a smaller scale
                image = ImageOps.exif_transpose(image)
                if self.crop:
                    image = ImageOps.fit(image, (self.width, self.height))
                else:
                    image.thumbnail((self.width, self.height))
                if self.format == "jpeg" and image.mode != "RGB":
                    image = image.convert("RGB")
                out = io.BytesIO()
                image.save(out, format=self.format.upper(), quality=self.quality)
                return out.getvalue()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise VariantError(f"cannot make {self!r}: {exc}") from exc


class PdfPage(_Maker):
    """Page ``page`` (1-based) of a PDF as an image ``width`` pixels wide, rendered by pypdfium2."""

    def __init__(
        self, page: int = 1, *, width: int = 800, format: str = "webp", quality: int = 80
    ) -> None:
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            raise ConfigurationError(f"page is 1-based: a whole number >= 1, got {page!r}")
        self.page = page
        self.width = _check_dimension("width", width)
        self.format = _check_format(format)
        self.quality = quality
        try:
            import pypdfium2  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(
                "PdfPage renders with pypdfium2; install it with pip install 'storeroom[media]'"
            ) from exc
        image_engine("pillow")  # pypdfium2 hands the bitmap to Pillow for encoding

    def __repr__(self) -> str:
        return f"PdfPage({self.page}, width={self.width}, format={self.format!r})"

    def _settings(self) -> tuple[object, ...]:
        return (self.page, self.width, self.format, self.quality)

    def accepts(self, content_type: str | None) -> bool:
        """Whether a file of ``content_type`` (sniffed) gets this variant: PDFs."""
        return content_type == "application/pdf"

    def make(self, source: Any) -> bytes:
        """The page's picture, from a PDF given as bytes, path, file or chunk iterator."""
        import pypdfium2

        with _Spool(iter_content(source, _READ_SIZE)).to_file() as file:
            try:
                document = pypdfium2.PdfDocument(file, autoclose=False)
            except pypdfium2.PdfiumError as exc:
                raise VariantError(f"cannot make {self!r}: not a readable PDF ({exc})") from exc
            try:
                if self.page > len(document):
                    raise VariantError(f"cannot make {self!r}: the PDF has {len(document)} page(s)")
                page = document[self.page - 1]
                try:
                    scale = self.width / page.get_width()
                    bitmap = page.render(scale=scale)
                    image = bitmap.to_pil()
                    out = io.BytesIO()
                    image.save(out, format=self.format.upper(), quality=self.quality)
                    return out.getvalue()
                finally:
                    page.close()
            finally:
                document.close()
