"""A delete on local disk is one ``unlink`` in the calling thread, and does what obstore does.

obstore deletes a local file by removing it, after a hop to its thread pool that costs ten
times the call (``storeroom gc`` deleting 10,000 orphans spent 3.3 s there). storeroom
unlinks plain paths itself. Where obstore does more or says it differently, obstore answers:
a store with ``automatic_cleanup`` (which also removes the directories a delete empties), a
store built outside storeroom (whose options are unknown), a directory, a name outside the
plain set. A link is refused before anything is removed.
"""

from __future__ import annotations

import os
from pathlib import Path

import obstore
import pytest
from obstore.store import LocalStore

from storeroom import ObstoreBackend
from storeroom.errors import BackendError, UnsafePath


def _refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("obstore was asked")

    for name in ("delete", "delete_async"):
        monkeypatch.setattr(obstore, name, refused)


async def test_a_plain_local_delete_makes_no_call_to_obstore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = ObstoreBackend("disk", f"file://{tmp_path / 'root'}", mkdir=True)
    for name in ("a/b.bin", "a/c.bin"):
        disk.put(name, b"bytes")
    _refuse(monkeypatch)
    disk.delete("a/b.bin")
    await disk.delete_async("a/c.bin")
    assert not disk.exists("a/b.bin") and not disk.exists("a/c.bin")
    # Deleting what is not there is no error, as with obstore; the directory stays.
    disk.delete("a/b.bin")
    await disk.delete_async("nowhere/x.bin")
    assert (tmp_path / "root" / "a").is_dir()


async def test_automatic_cleanup_is_left_to_obstore(tmp_path: Path) -> None:
    disk = ObstoreBackend("disk", f"file://{tmp_path / 'root'}", mkdir=True, automatic_cleanup=True)
    disk.put("deep/er/x.bin", b"x")
    disk.put("deep/y.bin", b"y")
    disk.delete("deep/er/x.bin")  # emptied deep/er: obstore removes it
    assert not (tmp_path / "root" / "deep" / "er").exists()
    await disk.delete_async("deep/y.bin")
    assert not (tmp_path / "root" / "deep").exists()
    assert (tmp_path / "root").is_dir()


def test_a_store_built_elsewhere_is_left_to_obstore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "root").mkdir()
    disk = ObstoreBackend("disk", LocalStore(str(tmp_path / "root"), automatic_cleanup=True))
    # (A LocalStore's prefix is a pathlib.Path: the location is still text.)
    assert disk.location == f"local://{tmp_path / 'root'}"
    disk.put("deep/x.bin", b"x")
    disk.delete("deep/x.bin")
    assert not (tmp_path / "root" / "deep").exists()  # its cleanup happened


def test_what_an_unlink_cannot_do_obstore_answers(tmp_path: Path) -> None:
    disk = ObstoreBackend("disk", f"file://{tmp_path / 'root'}", mkdir=True)
    disk.put("dir/file.bin", b"x")
    reference = LocalStore(str(tmp_path / "root"))
    with pytest.raises(Exception) as obstores:
        obstore.delete(reference, "dir")
    with pytest.raises(BackendError) as ours:
        disk.delete("dir")  # a directory: obstore's error, translated as before
    assert str(obstores.value).splitlines()[0] in str(ours.value)
    assert (tmp_path / "root" / "dir" / "file.bin").exists()
    for name in ("with space.txt", "café.txt"):  # outside the plain set: obstore deletes
        disk.put(name, b"y")
        disk.delete(name)
        assert not disk.exists(name)


def test_a_link_is_refused_before_anything_is_removed(tmp_path: Path) -> None:
    disk = ObstoreBackend("disk", f"file://{tmp_path / 'root'}", mkdir=True)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    os.symlink(outside, tmp_path / "root" / "link.bin")
    with pytest.raises(UnsafePath):
        disk.delete("link.bin")
    assert outside.exists() and (tmp_path / "root" / "link.bin").is_symlink()
