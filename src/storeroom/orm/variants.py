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
- **Deleted with the original**: the transaction rule counts a file's recorded variants as
  part of it, so they are deleted after the commit that drops the original.
- **verify/gc**: an object at ``<referenced path>.variants/...`` counts as referenced.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from storeroom.errors import ConfigurationError, ObjectExists, ObjectNotFound
from storeroom.file import FileObject
from storeroom.jobs import get_queue, job

__all__ = [
    "VARIANTS_DIRECTORY",
    "VARIANT_JOB",
    "ensure_variant",
    "ensure_variant_async",
    "makers_for",
    "record_variants",
    "register_column",
    "schedule_variants",
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
        raise ConfigurationError(
            f"{original.path!r} has no variant {name!r}; recorded: "
            f"{sorted(_records(original)) or 'none'} (variants are recorded when a file is "
            "uploaded into a StoredObject(variants=...) column and its type suits the maker)"
        )
    maker = makers_for(str(record.get("column", "")))[name]
    return original.variant(name), maker


def _make_one(original: FileObject, name: str) -> FileObject:
    target, maker = _target(original, name)
    key = (target.backend or "", target.path)
    with _lock(key):
        if target.exists():
            return target.refresh()
        data = maker.make(FileObject(backend=original.storage, path=original.path).iter_chunks())
        try:
            target.save(data, overwrite=False)
        except ObjectExists:
            return target.refresh()  # another process made it first: use the winner's
        if not original.exists():
            target.delete()  # the original was deleted meanwhile: leave no orphan
            raise ObjectNotFound(f"{original.path!r} was deleted while its variant was made")
        return target


def ensure_variant(original: FileObject, name: str) -> FileObject:
    """Variant ``name`` of ``original``, made now (once) if it does not exist yet.

    Returns the variant's FileObject (read, sign or serve it). Raises
    :class:`~storeroom.errors.ConfigurationError` for a variant the file does not record,
    :class:`~storeroom.errors.ObjectNotFound` when the original is gone, and
    :class:`~storeroom.media.variants.VariantError` when it cannot be made.
    """
    return _make_one(original, name)


async def ensure_variant_async(original: FileObject, name: str) -> FileObject:
    """Async form of :func:`ensure_variant` (the work runs in a worker thread)."""
    return await asyncio.to_thread(_make_one, original, name)


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
