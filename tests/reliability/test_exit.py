"""A user script that saves with the async API under asyncio.run exits 0, every time.

obstore's worker threads complete awaited calls by writing to the event loop's self-pipe
with the GIL released; without storeroom's exit hook the interpreter could start finalizing
first and the worker's return into Python aborted the process (SIGABRT) in about one run in
four to two on a local-disk store. Races need repetition: 100 runs, two at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storeroom import _shutdown

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from storeroom import FileObject, storages
    from storeroom.backends.obstore import ObstoreBackend

    storages.register_backend(ObstoreBackend(key="files", fs="file://" + sys.argv[1]))


    async def main() -> None:
        for i in range(3):
            await FileObject(backend="files", filename=f"n{i}.txt", content=b"hello").save_async()


    asyncio.run(main())
    print("saved")
    """
)


@pytest.mark.slow
def test_async_save_under_asyncio_run_exits_zero_in_100_of_100_runs(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }

    def run(i: int) -> tuple[int, str]:
        folder = tmp_path / f"store{i}"
        folder.mkdir()
        done = subprocess.run(
            [sys.executable, str(script), str(folder)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout + done.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, range(100)))
    failures = [(code, out) for code, out in results if code != 0 or out.strip() != "saved"]
    assert not failures, f"{len(failures)} of 100 runs failed; first: {failures[0]}"


def test_exit_hook_returns_at_once_without_foreign_threads() -> None:
    assert _shutdown.wait_for_foreign_threads(deadline_seconds=0.5) is True
