"""The demo's committed Uppy bundle is what ``npm run build:demo`` builds from its source."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.servers import require_service

ROOT = Path(__file__).resolve().parents[2]


def test_committed_bundle_is_current(tmp_path: Path) -> None:
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists() or shutil.which("node") is None:
        require_service("esbuild", "node_modules is not installed (npm ci)")
    out = tmp_path / "uploader.js"
    subprocess.run(
        [
            str(esbuild),
            "frontend/demo-uploader.js",
            "--bundle",
            "--minify",
            "--format=iife",
            "--target=es2020",
            "--legal-comments=none",
            f"--outfile={out}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    committed = ROOT / "src" / "storeroom" / "demo" / "static" / "uploader.js"
    assert out.read_bytes() == committed.read_bytes(), "run `npm run build:demo` and commit"
    # Nothing at page load comes from elsewhere: the page loads only its own bundle.
    page = (ROOT / "src" / "storeroom" / "demo" / "page.html").read_text()
    assert "https://" not in page and '<script src="/static/uploader.js">' in page
