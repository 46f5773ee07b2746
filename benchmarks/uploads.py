"""A 1 GiB resumable upload through each path on loopback: throughput and server memory.

    python benchmarks/uploads.py [--mib 1024] [--path tus|s3|both]

Runs the demo app (Litestar on uvicorn: the resumable-upload endpoints, the tus handler
and the session's completion) as its own process and uploads one file of random bytes the
way Uppy does, with httpx:

- ``tus``: local disk through storeroom's tus handler: begin, create, 16 MiB PATCHes (each
  streamed to its own part object, assembled at the last byte), then the session's
  completion (size, sniffed type, SHA-256 read back from the store);
- ``s3``: S3 multipart to moto (in a process of its own): begin, sign each 16 MiB part,
  PUT it straight to moto, complete the multipart upload, then the session's completion.

It reports the upload's and the completion's throughput, and how far the app server's peak
resident memory (VmHWM, reset through /proc/PID/clear_refs) rose above its resident memory
before the upload. Flat memory: the growth stays far below the file's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
CHUNK = 16 * MiB
TUS = {"Tus-Resumable": "1.0.0"}


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


class _Sampler:
    """Polls the server's anonymous resident memory (RssAnon) while the upload runs.

    VmHWM counts file pages mapped in too (obstore reads local files through mappings,
    which the kernel reclaims at will); RssAnon is the memory the process itself holds.
    """

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, _kib(self.pid, "RssAnon"))
            except (OSError, SystemExit):
                return
            self._stop.wait(0.02)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # the peak since start-up is used: it can only over-report


def _pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            yield block


def _make_file(mib: int) -> Path:
    path = Path(tempfile.mkdtemp(prefix="storeroom-upload-bench-")) / "big.bin"
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MiB))
    return path


def _start(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    from tests.servers import wait_for_port

    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for_port(port, 60, alive=process):
        raise SystemExit(f"{command[:3]} did not start")
    return process


def _demo(env: dict[str, str], mib: int) -> tuple[subprocess.Popen[bytes], str]:
    from tests.servers import free_port

    port = free_port()
    data = tempfile.mkdtemp(prefix="storeroom-upload-bench-data-")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STORAGE__")}
    os.environ.clear()
    os.environ.update(clean)
    process = _start(
        [sys.executable, "-m", "storeroom.demo"],
        port,
        {
            "DEMO_PORT": str(port),
            "DEMO_DATA_DIR": data,
            "DEMO_MAX_UPLOAD_MB": str(mib + 1),
            "PYTHONPATH": f"{ROOT}/src",
            **env,
        },
    )
    return process, f"http://127.0.0.1:{port}"


def _tus(client: Any, url: str, path: Path) -> str:
    size = path.stat().st_size
    begun = client.post(
        f"{url}/uploads/resumable",
        json={"filename": path.name, "type": "application/octet-stream", "size": size},
    ).json()
    created = client.post(begun["endpoint"], headers={**TUS, "Upload-Length": str(size)})
    location = url + created.headers["location"]
    offset = 0
    for piece in _pieces(path):
        answer = client.patch(
            location,
            content=piece,
            headers={
                **TUS,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
            },
        )
        answer.raise_for_status()
        offset = int(answer.headers["upload-offset"])
    return str(begun["id"])


def _s3(client: Any, url: str, path: Path) -> str:
    size = path.stat().st_size
    begun = client.post(
        f"{url}/uploads/s3/multipart",
        json={
            "filename": path.name,
            "type": "application/octet-stream",
            "metadata": {"size": size},
        },
    ).json()
    session_id = begun["uploadId"]
    for number, piece in enumerate(_pieces(path), start=1):
        signed = client.get(f"{url}/uploads/s3/multipart/{session_id}/{number}").json()
        client.put(signed["url"], content=piece).raise_for_status()
    client.post(f"{url}/uploads/s3/multipart/{session_id}/complete", json={}).raise_for_status()
    return str(session_id)


def measure(kind: str, path: Path, mib: int) -> tuple[float, float, float, float, float]:
    """(upload MiB/s, completion MiB/s, server RSS before, VmHWM growth, RssAnon growth)."""
    import httpx
    from tests.servers import free_port

    moto: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = {}
    if kind == "s3":
        import boto3

        moto_port = free_port()
        moto = _start(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            moto_port,
            {},
        )
        endpoint = f"http://127.0.0.1:{moto_port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        ).create_bucket(Bucket="bench")
        env = {
            "STORAGE__PRIVATE__URL": "s3://bench",
            "STORAGE__PRIVATE__AWS_ACCESS_KEY_ID": "bench",
            "STORAGE__PRIVATE__AWS_SECRET_ACCESS_KEY": "bench",
            "STORAGE__PRIVATE__AWS_ENDPOINT": endpoint,
            "STORAGE__PRIVATE__AWS_REGION": "us-east-1",
            "STORAGE__PRIVATE__AWS_ALLOW_HTTP": "true",
        }
    server, url = _demo(env, mib)
    try:
        with httpx.Client(timeout=600) as client:
            client.get(url + "/api/files").raise_for_status()  # warm up
            before = _kib(server.pid, "VmRSS") / 1024
            anon = _kib(server.pid, "RssAnon") / 1024
            _reset_peak(server.pid)
            with _Sampler(server.pid) as sampler:
                started = time.perf_counter()
                session_id = (_tus if kind == "tus" else _s3)(client, url, path)
                uploaded = time.perf_counter()
                done = client.post(f"{url}/api/uploads/{session_id}/complete")
                finished = time.perf_counter()
            if done.status_code != 201 or done.json()["size"] != path.stat().st_size:
                raise SystemExit(f"completion failed: {done.status_code} {done.text[:300]}")
            peak = _kib(server.pid, "VmHWM") / 1024
    finally:
        server.terminate()
        server.wait(timeout=30)
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=30)
    return (
        mib / (uploaded - started),
        mib / (finished - uploaded),
        before,
        peak - before,
        sampler.peak / 1024 - anon,
    )


def main() -> None:
    """Parse arguments, run, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--path", choices=["tus", "s3", "both"], default="both")
    args = parser.parse_args()
    path = _make_file(args.mib)
    kinds = ["tus", "s3"] if args.path == "both" else [args.path]
    print(f"{args.mib} MiB, 16 MiB parts, loopback")
    print(
        f"{'path':<24} {'upload MiB/s':>12} {'complete MiB/s':>15} {'RSS MiB':>8} "
        f"{'VmHWM +MiB':>11} {'RssAnon +MiB':>13}"
    )
    try:
        for kind in kinds:
            label = {"tus": "tus -> local disk", "s3": "S3 multipart -> moto"}[kind]
            up, check, before, growth, anon = measure(kind, path, args.mib)
            print(
                f"{label:<24} {up:>12.0f} {check:>15.0f} {before:>8.0f} {growth:>11.0f} "
                f"{anon:>13.0f}",
                flush=True,
            )
    finally:
        path.unlink()
        path.parent.rmdir()


if __name__ == "__main__":
    main()
