"""Variants move with their files: ``migrate`` copies them, ``copy_to`` records its own.

On every database and driver of ``tests/orm/conftest.py`` (SQLite and PostgreSQL at least):
a migrated row's variants are on the destination at the paths its records name (a variant
not made yet is no failure, and is made there on first request); a copy made with
``copy_to`` records variants at its own paths, never the original's objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import sessionmaker

from storeroom import FileObject, storages
from storeroom.orm.maintenance import ReferenceScan
from storeroom.orm.migration import (
    MigrationState,
    copy_objects,
    plan_scan,
    update_rows,
    update_rows_async,
)
from storeroom.orm.variants import ensure_variant, variant_path
from tests.media.files import image_bytes
from tests.orm.conftest import Db, FaultyBackend
from tests.orm.test_validation_variants import Picture, pictures  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("pictures")  # Picture's table, dropped afterwards


@pytest.fixture
def moved() -> Iterator[FaultyBackend]:
    """The destination of the migration: another in-memory backend."""
    backend = FaultyBackend("moved")
    storages.register_backend(backend, overwrite=True)
    yield backend
    storages._backends.pop("moved", None)


async def _add(db: Db, name: str, content: bytes) -> Picture:
    session = db.session()
    row = Picture(name=name, file=FileObject(filename=f"{name}.png", content=content))
    session.add(row)
    await session.commit()  # waits for the post-commit jobs, which make the variants
    await session.close()
    return row


async def test_migrate_copies_variants_and_rows_keep_working_records(
    db: Db, files: FaultyBackend, moved: FaultyBackend, tmp_path: Path
) -> None:
    made = await _add(db, "made", image_bytes("PNG", (64, 48)))
    assert made.file is not None
    thumb = variant_path(made.file.path, "thumb", "png")
    assert files.paths() == {made.file.path, thumb}
    late = await _add(db, "late", image_bytes("PNG", (40, 30)))
    assert late.file is not None
    files.delete(variant_path(late.file.path, "thumb", "png"))  # recorded, not made yet

    with ReferenceScan([Picture.file]) as scan:
        session = db.session()
        await session.run_sync(lambda s: scan.read_rows(s, list_ahead={}))
        await session.close()  # SQLite: the rows are written by other connections next
        with MigrationState(tmp_path / "journal.jsonl", "files", "moved") as state:
            items = list(plan_scan(scan, "files", state))
            assert [(i.source, i.variant_of) for i in items] == sorted(
                [
                    (made.file.path, None),
                    (thumb, made.file.path),
                    (late.file.path, None),
                    (variant_path(late.file.path, "thumb", "png"), late.file.path),
                ]
            )
            report = await copy_objects(files, moved, items, state=state)
            assert (report.copied, report.variants_not_made, report.failed) == (3, 1, [])
            if db.is_async:
                factory = async_sessionmaker(db.engine, expire_on_commit=False)
                rows = await update_rows_async(factory, Picture.file, "files", "moved", state)
            else:
                factory = sessionmaker(db.engine, expire_on_commit=False)
                rows = update_rows(factory, Picture.file, "files", "moved", state)
            assert rows == 2

    assert moved.paths() == {made.file.path, thumb, late.file.path}
    session = db.session()
    by_name = {r.name: r.file for r in await session.scalars(select(Picture))}
    await session.close()
    assert {f.backend for f in by_name.values()} == {"moved"}
    variant = by_name["made"].variant("thumb")
    assert (variant.backend, variant.path) == ("moved", thumb)
    assert variant.get_content() == files.get(thumb)  # the variant's bytes came along
    # The variant not made on the source is made on the destination on first request.
    lazy = ensure_variant(by_name["late"], "thumb")
    assert (lazy.backend, lazy.path) == ("moved", variant_path(late.file.path, "thumb", "png"))
    assert lazy.get_content().startswith(b"\x89PNG")
    assert files.paths() == {made.file.path, thumb, late.file.path}  # the source is kept


async def test_copy_to_records_the_copys_own_variants(db: Db, files: FaultyBackend) -> None:
    row = await _add(db, "orig", image_bytes("PNG", (64, 48)))
    assert row.file is not None
    original_thumb = variant_path(row.file.path, "thumb", "png")
    copy = row.file.copy_to("files", "copies/orig.png")
    own = variant_path("copies/orig.png", "thumb", "png")
    assert copy.variant("thumb").path == own
    assert row.file.variant("thumb").path == original_thumb  # the original is unchanged
    made = ensure_variant(copy, "thumb")
    assert made.path == own and made.get_content().startswith(b"\x89PNG")
    assert files.paths() == {row.file.path, original_thumb, "copies/orig.png", own}
