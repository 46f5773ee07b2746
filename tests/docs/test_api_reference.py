"""Every public name has a docstring, and docs/api.md is generated from the current ones."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
sys.path.insert(0, str(DOCS))

import gen_api  # noqa: E402


def test_every_public_name_has_a_docstring() -> None:
    assert gen_api.missing_docstrings() == []


def test_api_reference_is_up_to_date() -> None:
    assert gen_api.render() == (DOCS / "api.md").read_text(), (
        "docs/api.md is out of date: run `python docs/gen_api.py`"
    )
