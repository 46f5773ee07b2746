"""Every storeroom import shown in the docs works and uses the canonical path.

Earlier paths (``storeroom.migrate``, ``storeroom.credentials``...) still import, for code
written against them; the docs show only where things live now.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [
    page for page in (ROOT / "README.md", ROOT / "CONTRIBUTING.md") if page.exists()
]

#: Earlier import path -> the canonical one.
MOVED = {
    "storeroom.migrate": "storeroom.orm.migration",
    "storeroom.credentials": "storeroom.backends.obstore.credentials",
    "storeroom.otel": "storeroom.contrib.otel",
    "storeroom.cors_cli": "storeroom.cli.cors",
    "storeroom.backends.obstore_options": "storeroom.backends.obstore.options",
}
#: Names that moved out of a module that still exists (no re-export: it made an import loop).
MOVED_NAMES = {
    ("storeroom.cors", "apply_bucket_cors"): "storeroom.backends.obstore.bucket_cors",
    ("storeroom.cors", "get_bucket_cors"): "storeroom.backends.obstore.bucket_cors",
}

_IMPORT = re.compile(r"from (storeroom[\w.]*) import (\([^)]*\)|[^\n#`|]+)")


def _imports(text: str) -> list[tuple[str, str]]:
    found = []
    for match in _IMPORT.finditer(text):
        names = match.group(2).strip().strip("()").replace("\n", " ")
        for name in names.split(","):
            name = re.match(r"\s*(\w*)", name.split(" as ")[0]).group(1)
            if name:
                found.append((match.group(1), name))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_imports_shown_in_the_docs_work_and_are_canonical(page: Path) -> None:
    problems = []
    text = page.read_text(encoding="utf-8")
    for module_name, name in _imports(text):
        if module_name in MOVED:
            problems.append(f"{module_name}: use {MOVED[module_name]}")
            continue
        if (module_name, name) in MOVED_NAMES:
            problems.append(f"{module_name}.{name}: use {MOVED_NAMES[module_name, name]}")
            continue
        module = importlib.import_module(module_name)
        if not hasattr(module, name) and importlib.util.find_spec(f"{module_name}.{name}") is None:
            problems.append(f"{module_name}.{name} does not exist")
    for old, new in MOVED.items():
        if re.search(rf"\b{re.escape(old)}\b(?!\.)", text) or f"`{old}." in text:
            problems.append(f"mentions {old}: use {new}")
    assert not problems, f"{page.name}: " + "; ".join(problems)


def test_the_earlier_paths_still_import() -> None:
    for old, new in MOVED.items():
        if old in ("storeroom.cors_cli", "storeroom.backends.obstore_options"):
            continue  # moved without a re-export (see CHANGELOG.md, Unreleased)
        old_module = importlib.import_module(old)
        new_module = importlib.import_module(new)
        for name in getattr(old_module, "__all__", []):
            assert getattr(old_module, name) is getattr(new_module, name), f"{old}.{name}"
