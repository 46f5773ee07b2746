"""The object commands, and how bad arguments fail: one line, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def storeroom(*args: str, env: dict[str, str], cwd: Path,
              stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "storeroom.cli", *args], input=stdin, capture_output=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}/src:{ROOT}", **env}, cwd=cwd, timeout=120,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"STORAGE__LOCAL__URL": f"file://{tmp_path}/local",
            "STORAGE__OTHER__URL": f"file://{tmp_path}/other"}


def test_put_ls_stat_get_cp_rm(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.7 cli")
    put = storeroom("put", "local:docs/report.pdf", str(source), env=env, cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    assert b"sha256:" in put.stdout
    listing = storeroom("ls", "local", "docs", "--json", env=env, cwd=tmp_path)
    assert b'"path": "docs/report.pdf"' in listing.stdout and b'"size": 12' in listing.stdout
    stat = storeroom("stat", "local:docs/report.pdf", env=env, cwd=tmp_path)
    assert b"size           12" in stat.stdout
    got = storeroom("get", "local:docs/report.pdf", "-", env=env, cwd=tmp_path)
    assert got.stdout == b"%PDF-1.7 cli"
    copied = storeroom("cp", "local:docs/report.pdf", "other:copy.pdf", env=env, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "other" / "copy.pdf").read_bytes() == b"%PDF-1.7 cli"
    piped = storeroom("put", "other:stdin.bin", "-", env=env, cwd=tmp_path, stdin=b"from stdin")
    assert piped.returncode == 0 and (tmp_path / "other" / "stdin.bin").read_bytes() == b"from stdin"
    assert storeroom("rm", "local:docs/report.pdf", env=env, cwd=tmp_path).returncode == 0
    assert not (tmp_path / "local" / "docs" / "report.pdf").exists()
    backends = storeroom("backends", env=env, cwd=tmp_path)
    assert b"local" in backends.stdout and b"other" in backends.stdout


def test_backends_lists_without_secrets(tmp_path: Path) -> None:
    env = {"STORAGE__DOCS__URL": "s3://bucket/", "STORAGE__DOCS__AWS_REGION": "us-east-1",
           "STORAGE__DOCS__AWS_SECRET_ACCESS_KEY": "TOP-SECRET-VALUE-123",
           "STORAGE__DOCS__AWS_ACCESS_KEY_ID": "AKIDSECRETID"}
    listed = storeroom("backends", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert b"s3://bucket/" in listed.stdout
    assert b"TOP-SECRET" not in listed.stdout + listed.stderr
    assert b"AKIDSECRETID" not in listed.stdout + listed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ls", "nope"), b"backend 'nope' is not registered"),
        (("--config", "missing.toml", "backends"), b"configuration file 'missing.toml'"),
        (("put", "local:x.bin", "/definitely/not/here"), b"cannot read"),
        (("stat", "local:missing.txt"), b"does not exist"),
        (("get", "local"), b"expected BACKEND:PATH"),
        (("stat", "local:../escape"), b"unsafe object path"),
        (("migrate", "local", "local"), b"same backend"),
        (("verify",), b"--database and --model are required"),
        (("gc", "--backend", "local", "--database", "sqlite://", "--model", "nomodule:X"),
         b"cannot import 'nomodule'"),
        (("frobnicate",), b"No such command"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], message: bytes
) -> None:
    done = storeroom(*args, env=env, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert b"Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_reads_well(tmp_path: Path, env: dict[str, str]) -> None:
    top = storeroom("--help", env=env, cwd=tmp_path)
    assert top.returncode == 0
    for command in (b"backends", b"ls", b"stat", b"put", b"get", b"rm", b"cp", b"sign",
                    b"migrate", b"verify", b"gc", b"cors"):
        assert command in top.stdout
    migrate = storeroom("migrate", "--help", env=env, cwd=tmp_path)
    assert b"never deleted" in migrate.stdout
