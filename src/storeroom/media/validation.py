"""Validators and the stream inspector that runs them as an upload's bytes pass.

::

    from storeroom.media.validation import ContentTypes, ImageLimits, MaxSize, inspect_content

    content = inspect_content(upload, [MaxSize("20 MiB"), ContentTypes("image/*")],
                              filename="cat.png")
    backend.put(path, content)           # streams; raises ValidationError on a refused file
    content.findings.metadata            # {"width": ..., "height": ..., "format": "png"}

What is checked when (each refusal raises :class:`~storeroom.errors.ValidationError` naming
the file, the rule, the value and the limit, before the rest of the file is read):

- the type, sniffed from the first :data:`~storeroom.media.sniff.SNIFF_BYTES` bytes (never
  from the name), as soon as they have arrived;
- image width, height and pixel count as soon as the header has arrived (within
  :data:`~storeroom.media.probe.HEADER_LIMIT`); pixels are never decoded, so a decompression
  bomb is refused on its header;
- the size on every chunk;
- PDF page counts, and plain callables (which see the complete :class:`Findings`), at the end
  of the stream.

The inspector holds back the last chunk until the end-of-stream checks have passed, so the
consumer never receives a whole refused file: a single PUT is never sent and a multipart
upload never completed; the caller's usual failure path (abort the upload, delete what was
written) applies. Memory stays bounded: the first bytes up to ``HEADER_LIMIT`` while headers
are read, and one chunk; a PDF is spooled to a temporary file (in memory up to 1 MiB) so that
pypdfium2 can count its pages at the end.

Integration contract (for the ORM flush, ``save_upload`` and upload sessions). Each wraps the
content it is about to store, in one line, and reads the findings after the store accepted it::

    content = inspect_content(content, validators, filename=name)          # sync code
    content = inspect_content_async(content, validators, filename=name)    # async code
    ...put(content)...                    # ValidationError propagates: the write fails
    findings = content.findings           # complete once the put returned
    file.content_type = findings.content_type or file.content_type
    file.metadata.update(findings.metadata)

``content`` is then a plain (async) iterator of bytes, accepted by every backend's ``put``;
``Findings.complete`` turns True only after every check passed. The validators argument
takes any mix of the classes below and plain callables; :func:`validators_from` turns it into
a tuple once (at column definition) and checks it.
"""

from __future__ import annotations

import abc
import asyncio
import fnmatch
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn, Protocol, TypedDict, runtime_checkable

from typing_extensions import Unpack

from storeroom.errors import ConfigurationError, ValidationError
from storeroom.media import probe
from storeroom.media.sniff import SNIFF_BYTES, sniff_type
from storeroom.streams import DEFAULT_CHUNK_SIZE, aiter_content, iter_content, read_size_for

__all__ = [
    "Check",
    "ContentTypes",
    "Findings",
    "ImageLimits",
    "InspectOptions",
    "InspectedContent",
    "AsyncInspectedContent",
    "MaxSize",
    "PdfLimits",
    "Rule",
    "ValidatorLike",
    "format_size",
    "inspect_content",
    "inspect_content_async",
    "column_validators",
    "parse_size",
    "screened",
    "screened_async",
    "validators_from",
]

_PDF_SPOOL_MEMORY = 1024 * 1024


@dataclass
class Findings:
    """What the inspector learnt about one file; filled as its bytes stream.

    ``metadata`` is JSON-serialisable and suitable for ``FileObject.metadata``: ``width``,
    ``height`` and ``format`` for images, ``pages`` for PDFs, ``duration`` (seconds) and
    ``format`` for WAV, FLAC and MP4/MOV/M4A.
    """

    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    """True once the whole stream passed and every check accepted it."""
    headers_read: bool = False
    """True once the image and audio headers were looked for (found or not)."""

    @property
    def width(self) -> int | None:
        """Image width in pixels, once the header was read."""
        value = self.metadata.get("width")
        return value if isinstance(value, int) else None

    @property
    def height(self) -> int | None:
        """Image height in pixels, once the header was read."""
        value = self.metadata.get("height")
        return value if isinstance(value, int) else None

    @property
    def pages(self) -> int | None:
        """PDF page count, known at the end of the stream."""
        value = self.metadata.get("pages")
        return value if isinstance(value, int) else None


def _refuse(findings: Findings, rule: str, what: str, value: object, limit: object) -> NoReturn:
    name = repr(findings.filename) if findings.filename else "(unnamed)"
    raise ValidationError(
        f"file {name} refused by {rule}: {what}",
        filename=findings.filename,
        rule=rule,
        value=value,
        limit=limit,
    )


class Rule(abc.ABC):
    """Base of the built-in validators: ``check`` runs after every chunk and at the end.

    A rule checks what is known so far and refuses as early as it can; ``final`` is True for
    the last call, when everything that will be known is.
    """

    @abc.abstractmethod
    def check(self, findings: Findings, *, final: bool) -> None:
        """Raise :class:`~storeroom.errors.ValidationError` if ``findings`` break the rule."""


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: int | str) -> int:
    """Bytes in ``value``: an int, or a string like ``"20 MiB"``, ``"1.5GB"``, ``"512 KiB"``.

    KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024 (case ignored).
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"a size is a byte count or a string like '20 MiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigurationError(f"a size cannot be negative, got {value!r}")
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigurationError(
            f"cannot read the size {value!r}; write a byte count or a number with a unit: "
            "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int) -> str:
    """``size`` bytes for people: ``"20 MiB (20,971,520 bytes)"``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit.lower()]
        if size >= scale:
            return f"{size / scale:.4g} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"


class MaxSize(Rule):
    """Refuse files larger than ``limit`` (bytes, or a string like ``"20 MiB"``).

    Checked on every chunk: an oversized stream stops at the chunk that crosses the limit.
    """

    def __init__(self, limit: int | str) -> None:
        self.limit = parse_size(limit)

    def __repr__(self) -> str:
        return f"MaxSize({self.limit})"

    def check(self, findings: Findings, *, final: bool) -> None:
        """Refuse once more than ``limit`` bytes have passed."""
        if findings.size > self.limit:
            seen = "size" if final else "size so far"
            _refuse(
                findings,
                "MaxSize",
                f"{seen} {format_size(findings.size)} exceeds the limit {format_size(self.limit)}",
                findings.size,
                self.limit,
            )


_PATTERN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)|\*/\*")


class ContentTypes(Rule):
    """Accept only files whose bytes are one of ``patterns`` (``"image/*"``, ``"application/pdf"``).

    The type is sniffed from the first bytes (:func:`storeroom.media.sniff.sniff_type`); the
    file name and the declared content type are not trusted.
    """

    def __init__(self, *patterns: str) -> None:
        if not patterns:
            raise ConfigurationError("ContentTypes needs at least one pattern, e.g. 'image/*'")
        for pattern in patterns:
            if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern.lower()):
                raise ConfigurationError(
                    f"{pattern!r} is not a media type pattern; write 'type/subtype', "
                    "'type/*' or '*/*'"
                )
        self.patterns = tuple(p.lower() for p in patterns)

    def __repr__(self) -> str:
        return f"ContentTypes({', '.join(map(repr, self.patterns))})"

    def allows(self, content_type: str) -> bool:
        """Whether ``content_type`` matches one of the patterns."""
        essence = content_type.split(";", 1)[0].strip().lower()
        return any(fnmatch.fnmatchcase(essence, pattern) for pattern in self.patterns)

    def check(self, findings: Findings, *, final: bool) -> None:
        """Refuse once the sniffed type is known and matches no pattern."""
        if findings.content_type is not None and not self.allows(findings.content_type):
            _refuse(
                findings,
                "ContentTypes",
                f"its bytes are {findings.content_type}, which is not one of "
                f"{', '.join(self.patterns)}",
                findings.content_type,
                self.patterns,
            )


_VECTOR = frozenset({"image/svg+xml"})


class ImageLimits(Rule):
    """Bounds on an image's size, read from its header before any pixel is decoded.

    Applies to files whose bytes are a raster image; other files pass (combine with
    :class:`ContentTypes` to require an image). A raster image whose header storeroom cannot
    read (TIFF, AVIF, HEIC, or a header not within the first 1 MiB) is refused, since its
    size cannot be bounded; pass ``allow_unreadable=True`` to let it through.
    """

    def __init__(
        self,
        *,
        max_pixels: int | None = None,
        min_width: int | None = None,
        max_width: int | None = None,
        min_height: int | None = None,
        max_height: int | None = None,
        allow_unreadable: bool = False,
    ) -> None:
        bounds = {
            "max_pixels": max_pixels,
            "min_width": min_width,
            "max_width": max_width,
            "min_height": min_height,
            "max_height": max_height,
        }
        for name, bound in bounds.items():
            if bound is not None and (
                not isinstance(bound, int) or isinstance(bound, bool) or bound < 1
            ):
                raise ConfigurationError(
                    f"ImageLimits {name} must be a whole number >= 1, got {bound!r}"
                )
        if all(bound is None for bound in bounds.values()):
            raise ConfigurationError(
                "ImageLimits needs at least one bound: max_pixels, min_width, max_width, "
                "min_height or max_height"
            )
        self.bounds = {name: bound for name, bound in bounds.items() if bound is not None}
        self.allow_unreadable = allow_unreadable

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={bound}" for name, bound in self.bounds.items())
        return f"ImageLimits({inner})"

    def check(self, findings: Findings, *, final: bool) -> None:
        """Refuse as soon as the header's size is known and out of bounds."""
        width, height = findings.width, findings.height
        if width is None or height is None:
            is_raster = (findings.content_type or "").startswith("image/") and (
                findings.content_type not in _VECTOR
            )
            if is_raster and not self.allow_unreadable and (final or findings.headers_read):
                _refuse(
                    findings,
                    "ImageLimits",
                    f"the size of this {findings.content_type} image cannot be read from its "
                    "header (readable: PNG, JPEG, GIF, WebP, BMP), so it cannot be bounded",
                    None,
                    self.bounds,
                )
            return
        measured = {
            "max_pixels": width * height,
            "min_width": width,
            "max_width": width,
            "min_height": height,
            "max_height": height,
        }
        for name, bound in self.bounds.items():
            value = measured[name]
            if (value > bound) if name.startswith("max") else (value < bound):
                what = name.split("_", 1)[1]
                relation = "more than" if name.startswith("max") else "less than"
                _refuse(
                    findings,
                    "ImageLimits",
                    f"{what} {value:,} ({width} x {height}) is {relation} {name}={bound:,}",
                    value,
                    {name: bound},
                )


class PdfLimits(Rule):
    """Refuse PDFs with more than ``max_pages`` pages (counted with pypdfium2 at the end).

    A PDF that pypdfium2 cannot open is refused too. Other files pass. Needs the ``media``
    extra (``pip install 'storeroom[media]'``).
    """

    def __init__(self, *, max_pages: int) -> None:
        if not isinstance(max_pages, int) or isinstance(max_pages, bool) or max_pages < 1:
            raise ConfigurationError(
                f"PdfLimits max_pages must be a whole number >= 1, got {max_pages!r}"
            )
        try:
            import pypdfium2  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(
                "PdfLimits counts pages with pypdfium2, which is not installed; "
                "install it with pip install 'storeroom[media]'"
            ) from exc
        self.max_pages = max_pages

    def __repr__(self) -> str:
        return f"PdfLimits(max_pages={self.max_pages})"

    def check(self, findings: Findings, *, final: bool) -> None:
        """At the end of a PDF: refuse if unreadable or longer than ``max_pages``."""
        if not final or findings.content_type != "application/pdf":
            return
        pages = findings.pages
        if pages is None:
            _refuse(
                findings,
                "PdfLimits",
                "the PDF cannot be opened to count its pages",
                None,
                self.max_pages,
            )
        if pages > self.max_pages:
            _refuse(
                findings,
                "PdfLimits",
                f"{pages:,} pages is more than max_pages={self.max_pages:,}",
                pages,
                self.max_pages,
            )


class Check(Rule):
    """A plain callable as a validator; it runs once, at the end, with the complete findings.

    The callable refuses the file by raising :class:`~storeroom.errors.ValidationError` or
    :class:`ValueError` (its message becomes the reason), or by returning False or a string
    (the reason); returning None or True accepts it.
    """

    def __init__(self, function: Callable[[Findings], object]) -> None:
        if not callable(function):
            raise ConfigurationError(
                f"a validator is a Rule or a callable taking Findings, got {function!r}"
            )
        self.function = function
        self.name = getattr(function, "__qualname__", None) or repr(function)

    def __repr__(self) -> str:
        return f"Check({self.name})"

    def check(self, findings: Findings, *, final: bool) -> None:
        """Call the function at the end of the stream."""
        if not final:
            return
        try:
            verdict = self.function(findings)
        except ValidationError:
            raise
        except ValueError as exc:
            _refuse(findings, self.name, str(exc), None, None)
        if verdict is False or isinstance(verdict, str):
            reason = verdict if isinstance(verdict, str) else "the check returned False"
            _refuse(findings, self.name, reason, None, None)


@runtime_checkable
class _RuleLike(Protocol):
    def check(self, findings: Findings, *, final: bool) -> None: ...


ValidatorLike = Rule | Callable[[Findings], object]
"""A built-in rule, any object with ``check(findings, *, final)``, or a plain callable."""


def validators_from(validators: Iterable[ValidatorLike] | None) -> tuple[Rule, ...]:
    """The validators as rules: plain callables wrapped in :class:`Check`, order kept."""
    if validators is None:
        return ()
    if isinstance(validators, (Rule, str, bytes)) or callable(validators):
        raise ConfigurationError(
            f"validators is a list of validators, got a single {type(validators).__name__}; "
            "wrap it in a list"
        )
    rules: list[Rule] = []
    for validator in validators:
        if isinstance(validator, Rule):
            rules.append(validator)
        elif isinstance(validator, _RuleLike) and not isinstance(validator, type):
            rules.append(_Adapted(validator))
        else:
            rules.append(Check(validator))
    return tuple(rules)


class _Adapted(Rule):
    def __init__(self, rule: _RuleLike) -> None:
        self.rule = rule

    def __repr__(self) -> str:
        return repr(self.rule)

    def check(self, findings: Findings, *, final: bool) -> None:
        self.rule.check(findings, final=final)


class _Inspection:
    """The decisions of one inspection: fed chunks, it fills the findings and runs the rules.

    No I/O of the caller's; the twins below only move chunks through it.
    """

    def __init__(self, rules: Sequence[Rule], findings: Findings, *, metadata: bool) -> None:
        self.rules = rules
        self.findings = findings
        self.metadata = metadata
        self.head: bytearray | None = bytearray()
        self.image_done = False
        self.audio_done = False
        self.mp4: probe.Mp4Duration | None = None
        self.pdf: IO[bytes] | None = None
        wants_pages = metadata or any(isinstance(rule, PdfLimits) for rule in rules)
        self.count_pages = wants_pages and _pypdfium2_available()
        self.record_in: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        findings = self.findings
        earlier = findings.size
        findings.size += len(chunk)
        head = self.head
        if head is not None:
            head += chunk[: probe.HEADER_LIMIT - len(head)]
            if findings.content_type is None and len(head) >= SNIFF_BYTES:
                # Until the type is known every byte is in the head (it holds >= SNIFF_BYTES).
                self._sniff(bytes(head[:SNIFF_BYTES]), earlier=bytes(head[:earlier]))
            self._read_headers(final=False)
        if self.mp4 is not None and not self.mp4.done:
            self.mp4.feed(chunk)
        if self.pdf is not None:
            self.pdf.write(chunk)
        for rule in self.rules:
            rule.check(findings, final=False)

    def finish(self) -> None:
        findings = self.findings
        if self.head is not None:
            if findings.content_type is None:
                self._sniff(bytes(self.head[:SNIFF_BYTES]), earlier=bytes(self.head))
            self._read_headers(final=True)
        if self.mp4 is not None and self.mp4.duration is not None:
            findings.metadata.update(duration=round(self.mp4.duration, 3))
        if self.pdf is not None:
            pages = _count_pages(self.pdf)
            if pages is not None:
                findings.metadata["pages"] = pages
        for rule in self.rules:
            rule.check(findings, final=True)
        findings.complete = True
        if self.record_in is not None:
            self.record_in.update(findings.metadata)

    def close(self) -> None:
        if self.pdf is not None:
            self.pdf.close()
            self.pdf = None
        self.head = None

    def _sniff(self, head: bytes, *, earlier: bytes) -> None:
        """Record the type; streams that need every byte get those before the current chunk."""
        findings = self.findings
        findings.content_type = sniff_type(head, findings.filename)
        if head[4:8] == b"ftyp":
            self.mp4 = probe.Mp4Duration()
            self.mp4.feed(earlier)
        if findings.content_type == "application/pdf" and self.count_pages:
            # Closed by close(), which the generators call in their finally.
            self.pdf = tempfile.SpooledTemporaryFile(max_size=_PDF_SPOOL_MEMORY)  # noqa: SIM115
            self.pdf.write(earlier)

    def _read_headers(self, *, final: bool) -> None:
        head = self.head
        if head is None:
            return
        data = bytes(head)
        findings = self.findings
        if not self.image_done:
            try:
                found = probe.image_header(data)
            except probe.Unreadable:
                found, self.image_done = None, True
            if found is not None:
                findings.metadata.update(
                    width=found.width, height=found.height, format=found.format
                )
                self.image_done = True
            elif probe.image_format(data) is None and (len(data) >= 32 or final):
                self.image_done = True  # not a raster format read here
            elif len(data) >= probe.HEADER_LIMIT or final:
                self.image_done = True
        if not self.audio_done:
            duration = probe.audio_duration(data)
            if duration is not None:
                findings.metadata.update(duration=round(duration[0], 3), format=duration[1])
                self.audio_done = True
            elif (
                len(data) >= probe.HEADER_LIMIT
                or final
                or (len(data) >= 12 and not probe.may_have_duration(data))
            ):
                self.audio_done = True
        if self.image_done and self.audio_done and findings.content_type is not None:
            findings.headers_read = True
        if self.image_done and self.audio_done and len(data) >= SNIFF_BYTES:
            # Headers read: the first bytes are no longer needed (the MP4 walker and the PDF
            # spool were given them when the type was sniffed).
            self.head = None
        if self.image_done and not self.audio_done and final:
            self.head = None


def _pypdfium2_available() -> bool:
    try:
        import pypdfium2  # noqa: F401
    except ImportError:
        return False
    return True


def _count_pages(spool: IO[bytes]) -> int | None:
    import pypdfium2

    spool.seek(0)
    try:
        document = pypdfium2.PdfDocument(spool, autoclose=False)
    except pypdfium2.PdfiumError:
        return None
    try:
        return len(document)
    finally:
        document.close()


class InspectedContent(Iterator[bytes]):
    """Content being inspected: an iterator of its bytes, and the :class:`Findings` so far."""

    def __init__(self, chunks: Iterator[bytes], findings: Findings) -> None:
        self._chunks = chunks
        self.findings = findings

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """Stop inspecting (closes the source's iterator and the PDF spool)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class AsyncInspectedContent(AsyncIterator[bytes]):
    """Async form of :class:`InspectedContent`."""

    def __init__(self, chunks: AsyncIterator[bytes], findings: Findings) -> None:
        self._chunks = chunks
        self.findings = findings

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop inspecting (closes the source's iterator and the PDF spool)."""
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class InspectOptions(TypedDict, total=False):
    """The keyword options of :func:`inspect_content` and :func:`inspect_content_async`."""

    filename: str | None
    """The file's name, for error messages and for telling text types apart."""
    findings: Findings | None
    """Where to record what is learnt (default: a new :class:`Findings`)."""
    metadata: bool
    """False skips the PDF page count unless a :class:`PdfLimits` needs it (default True)."""
    chunk_size: int
    """How much to read at a time from a file or path (default: the save chunk size)."""
    record_in: dict[str, Any] | None
    """A dict (a file's ``metadata``) updated with ``findings.metadata`` once every check
    passed, and left alone when the file is refused."""


def _prepare(
    validators: Iterable[ValidatorLike] | None, options: InspectOptions
) -> tuple[_Inspection, int]:
    findings = options.get("findings")
    filename = options.get("filename")
    if findings is None:
        findings = Findings(filename=filename)
    elif filename is not None:
        findings.filename = filename
    rules = validators_from(validators)
    inspection = _Inspection(rules, findings, metadata=options.get("metadata", True))
    inspection.record_in = options.get("record_in")
    return inspection, read_size_for(options.get("chunk_size", DEFAULT_CHUNK_SIZE))


def inspect_content(
    content: Any,
    validators: Iterable[ValidatorLike] | None = (),
    **options: Unpack[InspectOptions],
) -> InspectedContent:
    """Wrap ``content`` (anything ``FileObject.save`` accepts in sync code) to inspect it.

    Returns an iterator of the same bytes that runs ``validators`` and records what it learns
    in ``.findings`` (``findings`` if given, else a new :class:`Findings`). Iterating raises
    :class:`~storeroom.errors.ValidationError` at the first refusal, before reading further;
    the last chunk is yielded only after the end-of-stream checks passed. ``options`` are
    those of :class:`InspectOptions` (``filename=``, ``findings=``, ``metadata=``,
    ``chunk_size=``).
    """
    inspection, read_size = _prepare(validators, options)
    return InspectedContent(_run(inspection, content, read_size), inspection.findings)


def inspect_content_async(
    content: Any,
    validators: Iterable[ValidatorLike] | None = (),
    **options: Unpack[InspectOptions],
) -> AsyncInspectedContent:
    """Async form of :func:`inspect_content`: also takes async files and async iterables."""
    inspection, read_size = _prepare(validators, options)
    return AsyncInspectedContent(_arun(inspection, content, read_size), inspection.findings)


def _run(inspection: _Inspection, content: Any, read_size: int) -> Iterator[bytes]:
    held: bytes | None = None
    try:
        for chunk in iter_content(content, read_size):
            inspection.feed(chunk)
            if held is not None:
                yield held
            held = chunk
        inspection.finish()
    finally:
        inspection.close()
    if held is not None:
        yield held


async def _arun(inspection: _Inspection, content: Any, read_size: int) -> AsyncIterator[bytes]:
    held: bytes | None = None
    try:
        async for chunk in aiter_content(content, read_size):
            inspection.feed(chunk)
            if held is not None:
                yield held
            held = chunk
        # The PDF page count reads the spool: keep it off the event loop.
        await asyncio.to_thread(inspection.finish)
    finally:
        inspection.close()
    if held is not None:
        yield held


class ScreenedFile(Protocol):
    """What :func:`screened` needs of a file (a FileObject): its name and its metadata."""

    @property
    def filename(self) -> str | None:
        """The name validators report and sniff by."""

    @property
    def metadata(self) -> dict[str, Any]:
        """Where what the bytes reveal is recorded."""


def screened(file: ScreenedFile, content: Any, validators: Iterable[ValidatorLike] | None) -> Any:
    """``content`` as ``file.save(content, validators=...)`` sends it to the store.

    Unchanged when ``validators`` is None; else inspected on its way (a refusal raises
    :class:`~storeroom.errors.ValidationError` before the last chunk is handed on, so the
    store never completes the write), with what the bytes reveal recorded in
    ``file.metadata`` once every check passed.
    """
    if validators is None:
        return content
    return inspect_content(content, validators, filename=file.filename, record_in=file.metadata)


def screened_async(
    file: ScreenedFile, content: Any, validators: Iterable[ValidatorLike] | None
) -> Any:
    """Async form of :func:`screened` (for ``save_async``; takes async content too)."""
    if validators is None:
        return content
    return inspect_content_async(
        content, validators, filename=file.filename, record_in=file.metadata
    )


def column_validators(
    column: Any, validators: Iterable[ValidatorLike] | None = None
) -> tuple[Rule, ...]:
    """``validators`` if given, else those of ``column`` (``Model.file`` declared with
    ``StoredObject(validators=...)``), else none: what ``save_upload`` runs."""
    if validators is not None:
        return validators_from(validators)
    kind = getattr(column, "type", None)
    found = getattr(kind, "validators", None)
    return tuple(found) if isinstance(found, tuple) else ()
