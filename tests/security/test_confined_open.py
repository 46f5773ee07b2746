"""A link swapped in while storeroom works on a local file cannot lead it out of the root.

Where storeroom opens local files itself (small reads and writes), Linux's ``openat2``
with ``RESOLVE_NO_SYMLINKS`` resolves the whole path in one call that refuses any link, and
a write makes every name in the folder it opened so. These tests plant the link at the
worst moment: in the middle of a write (after the folder was opened, before the file is
named), and over and over from another thread while reads run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storeroom import ObstoreBackend
from storeroom.backends import local_root
from storeroom.backends.obstore import backend as backend_module
from storeroom.backends.obstore import local_files
from storeroom.errors import ObjectNotFound, UnsafePath

SECRET = b"outside the root"

needs_openat2 = pytest.mark.skipif(
    local_root._openat2 is None, reason="this system has no openat2 (Linux 5.6 or later)"
)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    (outside / "a.bin").write_bytes(SECRET)
    return root, outside


def _swap_for_link(root: Path, outside: Path) -> None:
    """Move ``docs`` away and put a link to ``outside`` in its place."""
    (root / "docs").rename(root / "docs-moved")
    os.symlink(outside, root / "docs")


@needs_openat2
@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "scratch-file"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["create-only", "overwrite"])
def test_a_folder_swapped_for_a_link_mid_write_does_not_redirect_the_file(
    roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, overwrite: bool, unnamed: bool
) -> None:
    root, outside = roots
    if not unnamed:  # as on a file system without O_TMPFILE
        monkeypatch.setattr(local_files, "_UNNAMED_FILE", 0)
    backend = ObstoreBackend("local", f"file://{root}")
    real_write = os.write
    swapped: list[bool] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        if not swapped:  # the folder is open, the file not yet named: the worst moment
            _swap_for_link(root, outside)
            swapped.append(True)
        return real_write(fd, data)

    monkeypatch.setattr(backend_module.os, "write", write)
    backend.put("docs/new.bin", b"mine", overwrite=overwrite)
    monkeypatch.undo()
    assert swapped
    assert sorted(p.name for p in outside.iterdir()) == ["a.bin"]
    assert (outside / "a.bin").read_bytes() == SECRET
    assert (root / "docs-moved" / "new.bin").read_bytes() == b"mine"  # where it was opened
    assert sorted(p.name for p in (root / "docs-moved").iterdir()) == ["new.bin"]


@needs_openat2
def test_reads_never_return_what_a_link_flipping_in_and_out_points_at(
    roots: tuple[Path, Path],
) -> None:
    """Another thread flips ``docs`` between the folder and a link to ``outside`` as fast
    as it can (bounded: 3 s or 3,000 flips) while reads run; no read sees the secret."""
    root, outside = roots
    (root / "docs" / "a.bin").write_bytes(b"inside")
    backend = ObstoreBackend("local", f"file://{root}")
    stop = threading.Event()
    flips = [0]

    def flip() -> None:
        deadline = time.monotonic() + 3
        while not stop.is_set() and flips[0] < 3000 and time.monotonic() < deadline:
            _swap_for_link(root, outside)
            (root / "docs").unlink()
            (root / "docs-moved").rename(root / "docs")
            flips[0] += 1

    seen: set[bytes] = set()
    outcomes = {"read": 0, "refused": 0, "missing": 0}
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the interpreter over between any two steps
    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        while flipper.is_alive():
            for read in (
                backend.get,
                lambda p: b"".join(backend.stream(p)),
                lambda p: b"".join(backend.stream(p, chunk_size=2)),  # chunk after chunk
                lambda p: b"?" * backend.head(p).size,  # the secret's size differs
            ):
                try:
                    seen.add(read("docs/a.bin"))
                    outcomes["read"] += 1
                except UnsafePath:
                    outcomes["refused"] += 1
                except ObjectNotFound:  # between the unlink and the rename back
                    outcomes["missing"] += 1
    finally:
        stop.set()
        flipper.join()
        sys.setswitchinterval(old_interval)
    assert flips[0] > 100, flips
    assert seen == {b"inside", b"??????"}, outcomes
    assert outcomes["read"] > 0 and outcomes["refused"] + outcomes["missing"] > 0, outcomes


@needs_openat2
def test_a_folder_swapped_for_a_link_mid_delete_does_not_delete_outside(
    roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = roots
    (root / "docs" / "a.bin").write_bytes(b"inside")
    backend = ObstoreBackend("local", f"file://{root}")
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        _swap_for_link(root, outside)  # the folder is open, the name not yet removed
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(backend_module.os, "unlink", unlink)
    backend.delete("docs/a.bin")
    monkeypatch.undo()
    assert (outside / "a.bin").read_bytes() == SECRET
    assert list((root / "docs-moved").iterdir()) == []  # deleted where it was found


@pytest.fixture(params=["openat2", "lstat"])
def check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "lstat":  # as where the system has no openat2
        monkeypatch.setattr(local_root, "_openat2", None)
    elif local_root._openat2 is None:
        pytest.skip("this system has no openat2 (Linux 5.6 or later)")
    yield request.param


def test_open_confined_opens_plain_paths_and_names_the_link_it_refuses(
    roots: tuple[Path, Path], check: str
) -> None:
    root, outside = roots
    (root / "docs" / "a.bin").write_bytes(b"inside")
    os.symlink(outside, root / "dirlink")
    os.symlink(outside / "a.bin", root / "docs" / "filelink.bin")
    os.symlink(outside / "gone", root / "dangling")
    real = local_root.real_root(str(root))
    fd = local_root.open_confined(real, "docs/a.bin", os.O_RDONLY, 0, "files")
    try:
        assert os.read(fd, 100) == b"inside"
    finally:
        os.close(fd)
    for path, link in [
        ("dirlink/a.bin", "dirlink"),
        ("docs/filelink.bin", "docs/filelink.bin"),
        ("dangling/x.bin", "dangling"),
        ("dangling", "dangling"),
    ]:
        with pytest.raises(
            UnsafePath, match=f"backend 'files' goes through the symbolic link '{real}/{link}'"
        ):
            local_root.open_confined(real, path, os.O_RDONLY, 0, "files")
    with pytest.raises(UnsafePath, match="'docs/../../outside/a.bin'"):
        local_root.open_confined(real, "docs/../../outside/a.bin", os.O_RDONLY)
    with pytest.raises(FileNotFoundError):
        local_root.open_confined(real, "docs/missing.bin", os.O_RDONLY)
    folder, name = local_root.open_folder(real, "docs/new.bin")
    try:
        assert name == ("new.bin" if check == "openat2" else f"{real}/docs/new.bin")
        assert (folder is None) == (check == "lstat")
    finally:
        if folder is not None:
            os.close(folder)


def test_direct_writes_and_reads_work_either_way(tmp_path: Path, check: str) -> None:
    """Saves make missing folders, replace or refuse as asked, and read back, whichever
    check the system allows."""
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    backend.put("a/b/c/new.bin", b"one")
    assert backend.get("a/b/c/new.bin") == b"one"
    backend.put("a/b/c/new.bin", b"two")
    assert backend.get("a/b/c/new.bin") == b"two"
    with pytest.raises(Exception, match="already exists"):
        backend.put("a/b/c/new.bin", b"three", overwrite=False)
    backend.put("top.bin", b"top", overwrite=False)
    assert (
        backend.get("top.bin") == b"top" and b"".join(backend.stream("top.bin", start=1)) == b"op"
    )
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.bin")) == [
        "a/b/c/new.bin",
        "top.bin",
    ]


def test_systems_without_openat2_keep_the_lstat_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """openat2's number differs on some architectures, and other systems have none: those
    get no caller, and every open goes through confine (as the tests above with "lstat")."""
    monkeypatch.setattr(local_root.platform, "machine", lambda: "mips")
    assert local_root._find_openat2() is None
    monkeypatch.setattr(local_root.sys, "platform", "darwin")
    assert local_root._find_openat2() is None


def test_no_descriptor_is_left_open_by_any_outcome(roots: tuple[Path, Path], check: str) -> None:
    """Saves, reads, heads and deletes that succeed, find nothing, meet an existing object
    or a link each close every folder and file they opened."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counting open descriptors needs /proc/self/fd")
    root, outside = roots
    os.symlink(outside, root / "dirlink")
    backend = ObstoreBackend("local", f"file://{root}")

    def every_outcome(i: int) -> None:
        backend.put(f"docs/{i}.bin", b"x" * i)
        backend.put(f"docs/{i}.bin", b"y" * i)
        with pytest.raises(Exception, match="already exists"):
            backend.put(f"docs/{i}.bin", b"z", overwrite=False)
        assert backend.get(f"docs/{i}.bin") == b"y" * i
        assert backend.head(f"docs/{i}.bin").size == i
        assert b"".join(backend.stream(f"docs/{i}.bin", start=0, end=i)) == b"y" * i
        for missing in (f"docs/none-{i}.bin", f"nofolder-{i}/x.bin"):
            with pytest.raises(ObjectNotFound):
                backend.get(missing)
            with pytest.raises(ObjectNotFound):
                backend.head(missing)
            backend.delete(missing)
        for linked in ("dirlink/a.bin", f"dirlink/new-{i}.bin"):
            with pytest.raises(UnsafePath):
                backend.get(linked)
            with pytest.raises(UnsafePath):
                backend.head(linked)
            with pytest.raises(UnsafePath):
                backend.put(linked, b"x")
            with pytest.raises(UnsafePath):
                backend.delete(linked)
        backend.delete(f"docs/{i}.bin")

    every_outcome(1)  # anything opened once and kept (a library's own) is open before counting
    before = len(os.listdir("/proc/self/fd"))  # (numbers vary: the listing opens one too)
    for i in range(2, 40):
        every_outcome(i)
    assert len(os.listdir("/proc/self/fd")) == before
    assert sorted(p.name for p in outside.iterdir()) == ["a.bin"]
