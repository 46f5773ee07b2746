"""The default layout: unique destination paths with a readable, safe filename."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storeroom import FileObject
from storeroom.orm import layout
from storeroom.orm.layout import default_path, safe_filename
from storeroom.paths import safe_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("résumé.pdf", "resume.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo 1.JPG", "photo_1.JPG"),
        ("..hidden", "hidden"),
        ("-x-", "-x-"),
        ("a_", "a"),
        ("name.", "name"),
        ("日本語", "file"),
        ("", "file"),
        ("x" * 200 + ".tar", "x" * 116 + ".tar"),
    ],
)
def test_filenames_are_reduced_to_safe_characters(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@settings(max_examples=2000, deadline=None)
@given(
    name=st.one_of(st.text(alphabet="aZ09._- /\\é", max_size=10), st.text(max_size=10)),
    max_length=st.integers(min_value=1, max_value=12),
)
def test_names_returned_unchanged_are_exactly_those_the_full_reduction_keeps(
    name: str, max_length: int
) -> None:
    # safe_filename returns an already-safe name as it is without reducing it; the
    # result must be what the full reduction gives.
    assert safe_filename(name, max_length=max_length) == layout._reduced(name, max_length)


def test_the_default_path_is_table_column_uuid4_and_the_safe_filename() -> None:
    class Row:
        __tablename__ = "documents"

    paths = set()
    for _ in range(500):
        path = default_path(Row(), "scan", FileObject(filename="Scan 1.pdf"))
        assert safe_path(path) == path
        table, column, unique, name = path.split("/")
        assert (table, column, name) == ("Row", "scan", "Scan_1.pdf")
        assert re.fullmatch(r"[0-9a-f]{32}", unique)
        parsed = uuid.UUID(hex=unique)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        paths.add(path)
    assert len(paths) == 500
