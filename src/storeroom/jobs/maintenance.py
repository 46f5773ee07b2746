"""Sharded verify, gc and migrate: one job per shard on the job queue, progress in one table.

When one machine is not enough, ``storeroom verify|gc|migrate --shards N --queue URL`` splits
the work by path hash (:class:`~storeroom.orm.maintenance.Shard`: a reference and the object
it points at always fall in the same shard) into N jobs on SAQ
(:mod:`storeroom.jobs.saq`), which any number of workers run::

    python -m storeroom.jobs.saq --url redis://... --import storeroom.jobs.maintenance

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
    func,
    insert,
    select,
    update,
)

from storeroom.errors import ConfigurationError
from storeroom.jobs import job

__all__ = [
    "JOB",
    "KINDS",
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
_SECTIONS = {
    "verify": ("dangling", "mismatched", "orphans"),
    "gc": ("deleted", "kept"),
    "migrate": ("failed",),
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

    @property
    def finished(self) -> bool:
        """Done, or failed with no attempt left."""
        return self.status == "done" or (self.status == "failed" and self.attempts >= self.retries)


def _engine(database: str | Engine) -> Engine:
    return database if isinstance(database, Engine) else create_engine(database)


def start_run(
    kind: str,
    params: Mapping[str, Any],
    *,
    shards: int,
    database: str,
    queue: Any,
    retries: int = 5,
    heartbeat: int = 10,
    send_database: bool = True,
) -> str:
    """Create the progress rows of a new run and enqueue one job per shard; returns its id.

    ``params`` are the command's options (JSON-serialisable), ``database`` the application's
    database URL (workers connect to it), ``queue`` a :class:`~storeroom.jobs.saq.SaqQueue`.
    A shard's job gets ``retries`` attempts. With ``send_database=False`` the URL (which may
    hold a password) is not put in the jobs: workers use their own ``DATABASE_URL``.
    """
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


def run_status(database: str | Engine, run: str) -> list[ShardStatus]:
    """The shards of ``run``, in order; ConfigurationError if there is no such run."""
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
    return [
        ShardStatus(
            r["shard"],
            r["status"],
            r["attempts"],
            r["retries"],
            json.loads(r["counts"] or "{}"),
            r["error"],
        )
        for r in rows
    ]


def wait_for_run(
    database: str | Engine,
    run: str,
    *,
    timeout: float | None = None,
    on_progress: Callable[[list[ShardStatus]], None] | None = None,
    poll: float = 0.5,
) -> list[ShardStatus]:
    """Poll :func:`run_status` until every shard is finished (or ``timeout`` seconds pass)."""
    engine = _engine(database)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            status = run_status(engine, run)
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

    def add(self, section: str, path: str | None, entry: Mapping[str, Any]) -> None:
        self.batch.append(
            {
                "run": self.run,
                "shard": self.shard,
                "attempt": self.attempt,
                "section": section,
                "path": path,
                "entry": json.dumps(entry),
            }
        )
        if len(self.batch) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            with self.engine.begin() as connection:
                connection.execute(insert(findings_table), self.batch)
            self.batch.clear()


def _registry(params: Mapping[str, Any]) -> Any:
    from storeroom.cli.app import Context

    config = params.get("config")
    return Context(Path(config) if config else None).registry


def _columns(params: Mapping[str, Any]) -> list[Any]:
    from storeroom.cli.rows import columns_of, load_model

    return [
        col
        for spec in params.get("models") or ()
        for col in columns_of(load_model(spec), params.get("column"))
    ]


def _verify(params: Mapping[str, Any], shard: Any, sessions: Any, rec: _Recorder) -> dict[str, Any]:
    from storeroom.orm.maintenance import iter_findings

    summary: dict[str, Any] = {}
    with sessions() as session:
        for section, entry in iter_findings(
            session,
            _columns(params),
            _registry(params),
            orphans_in=params.get("backend"),
            prefix=params.get("prefix", ""),
            grace=timedelta(seconds=params.get("grace", 3600)),
            checksums=bool(params.get("checksums")),
            shard=shard,
        ):
            if section == "summary":
                summary = entry
            else:
                rec.add(section, entry.get("path"), entry)
    return summary


def _gc(params: Mapping[str, Any], shard: Any, sessions: Any, rec: _Recorder) -> dict[str, Any]:
    from storeroom.orm.maintenance import remove_orphans

    counts = {"deleted": 0, "kept": 0}
    registry = _registry(params)
    for info, removed in remove_orphans(
        sessions,
        _columns(params),
        params["backend"],
        prefix=params.get("prefix", ""),
        grace=timedelta(seconds=params.get("grace", 3600)),
        registry=registry,
        shard=shard,
    ):
        section = "deleted" if removed else "kept"
        counts[section] += 1
        rec.add(
            section, info.path, {"backend": params["backend"], "path": info.path, "size": info.size}
        )
        rec.flush()  # a deletion is recorded at once: a retry cannot find it again
    return counts


def _migrate(
    params: Mapping[str, Any], shard: Any, sessions: Any, rec: _Recorder
) -> dict[str, Any]:
    from storeroom.orm import migration
    from storeroom.orm.maintenance import ReferenceScan

    registry = _registry(params)
    src, dst = registry.get_backend(params["source"]), registry.get_backend(params["destination"])
    columns = _columns(params)
    journal = (
        Path(params["state_dir"])
        / f"{src.key}-{dst.key}-shard-{shard.index}-of-{shard.count}.jsonl"
    )
    with ReferenceScan(columns, registry=registry, shard=shard) as scan:
        if columns:
            with sessions() as session:
                scan.read_rows(session, list_ahead={})
            items: Any = migration.plan_scan(scan, src.key)
        else:
            items = (
                migration.CopyItem(i.path, i.path, i.size, None, i.content_type)
                for i in scan.objects(src, prefix=params.get("prefix", ""))
            )
        with migration.MigrationState(journal, src.key, dst.key) as state:
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
                for column in columns:
                    report.rows_updated += migration.update_rows(
                        sessions,
                        column,
                        src.key,
                        dst.key,
                        state,
                        batch_size=params.get("batch_size", 100),
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
        "rows_updated": report.rows_updated,
    }


_RUNNERS = {"verify": _verify, "gc": _gc, "migrate": _migrate}
_KEEP_EARLIER = {"gc"}  # what an earlier attempt did (deletions) stays true


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
    engine = create_engine(database)
    where = (shards_table.c.run == run) & (shards_table.c.shard == index)
    attempt = uuid.uuid4().hex
    try:
        with engine.begin() as connection:
            status = connection.execute(select(shards_table.c.status).where(where)).scalar()
            if status is None or status == "done":
                return  # an unknown run, or a shard delivered again after it finished
            connection.execute(
                update(shards_table)
                .where(where)
                .values(
                    status="running",
                    attempt=attempt,
                    attempts=shards_table.c.attempts + 1,
                    error=None,
                    updated=time.time(),
                )
            )
        recorder = _Recorder(engine, run, index, attempt)
        sessions = sessionmaker(engine, expire_on_commit=False)
        try:
            counts = _RUNNERS[kind](payload["params"], shard, sessions, recorder)
            recorder.flush()
        except BaseException as exc:
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
        with engine.begin() as connection:
            if kind not in _KEEP_EARLIER:
                connection.execute(
                    delete(findings_table).where(
                        findings_table.c.run == run,
                        findings_table.c.shard == index,
                        findings_table.c.attempt != attempt,
                    )
                )
            else:
                counts = _recount(connection, run, index)
            connection.execute(
                update(shards_table)
                .where(where)
                .values(status="done", counts=json.dumps(counts), updated=time.time())
            )
    finally:
        engine.dispose()


def _recount(connection: Any, run: str, shard: int) -> dict[str, Any]:
    """gc's counts over every attempt of the shard (each path once)."""
    counts = {"deleted": 0, "kept": 0}
    for section, number in connection.execute(
        select(findings_table.c.section, func.count(func.distinct(findings_table.c.path)))
        .where(findings_table.c.run == run, findings_table.c.shard == shard)
        .group_by(findings_table.c.section)
    ):
        counts[section] = number
    return counts
