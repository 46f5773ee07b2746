"""``FileObject.save(validators=...)``: the inspector on a plain save, outside the ORM.

A refused file raises ValidationError naming the file, the rule, the value and the limit, and
nothing is stored: not the object, not a multipart upload's parts, and an object the save
would have replaced is kept. A decompression bomb is refused on its header, its endless body
never read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storeroom import FileObject, ValidationError
from storeroom.backends.base import StorageBackend
from storeroom.backends.obstore import ObstoreBackend
from storeroom.media.validation import ContentTypes, ImageLimits, MaxSize
from tests.media.files import image_bytes, png_bomb_header

MIB = 1024 * 1024
RULES = [MaxSize("20 MiB"), ContentTypes("image/*"), ImageLimits(max_pixels=50_000_000)]


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    if request.param == "memory":
        return ObstoreBackend("save-validators", "memory://")
    return ObstoreBackend("save-validators", f"file://{tmp_path}")


def stored(backend: StorageBackend) -> list[str]:
    return sorted(info.path for info in backend.list())


class Bomb:
    """A PNG header claiming 100,000 x 100,000 pixels, then zeros without end."""

    def __init__(self) -> None:
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        self.pulled += 1
        yield png_bomb_header(100_000, 100_000)
        while True:
            self.pulled += 1
            yield b"\x00" * 65536

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


def test_an_accepted_file_is_stored_with_its_metadata(backend: StorageBackend) -> None:
    file = FileObject(backend=backend, filename="cat.png", path="a/cat.png")
    file.save(image_bytes("PNG", (640, 480)), validators=RULES)
    assert stored(backend) == ["a/cat.png"]
    assert file.metadata == {"width": 640, "height": 480, "format": "png"}
    assert file.size == backend.head("a/cat.png").size


async def test_an_accepted_file_is_stored_with_its_metadata_async(
    backend: StorageBackend,
) -> None:
    file = FileObject(backend=backend, filename="cat.png", path="a/cat.png")
    await file.save_async(image_bytes("PNG", (64, 48)), validators=RULES)
    assert stored(backend) == ["a/cat.png"]
    assert file.metadata == {"width": 64, "height": 48, "format": "png"}


def test_a_decompression_bomb_is_refused_on_its_header(backend: StorageBackend) -> None:
    bomb = Bomb()
    file = FileObject(backend=backend, filename="bomb.png", path="bomb.png")
    with pytest.raises(ValidationError) as caught:
        file.save(iter(bomb), validators=RULES)
    error = caught.value
    assert (error.filename, error.rule) == ("bomb.png", "ImageLimits")
    assert (error.value, error.limit) == (10_000_000_000, {"max_pixels": 50_000_000})
    assert "10,000,000,000" in str(error) and "max_pixels=50,000,000" in str(error)
    assert bomb.pulled <= 2  # the header's chunk (and at most one more): never decoded
    assert stored(backend) == []
    assert "width" not in file.metadata and file.size is None


async def test_a_decompression_bomb_is_refused_on_its_header_async(
    backend: StorageBackend,
) -> None:
    bomb = Bomb()
    file = FileObject(backend=backend, filename="bomb.png", path="bomb.png")
    with pytest.raises(ValidationError, match="refused by ImageLimits"):
        await file.save_async(bomb.chunks(), validators=RULES)
    assert bomb.pulled <= 2
    assert stored(backend) == []


def test_a_refused_type_names_the_file_rule_value_and_limit(backend: StorageBackend) -> None:
    file = FileObject(backend=backend, filename="cat.png", path="cat.png")
    with pytest.raises(ValidationError) as caught:
        file.save(b"<html><script>alert(1)</script></html>", validators=RULES)
    error = caught.value
    assert (error.filename, error.rule, error.value) == ("cat.png", "ContentTypes", "text/html")
    assert error.limit == ("image/*",)
    assert stored(backend) == []


def test_a_large_file_refused_at_its_end_leaves_no_parts(backend: StorageBackend) -> None:
    """Over the chunk size the save is a multipart upload; the refusal comes with the last
    chunk held back, so the upload is aborted, never completed."""

    def never(findings: object) -> str:
        return "refused at the end"

    data = image_bytes("PNG", (32, 32)) + b"\x00" * (12 * MIB)
    file = FileObject(backend=backend, filename="big.png", path="big.png")
    with pytest.raises(ValidationError, match="refused at the end") as caught:
        file.save(data, chunk_size=5 * MIB, validators=[never])
    assert caught.value.rule.endswith("never")
    assert stored(backend) == []


def test_max_size_stops_the_stream_where_it_crosses(backend: StorageBackend) -> None:
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"\x00" * MIB

    file = FileObject(backend=backend, filename="zeros.bin", path="zeros.bin")
    with pytest.raises(ValidationError) as caught:
        file.save(endless(), validators=[MaxSize("3 MiB")])
    assert (caught.value.rule, caught.value.limit) == ("MaxSize", 3 * MIB)
    assert pulled == 4
    assert stored(backend) == []


def test_a_refused_replacement_keeps_the_object_it_would_replace(
    backend: StorageBackend,
) -> None:
    original = image_bytes("PNG", (40, 40))
    file = FileObject(backend=backend, filename="cat.png", path="cat.png")
    file.save(original, validators=RULES)
    with pytest.raises(ValidationError, match="ImageLimits"):
        FileObject(backend=backend, filename="cat.png", path="cat.png").save(
            iter(Bomb()), validators=RULES
        )
    assert stored(backend) == ["cat.png"]
    assert backend.get("cat.png") == original


def test_without_validators_nothing_is_inspected(backend: StorageBackend) -> None:
    file = FileObject(backend=backend, filename="cat.png", path="cat.png")
    file.save(image_bytes("PNG", (40, 40)))
    assert file.metadata == {} and stored(backend) == ["cat.png"]
