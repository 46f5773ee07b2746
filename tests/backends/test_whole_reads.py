"""Whole reads of large objects from a network store (moto S3, Azurite): the body is copied
once, into a ``bytes`` made at the size the store announced
(``storeroom.backends._unfilled``).

What must hold: the result is ordinary, immutable ``bytes`` equal to what was stored, sync
and async, at sizes around every edge of the pieces it is filled in; a body longer or
shorter than announced is an error naming the object, never a result with stale or unset
bytes; the digest of a verified read still sees every byte, so corruption is caught; and a
read that fails halfway leaves nothing a background hasher could read after it is freed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storeroom import BackendError, FileObject, IntegrityError, ObstoreBackend, checksums
from storeroom.backends import _unfilled, base
from storeroom.backends.base import collect, collect_async
from storeroom.backends.obstore import backend as obstore_backend
from storeroom.streams import Meter
from tests.servers.moto import MotoServer
from tests.servers.proxy import RecordingProxy

MIB = 1024 * 1024
# Around the whole-read threshold (4 MiB), the meter's step (4 MiB), the pieces (256 KiB).
SIZES = [4 * MIB + 1, 8 * MIB, 9 * MIB + 12_345, 17 * MIB - 1]


@pytest.fixture
def s3(moto_server: MotoServer, s3_bucket: str) -> ObstoreBackend:
    return ObstoreBackend("whole-s3", f"s3://{s3_bucket}/whole", **moto_server.obstore_options())


@pytest.fixture(
    params=[
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("azure", marks=pytest.mark.azure),
    ]
)
def network(request: pytest.FixtureRequest) -> ObstoreBackend:
    """A network store: moto S3, or Azurite."""
    if request.param == "s3":
        return request.getfixturevalue("s3")  # type: ignore[no-any-return]
    server = request.getfixturevalue("azurite_server")
    container = request.getfixturevalue("azure_container")
    return ObstoreBackend("whole-azure", f"az://{container}/whole", **server.obstore_options())


def _filled_in_place(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the sizes of the results made by :func:`_unfilled.unfilled`."""
    made: list[int] = []
    real = base.unfilled

    def recording(size: int) -> tuple[bytes, memoryview] | None:
        result = real(size)
        if result is not None:
            made.append(size)
        return result

    monkeypatch.setattr(base, "unfilled", recording)
    return made


def _is_plain_bytes(data: bytes, expected: bytes) -> None:
    assert type(data) is bytes
    assert data == expected
    assert hash(data) == hash(bytes(bytearray(expected)))  # hash computed on the final bytes
    with pytest.raises(TypeError):
        memoryview(data)[0] = 0  # type: ignore[index]  # read-only like any bytes


@pytest.mark.parametrize("size", SIZES)
async def test_network_whole_reads_are_filled_in_place_sync_and_async(
    network: ObstoreBackend, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _filled_in_place(monkeypatch)
    data = os.urandom(size)
    f = FileObject(backend=network, filename=f"w{size}.bin", content=data).save()
    _is_plain_bytes(network.get(f.path), data)
    _is_plain_bytes(await network.get_async(f.path), data)
    _is_plain_bytes(f.get_content(), data)
    _is_plain_bytes(await f.get_content_async(), data)
    assert made == [size] * 4


async def test_network_whole_reads_detect_corruption_and_truncation(
    network: ObstoreBackend,
) -> None:
    data = os.urandom(9 * MIB)
    for algorithm in ("blake3", "sha256", "xxh3-128"):
        f = FileObject(backend=network, filename="c.bin", content=data).save(checksum=algorithm)
        middle = 6 * MIB + 7  # in the second step of the background digest
        network.put("c.bin", data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
        with pytest.raises(IntegrityError, match="checksum"):
            f.get_content()
        with pytest.raises(IntegrityError, match="checksum"):
            await f.get_content_async()
        network.put("c.bin", data[:-1] + bytes([data[-1] ^ 0x80]))  # the very last byte
        with pytest.raises(IntegrityError, match="checksum"):
            f.get_content()
        network.put("c.bin", data[: 5 * MIB])
        with pytest.raises(IntegrityError, match="bytes"):
            f.get_content()
        with pytest.raises(IntegrityError, match="bytes"):
            await f.get_content_async()
        network.delete("c.bin")


def test_local_paths_obstore_reads_are_filled_in_place_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A path with a space is read through obstore, not storeroom's direct file read.
    made = _filled_in_place(monkeypatch)
    backend = ObstoreBackend("whole-local", f"file://{tmp_path}")
    data = os.urandom(5 * MIB + 3)
    f = FileObject(backend=backend, path="with space/a b.bin", filename="a b.bin", content=data)
    f.save()
    _is_plain_bytes(f.get_content(), data)
    assert made == [len(data)]


# -- collect, without a store ------------------------------------------------------------------


def _pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    at, turn = 0, 0
    while at < len(data):
        step = sizes[turn % len(sizes)]
        yield data[at : at + step]
        at, turn = at + step, turn + 1


async def _apieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    for piece in _pieces(data, sizes):
        yield piece


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("sizes", [[1], [4095, 1, 70_000], [256 * 1024], [5 * MIB]])
async def test_collect_fills_in_place_and_meters_every_byte(
    sizes: list[int], background: bool
) -> None:
    data = os.urandom(9 * MIB + 5) if sizes != [1] else os.urandom(200_000)
    digest = checksums.digest("blake3", data)
    for twin in ("sync", "async"):
        meter = Meter("blake3", background=background)
        if twin == "sync":
            got = collect(_pieces(data, sizes), meter, size=len(data), path="p")
        else:
            got = await collect_async(_apieces(data, sizes), meter, size=len(data), path="p")
        settled = meter.settled()
        if settled is not None:
            settled.result()
        _is_plain_bytes(got, data)
        assert meter.size == len(data) and meter.checksum == digest


@pytest.mark.parametrize("announced_delta", [-1, 1, -(3 * MIB)])
async def test_a_body_longer_or_shorter_than_announced_is_an_error_naming_the_object(
    announced_delta: int,
) -> None:
    data = os.urandom(4 * MIB)
    announced = len(data) + announced_delta
    with pytest.raises(BackendError, match=rf"announced {announced} bytes for 'docs/a\.pdf'"):
        collect(_pieces(data, [300_000]), size=announced, path="docs/a.pdf")
    with pytest.raises(BackendError, match="read it again"):
        await collect_async(_apieces(data, [300_000]), size=announced, path="docs/a.pdf")


def test_without_the_c_api_the_result_is_assembled_the_ordinary_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_unfilled, "_make", None)
    assert _unfilled.unfilled(10 * MIB) is None
    data = os.urandom(6 * MIB)
    meter = Meter("sha256")
    got = collect(_pieces(data, [1 * MIB]), meter, size=len(data), path="p")
    _is_plain_bytes(got, data)
    assert meter.checksum == checksums.digest("sha256", data)


def test_small_results_are_never_made_unfilled() -> None:
    # CPython shares its empty and one-byte bytes objects: writing one would change b"" for
    # the whole process. Below MIN_SIZE nothing is made.
    for size in (0, 1, 2, _unfilled.MIN_SIZE - 1):
        assert _unfilled.unfilled(size) is None
    made = _unfilled.unfilled(_unfilled.MIN_SIZE)
    assert made is not None
    target, view = made
    del made
    assert len(target) == len(view) == _unfilled.MIN_SIZE and not view.readonly
    # The C API hands back new references; ctypes must not keep one more (a leak per read).
    assert sys.getrefcount(target) == 2 and sys.getrefcount(view) == 2
    del target, view
    tracemalloc.start()
    try:
        for _ in range(50):
            made = _unfilled.unfilled(MIB)
            del made
        assert tracemalloc.get_traced_memory()[0] < MIB
    finally:
        tracemalloc.stop()


class _KeepingHasher:
    """A hasher that keeps what it was given, as a background hasher's queue would."""

    def __init__(self) -> None:
        self.kept: list[memoryview] = []

    def update(self, data: bytes | memoryview, /) -> None:
        assert isinstance(data, memoryview) and data.readonly  # never the writable view
        self.kept.append(data)

    def hexdigest(self) -> str:
        return ""


def test_a_read_that_fails_halfway_leaves_the_metered_bytes_alive() -> None:
    data = os.urandom(12 * MIB)

    def failing() -> Iterator[bytes]:
        yield from _pieces(data[: 9 * MIB], [MIB])
        raise ConnectionResetError("the store closed the connection")

    meter = Meter(None)
    hasher = _KeepingHasher()
    meter._hasher = hasher  # type: ignore[assignment]
    with pytest.raises(ConnectionResetError):
        collect(failing(), meter, size=len(data), path="p")
    gc.collect()
    # The views handed to the hasher still hold the result they point into.
    assert [len(view) for view in hasher.kept] == [4 * MIB, 4 * MIB]
    assert b"".join(bytes(view) for view in hasher.kept) == data[: 8 * MIB]


@pytest.mark.s3
async def test_an_s3_whole_read_cancelled_midway_leaves_the_next_one_whole(
    s3: ObstoreBackend,
) -> None:
    data = os.urandom(48 * MIB)
    f = FileObject(backend=s3, filename="cancel.bin", content=data).save()
    started = asyncio.Event()
    real_add = base._Assembly.add

    def add(assembly: base._Assembly, chunk: bytes) -> None:
        real_add(assembly, chunk)
        if assembly.at >= 8 * MIB:
            started.set()  # the read is under way, with a digest step handed out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base._Assembly, "add", add)
        read = asyncio.ensure_future(f.get_content_async())
        await asyncio.wait_for(started.wait(), 60)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
    gc.collect()
    _is_plain_bytes(await f.get_content_async(), data)
    _is_plain_bytes(f.get_content(), data)


# -- async whole reads ask for the next chunk while copying this one ----------------------


@pytest.mark.s3
async def test_async_s3_whole_reads_ask_for_the_next_chunk_before_copying_this_one(
    s3: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(21 * MIB + 3)
    f = FileObject(backend=s3, filename="ahead.bin", content=data).save()
    asked = 0
    seen: list[tuple[int, int]] = []  # (chunks asked for, chunks copied) at each copy
    real_anext, real_add = anext, base._Assembly.add

    def counting(stream: Any) -> Any:
        nonlocal asked
        asked += 1
        return real_anext(stream)

    def add(assembly: base._Assembly, chunk: bytes) -> None:
        seen.append((asked, len(seen)))
        real_add(assembly, chunk)

    monkeypatch.setattr(obstore_backend, "anext", counting, raising=False)
    monkeypatch.setattr(base._Assembly, "add", add)
    _is_plain_bytes(await f.get_content_async(), data)
    assert len(seen) >= 4  # pieces of 4 MiB or more
    # While each chunk is copied, the one after it is already asked for; never two ahead.
    assert all(asked_then == copied + 2 for asked_then, copied in seen)
    assert asked == len(seen) + 1  # and the last ask found the end of the body


async def _chunks(pieces: list[bytes], error: BaseException | None = None) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece
    if error is not None:
        raise error


async def test_read_ahead_hands_chunks_over_in_order_and_the_error_where_it_happened() -> None:
    pieces = [bytes([i]) * 1000 for i in range(5)]
    got = [chunk async for chunk in obstore_backend._read_ahead(_chunks(pieces))]
    assert got == pieces
    ahead = obstore_backend._read_ahead(_chunks(pieces[:2], ConnectionResetError("reset")))
    assert [await anext(ahead), await anext(ahead)] == pieces[:2]
    with pytest.raises(ConnectionResetError, match="reset"):
        await anext(ahead)


async def test_closing_a_read_ahead_stops_the_chunk_under_way_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        try:
            await release.wait()  # the chunk read ahead: never arrives
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield b"second"

    ahead = obstore_backend._read_ahead(slow())
    assert await anext(ahead) == b"first"
    await asyncio.sleep(0.01)  # the next chunk is under way
    assert not cancelled.is_set()
    await ahead.aclose()
    await asyncio.wait_for(cancelled.wait(), 5)
    # A chunk read ahead that failed after the caller stopped wanting it: dropped quietly.
    failing = obstore_backend._read_ahead(_chunks([b"only"], ConnectionResetError("late")))
    assert await anext(failing) == b"only"
    await asyncio.sleep(0.01)  # the failing read ahead has finished
    await failing.aclose()
    del ahead, failing
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


@pytest.mark.s3
async def test_an_async_s3_whole_read_cancelled_midway_logs_nothing_and_stops(
    s3: ObstoreBackend, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(24 * MIB)
    f = FileObject(backend=s3, filename="cancel-ahead.bin", content=data).save()
    real_add = base._Assembly.add
    for after in (0, 4 * MIB, 12 * MIB):
        started = asyncio.Event()

        def add(
            assembly: base._Assembly, chunk: bytes, after: int = after, started: Any = started
        ) -> None:
            real_add(assembly, chunk)
            if assembly.at > after:
                started.set()

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(base._Assembly, "add", add)
            read = asyncio.ensure_future(s3.get_async(f.path))
            await asyncio.wait_for(started.wait(), 60)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
    gc.collect()
    await asyncio.sleep(0.05)
    assert "never retrieved" not in caplog.text
    _is_plain_bytes(await s3.get_async(f.path), data)


@pytest.mark.s3
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_connection_cut_midway_through_the_body_never_yields_part_of_it(
    moto_server: MotoServer, s3_bucket: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's answer announces every byte, then the connection closes after 5 MiB of a
    9 MiB body: the read either gets the whole object again or raises an error naming it;
    it never returns part of the body, and the next read is whole."""
    data = os.urandom(9 * MIB + 5)
    cut = {"armed": False}

    def fault(number: int, method: str, path: str) -> str | None:
        if method == "GET" and cut["armed"]:
            cut["armed"] = False
            return f"cut:{5 * MIB}"
        return None

    proxy = RecordingProxy(moto_server.endpoint, fault=fault).start()
    try:
        options = {**moto_server.obstore_options(), "aws_endpoint": proxy.endpoint}
        backend = ObstoreBackend("cut-s3", f"s3://{s3_bucket}/cut", **options)
        f = FileObject(backend=backend, filename="cut.bin", content=data).save()
        for read in ("get", "get_content"):
            cut["armed"] = True
            proxy.clear()
            try:
                if mode == "sync":
                    got = backend.get(f.path) if read == "get" else f.get_content()
                else:
                    got = await (
                        backend.get_async(f.path) if read == "get" else f.get_content_async()
                    )
            except BackendError as error:
                assert "'cut/cut.bin'" in str(error) and "cut-s3" in str(error)
            else:
                _is_plain_bytes(got, data)
                # obstore asked again for the rest, from where the body broke off
                gets = [r for r in proxy.requests if r.method == "GET"]
                assert [r.headers.get("range") for r in gets] == [
                    None,
                    f"bytes={5 * MIB}-{len(data) - 1}",
                ]
            assert not cut["armed"]  # the cut did happen
            _is_plain_bytes(
                await backend.get_async(f.path) if mode == "async" else f.get_content(), data
            )
        gc.collect()
        await asyncio.sleep(0.05)
        assert "never retrieved" not in caplog.text
    finally:
        proxy.stop()


@pytest.mark.s3
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_object_replaced_before_a_cut_read_resumes_is_an_error_never_a_splice(
    moto_server: MotoServer, s3_bucket: str, mode: str
) -> None:
    """Two writers racing a reader: the body breaks off after 5 MiB, and another writer
    replaces the object (same size) before the read asks for the rest. The read must not
    return the first 5 MiB of one object joined to the rest of the other; unverified
    ``backend.get`` included, which has no digest to catch it."""
    old, new = os.urandom(9 * MIB), os.urandom(9 * MIB)
    gets = {"n": 0}
    client = moto_server.client()

    def fault(number: int, method: str, path: str) -> str | None:
        if method != "GET" or not path.endswith("/race.bin"):
            return None
        gets["n"] += 1
        if gets["n"] == 1:
            return f"cut:{5 * MIB}"
        if gets["n"] == 2:  # the resumed read: the other writer got there first
            client.put_object(Bucket=s3_bucket, Key="race/race.bin", Body=new)
        return None

    proxy = RecordingProxy(moto_server.endpoint, fault=fault).start()
    try:
        options = {**moto_server.obstore_options(), "aws_endpoint": proxy.endpoint}
        backend = ObstoreBackend("race-s3", f"s3://{s3_bucket}/race", **options)
        backend.put("race.bin", old)
        with pytest.raises(BackendError, match="reading 'race.bin' on backend 'race-s3' failed"):
            if mode == "sync":
                backend.get("race.bin")
            else:
                await backend.get_async("race.bin")
        assert gets["n"] == 2  # it did resume, and refused what came back
        got = backend.get("race.bin")
        assert got == new
    finally:
        proxy.stop()
