"""Maintenance at size: find_orphans, find_dangling and ``storeroom verify`` on N rows.

    python benchmarks/maintenance.py                      # N = 10k and 100k, this checkout
    python benchmarks/maintenance.py --million            # also N = 1M (seeding takes minutes)
    python benchmarks/maintenance.py --before /tmp/before # also an older checkout, same data

Seeds, once per N (kept for later runs; ``--reseed`` redoes it), a PostgreSQL table of N rows
each owning a 1 KiB file on local disk (written directly, rows loaded with COPY), plus 1%
orphans (files no row references) and 1% dangling rows (their file was never written).
Then, for each code checkout, runs each case in its own subprocess with that checkout's
``src`` first on PYTHONPATH: ``find_orphans`` and ``find_dangling`` (library calls, grace 0)
and ``storeroom verify --backend bench --grace 0s --json`` (the CLI, output discarded), and
``storeroom gc --grace 0s --yes`` (it deletes the orphans, which are then written back,
untimed), next to ``raw_listing``: obstore alone listing the store.
``migrate`` is ``storeroom migrate bench copy`` of every object into a fresh local folder
(objects per second), next to ``raw_copy``: obstore alone on 4 threads doing the same three
operations per object (read, create-only write, read back), the floor of a verified copy.
``verify_2w`` and ``migrate_2w`` run the same commands with ``--shards 8`` on 2 SAQ workers
(queue ``STOREROOM_BENCH_QUEUE``, default ``redis://127.0.0.1:6379/9``; CPU and peak RSS
cover the workers too). The load average is printed first: on a shared machine the wall
times say as much about the neighbours as about the code.
Reports wall time, references per second, the child's CPU time (user + system; the wall
time depends on what else the machine runs), its peak RSS (``wait4``) and, for the library
calls, how far that rose above the RSS after imports, and checks every count is exact.

Trees the cases write are set aside and deleted once every case has run, and the run
starts once creating a file is fast (``--settle``): on ext4 without a journal, file
creation is slow for minutes after thousands of deletions (see ``_discard``).

The database is ``STOREROOM_BENCH_DATABASE`` (default: PostgreSQL database ``test`` on
127.0.0.1; pass ``--database``). Nothing but the ``bench_maint_*`` tables is touched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KiB = 1024
PAYLOAD = bytes(range(256)) * 4
CHECKSUM = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
DEFAULT_DATABASE = os.environ.get(
    "STOREROOM_BENCH_DATABASE", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

MODELS = """
import os
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storeroom import StoredObject


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = os.environ["BENCH_TABLE"]
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    file: Mapped[Any] = mapped_column(StoredObject(backend="bench"), nullable=True)


class ListRow(Base):
    __tablename__ = "bench_maint_list"
    id: Mapped[int] = mapped_column(primary_key=True)
    files: Mapped[Any] = mapped_column(StoredObject(backend="bench", multiple=True))
"""

# Runs in the measured subprocess: one library call, prints what it found and how long.
CASE = """
import json, resource, sys, time
from datetime import timedelta
sys.path.insert(0, sys.argv[3])
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from storeroom import ObstoreBackend, storages
from storeroom.orm import find_dangling, find_orphans
from bench_models import Row

storages.register_backend(ObstoreBackend("bench", "file://" + sys.argv[4]), overwrite=True)
engine = create_engine(sys.argv[2])
with engine.connect() as conn:
    pass
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with Session(engine) as session:
    if sys.argv[1] == "raw_copy":  # the floor of migrate: obstore alone, get + put + read back
        import hashlib, shutil
        from concurrent.futures import ThreadPoolExecutor
        import obstore
        from obstore.store import LocalStore
        store = storages.get_backend("bench").store
        target = sys.argv[4].rstrip("/") + "-rawcopy"
        shutil.rmtree(target, ignore_errors=True)
        dst = LocalStore(target, mkdir=True)
        paths = [o["path"] for batch in obstore.list(store) for o in batch]
        def one(path):
            data = obstore.get(store, path).bytes()
            obstore.put(dst, path, bytes(data), mode="create")
            hashlib.sha256(bytes(obstore.get(dst, path).bytes())).hexdigest()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, paths))
        found = len(paths)
    elif sys.argv[1] == "raw_listing":  # the floor: obstore alone lists the store, nothing else
        import obstore
        store = storages.get_backend("bench").store
        found = sum(len(batch) for batch in obstore.list(store)) - int(sys.argv[5])
    elif sys.argv[1] == "find_orphans":
        found = len(find_orphans(session, Row, "bench", grace=timedelta(0)))
    else:
        found = len(find_dangling(session, Row))
print(json.dumps({"seconds": time.perf_counter() - start, "found": found, "base_kib": base}))
"""


def _table(n: int) -> str:
    return f"bench_maint_{n}"


def _paths(n: int) -> tuple[list[str], list[str], list[str]]:
    """Paths of owned files, orphans, and dangling references for size ``n``."""
    extra = max(1, n // 100)
    owned = [f"bench/{i % 1000:03d}/{i:08d}.bin" for i in range(n)]
    orphans = [f"bench/{i % 1000:03d}/orphan-{i:08d}.bin" for i in range(extra)]
    dangling = [f"bench/{i % 1000:03d}/missing-{i:08d}.bin" for i in range(extra)]
    return owned, orphans, dangling


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def seed(n: int, database: str, root: Path, reseed: bool) -> None:
    """Create the files and the table for ``n`` rows unless they already exist."""
    import psycopg

    store = root / f"n{n}"
    marker = root / f"n{n}.seeded"
    table = _table(n)
    with psycopg.connect(_pg_dsn(database), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if marker.exists() and exists and exists[0] and not reseed:
            return
        owned, orphans, dangling = _paths(n)
        start = time.perf_counter()
        marker.unlink(missing_ok=True)
        shutil.rmtree(store, ignore_errors=True)
        for d in range(min(n, 1000)):
            (store / "bench" / f"{d:03d}").mkdir(parents=True, exist_ok=True)
        for path in owned + orphans:
            fd = os.open(store / path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, PAYLOAD)
            os.close(fd)
        files_s = time.perf_counter() - start
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (id integer PRIMARY KEY, name varchar NOT NULL, file jsonb)"
        )
        with conn.cursor().copy(f"COPY {table} (id, name, file) FROM STDIN") as copy:
            for i, path in enumerate(owned + dangling):
                file = {
                    "backend": "bench",
                    "filename": path.rsplit("/", 1)[1],
                    "path": path,
                    "content_type": "application/octet-stream",
                    "size": len(PAYLOAD),
                    "checksum": CHECKSUM,
                    "etag": None,
                    "version": None,
                    "last_modified": None,
                    "metadata": {},
                }
                copy.write_row((i, f"row {i}", json.dumps(file)))
        conn.execute(f"ANALYZE {table}")
    marker.touch()
    print(
        f"seeded N={n:,}: {len(owned) + len(orphans):,} files in {files_s:.1f} s, "
        f"{len(owned) + len(dangling):,} rows in {time.perf_counter() - start - files_s:.1f} s",
        file=sys.stderr,
    )


def seed_list_row(files: int, database: str, root: Path) -> None:
    """One row whose list column holds ``files`` files (the issue's last figure)."""
    import psycopg

    store = root / "list"
    marker = root / f"list{files}.seeded"
    if marker.exists():
        return
    shutil.rmtree(store, ignore_errors=True)
    (store / "list").mkdir(parents=True)
    items = []
    for i in range(files):
        path = f"list/{i:08d}.bin"
        (store / path).write_bytes(PAYLOAD)
        items.append(
            {
                "backend": "bench",
                "filename": f"{i}.bin",
                "path": path,
                "content_type": "application/octet-stream",
                "size": len(PAYLOAD),
                "checksum": CHECKSUM,
                "etag": None,
                "version": None,
                "last_modified": None,
                "metadata": {},
            }
        )
    with psycopg.connect(_pg_dsn(database), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_maint_list")
        conn.execute("CREATE TABLE bench_maint_list (id integer PRIMARY KEY, files jsonb)")
        conn.execute("INSERT INTO bench_maint_list VALUES (1, %s)", (json.dumps(items),))
    marker.touch()


def _discard(root: Path, tree: Path) -> None:
    """Set ``tree`` (files a case wrote) aside, to be deleted once every case has run.

    Deleting them between cases would slow the next case's file creation: ext4 without
    a journal (this machine's root file system) passes over inodes freed in the last
    minute (six while their inode table block is dirty), one buffer lookup each, so after
    10,000 deletions every new file cost 0.1 to 0.5 ms of kernel time instead of 25 us.
    """
    if tree.exists():
        aside = root / ".discarded"
        aside.mkdir(exist_ok=True)
        tree.rename(aside / f"{tree.name}-{time.time_ns()}")


def _creation_probe(root: Path, files: int = 1000) -> float:
    """Microseconds to create, write and close one 1 KiB file here, now (kept till the end)."""
    probe = root / f"probe-{time.time_ns()}"
    probe.mkdir()
    start = time.perf_counter()
    for i in range(files):
        (probe / f"{i}.bin").write_bytes(PAYLOAD)
    seconds = time.perf_counter() - start
    _discard(root, probe)
    return seconds / files * 1e6


SETTLED_US = 60
"""Creating a 1 KiB file takes 20 to 40 us on this machine's disk when no files were
deleted in the last minutes, and 100 to 600 us after thousands were (see _discard)."""


def _settle(root: Path, patience: float) -> tuple[float, float]:
    """Wait (up to ``patience`` seconds) until creating files costs what it does on a
    settled file system; returns the seconds waited and the last cost per file (us)."""
    start = time.monotonic()
    creation = _creation_probe(root)
    while creation > SETTLED_US and time.monotonic() - start < patience:
        time.sleep(20)
        creation = _creation_probe(root)
    return time.monotonic() - start, creation


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, Any, str, str]:
    """Run ``python -m storeroom.cli *args``: seconds, exit code, rusage, stdout, stderr.

    Output goes to files, not pipes: thousands of lines would fill a pipe nobody reads
    until the end.
    """
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "storeroom.cli", *args],
            env=env,
            cwd=cwd,
            stdout=out_file,
            stderr=err_file,
        )
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode()
    return seconds, os.waitstatus_to_exitcode(status), usage, out, err


def _measured(seconds: float, usage: Any, found: int, references: int) -> dict[str, float]:
    return {
        "seconds": seconds,
        "rss_mib": usage.ru_maxrss / KiB,
        "growth_mib": float("nan"),
        "cpu": usage.ru_utime + usage.ru_stime,
        "found": found,
        "references": references,
    }


def run_migrate(
    n: int, database: str, root: Path, src: Path, models: Path, label: str
) -> dict[str, float]:
    """``storeroom migrate bench copy`` of every object (N + 1%) into a fresh local folder."""
    store = str(root / f"n{n}")
    target = root / f"migrated-{label}-{n}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    state = root / f"migrate-{label}-{n}.jsonl"
    state.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{src}",
        "BENCH_TABLE": _table(n),
        "STORAGE__BENCH__URL": f"file://{store}",
        "STORAGE__COPY__URL": f"file://{target}",
        "DATABASE_URL": database,
    }
    args = ["migrate", "bench", "copy", "--state", str(state), "--no-progress"]
    seconds, code, usage, out, err = _cli(args, env, models)
    if code != 0:
        raise SystemExit(f"migrate failed: {out[-1000:]} {err[-2000:]}")
    copied = int(out.split("copied ", 1)[1].split(" ", 1)[0])
    _discard(root, target)
    state.unlink(missing_ok=True)
    return _measured(seconds, usage, copied, copied)


def run_gc(n: int, database: str, root: Path, src: Path, models: Path) -> dict[str, float]:
    """``storeroom gc --yes`` of the 1% orphans; they are written back afterwards (not timed).

    gc reads the references twice: once to find the orphans, once more just before it
    deletes them (a row may have adopted one meanwhile).
    """
    store = root / f"n{n}"
    env = {
        **os.environ,
        "PYTHONPATH": f"{src}",
        "BENCH_TABLE": _table(n),
        "STORAGE__BENCH__URL": f"file://{store}",
        "DATABASE_URL": database,
    }
    args = ["gc", "--model", "bench_models:Row", "--backend", "bench", "--grace", "0s", "--yes"]
    seconds, code, usage, out, err = _cli(args, env, models)
    _owned, orphans, _dangling = _paths(n)
    for path in orphans:  # back as seeded, for the next case and the next run
        (store / path).write_bytes(PAYLOAD)
    if code != 0:
        raise SystemExit(f"gc failed: {out[-1000:]} {err[-2000:]}")
    deleted = int(out.strip().splitlines()[-1].split(" orphans deleted")[0])
    return _measured(seconds, usage, deleted, n + max(1, n // 100))


QUEUE = os.environ.get("STOREROOM_BENCH_QUEUE", "redis://127.0.0.1:6379/9")


def run_sharded(
    case: str, n: int, database: str, root: Path, src: Path, models: Path, workers: int = 2
) -> dict[str, float]:
    """``verify``/``migrate`` with ``--shards`` on ``workers`` SAQ worker processes.

    The workers are started first (their start-up is not timed); the time is the command's,
    from start to its printed result; CPU and peak RSS are the workers' and the command's.
    """
    import uuid

    store = str(root / f"n{n}")
    target = root / f"migrated-sharded-{n}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": f"{src}",
        "BENCH_TABLE": _table(n),
        "STORAGE__BENCH__URL": f"file://{store}",
        "STORAGE__COPY__URL": f"file://{target}",
        "DATABASE_URL": database,
        "STOREROOM_QUEUE_URL": QUEUE,
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storeroom.jobs.saq",
                "--url",
                QUEUE,
                "--name",
                name,
                "--import",
                "storeroom.orm.sharded",
                "--concurrency",
                "1",
                "--sweep",
                "5",
            ],
            env=env,
            cwd=models,
        )
        for _ in range(workers)
    ]
    time.sleep(2)  # let the workers connect (not timed)
    shards = str(workers * 4)
    if case.startswith("verify"):
        args = ["verify", "--model", "bench_models:Row", "--backend", "bench", "--grace", "0s"]
    else:
        args = ["migrate", "bench", "copy", "--state", str(root / f"journals-{name}")]
    args = [*args, "--shards", shards, "--queue-name", name]
    seconds, code, usage, out, err = _cli(args, env, models)
    rss = usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/status") as info:
                for line in info:
                    if line.startswith("VmHWM:"):
                        rss = max(rss, int(line.split()[1]))
        except OSError:
            pass
        proc.send_signal(15)
        _p, _s, wusage = os.wait4(proc.pid, 0)
        cpu += wusage.ru_utime + wusage.ru_stime
    _discard(root, target)
    shutil.rmtree(root / f"journals-{name}", ignore_errors=True)
    if code not in (0, 1):
        raise SystemExit(f"sharded {case} failed: {out[-1000:]} {err[-2000:]}")
    last = out.strip().splitlines()[-1]
    if case.startswith("verify"):
        dangling = int(last.split("dangling ")[1].split(",")[0])
        orphans = int(last.split("orphans ")[1].split()[0])
        found = orphans + dangling * 1_000_000
        references = int(last.split()[0])
    else:
        found = int(last.split("copied ")[1].split(",")[0])
        references = found
    return {
        "seconds": seconds,
        "rss_mib": rss / KiB,
        "growth_mib": float("nan"),
        "cpu": cpu,
        "found": found,
        "references": references,
    }


def run_case(
    case: str,
    n: int,
    database: str,
    root: Path,
    src: Path,
    models: Path,
    model: str = "Row",
    store_dir: str = "",
    label: str = "",
) -> dict[str, float]:
    """Run one case in a fresh subprocess; time, peak RSS, and the count it found."""
    if case == "migrate":
        return run_migrate(n, database, root, src, models, label)
    if case == "gc":
        return run_gc(n, database, root, src, models)
    if case.endswith("_2w"):
        return run_sharded(case, n, database, root, src, models)
    store = str(root / (store_dir or f"n{n}"))
    env = {
        **os.environ,
        "PYTHONPATH": f"{src}",
        "BENCH_TABLE": _table(n),
        "STORAGE__BENCH__URL": f"file://{store}",
        "DATABASE_URL": database,
    }
    if case == "verify":
        args = ["verify", "--model", f"bench_models:{model}", "--backend", "bench"]
        seconds, code, usage, out, err = _cli([*args, "--grace", "0s", "--json"], env, models)
        if code not in (0, 1):
            raise SystemExit(f"verify failed ({code}): {err[-2000:]}")
        summary = json.loads(out)["summary"]
        found = summary["orphans"] + summary["dangling"] * 1_000_000
        return _measured(seconds, usage, found, summary["references"])
    args = [sys.executable, "-c", CASE, case, database, str(models), store, str(n)]
    child = subprocess.Popen(
        args, env=env, cwd=models, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _pid, status, usage = os.wait4(child.pid, 0)
    if case == "raw_copy":
        _discard(root, Path(f"{store.rstrip('/')}-rawcopy"))
    out = child.stdout.read().decode() if child.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        err = child.stderr.read().decode() if child.stderr else ""
        raise SystemExit(f"{case} failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "seconds": result["seconds"],
        "rss_mib": usage.ru_maxrss / KiB,
        "cpu": usage.ru_utime + usage.ru_stime,
        "growth_mib": (usage.ru_maxrss - result["base_kib"]) / KiB,
        "found": result["found"],
        "references": n + max(1, n // 100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="10000,100000", help="comma-separated N (default 10000,100000)"
    )
    parser.add_argument("--million", action="store_true", help="also N = 1,000,000")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="PostgreSQL URL (psycopg)")
    parser.add_argument(
        "--root",
        default=str(Path(tempfile.gettempdir()) / "storeroom-bench-maint"),
        help="where the seeded files live (kept between runs)",
    )
    parser.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also measure this checkout (e.g. a git worktree of an older commit)",
    )
    parser.add_argument(
        "--cases",
        default="raw_listing,find_orphans,find_dangling,verify,gc,verify_2w,"
        "raw_copy,migrate,migrate_2w",
        help="gc: storeroom gc --yes (the orphans are written back afterwards); "
        "raw_listing / raw_copy: obstore alone listing / copying the "
        "store, the floors; *_2w: --shards 8 on 2 SAQ workers "
        "(STOREROOM_BENCH_QUEUE, default redis://127.0.0.1:6379/9)",
    )
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--settle",
        type=float,
        default=420,
        metavar="SECONDS",
        help="wait up to this long for file creation to be fast again after earlier "
        "deletions (default 420; 0 to start at once)",
    )
    parser.add_argument(
        "--list-row",
        type=int,
        default=0,
        metavar="FILES",
        help="also verify one row holding FILES files in a list column",
    )
    opts = parser.parse_args()
    # The commands measured run as an installed application runs them: from bytecode caches
    # (with this set, each CLI case would compile storeroom's sources again, about 0.3 s).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    if opts.million and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    root = Path(opts.root)
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "bench_models.py").write_text(MODELS)
    codes = [("after", ROOT / "src")]
    if opts.before:
        codes.insert(0, ("before", Path(opts.before).resolve() / "src"))
    waited, creation = _settle(root, opts.settle)
    print(
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs;"
        f" creating a 1 KiB file takes {creation:.0f} us (waited {waited:.0f} s for it to fall"
        f" under {SETTLED_US} us)",
        flush=True,
    )
    try:
        run_all(opts, sizes, root, models, codes)
    finally:
        shutil.rmtree(root / ".discarded", ignore_errors=True)


def run_all(
    opts: argparse.Namespace,
    sizes: list[int],
    root: Path,
    models: Path,
    codes: list[tuple[str, Path]],
) -> None:
    """Every case for every N and checkout, one table row each."""
    print(
        f"{'N':>9}  {'code':<6}  {'case':<13}  {'time':>8}  {'refs/s':>9}  {'CPU':>8}  "
        f"{'refs/CPU-s':>10}  "
        f"{'peak RSS':>9}  {'growth':>8}  exact"
    )
    for n in sizes:
        seed(n, opts.database, root, opts.reseed)
        extra = max(1, n // 100)
        for label, src in codes:
            for case in opts.cases.split(","):
                if case in ("raw_listing", "raw_copy") and label == "before":
                    continue  # the same for every checkout
                if case.endswith("_2w") and label == "before":
                    continue  # no sharded runs before
                r = run_case(case, n, opts.database, root, src, models, label=label)
                expected = {
                    "raw_listing": extra,
                    "find_orphans": extra,
                    "find_dangling": extra,
                    "verify": extra + extra * 1_000_000,
                    "gc": extra,
                    "migrate": n + extra,
                    "verify_2w": extra + extra * 1_000_000,
                    "migrate_2w": n + extra,
                    "raw_copy": n + extra,
                }[case]
                exact = "yes" if r["found"] == expected else f"NO ({r['found']})"
                growth = "" if r["growth_mib"] != r["growth_mib"] else f"+{r['growth_mib']:.0f} MiB"
                print(
                    f"{n:>9,}  {label:<6}  {case:<13}  {r['seconds']:>6.1f} s  "
                    f"{r['references'] / r['seconds']:>9,.0f}  {r['cpu']:>6.1f} s  "
                    f"{r['references'] / r['cpu']:>10,.0f}  {r['rss_mib']:>5.0f} MiB  "
                    f"{growth:>8}  {exact}",
                    flush=True,
                )
    if opts.list_row:
        seed_list_row(opts.list_row, opts.database, root)
        for label, src in codes:
            r = run_case("verify", 0, opts.database, root, src, models, "ListRow", "list")
            exact = "yes" if r["found"] == 0 else f"NO ({r['found']})"
            print(
                f"{'1 row':>9}  {label:<6}  {'verify list':<13}  {r['seconds']:>6.1f} s  "
                f"{r['references'] / r['seconds']:>9,.0f}  {r['cpu']:>6.1f} s  "
                f"{r['references'] / r['cpu']:>10,.0f}  {r['rss_mib']:>5.0f} MiB  {'':>8}  "
                f"{exact}  "
                f"({opts.list_row:,} files in one list)",
                flush=True,
            )


if __name__ == "__main__":
    main()
