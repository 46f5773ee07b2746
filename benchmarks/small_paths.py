"""Where the microseconds of one small save and one small read go (memory store, 4 KiB).

    python benchmarks/small_paths.py                        # this checkout
    python benchmarks/small_paths.py --src /other/checkout/src   # compare another version

Instruction counts, which the load of a shared machine does not move: run one step (or
``none``, the setup alone) under callgrind and divide the difference by ``--count``::

    valgrind --tool=callgrind python benchmarks/small_paths.py --count 2000 --one backend.put
    valgrind --tool=callgrind python benchmarks/small_paths.py --count 2000 --one none

Each line adds one layer on top of the previous one, so the differences between lines are
what that layer costs. Every figure is the best of ``--repeat`` rounds of ``--count`` calls.
The ORM lines load 1,000 rows of a table with a StoredObject column from SQLite in memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROOT = Path(__file__).resolve().parents[1]


def _best(func: Callable[[], Any], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", default=str(ROOT / "src"))
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--checksum",
        help="the digest storeroom records and verifies (default: the library's, BLAKE3)",
    )
    parser.add_argument(
        "--one", help="run only the step with this label (stripped), once, untimed; 'none': no step"
    )
    args = parser.parse_args()
    sys.path.insert(0, args.src)

    import hashlib

    import obstore

    from storeroom import FileObject, ObstoreBackend, StoredObject, storages
    from storeroom.paths import safe_path

    n, repeat = args.count, args.repeat
    payload = os.urandom(4096)
    backend = ObstoreBackend("small", "memory://")
    storages.register_backend(backend, overwrite=True)
    store = backend.store
    names = [f"dir/{i}.bin" for i in range(n)]

    if args.checksum:
        backend.checksum_algorithm = args.checksum
    algorithm = backend.checksum_algorithm
    try:
        from storeroom.checksums import digest as recorded_digest
    except ImportError:  # an older checkout

        def recorded_digest(name: str, data: bytes) -> str:
            return f"{name}:{hashlib.new(name, data).hexdigest()}"

    def digest() -> None:
        for _ in names:
            recorded_digest(algorithm, payload)

    def floor_put() -> None:
        # The least a Python layer with integrity on does: check the path, record the
        # digest, put, and hand back what it recorded.
        for p in names:
            path = safe_path(p)
            record = recorded_digest(algorithm, payload)
            obstore.put(store, path, payload)
            (path, len(payload), record)

    def floor_get() -> None:
        # ... and for a verified read that returns bytes: get, copy out, digest, compare.
        for p in names:
            data = obstore.get(store, safe_path(p)).bytes().to_bytes()
            if recorded_digest(algorithm, data) != expected:
                raise AssertionError("corrupted")

    rows: list[tuple[str, float]] = []

    def add(label: str, func: Callable[[], Any], count: int = n) -> None:
        if args.one is None:
            rows.append((label, _best(func, count, repeat)))
        elif label.strip() == args.one:
            func()

    add("raw obstore.put", lambda: [obstore.put(store, p, payload) for p in names])
    add("  path check (safe_path)", lambda: [safe_path(p) for p in names])
    add(f"  digest of 4 KiB ({algorithm})", digest)
    add("floor: safe_path + digest + obstore.put", floor_put)
    add(
        "  FileObject(...) construction",
        lambda: [FileObject(backend=backend, filename=p, content=payload) for p in names],
    )
    add("backend.put", lambda: [backend.put(p, payload) for p in names])
    add(
        "FileObject(...).save()",
        lambda: [FileObject(backend=backend, filename=p, content=payload).save() for p in names],
    )
    files = [FileObject(backend=backend, filename=p, content=payload).save() for p in names]
    add("raw obstore.get(...).bytes()", lambda: [obstore.get(store, p).bytes() for p in names])
    expected = recorded_digest(algorithm, payload)
    add("floor: safe_path + get + to_bytes + digest", floor_get)
    add("backend.get", lambda: [backend.get(p) for p in names])
    add("FileObject.get_content() (verified)", lambda: [f.get_content() for f in files])
    data = [f.to_dict() for f in files]
    add(
        "FileObject.from_dict (ORM load of one value)",
        lambda: [FileObject.from_dict(d) for d in data],
    )

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = "small_rows"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[Any] = mapped_column(StoredObject(backend="small"))

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for i in range(1000):
            session.add(Row(id=i, file=FileObject(filename=f"r{i}.bin", content=payload)))
        session.commit()

    def load() -> list[Any]:
        with Session(engine) as session:
            return list(session.scalars(select(Row)).all())

    def read_back() -> None:
        with Session(engine) as session:
            for row in session.scalars(select(Row)).all():
                row.file.get_content()

    add("ORM: load 1 row (SQLite, JSON, FileObject)", load, 1000)
    add("ORM: load 1 row + get_content()", read_back, 1000)
    engine.dispose()
    if args.one is not None:
        return

    print(f"{'step (memory store, 4 KiB)':<46} {'µs per call':>11}")
    for label, micros in rows:
        print(f"{label:<46} {micros:>11.2f}")


if __name__ == "__main__":
    main()
