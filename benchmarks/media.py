"""Thumbnails of a 24-megapixel JPEG (pyvips against Pillow) and variant-style jobs on SAQ.

    python benchmarks/media.py [--runs 3] [--jobs 1000] [--redis redis://127.0.0.1:6379/7]
                               [--skip-jobs] [--skip-thumbnails]

Thumbnails: a 6000 x 4000 JPEG (made once, with noise so it compresses like a photo) is
turned into a 256 x 256 WebP by ``storeroom.media.variants.Thumbnail`` with each engine, each
run in a fresh subprocess; the table gives the median wall time of the ``make`` call and the
subprocess's peak resident memory (ru_maxrss from wait4), with the same process's peak after
imports alone beside it.

Jobs: ``--jobs`` jobs go through :class:`storeroom.jobs.saq.SaqQueue` on Redis to two worker
subprocesses; each job records its number in a Redis set (its idempotent effect) and counts
its runs. One worker is SIGKILLed when a third of the jobs are done; the run ends when every
job number is in the set. Reported: throughput, jobs lost (numbers missing from the set:
must be 0) and jobs run more than once (the killed worker's, re-run after its heartbeat
lapsed).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024

THUMBNAIL = """
import sys, time
from pathlib import Path
from storeroom.media.variants import Thumbnail, image_engine
maker = Thumbnail(256, 256, format="webp", engine=sys.argv[2])
if sys.argv[2] == "pyvips":
    import pyvips
    pyvips.cache_set_max(0)
else:
    import PIL.Image, PIL.WebPImagePlugin, PIL.JpegImagePlugin, PIL.PngImagePlugin

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    return 0

try:  # reset the peak mark: what follows is the thumbnail's own peak
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before = hwm()
started = time.perf_counter()
data = maker.make(Path(sys.argv[1])) if sys.argv[3] == "run" else b""
print(time.perf_counter() - started, len(data), hwm())
"""


def make_image(path: Path, fmt: str) -> None:
    from PIL import Image

    noise = Image.effect_noise((6000, 4000), 40)
    gradient = Image.linear_gradient("L").resize((6000, 4000))
    image = Image.merge("RGB", (noise, gradient, Image.blend(noise, gradient, 0.5)))
    image.save(path, fmt, **({"quality": 88} if fmt == "JPEG" else {"compress_level": 1}))


def run_child(args: list[str]) -> tuple[str, int]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    process = subprocess.Popen(
        [sys.executable, "-c", THUMBNAIL, *args], stdout=subprocess.PIPE, env=env
    )
    assert process.stdout is not None
    out = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"thumbnail child failed ({process.returncode}): {args}")
    return out, usage.ru_maxrss * 1024


def thumbnails(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"6000 x 4000 (24 megapixels) -> 256 x 256 WebP, each run in a new process; "
            f"median of {runs} runs. Peak = the process's peak RSS while making the "
            "thumbnail (VmHWM reset just before); base = its RSS after imports.\n"
        )
        print("| source | engine | time (s) | peak RSS (MiB) | base RSS (MiB) | growth (MiB) |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for fmt in ("JPEG", "PNG"):
            source = Path(tmp) / f"24mp.{fmt.lower()}"
            make_image(source, fmt)
            label = f"{fmt} {source.stat().st_size / MiB:.1f} MiB"
            for engine in ("pyvips", "pillow"):
                times, peaks = [], []
                for _ in range(runs):
                    out, _ = run_child([str(source), engine, "run"])
                    seconds, _size, peak = out.split()
                    times.append(float(seconds))
                    peaks.append(int(peak))
                out, _ = run_child([str(source), engine, "idle"])
                base = int(out.split()[2])
                peak = statistics.median(peaks)
                print(
                    f"| {label} | {engine} | {statistics.median(times):.3f} | "
                    f"{peak / MiB:.0f} | {base / MiB:.0f} | {(peak - base) / MiB:.0f} |"
                )
        print()


def jobs(count: int, redis_url: str) -> None:
    import redis

    from storeroom.jobs.saq import SaqQueue

    name = f"bench-{uuid.uuid4().hex[:8]}"
    prefix = f"storeroom-bench:{name}"
    client = redis.Redis.from_url(redis_url)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "STOREROOM_JOBS_TEST_REDIS": redis_url,
        "STOREROOM_JOBS_TEST_PREFIX": prefix,
        "STOREROOM_JOBS_TEST_SLEEP": "0.002",
    }
    command = [
        sys.executable,
        "-m",
        "storeroom.jobs.saq",
        "--url",
        redis_url,
        "--name",
        name,
        "--import",
        "tests.jobs.saq_handlers",
        "--concurrency",
        "8",
        "--sweep",
        "1",
    ]
    queue = SaqQueue(redis_url, name=name, heartbeat=2)
    workers = [subprocess.Popen(command, env=env) for _ in range(2)]
    killed = False
    try:
        started = time.perf_counter()
        for number in range(count):
            queue.enqueue("test.record", {"n": number, "prefix": prefix, "sleep": 0.002})
        enqueued = time.perf_counter() - started
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = client.scard(f"{prefix}:done")
            if not killed and done >= count // 3:
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait()
                killed = True
            if done >= count:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        done_numbers = {int(n) for n in client.smembers(f"{prefix}:done")}
        runs = client.hgetall(f"{prefix}:runs")
        repeated = sum(1 for value in runs.values() if int(value) > 1)
        lost = count - len(done_numbers & set(range(count)))
        print(
            f"{count} jobs, 2 workers (concurrency 8 each), one SIGKILLed after "
            f"{count // 3} were done; Redis {redis_url}\n"
        )
        print("| jobs | enqueue (s) | all done (s) | throughput (jobs/s) | lost | run twice |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        print(
            f"| {count} | {enqueued:.2f} | {elapsed:.2f} | {count / elapsed:.0f} | {lost} | "
            f"{repeated} |"
        )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(30)
        queue.close()
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        for key in client.scan_iter(f"saq:{name}:*"):
            client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--skip-jobs", action="store_true")
    parser.add_argument("--skip-thumbnails", action="store_true")
    args = parser.parse_args()
    if not args.skip_thumbnails:
        thumbnails(args.runs)
    if not args.skip_jobs:
        jobs(args.jobs, args.redis)


if __name__ == "__main__":
    main()
