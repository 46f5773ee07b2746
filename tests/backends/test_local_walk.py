"""A scan's walk of local disk lists exactly what obstore lists, or leaves the tree to obstore.

:func:`storeroom.backends.local_listing.walk` replaces obstore's listing in a scan's child
process (a stat per file instead of three). Every row it yields must equal obstore's own
(path, size, modification time, etag, in obstore's order), whatever the names; anything it
does not answer for (a link, a name that is not printable text, a prefix that is not a plain
directory, a time before 1970) must raise :class:`Irregular` before a wrong row is
counted, so that obstore lists the tree instead; files and directories that vanish during
the walk are skipped as obstore skips them; and no directory stays open afterwards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from obstore.store import LocalStore

from storeroom.backends.base import ListedRow
from storeroom.backends.local_listing import Irregular, list_batches, walk
from storeroom.backends.local_root import ListingCheck

NAMES = [
    "plain.bin",
    "with space",
    "trailing ",
    "%",
    "%41",
    "a\\b",
    "q?",
    "'\"",
    "*:<>|",
    "[x]{y}",
    "+=&;",
    "~",
    ".hidden",
    "..two",
    "ü",
    "u\u0308",  # the same letter, decomposed: kept as it is, not normalised
    "😀",
    "#",
    "a#",
    "#abc",
    "a#1b",
    "a#1#2",
    "a#\u0661",  # an Arabic-Indic digit: not obstore's staging suffix
    "a#12",  # obstore's staging file of a write in progress: never listed
    "#7",
]


def _obstores(root: Path, prefix: str = "") -> list[ListedRow]:
    return [
        r for rows in list_batches(LocalStore(root), prefix, ListingCheck(str(root))) for r in rows
    ]


def _walked(root: Path, prefix: str = "", chunk: int = 1000) -> list[ListedRow]:
    return [row for rows in walk(str(root), prefix, chunk) for row in rows]


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts open descriptors in /proc (Linux)"
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for folder in ("", "sub#1", "sub#1/.dot", "deep/er/still", "empty/dirs/only"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for folder in ("", "sub#1/.dot", "deep/er/still"):
        for size, name in enumerate(NAMES):
            (root / folder / name).write_bytes(b"x" * size)
    (root / "deep" / "zero").write_bytes(b"")
    # A modification time with nanoseconds, which obstore cuts to microseconds.
    os.utime(root / "plain.bin", ns=(1_700_000_000_123_456_789, 1_700_000_000_987_654_321))
    os.mkfifo(root / "deep" / "a-fifo")  # no regular file: neither lists it
    return root


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
@pytest.mark.parametrize("prefix", ["", "sub#1", "deep/er"])
def test_the_walk_yields_obstores_rows_in_obstores_order(tree: Path, prefix: str) -> None:
    expected = _obstores(tree, prefix)
    per_folder = len(NAMES) - 2  # obstore's staging files are never listed
    assert len(expected) == (3 * per_folder + 1 if not prefix else per_folder)  # + deep/zero
    assert _walked(tree, prefix) == expected
    # Batches of any size make up the same rows.
    assert _walked(tree, prefix, chunk=3) == expected
    assert all(len(rows) <= 3 for rows in walk(str(tree), prefix, 3))
    listed = {row[0].rsplit("/", 1)[-1] for row in expected}
    assert "a#12" not in listed and "#7" not in listed and "a#\u0661" in listed


def _link_to_file(root: Path) -> str:
    (root / "outside.bin").write_bytes(b"elsewhere")
    os.symlink(root / "outside.bin", root / "deep" / "er" / "linked.bin")
    return "symbolic link"


def _link_to_directory(root: Path) -> str:
    os.symlink(root / "deep", root / "sub#1" / "loop")
    return "symbolic link"


def _dangling_link(root: Path) -> str:
    os.symlink(root / "nowhere", root / "gone")
    return "symbolic link"


def _control_character(root: Path) -> str:
    (root / "deep" / "bell\x07").write_bytes(b"x")
    return "the name"


def _undecodable_name(root: Path) -> str:
    with open(os.path.join(os.fsencode(root / "deep"), b"latin-\xe9"), "wb") as handle:
        handle.write(b"x")
    return "the name"


def _before_1970(root: Path) -> str:
    os.utime(root / "plain.bin", ns=(-1_000_000_000, -1_000_000_000))
    return "before 1970"


@pytest.mark.parametrize(
    "plant",
    [
        _link_to_file,
        _link_to_directory,
        _dangling_link,
        _control_character,
        _undecodable_name,
        _before_1970,
    ],
)
def test_what_the_walk_does_not_answer_for_is_left_to_obstore(
    tree: Path, plant: Callable[[Path], str]
) -> None:
    why = plant(tree)
    before = _open_descriptors()
    with pytest.raises(Irregular, match=why):
        _walked(tree, chunk=1)
    assert _open_descriptors() == before


@pytest.mark.parametrize(
    ("prefix", "why"),
    [("nowhere", "No such file"), ("plain.bin", "Not a directory"), ("linked", "through a link")],
)
def test_a_prefix_that_is_no_plain_directory_is_left_to_obstore(
    tree: Path, prefix: str, why: str
) -> None:
    os.symlink(tree / "deep", tree / "linked")
    with pytest.raises(Irregular, match=why):
        _walked(tree, prefix)
    with pytest.raises(Irregular, match=why):
        _walked(tree, prefix + "/er")


def test_files_and_directories_that_vanish_during_the_walk_are_skipped(tree: Path) -> None:
    # The walk has read a directory's entries before it stats or enters each of them:
    # once the first row is out, everything else goes. Nothing more may be listed, and
    # nothing may fail (obstore skips what vanished, and so does the walk).
    before = _open_descriptors()
    rows = walk(str(tree), "", 1)
    first = next(rows)
    assert len(first) == 1
    kept = tree / first[0][0]
    for path in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)):
        if path != kept and path not in kept.parents:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    assert list(rows) == []
    assert _open_descriptors() == before


def test_a_walk_left_half_way_closes_its_directories(tree: Path) -> None:
    before = _open_descriptors()
    rows: Iterator[list[ListedRow]] = walk(str(tree), "", 1)
    next(rows)
    assert _open_descriptors() > before  # the directories on its way down stay open...
    rows.close()  # type: ignore[attr-defined]
    assert _open_descriptors() == before  # ...until it is closed


def test_a_deep_tree_holds_one_directory_per_level(tmp_path: Path) -> None:
    # One open directory per level of the path being walked, not per directory seen.
    root = tmp_path / "wide"
    for i in range(200):
        (root / f"d{i:03d}").mkdir(parents=True)
        (root / f"d{i:03d}" / "f").write_bytes(b"x")
    before = _open_descriptors()
    most = 0
    for _ in walk(str(root), "", 1):
        most = max(most, _open_descriptors() - before)
    assert most <= 4  # the root and one subdirectory, each with the scandir's own copy
    assert sorted(_walked(root)) == sorted(_obstores(root))
