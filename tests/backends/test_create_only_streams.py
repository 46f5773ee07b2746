"""Create-only streamed writes on local disk and memory: atomic, and flat in memory.

obstore sends a conditional write as one PUT holding the whole body; the obstore backend
stages such streams in a scratch object and links it into place (see ``_stages``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storeroom import ObjectExists, ObstoreBackend

MiB = 1 << 20
BASE = os.urandom(MiB)


def _chunks(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield BASE[:-1] + bytes([i % 256])  # a new object each time, as a real stream gives


async def _achunks(count: int) -> AsyncIterator[bytes]:
    for chunk in _chunks(count):
        yield chunk


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> ObstoreBackend:
    url = f"file://{tmp_path}" if request.param == "local" else "memory://"
    return ObstoreBackend("staged", url)


def test_a_create_only_stream_lands_whole_and_leaves_no_scratch(backend: ObstoreBackend) -> None:
    expected = b"".join(_chunks(20))
    result = backend.put("a/big.bin", _chunks(20), overwrite=False)
    assert result.path == "a/big.bin" and result.size == len(expected)
    assert backend.get("a/big.bin") == expected
    assert [info.path for info in backend.list("a")] == ["a/big.bin"]


async def test_async_create_only_stream_lands_whole(backend: ObstoreBackend) -> None:
    expected = b"".join(_chunks(20))
    result = await backend.put_async("a/big.bin", _achunks(20), overwrite=False)
    assert result.size == len(expected)
    assert await backend.get_async("a/big.bin") == expected
    assert [info.path async for info in backend.list_async("a")] == ["a/big.bin"]


def test_a_create_only_stream_onto_an_existing_object_changes_nothing(
    backend: ObstoreBackend,
) -> None:
    backend.put("a/big.bin", b"first")
    with pytest.raises(ObjectExists, match="a/big.bin"):
        backend.put("a/big.bin", _chunks(20), overwrite=False)
    assert backend.get("a/big.bin") == b"first"
    assert [info.path for info in backend.list("a")] == ["a/big.bin"]


async def test_async_create_only_stream_onto_an_existing_object_changes_nothing(
    backend: ObstoreBackend,
) -> None:
    await backend.put_async("a/big.bin", b"first")
    with pytest.raises(ObjectExists):
        await backend.put_async("a/big.bin", _achunks(20), overwrite=False)
    assert await backend.get_async("a/big.bin") == b"first"
    assert [info.path async for info in backend.list_async("a")] == ["a/big.bin"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_large_create_only_stream_on_local_disk_is_not_held_in_memory(
    mode: str, tmp_path: Path
) -> None:
    # Measured in a fresh process: peak RSS growth while writing 400 MiB create-only. Before
    # staging, obstore held the whole body (+402 MiB); staged, parts are bounded (~70 MiB).
    script = textwrap.dedent(
        f"""
        import asyncio, os, resource
        from storeroom import ObstoreBackend
        backend = ObstoreBackend("d", "file://{tmp_path}")
        base = os.urandom(1 << 20)
        def chunks():
            for i in range(400):
                yield base[:-1] + bytes([i % 256])
        async def achunks():
            for chunk in chunks():
                yield chunk
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if "{mode}" == "sync":
            backend.put("big.bin", chunks(), overwrite=False)
        else:
            asyncio.run(backend.put_async("big.bin", achunks(), overwrite=False))
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    growth_mib = int(out.stdout.strip())
    assert (tmp_path / "big.bin").stat().st_size == 400 * MiB
    assert growth_mib < 200, f"writing 400 MiB create-only grew the process by {growth_mib} MiB"
