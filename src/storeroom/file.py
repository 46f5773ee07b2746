"""FileObject: where a file lives, what is known about it, and its pending content."""

from __future__ import annotations

import asyncio
import functools
import io
import mimetypes
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

from storeroom import checksums
from storeroom.backends import transfer
from storeroom.backends.base import (
    BACKEND_DEFAULT,
    DEFAULT_READ_CHUNK_SIZE,
    ObjectInfo,
    PutResult,
    StorageBackend,
)
from storeroom.errors import ConfigurationError, IntegrityError
from storeroom.media.validation import ValidatorLike, screened, screened_async
from storeroom.readers import AsyncObjectReader, ObjectReader
from storeroom.registry import StorageRegistry, storages
from storeroom.streams import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY, Content, Meter

__all__ = ["FileObject"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"

_FIELDS = (
    "backend",
    "filename",
    "path",
    "content_type",
    "size",
    "checksum",
    "etag",
    "version",
    "last_modified",
    "metadata",
)


_FIELD_SET = frozenset(_FIELDS)
_FIELD_COUNT = len(_FIELDS)


def guess_content_type(filename: str) -> str:
    """Content type for ``filename`` from its extension; application/octet-stream if unknown."""
    _, dot, extension = filename.rpartition(".")
    return _content_type_for_extension(extension.lower() if dot else "")


@functools.lru_cache(maxsize=512)
def _content_type_for_extension(extension: str) -> str:
    guessed, _ = (
        mimetypes.guess_type(f"file.{extension}", strict=False) if extension else (None, None)
    )
    return guessed or DEFAULT_CONTENT_TYPE


class FileObject:
    """A file kept in a storage backend, plus what is known about it.

    ``backend`` is a registered backend's key (or a backend instance); ``filename`` is the
    user-facing name; ``path`` is the object's key inside the backend (the filename unless
    given; the ORM column chooses a unique one). ``content`` is saved by :meth:`save` (or by
    the session flush when the object is assigned to a ``StoredObject`` column).

    Example::

        doc = FileObject(backend="private", filename="report.pdf", content=b"%PDF...")
        doc.save()
        url = doc.sign(expires_in=3600)
    """

    __slots__ = (
        "_backend_key",
        "_in_row",
        "_path_given",
        "_pending",
        "_registry",
        "_storage",
        "checksum",
        "content_type",
        "etag",
        "filename",
        "last_modified",
        "metadata",
        "path",
        "size",
        "version",
    )

    def __init__(
        self,
        backend: str | StorageBackend | None = None,
        filename: str | None = None,
        *,
        path: str | None = None,
        content_type: str | None = None,
        size: int | None = None,
        checksum: str | None = None,
        etag: str | None = None,
        version: str | None = None,
        last_modified: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
        content: Content | None = None,
        registry: StorageRegistry | None = None,
    ) -> None:
        if filename is None and path is None:
            raise ConfigurationError("FileObject needs a filename (or a path)")
        self._registry = registry or storages
        self._storage: StorageBackend | None = None
        self._backend_key: str | None
        if backend is None or type(backend) is str:  # first: the ORM's load path
            self._backend_key = backend
        elif isinstance(backend, StorageBackend):
            self._storage = backend
            self._backend_key = backend.key
        elif isinstance(backend, str):
            self._backend_key = backend
        else:
            raise ConfigurationError(
                f"FileObject backend must be a backend key (str) or a StorageBackend, got "
                f"{type(backend).__name__}"
            )
        self.filename: str = filename if filename is not None else str(path).rsplit("/", 1)[-1]
        self.path: str = path if path is not None else self.filename
        self._path_given = path is not None
        self.content_type: str = content_type or guess_content_type(self.filename)
        self.size = size
        self.checksum = checksum
        self.etag = etag
        self.version = version
        self.last_modified = last_modified
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._pending: Content | None = content
        # Set by the ORM once this object was read from a database row or written into
        # one, to the (backend, path) the row holds: another row given it then gets a copy
        # (a stored object belongs to one row), and an in-place edit of either shows.
        self._in_row: tuple[str | None, str] | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def backend(self) -> str | None:
        """The key of the backend holding this file (None until one is chosen)."""
        return self._backend_key

    @backend.setter
    def backend(self, value: str | StorageBackend | None) -> None:
        if isinstance(value, StorageBackend):
            self._storage, self._backend_key = value, value.key
        else:
            self._storage, self._backend_key = None, value

    @property
    def storage(self) -> StorageBackend:
        """The backend instance, resolved through the registry (the default when unset)."""
        if self._storage is not None:
            return self._storage
        backend = self._registry.get_backend(self._backend_key)
        if self._backend_key is None:
            self._backend_key = backend.key
        return backend

    def _pin_storage(self) -> StorageBackend:
        """Resolve the backend through the registry and keep the instance, as
        ``file.backend = file.storage`` would (the ORM, before it uploads)."""
        storage = self._storage
        if storage is None:
            storage = self._registry.get_backend(self._backend_key)
            self._storage, self._backend_key = storage, storage.key
        return storage

    @property
    def has_explicit_path(self) -> bool:
        """Whether ``path`` was given (else it is the filename, and the ORM may choose one)."""
        return self._path_given

    def assign_path(self, path: str) -> None:
        """Set where the file will be stored (before it is saved)."""
        self.path = path
        self._path_given = True

    @property
    def has_pending_content(self) -> bool:
        """Whether content was given that has not been saved yet."""
        return self._pending is not None

    @property
    def pending_content(self) -> Content | None:
        """The content the next :meth:`save` writes (None when there is none)."""
        return self._pending

    def set_content(self, content: Content) -> None:
        """Replace the content to be written by the next :meth:`save`."""
        self._pending = content

    def __repr__(self) -> str:
        parts = [f"backend={self.backend!r}", f"path={self.path!r}"]
        if self.filename != self.path:
            parts.append(f"filename={self.filename!r}")
        parts += [f"size={self.size!r}", f"content_type={self.content_type!r}"]
        if self._pending is not None:
            parts.append("pending=True")
        return f"FileObject({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileObject):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    # -- serialisation ----------------------------------------------------------------------

    pydantic_form: ClassVar[Any] = None
    """The form a plain ``FileObject`` field takes in pydantic models.

    :mod:`storeroom.serialization` sets it to its public form when storeroom is imported;
    ``Annotated[FileObject, FileForm(...)]`` picks another per field."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """pydantic v2 support: the schema of :attr:`pydantic_form`."""
        return cls.pydantic_form.__get_pydantic_core_schema__(source, handler)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything known about the file (not its pending content)."""
        modified = self.last_modified
        # Spelled out (the order of _FIELDS): written for every row the ORM saves.
        return {
            "backend": self._backend_key,
            "filename": self.filename,
            "path": self.path,
            "content_type": self.content_type,
            "size": self.size,
            "checksum": self.checksum,
            "etag": self.etag,
            "version": self.version,
            "last_modified": None if modified is None else modified.isoformat(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, registry: StorageRegistry | None = None
    ) -> FileObject:
        """Rebuild a FileObject from :meth:`to_dict` output."""
        if len(data) == _FIELD_COUNT:  # every field, as to_dict writes them (every ORM load)
            try:
                backend, filename, path = data["backend"], data["filename"], data["path"]
                fast = (backend is None or type(backend) is str) and type(filename) is type(
                    path
                ) is str
                if fast:
                    # The fields are set directly, as __init__ would set them
                    # (tests/test_file_object.py holds the two equal).
                    file = cls.__new__(cls)
                    file._registry = registry or storages
                    file._storage = None
                    file._backend_key = backend
                    file.filename, file.path, file._path_given = filename, path, True
                    file.content_type = data["content_type"] or guess_content_type(filename)
                    file.size = data["size"]
                    file.checksum = data["checksum"]
                    file.etag = data["etag"]
                    file.version = data["version"]
                    modified = data["last_modified"]
                    file.last_modified = (
                        datetime.fromisoformat(modified) if isinstance(modified, str) else modified
                    )
                    metadata = data["metadata"]
                    file.metadata = dict(metadata) if metadata else {}
                    file._pending = None
                    file._in_row = None
                    return file
            except KeyError:
                pass  # another field among the ten: checked below
        if not _FIELD_SET.issuperset(data):
            unknown = set(data) - _FIELD_SET
            raise ConfigurationError(
                f"unknown FileObject fields {sorted(unknown)}; expected some of {list(_FIELDS)}"
            )
        backend, filename, path = data.get("backend"), data.get("filename"), data.get("path")
        if (backend is None or type(backend) is str) and type(filename) is type(path) is str:
            return cls.from_dict({name: data.get(name) for name in _FIELDS}, registry=registry)
        kwargs = dict(data)
        modified = kwargs.get("last_modified")
        if isinstance(modified, str):
            kwargs["last_modified"] = datetime.fromisoformat(modified)
        return cls(registry=registry, **kwargs)

    # -- saving -----------------------------------------------------------------------------

    def _content_to_save(self, content: Content | None) -> Content:
        chosen = content if content is not None else self._pending
        if chosen is None:
            raise ConfigurationError(
                f"nothing to save for {self.path!r}: pass content to save() or to FileObject()"
            )
        return chosen

    def _save_kwargs(
        self,
        chunk_size: int,
        max_concurrency: int,
        overwrite: bool,
        checksum: str | None = None,
    ) -> dict[str, Any]:
        # Without an explicit digest, content copied from a recorded file is hashed with
        # the recorded algorithm (so the two compare); new content with the backend's.
        if checksum is None:
            checksum = checksums.algorithm_of(self.checksum) or BACKEND_DEFAULT
        metadata = self.metadata
        return {
            "content_type": self.content_type,
            "metadata": {k: str(v) for k, v in metadata.items()} if metadata else None,
            "chunk_size": chunk_size,
            "max_concurrency": max_concurrency,
            "overwrite": overwrite,
            "checksum": checksum,
        }

    def _saved(self, result: PutResult) -> FileObject:
        self.size = result.size
        self.checksum = result.checksum
        self.etag = result.etag
        self.version = result.version
        self.last_modified = datetime.now(timezone.utc)
        self._pending = None
        return self

    def save(
        self,
        content: Content | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        overwrite: bool = True,
        checksum: str | None = BACKEND_DEFAULT,
        validators: Iterable[ValidatorLike] | None = None,
    ) -> FileObject:
        """Write ``content`` (or the pending content) to the backend, streaming it.

        Content larger than ``chunk_size`` goes up as one multipart upload with
        ``max_concurrency`` parts in flight. Records size, checksum, etag and version; makes
        exactly one upload and no other request. ``checksum`` names the digest recorded
        (``"default"``: the backend's ``checksum_algorithm``, BLAKE3 unless configured;
        ``"sha256"`` or any :mod:`hashlib` name; ``"xxh3-128"`` with ``storeroom[xxhash]``,
        fast but not tamper-evident; None records none). With
        ``overwrite=False`` the write is create-only and raises
        :class:`~storeroom.errors.ObjectExists` if the path is taken. ``validators``
        (:mod:`storeroom.media.validation`) check the bytes as they stream: a refused file
        raises :class:`~storeroom.errors.ValidationError` and is not stored (an object it
        would have replaced is kept); what the bytes reveal goes into ``metadata``. Returns
        self.
        """
        data = self._content_to_save(content)
        if validators is not None:
            data = screened(self, data, validators)
        storage = self._storage or self.storage
        kwargs = self._save_kwargs(chunk_size, max_concurrency, overwrite, checksum)
        result = storage.put(self.path, data, **kwargs)
        return self._saved(result)

    async def save_async(
        self,
        content: Content | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        overwrite: bool = True,
        checksum: str | None = BACKEND_DEFAULT,
        validators: Iterable[ValidatorLike] | None = None,
    ) -> FileObject:
        """Async form of :meth:`save`; also accepts async iterables and async file objects."""
        data = self._content_to_save(content)
        if validators is not None:
            data = screened_async(self, data, validators)
        storage = self._storage or self.storage
        kwargs = self._save_kwargs(chunk_size, max_concurrency, overwrite, checksum)
        return self._saved(await storage.put_async(self.path, data, **kwargs))

    # -- reading ----------------------------------------------------------------------------

    def _verifier(self) -> Meter:
        return Meter.expecting(self.checksum)

    def _verify(self, meter: Meter) -> None:
        self._check(meter.size, meter.checksum)

    def _check(self, size: int, checksum: str | None) -> None:
        """Raise :class:`IntegrityError` unless ``size`` and ``checksum`` match the record."""
        if self.size is not None and size != self.size:
            raise IntegrityError(
                f"{self.path!r} in backend {self.backend!r} has {size} bytes, but "
                f"{self.size} were recorded when it was saved"
            )
        recorded = self.checksum
        if recorded and checksum != recorded and not checksums.matches(recorded, checksum):
            raise IntegrityError(
                f"{self.path!r} in backend {self.backend!r} does not match its recorded "
                f"checksum {recorded}; it was changed or corrupted in the store"
            )

    def _whole_meter(self) -> Meter:
        return Meter.expecting(self.checksum, background=True)

    def iter_chunks(self, chunk_size: int = DEFAULT_READ_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the whole file; its size and checksum are verified at the end.

        Raises :class:`ObjectNotFound` before yielding when the object is missing, and
        :class:`IntegrityError` after the last chunk when the bytes do not match.
        """
        chunks = self.storage.stream(self.path, chunk_size=chunk_size)
        return self._verified(chunks)

    def _verified(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        meter = self._verifier()
        try:
            yield from meter.wrap(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self._verify(meter)

    async def aiter_chunks(self, chunk_size: int = DEFAULT_READ_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Async form of :meth:`iter_chunks`: ``async for chunk in await f.aiter_chunks()``."""
        chunks = await self.storage.stream_async(self.path, chunk_size=chunk_size)
        return self._averified(chunks)

    async def _averified(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        meter = self._verifier()
        try:
            async for chunk in chunks:
                yield meter.update(chunk)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        self._verify(meter)

    def _verified_bytes(self, data: bytes, check: checksums.HexCheck | None) -> bytes:
        if check is None:
            if len(data) != self.size:
                self._check(len(data), None)
        elif (found := check[0](data)) != check[1] or len(data) != self.size:
            algorithm = str(self.checksum).partition(":")[0]
            self._check(len(data), f"{algorithm}:{found}")  # else nothing to look into
        return data

    def get_content(self) -> bytes:
        """The whole file in memory, verified. For large files use :meth:`iter_chunks`.

        Read into one buffer (straight from the file on local disk) and checked against
        the recorded size and checksum; :class:`IntegrityError` when they differ.
        """
        # Known to be large: hash in a worker thread while the rest arrives. Otherwise one
        # digest of the bytes read costs less than feeding a hasher chunk by chunk.
        if (size := self.size) is None or size < checksums.BACKGROUND_THRESHOLD:
            check = checksums.hex_check(self.checksum)  # a bad record fails before I/O
            # self.storage, without a property call (every small read of a loaded row).
            key, storage = self._backend_key, self._storage
            if storage is None:
                storage = self.storage if key is None else self._registry.get_backend(key)
            return self._verified_bytes(storage.get(self.path), check)
        meter = self._whole_meter()
        data = self.storage.get(self.path, meter=meter)
        settled = meter.settled()
        if settled is not None:
            settled.result()
        self._verify(meter)
        return data

    async def get_content_async(self) -> bytes:
        """Async form of :meth:`get_content`."""
        size = self.size  # as in get_content
        if size is None or size < checksums.BACKGROUND_THRESHOLD:
            check = checksums.hex_check(self.checksum)
            key, storage = self._backend_key, self._storage
            if storage is None:
                storage = self.storage if key is None else self._registry.get_backend(key)
            data = await storage.get_async(self.path)
            if check is not None and len(data) >= checksums.BACKGROUND_THRESHOLD:
                return await asyncio.to_thread(self._verified_bytes, data, check)
            return self._verified_bytes(data, check)
        meter = self._whole_meter()
        data = await self.storage.get_async(self.path, meter=meter)
        settled = meter.settled()
        if settled is not None:
            await asyncio.wrap_future(settled)
        self._verify(meter)
        return data

    def read_range(self, start: int, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the file (to the end when ``end`` is None)."""
        return self.storage.get(self.path, start=start, end=end)

    async def read_range_async(self, start: int, end: int | None = None) -> bytes:
        """Async form of :meth:`read_range`."""
        return await self.storage.get_async(self.path, start=start, end=end)

    def open(self, chunk_size: int = DEFAULT_READ_CHUNK_SIZE) -> io.BufferedReader:
        """A seekable, buffered binary reader; seeks become ranged reads."""
        size = self.size if self.size is not None else self.refresh().size
        raw = ObjectReader(self.storage, self.path, size or 0, chunk_size, checksum=self.checksum)
        return io.BufferedReader(raw, buffer_size=chunk_size)

    async def open_async(self, chunk_size: int = DEFAULT_READ_CHUNK_SIZE) -> AsyncObjectReader:
        """Async form of :meth:`open`."""
        size = self.size if self.size is not None else (await self.refresh_async()).size
        return AsyncObjectReader(
            self.storage, self.path, size or 0, chunk_size, checksum=self.checksum
        )

    # -- metadata ---------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the object is in the backend."""
        return self.storage.exists(self.path)

    async def exists_async(self) -> bool:
        """Async form of :meth:`exists`."""
        return await self.storage.exists_async(self.path)

    def _refreshed(self, info: ObjectInfo) -> FileObject:
        self.size = info.size
        self.etag = info.etag
        self.version = info.version
        self.last_modified = info.last_modified
        if info.content_type:
            self.content_type = info.content_type
        return self

    def refresh(self) -> FileObject:
        """Update size, etag, version, last modified (and content type) from the store."""
        return self._refreshed(self.storage.head(self.path))

    async def refresh_async(self) -> FileObject:
        """Async form of :meth:`refresh`."""
        return self._refreshed(await self.storage.head_async(self.path))

    def delete(self) -> None:
        """Delete the object from its backend (a missing object is not an error)."""
        self.storage.delete(self.path)

    async def delete_async(self) -> None:
        """Async form of :meth:`delete`."""
        await self.storage.delete_async(self.path)

    # -- copying ----------------------------------------------------------------------------

    def _copy_target(self, backend: str | StorageBackend, path: str | None) -> FileObject:
        target = FileObject(
            backend=backend,
            filename=self.filename,
            path=path or self.path,
            content_type=self.content_type,
            size=self.size,
            checksum=self.checksum,
            metadata=_variants_moved(self.metadata, self.path, path or self.path),
            registry=self._registry,
        )
        if target.storage is self.storage and target.path == self.path:
            raise ConfigurationError(
                f"copy_to() would copy {self.path!r} onto itself in backend {self.backend!r}; "
                "give another path or backend"
            )
        return target

    def _copy_args(self, chunk_size: int) -> dict[str, Any]:
        return {
            "size": self.size,
            "checksum": self.checksum,
            "content_type": self.content_type,
            "metadata": {k: str(v) for k, v in self.metadata.items()},
            "chunk_size": chunk_size,
        }

    @staticmethod
    def _copied(target: FileObject, result: transfer.Transfer) -> FileObject:
        target.size = result.size
        target.checksum = result.checksum
        target.etag = result.etag
        target.version = result.version
        target.last_modified = datetime.now(timezone.utc)
        return target

    def copy_to(
        self,
        backend: str | StorageBackend,
        path: str | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        overwrite: bool = True,
    ) -> FileObject:
        """Copy the file to ``backend`` (a key or instance), returning the new FileObject.

        Within one backend the store copies server-side and the copy's size is checked;
        between backends the bytes stream through this process and their size and checksum
        are verified against the recorded ones (see :mod:`storeroom.backends.transfer`).
        Raises :class:`IntegrityError` (and deletes the copy) when they differ. With
        ``overwrite=False`` the copy is create-only: :class:`ObjectExists` when ``path`` is
        taken, whose object is left untouched (such a copy streams, verified, even within
        one backend).
        """
        target = self._copy_target(backend, path)
        result = transfer.copy(
            self.storage,
            self.path,
            target.storage,
            target.path,
            overwrite=overwrite,
            **self._copy_args(chunk_size),
        )
        return self._copied(target, result)

    async def copy_to_async(
        self,
        backend: str | StorageBackend,
        path: str | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        overwrite: bool = True,
    ) -> FileObject:
        """Async form of :meth:`copy_to`."""
        target = self._copy_target(backend, path)
        result = await transfer.copy_async(
            self.storage,
            self.path,
            target.storage,
            target.path,
            overwrite=overwrite,
            **self._copy_args(chunk_size),
        )
        return self._copied(target, result)

    # -- variants ---------------------------------------------------------------------------

    def variant(self, name: str) -> FileObject:
        """Variant ``name`` (declared on its ``StoredObject(variants=...)`` column) as a FileObject.

        Read, sign or serve it like any file. It exists once made: after the commit by a
        background job, or now with :func:`storeroom.orm.variants.ensure_variant`. Raises
        :class:`~storeroom.errors.ConfigurationError` if this file records no such variant.
        """
        records = self.metadata.get("variants")
        record = records.get(name) if isinstance(records, Mapping) else None
        if not isinstance(record, Mapping) or not isinstance(record.get("path"), str):
            known = sorted(records) if isinstance(records, Mapping) else []
            raise ConfigurationError(
                f"{self.path!r} has no variant {name!r}; it records {known or 'none'}"
            )
        return FileObject(
            backend=self._storage or self._backend_key,
            path=record["path"],
            filename=f"{name}-{self.filename}",
            content_type=record.get("content_type"),
            registry=self._registry,
        )

    # -- signing ----------------------------------------------------------------------------

    def sign(self, expires_in: int = 3600, for_upload: bool = False) -> str:
        """A URL granting download (or upload, with ``for_upload``) for ``expires_in`` seconds."""
        return self.storage.sign(
            self.path,
            expires_in=expires_in,
            for_upload=for_upload,
            content_type=self.content_type,
        )

    async def sign_async(self, expires_in: int = 3600, for_upload: bool = False) -> str:
        """Async form of :meth:`sign`."""
        return await self.storage.sign_async(
            self.path,
            expires_in=expires_in,
            for_upload=for_upload,
            content_type=self.content_type,
        )


def _variants_moved(metadata: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A copy's metadata: its variant records name its own paths, never the original's.

    A copy sharing the original's variant objects would lose them when the original is
    deleted (its variants go with it), and deleting the copy would delete the original's.
    The copy's variants are made on first request (``ensure_variant``) at these paths.
    """
    records = metadata.get("variants")
    if not isinstance(records, Mapping) or old == new:
        return metadata
    prefix = f"{old}.variants/"
    moved = {
        name: {**record, "path": f"{new}.variants/{record['path'][len(prefix) :]}"}
        for name, record in records.items()
        if isinstance(record, Mapping) and str(record.get("path", "")).startswith(prefix)
    }
    return {**metadata, "variants": moved}
