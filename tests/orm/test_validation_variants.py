"""Validators, recorded metadata and variants of StoredObject columns, through the ORM.

On SQLite and PostgreSQL (MariaDB too when there), sync and async drivers: a refused file
fails the flush and nothing is kept; metadata lands in the row; variants are made after the
commit, deleted with their original, never made by a rolled-back transaction, and seen as
referenced by verify/gc.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import UploadFile
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import Mapped, mapped_column

from storeroom import FileObject
from storeroom.errors import ConfigurationError, ValidationError
from storeroom.media.validation import ContentTypes, ImageLimits, MaxSize
from storeroom.orm import UUIDAuditBase, find_dangling, find_orphans
from storeroom.orm.types import StoredObject
from storeroom.orm.variants import ensure_variant, ensure_variant_async, variant_path
from storeroom.serialization import PUBLIC
from tests.media.files import image_bytes, pdf_bytes, png_bomb_header
from tests.orm.conftest import SUFFIX, Db, FaultyBackend, row_json


def _variants() -> dict[str, Any]:
    from storeroom.media.variants import PdfPage, Thumbnail

    return {
        "thumb": Thumbnail(16, 16, format="png", engine="pillow"),
        "preview": PdfPage(1, width=50, format="png"),
    }


class Picture(UUIDAuditBase):
    """Images and PDFs only, at most 64 KiB, at most 1,000,000 pixels; with variants."""

    __tablename__ = f"sr_picture_{SUFFIX}"

    name: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject | None] = mapped_column(
        StoredObject(
            backend="files",
            validators=[
                MaxSize("64 KiB"),
                ContentTypes("image/*", "application/pdf"),
                ImageLimits(max_pixels=1_000_000),
            ],
            variants=_variants(),
        ),
        nullable=True,
    )


@pytest.fixture
def pictures(db: Db) -> Iterator[None]:
    engine = create_engine(db.sync_url)
    UUIDAuditBase.metadata.create_all(engine, tables=[Picture.__table__])  # type: ignore[list-item]
    try:
        yield
    finally:
        UUIDAuditBase.metadata.drop_all(engine, tables=[Picture.__table__])  # type: ignore[list-item]
        engine.dispose()


async def _consistent(db: Db, files: FaultyBackend) -> None:
    session = db.session()
    try:
        orphans = await session.run_sync(
            lambda s: find_orphans(s, [Picture.file], files, grace=timedelta(0))
        )
        dangling = await session.run_sync(lambda s: find_dangling(s, Picture))
    finally:
        await session.close()
    assert [o.path for o in orphans] == []
    assert dangling == []


async def test_refused_file_fails_the_flush_and_nothing_is_kept(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    session = db.session()
    session.add(Picture(name="ok", file=FileObject(filename="ok.png", content=image_bytes("PNG"))))
    session.add(
        Picture(
            name="bad", file=FileObject(filename="cat.png", content=b"MZ\x90\x00 not an image" * 10)
        )
    )
    with pytest.raises(ValidationError) as caught:
        await session.flush()
    error = caught.value
    assert error.filename == "cat.png" and error.rule == "ContentTypes"
    assert "cat.png" in str(error) and "image/*" in str(error)
    await session.rollback()
    await session.close()
    assert files.paths() == set()  # the accepted file of the same flush is gone too
    session = db.session()
    assert await session.scalars(select(Picture)) == []
    await session.close()


@pytest.mark.parametrize(
    ("content", "rule", "limit"),
    [
        (
            lambda: png_bomb_header(50_000, 50_000) + b"\x00" * 100,
            "ImageLimits",
            {"max_pixels": 1_000_000},
        ),
        (lambda: image_bytes("PNG") + b"\x00" * 70_000, "MaxSize", 64 * 1024),
    ],
    ids=["decompression-bomb", "too-large"],
)
async def test_limits_name_the_rule_value_and_limit(
    db: Db, files: FaultyBackend, pictures: None, content: Any, rule: str, limit: object
) -> None:
    session = db.session()
    session.add(Picture(name="x", file=FileObject(filename="big.png", content=content())))
    with pytest.raises(ValidationError) as caught:
        await session.commit()
    assert caught.value.rule == rule and caught.value.limit == limit
    assert caught.value.value is not None
    await session.rollback()
    await session.close()
    assert files.paths() == set()
    await _consistent(db, files)


async def test_metadata_recorded_and_public(db: Db, files: FaultyBackend, pictures: None) -> None:
    session = db.session()
    session.add(
        Picture(name="img", file=FileObject(filename="a.png", content=image_bytes("PNG", (40, 30))))
    )
    session.add(Picture(name="doc", file=FileObject(filename="a.pdf", content=pdf_bytes(3))))
    await session.commit()
    await session.close()
    image = row_json(db, Picture.__tablename__, "img")["metadata"]
    assert (image["width"], image["height"], image["format"]) == (40, 30, "png")
    assert row_json(db, Picture.__tablename__, "doc")["metadata"]["pages"] == 3
    public = PUBLIC.dump(FileObject.from_dict(row_json(db, Picture.__tablename__, "img")))
    assert public["media"] == {"width": 40, "height": 30, "format": "png"}
    assert "metadata" not in public and "path" not in public


async def test_variant_made_after_commit_and_deleted_with_the_original(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    session = db.session()
    row = Picture(name="v", file=FileObject(filename="a.png", content=image_bytes("PNG", (64, 48))))
    session.add(row)
    await session.flush()
    assert row.file is not None
    thumb_path = variant_path(row.file.path, "thumb", "png")
    assert files.paths() == {row.file.path}  # nothing made before the commit
    await session.commit()  # waits for the post-commit jobs
    assert files.paths() == {row.file.path, thumb_path}
    thumb = row.file.variant("thumb")
    assert thumb.path == thumb_path and thumb.content_type == "image/png"
    data = thumb.get_content()
    assert data.startswith(b"\x89PNG")
    with pytest.raises(ConfigurationError, match="preview"):
        row.file.variant("preview")  # a PDF page does not apply to an image
    await _consistent(db, files)  # the variant is referenced, not an orphan
    await session.delete(row)
    await session.commit()
    await session.close()
    assert files.paths() == set()


async def test_replacing_the_original_deletes_its_variants(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    session = db.session()
    row = Picture(name="r", file=FileObject(filename="a.pdf", content=pdf_bytes(1)))
    session.add(row)
    await session.commit()
    assert row.file is not None
    old = {row.file.path, row.file.variant("preview").path}
    assert files.paths() == old
    row.file = FileObject(filename="b.png", content=image_bytes("PNG"))
    await session.commit()
    await session.close()
    assert not (files.paths() & old)
    assert len(files.paths()) == 2
    await _consistent(db, files)


async def test_rolled_back_transaction_leaves_no_variant(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    session = db.session()
    session.add(Picture(name="rb", file=FileObject(filename="a.png", content=image_bytes("PNG"))))
    await session.flush()
    await session.rollback()
    await session.close()
    from storeroom.orm import wait_for_cleanup

    assert wait_for_cleanup(30)
    assert files.paths() == set()


async def test_lazy_variant_made_once_under_concurrent_requests(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    session = db.session()
    row = Picture(name="lazy", file=FileObject(filename="a.png", content=image_bytes("PNG")))
    session.add(row)
    await session.commit()
    await session.close()
    assert row.file is not None
    thumb = row.file.variant("thumb")
    thumb.delete()  # as if the job had not run yet
    writes_before = files.writes if hasattr(files, "writes") else None
    results: list[FileObject] = []
    errors: list[BaseException] = []

    def request() -> None:
        try:
            assert row.file is not None
            results.append(ensure_variant(row.file, "thumb"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert {r.path for r in results} == {thumb.path}
    assert len({r.etag for r in results}) == 1  # all see the one object that was written
    if writes_before is not None:
        assert files.writes - writes_before == 1
    again = await ensure_variant_async(row.file, "thumb")
    assert again.get_content() == thumb.get_content()
    await _consistent(db, files)


async def test_variant_of_a_missing_name_is_a_clear_error(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    file = FileObject(backend="files", path="x.png", metadata={})
    with pytest.raises(ConfigurationError, match="no variant 'thumb'"):
        file.variant("thumb")


def test_column_refuses_bad_declarations() -> None:
    with pytest.raises(ConfigurationError, match="variant name"):
        StoredObject(variants={"a/b": _variants()["thumb"]})
    with pytest.raises(ConfigurationError, match="not a variant maker"):
        StoredObject(variants={"x": object()})
    with pytest.raises(ConfigurationError, match="list"):
        StoredObject(validators=MaxSize(10))  # type: ignore[arg-type]


# -- the same validators in upload sessions ------------------------------------------------


@pytest.fixture
def upload_env(tmp_path: Any) -> Iterator[Any]:
    from tests.uploads.test_sessions import Env

    environment = Env(tmp_path)
    yield environment
    environment.engine.dispose()


def _begin(env: Any, body: bytes) -> str:
    from sqlalchemy.orm import Session

    from storeroom.uploads import begin
    from tests.uploads.test_sessions import Photo

    with Session(env.engine) as session:
        target = begin(
            session, Photo.image, filename="tiny.png", content_type="image/png", size=len(body)
        )
        session.commit()
    assert env.send(target.instructions, body) == 200
    return target.id


def test_upload_session_completion_runs_validators_and_records_metadata(upload_env: Any) -> None:
    from sqlalchemy.orm import Session

    from storeroom.uploads import complete

    body = image_bytes("PNG", (8, 6))
    refused = _begin(upload_env, body)
    with Session(upload_env.engine) as session, pytest.raises(ValidationError) as caught:
        complete(session, refused, validators=[ImageLimits(min_width=16)])
    assert (caught.value.rule, caught.value.value, caught.value.limit) == (
        "ImageLimits",
        8,
        {"min_width": 16},
    )
    assert "tiny.png" in str(caught.value)
    assert upload_env.files() == []  # the refused object is deleted
    accepted = _begin(upload_env, body)
    with Session(upload_env.engine) as session:
        file = complete(session, accepted, validators=Picture.file.type.validators)
        session.commit()
    assert (file.metadata["width"], file.metadata["height"]) == (8, 6)
    assert PUBLIC.dump(file)["media"] == {"width": 8, "height": 6, "format": "png"}


async def test_upload_session_completion_async_runs_validators(upload_env: Any) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from storeroom.uploads import complete_async

    refused = _begin(upload_env, b"%PDF-1.4 not an image at all" * 4)
    engine = create_async_engine(upload_env.engine.url.set(drivername="sqlite+aiosqlite"))
    try:
        async with AsyncSession(engine) as session:
            with pytest.raises(ValidationError) as caught:
                await complete_async(session, refused, validators=[ContentTypes("image/*")])
    finally:
        await engine.dispose()
    assert caught.value.rule == "ContentTypes" and caught.value.value == "application/pdf"
    assert upload_env.files() == []


# -- the same validators in save_upload ----------------------------------------------------


def test_save_upload_runs_the_column_validators(files: FaultyBackend) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from storeroom.contrib.fastapi import save_upload

    api = FastAPI()

    @api.post("/pictures")
    async def upload(file: UploadFile) -> dict[str, Any]:
        try:
            saved = await save_upload(file, column=Picture.file)
        except ValidationError as exc:
            return {"refused": exc.rule, "message": str(exc)}
        return {"path": saved.path, "metadata": saved.metadata}

    client = TestClient(api)
    refused = client.post("/pictures", files={"file": ("evil.png", b"#!/bin/sh\nrm -rf /\n" * 9)})
    assert refused.json()["refused"] == "ContentTypes" and "evil.png" in refused.json()["message"]
    assert files.paths() == set()
    accepted = client.post("/pictures", files={"file": ("a.png", image_bytes("PNG", (20, 10)))})
    body = accepted.json()
    assert files.paths() == {body["path"]}
    assert (body["metadata"]["width"], body["metadata"]["height"]) == (20, 10)
    thumb = FileObject(backend="files", path=body["path"], metadata=body["metadata"])
    assert ensure_variant(thumb, "thumb").get_content().startswith(b"\x89PNG")  # made lazily


async def test_gc_keeps_variants_of_referenced_files_and_removes_the_others(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    from sqlalchemy.orm import sessionmaker

    from storeroom.orm import remove_orphans

    session = db.session()
    row = Picture(name="gc", file=FileObject(filename="a.png", content=image_bytes("PNG")))
    session.add(row)
    await session.commit()
    await session.close()
    assert row.file is not None
    kept = {row.file.path, row.file.variant("thumb").path}
    not_made_yet = variant_path(row.file.path, "other", "webp")  # unrecorded, still its own
    stray = variant_path("gone/b.png", "thumb", "png")  # the original is referenced nowhere
    files.put(not_made_yet, b"x")
    files.put(stray, b"y")
    engine = create_engine(db.sync_url)
    try:
        removed = [
            info.path
            for info, deleted in remove_orphans(
                sessionmaker(engine), [Picture.file], files, grace=timedelta(0)
            )
            if deleted
        ]
    finally:
        engine.dispose()
    assert removed == [stray]
    assert files.paths() == kept | {not_made_yet}


async def test_variant_job_is_idempotent_and_skips_a_deleted_original(
    db: Db, files: FaultyBackend, pictures: None
) -> None:
    from storeroom.jobs import get_queue
    from storeroom.orm.variants import VARIANT_JOB

    session = db.session()
    row = Picture(name="idem", file=FileObject(filename="a.pdf", content=pdf_bytes(2)))
    session.add(row)
    await session.commit()
    await session.close()
    assert row.file is not None
    preview = row.file.variant("preview")
    etag = preview.refresh().etag
    payload = {"backend": "files", "path": row.file.path, "variants": row.file.metadata["variants"]}
    writes = files.writes
    get_queue().enqueue(VARIANT_JOB, payload)  # delivered again: nothing is rewritten
    assert get_queue().drain(30)
    assert files.writes == writes and preview.refresh().etag == etag
    row.file.delete()
    preview.delete()
    get_queue().enqueue(VARIANT_JOB, payload)  # the original is gone: nothing is made
    assert get_queue().drain(30)
    assert files.paths() == set()


@pytest.mark.slow
def test_variants_are_made_by_a_real_saq_worker_after_commit(tmp_path: Any) -> None:
    import importlib
    import io
    import os
    import subprocess
    import sys

    from PIL import Image
    from sqlalchemy.orm import Session

    from storeroom.jobs import get_queue, set_queue
    from tests.jobs import test_saq

    client = test_saq.redis_client.__wrapped__()  # type: ignore[attr-defined]
    run = test_saq.Run(client, test_saq.REDIS_URL)
    root = tmp_path / "disk"
    root.mkdir()
    os.environ["STOREROOM_VARIANT_TEST_ROOT"] = str(root)
    previous = get_queue()
    try:
        import tests.orm.saq_variant_models as models

        models = importlib.reload(models)
        paths = os.pathsep.join([str(test_saq.ROOT / "src"), str(test_saq.ROOT)])
        run.workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "storeroom.jobs.saq",
                    "--url",
                    run.url,
                    "--name",
                    run.name,
                    "--import",
                    "tests.orm.saq_variant_models",
                    "--concurrency",
                    "2",
                    "--sweep",
                    "1",
                ],
                env={**os.environ, "PYTHONPATH": paths},
            )
        )
        set_queue(test_saq.make_queue(run))
        engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
        models.Base.metadata.create_all(engine)
        image = io.BytesIO()
        Image.new("RGB", (64, 48), "teal").save(image, "PNG")
        with Session(engine, expire_on_commit=False) as session:
            row = models.Poster(image=FileObject(filename="p.png", content=image.getvalue()))
            session.add(row)
            session.commit()  # the variant job goes to the SAQ queue, a worker makes it
        engine.dispose()
        thumb = row.image.variant("thumb")
        run.wait_for(thumb.exists, 60, "the worker to make the thumbnail")
        assert Image.open(io.BytesIO(thumb.get_content())).size == (16, 12)
    finally:
        set_queue(previous)
        os.environ.pop("STOREROOM_VARIANT_TEST_ROOT", None)
        run.cleanup()
