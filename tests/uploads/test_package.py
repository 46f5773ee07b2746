"""``storeroom.uploads`` loads its names on first use: each must come from its module."""

from __future__ import annotations

import subprocess
import sys

import storeroom.uploads as uploads
from storeroom.uploads import resumable, sessions, targets


def test_the_resumable_names_are_those_the_module_exports() -> None:
    assert sorted(uploads._RESUMABLE) == sorted(resumable.__all__)


def test_every_exported_name_is_the_object_of_its_module() -> None:
    modules = (resumable, sessions, targets, uploads.layout)
    for name in uploads.__all__:
        value = getattr(uploads, name)
        homes = [m for m in modules if name in vars(m)]
        assert homes, f"{name} is defined in none of the upload modules"
        assert all(vars(m)[name] is value for m in homes), name


def test_importing_the_layout_loads_no_session_code() -> None:
    code = (
        "import sys, storeroom.uploads.layout; "
        "print(sorted(m for m in sys.modules if m.startswith('storeroom.uploads.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['storeroom.uploads.layout']"
