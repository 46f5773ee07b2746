"""ORM benchmark: storeroom's StoredObject against advanced-alchemy's, same run.

    python benchmarks/orm.py            # needs advanced-alchemy (pip install '.[bench]')
    python benchmarks/orm.py --rows 200 # a quick run
    python benchmarks/orm.py --checksum xxh3-128   # storeroom records XXH3-128
    python benchmarks/orm.py --rows 2000 --repeat 8 --median --pin   # steadiest figures

For each database (SQLite file, PostgreSQL on 127.0.0.1 if reachable) and each mode (sync,
async): insert 100 rows to warm up, then 1,000 rows each with a 4 KiB file, one commit per
row (as a web request would), then read every row back with its bytes. Both libraries store
into an obstore memory store, so the figures compare the libraries, not a disk. Each case runs in its own
subprocess; ``--repeat`` rounds (default 3) alternate which library goes first and the best
round of each is kept. Prints rows/s and the storeroom/advanced-alchemy ratio, and the same
ratio in rows per CPU second of the process (steadier on a shared machine; the database
server's own CPU is not in it, and is the same work for both). ``--median`` keeps the median
round instead of the best; ``--pin`` runs each case on CPU 0 and PostgreSQL's server process
of its connection on CPU 1 (Linux; the server's process must be the user's, or the user
root), so that on a two-core machine the client and the server stop taking turns on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PAYLOAD = os.urandom(4096)
READS = 5
WARM_UP = 100
"""Rows each case inserts before it starts the clock (not counted): what a library does once
(imports, caches filled, statements compiled) is not what it costs per request."""
"""Read-backs per case (a fresh session each); the fastest counts."""
# The PostgreSQL database to use: STOREROOM_BENCH_DATABASE, else the test suite's
# STOREROOM_TEST_DATABASE, else "test".
_PG_DB = os.environ.get("STOREROOM_BENCH_DATABASE") or os.environ.get(
    "STOREROOM_TEST_DATABASE", "test"
)
POSTGRES = (
    f"postgresql+psycopg://postgres@127.0.0.1:5432/{_PG_DB}",
    f"postgresql+asyncpg://postgres@127.0.0.1:5432/{_PG_DB}",
)


def _models(library: str, table: str) -> tuple[Any, Any, Any]:
    """(declarative base, model, FileObject class) for ``library``."""
    if library == "storeroom":
        from storeroom import FileObject, ObstoreBackend, StoredObject, storages

        backend = ObstoreBackend("bench", "memory://")
        # The digest storeroom records and verifies (--checksum; the library's default if unset).
        backend.checksum_algorithm = os.environ.get(
            "STOREROOM_BENCH_CHECKSUM", backend.checksum_algorithm
        )
        storages.register_backend(backend, overwrite=True)
    else:
        from advanced_alchemy.types import FileObject, StoredObject
        from advanced_alchemy.types.file_object import storages
        from advanced_alchemy.types.file_object.backends.obstore import ObstoreBackend

        storages.register_backend(ObstoreBackend(key="bench", fs="memory://"))

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        file: Mapped[Any] = mapped_column(StoredObject(backend="bench"))

    return Base, Row, FileObject


def _sessionmaker(library: str, engine: Any, is_async: bool) -> Any:
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from sqlalchemy.orm import sessionmaker

    if library == "storeroom":
        if is_async:
            return async_sessionmaker(engine, expire_on_commit=False)
        return sessionmaker(engine, expire_on_commit=False)
    # advanced-alchemy's own wiring (what its SQLAlchemyConfig does).
    from advanced_alchemy._listeners import AsyncFileObjectListener, SyncFileObjectListener

    listener = AsyncFileObjectListener if is_async else SyncFileObjectListener
    sync_maker = sessionmaker()
    for name in ("before_flush", "after_commit", "after_rollback"):
        event.listen(sync_maker, name, getattr(listener, name))
    if is_async:
        return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=sync_maker)
    sync_maker.configure(bind=engine, expire_on_commit=False)
    return sync_maker


def _engine_kwargs(url: str) -> dict[str, Any]:
    """Commits without waiting for the disk (for both libraries alike).

    The machine's disk is shared: an fsync per commit measures the other processes, not
    the libraries. SQLite lives on a tmpfs (see main); PostgreSQL skips the WAL flush.
    """
    if "+asyncpg" in url:
        return {"connect_args": {"server_settings": {"synchronous_commit": "off"}}}
    if "+psycopg" in url:
        return {"connect_args": {"options": "-c synchronous_commit=off"}}
    return {}


def _pin(engine: Any) -> None:
    """With ``--pin``: this process on CPU 0 and, on PostgreSQL, the server process of each of
    its connections on CPU 1 (where permitted), so client and server do not take turns on one
    core: on a two-core machine that interference moved a library's figure by 15%."""
    if not os.environ.get("STOREROOM_BENCH_PIN") or not hasattr(os, "sched_setaffinity"):
        return
    os.sched_setaffinity(0, {0})
    if engine.dialect.name != "postgresql":
        return
    from sqlalchemy import event

    def pin_server(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        cursor.close()
        try:
            os.sched_setaffinity(pid, {1})
        except (PermissionError, ProcessLookupError) as exc:  # another user's, or remote
            print(f"--pin: the server process stays unpinned ({exc})", file=sys.stderr)

    event.listen(engine, "connect", pin_server)


def run_case(library: str, url: str, is_async: bool, rows: int) -> dict[str, float]:
    from sqlalchemy import create_engine, select

    table = f"bench_{library.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    base, model, file_cls = _models(library, table)
    sync_url = url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")
    setup = create_engine(sync_url, **_engine_kwargs(sync_url))
    base.metadata.create_all(setup)
    try:
        if is_async:
            return asyncio.run(_run_async(library, url, model, file_cls, rows))
        engine = create_engine(url, **_engine_kwargs(url))
        _pin(engine)
        maker = _sessionmaker(library, engine, False)

        def insert(first: int, count: int) -> None:
            for i in range(first, first + count):
                with maker() as session:
                    session.add(
                        model(
                            name=f"r{i}",
                            file=file_cls(backend="bench", filename=f"f{i}.bin", content=PAYLOAD),
                        )
                    )
                    session.commit()

        insert(0, WARM_UP)
        start, cpu_start = time.perf_counter(), time.process_time()
        insert(WARM_UP, rows)
        written, cpu_written = time.perf_counter(), time.process_time()
        reads, cpu_reads = [], []
        for _ in range(READS):
            began, cpu_began = time.perf_counter(), time.process_time()
            with maker() as session:
                got = [r.file.get_content() for r in session.scalars(select(model)).all()]
            assert len(got) == WARM_UP + rows and all(len(g) == 4096 for g in got)
            reads.append(time.perf_counter() - began)
            cpu_reads.append(time.process_time() - cpu_began)
        engine.dispose()
        return {
            "write": rows / (written - start),
            "read": (WARM_UP + rows) / min(reads),
            "write_cpu": rows / (cpu_written - cpu_start),
            "read_cpu": (WARM_UP + rows) / min(cpu_reads),
        }
    finally:
        base.metadata.drop_all(setup)
        setup.dispose()


async def _run_async(
    library: str, url: str, model: Any, file_cls: Any, rows: int
) -> dict[str, float]:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, **_engine_kwargs(url))
    _pin(engine.sync_engine)
    maker = _sessionmaker(library, engine, True)

    async def insert(first: int, count: int) -> None:
        for i in range(first, first + count):
            async with maker() as session:
                session.add(
                    model(
                        name=f"r{i}",
                        file=file_cls(backend="bench", filename=f"f{i}.bin", content=PAYLOAD),
                    )
                )
                await session.commit()
        # advanced-alchemy uploads after the commit in background tasks: let them finish.
        while len(asyncio.all_tasks()) > 1:
            await asyncio.sleep(0)

    await insert(0, WARM_UP)
    start, cpu_start = time.perf_counter(), time.process_time()
    await insert(WARM_UP, rows)
    written, cpu_written = time.perf_counter(), time.process_time()
    reads, cpu_reads = [], []
    for _ in range(READS):
        began, cpu_began = time.perf_counter(), time.process_time()
        async with maker() as session:
            found = (await session.scalars(select(model))).all()
            got = [await r.file.get_content_async() for r in found]
        assert len(got) == WARM_UP + rows and all(len(g) == 4096 for g in got), len(got)
        reads.append(time.perf_counter() - began)
        cpu_reads.append(time.process_time() - cpu_began)
    await engine.dispose()
    return {
        "write": rows / (written - start),
        "read": (WARM_UP + rows) / min(reads),
        "write_cpu": rows / (cpu_written - cpu_start),
        "read_cpu": (WARM_UP + rows) / min(cpu_reads),
    }


def _postgres_available() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per case (best is kept)")
    parser.add_argument(
        "--median", action="store_true", help="keep the median of the rounds, not the best"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="this process on CPU 0, PostgreSQL's server process of its connection on CPU 1",
    )
    parser.add_argument("--case", nargs=3, metavar=("LIBRARY", "URL", "MODE"))
    parser.add_argument(
        "--checksum",
        help="the digest storeroom records and verifies (default: the library's, BLAKE3)",
    )
    args = parser.parse_args()
    if args.checksum:
        os.environ["STOREROOM_BENCH_CHECKSUM"] = args.checksum  # read by each case
    if args.pin:
        os.environ["STOREROOM_BENCH_PIN"] = "1"
    if args.case:
        library, url, mode = args.case
        print(json.dumps(run_case(library, url, mode == "async", args.rows)))
        return
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    tmp = tempfile.mkdtemp(prefix="storeroom-orm-bench-", dir=shm)
    databases = [("SQLite", f"sqlite:///{tmp}/b.db", f"sqlite+aiosqlite:///{tmp}/b.db")]
    if _postgres_available():
        databases.append(("PostgreSQL", *POSTGRES))
    print(f"storeroom records {args.checksum or 'its default digest (BLAKE3)'}")
    print(
        f"{'database':<11} {'mode':<6} {'operation':<10} {'storeroom':>12} "
        f"{'adv.-alchemy':>13} {'ratio':>6} {'CPU ratio':>9}"
    )
    for label, sync_url, async_url in databases:
        for mode, url in (("sync", sync_url), ("async", async_url)):
            # Rounds alternate which library goes first; the best of each is kept, so load
            # from other processes on the machine affects both alike.
            rounds: dict[str, list[dict[str, float]]] = {}
            for round_ in range(args.repeat):
                order = ("storeroom", "advanced-alchemy")
                for library in order if round_ % 2 == 0 else order[::-1]:
                    done = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--rows",
                            str(args.rows),
                            "--case",
                            library,
                            url,
                            mode,
                        ],
                        capture_output=True,
                        text=True,
                    )
                    if done.returncode != 0:
                        raise SystemExit(f"{library} {label} {mode} failed:\n{done.stderr[-3000:]}")
                    got = json.loads(done.stdout.strip().splitlines()[-1])
                    rounds.setdefault(library, []).append(got)
            keep = statistics.median if args.median else max
            results = {
                library: {op: keep(r[op] for r in runs) for op in runs[0]}
                for library, runs in rounds.items()
            }
            for op in ("write", "read"):
                ours, theirs = results["storeroom"][op], results["advanced-alchemy"][op]
                name = "insert+commit" if op == "write" else "read back"
                cpu = results["storeroom"][op + "_cpu"] / results["advanced-alchemy"][op + "_cpu"]
                print(
                    f"{label:<11} {mode:<6} {name:<14}{ours:>8,.0f} rows/s {theirs:>8,.0f} rows/s "
                    f"{ours / theirs:>5.2f}x {cpu:>8.2f}x"
                )


if __name__ == "__main__":
    main()
