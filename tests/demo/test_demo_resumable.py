"""A 200 MiB upload through the demo in Chromium that survives a dropped connection.

The page uploads with Uppy: tus to local disk, S3 multipart to moto. Playwright aborts one
of the upload's requests mid-way (a PATCH for tus, a part PUT for S3), as a dropped
connection would; Uppy asks the server what it holds (HEAD / ListParts), resumes from there,
and the demo completes the session. A page reloaded mid-upload resumes the same way once the
same file is chosen again. The stored object's SHA-256 must be the file's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.demo.test_demo_e2e import CHROMIUM, CHROMIUM_FLAGS
from tests.servers import free_port, require_service, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SIZE = 200 * 2**20
CHUNK = 16 * 2**20


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "lecture.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(SIZE // 2**20):
            block = os.urandom(2**20)
            digest.update(block)
            out.write(block)
    return path, digest.hexdigest()


def _start_demo(data: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE__", "STORAGE_BACKEND", "DATABASE_URL"))
    }
    env.update(
        DEMO_PORT=str(port),
        DEMO_DATA_DIR=str(data),
        DEMO_MAX_UPLOAD_MB="256",
        PYTHONPATH=f"{ROOT}/src",
        **extra,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "storeroom.demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if not wait_for_port(port, 30, alive=process):
        pytest.fail(f"demo did not start: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return process, f"http://127.0.0.1:{port}"


def _upload_with_a_cut(
    url: str, upload: Path, is_upload_request: Any, extra_flags: list[str]
) -> dict[str, Any]:
    """Upload through the page, aborting the third upload request.

    Returns how many upload requests were made and every request after the cut.
    """
    try:
        from playwright.sync_api import Route, sync_playwright
    except ImportError:
        require_service("Playwright", "the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        require_service("Chromium", "install Debian's chromium package (make venv does)")
    seen: dict[str, Any] = {"requests": 0, "aborted": 0, "after": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS + extra_flags
        )
        page = browser.new_page()

        def cut(route: Route) -> None:
            request = route.request
            if seen["aborted"]:
                seen["after"].append(f"{request.method} {request.url.split('?')[0]}")
            if not is_upload_request(request):
                route.continue_()
                return
            seen["requests"] += 1
            if seen["requests"] == 3 and not seen["aborted"]:
                seen["aborted"] += 1
                route.abort("connectionreset")
                return
            route.continue_()

        page.route("**/*", cut)
        page.goto(url)
        page.wait_for_selector("text=No files yet.")
        page.set_input_files("#file", str(upload))
        page.click("#upload")
        page.wait_for_selector(f"#message.ok >> text={upload.name} uploaded.", timeout=240_000)
        assert "200.0 MiB" in page.locator(f"tr[data-name='{upload.name}']").inner_text()
        browser.close()
    assert seen["aborted"] == 1
    return seen


def test_resumable_upload_to_local_disk(tmp_path: Path, big_file: tuple[Path, str]) -> None:
    upload, digest = big_file
    process, url = _start_demo(tmp_path / "data", {})
    seen: dict[str, Any] = {}
    try:
        seen = _upload_with_a_cut(url, upload, lambda request: request.method == "PATCH", [])
    finally:
        process.terminate()
        process.wait(timeout=10)
    stored = [p for p in (tmp_path / "data" / "uploads" / "team_file").rglob("*") if p.is_file()]
    assert len(stored) == 1
    found = hashlib.sha256()
    with stored[0].open("rb") as handle:
        while block := handle.read(2**20):
            found.update(block)
    assert found.hexdigest() == digest
    leftovers = [p for p in (tmp_path / "data" / "uploads" / "_uploads").rglob("*") if p.is_file()]
    assert leftovers == []  # the tus parts were assembled and removed
    # After the cut the client asked where to resume (HEAD), and no chunk went twice: one
    # PATCH per 16 MiB chunk plus the one cut off.
    assert seen["after"][0].startswith("HEAD ")
    assert seen["requests"] == -(-SIZE // CHUNK) + 1


def _reload_mid_upload(url: str, upload: Path, is_upload_request: Any) -> tuple[int, list[str]]:
    """Reload the page at 40 %, choose the same file again and let it finish.

    Returns how many upload requests the first page sent, and every upload or resume
    request of both pages in order ("PUT", "PATCH", "HEAD", "LIST").
    """
    try:
        from playwright.sync_api import Request, sync_playwright
    except ImportError:
        require_service("Playwright", "the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        require_service("Chromium", "install Debian's chromium package (make venv does)")
    sent: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()

        def record(request: Request) -> None:
            kind = is_upload_request(request)
            if kind:
                sent.append(kind)

        page.on("request", record)
        page.goto(url)
        page.set_input_files("#file", str(upload))
        page.click("#upload")
        page.wait_for_function("document.getElementById('progress').value >= 40", timeout=120_000)
        page.reload()  # the upload in flight is lost with the page
        page.wait_for_selector("text=No files yet.")
        before = len(sent)
        page.set_input_files("#file", str(upload))
        page.click("#upload")
        page.wait_for_selector(f"#message.ok >> text={upload.name} uploaded.", timeout=240_000)
        browser.close()
    return before, sent


def _sha256_of_files(folder: Path) -> list[str]:
    digests = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        found = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(2**20):
                found.update(block)
        digests.append(found.hexdigest())
    return digests


def test_upload_resumes_after_a_page_reload(tmp_path: Path, big_file: tuple[Path, str]) -> None:
    """Reload the page mid-upload, choose the same file again: it carries on (tus)."""
    upload, digest = big_file
    process, url = _start_demo(tmp_path / "data", {})

    def tus_request(request: Any) -> str | None:
        return request.method if request.method in ("PATCH", "HEAD") else None

    try:
        before, sent = _reload_mid_upload(url, upload, tus_request)
    finally:
        process.terminate()
        process.wait(timeout=10)
    chunks = -(-SIZE // CHUNK)
    # The second page asked where to resume and sent only the rest.
    assert "HEAD" in sent[before:]
    assert sent[before:].count("PATCH") < chunks
    assert _sha256_of_files(tmp_path / "data" / "uploads" / "team_file") == [digest]


@pytest.mark.s3
def test_s3_multipart_upload_resumes_after_a_page_reload(
    tmp_path: Path, big_file: tuple[Path, str], moto_server: Any, s3_bucket: str
) -> None:
    """The same on S3: the second page lists the stored parts and sends only the rest."""
    upload, digest = big_file
    client = moto_server.client()
    process, url = _start_demo(tmp_path / "data", _s3_demo_environment(moto_server, s3_bucket))
    endpoint = moto_server.endpoint

    def s3_request(request: Any) -> str | None:
        if request.method == "PUT" and request.url.startswith(endpoint):
            return "PUT"
        if request.method == "GET" and "/s3/multipart/" in request.url and "?" in request.url:
            path = request.url.split("?")[0].rstrip("/")
            return "LIST" if path.split("/s3/multipart/")[1].count("/") == 0 else None
        return None

    try:
        _allow_demo_origin(client, s3_bucket, url)
        before, sent = _reload_mid_upload(url, upload, s3_request)
    finally:
        process.terminate()
        process.wait(timeout=10)
    parts = -(-SIZE // CHUNK)
    assert sent[before] == "LIST"  # the second page asked what the store holds ...
    assert 0 < sent[before:].count("PUT") < parts  # ... and sent only what was missing
    assert sent[:before].count("PUT") + sent[before:].count("PUT") <= parts + 1
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("team_file/file/")
    found = hashlib.sha256()
    for block in client.get_object(Bucket=s3_bucket, Key=keys[0])["Body"].iter_chunks(2**20):
        found.update(block)
    assert found.hexdigest() == digest
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def _s3_demo_environment(moto_server: Any, bucket: str) -> dict[str, str]:
    return {
        "STORAGE__PRIVATE__URL": f"s3://{bucket}",
        "STORAGE__PRIVATE__AWS_ACCESS_KEY_ID": moto_server.access_key,
        "STORAGE__PRIVATE__AWS_SECRET_ACCESS_KEY": moto_server.secret_key,
        "STORAGE__PRIVATE__AWS_ENDPOINT": moto_server.endpoint,
        "STORAGE__PRIVATE__AWS_REGION": moto_server.region,
        "STORAGE__PRIVATE__AWS_ALLOW_HTTP": "true",
    }


def _allow_demo_origin(client: Any, bucket: str, origin: str) -> None:
    """The bucket lives on another origin: the browser needs its CORS rules (ETag exposed
    for the parts), as a real bucket would."""
    client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [origin],
                    "AllowedMethods": ["PUT", "GET"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                }
            ]
        },
    )


@pytest.mark.s3
def test_resumable_upload_to_s3(
    tmp_path: Path, big_file: tuple[Path, str], moto_server: Any, s3_bucket: str
) -> None:
    upload, digest = big_file
    seen: dict[str, Any] = {}
    client = moto_server.client()
    process, url = _start_demo(tmp_path / "data", _s3_demo_environment(moto_server, s3_bucket))
    try:
        _allow_demo_origin(client, s3_bucket, url)
        endpoint = moto_server.endpoint
        seen = _upload_with_a_cut(
            url,
            upload,
            lambda request: request.method == "PUT" and request.url.startswith(endpoint),
            [],
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("team_file/file/")
    found = hashlib.sha256()
    for block in client.get_object(Bucket=s3_bucket, Key=keys[0])["Body"].iter_chunks(2**20):
        found.update(block)
    assert found.hexdigest() == digest
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    # The part cut off was sent again (Uppy's retry), and no other part went twice.
    assert seen["requests"] == -(-SIZE // CHUNK) + 1
