"""The object commands, and how bad arguments fail: one line, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storeroom import checksums

ROOT = Path(__file__).resolve().parents[2]


def storeroom(
    *args: str, env: dict[str, str], cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "storeroom.cli", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}/src:{ROOT}", **env},
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "STORAGE__LOCAL__URL": f"file://{tmp_path}/local",
        "STORAGE__OTHER__URL": f"file://{tmp_path}/other",
    }


def test_put_ls_stat_get_cp_rm(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.7 cli")
    put = storeroom("put", "local:docs/report.pdf", str(source), env=env, cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    assert checksums.DEFAULT_ALGORITHM.encode() + b":" in put.stdout
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
    assert (
        piped.returncode == 0 and (tmp_path / "other" / "stdin.bin").read_bytes() == b"from stdin"
    )
    assert storeroom("rm", "local:docs/report.pdf", env=env, cwd=tmp_path).returncode == 0
    assert not (tmp_path / "local" / "docs" / "report.pdf").exists()
    backends = storeroom("backends", env=env, cwd=tmp_path)
    assert b"local" in backends.stdout and b"other" in backends.stdout


def test_backends_lists_without_secrets(tmp_path: Path) -> None:
    env = {
        "STORAGE__DOCS__URL": "s3://bucket/",
        "STORAGE__DOCS__AWS_REGION": "us-east-1",
        "STORAGE__DOCS__AWS_SECRET_ACCESS_KEY": "TOP-SECRET-VALUE-123",
        "STORAGE__DOCS__AWS_ACCESS_KEY_ID": "AKIDSECRETID",
    }
    listed = storeroom("backends", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert b"s3://bucket/" in listed.stdout
    assert b"TOP-SECRET" not in listed.stdout + listed.stderr
    assert b"AKIDSECRETID" not in listed.stdout + listed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("ls", "nope"),
            b"backend 'nope' is not configured in the environment; configured: 'local', 'other'",
        ),
        (("--config", "missing.toml", "backends"), b"configuration file 'missing.toml'"),
        (("--config", "bad.ini", "backends"), b"unknown configuration format"),
        (("put", "local:x.bin", "/definitely/not/here"), b"cannot read"),
        (("put", "local:x.bin", "adir"), b"'adir' is a directory"),
        (("stat", "local:missing.txt"), b"does not exist"),
        (("rm", "local:missing.txt"), b"does not exist"),
        (("get", "local"), b"expected BACKEND:PATH"),
        (("stat", "local:../escape"), b"unsafe object path"),
        (("sign", "local:a.txt", "--expires", "0"), b"Invalid value for '--expires'"),
        (("migrate", "local", "local"), b"same backend"),
        (("migrate", "local", "other", "--concurrency", "0"), b"Invalid value"),
        (("migrate", "local", "other", "--update-rows"), b"--update-rows needs --model"),
        (("verify",), b"--model MODULE:CLASS is required"),
        (("verify", "--model", "Document"), b"--model: the model must be MODULE:CLASS"),
        (("verify", "--model", "tests.cli.models:Document"), b"--database URL"),
        (
            ("verify", "--model", "tests.cli.models:Document", "--database", "nonsense://"),
            b"storeroom: error: database: ",
        ),
        (
            ("verify", "--model", "tests.cli.models:Nope", "--database", "sqlite://"),
            b"has no class 'Nope'",
        ),
        (
            ("verify", "--model", "tests.cli.test_commands:Path", "--database", "sqlite://"),
            b"Path is not a mapped SQLAlchemy model",
        ),
        (
            ("verify", "--model", "tests.cli.models:Document", "--database", "sqlite://"),
            b"no such table",
        ),
        (
            ("gc", "--backend", "local", "--database", "sqlite://", "--model", "nomodule:X"),
            b"cannot import 'nomodule'",
        ),
        (
            (
                "gc",
                "--backend",
                "local",
                "--database",
                "sqlite://",
                "--model",
                "tests.cli.models:Document",
                "--grace",
                "soon",
            ),
            b"--grace must be a duration",
        ),
        (("gc", "--model", "tests.cli.models:Document"), b"Missing option '--backend'"),
        (("frobnicate",), b"No such command"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], message: bytes
) -> None:
    (tmp_path / "bad.ini").write_text("[storage]\n")
    (tmp_path / "adir").mkdir()
    done = storeroom(*args, env=env, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert b"Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_lists_commands_under_headings_and_each_command_has_help(
    tmp_path: Path, env: dict[str, str]
) -> None:
    top = storeroom("--help", env=env, cwd=tmp_path)
    assert top.returncode == 0
    text = top.stdout.decode()
    for heading, commands in {
        "Objects:": ["backends", "ls", "stat", "put", "get", "rm", "cp", "sign"],
        "Migration:": ["migrate"],
        "Rows and the store:": ["verify", "gc", "jobs"],
        "Security:": ["cors"],
    }.items():
        section = text.split(heading, 1)[1].split("\n\n", 1)[0]
        listed = [line.split()[0] for line in section.strip().splitlines()]
        assert listed == commands, (heading, listed)
    for command in (
        "backends",
        "ls",
        "stat",
        "put",
        "get",
        "rm",
        "cp",
        "sign",
        "migrate",
        "verify",
        "gc",
    ):
        done = storeroom(command, "--help", env=env, cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.startswith(
            b"Usage: storeroom " + command.encode()
        )
    migrate = storeroom("migrate", "--help", env=env, cwd=tmp_path).stdout
    assert b"Source objects are never deleted" in migrate
    assert b"Exit codes: 0 done, 1 some objects failed" in migrate


def test_get_into_a_directory_and_rm_force(tmp_path: Path, env: dict[str, str]) -> None:
    assert (
        storeroom("put", "local:a/b.txt", "-", env=env, cwd=tmp_path, stdin=b"bee").returncode == 0
    )
    got = storeroom("get", "local:a/b.txt", "out/", env=env, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"bee"
    assert not list((tmp_path / "out").glob("*.part"))
    assert storeroom("rm", "-f", "local:never.txt", env=env, cwd=tmp_path).returncode == 0


def test_migrate_dry_run_changes_nothing_then_copies_and_resumes(
    tmp_path: Path, env: dict[str, str]
) -> None:
    for i in range(3):
        assert (
            storeroom(
                "put", f"local:m/{i}.txt", "-", env=env, cwd=tmp_path, stdin=f"m{i}".encode()
            ).returncode
            == 0
        )
    dry = storeroom("migrate", "local", "other", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(b"would copy 3 of 3 objects")
    assert not [p for p in (tmp_path / "other").rglob("*") if p.is_file()]
    assert not (tmp_path / ".storeroom-migrate-local-other.jsonl").exists()
    run = storeroom("migrate", "local", "other", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(b"copied 3 (6 B), already done 0 (adopted 0), failed 0")
    assert (tmp_path / "other" / "m" / "2.txt").read_bytes() == b"m2"
    again = storeroom("migrate", "local", "other", env=env, cwd=tmp_path)
    assert again.stdout.startswith(b"copied 0 (0 B), already done 3")
    dry = storeroom("migrate", "local", "other", "--dry-run", env=env, cwd=tmp_path)
    assert dry.stdout.startswith(b"would copy 0 of 3 objects")
