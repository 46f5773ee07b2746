"""Small saves on local disk are written to the file directly, exactly as obstore would.

``ObstoreBackend._write_local``: a scratch file beside the path, renamed over it (or,
create-only, hard linked to it), with obstore's etag. These tests hold it to obstore's own
LocalStore: same bytes, same etag as a HEAD, same refusals, nothing left behind.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import obstore
import pytest
from obstore.store import LocalStore

from storeroom import FileObject, ObjectExists, ObstoreBackend
from storeroom.backends import local_root
from storeroom.backends.obstore import backend as backend_module
from storeroom.backends.obstore import local_files
from storeroom.errors import StoreroomError, UnsafePath

SIZES = [0, 1, 4096, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024]  # inline, threaded, 1 PUT


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("size", SIZES)
async def test_a_direct_write_is_what_obstore_would_have_written(
    tmp_path: Path, size: int, asynchronous: bool
) -> None:
    ours_root, theirs_root = tmp_path / "ours", tmp_path / "theirs"
    ours_root.mkdir()
    theirs_root.mkdir()
    ours = ObstoreBackend("ours", f"file://{ours_root}")
    theirs = LocalStore(str(theirs_root))
    data = os.urandom(size)
    for path in ("a.bin", "deep/er/b.bin"):
        if asynchronous:
            written = await ours.put_async(path, data)
        else:
            written = ours.put(path, data)
        obstore.put(theirs, path, data)
        assert (ours_root / path).read_bytes() == data == (theirs_root / path).read_bytes()
        assert written.etag == ours.head(path).etag == obstore.head(ours.store, path)["e_tag"]
        assert oct((ours_root / path).stat().st_mode) == oct((theirs_root / path).stat().st_mode)
    assert _files(ours_root) == _files(theirs_root) == ["a.bin", "deep/er/b.bin"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_overwrite_replaces_and_create_only_refuses_leaving_the_file_as_it_was(
    tmp_path: Path, asynchronous: bool
) -> None:
    backend = ObstoreBackend("local", f"file://{tmp_path}")

    async def aput(data: bytes, overwrite: bool = True):  # type: ignore[no-untyped-def]
        if asynchronous:
            return await backend.put_async("f.txt", data, overwrite=overwrite)
        return backend.put("f.txt", data, overwrite=overwrite)

    first = await aput(b"first", overwrite=False)
    replaced = await aput(b"second")
    assert (tmp_path / "f.txt").read_bytes() == b"second" and replaced.etag != first.etag
    with pytest.raises(ObjectExists, match="'f.txt' already exists"):
        await aput(b"third", overwrite=False)
    assert (tmp_path / "f.txt").read_bytes() == b"second"
    assert backend.head("f.txt").etag == replaced.etag
    assert _files(tmp_path) == ["f.txt"]  # no scratch file left by the refused write


def test_two_create_only_writers_racing_for_one_path_leave_one_whole_file(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = ObstoreBackend("local", f"file://{tmp_path}")
    bodies = [bytes([i]) * 50_000 for i in range(16)]

    def write(body: bytes) -> bool:
        try:
            backend.put("race.bin", body, overwrite=False)
        except ObjectExists:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(write, bodies))
    assert won.count(True) == 1
    assert (tmp_path / "race.bin").read_bytes() == bodies[won.index(True)]
    assert _files(tmp_path) == ["race.bin"]


def test_a_write_that_cannot_land_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    (tmp_path / "dir.bin").mkdir()
    (tmp_path / "file").write_bytes(b"a file, not a folder")
    with pytest.raises(StoreroomError):
        backend.put("dir.bin", b"over a folder")
    with pytest.raises(ObjectExists):
        backend.put("dir.bin", b"over a folder", overwrite=False)
    with pytest.raises(StoreroomError):
        backend.put("file/below.bin", b"under a file")
    assert _files(tmp_path) == ["file"] and (tmp_path / "dir.bin").is_dir()


@pytest.mark.parametrize("check", ["openat2", "lstat"])
def test_a_link_in_the_way_is_still_refused_and_nothing_lands_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    if check == "lstat":  # as where the system has no openat2
        monkeypatch.setattr(local_root, "_openat2", None)
    elif local_root._openat2 is None:
        pytest.skip("this system has no openat2 (Linux 5.6 or later)")
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "dirlink")
    os.symlink(outside / "target.bin", root / "filelink.bin")
    backend = ObstoreBackend("local", f"file://{root}")
    os.symlink(outside / "nowhere", root / "dangling.bin")
    for path in ("dirlink/new.bin", "dirlink/deeper/new.bin", "filelink.bin", "dangling.bin"):
        for overwrite in (True, False):
            with pytest.raises(UnsafePath, match="symbolic link"):
                backend.put(path, b"x", overwrite=overwrite)
            with pytest.raises(UnsafePath, match="symbolic link"):
                asyncio.run(backend.put_async(path, b"x", overwrite=overwrite))
    assert list(outside.iterdir()) == []
    assert os.readlink(root / "filelink.bin") == str(outside / "target.bin")  # not replaced


@pytest.mark.parametrize("overwrite", [False, True], ids=["create-only", "overwrite"])
def test_no_name_holds_a_small_file_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    """A process killed mid-write leaves nothing for a listing to find: on Linux the bytes
    go to an unnamed file (O_TMPFILE) that is linked into place once whole."""
    if not local_files._UNNAMED_FILE:
        pytest.skip("this system writes through a scratch file (no O_TMPFILE or /proc)")
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    backend.put("d/old.bin", b"old")
    seen: list[list[str]] = []
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        seen.append(_files(tmp_path))  # what a listing (or a kill) would find right now
        return real_write(fd, data)

    monkeypatch.setattr(backend_module.os, "write", write)
    backend.put("d/new.bin", b"new bytes", overwrite=overwrite)
    backend.put("d/old.bin", b"newer", overwrite=True)
    monkeypatch.undo()
    assert seen == [["d/old.bin"], ["d/new.bin", "d/old.bin"]]
    assert _files(tmp_path) == ["d/new.bin", "d/old.bin"]
    assert (tmp_path / "d/new.bin").read_bytes() == b"new bytes"
    assert (tmp_path / "d/old.bin").read_bytes() == b"newer"


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "scratch-file"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["create-only", "overwrite"])
def test_a_write_failing_midway_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool, unnamed: bool
) -> None:
    if not unnamed:  # as on a system without O_TMPFILE
        monkeypatch.setattr(local_files, "_UNNAMED_FILE", 0)
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    backend.put("kept.bin", b"kept")

    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(backend_module.os, "write", full)
    with pytest.raises(StoreroomError, match="No space left"):
        backend.put("lost.bin", b"x" * 100, overwrite=overwrite)
    with pytest.raises(StoreroomError, match="No space left"):
        backend.put("kept.bin", b"replacement", overwrite=True)
    monkeypatch.setattr(backend_module.os, "write", real_write)
    assert _files(tmp_path) == ["kept.bin"]
    assert (tmp_path / "kept.bin").read_bytes() == b"kept"
    # And with room again, both ways of writing work.
    backend.put("new.bin", b"new", overwrite=overwrite)
    with pytest.raises(ObjectExists):
        backend.put("new.bin", b"again", overwrite=False)
    backend.put("kept.bin", b"replaced")
    assert _files(tmp_path) == ["kept.bin", "new.bin"]
    assert (tmp_path / "kept.bin").read_bytes() == b"replaced"
    assert backend.head("new.bin").etag == obstore.head(backend.store, "new.bin")["e_tag"]


@pytest.mark.parametrize("how", ["one read", "short reads", "past one read", "shrinking"])
def test_a_whole_read_of_a_local_file_returns_its_bytes_however_the_reads_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``get`` reads a local file with open, fstat, read, close; a read that returns less
    (a signal, a huge file) is continued, and a file shrinking meanwhile ends the read."""
    backend = ObstoreBackend("local", f"file://{tmp_path}")
    data = os.urandom(100_000)
    backend.put("f.bin", data)
    real_read = os.read
    if how == "short reads":
        monkeypatch.setattr(backend_module.os, "read", lambda fd, n: real_read(fd, min(n, 7_000)))
    elif how == "past one read":
        monkeypatch.setattr(local_files, "_ONE_READ", 1_000)
    elif how == "shrinking":

        def shrink_then_read(fd: int, n: int) -> bytes:
            os.truncate(tmp_path / "f.bin", 60_000)
            return real_read(fd, min(n, 50_000))

        monkeypatch.setattr(backend_module.os, "read", shrink_then_read)
    got = backend.get("f.bin")
    monkeypatch.undo()
    assert got == (data[:60_000] if how == "shrinking" else data)
    if how == "shrinking":  # and a verified read names what happened
        with pytest.raises(StoreroomError, match="60000 bytes"):
            FileObject(backend=backend, path="f.bin", size=100_000).get_content()
