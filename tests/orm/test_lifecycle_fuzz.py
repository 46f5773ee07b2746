"""A seeded lifecycle fuzzer: random session lifecycles, the rule checked after every step.

Operations: add, replace, remove, list mutation, a file given to a second row, flush, SAVEPOINT begin/release/rollback,
commit, rollback, close, reset, session reuse (same Session after close, a new Session, a
Session dropped with its transaction open), bulk insert/update/delete, delete-orphan,
cancellation mid-flush (async; an injected BaseException on sync drivers), an injected storage
failure and an injected database failure at commit. On every driver of the ``db`` fixture.

After every step, once post-commit work has drained: no committed row references a missing
object (0 dangling), and every object in the store is referenced by a committed row or was
uploaded by the transaction still open (0 orphans; once it ends, that part is empty too).

Default: 1,000 steps per driver. A long run on one driver (``--timeout 0`` lifts the suite's
300 s limit per test; 100,000 steps on SQLite took 11 min 17 s here, with a parallel test run)::

    export STOREROOM_FUZZ_STEPS=100000 STOREROOM_FUZZ_SEED=7
    pytest tests/orm/test_lifecycle_fuzz.py -s -k "sqlite and not aio" --timeout 0
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import zlib
from collections import Counter
from typing import Any

from sqlalchemy import create_engine, delete, insert, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, InvalidRequestError, StatementError
from sqlalchemy.orm.exc import StaleDataError

from storeroom import FileObject, StoreroomError
from storeroom.orm import lifecycle, wait_for_cleanup
from tests.orm.conftest import (
    Db,
    Document,
    FaultyBackend,
    Folder,
    Interrupted,
    Item,
    SessionAdapter,
)

STEPS = int(os.environ.get("STOREROOM_FUZZ_STEPS", "1000"))
SEED = int(os.environ.get("STOREROOM_FUZZ_SEED", "20261129"))
MAX_ROWS = 12  # rows in the session before deletes are favoured
MAX_REFERENCES = 80  # committed file references before old rows are pruned (keeps steps O(1))

EXPECTED = (
    DBAPIError,
    StatementError,
    StaleDataError,
    StoreroomError,
    InvalidRequestError,
    Interrupted,
    asyncio.TimeoutError,
)


class Fuzzer:
    def __init__(self, db: Db, files: FaultyBackend, rng: random.Random) -> None:
        self.db, self.files, self.rng = db, files, rng
        self.session: SessionAdapter = db.session()
        self.savepoints: list[Any] = []
        self.trace: list[str] = []
        self.held: list[Any] = []  # the identity map is weak: the application holds its rows
        self.names = 0
        self.references = 0
        self.ops: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        url = (
            db.url.replace("+aiosqlite", "")
            .replace("+asyncpg", "+psycopg")
            .replace("+aiomysql", "+pymysql")
        )
        self.checker = create_engine(url)

    # -- helpers -------------------------------------------------------------------------------

    def new_file(self) -> FileObject:
        return FileObject(
            filename=self.rng.choice(["a.txt", "r.pdf", "x y.bin"]),
            content=os.urandom(self.rng.randint(0, 64)),
        )

    def name(self) -> str:
        self.names += 1
        return f"z{self.names}"

    def sync_session(self) -> Any:
        raw = self.session.raw
        return raw.sync_session if self.db.is_async else raw

    def live(self, model: type) -> list[Any]:
        """Rows of ``model`` the session holds that are neither deleted nor detached."""
        found = []
        session = self.sync_session()
        seen: set[int] = set()
        for obj in [*self.held, *session.identity_map.values(), *session.new]:
            if isinstance(obj, model) and id(obj) not in seen and obj in session:
                seen.add(id(obj))
                state = inspect(obj)
                if (state.persistent or state.pending) and not state.deleted and not state.expired:
                    found.append(obj)
        return found

    async def load(self) -> None:
        """Load rows into the session (as an application would at the start of a request)."""
        with self.sync_session().no_autoflush:
            self.held = [
                *await self.session.scalars(select(Document)),
                *await self.session.scalars(select(Folder)),
            ]

    async def ended(self) -> None:
        """After the transaction ended: forget SAVEPOINTs."""
        self.savepoints.clear()

    async def recover(self) -> None:
        route = self.rng.choice(["rollback", "rollback", "close", "reset"])
        self.ops[f"recover-{route}"] += 1
        await getattr(self.session, route)()
        await self.ended()

    async def flush_with_cancellation(self) -> None:
        doc = Document(name=self.name(), file=FileObject(filename="slow.bin", content=b"s"))
        self.session.add(doc)
        for _ in range(self.rng.randint(0, 4)):
            self.session.add(Document(name=self.name(), file=self.new_file()))
        if self.db.is_async:
            self.files.slow_names = {"slow.bin"}
            self.faults["cancellation"] += 1
            try:
                await asyncio.wait_for(self.session.flush(), timeout=0.05)
            finally:
                self.files.slow_names = set()
        else:
            self.files.interrupt_on = {self.files.writes + self.rng.randint(1, 3)}
            self.faults["interruption"] += 1
            try:
                await self.session.flush()
            finally:
                self.files.interrupt_on = set()

    # -- one step ------------------------------------------------------------------------------

    async def step(self) -> str:
        docs = self.live(Document)
        folders = self.live(Folder)
        rng = self.rng
        self.held = [o for o in self.held if not inspect(o).detached or rng.random() < 0.5]
        choices = [
            "add",
            "add",
            "replace",
            "remove",
            "list",
            "share",
            "flush",
            "commit",
            "commit",
            "commit",
            "rollback",
            "close",
            "reset",
            "reuse",
            "load",
            "savepoint",
            "release",
            "savepoint-rollback",
            "bulk-insert",
            "bulk-update",
            "bulk-delete",
            "delete",
            "orphan",
            "storage-failure",
            "db-failure",
            "cancel",
        ]
        if not self.db.is_async:
            choices.append("drop")
        if len(docs) > MAX_ROWS:
            choices += ["delete", "bulk-delete"] * 4
        if self.references > MAX_REFERENCES:  # rows the session never loaded pile up
            choices += ["prune"] * 8
        op = rng.choice(choices)
        self.ops[op] += 1
        self.trace.append(op)
        s = self.session
        if op == "add":
            doc = Document(
                name=self.name(),
                file=self.new_file(),
                attachments=[self.new_file() for _ in range(rng.randint(0, 2))],
            )
            s.add(doc)
            self.held.append(doc)
            if rng.random() < 0.3 or not folders:
                folder = Folder(
                    name=self.name(),
                    items=[Item(file=self.new_file()) for _ in range(rng.randint(1, 3))],
                )
                s.add(folder)
                self.held.append(folder)
        elif op == "replace" and docs:
            rng.choice(docs).file = self.new_file()
        elif op == "remove" and docs:
            rng.choice(docs).file = None
        elif op == "list" and docs:
            row = rng.choice(docs)
            items = list(row.attachments or [])
            action = rng.choice(["append", "pop", "assign", "move"])
            if action == "append" and row.attachments is not None:
                row.attachments.append(self.new_file())
            elif action == "pop" and row.attachments:
                row.attachments.pop(rng.randrange(len(row.attachments)))
            elif action == "move" and len(docs) > 1 and items:
                other = rng.choice([d for d in docs if d is not row])
                moved = row.attachments.pop()
                other.attachments = [*(other.attachments or []), moved]
            else:
                row.attachments = [*items[:1], self.new_file()]
        elif op == "share" and docs:
            # One row's stored (or pending) file given to another row: that row gets a copy.
            source = rng.choice(docs)
            given = source.file or next(iter(source.attachments or []), None)
            if given is not None:
                others = [d for d in docs if d is not source]
                if not others or rng.random() < 0.4:
                    doc = Document(name=self.name(), file=given)
                    s.add(doc)
                    self.held.append(doc)
                elif rng.random() < 0.5:
                    rng.choice(others).file = given
                else:
                    target = rng.choice(others)
                    target.attachments = [*(target.attachments or []), given]
        elif op == "flush":
            await s.flush()
        elif op == "commit":
            await s._call("commit")
            await self.ended()
        elif op == "rollback":
            await s.rollback()
            await self.ended()
        elif op == "close":
            await s.close()
            await self.ended()
        elif op == "reset":
            await s.reset()
            await self.ended()
        elif op == "reuse":
            await s.close()
            await self.ended()
            if rng.random() < 0.5:
                self.session = self.db.session()
            await self.load()
        elif op == "drop":
            self.session = self.db.session()  # the old one, transaction open, is dropped
            await self.ended()
        elif op == "load":
            await self.load()
        elif op == "savepoint":
            nested = s.begin_nested()
            self.savepoints.append(await nested if self.db.is_async else nested)
        elif op in ("release", "savepoint-rollback") and self.savepoints:
            nested = self.savepoints.pop()
            if nested.is_active:
                method = nested.commit if op == "release" else nested.rollback
                result = method()
                if self.db.is_async:
                    await result
        elif op == "bulk-insert":
            await s.execute(
                insert(Document),
                [{"name": self.name(), "file": self.new_file()} for _ in range(rng.randint(1, 3))],
            )
        elif op == "bulk-update" and docs:
            persistent = [d for d in docs if inspect(d).persistent]
            if persistent:
                row = rng.choice(persistent)
                if rng.random() < 0.5:
                    await s.execute(update(Document), [{"id": row.id, "file": self.new_file()}])
                else:
                    await s.execute(update(Document).where(Document.id == row.id).values(file=None))
        elif op == "bulk-delete" and docs:
            persistent = [d for d in docs if inspect(d).persistent]
            if persistent:
                ids = [d.id for d in rng.sample(persistent, min(len(persistent), 2))]
                await s.execute(delete(Document).where(Document.id.in_(ids)))
        elif op == "delete" and docs:
            row = rng.choice(docs)
            if inspect(row).persistent:
                await s.delete(row)
            else:
                s.raw.expunge(row)
        elif op == "orphan" and folders:
            folder = rng.choice(folders)
            if folder.items:
                folder.items.pop(rng.randrange(len(folder.items)))
        elif op == "storage-failure":
            self.faults["storage failure"] += 1
            self.files.fail_on = {self.files.writes + 1}
            try:
                s.add(Document(name=self.name(), file=self.new_file()))
                await s.flush()
            finally:
                self.files.fail_on = set()
        elif op == "db-failure":
            taken = [d for d in docs if inspect(d).persistent]
            if taken:
                self.faults["database failure at commit"] += 1
                s.add(Document(name=rng.choice(taken).name, file=self.new_file()))
                await s._call("commit")
                await self.ended()
        elif op == "cancel":
            await self.flush_with_cancellation()
        elif op == "prune":  # the oldest committed rows, by a bulk DELETE and an ORM delete
            ids = list(await s.scalars(select(Document.id).limit(rng.randint(1, 8))))
            await s.execute(delete(Document).where(Document.id.in_(ids)))
            for folder in await s.scalars(select(Folder).limit(1)):
                await s.delete(folder)  # its items (and their files) go by delete-orphan
        return op

    # -- the rule ------------------------------------------------------------------------------

    def committed_references(self) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        with self.checker.connect() as conn:
            for table, column in [
                (Document.__tablename__, "file"),
                (Document.__tablename__, "attachments"),
                (Item.__tablename__, "file"),
            ]:
                for (value,) in conn.execute(text(f"SELECT {column} FROM {table}")):
                    if value is None:
                        continue
                    value = json.loads(value) if isinstance(value, str) else value
                    for item in value if isinstance(value, list) else [value]:
                        if item is not None:
                            found.add((item["backend"], item["path"]))
        return found

    def open_uploads(self) -> set[tuple[str, str]]:
        files = lifecycle._transaction_files(self.sync_session())
        return set() if files is None else files.uploaded_keys()

    def check(self, step: int, op: str) -> None:
        assert wait_for_cleanup(60), "post-commit work did not drain"
        referenced = self.committed_references()
        self.references = len(referenced)
        stored = {("files", p) for p in self.files.paths()}
        dangling = referenced - stored
        orphans = stored - referenced - self.open_uploads()
        recent = " > ".join(self.trace[-20:])
        assert not dangling, f"step {step} ({op}): dangling {sorted(dangling)} after {recent}"
        assert not orphans, f"step {step} ({op}): orphans {sorted(orphans)} after {recent}"


async def test_lifecycle_fuzzer_keeps_the_rule_after_every_step(
    db: Db, files: FaultyBackend
) -> None:
    seed = SEED + zlib.crc32(f"{db.name}-{db.is_async}".encode()) % 1000
    fuzzer = Fuzzer(db, files, random.Random(seed))
    for step in range(STEPS):
        try:
            op = await fuzzer.step()
        except EXPECTED as exc:
            fuzzer.errors[type(exc).__name__] += 1
            fuzzer.trace.append(f"error {type(exc).__name__}")
            op = "error"
            await fuzzer.recover()
        if op == "drop":
            gc.collect()  # the dropped session's finalizer schedules its cleanup
        fuzzer.check(step, op)
    await fuzzer.session.rollback()
    await fuzzer.session.close()
    fuzzer.check(STEPS, "end")
    assert fuzzer.open_uploads() == set()
    fuzzer.checker.dispose()
    print(
        f"\nfuzz {db.name} ({'async' if db.is_async else 'sync'}) seed {seed}: {STEPS} steps, "
        f"operations {dict(sorted(fuzzer.ops.items()))}, faults {dict(fuzzer.faults)}, "
        f"errors raised and recovered {dict(fuzzer.errors)}, violations 0"
    )
