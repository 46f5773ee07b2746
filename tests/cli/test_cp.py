"""``storeroom cp``: verified copies through storeroom.backends.transfer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storeroom.cli import main

BIG = bytes(range(256)) * 24_576  # 6 MiB: more than one 1 MiB part, more than one read chunk


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "storage.toml"
    path.write_text(
        "[[storage.backends]]\n"
        f'key = "a"\nurl = "file://{tmp_path}/a"\n'
        "[[storage.backends]]\n"
        f'key = "b"\nurl = "file://{tmp_path}/b"\n'
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big.bin").write_bytes(BIG)
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_cp_between_backends_reads_the_copy_back_and_prints_its_checksum(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "--config", str(config), "cp", "a:big.bin", "b:copy.bin")
    assert code == 0, err
    assert (tmp_path / "b" / "copy.bin").read_bytes() == BIG
    assert f"sha256:{hashlib.sha256(BIG).hexdigest()}" in out and "6.0 MiB" in out


def test_cp_within_a_backend_is_server_side(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, "--config", str(config), "cp", "a:big.bin", "a:again.bin", "--no-read-back"
    )
    assert code == 0, err
    assert "server-side" in out
    assert (tmp_path / "a" / "again.bin").read_bytes() == BIG


def test_cp_onto_itself_or_from_nothing_fails_in_one_line(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "--config", str(config), "cp", "a:big.bin", "a:big.bin")
    assert code == 2 and "onto itself" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "--config", str(config), "cp", "a:missing.bin", "b:x.bin")
    assert code == 2 and "'missing.bin'" in err
