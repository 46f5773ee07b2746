"""Copies within one local backend go through no link, even one swapped in meanwhile.

``ObstoreBackend._copy_local``: the source is opened through no link and the copy is made
as a save makes a file, in the target's folder opened through no link, then renamed into
place. obstore's own copy opens both paths by name, so a folder swapped for a link after
storeroom checked the paths would have redirected it; these tests swap one in at the worst
moment and check that nothing is read from or written outside the root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from storeroom import ObjectNotFound, ObstoreBackend, UnsafePath
from storeroom.backends.obstore import local_files
from storeroom.backends.transfer import copy, copy_async


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def rooted(tmp_path: Path) -> tuple[ObstoreBackend, Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return ObstoreBackend("local", f"file://{root}"), root, outside


@pytest.mark.parametrize("size", [0, 5, 3 * 1024 * 1024 + 7])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_copy_holds_the_bytes_and_replaces_the_target(
    rooted: tuple[ObstoreBackend, Path, Path], size: int, mode: str
) -> None:
    backend, root, _ = rooted
    data = os.urandom(size)
    backend.put("a/src.bin", data)
    backend.put("b/dst.bin", b"old")
    if mode == "sync":
        backend.copy("a/src.bin", "b/dst.bin")
        backend.copy("a/src.bin", "c/new/dst.bin")  # folders made as a save makes them
    else:
        await backend.copy_async("a/src.bin", "b/dst.bin")
        await backend.copy_async("a/src.bin", "c/new/dst.bin")
    assert backend.get("b/dst.bin") == data and backend.get("c/new/dst.bin") == data
    # Like obstore's copy: one file under both names (no byte copied), its etag obstore's.
    assert (root / "b/dst.bin").stat().st_ino == (root / "a/src.bin").stat().st_ino
    assert backend.head("b/dst.bin").etag == backend.head("a/src.bin").etag
    assert _files(root) == ["a/src.bin", "b/dst.bin", "c/new/dst.bin"]  # nothing left over


async def test_a_missing_source_is_object_not_found_and_makes_nothing(
    rooted: tuple[ObstoreBackend, Path, Path],
) -> None:
    backend, root, _ = rooted
    with pytest.raises(ObjectNotFound, match="'a/none.bin' does not exist in backend 'local'"):
        backend.copy("a/none.bin", "b/dst.bin")
    with pytest.raises(ObjectNotFound):
        await backend.copy_async("a/none.bin", "b/dst.bin")
    assert _files(root) == []


@pytest.mark.parametrize("how", ["hard link", "bytes copied"])
@pytest.mark.parametrize("mode", ["sync", "async", "transfer"])
async def test_a_target_folder_swapped_for_a_link_after_it_was_opened_is_not_followed(
    rooted: tuple[ObstoreBackend, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    how: str,
) -> None:
    backend, root, outside = rooted
    backend.put("a/src.bin", b"secret bytes")
    backend.put("docs/old.bin", b"keep")

    def swap() -> None:
        # The folder is open by now: an attacker swaps a link to elsewhere into its place.
        if (root / "docs").is_dir() and not (root / "docs").is_symlink():
            (root / "docs").rename(root / "docs-moved")
            os.symlink(outside, root / "docs")

    def swapping(real: Any) -> Any:
        def run(*args: Any) -> Any:
            swap()
            return real(*args)

        return run

    if how == "hard link":
        monkeypatch.setattr(local_files, "name_unnamed", swapping(local_files.name_unnamed))
    else:  # a system or filesystem without hard links: the bytes are copied
        monkeypatch.setattr(ObstoreBackend, "_link_local", lambda self, fd, dst: False)
        monkeypatch.setattr(local_files, "new_file", swapping(local_files.new_file))
    if mode == "sync":
        backend.copy("a/src.bin", "docs/copy.bin")
    elif mode == "async":
        await backend.copy_async("a/src.bin", "docs/copy.bin")
    else:
        # The transfer checks the copy afterwards, by its path: that check meets the link
        # and refuses it.
        with pytest.raises(UnsafePath, match="goes through the symbolic link"):
            await copy_async(backend, "a/src.bin", backend, "docs/copy.bin")
    assert list(outside.iterdir()) == []
    assert (root / "docs-moved" / "copy.bin").read_bytes() == b"secret bytes"


@pytest.mark.parametrize("mode", ["sync", "async", "transfer"])
async def test_a_source_or_target_path_through_a_link_is_refused(
    rooted: tuple[ObstoreBackend, Path, Path], mode: str
) -> None:
    backend, root, outside = rooted
    (outside / "private.bin").write_bytes(b"not the store's")
    os.symlink(outside, root / "linked")
    backend.put("a/src.bin", b"mine")

    async def run(src: str, dst: str) -> None:
        if mode == "sync":
            backend.copy(src, dst)
        elif mode == "async":
            await backend.copy_async(src, dst)
        else:
            copy(backend, src, backend, dst)

    with pytest.raises(UnsafePath):
        await run("linked/private.bin", "a/stolen.bin")  # reading out of the root
    with pytest.raises(UnsafePath):
        await run("a/src.bin", "linked/planted.bin")  # writing out of the root
    assert sorted(p.name for p in outside.iterdir()) == ["private.bin"]
    assert _files(root) == ["a/src.bin"]


def test_a_copy_across_filesystems_falls_back_to_reads_and_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)

    def refusing(*args: object) -> int:
        raise OSError(18, "Invalid cross-device link")  # EXDEV

    monkeypatch.setattr(os, "copy_file_range", refusing, raising=False)
    with open(src, "rb") as a, open(dst, "wb") as b:
        local_files.copy_to_end(a.fileno(), b.fileno())
    assert dst.read_bytes() == data


def test_where_no_hard_link_can_be_made_the_bytes_are_copied_and_nothing_is_left(
    rooted: tuple[ObstoreBackend, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, root, _ = rooted
    data = os.urandom(70_000)
    backend.put("a/src.bin", data)
    real_name = local_files.name_unnamed
    refused: list[str] = []

    def no_hard_links(fd: int, folder: int | None, name: str) -> None:
        if not refused:  # the first: the hard link; after it, the copy's own file
            refused.append(name)
            raise OSError(18, "Invalid cross-device link")  # EXDEV: another filesystem
        real_name(fd, folder, name)

    monkeypatch.setattr(local_files, "name_unnamed", no_hard_links)
    backend.copy("a/src.bin", "b/dst.bin")
    assert refused  # a hard link was tried first
    assert backend.get("b/dst.bin") == data
    assert (root / "b/dst.bin").stat().st_ino != (root / "a/src.bin").stat().st_ino
    assert _files(root) == ["a/src.bin", "b/dst.bin"]  # no scratch name left behind
