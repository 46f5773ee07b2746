"""Server memory while a 50 MiB file goes up and down through signed URLs.

    python benchmarks/web_memory.py [--mib 50]

Starts uvicorn on 127.0.0.1 with storeroom's ASGI handler (local-disk backend, HMAC signing),
uploads a file through a signed PUT and downloads it through a signed GET with a streaming
client, and reads the server's peak resident memory (VmHWM) from /proc before and after.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
SECRET = "bench-secret-0123456789abcdef-xyz"


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=50)
    args = parser.parse_args()
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
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.web.e2e_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": f"{ROOT}/src:{ROOT}"},
    )
    try:
        if not wait_for_port(port, 30, alive=server):
            raise SystemExit("uvicorn did not start")
        registry = StorageRegistry()
        configure_from_env(registry, env)
        size = args.mib * MiB
        block = os.urandom(MiB)

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(args.mib):
                yield block

        target = FileObject(backend="uploads", filename="big.bin",
                            content_type="application/octet-stream", registry=registry)
        with httpx.Client(timeout=300) as client:
            client.get(f"http://127.0.0.1:{port}/files/")  # warm up the server
            baseline = _kib(server.pid, "VmRSS")
            start = time.perf_counter()
            reply = client.put(target.sign(for_upload=True), content=chunks(),
                               headers={"Content-Type": "application/octet-stream"})
            assert reply.status_code == 200, reply.text
            upload_s = time.perf_counter() - start
            after_upload = _kib(server.pid, "VmHWM")
            start = time.perf_counter()
            digest, received = hashlib.sha256(), 0
            with client.stream("GET", target.sign()) as response:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    received += len(chunk)
            download_s = time.perf_counter() - start
            after_download = _kib(server.pid, "VmHWM")
        assert received == size
        expected = hashlib.sha256(block * args.mib).hexdigest()
        assert digest.hexdigest() == expected
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{'step':<10} {'MiB/s':>8} {'server peak RSS growth':>24}")
    print(f"{'upload':<10} {args.mib / upload_s:>8.0f} {(after_upload - baseline) / 1024:>20.1f} MiB")
    print(f"{'download':<10} {args.mib / download_s:>8.0f} "
          f"{(after_download - baseline) / 1024:>20.1f} MiB")
    print(f"(baseline RSS {baseline / 1024:.1f} MiB; target: growth < 64 MiB)")


if __name__ == "__main__":
    main()
