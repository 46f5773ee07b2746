"""Where the time of a whole read from moto S3 goes: obstore's buffer, Python ``bytes``, checks.

    python benchmarks/s3_get_content.py              # 256 MiB, best of 3 rounds
    python benchmarks/s3_get_content.py --mib 64

One process, one moto server on 127.0.0.1, one object; each round reads it in turn: raw
obstore returning its own buffer, raw obstore copied into ``bytes`` (what any API that
returns ``bytes`` must do), storeroom's ``backend.get`` (no check), ``get_content()``
verified against the recorded BLAKE3 digest, ``get_content()`` of a file with no checksum
recorded, and the async forms of the raw read and of ``get_content()``. Prints MiB/s per
way (best round), and the CPU seconds the reading process and moto's server each used in
that round: moto's server is a Python process on the same machine, so CPU the reader spends
(on the digest, say) is CPU the server cannot have.
"""

from __future__ import annotations

import argparse
import asyncio
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
        loop = asyncio.new_event_loop()

        async def raw_async() -> Any:
            return await (await obstore.get_async(store, saved.path)).bytes_async()

        ways: dict[str, Callable[[], Any]] = {
            "raw obstore, its own buffer": lambda: obstore.get(store, saved.path).bytes(),
            "raw obstore, copied to bytes": lambda: (
                obstore.get(store, saved.path).bytes().to_bytes()
            ),
            "storeroom backend.get (no check)": lambda: backend.get(saved.path),
            "storeroom get_content() verified": saved.get_content,
            "storeroom get_content(), no checksum": unrecorded.get_content,
            "raw obstore async, its own buffer": lambda: loop.run_until_complete(raw_async()),
            "storeroom get_content_async() verified": lambda: loop.run_until_complete(
                saved.get_content_async()
            ),
            "storeroom get_content_async(), no checksum": lambda: loop.run_until_complete(
                unrecorded.get_content_async()
            ),
        }
        best = dict.fromkeys(ways, (float("inf"), 0.0, 0.0))
        for _ in range(opts.rounds):
            for name, read in ways.items():
                start, cpu, server = time.perf_counter(), time.process_time(), _cpu(moto.pid)
                read()
                took = time.perf_counter() - start
                if took < best[name][0]:
                    best[name] = (took, time.process_time() - cpu, _cpu(moto.pid) - server)
        loop.close()
        print(
            f"{'way':44} MiB/s  CPU s: reader  moto"
            f"   ({opts.mib} MiB from moto S3, best of {opts.rounds})"
        )
        for name, (seconds, reader, server) in best.items():
            print(f"{name:44} {opts.mib / seconds:5.0f}  {reader:13.2f} {server:5.2f}")
    finally:
        moto.terminate()
        moto.wait(timeout=30)


def _cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
