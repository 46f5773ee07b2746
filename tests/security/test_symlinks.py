"""Local backends never follow a symbolic link out of (or within) their root.

Links are planted inside the root (a file link and a directory link, both pointing
outside); every operation through them is refused with UnsafePath, listings do not show
what lies behind them, and nothing outside the root is read, written or deleted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storeroom import FileObject, ObstoreBackend, StorageRegistry
from storeroom.backends import local_root
from storeroom.backends.base import StorageBackend
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.errors import UnsafePath
from storeroom.orm import StoredObject, find_orphans

SECRET = b"outside the root"


@pytest.fixture(params=["obstore", "obstore-lstat", "fsspec"])
def planted(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[StorageBackend, Path]]:
    if request.param == "obstore-lstat":  # as where the system has no openat2
        monkeypatch.setattr(local_root, "_openat2", None)
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "inside.txt").write_bytes(b"mine")
    os.symlink(outside / "secret.txt", root / "filelink.txt")
    os.symlink(outside, root / "dirlink")
    backend: StorageBackend
    if request.param.startswith("obstore"):
        backend = ObstoreBackend("local", f"file://{root}")
    else:
        backend = FSSpecBackend("local", "file", prefix=str(root))
    yield backend, outside


THROUGH_LINKS = ["filelink.txt", "dirlink/secret.txt", "dirlink/new.txt"]


@pytest.mark.parametrize("path", THROUGH_LINKS)
def test_read_head_write_delete_and_copy_through_a_link_are_refused(
    planted: tuple[StorageBackend, Path], path: str
) -> None:
    backend, outside = planted
    with pytest.raises(UnsafePath, match="symbolic link"):
        backend.get(path)
    with pytest.raises(UnsafePath):
        backend.head(path)
    with pytest.raises(UnsafePath):
        backend.put(path, b"overwritten")
    with pytest.raises(UnsafePath):
        backend.delete(path)
    with pytest.raises(UnsafePath):
        backend.copy(path, "copied.txt")
    with pytest.raises(UnsafePath):
        backend.copy("inside.txt", path)
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert backend.get("inside.txt") == b"mine"


async def test_async_operations_through_a_link_are_refused(
    planted: tuple[StorageBackend, Path],
) -> None:
    backend, outside = planted
    for path in THROUGH_LINKS:
        with pytest.raises(UnsafePath):
            await backend.get_async(path)
        with pytest.raises(UnsafePath):
            await backend.put_async(path, b"overwritten")
        with pytest.raises(UnsafePath):
            await backend.delete_async(path)
        with pytest.raises(UnsafePath):
            await backend.copy_async("inside.txt", path)
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert [info.path async for info in backend.list_async()] == ["inside.txt"]


def test_listing_does_not_show_what_lies_behind_links(
    planted: tuple[StorageBackend, Path],
) -> None:
    backend, _ = planted
    assert [info.path for info in backend.list()] == ["inside.txt"]
    assert [info.path for info in backend.list("dirlink")] == []


def test_a_link_planted_after_a_save_is_not_followed(planted: tuple[StorageBackend, Path]) -> None:
    backend, outside = planted
    backend.put("docs/a.txt", b"a")
    root = Path(backend.location.removeprefix("file://"))
    (root / "docs" / "a.txt").unlink()
    (root / "docs").rmdir()
    os.symlink(outside, root / "docs")
    with pytest.raises(UnsafePath):
        backend.get("docs/secret.txt")
    with pytest.raises(UnsafePath):
        backend.put("docs/a.txt", b"again")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="local"))


def test_gc_finds_and_deletes_no_orphan_outside_the_root(
    planted: tuple[StorageBackend, Path], tmp_path: Path
) -> None:
    backend, outside = planted
    registry = StorageRegistry()
    registry.register_backend(backend)
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        orphans = find_orphans(session, Doc, backend, grace=timedelta(0), registry=registry)
        assert [o.path for o in orphans] == ["inside.txt"]
        for orphan in orphans:  # what `storeroom gc --yes` does with them
            backend.delete(orphan.path)
    assert (outside / "secret.txt").read_bytes() == SECRET
    engine.dispose()


def test_storeroom_gc_and_verify_never_touch_files_behind_a_link(tmp_path: Path) -> None:
    """The issue's case: `storeroom gc --yes` deleted a file outside the root through a
    symlinked directory."""
    import subprocess
    import sys

    from tests.cli.models import Document

    root, outside = tmp_path / "local", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "precious.txt").write_bytes(SECRET)
    (root / "orphan.txt").write_bytes(b"nobody references me")
    os.symlink(outside, root / "linked")
    engine = create_engine(f"sqlite:///{tmp_path}/app.db")
    Document.__table__.create(engine)  # type: ignore[attr-defined]
    engine.dispose()
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": f"{repo}/src:{repo}",
        "STOREROOM_CLI_TABLE": Document.__tablename__,
        "STORAGE__LOCAL__URL": f"file://{root}",
        "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
    }
    common = ["--model", "tests.cli.models:Document", "--backend", "local", "--grace", "0s"]
    for command in (["verify", *common], ["gc", *common, "--yes"]):
        done = subprocess.run(
            [sys.executable, "-m", "storeroom.cli", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
        assert b"precious" not in done.stdout, done.stdout
        assert done.returncode in (0, 1), done.stderr.decode()
    assert (outside / "precious.txt").read_bytes() == SECRET
    assert not (root / "orphan.txt").exists()  # gc still does its job inside the root


def test_a_listing_check_agrees_with_the_check_of_each_path(tmp_path: Path) -> None:
    """ListingCheck remembers the last clean folder; whatever the order of the paths, it
    must answer exactly as a fresh check of each one would."""
    import random

    from storeroom.backends.local_root import ListingCheck, contained, real_root

    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    (outside / "x" / "f.bin").write_bytes(SECRET)
    paths = []
    for a in ("a", "b", "c"):
        for b in ("d", "e"):
            (root / a / b).mkdir(parents=True)
            for name in ("1.bin", "2.bin"):
                (root / a / b / name).write_bytes(b"mine")
                paths.append(f"{a}/{b}/{name}")
    os.symlink(outside, root / "a" / "link")  # a folder link in the middle of a tree
    os.symlink(outside / "x" / "f.bin", root / "b" / "d" / "3.bin")  # a file link
    os.symlink(outside, root / "zlink")  # a folder link at the top
    paths += ["a/link/x/f.bin", "b/d/3.bin", "zlink/x/f.bin", "top.bin", "a/../a/d/1.bin"]
    (root / "top.bin").write_bytes(b"mine")
    (root / "many").mkdir()  # a directory read once: its links are found among many files
    for i in range(40):
        if i in (7, 31):
            os.symlink(outside / "x" / "f.bin", root / "many" / f"{i}.bin")
        else:
            (root / "many" / f"{i}.bin").write_bytes(b"mine")
        paths.append(f"many/{i}.bin")
    base = real_root(str(root))
    expected = {path: contained(base, path) for path in paths}
    assert [p for p, ok in expected.items() if not ok] == [
        "a/link/x/f.bin",
        "b/d/3.bin",
        "zlink/x/f.bin",
        "a/../a/d/1.bin",
        "many/7.bin",
        "many/31.bin",
    ]
    rng = random.Random(7)
    for order in [sorted(paths), sorted(paths, reverse=True)] + [
        rng.sample(paths, len(paths)) for _ in range(20)
    ]:
        check = ListingCheck(base)
        assert {path: check.contained(path) for path in order} == expected
