"""Server memory while a 50 MiB file goes up and down through signed URLs.

    python benchmarks/web_memory.py [--mib 50] [--server asgi|wsgi|both]

Starts a server on 127.0.0.1 with storeroom's handler for a local-disk backend with HMAC
signing (ASGI: ``SignedUrlApp`` on uvicorn; WSGI: ``SignedUrlWsgiApp`` on Werkzeug's
threaded server), uploads a file through a signed PUT with a streaming client (chunked, no
Content-Length) and downloads it through a signed GET, comparing checksums. For each step it
reports how far the server's peak resident memory rose above its resident memory just before
that step: the peak mark (VmHWM) is reset through /proc/PID/clear_refs before each step
(Linux; where that is refused the peak since start-up is used, which can only over-report).
Target: growth under 64 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
SECRET = "bench-secret-0123456789abcdef-xyz"
SERVERS = {
    "asgi": [
        "-m",
        "uvicorn",
        "tests.web.e2e_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ],
    "wsgi": [
        "-c",
        "from werkzeug.serving import run_simple; from tests.web.e2e_app import "
        "wsgi_app; run_simple('127.0.0.1', {port}, wsgi_app, threaded=True)",
    ],
}


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(server_kind: str, mib: int) -> list[tuple[str, float, float, float]]:
    """Rows of (step, MiB/s, RSS before in MiB, peak growth in MiB) for one server."""
    import httpx
    from tests.servers import free_port, wait_for_port

    from storeroom import FileObject, StorageRegistry
    from storeroom.config import configure_from_env

    store = tempfile.mkdtemp(prefix="storeroom-web-bench-")
    port = free_port()
    env = {
        "STORAGE__UPLOADS__URL": f"file://{store}",
        "STORAGE__UPLOADS__SIGNING_SECRET": SECRET,
        "STORAGE__UPLOADS__SIGNING_BASE_URL": f"http://127.0.0.1:{port}/files",
    }
    command = [sys.executable, *(a.replace("{port}", str(port)) for a in SERVERS[server_kind])]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": f"{ROOT}/src:{ROOT}"},
        stderr=subprocess.DEVNULL,
    )
    rows: list[tuple[str, float, float, float]] = []
    try:
        if not wait_for_port(port, 30, alive=server):
            raise SystemExit(f"{server_kind} server did not start")
        registry = StorageRegistry()
        configure_from_env(registry, env)
        block = os.urandom(MiB)

        def chunks() -> Iterator[bytes]:
            for _ in range(mib):
                yield block

        target = FileObject(
            backend="uploads",
            filename="big.bin",
            content_type="application/octet-stream",
            registry=registry,
        )
        with httpx.Client(timeout=300) as client:
            # Warm up: one small signed round trip, so imports and buffers are in place.
            warm = FileObject(
                backend="uploads",
                filename="warm.bin",
                content_type="application/octet-stream",
                registry=registry,
            )
            client.put(
                warm.sign(for_upload=True),
                content=b"w" * 1024,
                headers={"Content-Type": "application/octet-stream"},
            )
            client.get(warm.sign())

            def step(name: str, run: object) -> None:
                reset = _reset_peak(server.pid)
                before = _kib(server.pid, "VmRSS")
                start = time.perf_counter()
                run()  # type: ignore[operator]
                seconds = time.perf_counter() - start
                peak = _kib(server.pid, "VmHWM")
                label = name if reset else name + "*"
                rows.append((label, mib / seconds, before / 1024, (peak - before) / 1024))

            def upload() -> None:
                reply = client.put(
                    target.sign(for_upload=True),
                    content=chunks(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert reply.status_code == 200, reply.text

            received = hashlib.sha256()

            def download() -> None:
                with client.stream("GET", target.sign()) as response:
                    assert response.status_code == 200
                    for chunk in response.iter_bytes():
                        received.update(chunk)

            step("upload", upload)
            step("download", download)
        assert received.hexdigest() == hashlib.sha256(block * mib).hexdigest()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--server", choices=["asgi", "wsgi", "both"], default="both")
    args = parser.parse_args()
    kinds = ["asgi", "wsgi"] if args.server == "both" else [args.server]
    print(f"{args.mib} MiB through signed URLs, local-disk backend, server on 127.0.0.1")
    print(f"{'server':<26} {'step':<10} {'MiB/s':>7} {'RSS before':>11} {'peak growth':>12}")
    for kind in kinds:
        name = {"asgi": "SignedUrlApp/uvicorn", "wsgi": "SignedUrlWsgiApp/werkzeug"}[kind]
        for step, rate, before, growth in measure(kind, args.mib):
            print(f"{name:<26} {step:<10} {rate:>7.0f} {before:>7.1f} MiB {growth:>8.1f} MiB")
    print("target: peak growth < 64 MiB per step (* = peak since start-up: reset refused)")


if __name__ == "__main__":
    main()
