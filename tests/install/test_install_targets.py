"""Each install target is enough for what it names, in a fresh virtualenv.

The wheel is built from this checkout (not an editable install) and installed, with its
dependencies from PyPI, into new virtualenvs: one with the base package only, and one per
extra of pyproject.toml (except ``all``, ``test`` and ``bench``) with only that extra. The
base one runs every Python block of README.md on its own, twice, and must not be able to
import any extra's packages; the demo one starts ``python -m storeroom.demo`` and fetches its
page; every other extra runs a program (``EXTRA_PROGRAMS``, most in ``programs/``) that uses
what the extra is for, offline. A dependency that only the test extra brings in (greenlet
was one; requests for google-auth's token refresh another) fails here. Seventeen
virtualenvs, built three at a time.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from tests.servers import free_port, require_service, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "programs"
# Extras that are not install targets of their own: every extra, the test tools, the
# comparison library of the benchmarks.
NOT_TARGETS = {"all", "test", "bench"}
REDIS_URL = os.environ.get("STOREROOM_TEST_REDIS", "redis://127.0.0.1:6379/7")
BLOCK = re.compile(r"(?P<marker><!--\s*skip:[^>]*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)

# Building the virtualenvs counts against the first test's timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _run(
    *args: str | Path,
    cwd: Path | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _clean_env() -> dict[str, str]:
    """The environment without this checkout or the test virtualenv on the path."""
    return {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }


def _pip(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = _run(sys.executable, "-m", "pip", "--disable-pip-version-check", *args, env=_clean_env())
    if done.returncode != 0 and any(
        s in done.stderr
        for s in (
            "Could not fetch",
            "NewConnectionError",
            "Temporary failure in name resolution",
            "No matching distribution found for hatchling",
        )
    ):
        require_service("PyPI", done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", dist, ROOT)
    (built,) = dist.glob("storeroom-*.whl")
    return built


def _venv(tmp_path_factory: pytest.TempPathFactory, name: str, requirement: str) -> Path:
    """A new virtualenv (no pip of its own) with ``requirement`` installed into it.

    ``--no-compile``: pip would compile every installed module to bytecode, half the time of
    an install here (botocore alone has thousands of files); the programs compile what they
    import.
    """
    home = tmp_path_factory.mktemp(name)
    created = _run(sys.executable, "-m", "venv", "--without-pip", home / "venv")
    assert created.returncode == 0, created.stderr
    python = home / "venv" / "bin" / "python"
    _pip("--python", python, "install", "--quiet", "--no-compile", requirement)
    return python


def _install_and_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, requirement: str
) -> tuple[Path, subprocess.CompletedProcess[str] | None]:
    """The target's virtualenv, and the run of its extra's program (if it has one).

    The program runs right after its install, in the same worker: while one virtualenv's
    program runs, the others' pip waits on PyPI.
    """
    python = _venv(tmp_path_factory, name, requirement)
    if name not in EXTRA_PROGRAMS:
        return python, None
    cwd = tmp_path_factory.mktemp(f"{name}-run")
    env = _program_env(name, cwd)
    return python, _run(python, "-I", "-c", EXTRA_PROGRAMS[name], cwd=cwd, env=env, timeout=180)


@pytest.fixture(scope="module")
def installs(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str] | None]]:
    """Per target ("base", "demo", each extra): its virtualenv's python and its program's run,
    three targets at a time."""
    targets = {"base": f"storeroom @ {wheel.as_uri()}"} | {
        extra: f"storeroom[{extra}] @ {wheel.as_uri()}" for extra in ["demo", *EXTRA_PROGRAMS]
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        built = {
            name: pool.submit(_install_and_run, tmp_path_factory, name, requirement)
            for name, requirement in targets.items()
        }
        return {name: future.result() for name, future in built.items()}


@pytest.fixture(scope="module")
def venvs(
    installs: dict[str, tuple[Path, subprocess.CompletedProcess[str] | None]],
) -> dict[str, Path]:
    """One virtualenv per target ("base", "demo", each extra)."""
    return {name: python for name, (python, _) in installs.items()}


@pytest.fixture(scope="module")
def base_python(venvs: dict[str, Path]) -> Path:
    return venvs["base"]


@pytest.fixture(scope="module")
def demo_python(venvs: dict[str, Path]) -> Path:
    return venvs["demo"]


def _readme_blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text()
    return [
        (text[: m.start("code")].count("\n") + 1, m.group("code"))
        for m in BLOCK.finditer(text)
        if not m.group("marker")
    ]


def _extras() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        extras: dict[str, list[str]] = tomllib.load(file)["project"]["optional-dependencies"]
    return extras


# Modules that the packages of the extras (and the test tools) provide: none is importable in
# the base install.
EXTRA_MODULES = (
    "pytest",
    "litestar",
    "uvicorn",
    "aiosqlite",
    "fastapi",
    "multipart",
    "flask",
    "pydantic",
    "pydantic_settings",
    "yaml",
    "click",
    "rich",
    "boto3",
    "botocore",
    "azure",
    "google",
    "cryptography",
    "requests",
    "opentelemetry",
    "pyvips",
    "PIL",
    "pypdfium2",
    "saq",
    "redis",
    "psycopg",
    "alembic",
    "fsspec",
    "s3fs",
    "adlfs",
    "gcsfs",
    "advanced_alchemy",
    "moto",
    "xxhash",
)


def test_every_install_target_is_tested() -> None:
    targets = set(_extras()) - NOT_TARGETS
    assert targets == {"demo", *EXTRA_PROGRAMS}, "each extra needs a program in EXTRA_PROGRAMS"


def test_base_install_is_only_the_base_package(base_python: Path) -> None:
    probe = _run(
        base_python,
        "-I",
        "-c",
        "import importlib.util as u, storeroom, sys; "
        "print(storeroom.__file__); "
        f"print([m for m in {EXTRA_MODULES!r} if u.find_spec(m)])",
        env=_clean_env(),
    )
    assert probe.returncode == 0, probe.stderr
    location, extras = probe.stdout.splitlines()
    assert str(base_python.parents[1]) in location  # the installed copy, not this checkout
    assert extras == "[]"


@pytest.mark.parametrize(
    "line",
    [line for line, _ in _readme_blocks()],
    ids=[f"README.md:{line}" for line, _ in _readme_blocks()],
)
def test_readme_blocks_run_on_the_base_install(
    base_python: Path, tmp_path: Path, line: int
) -> None:
    script = tmp_path / f"readme_{line}.py"
    script.write_text(dict(_readme_blocks())[line])
    for run in (1, 2):
        done = _run(base_python, "-I", script, cwd=tmp_path, env=_clean_env(), timeout=120)
        assert done.returncode == 0, f"README.md:{line}, run {run}:\n{done.stderr}"


@pytest.fixture
def demo_server(demo_python: Path, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {**_clean_env(), "DEMO_PORT": str(port), "DEMO_DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen(
        [str(demo_python), "-I", "-m", "storeroom.demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        if not wait_for_port(port, 60, alive=process):
            stop_process(process)
            output = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"the demo did not start on the demo install:\n{output}")
        yield port
    finally:
        stop_process(process)


def test_demo_starts_on_the_demo_install(demo_server: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{demo_server}/", timeout=30) as answer:
        assert answer.status == 200
        assert b"<html" in answer.read().lower()


# What each extra must be enough for: a program run on an install with only that extra.
EXTRA_PROGRAMS = {
    "litestar": """
from typing import Annotated

from litestar import Litestar, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from storeroom import FileObject
from storeroom.contrib.litestar import StoreroomPlugin, save_upload


@post("/upload")
async def upload(
    data: Annotated[UploadFile, Body(media_type=RequestEncodingType.MULTI_PART)],
) -> FileObject:
    return await save_upload(data, backend="files")


Litestar([upload], plugins=[StoreroomPlugin(configure=lambda: None)])
""",
    "fastapi": """
from fastapi import FastAPI, UploadFile
from storeroom import FileObject
from storeroom.contrib.fastapi import save_upload, signed_url_router, storeroom_lifespan

app = FastAPI(lifespan=storeroom_lifespan(lambda: None))
app.include_router(signed_url_router())


@app.post("/upload")
async def upload(file: UploadFile) -> FileObject:  # needs python-multipart
    return await save_upload(file, backend="files")
""",
    "flask": """
from flask import Flask
from storeroom.contrib.flask import Storeroom

app = Flask(__name__)
Storeroom(app, configure=lambda: None)
""",
    "cli": "from storeroom.cli import main\nmain(['--help'])\n",
    "alembic": """
from alembic.autogenerate import render_python_code
from storeroom.orm.alembic import render_item
""",
    **{
        path.stem.removeprefix("with_"): path.read_text()
        for path in sorted(PROGRAMS.glob("with_*.py"))
    },
}


def _redis_listens() -> bool:
    host, _, port = REDIS_URL.split("://", 1)[1].split("/", 1)[0].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=2).close()
    except OSError:
        return False
    return True


def _program_env(extra: str, tmp_path: Path) -> dict[str, str]:
    """What each program reads from its environment besides the machine's own."""
    env = {k: v for k, v in _clean_env().items() if not k.startswith(("STORAGE", "AWS_"))}
    if extra == "settings":
        env |= {
            "STORAGE_BACKEND": "local",
            "STORAGE_UPLOAD_DIR": str(tmp_path / "uploads"),
            "STORAGE_BACKENDS__SCRATCH__TYPE": "memory",
        }
    if extra == "saq" and _redis_listens():
        env["STOREROOM_TEST_REDIS"] = REDIS_URL
    return env


@pytest.mark.parametrize("extra", sorted(EXTRA_PROGRAMS))
def test_each_extra_is_enough_for_its_integration(
    extra: str, installs: dict[str, tuple[Path, subprocess.CompletedProcess[str] | None]]
) -> None:
    _, done = installs[extra]
    assert done is not None
    assert done.returncode == 0, done.stdout + done.stderr
    if extra == "saq" and "saq ok, job run on a worker" not in done.stdout:
        require_service("Redis", f"nothing listens at {REDIS_URL}; the SAQ job was not run")
