"""Where the time of a whole read from moto S3 goes: obstore's buffer, Python ``bytes``, checks.

    python benchmarks/s3_get_content.py              # 256 MiB, best of 3 rounds
    python benchmarks/s3_get_content.py --mib 64

One process, one moto server on 127.0.0.1, one object; each round reads it five ways:
raw obstore returning its own buffer, raw obstore copied into ``bytes`` (what any API that
returns ``bytes`` must do), storeroom's ``backend.get`` (no check), ``get_content()``
verified against the recorded BLAKE3 digest, and ``get_content()`` of a file with no
checksum recorded. Prints MiB/s per way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()

    import obstore
    import throughput

    from storeroom import FileObject, ObstoreBackend

    moto, endpoint = throughput._start_moto()
    try:
        throughput._create_bucket(endpoint, "bench")
        backend = ObstoreBackend("b", "s3://bench/read", **throughput._s3_kwargs(endpoint))
        store = throughput._raw_store("s3://bench/read", endpoint)
        saved = FileObject(
            backend=backend, filename="big.bin", content=os.urandom(opts.mib << 20)
        ).save()
        unrecorded = FileObject(
            backend=backend, path=saved.path, filename="big.bin", size=saved.size
        )
        ways: dict[str, Callable[[], Any]] = {
            "raw obstore, its own buffer": lambda: obstore.get(store, saved.path).bytes(),
            "raw obstore, copied to bytes": lambda: (
                obstore.get(store, saved.path).bytes().to_bytes()
            ),
            "storeroom backend.get (no check)": lambda: backend.get(saved.path),
            "storeroom get_content() verified": saved.get_content,
            "storeroom get_content(), no checksum": unrecorded.get_content,
        }
        best = dict.fromkeys(ways, float("inf"))
        for _ in range(opts.rounds):
            for name, read in ways.items():
                start = time.perf_counter()
                read()
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"{'way':40} MiB/s   ({opts.mib} MiB from moto S3, best of {opts.rounds})")
        for name, seconds in best.items():
            print(f"{name:40} {opts.mib / seconds:6.0f}")
    finally:
        moto.terminate()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()
