"""ORM round trips counted in instructions (callgrind), which the machine's load does not move.

    python benchmarks/orm_instructions.py              # needs valgrind and '.[bench]'
    python benchmarks/orm_instructions.py --rows 200   # quicker
    python benchmarks/orm_instructions.py --checksum xxh3-128   # storeroom records XXH3-128

For each library (a plain ``JSON`` column with no file library, storeroom, advanced-alchemy):
a SQLite file on tmpfs (``/dev/shm`` when there is one), 200 warm-up rows, then ``--rows``
more, each one insert+commit of a row with a 4 KiB file in an in-memory obstore store (as
``benchmarks/orm.py``). The process runs under ``valgrind --tool=callgrind`` twice, with
``--rows`` and with 0 rows; the difference divided by ``--rows`` is the cost of one row.
Reading back is counted the same way: 1,000 rows inserted, then ``--reads`` read-backs of
all of them with ``get_content()`` against none. Prints instructions per row and the ratio
advanced-alchemy / storeroom (above 1.0x: storeroom runs fewer instructions). Every measured
process runs with ``PYTHONHASHSEED=0``, so counts repeat between runs.

A count still depends on where objects land in memory: CPython's attribute cache is indexed
by the addresses of interned names, so anything that shifts allocations (the length of a
path, of an environment variable) moves one library's count by up to 4%, another's the
other way. Each count is therefore the mean over ``--layouts`` runs whose working folders'
names differ in length (the spread is printed beside it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

WARM_UP = 200
READ_ROWS = 1000


def _plain_model() -> tuple[object, object, object]:
    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = "plain"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        file: Mapped[Any] = mapped_column(JSON)

    record = {
        "backend": "bench",
        "path": "plain/file/0123456789abcdef0123456789abcdef/f1.bin",
        "filename": "f1.bin",
        "size": 4096,
        "content_type": "application/octet-stream",
        "checksum": "blake3:" + "ab" * 32,
        "etag": "1",
        "last_modified": "2026-01-01T00:00:00+00:00",
        "metadata": {},
    }
    return Base, Row, lambda i: dict(record)


def child(library: str, operation: str, count: int, directory: str) -> None:
    """The measured process: set up, warm up, then ``count`` rows (or read-backs)."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import sessionmaker

    import orm

    if library == "plain":
        base, model, make = _plain_model()
        maker_for = lambda engine: sessionmaker(engine, expire_on_commit=False)  # noqa: E731
    else:
        base, model, file_cls = orm._models(library, "t")
        make = lambda i: file_cls(  # noqa: E731
            backend="bench", filename=f"f{i}.bin", content=orm.PAYLOAD
        )
        maker_for = lambda engine: orm._sessionmaker(library, engine, False)  # noqa: E731
    engine = create_engine(f"sqlite:///{directory}/{uuid.uuid4().hex}.db")
    base.metadata.create_all(engine)  # type: ignore[attr-defined]
    maker = maker_for(engine)

    def insert(first: int, rows: int) -> None:
        for i in range(first, first + rows):
            with maker() as session:
                session.add(model(name=f"r{i}", file=make(i)))  # type: ignore[operator]
                session.commit()

    def read_back() -> None:
        with maker() as session:
            got = [r.file.get_content() for r in session.scalars(select(model)).all()]
        assert len(got) == READ_ROWS

    if operation == "insert":
        insert(0, WARM_UP)
        insert(WARM_UP, count)
    else:
        insert(0, READ_ROWS)
        read_back()
        for _ in range(count):
            read_back()


def _per_row(library: str, operation: str, count: int, per: int, directory: str) -> int:
    """Instructions of one row (or read-back row) in working folder ``directory``."""
    os.makedirs(directory, exist_ok=True)
    more = _instructions(library, operation, count, directory)
    return (more - _instructions(library, operation, 0, directory)) // per


def _instructions(library: str, operation: str, count: int, directory: str) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            library,
            operation,
            str(count),
            directory,
        ],
        capture_output=True,
        text=True,
        # A fixed hash seed: with a random one, dict and set work differs between runs
        # and the counts of one library moved by up to 10% between sittings.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{library} {operation} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500, help="inserted rows counted")
    parser.add_argument("--reads", type=int, default=4, help="read-backs of 1,000 rows counted")
    parser.add_argument(
        "--layouts", type=int, default=3, help="memory layouts each count is averaged over"
    )
    parser.add_argument("--child", nargs=4, metavar=("LIBRARY", "OPERATION", "COUNT", "DIR"))
    parser.add_argument(
        "--checksum",
        help="the digest storeroom records and verifies (default: the library's, BLAKE3)",
    )
    opts = parser.parse_args()
    if opts.checksum:
        os.environ["STOREROOM_BENCH_CHECKSUM"] = opts.checksum  # read by benchmarks/orm.py
    if opts.child:
        library, operation, count, directory = opts.child
        child(library, operation, int(count), directory)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="storeroom-orm-ir-", dir=shm) as directory:
        print(
            f"{'operation':<34} {'plain JSON':>12} {'storeroom':>12} {'adv.-alchemy':>13} "
            f"{'ratio':>6}  (mean of {opts.layouts} layouts; storeroom, adv.-alchemy: low-high)"
        )
        cases = [("insert+commit, SQLite sync", "insert", opts.rows, opts.rows)]
        cases.append(
            ("read back one row + get_content()", "read", opts.reads, opts.reads * READ_ROWS)
        )
        for label, operation, count, per in cases:
            found: dict[str, list[int]] = {}
            for library in ("plain", "storeroom", "advanced-alchemy"):
                if library == "plain" and operation == "read":
                    continue
                found[library] = [
                    _per_row(library, operation, count, per, f"{directory}/l{'x' * 7 * k}")
                    for k in range(opts.layouts)
                ]
            mean = {library: sum(v) // len(v) for library, v in found.items()}
            plain = f"{mean['plain']:,}" if "plain" in mean else ""
            ratio = mean["advanced-alchemy"] / mean["storeroom"]
            spread = "; ".join(
                f"{min(found[lib]):,}-{max(found[lib]):,}"
                for lib in ("storeroom", "advanced-alchemy")
            )
            print(
                f"{label:<34} {plain:>12} {mean['storeroom']:>12,} "
                f"{mean['advanced-alchemy']:>13,} {ratio:>5.2f}x  ({spread})"
            )


if __name__ == "__main__":
    main()
