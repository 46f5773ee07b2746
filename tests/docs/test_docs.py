"""Every Python code block in docs/ runs, page by page, in order.

A page's blocks share one namespace and run in a fresh temporary working directory with the
default registry emptied before and after. Markers (HTML comments on their own line):

- ``<!-- skip: reason -->`` just before a block: the block is not run (a reason is required).
- ``<!-- requires: s3 -->`` anywhere in a page: the page runs against the moto S3 server; the
  harness sets AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and
  AWS_ALLOW_HTTP (which obstore and botocore read from the environment), and S3_ENDPOINT
  for code that needs the URL.
- ``<!-- buckets: a, b -->``: buckets created on that server before the page runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storeroom import events, storages
from storeroom.orm import Base

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(
    r"(?P<marker><!--\s*skip:(?P<reason>[^>]*)-->\s*\n)?```python\n(?P<code>.*?)```", re.S
)
REQUIRES = re.compile(r"<!--\s*requires:\s*(?P<what>[^>]*)-->")
BUCKETS = re.compile(r"<!--\s*buckets:\s*(?P<names>[^>]*)-->")


@dataclass
class Page:
    path: Path
    blocks: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    requires: set[str] = field(default_factory=set)
    buckets: list[str] = field(default_factory=list)


def _pages() -> list[Page]:
    pages = []
    for path in [DOCS.parent / "README.md", *sorted(DOCS.glob("**/*.md"))]:
        text = path.read_text()
        page = Page(path)
        for match in BLOCK.finditer(text):
            line = text[: match.start("code")].count("\n") + 1
            if match.group("marker"):
                reason = match.group("reason").strip()
                assert reason, f"{path.name}:{line}: a skipped block needs a reason"
                page.skipped.append(reason)
                continue
            page.blocks.append((line, match.group("code")))
        for match in REQUIRES.finditer(text):
            page.requires.update(w.strip() for w in match.group("what").split(","))
        for match in BUCKETS.finditer(text):
            page.buckets += [b.strip() for b in match.group("names").split(",") if b.strip()]
        if page.blocks:
            pages.append(page)
    return pages


PAGES = _pages()


def _run_block(code: str, namespace: dict[str, object], where: str) -> None:
    source = textwrap.dedent(code)
    # dont_inherit: the page must not inherit this module's `from __future__ import annotations`.
    compiled = compile(source, where, "exec", flags=0x2000, dont_inherit=True)
    if inspect.CO_COROUTINE & compiled.co_flags:
        result = eval(compiled, namespace)
        asyncio.run(result)
    else:
        exec(compiled, namespace)


@pytest.mark.parametrize("page", PAGES, ids=[p.path.name for p in PAGES])
def test_page_examples_run(
    page: Page,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "s3" in page.requires:
        server = request.getfixturevalue("moto_server")
        for name in page.buckets:
            server.create_bucket(name)
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        monkeypatch.setenv("S3_ENDPOINT", server.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        monkeypatch.setenv("AWS_REGION", server.region)
        monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.chdir(tmp_path)
    storages.clear()
    root = logging.getLogger()
    saved_logging = (root.level, list(root.handlers))
    saved_subscribers = events._subscribers
    tables_before = set(Base.metadata.tables)
    # A real module: frameworks look up a handler's module in sys.modules.
    module = types.ModuleType(f"docs_{page.path.stem.replace('-', '_')}")
    sys.modules[module.__name__] = module
    namespace: dict[str, object] = module.__dict__
    try:
        for line, code in page.blocks:
            _run_block(code, namespace, f"{page.path.name}:{line}")
    finally:
        sys.modules.pop(module.__name__, None)
        # Pages define models on storeroom's shared Base: forget their tables afterwards.
        for name in set(Base.metadata.tables) - tables_before:
            Base.metadata.remove(Base.metadata.tables[name])
        storages.clear()
        events._subscribers = saved_subscribers
        root.setLevel(saved_logging[0])
        root.handlers[:] = saved_logging[1]


def test_every_page_has_a_title() -> None:
    for path in [DOCS.parent / "README.md", *DOCS.glob("**/*.md")]:
        assert path.read_text().startswith("# "), f"{path.name} must start with a '# ' title"

