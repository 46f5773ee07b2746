"""A migration between two prefixes of one S3 bucket: streamed, and copied by the store.

    python benchmarks/s3_migrate.py                    # 400 x 1 KiB and 8 x 32 MiB
    python benchmarks/s3_migrate.py --small 1000 --large 4 --large-mib 64

One moto server on 127.0.0.1 (its Python server shares the machine's cores). For each set
of objects, ``copy_objects`` (what ``storeroom migrate`` runs: create-only writes, every copy
read back and hashed against its record, a journal) copies ``old/`` to a fresh prefix twice:

- ``streamed``: the destination cannot copy create-only (no ``aws_copy_if_not_exists``), so
  every object is read from the source and written through a conditional PUT;
- ``server-side``: both backends share the bucket and the destination has
  ``aws_copy_if_not_exists=multipart``, so S3 copies each object itself.

A recording proxy counts the bytes that came back from S3 to this process. Prints objects/s,
MiB/s, the bytes read and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def _backend(endpoint: str, bucket: str, prefix: str, conditional: bool) -> Any:
    from storeroom import ObstoreBackend

    extra = {"aws_copy_if_not_exists": "multipart"} if conditional else {}
    return ObstoreBackend(
        f"bench-{prefix}",
        f"s3://{bucket}/{prefix}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_endpoint=endpoint,
        aws_region="us-east-1",
        aws_allow_http=True,
        **extra,
    )


def _run(source: Any, destination: Any, items: list[Any]) -> tuple[float, Any]:
    from storeroom.orm.migration import MigrationState, copy_objects

    with (
        tempfile.TemporaryDirectory() as tmp,
        MigrationState(Path(tmp) / "journal", source.key, destination.key) as state,
    ):
        start = time.perf_counter()
        report = asyncio.run(copy_objects(source, destination, items, state=state))
        elapsed = time.perf_counter() - start
    if report.failed or report.copied != len(items):
        raise SystemExit(f"migration incomplete: {report}")
    return elapsed, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=400, help="number of 1 KiB objects")
    parser.add_argument("--large", type=int, default=8, help="number of large objects")
    parser.add_argument("--large-mib", type=int, default=32)
    opts = parser.parse_args()

    import os

    import throughput
    from tests.servers.proxy import RecordingProxy

    from storeroom.orm.migration import CopyItem

    moto, endpoint = throughput._start_moto()
    proxy = RecordingProxy(endpoint).start()
    try:
        throughput._create_bucket(endpoint, "migrate")
        sets = [("1 KiB", opts.small, 1024), (f"{opts.large_mib} MiB", opts.large, opts.large_mib)]
        print(
            f"{'objects':<16} {'how':<12} {'time':>8} {'objects/s':>10} {'MiB/s':>8} "
            f"{'read by us':>11} {'ratio':>6}"
        )
        for label, count, size in sets:
            if count <= 0:
                continue
            size_bytes = size if label == "1 KiB" else size * 1024 * 1024
            prefix = "small" if label == "1 KiB" else "large"
            source = _backend(proxy.endpoint, "migrate", f"old-{prefix}", True)
            payload = os.urandom(size_bytes)
            items = []
            for i in range(count):
                saved = source.put(f"f/{i:05d}.bin", payload[:-8] + i.to_bytes(8, "big"))
                items.append(CopyItem(saved.path, saved.path, saved.size, saved.checksum))
            rates = {}
            for how, conditional in (("streamed", False), ("server-side", True)):
                destination = _backend(proxy.endpoint, "migrate", f"{how}-{prefix}", conditional)
                proxy.clear()
                elapsed, _report = _run(source, destination, items)
                read = sum(
                    r.response_bytes
                    for r in proxy.requests
                    if r.method == "GET" and f"/old-{prefix}/" in r.path
                )
                rates[how] = count / elapsed
                ratio = f"{rates[how] / rates['streamed']:.2f}x"
                print(
                    f"{label + ' x ' + str(count):<16} {how:<12} {elapsed:>7.2f}s "
                    f"{count / elapsed:>10,.0f} {count * size_bytes / elapsed / 2**20:>8,.1f} "
                    f"{read / 2**20:>9.1f} M {ratio:>6}"
                )
    finally:
        proxy.stop()
        moto.kill()


if __name__ == "__main__":
    main()
