"""Throughput, memory and request-count benchmark: storeroom against raw obstore.

    python benchmarks/throughput.py                 # 1 GiB streams, 10,000 small saves
    python benchmarks/throughput.py --size-mib 64 --small 1000   # a quick run

Each case runs in its own subprocess so its peak RSS growth is its own. The S3 cases run
against a moto server started in another subprocess on 127.0.0.1. Prints a table with the
storeroom/raw ratio of each pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
CHUNK = 8 * MiB


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _source_chunks(size: int) -> Any:
    block = os.urandom(MiB)
    sent = 0
    while sent < size:
        piece = block[: min(MiB, size - sent)]
        sent += len(piece)
        yield piece


def _s3_kwargs(endpoint: str) -> dict[str, Any]:
    return dict(
        aws_access_key_id="testing", aws_secret_access_key="testing", aws_endpoint=endpoint,
        aws_region="us-east-1", aws_allow_http=True,
    )


def _raw_store(target: str, endpoint: str | None) -> Any:
    from obstore.store import from_url

    if endpoint:
        return from_url(
            target, access_key_id="testing", secret_access_key="testing", endpoint=endpoint,
            region="us-east-1", client_options={"allow_http": True},
        )
    if target.startswith("file://"):
        return from_url(target, mkdir=True)
    return from_url(target)


def run_case(case: str, target: str, size: int, small: int, endpoint: str | None) -> dict[str, Any]:
    """Run one case in this process; return seconds, bytes and peak RSS growth."""
    import obstore

    from storeroom import FileObject, ObstoreBackend

    before = _rss_mib()
    start = time.perf_counter()
    requests = None
    if case == "stream-save-storeroom":
        backend = ObstoreBackend("b", target, **(_s3_kwargs(endpoint) if endpoint else {}))
        FileObject(backend=backend, filename="big.bin").save(
            _source_chunks(size), chunk_size=CHUNK, max_concurrency=12
        )
    elif case == "stream-save-raw":
        store = _raw_store(target, endpoint)
        obstore.put(store, "big.bin", _source_chunks(size), chunk_size=CHUNK, max_concurrency=12)
    elif case == "stream-read-storeroom":
        backend = ObstoreBackend("b", target, **(_s3_kwargs(endpoint) if endpoint else {}))
        total = sum(len(c) for c in backend.stream("big.bin", chunk_size=CHUNK))
        assert total == size, total
    elif case == "stream-read-raw":
        store = _raw_store(target, endpoint)
        result = obstore.get(store, "big.bin")
        total = sum(len(c) for c in result.stream(min_chunk_size=CHUNK))
        assert total == size, total
    elif case == "small-saves-storeroom":
        backend = ObstoreBackend("b", target, **(_s3_kwargs(endpoint) if endpoint else {}))

        async def go() -> None:
            gate = asyncio.Semaphore(64)

            async def one(i: int) -> None:
                async with gate:
                    await FileObject(backend=backend, filename=f"s/{i}.bin",
                                     content=b"s" * 4096).save_async()

            await asyncio.gather(*(one(i) for i in range(small)))

        asyncio.run(go())
    elif case == "small-saves-raw":
        store = _raw_store(target, endpoint)

        async def go_raw() -> None:
            gate = asyncio.Semaphore(64)

            async def one(i: int) -> None:
                async with gate:
                    await obstore.put_async(store, f"s/{i}.bin", b"s" * 4096)

            await asyncio.gather(*(one(i) for i in range(small)))

        asyncio.run(go_raw())
    elif case == "requests-per-save":
        from tests.servers.proxy import RecordingProxy

        assert endpoint
        proxy = RecordingProxy(endpoint).start()
        backend = ObstoreBackend("b", target, **_s3_kwargs(proxy.endpoint))
        for i in range(50):
            FileObject(backend=backend, filename=f"r/{i}.txt", content=b"r" * 4096).save()
        requests = {"PUT": proxy.count("PUT") / 50, "HEAD": proxy.count("HEAD") / 50,
                    "all": proxy.count() / 50}
        proxy.stop()
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_growth_mib": _rss_mib() - before, "requests": requests}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start within 30 s")


def _create_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
    ).create_bucket(Bucket=name)


def _spawn(case: str, target: str, size: int, small: int, endpoint: str | None) -> dict[str, Any]:
    args = [sys.executable, __file__, "--case", case, "--target", target,
            "--size-mib", str(size // MiB), "--small", str(small)]
    if endpoint:
        args += ["--endpoint", endpoint]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"case {case} on {target} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the best counts")
    parser.add_argument("--case")
    parser.add_argument("--target")
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    size = args.size_mib * MiB
    if args.case:
        print(json.dumps(run_case(args.case, args.target, size, args.small, args.endpoint)))
        return

    rows: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
    workdir = Path(tempfile.mkdtemp(prefix="storeroom-bench-"))
    moto, endpoint = _start_moto()
    try:
        _create_bucket(endpoint, "bench")
        places = [("local disk", f"file://{workdir}/{{who}}", None),
                  ("moto S3", "s3://bench/{who}", endpoint)]
        for place, template, ep in places:
            for op in ("stream-save", "stream-read"):
                runs: dict[str, list[dict[str, Any]]] = {"storeroom": [], "raw": []}
                for attempt in range(args.repeat):
                    order = ("storeroom", "raw") if attempt % 2 == 0 else ("raw", "storeroom")
                    for who in order:
                        target = template.format(who=who)
                        runs[who].append(_spawn(f"{op}-{who}", target, size, args.small, ep))
                results = {who: min(r, key=lambda x: x["seconds"]) for who, r in runs.items()}
                rows.append((place, f"{op} {args.size_mib} MiB", results["storeroom"],
                             results["raw"]))
        for place, target, ep in [("memory", "memory://", None),
                                  ("moto S3", "s3://bench/small-{who}", endpoint)]:
            results = {}
            for who in ("storeroom", "raw"):
                runs = [_spawn(f"small-saves-{who}", target.format(who=who), size, args.small, ep)
                        for _ in range(args.repeat)]
                results[who] = min(runs, key=lambda r: r["seconds"])
            rows.append((place, f"{args.small} x 4 KiB saves", results["storeroom"], results["raw"]))
        counted = _spawn("requests-per-save", "s3://bench/count", size, args.small, endpoint)
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"{'where':<11} {'operation':<26} {'storeroom':>11} {'raw obstore':>12} "
          f"{'ratio':>6} {'RSS+ storeroom':>15} {'RSS+ raw':>9}")
    for place, op, ours, raw in rows:
        assert raw is not None
        if "saves" in op:
            rate_ours = args.small / ours["seconds"]
            rate_raw = args.small / raw["seconds"]
            ours_s, raw_s = f"{rate_ours:,.0f}/s", f"{rate_raw:,.0f}/s"
            ratio = rate_ours / rate_raw
        else:
            rate_ours = size / MiB / ours["seconds"]
            rate_raw = size / MiB / raw["seconds"]
            ours_s, raw_s = f"{rate_ours:,.0f} MiB/s", f"{rate_raw:,.0f} MiB/s"
            ratio = rate_ours / rate_raw
        print(f"{place:<11} {op:<26} {ours_s:>11} {raw_s:>12} {ratio:>5.2f}x "
              f"{ours['rss_growth_mib']:>11.0f} MiB {raw['rss_growth_mib']:>5.0f} MiB")
    req = counted["requests"]
    print(f"\nS3 requests per 4 KiB save (50 saves through a counting proxy): "
          f"PUT {req['PUT']:.2f}, HEAD {req['HEAD']:.2f}, all {req['all']:.2f}")


if __name__ == "__main__":
    main()
