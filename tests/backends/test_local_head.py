"""A HEAD on local disk is one ``stat`` in the calling thread, and says what obstore says.

obstore answers a local HEAD through a hop to its own thread pool (about ten times the
cost of the ``stat``). storeroom answers plain paths itself; every answer must equal
obstore's own, field by field (the etag is obstore's scheme: inode, modification time in
microseconds and size), and where storeroom does not answer (a directory, a path through a
file, a name outside the plain set) obstore's error or answer is what the caller gets.
"""

from __future__ import annotations

import os
from pathlib import Path

import obstore
import pytest

from storeroom import ObstoreBackend
from storeroom.backends.base import ObjectInfo
from storeroom.errors import BackendError, ObjectNotFound, UnsafePath


@pytest.fixture
def disk(tmp_path: Path) -> ObstoreBackend:
    return ObstoreBackend("disk", f"file://{tmp_path / 'root'}", mkdir=True)


def _obstores(backend: ObstoreBackend, path: str) -> ObjectInfo:
    meta = obstore.head(backend.store, path)
    return ObjectInfo(meta["path"], meta["size"], meta["e_tag"], meta["last_modified"])


@pytest.mark.parametrize("path", ["a.bin", "empty", "deep/er/still/x.txt", "n-1_2.3"])
async def test_a_local_head_equals_obstores(disk: ObstoreBackend, path: str) -> None:
    disk.put(path, b"" if path == "empty" else b"some bytes")
    # A modification time with nanoseconds, which obstore cuts to microseconds.
    local = os.path.join(str(disk.listing_directory), path)
    os.utime(local, ns=(1_700_000_000_123_456_789, 1_700_000_000_987_654_321))
    expected = _obstores(disk, path)
    assert disk.head(path) == expected
    assert await disk.head_async(path) == expected
    assert disk.exists(path) and await disk.exists_async(path)


async def test_a_missing_file_is_not_found(disk: ObstoreBackend) -> None:
    disk.put("here/a.bin", b"a")
    for path in ("here/b.bin", "nowhere/b.bin"):
        with pytest.raises(ObjectNotFound, match=repr(path)):
            disk.head(path)
        with pytest.raises(ObjectNotFound):
            await disk.head_async(path)
        assert not disk.exists(path) and not await disk.exists_async(path)


async def test_what_storeroom_does_not_answer_obstore_does(disk: ObstoreBackend) -> None:
    disk.put("dir/file.bin", b"x")
    # A directory is no object, as obstore says.
    with pytest.raises(ObjectNotFound):
        disk.head("dir")
    assert not await disk.exists_async("dir")
    # Through a file: obstore's own error, translated as before.
    with pytest.raises(BackendError, match="Not a directory"):
        disk.head("dir/file.bin/more")
    # A name outside the plain set (a space, non-ASCII) goes to obstore, same answer.
    for name in ("with space.txt", "café.txt"):
        disk.put(name, b"y")
        assert disk.head(name) == _obstores(disk, name)


def test_a_link_is_refused_before_any_stat(disk: ObstoreBackend, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    os.symlink(outside, os.path.join(str(disk.listing_directory), "link.bin"))
    with pytest.raises(UnsafePath):
        disk.head("link.bin")
    with pytest.raises(UnsafePath):
        disk.exists("link.bin")


async def test_a_plain_local_head_makes_no_call_to_obstore(
    disk: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk.put("a/b.bin", b"bytes")
    expected = _obstores(disk, "a/b.bin")

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("obstore was asked")

    for name in ("head", "head_async", "get", "get_async"):
        monkeypatch.setattr(obstore, name, refused)
    assert disk.head("a/b.bin") == expected
    assert await disk.head_async("a/b.bin") == expected
    assert not disk.exists("a/missing.bin")


async def test_a_file_modified_before_1970_is_answered_by_obstore(disk: ObstoreBackend) -> None:
    # obstore's etag takes 0 for a time before the epoch; its answer is the one given.
    disk.put("old.bin", b"abc")
    local = os.path.join(str(disk.listing_directory), "old.bin")
    os.utime(local, ns=(-1_500_000_000, -1_500_000_000))
    expected = _obstores(disk, "old.bin")
    assert expected.etag is not None and "-0-" in expected.etag
    assert disk.head("old.bin") == expected
    assert await disk.head_async("old.bin") == expected


async def test_a_read_of_a_directory_is_not_found_as_obstore_says(disk: ObstoreBackend) -> None:
    """The direct reads of local files (whole, ranged, async) leave a directory to obstore:
    no object there. Opening a directory succeeds on Linux; reading it fails (EISDIR), which
    once came out as a BackendError."""
    disk.put("dir/file.bin", b"0123456789")
    with pytest.raises((FileNotFoundError, obstore.exceptions.NotFoundError)):
        obstore.get(disk.store, "dir")
    with pytest.raises(ObjectNotFound):
        disk.get("dir")
    with pytest.raises(ObjectNotFound):
        disk.get("dir", start=0, end=3)
    with pytest.raises(ObjectNotFound):
        await disk.get_async("dir")
    with pytest.raises(ObjectNotFound):
        await disk.get_async("dir", start=1, end=2)
    # Files are still read directly, whole and in part.
    assert disk.get("dir/file.bin") == b"0123456789"
    assert disk.get("dir/file.bin", start=2, end=5) == b"234"
    assert disk.get("dir/file.bin", start=8, end=99) == b"89"
    assert await disk.get_async("dir/file.bin", start=3) == b"3456789"
