"""Sharded verify, gc and migrate with real SAQ worker subprocesses, on SQLite and PostgreSQL.

Each run is compared with the single-process command on the same data: the same findings,
the same objects deleted, the same copies. One worker is SIGKILLed while it runs a shard;
the shard is retried by the other worker and the result is still the same. The queue is on
Redis (db 9 unless STOREROOM_TEST_SHARDED_REDIS says otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from storeroom import FileObject, ObstoreBackend, storages
from tests.servers import require_service, stop_process
from tests.servers.databases import POSTGRES, check_connects

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("STOREROOM_TEST_SHARDED_REDIS", "redis://127.0.0.1:6379/9")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_client():  # type: ignore[no-untyped-def]
    try:
        import redis
        import saq  # noqa: F401
    except ImportError as exc:
        require_service("SAQ on Redis", f"install storeroom[saq] ({exc})")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_URL} does not answer ({exc})")
    return client


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/app.db"
    problem = check_connects(POSTGRES.sync)
    if problem:
        require_service("PostgreSQL", problem)
    return POSTGRES.sync


class Setup:
    """Rows, files, a queue name, and the worker subprocesses of one test."""

    def __init__(self, tmp_path: Path, database: str, client) -> None:  # type: ignore[no-untyped-def]
        self.tmp = tmp_path
        self.database = database
        self.client = client
        self.table = f"shard_doc_{uuid.uuid4().hex[:8]}"
        self.queue = f"shards-{uuid.uuid4().hex[:10]}"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            "STOREROOM_CLI_TABLE": self.table,
            "STORAGE__LOCAL__URL": f"file://{tmp_path}/local",
            "STORAGE__COPY__URL": f"file://{tmp_path}/copy",
            "DATABASE_URL": database,
            "STOREROOM_QUEUE_URL": REDIS_URL,
        }

    def seed(self, files: int, monkeypatch: pytest.MonkeyPatch) -> ObstoreBackend:
        """``files`` documents, 3 orphans and 2 dangling rows."""
        monkeypatch.setenv("STOREROOM_CLI_TABLE", self.table)
        sys.modules.pop("tests.cli.models", None)
        from tests.cli.models import Document, UUIDAuditBase

        local = storages.register_backend(
            ObstoreBackend("local", f"file://{self.tmp}/local"), overwrite=True
        )
        engine = create_engine(self.database)
        UUIDAuditBase.metadata.create_all(engine, tables=[Document.__table__])
        with Session(engine) as session:
            session.add_all(
                [
                    Document(
                        name=f"d{i}",
                        file=FileObject(filename=f"f{i}.txt", content=f"file {i} ".encode() * 20),
                    )
                    for i in range(files)
                ]
            )
            session.add_all(
                [
                    Document(
                        name=f"gone{i}",
                        file=FileObject(
                            backend="local", filename="gone.txt", path=f"never/{i}.txt", size=3
                        ),
                    )
                    for i in range(2)
                ]
            )
            session.commit()
        for i in range(3):
            local.put(f"stray/orphan-{i}.bin", b"nobody")
        engine.dispose()
        return local

    def worker(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storeroom.jobs.saq",
                "--url",
                REDIS_URL,
                "--name",
                self.queue,
                "--import",
                "storeroom.jobs.maintenance",
                "--concurrency",
                "1",
                "--sweep",
                "1",
            ],
            env=self.env,
            cwd=self.tmp,
        )
        self.workers.append(process)
        return process

    def storeroom(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "storeroom.cli", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            timeout=timeout,
        )

    def sharded(self, *args: str) -> list[str]:
        return [*args, "--shards", "4", "--queue-name", self.queue]

    def cleanup(self) -> None:
        for worker in self.workers:
            stop_process(worker)
        for key in self.client.scan_iter(f"saq:{self.queue}:*"):
            self.client.delete(key)
        engine = create_engine(self.database)
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {self.table}"))
        engine.dispose()


@pytest.fixture
def setup(tmp_path: Path, database: str, redis_client) -> Iterator[Setup]:  # type: ignore[no-untyped-def]
    current = Setup(tmp_path, database, redis_client)
    try:
        yield current
    finally:
        current.cleanup()


def _findings(out: bytes) -> tuple[list[str], str]:
    lines = out.decode().splitlines()
    return sorted(lines[:-1]), lines[-1]


def test_sharded_verify_and_gc_on_two_workers_match_one_process(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = setup.seed(40, monkeypatch)
    model = ["--model", "tests.cli.models:Document"]
    single = setup.storeroom("verify", *model, "--backend", "local", "--grace", "0s")
    assert single.returncode == 1, single.stderr.decode()
    setup.worker()
    setup.worker()
    sharded = setup.storeroom(
        *setup.sharded("verify", *model, "--backend", "local", "--grace", "0s")
    )
    assert sharded.returncode == 1, sharded.stderr.decode()
    assert _findings(sharded.stdout) == _findings(single.stdout)
    found, summary = _findings(sharded.stdout)
    assert summary == "42 references: dangling 2, mismatched 0, orphans 3"
    assert len([f for f in found if f.startswith("orphan")]) == 3

    gc = setup.storeroom(
        *setup.sharded("gc", *model, "--backend", "local", "--grace", "0s", "--yes")
    )
    assert gc.returncode == 0, gc.stderr.decode()
    lines = gc.stdout.decode().splitlines()
    assert sorted(lines[:-1]) == [f"deleted stray/orphan-{i}.bin" for i in range(3)]
    assert lines[-1] == "3 orphans deleted"
    assert not any(p.path.startswith("stray/") for p in local.list())
    assert len(list(local.list())) == 40


@pytest.mark.xfail(
    strict=False,
    reason="known bug, issue 20: in about one run of two a shard retried after its worker was "
    "killed reports fewer copies than one process (seen: 287 copied + 27 done of 400, rows "
    "updated 314); the sharded migrate must not be trusted until this is found",
)
def test_sharded_migrate_with_a_worker_killed_mid_shard_is_retried_and_complete(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = setup.seed(400, monkeypatch)
    state = setup.tmp / "journals"
    first = setup.worker()
    args = setup.sharded(
        "migrate",
        "local",
        "copy",
        "--model",
        "tests.cli.models:Document",
        "--state",
        str(state),
        "--update-rows",
        "--concurrency",
        "1",
        "--no-follow",
    )
    started = setup.storeroom(*args)
    assert started.returncode == 0, started.stderr.decode()
    run = started.stdout.decode().strip()

    from storeroom.jobs.maintenance import run_status

    # Kill the only worker once it has journaled copies of a shard it has not finished.
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "the worker made no progress"
        assert first.poll() is None, "the worker exited"
        journals = list(state.glob("*.jsonl")) if state.exists() else []
        running = [s for s in run_status(setup.database, run) if s.status == "running"]
        if running and any(j.stat().st_size > 0 for j in journals):
            break
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed = [s.shard for s in run_status(setup.database, run) if s.status == "running"]
    assert killed, "every shard finished before the kill"
    setup.worker()
    setup.worker()
    follow = setup.storeroom("jobs", "status", run, "--follow", timeout=300)
    # Exit code 1: the two dangling rows' files cannot be copied (as in one process).
    assert follow.returncode == 1, follow.stderr.decode() + follow.stdout.decode()
    assert sorted(
        line for line in follow.stderr.decode().splitlines() if line.startswith("failed ")
    ) == [
        f"failed never/{i}.txt: object 'never/{i}.txt' does not exist in backend 'local'"
        for i in range(2)
    ]
    status = run_status(setup.database, run)
    assert all(s.status == "done" for s in status)
    assert all(status[k].attempts >= 2 for k in killed)
    summary = follow.stdout.decode().splitlines()[-1]
    copied = int(summary.split()[1].rstrip(","))
    done = int(summary.split("already done ")[1].split()[0])
    assert copied + done == 400 and summary.endswith("failed 2; rows updated 400"), summary
    copy = ObstoreBackend("copy", f"file://{setup.tmp}/copy")
    assert sorted(i.path for i in copy.list()) == sorted(
        i.path for i in local.list() if not i.path.startswith("stray/")
    )
    engine = create_engine(setup.database)
    with engine.connect() as connection:
        backends = (
            connection.execute(text(f"SELECT file FROM {setup.table} WHERE name LIKE 'd%'"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert len(backends) == 400
    assert {(b if isinstance(b, dict) else json.loads(b))["backend"] for b in backends} == {"copy"}

    # The single-process run over the same data now has nothing left to copy.
    single = setup.storeroom(
        "migrate",
        "local",
        "copy",
        "--model",
        "tests.cli.models:Document",
        "--state",
        str(setup.tmp / "single.jsonl"),
        "--no-progress",
    )
    assert single.returncode == 1  # the two dangling rows' files still fail
    assert single.stdout.decode().startswith("copied 0 ")
