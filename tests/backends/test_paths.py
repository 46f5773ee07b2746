"""Path safety: no name a user supplies reaches outside a backend's root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storeroom import ObstoreBackend, StorageBackend, StoreroomError, UnsafePath, paths
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.paths import MAX_PATH_LENGTH, safe_path

HOSTILE = [
    "",
    "/",
    "/etc/passwd",
    "../x",
    "..",
    ".",
    "a/../../b",
    "a/./b",
    "a//b",
    "a/",
    "\\windows\\system32",
    "..\\..\\x",
    "a\\..\\b",
    "C:\\x",
    "C:/x",
    "c:x",
    "a\x00b",
    "a\nb",
    "a\rb",
    "\x7f",
    " /x",
    "a/ /b",
    "   ",
    "x" * (MAX_PATH_LENGTH + 1),
    "é" * (MAX_PATH_LENGTH // 2 + 1),
    "e\u0301",  # decomposed é: not NFC
    "a/\ud800",
    "//server/share",
    "./a",
    "a/..",
    "../",
]


@pytest.mark.parametrize("name", HOSTILE, ids=[repr(n)[:30] for n in HOSTILE])
def test_hostile_names_are_rejected(name: str) -> None:
    with pytest.raises(UnsafePath) as caught:
        safe_path(name)
    assert "unsafe object path" in str(caught.value) or "must be a str" in str(caught.value)


@pytest.mark.parametrize(
    "name", ["a", "a/b/c.txt", "résumé.pdf", "%2e%2e/x", "a..b", "...", ".hidden", "a b/c d"]
)
def test_ordinary_names_are_accepted(name: str) -> None:
    assert safe_path(name) == name


def _verdict(check: object, name: str) -> str:
    try:
        return f"accepted {check(name)!r}"  # type: ignore[operator]
    except UnsafePath as exc:
        return f"rejected: {exc}"


_piece = st.sampled_from(
    [
        "a",
        "Z9",
        ".",
        "..",
        "/",
        "//",
        " ",
        "\\",
        ":",
        "C:",
        "-",
        "_",
        "~",
        "\x00",
        "\x7f",
        "\t",
        "é",
        "e\u0301",
        "%2e",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(name=st.one_of(st.lists(_piece, max_size=8).map("".join), st.text(max_size=12)))
def test_the_fast_test_for_common_paths_agrees_with_the_full_checks(name: str) -> None:
    # safe_path accepts most paths by string methods alone; whatever it decides must be
    # what the full checks decide, message included.
    assert _verdict(safe_path, name) == _verdict(paths._checked, name)


@pytest.mark.parametrize("length", [MAX_PATH_LENGTH - 1, MAX_PATH_LENGTH, MAX_PATH_LENGTH + 1])
def test_the_fast_test_keeps_the_length_limit(length: int) -> None:
    name = "a/" + "b" * (length - 2)
    assert _verdict(safe_path, name) == _verdict(paths._checked, name)
    assert _verdict(safe_path, name).startswith("accepted") == (length <= MAX_PATH_LENGTH)


def test_non_string_is_rejected() -> None:
    with pytest.raises(UnsafePath, match="str"):
        safe_path(b"x")  # type: ignore[arg-type]


def _backends(tmp: Path) -> list[tuple[StorageBackend, Path]]:
    roots = [tmp / "obstore" / "root", tmp / "fsspec" / "root"]
    for root in roots:
        root.mkdir(parents=True)
    return [
        (ObstoreBackend("obstore-local", f"file://{roots[0]}"), roots[0]),
        (FSSpecBackend("fsspec-local", "file", prefix=str(roots[1])), roots[1]),
    ]


def _files_under(top: Path) -> set[Path]:
    found = set()
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            found.add(Path(dirpath) / name)
    return found


segment = st.sampled_from(["..", ".", "", "a", "b", " ", "\\", "..\\..", "%2e%2e", "\x00", "C:"])
hostile_names = st.one_of(
    st.lists(segment, min_size=1, max_size=6).map("/".join),
    st.lists(segment, min_size=1, max_size=6).map("\\".join),
    st.text(min_size=0, max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(["/", "../", "..\\", "./", "//"]), st.text()),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=hostile_names)
def test_no_byte_lands_outside_the_root(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    tmp = tmp_path_factory.mktemp("escape")
    for backend, root in _backends(tmp):
        try:
            backend.put(name, b"payload")
        except UnsafePath:
            continue
        except (OSError, StoreroomError):
            # The store may refuse a name we let through (a segment too long for the OS, a
            # file where a directory is needed); what matters is where bytes land.
            pass
        for written in _files_under(tmp):
            assert root in written.parents, f"{name!r} escaped to {written}"
        for op in (backend.get, backend.delete, backend.exists):
            try:
                op(name)
            except (OSError, StoreroomError):
                pass


def test_hostile_names_rejected_by_every_operation(local_backend: StorageBackend) -> None:
    for name in HOSTILE:
        calls = [
            (local_backend.put, (name, b"x")),
            (local_backend.get, (name,)),
            (local_backend.head, (name,)),
            (local_backend.delete, (name,)),
            (local_backend.copy, ("ok", name)),
            (local_backend.sign, (name,)),
        ]
        for call, args in calls:
            with pytest.raises(UnsafePath):
                call(*args)  # type: ignore[operator]
