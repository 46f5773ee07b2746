"""The CLI as a new user meets it: help, required sources, nothing created by reading,
errors that name the user's path, content types, one unit, closed pipes, signing set-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.progress import Progress

from storeroom import checksums
from storeroom.cli.formatting import human_size
from storeroom.cli.progress import BinarySpeedColumn
from tests.cli.test_commands import ROOT, storeroom
from tests.servers.moto import MotoServer


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "STORAGE__LOCAL__URL": f"file://{tmp_path}/local",
        "STORAGE__OTHER__URL": f"file://{tmp_path}/other",
    }


def _bare_environment() -> dict[str, str]:
    """os.environ without any storage configuration."""
    return {
        k: v
        for k, v in os.environ.items()
        if not (
            k.startswith("STORAGE")
            or k.endswith("_STORAGE_URI")
            or k in ("UPLOAD_DIR", "STOREROOM_CONFIG")
        )
    }


def test_no_command_prints_help_on_stdout_and_exits_0(tmp_path: Path, env: dict[str, str]) -> None:
    done = storeroom(env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    assert done.stdout.startswith(b"Usage: storeroom [OPTIONS] COMMAND")
    assert b"Objects:" in done.stdout and b"error" not in done.stdout


def test_put_without_source_refuses_and_stores_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    done = storeroom("put", "local:x.pdf", env=env, cwd=tmp_path, stdin=b"")
    assert done.returncode == 2
    assert done.stderr == (
        b"storeroom: error: put local:x.pdf needs a SOURCE: a file to upload, "
        b"or - to read standard input\n"
    )
    assert not (tmp_path / "local" / "x.pdf").exists()
    piped = storeroom("put", "local:x.pdf", "-", env=env, cwd=tmp_path, stdin=b"%PDF")
    assert piped.returncode == 0, piped.stderr
    assert (tmp_path / "local" / "x.pdf").read_bytes() == b"%PDF"


@pytest.mark.parametrize(
    "args",
    [
        ("backends",),
        ("backends", "--json"),
        ("ls", "default"),
        ("stat", "default:a.txt"),
        ("get", "default:a.txt", "-"),
        ("sign", "default:a.txt"),
    ],
)
def test_read_only_commands_create_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    upload_dir = tmp_path / "var" / "app" / "uploads"
    done = subprocess.run(
        [sys.executable, "-m", "storeroom.cli", *args],
        capture_output=True,
        timeout=120,
        env={
            **_bare_environment(),
            "PYTHONPATH": f"{ROOT}/src:{ROOT}",
            "UPLOAD_DIR": str(upload_dir),
        },
        cwd=tmp_path,
    )
    assert not (tmp_path / "var").exists(), (done.stdout, done.stderr)
    if args[0] == "backends":
        assert done.returncode == 0, done.stderr
        assert str(upload_dir).encode() in done.stdout
    else:
        assert done.returncode == 2
        assert (
            done.stderr
            == (
                f"storeroom: error: backend 'default': folder "
                f"'{upload_dir}' does not exist (nothing has been stored there "
                "yet)\n"
            ).encode()
        )


def test_migrate_dry_run_creates_no_destination_folder(tmp_path: Path, env: dict[str, str]) -> None:
    assert storeroom("put", "local:a.txt", "-", env=env, cwd=tmp_path, stdin=b"a").returncode == 0
    assert not (tmp_path / "other").exists()  # put opened only the backend it wrote to
    dry = storeroom("migrate", "local", "other", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(b"would copy 1 of 1 objects (1 B of 1 B) from local to other")
    assert not (tmp_path / "other").exists()
    missing = storeroom("migrate", "local", "nope", "--dry-run", env=env, cwd=tmp_path)
    assert missing.stderr == (
        b"storeroom: error: backend 'nope' is not configured in the "
        b"environment; configured: 'local', 'other'\n"
    )


def test_get_into_a_missing_folder_names_the_users_path(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert storeroom("put", "local:a.txt", "-", env=env, cwd=tmp_path, stdin=b"a").returncode == 0
    done = storeroom("get", "local:a.txt", "nope/a.txt", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        b"storeroom: error: cannot write 'nope/a.txt': folder 'nope' does "
        b"not exist (create it first)\n"
    )
    assert not (tmp_path / "nope").exists()


def test_put_records_the_content_type(tmp_path: Path, moto_server: MotoServer) -> None:
    bucket = moto_server.create_bucket("cli-first-hour")
    env = {
        "STORAGE__S3__URL": f"s3://{bucket}/",
        "STORAGE__S3__AWS_ENDPOINT": moto_server.endpoint,
        "STORAGE__S3__AWS_ACCESS_KEY_ID": moto_server.access_key,
        "STORAGE__S3__AWS_SECRET_ACCESS_KEY": moto_server.secret_key,
        "STORAGE__S3__AWS_REGION": moto_server.region,
    }
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.7")
    cases = [  # (target, source, expected type)
        ("s3:docs/report.pdf", "report.pdf", "application/pdf"),
        ("s3:docs/report", "report.pdf", "application/pdf"),  # from the source's name
        ("s3:docs/blob", "-", "application/octet-stream"),
        ("s3:docs/data.json", "-", "application/json"),
    ]
    for target, source, expected in cases:
        put = storeroom("put", target, source, env=env, cwd=tmp_path, stdin=b"{}")
        assert put.returncode == 0, put.stderr
        assert f"  {expected}  {checksums.DEFAULT_ALGORITHM}:".encode() in put.stdout
        stat = storeroom("stat", target, "--json", env=env, cwd=tmp_path)
        assert f'"content_type": "{expected}"'.encode() in stat.stdout, stat.stdout
    explicit = storeroom(
        "put", "s3:x.bin", "-", "--content-type", "text/csv", env=env, cwd=tmp_path, stdin=b"a,b"
    )
    assert explicit.returncode == 0
    assert (
        b'"content_type": "text/csv"'
        in storeroom("stat", "s3:x.bin", "--json", env=env, cwd=tmp_path).stdout
    )


def test_stat_on_local_disk_says_the_store_keeps_no_type(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert storeroom("put", "local:a.pdf", "-", env=env, cwd=tmp_path, stdin=b"%").returncode == 0
    stat = storeroom("stat", "local:a.pdf", env=env, cwd=tmp_path)
    assert b"content type   - (local-disk stores keep no content type)" in stat.stdout


SPEED = re.compile(r"^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)/s$")


def test_progress_speed_and_summary_use_the_same_binary_units(
    tmp_path: Path, env: dict[str, str]
) -> None:
    clock = [0.0]
    progress = Progress(BinarySpeedColumn(), get_time=lambda: clock[0], disable=True)
    task_id = progress.add_task("copy", total=10 * 2**20)
    column = BinarySpeedColumn()
    assert column.render(progress.tasks[0]).plain == "?"
    progress.update(task_id, advance=2**20)
    clock[0] = 2.0
    progress.update(task_id, advance=5 * 2**20)
    shown = column.render(progress.tasks[0]).plain
    assert shown == "2.5 MiB/s" == f"{human_size(int(2.5 * 2**20))}/s"
    assert progress.tasks[task_id].id == task_id
    assert (
        storeroom("put", "local:a.txt", "-", env=env, cwd=tmp_path, stdin=b"x" * 3000).returncode
        == 0
    )
    run = storeroom("migrate", "local", "other", "--no-progress", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = run.stdout.decode()
    assert "(2.9 KiB)" in summary
    speed = re.search(r"objects/s, ([^)]*)\)", summary)
    assert speed is not None and SPEED.match(speed.group(1)), summary


@pytest.mark.parametrize(
    "args", [("migrate", "local", "other", "--dry-run"), ("ls", "local"), ("backends",)]
)
def test_a_closed_pipe_ends_the_command_quietly(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...]
) -> None:
    (tmp_path / "local" / "f").mkdir(parents=True)
    for i in range(40):  # a local-disk store's objects are plain files
        (tmp_path / "local" / "f" / f"{i:02}.txt").write_bytes(b"x")
    read, write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "storeroom.cli", *args],
        stdout=write,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT}/src:{ROOT}", **env},
        cwd=tmp_path,
    )
    os.close(write)
    os.close(read)  # the reader is gone before the command writes anything
    _, stderr = process.communicate(timeout=120)
    assert (process.returncode, stderr) == (0, b"")


def test_sign_without_signing_setup_names_the_settings_then_works(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert storeroom("put", "local:a.txt", "-", env=env, cwd=tmp_path, stdin=b"a").returncode == 0
    done = storeroom("sign", "local:a.txt", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert b"set STORAGE__LOCAL__SIGNING_SECRET and STORAGE__LOCAL__SIGNING_BASE_URL" in done.stderr
    assert b"docs/cli.md" in done.stderr
    config = tmp_path / "storage.toml"
    config.write_text(f'[[storage.backends]]\nkey = "local"\nurl = "file://{tmp_path}/local"\n')
    from_file = storeroom("--config", str(config), "sign", "local:a.txt", env={}, cwd=tmp_path)
    assert b"signing_secret and signing_base_url in the [[storage.backends]] table" in (
        from_file.stderr
    )
    signed = storeroom(
        "sign",
        "local:a.txt",
        cwd=tmp_path,
        env={
            **env,
            "STORAGE__LOCAL__SIGNING_SECRET": "a-long-random-secret-for-the-test",
            "STORAGE__LOCAL__SIGNING_BASE_URL": "http://127.0.0.1:8000/files",
        },
    )
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(b"http://127.0.0.1:8000/files/local/a.txt?")
