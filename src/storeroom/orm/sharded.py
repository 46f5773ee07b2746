"""Sharded verify, gc and migrate: one job per shard on the job queue, progress in one table.

When one machine is not enough, ``storeroom verify|gc|migrate --shards N --queue URL`` splits
the work by path hash (:class:`~storeroom.orm.maintenance.Shard`: a reference and the object
it points at always fall in the same shard) into N jobs on SAQ
(:mod:`storeroom.jobs.saq`), which any number of workers run::

    python -m storeroom.jobs.saq --url redis://... --import storeroom.orm.sharded

Each shard runs the single-process code on its paths only (a
:class:`~storeroom.orm.maintenance.ReferenceScan` with a shard filter) and records its
progress and findings in two tables of the application's database
(``storeroom_maintenance_shards`` and ``storeroom_maintenance_findings``), which
:func:`run_status` and :func:`run_findings` read: one view of the whole run, whichever
machine ran which shard.

A worker killed mid-shard stops refreshing its job's heartbeat; SAQ's sweep on a surviving
worker queues the job again, and the new attempt starts the shard over: verify's findings of
the dead attempt are discarded when the new one completes, gc finds only what the dead one
had not deleted yet, and migrate resumes from the shard's journal. So the result is the same
as one process's: the same findings (ordered by path within each section), the same objects
deleted, the same copies. Workers must see the same storage configuration (environment or
``--config`` file), import the models (run them where ``--model`` imports), and, for
migrate, share the directory of the journals.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)

from storeroom.errors import ConfigurationError
from storeroom.jobs import job

__all__ = [
    "JOB",
    "KINDS",
    "HEARTBEAT",
    "STALE_AFTER",
    "ShardStatus",
    "findings_table",
    "run_counts",
    "run_findings",
    "run_shard",
    "run_status",
    "shards_table",
    "start_run",
    "wait_for_run",
]

JOB = "storeroom.maintenance.shard"
"""The job name every shard is enqueued under."""

KINDS = ("verify", "gc", "migrate")

metadata = MetaData()
shards_table = Table(
    "storeroom_maintenance_shards",
    metadata,
    Column("run", String(64), primary_key=True),
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("shards", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # queued, running, done, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("retries", Integer, nullable=False),
    Column("attempt", String(32)),
    Column("counts", Text),
    Column("error", Text),
    Column("updated", Float),
)
"""One row per shard of a run: its state, attempts and counts (JSON)."""

findings_table = Table(
    "storeroom_maintenance_findings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run", String(64), nullable=False, index=True),
    Column("shard", Integer, nullable=False),
    Column("attempt", String(32), nullable=False),
    Column("section", String(16), nullable=False),
    Column("path", Text),
    Column("entry", Text, nullable=False),
)
"""What shards found or did, one row each (a JSON ``entry``, the report's dict)."""

_BATCH = 500  # findings written per transaction
HEARTBEAT = 2.0
"""Seconds between two refreshes of a running shard's ``updated`` time by its worker."""
STALE_AFTER = 60.0
"""A running shard whose worker has not refreshed it for this many seconds is stalled
(and failed if it was its last attempt): its worker died or lost the database."""
_ROWS = "rows"  # findings section: rows a batch of update_rows repointed, kept across attempts
_SECTIONS = {
    "verify": ("dangling", "mismatched", "orphans"),
    # skipped: SkippedObject of kind "unsafe" or "locked"; failed: of kind "failed"
    "gc": ("deleted", "kept", "skipped", "failed"),
    # left: files update_rows left on the source for a rerun (its on_skipped)
    "migrate": ("failed", "left"),
}


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """One shard as the progress table has it."""

    shard: int
    status: str
    attempts: int
    retries: int
    counts: dict[str, Any]
    error: str | None
    updated: float | None = None
    """When the shard's row last changed or its worker last refreshed it (epoch seconds)."""

    @property
    def finished(self) -> bool:
        """Done, or failed with no attempt left."""
        return self.status == "done" or (self.status == "failed" and self.attempts >= self.retries)


def _shard_status(row: Any, now: float, stale_after: float) -> ShardStatus:
    """A progress row as seen at ``now``: a running shard without a heartbeat for
    ``stale_after`` seconds is stalled, or failed if that was its last attempt."""
    status, error, updated = row["status"], row["error"], row["updated"]
    if status == "running" and updated is not None and now - updated > stale_after:
        error = f"no heartbeat from its worker for {now - updated:.0f} s (the worker died?)"
        status = "failed" if row["attempts"] >= row["retries"] else "stalled"
    return ShardStatus(
        row["shard"],
        status,
        row["attempts"],
        row["retries"],
        json.loads(row["counts"] or "{}"),
        error,
        updated,
    )


def _engine(database: str | Engine) -> Engine:
    return database if isinstance(database, Engine) else _named_engine(database)


def _named_engine(database: str, **options: Any) -> Engine:
    """An engine for ``database`` whose PostgreSQL connections are named
    :data:`~storeroom.orm.maintenance.MAINTENANCE_APPLICATION_NAME` (a gc does not wait
    for their transactions: they never upload)."""
    from sqlalchemy.engine import make_url

    if make_url(database).get_backend_name() == "postgresql":
        from storeroom.orm.maintenance import MAINTENANCE_APPLICATION_NAME

        connect_args = {**options.pop("connect_args", {})}
        connect_args["application_name"] = MAINTENANCE_APPLICATION_NAME
        options["connect_args"] = connect_args
    return create_engine(database, **options)


def start_run(
    kind: str,
    params: Mapping[str, Any],
    *,
    shards: int,
    database: str,
    queue: Any,
    retries: int | None = None,
    send_database: bool = True,
) -> str:
    """Create the progress rows of a new run and enqueue one job per shard; returns its id.

    ``params`` are the command's options (JSON-serialisable), ``database`` the application's
    database URL (workers connect to it), ``queue`` a :class:`~storeroom.jobs.saq.SaqQueue`.
    A shard's job gets ``retries`` attempts (default: the queue's ``retries``, 5 without
    one); the progress table must know the queue's count to tell when a shard is given
    up. With ``send_database=False`` the URL (which may hold a password) is not put in
    the jobs: workers use their own ``DATABASE_URL``.
    """
    if retries is None:
        retries = int(getattr(queue, "retries", 5))
    if kind not in KINDS:
        raise ConfigurationError(f"unknown sharded run {kind!r}; choose one of {KINDS}")
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ConfigurationError(f"shards must be a whole number >= 1, got {shards!r}")
    run = f"{kind}-{uuid.uuid4().hex[:12]}"
    engine = _engine(database)
    try:
        metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(
                insert(shards_table),
                [
                    {
                        "run": run,
                        "shard": k,
                        "shards": shards,
                        "kind": kind,
                        "status": "queued",
                        "attempts": 0,
                        "retries": retries,
                        "updated": time.time(),
                    }
                    for k in range(shards)
                ],
            )
    finally:
        if not isinstance(database, Engine):
            engine.dispose()
    for k in range(shards):
        payload = {
            "run": run,
            "shard": k,
            "shards": shards,
            "kind": kind,
            "database": database if send_database else None,
            "params": dict(params),
        }
        queue.enqueue(JOB, payload, key=f"{run}-{k}")
    return run


def run_status(
    database: str | Engine, run: str, *, stale_after: float = STALE_AFTER
) -> list[ShardStatus]:
    """The shards of ``run``, in order; ConfigurationError if there is no such run.

    A shard whose worker has not refreshed it for ``stale_after`` seconds is ``stalled``
    (the queue should run it again once a live worker sweeps), or ``failed`` when that was
    its last attempt (the queue gives up on it).
    """
    engine = _engine(database)
    try:
        with engine.connect() as connection:
            rows = (
                connection.execute(
                    select(shards_table)
                    .where(shards_table.c.run == run)
                    .order_by(shards_table.c.shard)
                )
                .mappings()
                .all()
            )
    finally:
        if not isinstance(database, Engine):
            engine.dispose()
    if not rows:
        raise ConfigurationError(
            f"no sharded run {run!r} in this database; the id is printed when the run starts"
        )
    now = time.time()
    return [_shard_status(r, now, stale_after) for r in rows]


def wait_for_run(
    database: str | Engine,
    run: str,
    *,
    timeout: float | None = None,
    on_progress: Callable[[list[ShardStatus]], None] | None = None,
    poll: float = 0.5,
    stale_after: float = STALE_AFTER,
) -> list[ShardStatus]:
    """Poll :func:`run_status` until every shard is finished (or ``timeout`` seconds pass).

    A shard given up by the queue (its last attempt's worker died) is finished as failed
    once it has had no heartbeat for ``stale_after`` seconds.
    """
    engine = _engine(database)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            status = run_status(engine, run, stale_after=stale_after)
            if on_progress is not None:
                on_progress(status)
            if all(s.finished for s in status):
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
            time.sleep(poll)
    finally:
        if not isinstance(database, Engine):
            engine.dispose()


def run_findings(database: str | Engine, run: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(section, entry)`` of every finding of ``run``'s completed attempts, streamed.

    Sections come in the single-process order, entries by path within a section.
    """
    engine = _engine(database)
    try:
        with engine.connect() as connection:
            kind = connection.execute(
                select(shards_table.c.kind).where(shards_table.c.run == run).limit(1)
            ).scalar()
            if kind is None:
                raise ConfigurationError(f"no sharded run {run!r} in this database")
            for section in _SECTIONS[kind]:
                rows = connection.execute(
                    select(findings_table.c.entry)
                    .where(findings_table.c.run == run, findings_table.c.section == section)
                    .order_by(findings_table.c.path, findings_table.c.id)
                    .execution_options(yield_per=1000)
                )
                for (entry,) in rows:
                    yield section, json.loads(entry)
    finally:
        if not isinstance(database, Engine):
            engine.dispose()


def run_counts(status: Sequence[ShardStatus]) -> dict[str, int]:
    """The shards' counts added up."""
    total: dict[str, int] = {}
    for shard in status:
        for name, value in shard.counts.items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
    return total


# -- the worker's side -----------------------------------------------------------------


class _Recorder:
    """Writes one attempt's findings, a batch per transaction."""

    def __init__(self, engine: Engine, run: str, shard: int, attempt: str) -> None:
        self.engine, self.run, self.shard, self.attempt = engine, run, shard, attempt
        self.batch: list[dict[str, Any]] = []

    def row(self, section: str, path: str | None, entry: Mapping[str, Any]) -> dict[str, Any]:
        """The findings row of ``entry``, as this attempt writes it."""
        return {
            "run": self.run,
            "shard": self.shard,
            "attempt": self.attempt,
            "section": section,
            "path": path,
            "entry": json.dumps(entry),
        }

    def add(self, section: str, path: str | None, entry: Mapping[str, Any]) -> None:
        self.batch.append(self.row(section, path, entry))
        if len(self.batch) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            with self.engine.begin() as connection:
                connection.execute(insert(findings_table), self.batch)
            self.batch.clear()


@dataclass(frozen=True, slots=True)
class _Work:
    """What a shard's runner gets: its options, its paths, and the database."""

    params: Mapping[str, Any]
    shard: Any  # storeroom.orm.maintenance.Shard
    reading: Any  # sessionmaker for reading rows in pages
    writing: Any  # sessionmaker for transactions that write (immediate on SQLite)
    recorder: _Recorder


def _registry(params: Mapping[str, Any]) -> Any:
    """The backends of the run's configuration file, or of the worker's environment."""
    from storeroom import config
    from storeroom.registry import StorageRegistry

    registry = StorageRegistry()
    path = params.get("config")
    if path:
        config.configure_from_file(Path(path), registry)
    else:
        config.configure_from_env(registry)
    return registry


def _columns(params: Mapping[str, Any]) -> list[Any]:
    from storeroom.orm.columns import import_model, stored_columns

    return [
        col
        for spec in params.get("models") or ()
        for col in stored_columns(import_model(spec), params.get("column"))
    ]


def _verify(work: _Work) -> dict[str, Any]:
    from storeroom.orm.maintenance import iter_findings

    params = work.params
    summary: dict[str, Any] = {}
    with work.reading() as session:
        for section, entry in iter_findings(
            session,
            _columns(params),
            _registry(params),
            orphans_in=params.get("backend"),
            prefix=params.get("prefix", ""),
            grace=timedelta(seconds=params.get("grace", 3600)),
            checksums=bool(params.get("checksums")),
            shard=work.shard,
        ):
            if section == "summary":
                summary = entry
            else:
                work.recorder.add(section, entry.get("path"), entry)
    return summary


def _gc(work: _Work) -> dict[str, Any]:
    from storeroom.orm.maintenance import SkippedObject, remove_orphans

    params, rec = work.params, work.recorder
    counts = {"deleted": 0, "kept": 0, "skipped": 0, "failed": 0}
    for info, removed in remove_orphans(
        work.reading,
        _columns(params),
        params["backend"],
        prefix=params.get("prefix", ""),
        grace=timedelta(seconds=params.get("grace", 3600)),
        registry=_registry(params),
        shard=work.shard,
    ):
        entry: dict[str, Any] = {"backend": params["backend"], "path": info.path, "size": info.size}
        if removed:
            section = "deleted"
        elif isinstance(info, SkippedObject):
            section = "failed" if info.kind == "failed" else "skipped"
            entry.update(kind=info.kind, reason=info.reason)
        else:
            section = "kept"
        counts[section] += 1
        rec.add(section, info.path, entry)
        rec.flush()  # a deletion is recorded at once: a retry cannot find it again
    return counts


def _migrate(work: _Work) -> dict[str, Any]:
    from storeroom.orm import migration
    from storeroom.orm.maintenance import ReferenceScan

    params, shard, rec = work.params, work.shard, work.recorder
    counts = {"left": 0}  # files update_rows left on the source (a rerun may switch them)
    registry = _registry(params)
    src, dst = registry.get_backend(params["source"]), registry.get_backend(params["destination"])
    columns = _columns(params)
    journal = (
        Path(params["state_dir"])
        / f"{src.key}-{dst.key}-shard-{shard.index}-of-{shard.count}.jsonl"
    )
    with (
        ReferenceScan(columns, registry=registry, shard=shard) as scan,
        migration.MigrationState(journal, src.key, dst.key) as state,
    ):
        if columns:
            with work.reading() as session:
                scan.read_rows(session, list_ahead={})
            # Files whose rows an earlier attempt repointed are planned too (already done).
            items: Any = migration.plan_scan(scan, src.key, state)
        else:
            items = migration.plan_listing(scan, src, params.get("prefix", ""))
        report = asyncio.run(
            migration.copy_objects(
                src,
                dst,
                items,
                state=state,
                concurrency=params.get("concurrency"),
                verify_read=params.get("verify_read", True),
            )
        )
        if params.get("update_rows"):

            def left(path: str, reason: str) -> None:
                rec.add("left", path, {"path": path, "reason": reason})
                counts["left"] += 1

            for column in columns:
                # Each batch's count is written in the batch's own transaction, so rows an
                # attempt killed later repointed are counted once, by the attempt that did it.
                migration.update_rows(
                    work.writing,
                    column,
                    src.key,
                    dst.key,
                    state,
                    batch_size=params.get("batch_size", 100),
                    record_batch=lambda changed: insert(findings_table).values(
                        rec.row(_ROWS, None, {"rows": changed})
                    ),
                    on_skipped=left,
                )
    for path, reason in report.failed:
        rec.add("failed", path, {"path": path, "reason": reason})
    return {
        "planned": report.planned,
        "copied": report.copied,
        "skipped": report.skipped,
        "adopted": report.adopted,
        "failed": len(report.failed),
        "bytes_copied": report.bytes_copied,
        "variants_not_made": report.variants_not_made,
        "left": counts["left"],
    }


_RUNNERS: dict[str, Callable[[_Work], dict[str, Any]]] = {
    "verify": _verify,
    "gc": _gc,
    "migrate": _migrate,
}
_KEEP_EARLIER = {"gc"}  # what an earlier attempt did (deletions) stays true


def _engines(database: str, kind: str) -> tuple[Engine, Engine]:
    """The worker's engines: (for writes, for reads); the same one except on SQLite.

    On PostgreSQL, the connections of a gc or verify shard are named
    :data:`~storeroom.orm.maintenance.MAINTENANCE_APPLICATION_NAME`: the shards of a gc
    then need not spare the orphans changed since one of the others' transactions began
    (their reads, progress and heartbeats never upload).

    On SQLite a write transaction begins with ``BEGIN IMMEDIATE``. Two workers whose
    transactions read and then write (a batch of ``update_rows``) would otherwise both hold
    a read lock and want the write lock: SQLite then fails one of them at once ("database
    is locked"), which failed the shard. Immediate transactions queue for the write lock
    instead (up to a minute); reads stay deferred, so a long scan does not block writers.
    """
    engine = _named_engine(database) if kind in ("gc", "verify") else create_engine(database)
    if engine.dialect.name != "sqlite":
        return engine, engine
    engine.dispose()
    reader = create_engine(database, connect_args={"timeout": 60})
    writer = create_engine(database, connect_args={"timeout": 60})

    @event.listens_for(writer, "connect")
    def _manual(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN is deferred

    @event.listens_for(writer, "begin")
    def _immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return writer, reader


class _Heartbeat:
    """Refreshes the shard's ``updated`` time every :data:`HEARTBEAT` seconds while it runs."""

    def __init__(self, engine: Engine, where: Any, attempt: str) -> None:
        self._engine, self._where, self._attempt = engine, where, attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="storeroom-shard-heartbeat")
        self._thread.daemon = True
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                with self._engine.begin() as connection:
                    connection.execute(
                        update(shards_table)
                        .where(self._where, shards_table.c.attempt == self._attempt)
                        .values(updated=time.time())
                    )
            except Exception:  # a missed beat is retried at the next one
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _attempts(recorded: int) -> tuple[int, int | None]:
    """(this attempt's number, attempts the queue allows or None) for a shard ``recorded``
    times started: SAQ's own count when SAQ runs it (it counts attempts killed before they
    could record anything)."""
    from storeroom.jobs.saq import current_attempt

    saq = current_attempt()
    if saq is None:
        return recorded + 1, None
    return max(recorded + 1, saq[0]), saq[1]


@job(JOB)
def run_shard(payload: Mapping[str, Any]) -> None:
    """Run one shard of a sharded verify, gc or migrate (the job's handler; idempotent)."""
    from sqlalchemy.orm import sessionmaker

    from storeroom.orm.maintenance import Shard

    run, index, kind = payload["run"], int(payload["shard"]), payload["kind"]
    shard = Shard(index, int(payload["shards"]))
    database = payload.get("database") or os.environ.get("DATABASE_URL")
    if not database:
        raise ConfigurationError(
            f"shard {index} of run {run!r} names no database and DATABASE_URL is not set in "
            "this worker; set it to the application's database URL"
        )
    engine, reader = _engines(database, kind)
    where = (shards_table.c.run == run) & (shards_table.c.shard == index)
    attempt = uuid.uuid4().hex
    try:
        with engine.begin() as connection:
            found = connection.execute(
                select(
                    shards_table.c.status, shards_table.c.attempts, shards_table.c.retries
                ).where(where)
            ).first()
            if found is None or found.status == "done":
                return  # an unknown run, or a shard delivered again after it finished
            number, allowed = _attempts(found.attempts)
            connection.execute(
                update(shards_table)
                .where(where)
                .values(
                    status="running",
                    attempt=attempt,
                    attempts=number,
                    retries=allowed if allowed is not None else found.retries,
                    error=None,
                    updated=time.time(),
                )
            )
        recorder = _Recorder(engine, run, index, attempt)
        work = _Work(
            payload["params"],
            shard,
            sessionmaker(reader, expire_on_commit=False),
            sessionmaker(engine, expire_on_commit=False),
            recorder,
        )
        heartbeat = _Heartbeat(engine, where, attempt)
        try:
            counts = _RUNNERS[kind](work)
            recorder.flush()
        except BaseException as exc:
            heartbeat.stop()
            with engine.begin() as connection:
                connection.execute(
                    update(shards_table)
                    .where(where)
                    .values(
                        status="failed",
                        error=f"{type(exc).__name__}: {exc}"[:2000],
                        updated=time.time(),
                    )
                )
            raise
        heartbeat.stop()
        _finish(engine, run, index, attempt, kind, counts)
    finally:
        engine.dispose()
        reader.dispose()


def _finish(
    engine: Engine, run: str, index: int, attempt: str, kind: str, counts: dict[str, Any]
) -> None:
    """Mark the shard done with its counts; drop what earlier attempts found (not did)."""
    mine = (findings_table.c.run == run) & (findings_table.c.shard == index)
    with engine.begin() as connection:
        if kind in _KEEP_EARLIER:
            counts = _recount(connection, run, index)
        else:
            connection.execute(
                delete(findings_table).where(
                    mine, findings_table.c.attempt != attempt, findings_table.c.section != _ROWS
                )
            )
        if kind == "migrate":
            counts["rows_updated"] = sum(
                json.loads(entry)["rows"]
                for (entry,) in connection.execute(
                    select(findings_table.c.entry).where(mine, findings_table.c.section == _ROWS)
                )
            )
        connection.execute(
            update(shards_table)
            .where((shards_table.c.run == run) & (shards_table.c.shard == index))
            .values(status="done", counts=json.dumps(counts), updated=time.time())
        )


def _recount(connection: Any, run: str, shard: int) -> dict[str, Any]:
    """gc's counts over every attempt of the shard (each path once; an object skipped or
    failed by one attempt and deleted by a later one counts as deleted only)."""
    found = findings_table.c
    mine = (found.run == run) & (found.shard == shard)
    deleted = select(found.path).where(mine, found.section == "deleted")
    counts = {"deleted": 0, "kept": 0, "skipped": 0, "failed": 0}
    for section, number in connection.execute(
        select(found.section, func.count(func.distinct(found.path)))
        .where(mine, or_(found.section.in_(("deleted", "kept")), found.path.not_in(deleted)))
        .group_by(found.section)
    ):
        counts[section] = number
    return counts
