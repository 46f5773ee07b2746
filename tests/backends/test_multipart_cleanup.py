"""Issue 13, case 6: S3 multipart uploads never stay open after a failed or cancelled save.

A save cancelled (async) or interrupted (sync, by a BaseException) in the middle of a multipart
upload aborts it; ``storeroom gc`` finds and aborts what a crashed process left, once older than
the grace period. Against moto's S3 server, counting uploads with ListMultipartUploads.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from storeroom.backends.obstore import ObstoreBackend
from storeroom.backends.obstore.multipart import (
    UploadAborter,
    abort_incomplete_uploads,
    find_incomplete_uploads,
)
from tests.servers.moto import MotoServer

PART = 5 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


class Interrupted(BaseException):
    pass


def _backend(server: MotoServer, bucket: str) -> ObstoreBackend:
    return ObstoreBackend(
        "s3-multipart",
        f"s3://{bucket}/prefix",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        aws_endpoint=server.endpoint,
        aws_region=server.region,
        aws_allow_http=True,
    )


def _open_uploads(server: MotoServer, bucket: str) -> list[str]:
    listed = server.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listed.get("Uploads", []) or []]


async def test_a_cancelled_multipart_save_is_aborted(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    backend = _backend(moto_server, s3_bucket)
    started = asyncio.Event()

    async def parts() -> AsyncIterator[bytes]:
        for number in range(25):
            yield b"p" * PART
            if number == 2:
                started.set()
                await asyncio.Event().wait()  # the rest never comes

    for run in range(3):
        started.clear()
        save = asyncio.ensure_future(
            backend.put_async(f"video-{run}.bin", parts(), chunk_size=PART)
        )
        await asyncio.wait_for(started.wait(), 60)
        deadline = asyncio.get_running_loop().time() + 30
        while not _open_uploads(moto_server, s3_bucket):  # the upload is open on S3
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        save.cancel()
        with pytest.raises(asyncio.CancelledError):
            await save
        assert _open_uploads(moto_server, s3_bucket) == []
    assert list(backend.list()) == []


def test_an_interrupted_sync_multipart_save_is_aborted(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    backend = _backend(moto_server, s3_bucket)

    def parts() -> Iterator[bytes]:
        for _ in range(3):
            yield b"p" * PART
        raise Interrupted("Ctrl-C")

    with pytest.raises(Interrupted):
        backend.put("big.bin", parts(), chunk_size=PART)
    assert _open_uploads(moto_server, s3_bucket) == []
    assert list(backend.list()) == []


def test_incomplete_uploads_are_found_after_the_grace_period_and_aborted(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    backend = _backend(moto_server, s3_bucket)
    client = moto_server.client()
    client.create_multipart_upload(Bucket=s3_bucket, Key="prefix/crashed.bin")
    client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/not-ours.bin")
    # moto dates every upload 2010-11-10, so "too young" is checked with a century of grace.
    assert find_incomplete_uploads(backend, older_than=timedelta(days=36500)) == []
    found = find_incomplete_uploads(backend, older_than=timedelta(0))
    assert [u.key for u in found] == ["prefix/crashed.bin"]
    aborted = abort_incomplete_uploads(backend, older_than=timedelta(0))
    assert [u.key for u in aborted] == ["prefix/crashed.bin"]
    assert _open_uploads(moto_server, s3_bucket) == ["elsewhere/not-ours.bin"]


def test_an_upload_finished_after_it_was_listed_is_skipped_quietly(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    backend = _backend(moto_server, s3_bucket)
    client = moto_server.client()
    for name in ("gone", "kept"):
        client.create_multipart_upload(Bucket=s3_bucket, Key=f"prefix/{name}.bin")
    listed = find_incomplete_uploads(backend, older_than=timedelta(0))
    assert sorted(u.key for u in listed) == ["prefix/gone.bin", "prefix/kept.bin"]
    gone = next(u for u in listed if u.key == "prefix/gone.bin")
    # Another process aborts it between the listing and the sweep.
    client.abort_multipart_upload(Bucket=s3_bucket, Key=gone.key, UploadId=gone.upload_id)
    aborter = UploadAborter(backend)
    assert [aborter.abort(u) for u in sorted(listed, key=lambda u: u.key)] == [False, True]
    assert _open_uploads(moto_server, s3_bucket) == []


def test_storeroom_gc_aborts_incomplete_multipart_uploads(
    moto_server: MotoServer, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import create_engine

    # The model's table name comes from the environment at import: import it afresh with the
    # name the storeroom subprocess will see (other tests import it under other names).
    monkeypatch.setenv("STOREROOM_CLI_TABLE", "cli_multipart_gc")
    monkeypatch.delitem(sys.modules, "tests.cli.models", raising=False)
    from tests.cli.models import Document

    database = f"sqlite:///{tmp_path}/gc.db"
    engine = create_engine(database)
    Document.metadata.create_all(engine, tables=[Document.__table__])
    engine.dispose()
    moto_server.client().create_multipart_upload(Bucket=s3_bucket, Key="prefix/left.bin")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}/src:{ROOT}",
        "STORAGE__LOCAL__URL": f"s3://{s3_bucket}/prefix",
        "STORAGE__LOCAL__AWS_ENDPOINT": moto_server.endpoint,
        "STORAGE__LOCAL__AWS_ACCESS_KEY_ID": moto_server.access_key,
        "STORAGE__LOCAL__AWS_SECRET_ACCESS_KEY": moto_server.secret_key,
        "STORAGE__LOCAL__AWS_REGION": moto_server.region,
        "STORAGE__LOCAL__AWS_ALLOW_HTTP": "true",
    }

    def gc(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "storeroom.cli",
                "gc",
                "--database",
                database,
                "--model",
                "tests.cli.models:Document",
                "--backend",
                "local",
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )

    kept = gc("--grace", "36500d")  # younger than the grace period (moto dates it 2010)
    assert kept.returncode == 0, kept.stderr
    assert "left.bin" not in kept.stdout
    dry = gc("--grace", "0s")
    assert "would abort incomplete multipart upload prefix/left.bin" in dry.stdout, dry.stderr
    assert _open_uploads(moto_server, s3_bucket) == ["prefix/left.bin"]
    done = gc("--grace", "0s", "--yes")
    assert "1 incomplete multipart uploads aborted" in done.stdout, done.stderr
    assert _open_uploads(moto_server, s3_bucket) == []
