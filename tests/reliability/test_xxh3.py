"""XXH3-128: a fast, selectable digest ("xxh3-128:<32 hex>") that detects corruption.

What must hold: a save with ``checksum="xxh3-128"`` (per save, per backend, or from any
configuration source) records XXH3's 128-bit digest of exactly the bytes stored, whatever the
content's form and size; every verified read path (whole, streamed, file-like; sync and
async; small and past the background-hashing threshold) raises ``IntegrityError`` when one
byte changed in the store behind storeroom's back, on memory, local disk and S3; records of
other algorithms keep verifying on a backend whose default is xxh3-128; and an installation
without the ``xxhash`` package refuses the algorithm with an error that says what to install,
both when saving and when verifying, never passing a record it cannot check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import blake3
import obstore
import pytest
import xxhash
from sqlalchemy import create_engine

from storeroom import (
    ConfigurationError,
    FileObject,
    IntegrityError,
    ObstoreBackend,
    StorageBackend,
    StorageRegistry,
    checksums,
)
from storeroom.backends import transfer
from storeroom.config import (
    BackendSpec,
    InvalidBackendSpec,
    StorageConfig,
    configure_from_env,
    configure_from_file,
    register_specs,
    spec_from_mapping,
)
from storeroom.streams import Meter
from tests.servers.moto import MotoServer
from tests.servers.proxy import RecordingProxy

XXH3 = "xxh3-128"
RECORD = re.compile(r"^xxh3-128:[0-9a-f]{32}$")
MIB = 1024 * 1024
SMALL = bytes(range(256)) * 64  # 16 KiB
# Past the background-hashing threshold (1 MiB), the whole-read step (4 MiB) and one
# multipart part (5 MiB): bytes this large go up to S3 as a multipart upload.
LARGE = os.urandom(5 * MIB + 3)


def expected(data: bytes) -> str:
    return f"{XXH3}:{xxhash.xxh3_128_hexdigest(data)}"


def flipped(data: bytes, at: int) -> bytes:
    """``data`` with one byte changed (same size)."""
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# -- the digest itself -----------------------------------------------------------------------


def test_xxh3_128_is_supported_and_names_normalise() -> None:
    assert XXH3 in checksums.supported_algorithms()
    assert checksums.XXH3_128 == XXH3
    assert checksums.check_algorithm("XXH3-128") == XXH3
    assert checksums.check_algorithm("Xxh3-128") == XXH3
    assert checksums.DEFAULT_ALGORITHM == "blake3"  # xxh3-128 is opt-in


@pytest.mark.parametrize("data", [b"", b"abc", SMALL, LARGE], ids=["0", "3", "16KiB", "5MiB"])
def test_every_checksums_entry_point_agrees_with_xxhash(data: bytes) -> None:
    record = expected(data)
    assert RECORD.match(record)
    assert checksums.digest(XXH3, data) == record
    assert checksums.digest("XXH3-128", data) == record
    assert checksums.digest(XXH3, memoryview(data)) == record
    assert checksums.digest(XXH3, data, parallel=True) == record
    assert checksums.digest_in_background(XXH3, data).result(timeout=60) == record
    # Fed in uneven pieces, as bytes and as views, the streaming forms give the same record.
    pieces = [data[i : i + 70_001] for i in range(0, len(data), 70_001)]
    hasher = checksums.new_hasher(XXH3)
    background = checksums.BackgroundHasher(checksums.new_hasher(XXH3, parallel=True))
    recorded = checksums.hasher_for(record)
    for piece in pieces:
        hasher.update(piece)
        background.update(memoryview(piece))
        recorded.update(piece)
    assert checksums.record(XXH3, hasher) == record
    background.settled().result(timeout=60)
    assert checksums.record(XXH3, background) == record
    assert checksums.record(XXH3, recorded) == record
    meter = Meter(XXH3)
    assert b"".join(meter.wrap(pieces)) == data
    assert (meter.size, meter.checksum) == (len(data), record)
    assert checksums.algorithm_of(record) == XXH3


def test_matches_compares_xxh3_records_by_value() -> None:
    record = expected(b"abc")
    assert checksums.matches(record, record)
    assert checksums.matches(record.upper(), record)
    assert not checksums.matches(record, expected(b"abd"))
    # Same hex under another algorithm's name is not a match.
    assert not checksums.matches(record, "md5:" + record.split(":", 1)[1])
    assert not checksums.matches(record, None)


# -- saving records xxh3-128 -------------------------------------------------------------------


@pytest.fixture(
    params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)],
)
def where(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Store:
    """A backend, and a way to change its bytes without going through storeroom."""

    def __init__(
        self,
        backend: ObstoreBackend,
        tamper: Callable[[str, bytes], None],
    ) -> None:
        self.backend = backend
        self.tamper = tamper


@pytest.fixture
def store(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if where == "memory":
        backend = ObstoreBackend("xxh-mem", "memory://")
        return Store(backend, lambda path, data: obstore.put(backend.store, path, data))
    if where == "local":
        root = tmp_path / "root"
        backend = ObstoreBackend("xxh-disk", f"file://{root}")
        return Store(backend, lambda path, data: (root / path).write_bytes(data))
    moto: MotoServer = request.getfixturevalue("moto_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    backend = ObstoreBackend("xxh-s3", f"s3://{bucket}/", **moto.obstore_options())
    client = moto.client()
    return Store(backend, lambda path, data: client.put_object(Bucket=bucket, Key=path, Body=data))


async def _agen(data: bytes, step: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), step):
        yield data[at : at + step]


@pytest.mark.parametrize("data", [SMALL, LARGE], ids=["16KiB", "5MiB"])
async def test_saves_with_xxh3_record_its_digest_for_every_content_kind(
    store: Store, data: bytes, tmp_path: Path
) -> None:
    backend = store.backend
    record = expected(data)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    saved = FileObject(backend=backend, filename="a.bin", content=data).save(checksum=XXH3)
    assert saved.checksum == record and RECORD.match(saved.checksum)
    assert saved.size == len(data) and backend.get(saved.path) == data
    # Streamed content (an iterator, a file): hashed by the meter as it streams.
    streamed = backend.put("b.bin", iter([data[:1000], data[1000:]]), checksum="XXH3-128")
    assert (streamed.size, streamed.checksum) == (len(data), record)
    with source.open("rb") as fileobj:
        assert backend.put("c.bin", fileobj, checksum=XXH3).checksum == record
    assert backend.put("d.bin", source, checksum=XXH3).checksum == record
    later = await FileObject(backend=backend, filename="e.bin", content=data).save_async(
        checksum=XXH3
    )
    assert later.checksum == record
    aresult = await backend.put_async("f.bin", _agen(data, 300_001), checksum=XXH3)
    assert (aresult.size, aresult.checksum) == (len(data), record)
    for path in ("b.bin", "c.bin", "d.bin", "f.bin"):
        assert backend.get(path) == data


@pytest.mark.s3
def test_multipart_stream_to_s3_records_the_digest_of_the_whole(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    backend = ObstoreBackend("xxh-s3", f"s3://{s3_bucket}/", **moto_server.obstore_options())
    data = os.urandom(11 * MIB + 1)  # three parts of 5 MiB (the last one short)
    chunks = (data[at : at + MIB] for at in range(0, len(data), MIB))
    saved = FileObject(backend=backend, filename="m.bin", content=chunks).save(
        checksum=XXH3, chunk_size=5 * MIB
    )
    assert saved.checksum == expected(data) and saved.size == len(data)
    head = moto_server.client().head_object(Bucket=s3_bucket, Key=saved.path)
    assert head["ETag"].strip('"').endswith("-3")  # it did go up as three parts
    assert saved.get_content() == data
    moto_server.client().put_object(Bucket=s3_bucket, Key=saved.path, Body=flipped(data, 7 * MIB))
    with pytest.raises(IntegrityError, match="checksum"):
        saved.get_content()
    with pytest.raises(IntegrityError, match="checksum"):
        b"".join(saved.iter_chunks())


# -- every verified read path detects one changed byte -----------------------------------------


def _read(f: FileObject) -> bytes:
    with f.open() as reader:
        return reader.read()


def _read_small_pieces(f: FileObject) -> bytes:
    with f.open(chunk_size=256 * 1024) as reader:
        parts = []
        while piece := reader.read(100_000):
            parts.append(piece)
        return b"".join(parts)


async def _aread(f: FileObject) -> bytes:
    async with await f.open_async() as reader:
        return await reader.read()


async def _aiter(f: FileObject) -> bytes:
    return b"".join([chunk async for chunk in await f.aiter_chunks(chunk_size=256 * 1024)])


READS: dict[str, Callable[[FileObject], bytes | Awaitable[bytes]]] = {
    "get_content": lambda f: f.get_content(),
    "iter_chunks": lambda f: b"".join(f.iter_chunks(chunk_size=256 * 1024)),
    "open().read()": _read,
    "open().read(n)...": _read_small_pieces,
    "get_content_async": lambda f: f.get_content_async(),
    "aiter_chunks": _aiter,
    "open_async().read()": _aread,
}


async def _run_read(name: str, f: FileObject) -> bytes:
    result = READS[name](f)
    if asyncio.iscoroutine(result):
        return await result  # type: ignore[no-any-return]
    assert isinstance(result, bytes)
    return result


@pytest.mark.parametrize("data", [SMALL, LARGE], ids=["16KiB", "5MiB"])
async def test_every_read_path_detects_one_changed_byte(store: Store, data: bytes) -> None:
    f = FileObject(backend=store.backend, filename="doc.bin", content=data).save(checksum=XXH3)
    for name in READS:
        assert await _run_read(name, f) == data, name
    for at in (0, len(data) // 2, len(data) - 1):
        store.tamper(f.path, flipped(data, at))
        for name in READS:
            with pytest.raises(IntegrityError, match="checksum") as caught:
                await _run_read(name, f)
            assert repr(f.path) in str(caught.value) and XXH3 in str(caught.value), name
    store.tamper(f.path, data)  # put back: every path reads it whole again
    for name in READS:
        assert await _run_read(name, f) == data, name


async def test_a_changed_byte_in_a_large_object_is_caught_by_the_background_hash(
    store: Store,
) -> None:
    # Large whole reads hash in a worker thread while the body arrives (> 1 MiB).
    data = os.urandom(9 * MIB + 12_345)
    f = FileObject(backend=store.backend, filename="big.bin", content=data).save(checksum=XXH3)
    assert f.checksum == expected(data)
    assert f.get_content() == data and await f.get_content_async() == data
    store.tamper(f.path, flipped(data, 6 * MIB + 7))  # in the second 4 MiB step
    with pytest.raises(IntegrityError, match="checksum"):
        f.get_content()
    with pytest.raises(IntegrityError, match="checksum"):
        await f.get_content_async()
    store.tamper(f.path, data[:-1])  # truncated: caught by size
    with pytest.raises(IntegrityError, match="bytes"):
        f.get_content()


# -- copies keep and verify xxh3-128 records ---------------------------------------------------


@pytest.mark.parametrize("read_back", [False, True])
async def test_copies_keep_the_xxh3_record_and_refuse_changed_bytes(
    read_back: bool, tmp_path: Path
) -> None:
    source = ObstoreBackend("src", "memory://")
    target = ObstoreBackend("dst", f"file://{tmp_path}/dst")
    f = FileObject(backend=source, filename="c.bin", content=SMALL).save(checksum=XXH3)
    copied = transfer.copy(
        source, f.path, target, "copy.bin", size=f.size, checksum=f.checksum, verify_read=read_back
    )
    assert copied.checksum == f.checksum == expected(SMALL)
    assert transfer.digest_object(target, "copy.bin", transfer.algorithm_of(f.checksum)) == (
        transfer.Digest(len(SMALL), expected(SMALL))
    )
    kept = f.copy_to(target, "kept.bin")
    assert kept.checksum == f.checksum and kept.get_content() == SMALL
    obstore.put(source.store, f.path, flipped(SMALL, 5))
    with pytest.raises(IntegrityError):
        f.copy_to(target, "bad.bin")
    with pytest.raises(IntegrityError):
        await f.copy_to_async(target, "bad-async.bin")
    assert not target.exists("bad.bin") and not target.exists("bad-async.bin")


# -- a backend whose default is xxh3-128 -------------------------------------------------------


def test_a_backend_default_of_xxh3_applies_to_saves_and_old_records_still_verify() -> None:
    backend = ObstoreBackend("fast", "memory://")
    backend.checksum_algorithm = XXH3
    new = FileObject(backend=backend, filename="n.bin", content=SMALL).save()
    assert new.checksum == expected(SMALL)
    assert backend.put("p.bin", SMALL).checksum == expected(SMALL)
    explicit = FileObject(backend=backend, filename="s.bin", content=SMALL).save(checksum="sha256")
    assert explicit.checksum == "sha256:" + hashlib.sha256(SMALL).hexdigest()

    # Records written before the switch, by earlier versions or other tools.
    obstore.put(backend.store, "old.bin", LARGE)
    for record in (
        "blake3:" + blake3.blake3(LARGE).hexdigest(),
        "sha256:" + hashlib.sha256(LARGE).hexdigest(),
        ("sha256:" + hashlib.sha256(LARGE).hexdigest()).upper(),
    ):
        old = FileObject(
            backend=backend, filename="old.bin", path="old.bin", size=len(LARGE), checksum=record
        )
        assert old.get_content() == LARGE
        assert asyncio.run(old.get_content_async()) == LARGE
        assert b"".join(old.iter_chunks()) == LARGE
        assert _read(old) == LARGE
        # A copy of an old file keeps its algorithm, so the two records compare.
        assert old.copy_to(backend, "old-copy.bin").checksum == record
    obstore.put(backend.store, "old.bin", flipped(LARGE, 3))
    old = FileObject(
        backend=backend,
        filename="old.bin",
        path="old.bin",
        size=len(LARGE),
        checksum="blake3:" + blake3.blake3(LARGE).hexdigest(),
    )
    with pytest.raises(IntegrityError, match="blake3:"):
        old.get_content()


# -- configuration -----------------------------------------------------------------------------


def _records_xxh3(backend: StorageBackend) -> None:
    assert backend.checksum_algorithm == XXH3
    saved = FileObject(backend=backend, filename="cfg.bin", content=SMALL).save()
    assert saved.checksum == expected(SMALL)
    assert saved.get_content() == SMALL


def test_a_spec_mapping_sets_the_backend_digest() -> None:
    registry = StorageRegistry()
    spec = spec_from_mapping({"key": "fast", "url": "memory://", "checksum_algorithm": "XXH3-128"})
    assert spec.checksum_algorithm == XXH3 and "checksum_algorithm='xxh3-128'" in repr(spec)
    (backend,) = register_specs([spec], registry)
    _records_xxh3(backend)
    (other,) = register_specs([BackendSpec(key="slow", type="memory")], registry)
    assert other.checksum_algorithm == checksums.DEFAULT_ALGORITHM  # unset: the default


def test_a_toml_file_sets_the_backend_digest(tmp_path: Path) -> None:
    config = tmp_path / "storage.toml"
    config.write_text(
        f"""
[[storage.backends]]
key = "fast"
type = "local"
path = "{tmp_path / "files"}"
checksum_algorithm = "xxh3-128"

[[storage.backends]]
key = "plain"
type = "memory"
"""
    )
    registry = StorageRegistry()
    configure_from_file(config, registry)
    _records_xxh3(registry.get_backend("fast"))
    assert registry.get_backend("plain").checksum_algorithm == "blake3"


def test_the_environment_sets_the_backend_digest(tmp_path: Path) -> None:
    registry = StorageRegistry()
    environ = {
        "STORAGE__FAST__URL": f"file://{tmp_path}/fast",
        "STORAGE__FAST__CHECKSUM_ALGORITHM": "xxh3-128",
    }
    configure_from_env(registry, environ)
    _records_xxh3(registry.get_backend("fast"))
    settings = StorageConfig.from_env(
        {
            "STORAGE_BACKEND": "none",
            "STORAGE_BACKENDS": json.dumps(
                {"more": {"url": "memory://", "checksum_algorithm": XXH3}}
            ),
        }
    )
    settings.register_backends(registry)
    _records_xxh3(registry.get_backend("more"))


@pytest.mark.s3
def test_an_s3_spec_records_xxh3_while_the_server_checks_sha256(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    # Two different checksums: S3's own upload checksum (aws_checksum_algorithm, a header the
    # server verifies) and the digest storeroom records (checksum_algorithm).
    proxy = RecordingProxy(moto_server.endpoint).start()
    try:
        spec = BackendSpec(
            key="fast-s3",
            type="s3",
            bucket=s3_bucket,
            region=moto_server.region,
            endpoint=proxy.endpoint,
            options={
                "aws_access_key_id": moto_server.access_key,
                "aws_secret_access_key": moto_server.secret_key,
                "aws_checksum_algorithm": "SHA256",
            },
            checksum_algorithm=XXH3,
        )
        (backend,) = register_specs([spec], StorageRegistry())
        _records_xxh3(backend)
    finally:
        proxy.stop()
    put = next(r for r in proxy.requests if r.method == "PUT")
    assert "x-amz-checksum-sha256" in put.headers


def test_bad_checksum_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidBackendSpec, match="'crc99'.*supported: .*xxh3-128") as caught:
        spec_from_mapping({"key": "k", "type": "memory", "checksum_algorithm": "crc99"})
    assert caught.value.field == "checksum_algorithm"
    with pytest.raises(InvalidBackendSpec, match="expected an algorithm name"):
        spec_from_mapping({"key": "k", "type": "memory", "checksum_algorithm": 128})
    with pytest.raises(InvalidBackendSpec, match="aws_checksum_algorithm") as caught:
        spec_from_mapping(
            {"key": "k", "type": "memory", "options": {"checksum_algorithm": "xxh3-128"}}
        )
    assert caught.value.field == "options.checksum_algorithm"


def test_xxh3_as_the_s3_store_option_says_which_setting_was_meant() -> None:
    # No request is made: building an S3 store is offline.
    with pytest.raises(ConfigurationError) as caught:
        ObstoreBackend(
            "k",
            "s3://bucket/",
            aws_region="us-east-1",
            aws_access_key_id="AKIAEXAMPLE",
            aws_secret_access_key="not-a-secret",
            aws_checksum_algorithm=XXH3,
        )
    message = str(caught.value)
    assert "'xxh3-128'" in message or '"xxh3-128"' in message
    assert "backend.checksum_algorithm" in message and "not-a-secret" not in message


def test_the_cli_records_the_configured_digest(tmp_path: Path) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "report.txt"
    source.write_bytes(SMALL)
    env = {
        **os.environ,
        "PYTHONPATH": f"{root}/src:{root}",
        "STORAGE__FAST__URL": f"file://{tmp_path}/fast",
        "STORAGE__FAST__CHECKSUM_ALGORITHM": "xxh3-128",
        "STORAGE__OTHER__URL": f"file://{tmp_path}/other",
    }
    put = subprocess.run(
        [sys.executable, "-m", "storeroom.cli", "put", "fast:r.txt", str(source)],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert put.returncode == 0, put.stderr
    assert expected(SMALL).encode() in put.stdout
    copied = subprocess.run(
        [sys.executable, "-m", "storeroom.cli", "cp", "fast:r.txt", "other:r.txt"],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "other" / "r.txt").read_bytes() == SMALL


def test_upload_sessions_record_the_backends_xxh3_digest(tmp_path: Path) -> None:
    from sqlalchemy.orm import Session
    from werkzeug.test import Client

    from storeroom import storages
    from storeroom.signing import configure_signing
    from storeroom.uploads import begin, complete, metadata
    from storeroom.web import SignedUrlWsgiApp

    backend = storages.register_backend(ObstoreBackend("xxh-uploads", f"file://{tmp_path}/up"))
    backend.checksum_algorithm = XXH3
    configure_signing(backend, secret="xxh3-uploads-secret-0123456789", base_url="http://t/files")
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    metadata.create_all(engine)
    try:
        with Session(engine) as session:
            target = begin(
                session, "xxh-uploads", filename="a.bin", content_type="text/plain", size=len(SMALL)
            )
            session.commit()
        parts = urlsplit(target.instructions.url)
        reply = Client(SignedUrlWsgiApp()).open(
            parts.path.removeprefix("/files"),
            query_string=parts.query,
            method=target.instructions.method,
            headers=target.instructions.headers,
            data=SMALL,
        )
        assert reply.status_code == 200
        with Session(engine) as session:
            done = complete(session, target.id)
            session.commit()
        assert done.checksum == expected(SMALL) and done.get_content() == SMALL
    finally:
        engine.dispose()


# -- without the xxhash package ----------------------------------------------------------------


@pytest.fixture
def without_xxhash(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if ``xxhash`` were not installed (its import failed)."""
    monkeypatch.setattr(checksums, "_xxhash", None)
    monkeypatch.setattr(checksums, "_CHECKED", {})  # names checked while it was there
    monkeypatch.setattr(checksums, "_HEX_OF", {})  # and the digest functions found then


def _says_what_to_install(error: BaseException, name: str = XXH3) -> None:
    message = str(error)
    assert f"checksum algorithm {name!r} is not available" in message
    assert "storeroom[xxhash]" in message and "'xxhash' package" in message
    supported = message.split("supported: ", 1)[1]
    assert "blake3" in supported and "sha256" in supported and XXH3 not in supported


@pytest.mark.usefixtures("without_xxhash")
def test_without_xxhash_the_algorithm_is_refused_with_what_to_install() -> None:
    assert XXH3 not in checksums.supported_algorithms()
    for name in (XXH3, "XXH3-128"):
        with pytest.raises(ConfigurationError) as caught:
            checksums.check_algorithm(name)
        _says_what_to_install(caught.value, name)
    for attempt in (
        lambda: checksums.new_hasher(XXH3),
        lambda: checksums.digest(XXH3, b"data"),
        lambda: checksums.hasher_for(expected(b"data")),
        lambda: Meter(XXH3),
    ):
        with pytest.raises(ConfigurationError) as caught:
            attempt()
        _says_what_to_install(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        checksums.digest_in_background(XXH3, b"data").result(timeout=60)
    _says_what_to_install(caught.value)
    with pytest.raises(InvalidBackendSpec, match=re.escape("storeroom[xxhash]")):
        spec_from_mapping({"key": "k", "type": "memory", "checksum_algorithm": XXH3})


@pytest.mark.usefixtures("without_xxhash")
async def test_without_xxhash_nothing_is_saved_and_records_are_never_passed_unchecked(
    tmp_path: Path,
) -> None:
    backend = ObstoreBackend("no-xxh", f"file://{tmp_path}/root")
    for content in (SMALL, LARGE, iter([SMALL])):
        with pytest.raises(ConfigurationError) as caught:
            FileObject(backend=backend, filename="x.bin", content=content).save(checksum=XXH3)
        _says_what_to_install(caught.value)
    with pytest.raises(ConfigurationError):
        await backend.put_async("x.bin", SMALL, checksum=XXH3)
    assert not backend.exists("x.bin")
    backend.checksum_algorithm = XXH3
    with pytest.raises(ConfigurationError):
        FileObject(backend=backend, filename="y.bin", content=SMALL).save()
    assert not backend.exists("y.bin")
    backend.checksum_algorithm = "blake3"

    # Objects saved where xxhash was installed: their records cannot be checked here, and
    # reading them says so instead of returning unverified bytes.
    for data in (SMALL, LARGE):
        backend.put("rec.bin", data, checksum=None)
        f = FileObject(
            backend=backend,
            filename="rec.bin",
            path="rec.bin",
            size=len(data),
            checksum=expected(data),
        )
        for name in READS:
            with pytest.raises(ConfigurationError) as caught:
                await _run_read(name, f)
            _says_what_to_install(caught.value)
        with pytest.raises(ConfigurationError):
            f.copy_to(ObstoreBackend("elsewhere", "memory://"))
