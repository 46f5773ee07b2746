"""The Python examples of docs/configuration.md run, in order, against the moto S3 server."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from storeroom import storages

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BLOCK = re.compile(r"(?P<skip><!--\s*skip:[^>]*-->\s*\n)?```python\n(?P<code>.*?)```", re.DOTALL)
BUCKETS = re.compile(r"<!--\s*buckets:\s*(?P<names>[^>]*)-->")


def test_configuration_page_examples_run(
    s3_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = PAGE.read_text()
    for match in BUCKETS.finditer(text):
        for name in match.group("names").split(","):
            s3_env.create_bucket(name.strip())
    monkeypatch.setenv("S3_ENDPOINT", s3_env.endpoint)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_configuration"}
    blocks = [m for m in BLOCK.finditer(text) if not m.group("skip")]
    assert len(blocks) >= 10
    for match in blocks:
        line = text[: match.start("code")].count("\n") + 1
        code = compile(textwrap.dedent(match.group("code")), f"configuration.md:{line}", "exec")
        exec(code, namespace)
    assert "default" in storages
