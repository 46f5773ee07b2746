"""``storeroom migrate`` from local disk to moto S3, killed halfway and resumed; verify; gc.

1,000 files referenced by rows are copied; the first run is killed with SIGKILL once about
half are journaled; the second run finishes. Every object lands exactly once (counted as
successful PUTs per key through a recording proxy), is verified, and the rows are switched
to S3. ``verify`` and ``gc`` then find exactly the orphans and dangling rows injected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from storeroom import FileObject, ObstoreBackend, storages
from tests.servers.moto import MotoServer
from tests.servers.proxy import RecordingProxy

ROOT = Path(__file__).resolve().parents[2]
FILES = 1000
pytestmark = pytest.mark.s3


def _env(
    tmp_path: Path,
    proxy: RecordingProxy,
    bucket: str,
    table: str,
    moto: MotoServer,
) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}/src:{ROOT}",
        "STOREROOM_CLI_TABLE": table,
        "STORAGE__LOCAL__URL": f"file://{tmp_path}/local",
        "STORAGE__S3__URL": f"s3://{bucket}/",
        "STORAGE__S3__AWS_ENDPOINT": proxy.endpoint,
        "STORAGE__S3__AWS_ACCESS_KEY_ID": moto.access_key,
        "STORAGE__S3__AWS_SECRET_ACCESS_KEY": moto.secret_key,
        "STORAGE__S3__AWS_REGION": moto.region,
        "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
    }


def _storeroom(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "storeroom.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def adopted(summary: str) -> int:
    """The ``(adopted N)`` count of a migrate summary line."""
    return int(summary.split("(adopted ", 1)[1].split(")", 1)[0])


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_migration_killed_halfway_resumes_without_copying_twice(
    tmp_path: Path, moto_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"cli_doc_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STOREROOM_CLI_TABLE", table)
    sys.modules.pop("tests.cli.models", None)
    from tests.cli.models import Document, UUIDAuditBase

    local = storages.register_backend(
        ObstoreBackend("local", f"file://{tmp_path}/local"), overwrite=True
    )
    engine = create_engine(f"sqlite:///{tmp_path}/app.db")
    UUIDAuditBase.metadata.create_all(engine, tables=[Document.__table__])
    with Session(engine) as session:
        session.add_all(
            [
                Document(
                    name=f"d{i}",
                    file=FileObject(filename=f"f{i}.txt", content=f"file {i} ".encode() * 50),
                )
                for i in range(FILES)
            ]
        )
        session.commit()
    assert len(list(local.list())) == FILES

    proxy = RecordingProxy(moto_server.endpoint).start()
    try:
        env = _env(tmp_path, proxy, s3_bucket, table, moto_server)
        state = tmp_path / "state.jsonl"
        args = [
            "migrate",
            "local",
            "s3",
            "--model",
            "tests.cli.models:Document",
            "--state",
            str(state),
            "--update-rows",
            "--no-progress",
            "--concurrency",
            "4",
        ]
        first = _storeroom(args, env, tmp_path)
        deadline = time.monotonic() + 120
        while _lines(state) < FILES // 2 and first.poll() is None:
            assert time.monotonic() < deadline, "migration made no progress"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        _out, first_err = first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL, first_err.decode()[-2000:]
        journaled = _lines(state)
        assert FILES // 2 <= journaled < FILES

        second = _storeroom(args, env, tmp_path)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err.decode()
        summary = out.decode().splitlines()
        assert summary[0].startswith(f"copied {FILES - journaled - adopted(summary[0])} ")
        assert f"already done {journaled + adopted(summary[0])} " in summary[0]
        assert ", failed 0 in " in summary[0]
        assert summary[1].startswith(f"rows updated {FILES} in ")
    finally:
        proxy.stop()

    landed = Counter(r.path for r in proxy.requests if r.method == "PUT" and r.status == 200)
    assert len(landed) == FILES
    assert max(landed.values()) == 1, [k for k, v in landed.items() if v > 1][:5]
    entries = [json.loads(line) for line in state.read_text().splitlines()]
    assert {e["source"] for e in entries} == {i.path for i in local.list()}
    assert all(e["status"] == "verified" for e in entries)

    with Session(engine) as session:
        rows = session.scalars(select(Document)).all()
    assert {r.file.backend for r in rows} == {"s3"}
    s3 = ObstoreBackend(
        "s3",
        f"s3://{s3_bucket}/",
        aws_endpoint=moto_server.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_region=moto_server.region,
        aws_allow_http=True,
    )
    storages.register_backend(s3, overwrite=True)
    sample = rows[123].file
    assert sample.get_content() == f"file {rows[123].name[1:]} ".encode() * 50
    assert len(list(local.list())) == FILES  # sources are never deleted

    # Inject an orphan, a dangling row, and rows whose size / checksum disagree with the
    # store; verify and gc find exactly those.
    s3.put("stray/orphan.bin", b"nobody references me")
    s3.put("stray/short.bin", b"12345")
    s3.put("stray/wrong.bin", b"abc")
    with Session(engine) as session:
        session.add_all(
            [
                Document(
                    name="dangling",
                    file=FileObject(
                        backend="s3", filename="gone.txt", path="never/uploaded.txt", size=3
                    ),
                ),
                Document(
                    name="short",
                    file=FileObject(
                        backend="s3", filename="short.bin", path="stray/short.bin", size=4
                    ),
                ),
                Document(
                    name="wrong",
                    file=FileObject(
                        backend="s3",
                        filename="wrong.bin",
                        path="stray/wrong.bin",
                        size=3,
                        checksum="sha256:" + "0" * 64,
                    ),
                ),
            ]
        )
        session.commit()
    env["STORAGE__S3__AWS_ENDPOINT"] = moto_server.endpoint
    common = ["--model", "tests.cli.models:Document"]
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "storeroom.cli",
            "verify",
            *common,
            "--backend",
            "s3",
            "--grace",
            "0s",
            "--checksums",
            "--json",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert verify.returncode == 1, verify.stderr.decode()
    found = json.loads(verify.stdout)
    assert [d["path"] for d in found["dangling"]] == ["never/uploaded.txt"]
    assert [o["path"] for o in found["orphans"]] == ["stray/orphan.bin"]
    assert sorted((m["path"], m["kind"]) for m in found["mismatched"]) == [
        ("stray/short.bin", "size"),
        ("stray/wrong.bin", "checksum"),
    ]
    assert found["summary"]["references"] == FILES + 3
    text = subprocess.run(
        [sys.executable, "-m", "storeroom.cli", "verify", *common],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert text.returncode == 1
    assert text.stdout.decode().splitlines()[-1] == (
        f"{FILES + 3} references: dangling 1, mismatched 1, orphans not checked (pass --backend)"
    )
    dry = subprocess.run(
        [sys.executable, "-m", "storeroom.cli", "gc", *common, "--backend", "s3", "--grace", "0s"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    assert b"would delete stray/orphan.bin" in dry.stdout and s3.exists("stray/orphan.bin")
    young = subprocess.run(
        [
            sys.executable,
            "-m",
            "storeroom.cli",
            "gc",
            *common,
            "--backend",
            "s3",
            "--grace",
            "1h",
            "--yes",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    assert b"0 orphans deleted" in young.stdout and s3.exists("stray/orphan.bin")
    real = subprocess.run(
        [
            sys.executable,
            "-m",
            "storeroom.cli",
            "gc",
            *common,
            "--backend",
            "s3",
            "--grace",
            "0s",
            "--yes",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    assert b"deleted stray/orphan.bin" in real.stdout
    assert not s3.exists("stray/orphan.bin")
    assert len(list(s3.list())) == FILES + 2
