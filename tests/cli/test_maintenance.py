"""``storeroom verify`` and ``storeroom gc`` on SQLite and PostgreSQL with a local-disk store.

The findings stream out as they are found; the JSON form must still be one valid document
(empty sections included), the text form one line per finding plus the summary, and gc
must list, then delete, exactly the orphans under the prefix asked for.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from storeroom import FileObject, ObstoreBackend, storages
from tests.cli.test_commands import storeroom


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, str], Any, Any]]:
    """(CLI environment, engine, Document model) with a fresh table."""
    table = f"cli_maint_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STOREROOM_CLI_TABLE", table)
    sys.modules.pop("tests.cli.models", None)
    from tests.cli.models import Document, UUIDAuditBase

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/app.db"
    else:
        url = request.getfixturevalue("postgres_url").sync
    storages.register_backend(ObstoreBackend("local", f"file://{tmp_path}/local"), overwrite=True)
    engine = create_engine(url)
    UUIDAuditBase.metadata.create_all(engine, tables=[Document.__table__])
    env = {
        "STOREROOM_CLI_TABLE": table,
        "STORAGE__LOCAL__URL": f"file://{tmp_path}/local",
        "DATABASE_URL": url,
    }
    try:
        yield env, engine, Document
    finally:
        UUIDAuditBase.metadata.drop_all(engine, tables=[Document.__table__])
        engine.dispose()
        sys.modules.pop("tests.cli.models", None)


MODEL = ["--model", "tests.cli.models:Document"]
pytestmark = pytest.mark.filterwarnings(
    "ignore:This declarative base already contains a class:sqlalchemy.exc.SAWarning"
)


def test_verify_json_is_one_document_with_exact_findings(
    setup: tuple[dict[str, str], Any, Any], tmp_path: Path
) -> None:
    env, engine, Document = setup
    with Session(engine) as session:
        session.add_all(
            [
                Document(
                    name=f"d{i}",
                    file=FileObject(filename=f"f{i}.txt", content=f"file {i}".encode()),
                )
                for i in range(4)
            ]
        )
        session.commit()
    clean = storeroom(
        "verify", *MODEL, "--backend", "local", "--grace", "0s", "--json", env=env, cwd=tmp_path
    )
    assert clean.returncode == 0, clean.stderr.decode()
    assert json.loads(clean.stdout) == {
        "dangling": [],
        "mismatched": [],
        "orphans": [],
        "summary": {
            "references": 4,
            "dangling": 0,
            "mismatched": 0,
            "orphans": 0,
            "orphans_checked": True,
            "checksums_read": False,
        },
    }

    local = storages.get_backend("local")
    for name in ("stray/a.bin", "stray/b.bin", "other/c.bin"):
        local.put(name, b"orphan")
    local.put("stray/short.bin", b"12345")
    with Session(engine) as session:
        session.add_all(
            [
                Document(
                    name="gone1",
                    file=FileObject(backend="local", filename="x", path="never/1.txt", size=1),
                ),
                Document(
                    name="gone2",
                    file=FileObject(backend="local", filename="y", path="never/2.txt", size=1),
                ),
                Document(
                    name="short",
                    file=FileObject(backend="local", filename="s", path="stray/short.bin", size=4),
                ),
            ]
        )
        session.commit()
    found = storeroom(
        "verify",
        *MODEL,
        "--backend",
        "local",
        "--grace",
        "0s",
        "--checksums",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert found.returncode == 1, found.stderr.decode()
    report = json.loads(found.stdout)
    assert sorted(d["path"] for d in report["dangling"]) == ["never/1.txt", "never/2.txt"]
    assert all(
        d["model"] == "Document" and d["column"] == "file" and len(d["key"]) == 1
        for d in report["dangling"]
    )
    assert [(m["path"], m["kind"], m["recorded"], m["stored"]) for m in report["mismatched"]] == [
        ("stray/short.bin", "size", 4, 5)
    ]
    assert [o["path"] for o in report["orphans"]] == ["other/c.bin", "stray/a.bin", "stray/b.bin"]
    assert report["summary"] == {
        "references": 7,
        "dangling": 2,
        "mismatched": 1,
        "orphans": 3,
        "orphans_checked": True,
        "checksums_read": True,
    }
    # Only the middle section has entries: the other two are still valid empty lists.
    only = storeroom("verify", *MODEL, "--json", env=env, cwd=tmp_path)
    assert json.loads(only.stdout)["orphans"] == []

    text = storeroom(
        "verify",
        *MODEL,
        "--backend",
        "local",
        "--grace",
        "0s",
        "--prefix",
        "stray",
        env=env,
        cwd=tmp_path,
    )
    lines = text.stdout.decode().splitlines()
    assert text.returncode == 1
    assert [line.split()[0] for line in lines[:-1]] == ["dangling"] * 2 + ["mismatched"] + [
        "orphan"
    ] * 2
    assert lines[-1] == "7 references: dangling 2, mismatched 1, orphans 2"


def test_gc_lists_then_deletes_exactly_the_orphans_under_the_prefix(
    setup: tuple[dict[str, str], Any, Any], tmp_path: Path
) -> None:
    env, engine, Document = setup
    with Session(engine) as session:
        session.add_all(
            [
                Document(name=f"d{i}", file=FileObject(filename=f"f{i}.txt", content=b"kept"))
                for i in range(3)
            ]
        )
        session.commit()
    local = storages.get_backend("local")
    for name in ("stray/a.bin", "stray/b.bin", "other/c.bin"):
        local.put(name, b"orphan")
    # Only the last section has entries: the document is still valid.
    orphans_only = storeroom(
        "verify", *MODEL, "--backend", "local", "--grace", "0s", "--json", env=env, cwd=tmp_path
    )
    report = json.loads(orphans_only.stdout)
    assert report["dangling"] == [] and report["mismatched"] == []
    assert [o["path"] for o in report["orphans"]] == ["other/c.bin", "stray/a.bin", "stray/b.bin"]
    dry = storeroom(
        "gc",
        *MODEL,
        "--backend",
        "local",
        "--grace",
        "0s",
        "--prefix",
        "stray/",
        env=env,
        cwd=tmp_path,
    )
    assert dry.returncode == 0, dry.stderr.decode()
    assert dry.stdout.decode().splitlines() == [
        "would delete stray/a.bin  6 B",
        "would delete stray/b.bin  6 B",
        "2 orphans (12 B) older than 0s in local; dry run: pass --yes to delete",
    ]
    young = storeroom("gc", *MODEL, "--backend", "local", "--yes", env=env, cwd=tmp_path)
    assert young.stdout.decode().splitlines() == ["0 orphans deleted from local"]
    real = storeroom(
        "gc", *MODEL, "--backend", "local", "--grace", "0s", "--yes", env=env, cwd=tmp_path
    )
    assert real.returncode == 0, real.stderr.decode()
    assert real.stdout.decode().splitlines() == [
        "deleted other/c.bin",
        "deleted stray/a.bin",
        "deleted stray/b.bin",
        "3 orphans deleted from local",
    ]
    assert len(list(local.list())) == 3
    after = storeroom(
        "verify", *MODEL, "--backend", "local", "--grace", "0s", env=env, cwd=tmp_path
    )
    assert after.returncode == 0
    assert after.stdout.decode().splitlines() == [
        "3 references: dangling 0, mismatched 0, orphans 0"
    ]


def test_gc_yes_removes_expired_upload_sessions_and_their_objects(
    setup: tuple[dict[str, str], Any, Any], tmp_path: Path
) -> None:
    from sqlalchemy import update

    from storeroom.signing import configure_signing
    from storeroom.uploads import begin, metadata, upload_sessions

    env, engine, _Document = setup
    local = storages.get_backend("local")
    configure_signing(local, secret="gc-uploads-secret-0123456789", base_url="/files")
    metadata.create_all(engine)
    try:
        with Session(engine) as session:
            pending = begin(
                session, "local", filename="a.pdf", content_type="application/pdf", size=9
            )
            live = begin(session, "local", filename="b.pdf", content_type="application/pdf", size=9)
            session.commit()
        local.put(pending.path, b"%PDF-1.7\n", overwrite=False)
        local.put(live.path, b"%PDF-1.7\n", overwrite=False)
        with Session(engine) as session:
            session.execute(
                update(upload_sessions)
                .where(upload_sessions.c.path == pending.path)
                .values(expires_at=pending.expires_at.replace(year=2000))
            )
            session.commit()
        dry = storeroom("gc", *MODEL, "--backend", "local", "--grace", "1d", env=env, cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr.decode()
        assert local.exists(pending.path)  # a dry run removes nothing
        real = storeroom(
            "gc", *MODEL, "--backend", "local", "--grace", "1d", "--yes", env=env, cwd=tmp_path
        )
        assert real.returncode == 0, real.stderr.decode()
        assert "1 expired upload sessions removed" in real.stdout.decode().splitlines()
        assert not local.exists(pending.path)
        assert local.exists(live.path)  # not expired: still pending
        with Session(engine) as session:
            paths = {row.path for row in session.execute(upload_sessions.select())}
        assert paths == {live.path}
    finally:
        metadata.drop_all(engine)


class RefusingDeletes(ObstoreBackend):
    """An in-memory store whose deletes of chosen paths fail (a permission, say)."""

    def __init__(self, key: str, refused: set[str]) -> None:
        super().__init__(key, "memory://")
        self.refused = refused

    def _delete(self, path: str) -> None:
        if path in self.refused:
            raise PermissionError(f"injected: not allowed to delete {path}")
        super()._delete(path)


def _gc(ctx: Any, *args: str) -> Any:
    """``storeroom gc ARGS`` in this process, with the backends of ``ctx``."""
    from click.testing import CliRunner

    from storeroom.cli.maintenance import gc

    return CliRunner().invoke(gc, list(args), obj=ctx)


def test_gc_goes_past_a_failing_delete_prints_it_and_exits_1(
    setup: tuple[dict[str, str], Any, Any],
) -> None:
    from storeroom.cli.app import Context

    env, _engine, _Document = setup
    store = RefusingDeletes("local", {"stray/b.bin"})
    for path in ("stray/a.bin", "stray/b.bin", "stray/c.bin"):
        store.put(path, b"orphan")
    ctx = Context(None, _specs=[], _opened={"local": store})
    database = env["DATABASE_URL"]
    args = ("--database", database, *MODEL, "--backend", "local", "--grace", "0s", "--yes")
    result = _gc(ctx, *args)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        "deleted stray/a.bin",
        "deleted stray/c.bin",
        "2 orphans deleted from local, 1 skipped (deletes failed)",
    ]
    assert result.stderr.splitlines() == [
        "failed deleting 'stray/b.bin' on backend 'local' failed: PermissionError: injected: "
        "not allowed to delete stray/b.bin"
    ]
    assert {info.path for info in store.list()} == {"stray/b.bin"}
    store.refused.clear()
    again = _gc(ctx, *args)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == ["deleted stray/b.bin", "1 orphans deleted from local"]


@pytest.mark.s3
def test_gc_keeps_the_multipart_upload_of_an_upload_session_in_progress(
    moto_server: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storeroom.cli.app import Context
    from storeroom.uploads import metadata
    from storeroom.uploads.resumable import begin_resumable

    monkeypatch.setenv("STOREROOM_CLI_TABLE", f"cli_mp_{uuid.uuid4().hex[:8]}")
    monkeypatch.delitem(sys.modules, "tests.cli.models", raising=False)
    from tests.cli.models import Document, UUIDAuditBase

    store = storages.register_backend(
        ObstoreBackend("local", f"s3://{s3_bucket}/prefix", **moto_server.obstore_options()),
        overwrite=True,
    )
    database = f"sqlite:///{tmp_path}/app.db"
    engine = create_engine(database)
    UUIDAuditBase.metadata.create_all(engine, tables=[Document.__table__])
    metadata.create_all(engine)
    with Session(engine) as session:
        pending = begin_resumable(
            session, "local", filename="big.pdf", content_type="application/pdf", size=10 << 20
        )
        session.commit()
    engine.dispose()
    moto_server.client().create_multipart_upload(Bucket=s3_bucket, Key="prefix/crashed.bin")
    ctx = Context(None, _specs=[], _opened={"local": store})
    args = ("--database", database, *MODEL, "--backend", "local", "--grace", "0s")
    kept = f"kept incomplete multipart upload prefix/{pending.path} (upload session in progress)"
    dry = _gc(ctx, *args)
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert kept in lines
    assert any(
        line.startswith("would abort incomplete multipart upload prefix/crashed.bin")
        for line in lines
    )
    done = _gc(ctx, *args, "--yes")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert kept in lines and "aborted incomplete multipart upload prefix/crashed.bin" in lines
    assert "1 incomplete multipart uploads aborted in local" in lines
    listed = moto_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads") or []
    assert [upload["Key"] for upload in listed] == [f"prefix/{pending.path}"]
    sys.modules.pop("tests.cli.models", None)
