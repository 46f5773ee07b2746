"""Backends on fsspec filesystems: local disk, memory, s3fs, gcsfs, adlfs, caching wrappers..."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

from storeroom.backends.base import Method, ObjectInfo, PutResult, StorageBackend, WriteOptions
from storeroom.backends.local_root import ListingCheck, confine, real_root
from storeroom.errors import (
    BackendError,
    ConfigurationError,
    ObjectExists,
    RangeNotSatisfiable,
    StoreroomError,
)
from storeroom.masking import mask_text
from storeroom.retry import RetryPolicy

try:
    import fsspec
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem
    from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("FSSpecBackend needs fsspec: pip install 'storeroom[fsspec]'") from exc

__all__ = ["FSSpecBackend"]

T = TypeVar("T")

_ETAG_KEYS = ("ETag", "etag", "e_tag", "md5Hash")
_VERSION_KEYS = ("VersionId", "version_id", "generation")
_MODIFIED_KEYS = ("LastModified", "last_modified", "mtime", "updated", "created")
_TYPE_KEYS = ("ContentType", "content_type", "contentType")


def _first(info: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = info.get(key)
        if value is not None:
            return value
    return None


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _protocol_name(fs: AbstractFileSystem) -> str:
    protocol = fs.protocol
    return str(protocol[0] if isinstance(protocol, (tuple, list)) else protocol)


class FSSpecBackend(StorageBackend):
    """A backend on any fsspec filesystem, below an optional ``prefix``.

    ``fs`` is a protocol name (``"file"``, ``"memory"``, ``"s3"``, ``"gcs"``...) built with
    ``storage_options``, or a filesystem instance (s3fs with server-side encryption, a
    ``filecache`` wrapper...). The same instance serves sync and async code: async calls run
    the filesystem's blocking API in a worker thread (for async filesystems such as s3fs that
    API drives the filesystem's own event loop, so the instance never gets attached to the
    caller's loop). Writes are atomic: a failed upload leaves no partial object. Idempotent
    operations (reads, head, list, delete, copy, single-request saves) are retried under
    ``retry``; set timeouts through the filesystem's own options (e.g. s3fs
    ``config_kwargs={"connect_timeout": 5, "read_timeout": 30}``).

    Filesystem options are passed as keyword arguments or, for any option whose name is
    one of this constructor's own (``key``, ``fs``, ``prefix``, ``retry``, ``storage_options``:
    s3fs calls its access key id ``key``), in the ``storage_options`` mapping, as fsspec
    itself takes them; every option of the filesystem is accepted either way. Local roots
    never follow symbolic links (:mod:`storeroom.backends.local_root`).

    Example::

        FSSpecBackend(key="uploads", fs="file", prefix="/var/app/uploads")
        FSSpecBackend("media", "s3", prefix="bucket/media",
                      storage_options={"key": "AKIA...", "secret": "..."})
    """

    def __init__(
        self,
        key: str,
        fs: str | AbstractFileSystem,
        prefix: str = "",
        *,
        retry: RetryPolicy | Mapping[str, Any] | int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(key)
        self.retry = RetryPolicy.from_value(retry)
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise ConfigurationError(
                f"backend {key!r}: storage_options must be a mapping of filesystem options, "
                f"got {type(storage_options).__name__}"
            )
        both = sorted(set(storage_options or {}) & set(options))
        if both:
            raise ConfigurationError(
                f"backend {key!r}: option(s) {', '.join(both)} given both as keywords and in "
                "storage_options; give each once"
            )
        storage_options = {**(storage_options or {}), **options}
        if isinstance(fs, str):
            options = {k: v for k, v in storage_options.items() if v is not None}
            if fs in ("file", "local"):
                options.setdefault("auto_mkdir", True)
            try:
                self.fs: AbstractFileSystem = fsspec.filesystem(fs, **options)
            except (ValueError, ImportError) as exc:
                raise ConfigurationError(
                    f"backend {key!r}: cannot create fsspec filesystem {fs!r}: {exc}"
                ) from exc
            except TypeError as exc:
                raise ConfigurationError(
                    f"backend {key!r}: fsspec filesystem {fs!r} rejected its options "
                    f"({', '.join(sorted(options))}): {exc}"
                ) from exc
        elif isinstance(fs, AbstractFileSystem):
            if storage_options:
                raise ConfigurationError(
                    f"backend {key!r}: options ({', '.join(sorted(storage_options))}) cannot "
                    "be applied to a filesystem instance; pass them when creating it"
                )
            self.fs = fs
        else:
            raise ConfigurationError(
                f"backend {key!r}: fs must be an fsspec protocol name or filesystem, got "
                f"{type(fs).__name__}"
            )
        if not isinstance(prefix, str):
            raise ConfigurationError(f"backend {key!r}: prefix must be a str, got {prefix!r}")
        # s3fs, gcsfs and adlfs retry inside their own clients; storeroom must not retry again.
        self.retries_natively = hasattr(self.fs, "retries") or _protocol_name(self.fs) in (
            "s3",
            "s3a",
            "gs",
            "gcs",
            "abfs",
            "az",
            "adl",
        )
        self._local = isinstance(self.fs, LocalFileSystem)
        self._memory = isinstance(self.fs, MemoryFileSystem)
        self.served_locally = self._local or self._memory
        self.prefix = self._normalise_prefix(prefix)
        self.stores_attributes = False
        self._root = real_root(self.prefix) if self._local else None

    def _confine(self, path: str) -> None:
        if self._root is not None:
            confine(self._root, path, self.key)

    def _error(self, exc: Exception, path: str, action: str) -> StoreroomError:
        # Filesystem errors may quote the endpoint URL with its password: mask it.
        error = super()._error(exc, path, action)
        if error is not exc and mask_text(str(error)) != str(error):
            error.args = (mask_text(str(error)),)
        return error

    def _normalise_prefix(self, prefix: str) -> str:
        if self._local:
            return str(self.fs._strip_protocol(prefix or ".")).rstrip("/") or "/"
        return prefix.rstrip("/")

    @property
    def location(self) -> str:
        """Protocol and prefix, e.g. ``file:///var/app/uploads``."""
        root = self.prefix if self.prefix.startswith("/") else "/" + self.prefix
        return f"{_protocol_name(self.fs)}://{root.rstrip('/')}"

    def _full(self, path: str) -> str:
        if not self.prefix:
            return path
        if self.prefix == "/":
            return "/" + path
        return f"{self.prefix}/{path}"

    def _relative(self, full: str) -> str:
        stripped = str(self.fs._strip_protocol(full))
        root = str(self.fs._strip_protocol(self.prefix)) if self.prefix else ""
        root = root.rstrip("/")
        if root and stripped.startswith(root + "/"):
            return stripped[len(root) + 1 :]
        return stripped.lstrip("/")

    def _translate(self, exc: Exception, path: str) -> StoreroomError | None:
        if isinstance(exc, FileNotFoundError):
            return self._not_found(path)
        if isinstance(exc, PermissionError):
            return BackendError(
                f"backend {self.key!r} ({self.location}) refused access to {path!r}: check "
                "its credentials and permissions"
            )
        if isinstance(exc, NotImplementedError):
            return BackendError(
                f"backend {self.key!r}: the {_protocol_name(self.fs)!r} filesystem does not "
                f"support this operation on {path!r}"
            )
        return None

    @staticmethod
    async def _in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(func, *args, **kwargs)

    # -- writing ----------------------------------------------------------------------------

    def _prepare_dirs(self, full: str) -> None:
        if self._local:
            self.fs.makedirs(self.fs._parent(full), exist_ok=True)

    def _begin(self, path: str, opts: WriteOptions) -> tuple[str, Any]:
        self._confine(path)
        full = self._full(path)
        if opts.create_only:
            self._refuse_existing(path, full)
        if self._memory:
            return full, io.BytesIO()
        self._prepare_dirs(full)
        return full, self.fs.open(full, "wb", autocommit=False, block_size=opts.chunk_size)

    def _refuse_existing(self, path: str, full: str) -> None:
        # fsspec has no conditional write: create-only is a check before the write and
        # again before the commit (documented as best effort on fsspec filesystems).
        if self.fs.exists(full):
            raise ObjectExists(
                f"object {path!r} already exists in backend {self.key!r} and the write was "
                "create-only (overwrite=False); nothing was changed. Choose a new path."
            )

    def _finish(self, path: str, full: str, handle: Any, opts: WriteOptions) -> None:
        if opts.create_only:
            self._refuse_existing(path, full)
        if self._memory:
            self.fs.pipe_file(full, handle.getvalue())
            return
        handle.close()
        handle.commit()

    @staticmethod
    def _abort(handle: Any) -> None:
        if isinstance(handle, io.BytesIO):
            return
        try:
            handle.discard()
        except Exception:
            pass
        if isinstance(handle, AbstractBufferedFile):
            # Discarded: closing it later (e.g. at garbage collection) must not upload.
            handle.closed = True

    def _write(self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions) -> PutResult:
        full, handle = self._begin(path, opts)
        try:
            for chunk in [body] if isinstance(body, bytes) else body:
                handle.write(chunk)
            self._finish(path, full, handle, opts)
        except BaseException:
            self._abort(handle)
            raise
        return PutResult(path, 0, None, None, None)

    async def _write_async(
        self, path: str, body: bytes | AsyncIterator[bytes], opts: WriteOptions
    ) -> PutResult:
        full, handle = await self._in_thread(self._begin, path, opts)
        try:
            if isinstance(body, bytes):
                await self._in_thread(handle.write, body)
            else:
                async for chunk in body:
                    await self._in_thread(handle.write, chunk)
            await self._in_thread(self._finish, path, full, handle, opts)
        except BaseException:
            await self._in_thread(self._abort, handle)
            raise
        return PutResult(path, 0, None, None, None)

    # -- reading ----------------------------------------------------------------------------

    def _open_read(self, path: str, start: int, chunk_size: int) -> Any:
        self._confine(path)
        full = self._full(path)
        info = self.fs.info(full)
        if info.get("type") == "directory":
            raise FileNotFoundError(full)
        if start and start >= int(info.get("size") or 0):
            raise RangeNotSatisfiable(
                f"byte range requested from {path!r} in backend {self.key!r} starts at "
                f"{start}, beyond the end of the object ({info.get('size')} bytes)"
            )
        handle = self.fs.open(full, "rb", block_size=chunk_size)
        if start:
            handle.seek(start)
        return handle

    @staticmethod
    def _next_size(remaining: int | None, chunk_size: int) -> int:
        return chunk_size if remaining is None else min(chunk_size, remaining)

    def _read(self, path: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        handle = self._open_read(path, start, chunk_size)
        return self._chunks(handle, None if end is None else end - start, chunk_size)

    def _chunks(self, handle: Any, remaining: int | None, chunk_size: int) -> Iterator[bytes]:
        with handle:
            while remaining is None or remaining > 0:
                chunk = handle.read(self._next_size(remaining, chunk_size))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def _read_async(
        self, path: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        handle = await self._in_thread(self._open_read, path, start, chunk_size)
        return self._achunks(handle, None if end is None else end - start, chunk_size)

    async def _achunks(
        self, handle: Any, remaining: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        try:
            while remaining is None or remaining > 0:
                size = self._next_size(remaining, chunk_size)
                chunk = await self._in_thread(handle.read, size)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await self._in_thread(handle.close)

    def _info(self, path: str, info: dict[str, Any]) -> ObjectInfo:
        etag = _first(info, _ETAG_KEYS)
        version = _first(info, _VERSION_KEYS)
        return ObjectInfo(
            path=path,
            size=int(info.get("size") or 0),
            etag=str(etag) if etag is not None else None,
            last_modified=_as_datetime(_first(info, _MODIFIED_KEYS)),
            version=str(version) if version is not None else None,
            content_type=_first(info, _TYPE_KEYS),
        )

    def _head(self, path: str) -> ObjectInfo:
        self._confine(path)
        info = self.fs.info(self._full(path))
        if info.get("type") == "directory":
            raise FileNotFoundError(path)
        return self._info(path, info)

    async def _head_async(self, path: str) -> ObjectInfo:
        return await self._in_thread(self._head, path)

    # -- the rest ---------------------------------------------------------------------------

    def _delete(self, path: str) -> None:
        self._confine(path)
        try:
            self.fs.rm_file(self._full(path))
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self._full(path))

    async def _delete_async(self, path: str) -> None:
        await self._in_thread(self._delete, path)

    def _find(self, prefix: str) -> list[ObjectInfo]:
        root = self._full(prefix) if prefix else (self.prefix or "")
        try:
            found = self.fs.find(root or "/", detail=True)
        except FileNotFoundError:
            return []
        infos = []
        check = None if self._root is None else ListingCheck(self._root)
        for full, info in sorted(found.items()):
            if info.get("type", "file") != "file":
                continue
            relative = self._relative(full)
            if check is not None and not check.contained(relative):
                continue  # behind a link: not this backend's object
            infos.append(self._info(relative, info))
        return infos

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        yield from self._find(prefix)

    async def _list_async(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for info in await self._in_thread(self._find, prefix):
            yield info

    def _copy(self, src: str, dst: str) -> None:
        self._confine(src)
        self._confine(dst)
        full_src, full_dst = self._full(src), self._full(dst)
        if not self.fs.isfile(full_src):
            raise FileNotFoundError(src)
        self._prepare_dirs(full_dst)
        self.fs.copy(full_src, full_dst)

    async def _copy_async(self, src: str, dst: str) -> None:
        await self._in_thread(self._copy, src, dst)

    def signs_natively(self, method: Method) -> bool:
        """Filesystems with a ``sign`` method (s3fs, gcsfs) sign downloads; nothing signs PUT."""
        if method != "GET" or self._local or self._memory:
            return False
        return type(self.fs).sign is not AbstractFileSystem.sign

    def _sign(self, path: str, method: Method, expires_in: int, content_type: str | None) -> str:
        if not self.signs_natively(method):
            raise self._signing_not_supported()
        try:
            return str(self.fs.sign(self._full(path), expiration=expires_in))
        except NotImplementedError:
            raise self._signing_not_supported() from None

    async def _sign_async(
        self, path: str, method: Method, expires_in: int, content_type: str | None
    ) -> str:
        return await self._in_thread(self._sign, path, method, expires_in, content_type)
