"""Variants of files held by ``StoredObject(variants=...)`` columns: where they live, how made.

Decisions (docs/variants.md):

- **Path.** A variant's path is derived from its original's: ``<original path>.variants/
  <name>.<format>`` in the original's backend (:func:`variant_path`). It is therefore known
  before the variant exists.
- **Record.** When the original is uploaded in the flush, the column records, in the
  original's ``metadata["variants"]``, each variant that applies to its (sniffed) type:
  ``{"thumb": {"path": ..., "content_type": "image/webp", "column": "table.column"}}``. The
  record is committed with the row; the bytes follow. A recorded variant whose bytes are not
  there yet is simply not made yet: :func:`ensure_variant` makes it.
- **Made eagerly** after the commit, by the job :data:`VARIANT_JOB` through
  :mod:`storeroom.jobs` (in-process by default, SAQ workers when configured). The job is
  idempotent: each variant is written create-only and ``ObjectExists`` means it is done; an
  original that is gone by then is skipped, and a variant written while its original was
  being deleted is deleted again.
- **Made lazily** by :func:`ensure_variant` / :func:`ensure_variant_async`: if the variant is
  missing it is made and written create-only; the loser of a race (another request, another
  process, the job) gets ``ObjectExists`` and uses the winner's object. Within one process
  concurrent callers for the same variant wait on one lock, so the bytes are made once.
- **Made on request** by :func:`ensure_variant_at` when only the variant's path is known (a
  signed URL served by :mod:`storeroom.web`): the path names the original and the variant,
  the original's first bytes its type, and the columns declared in this process the maker
  (the one declaring that name and format for that type); same lock, same create-only write.
- **Deleted with the original**: the transaction rule counts a file's recorded variants as
  part of it, so they are deleted after the commit that drops the original.
- **verify/gc**: an object at ``<referenced path>.variants/...`` counts as referenced (the
  original is the part before the last ``.variants/``: :func:`variant_original`).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from storeroom.backends.base import StorageBackend
from storeroom.errors import ConfigurationError, ObjectExists, ObjectNotFound
from storeroom.file import FileObject
from storeroom.jobs import get_queue, job
from storeroom.media.sniff import SNIFF_BYTES, sniff_type
from storeroom.media.variants import VariantNotDeclared

__all__ = [
    "VARIANTS_DIRECTORY",
    "VARIANT_JOB",
    "ensure_variant",
    "ensure_variant_async",
    "ensure_variant_at",
    "ensure_variant_at_async",
    "makers_for",
    "record_column_variants",
    "record_variants",
    "register_column",
    "schedule_variants",
    "split_variant_path",
    "variant_original",
    "variant_path",
]

#: The job (see :mod:`storeroom.jobs`) that makes a file's variants after a commit.
VARIANT_JOB = "storeroom.orm.make_variants"

#: What separates an original's path from its variants' (``a/cat.png.variants/thumb.webp``).
VARIANTS_DIRECTORY = ".variants/"

_makers: dict[str, Mapping[str, Any]] = {}
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def variant_path(original: str, name: str, format: str) -> str:
    """Where variant ``name`` (of ``format``) of the object at ``original`` is stored."""
    return f"{original}{VARIANTS_DIRECTORY}{name}.{format}"


def variant_original(path: str) -> str | None:
    """The path of the file whose variant ``path`` would be, else None.

    That is the part before the last ``.variants/`` (a variant's name holds no ``/``, so an
    original's own path may hold ``.variants/`` but a variant's tail cannot); None when
    ``path`` holds none, or nothing before it. ``verify`` and ``gc`` count an object whose
    original is referenced as referenced.
    """
    original, separator, _tail = path.rpartition(VARIANTS_DIRECTORY)
    return original if separator and original else None


def split_variant_path(path: str) -> tuple[str, str, str] | None:
    """``(original path, name, format)`` if ``path`` is where a variant is stored, else None."""
    original = variant_original(path)
    if original is None:
        return None
    tail = path[len(original) + len(VARIANTS_DIRECTORY) :]
    name, dot, format = tail.rpartition(".")
    if not (dot and name and format) or "/" in tail:
        return None
    return original, name, format


def register_column(column: str, makers: Mapping[str, Any]) -> None:
    """Make ``column`` (``"table.column"``)'s makers known to jobs and lazy requests."""
    _makers[column] = makers


def makers_for(column: str) -> Mapping[str, Any]:
    """The variant makers of ``column`` (``"table.column"``)."""
    found = _makers.get(column)
    if found is None:
        from sqlalchemy.orm import configure_mappers

        configure_mappers()  # a worker process that imported the models but used none yet
        found = _makers.get(column)
    if found is None:
        raise ConfigurationError(
            f"no StoredObject column {column!r} with variants is known in this process; "
            "import the application's models before running variant jobs"
        )
    return found


def record_variants(
    file: FileObject, column: str, makers: Mapping[str, Any], content_type: str | None
) -> None:
    """Record on ``file`` the variants of ``makers`` that apply to ``content_type``."""
    records = {
        name: {
            "path": variant_path(file.path, name, maker.format),
            "content_type": maker.content_type,
            "column": column,
        }
        for name, maker in makers.items()
        if maker.accepts(content_type)
    }
    if records:
        file.metadata["variants"] = records
    else:
        file.metadata.pop("variants", None)


def record_column_variants(
    file: FileObject, column: Any, content_type: str | None = None
) -> FileObject:
    """Record on ``file`` the variants of ``column`` (``Model.file``) that suit its type.

    For a file stored outside the flush (an upload session's ``complete``, ``save_upload``)
    and then assigned to the column: its variants are then made on first request.
    ``content_type`` is the type sniffed from its bytes (default: ``file.content_type``).
    Returns ``file``; a column without variants records nothing.
    """
    makers = getattr(getattr(column, "type", None), "variants", None)
    table = getattr(getattr(getattr(column, "class_", None), "__table__", None), "name", None)
    if makers and table is not None:
        kind = content_type or file.content_type
        record_variants(file, f"{table}.{column.key}", makers, kind)
    return file


def _records(file: FileObject) -> dict[str, Mapping[str, Any]]:
    records = file.metadata.get("variants")
    if not isinstance(records, Mapping):
        return {}
    return {n: r for n, r in records.items() if isinstance(r, Mapping) and "path" in r}


def schedule_variants(files: list[FileObject]) -> None:
    """Enqueue :data:`VARIANT_JOB` for each file with recorded variants (never raises)."""
    import logging

    queue = get_queue()
    for file in files:
        records = _records(file)
        if not records:
            continue
        payload = {
            "backend": file.backend or "",
            "path": file.path,
            "variants": {name: dict(record) for name, record in records.items()},
        }
        try:
            queue.enqueue(VARIANT_JOB, payload)
        except Exception as exc:
            logging.getLogger("storeroom.orm").error(
                "could not schedule the variants of %r: %s; they will be made on first "
                "request (ensure_variant)",
                file.path,
                exc,
            )


def _lock(key: tuple[str, str]) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            if len(_locks) > 4096:
                _locks.clear()  # bounded; a dropped lock only costs a second make
            lock = _locks[key] = threading.Lock()
        return lock


def _target(original: FileObject, name: str) -> tuple[FileObject, Any]:
    record = _records(original).get(name)
    if record is None:
        raise VariantNotDeclared(
            f"{original.path!r} has no variant {name!r}; recorded: "
            f"{sorted(_records(original)) or 'none'} (variants are recorded when a file is "
            "uploaded into a StoredObject(variants=...) column and its type suits the maker)"
        )
    maker = makers_for(str(record.get("column", "")))[name]
    return original.variant(name), maker


def _produce(
    original: FileObject, chunks: Iterator[bytes], target: FileObject, maker: Any
) -> FileObject:
    """Make ``target`` from ``chunks`` (the original's bytes) and write it create-only.

    Called under the variant's lock. The bytes are made whole before the write starts, so a
    source that cannot be made into a variant leaves nothing behind.
    """
    data = maker.make(chunks)
    try:
        target.save(data, overwrite=False)
    except ObjectExists:
        return target.refresh()  # another process made it first: use the winner's
    if not original.exists():
        target.delete()  # the original was deleted meanwhile: leave no orphan
        raise ObjectNotFound(f"{original.path!r} was deleted while its variant was made")
    return target


def _make_one(original: FileObject, name: str) -> FileObject:
    target, maker = _target(original, name)
    with _lock((target.backend or "", target.path)):
        if target.exists():
            return target.refresh()
        source = FileObject(backend=original.storage, path=original.path)
        return _produce(source, source.iter_chunks(), target, maker)


def ensure_variant(original: FileObject, name: str) -> FileObject:
    """Variant ``name`` of ``original``, made now (once) if it does not exist yet.

    Returns the variant's FileObject (read, sign or serve it). Raises
    :class:`~storeroom.media.variants.VariantNotDeclared` (a ``ConfigurationError``) for a
    variant the file does not record, :class:`~storeroom.errors.ObjectNotFound` when the
    original is gone, and :class:`~storeroom.media.variants.VariantError` (or
    ``ValidationError``, for an image over the maker's ``max_pixels``) when it cannot be made.
    """
    return _make_one(original, name)


async def ensure_variant_async(original: FileObject, name: str) -> FileObject:
    """Async form of :func:`ensure_variant` (the work runs in a worker thread)."""
    return await asyncio.to_thread(_make_one, original, name)


def _declared_maker(name: str, format: str, content_type: str) -> Any:
    """The maker that the columns of this process declare for variant ``name`` in ``format``
    of a file whose bytes are ``content_type``."""

    def candidates() -> dict[str, Any]:
        return {
            column: makers[name]
            for column, makers in _makers.items()
            if name in makers and getattr(makers[name], "format", None) == format
        }

    found = candidates()
    if not found:
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
        found = candidates()
    if not found:
        raise VariantNotDeclared(
            f"no StoredObject column in this process declares a variant {name!r} in format "
            f"{format!r} (declared: {sorted({n for m in _makers.values() for n in m}) or 'none'})"
        )
    fitting = {column: maker for column, maker in found.items() if maker.accepts(content_type)}
    if not fitting:
        raise VariantNotDeclared(
            f"variant {name!r} is not made from files of type {content_type} "
            f"(declared by {', '.join(sorted(found))})"
        )
    distinct: list[Any] = []
    for maker in fitting.values():
        if maker not in distinct:
            distinct.append(maker)
    if len(distinct) > 1:
        raise ConfigurationError(
            f"columns {', '.join(sorted(fitting))} declare variant {name!r} ({format}) "
            "differently, so a request naming only its path cannot tell which to make; give "
            "them different names, or serve it with ensure_variant(file, name)"
        )
    return distinct[0]


def _peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """The first ``size`` bytes of ``chunks`` and an iterator over all of them."""
    taken: list[bytes] = []
    seen = 0
    for chunk in chunks:
        taken.append(chunk)
        seen += len(chunk)
        if seen >= size:
            break
    return b"".join(taken)[:size], itertools.chain(taken, chunks)


def _make_at(backend: StorageBackend, path: str) -> FileObject:
    parts = split_variant_path(path)
    if parts is None:
        raise ObjectNotFound(f"{path!r} is not where a variant is stored")
    original_path, name, format = parts
    target = FileObject(backend=backend, path=path, filename=path.rsplit("/", 1)[-1])
    with _lock((backend.key or "", path)):
        if target.exists():
            return target.refresh()
        original = FileObject(backend=backend, path=original_path)
        head, chunks = _peek(original.iter_chunks(), SNIFF_BYTES)
        maker = _declared_maker(name, format, sniff_type(head, original_path))
        target.content_type = maker.content_type
        return _produce(original, chunks, target, maker)


def ensure_variant_at(backend: StorageBackend, path: str) -> FileObject:
    """The variant stored at ``path`` (``<original>.variants/<name>.<format>``), made now
    (once) if it is missing: what serving a variant's signed URL does.

    The maker is the one that this process's ``StoredObject(variants=...)`` columns declare
    under that name and format for the original's type, sniffed from its first bytes.
    Raises :class:`~storeroom.errors.ObjectNotFound` when ``path`` is not a variant's or the
    original is gone, :class:`~storeroom.media.variants.VariantNotDeclared` when no column
    declares such a variant for such a file, :class:`~storeroom.errors.ConfigurationError`
    when two columns declare it differently, and :class:`~storeroom.media.variants.VariantError`
    (or ``ValidationError``) when the original cannot be made into it.
    """
    return _make_at(backend, path)


async def ensure_variant_at_async(backend: StorageBackend, path: str) -> FileObject:
    """Async form of :func:`ensure_variant_at` (the work runs in a worker thread)."""
    return await asyncio.to_thread(_make_at, backend, path)


@job(VARIANT_JOB)
def _make_variants_job(payload: Mapping[str, Any]) -> None:
    """Make the variants in ``payload`` of the original at ``payload["path"]``; idempotent."""
    original = FileObject(
        backend=payload["backend"] or None,
        path=payload["path"],
        metadata={"variants": payload["variants"]},
    )
    for name in payload["variants"]:
        try:
            _make_one(original, name)
        except ObjectNotFound:
            return  # the original was deleted before its variants were made: nothing to do
