"""The demo in a real browser: headless Debian Chromium driven by Playwright.

Open the page, refuse an empty file, upload a file straight to storage through a signed
PUT (with the progress bar), see it listed, download it through its signed GET and compare
the bytes, delete it, and save a screenshot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, require_service, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    data = tmp_path / "data"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE__", "STORAGE_BACKEND", "DATABASE_URL"))
    }
    env.update(
        DEMO_PORT=str(port),
        DEMO_DATA_DIR=str(data),
        DEMO_MAX_UPLOAD_MB="8",
        PYTHONPATH=f"{ROOT}/src",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "storeroom.demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if not wait_for_port(port, 30, alive=process):
            pytest.fail(f"demo did not start: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}", data
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_upload_list_download_delete_in_chromium(demo: tuple[str, Path], tmp_path: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("Playwright", "the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        require_service("Chromium", "install Debian's chromium package (make venv does)")
    url, data = demo
    payload = os.urandom(3 * 1024 * 1024)
    upload = tmp_path / "quarterly report.bin"
    upload.write_bytes(payload)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(url)
        page.wait_for_selector("text=No files yet.")

        page.set_input_files("#file", str(empty))
        page.click("#upload")
        page.wait_for_selector("#message.error >> text=is empty")

        page.set_input_files("#file", str(upload))
        page.click("#upload")
        page.wait_for_selector("#message.ok >> text=quarterly report.bin uploaded.")
        row = page.locator("tr[data-name='quarterly report.bin']")
        assert "3.0 MiB" in row.inner_text()
        stored = list((data / "uploads").rglob("*.bin"))
        assert len(stored) == 1 and stored[0].read_bytes() == payload

        with page.expect_download() as download:
            row.locator("a.download").click()
        assert Path(download.value.path()).read_bytes() == payload

        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        if os.environ.get("STOREROOM_UPDATE_SCREENSHOT"):
            page.screenshot(path=str(ROOT / "docs" / "demo.png"), full_page=True)

        row.locator("button.delete").click()
        page.wait_for_selector("text=No files yet.")
        assert not list((data / "uploads").rglob("*.bin"))
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def _natural_size(page: Any, row: Any) -> tuple[int, int]:
    """The preview <img>'s natural size once the browser has loaded it (fails if it broke)."""
    image = row.locator("img.preview")
    image.wait_for(state="attached")
    handle = image.element_handle()
    page.wait_for_function("img => img.complete", arg=handle, timeout=60_000)
    width, height = handle.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    return int(width), int(height)


def test_previews_of_an_image_and_a_pdf_in_chromium(demo: tuple[str, Path], tmp_path: Path) -> None:
    """A thumbnail for an image, the first page for a PDF: loaded by the browser through
    their signed URLs (made by the job after the upload, or on that request), fitted to
    160 pixels wide with the aspect kept; a file of another type shows no preview. The
    image-only team photo refuses text named .png, saying what it is."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("Playwright", "the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        require_service("Chromium", "install Debian's chromium package (make venv does)")
    from tests.media.files import image_bytes, pdf_bytes

    url, data = demo
    photo = tmp_path / "harbour.png"
    photo.write_bytes(image_bytes("PNG", (1200, 800)))
    report = tmp_path / "report.pdf"
    report.write_bytes(pdf_bytes(2, size=(612, 792)))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"plain text has no preview\n")
    disguised = tmp_path / "selfie.png"
    disguised.write_bytes(b"not a picture at all, only text\n" * 4)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(url)
        page.wait_for_selector("text=No files yet.")
        for upload in (photo, report, notes):
            page.set_input_files("#file", str(upload))
            page.click("#upload")
            page.wait_for_selector(f"#message.ok >> text={upload.name} uploaded.")

        width, height = _natural_size(page, page.locator("tr[data-name='harbour.png']"))
        assert width == 160 and abs(height - 800 * 160 / 1200) <= 1
        width, height = _natural_size(page, page.locator("tr[data-name='report.pdf']"))
        assert width == 160 and abs(height - 792 * 160 / 612) <= 1
        text_row = page.locator("tr[data-name='notes.txt']")
        assert text_row.locator("img").count() == 0 and "no preview" in text_row.inner_text()

        # The team photo's column takes images only, judged by the bytes: text named .png
        # is refused with a message saying what it is; an image becomes the photo.
        page.set_input_files("#photo", str(disguised))
        page.click("#upload-photo")
        page.wait_for_selector("#photo-message.error >> text=its contents are text/plain")
        assert "must be a PNG, JPEG, GIF or WebP image" in page.inner_text("#photo-message")
        page.set_input_files("#photo", str(photo))
        page.click("#upload-photo")
        page.wait_for_selector("#photo-message.ok >> text=harbour.png is the team photo.")
        page.wait_for_function(
            "() => { const i = document.getElementById('team-photo');"
            " return !i.hidden && i.complete && i.naturalWidth > 0; }",
            timeout=60_000,
        )
        width = page.evaluate("document.getElementById('team-photo').naturalWidth")
        assert width == 160
        browser.close()

    made = sorted(p.name for p in (data / "uploads").rglob("*.variants/*"))
    assert made == ["page1.webp", "thumb.webp", "thumb.webp"]  # two images, one PDF
    assert not list((data / "uploads").rglob("selfie.png"))  # the refused file was not kept
