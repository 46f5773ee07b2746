"""Backends on obstore: S3 and compatible servers (MinIO), GCS, Azure Blob, local disk, memory."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import re
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnknownConfigurationKeyError,
)
from obstore.store import (
    AzureStore,
    GCSStore,
    HTTPStore,
    LocalStore,
    MemoryStore,
    S3Store,
    from_url,
)

from storeroom.backends.base import (
    ListedBatch,
    Method,
    ObjectInfo,
    PutResult,
    StorageBackend,
    WriteOptions,
    collect,
    collect_async,
)
from storeroom.backends.local_listing import LIST_CHUNK, list_batches
from storeroom.backends.local_root import (
    ListingCheck,
    confine,
    open_confined,
    open_folder,
    real_root,
    stat_confined,
)
from storeroom.backends.obstore import local_files
from storeroom.backends.obstore.credentials import CredentialPlan, plan_credentials
from storeroom.backends.obstore.options import (
    split_options,
    store_kind,
    unknown_option_error,
)
from storeroom.errors import (
    BackendError,
    ConfigurationError,
    ObjectExists,
    RangeNotSatisfiable,
    StoreroomError,
)
from storeroom.masking import mask_text
from storeroom.retry import RetryPolicy, timeout_option
from storeroom.streams import Meter

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ObjectStore

__all__ = ["ObstoreBackend"]

# Paths obstore maps to the same file name on local disk (no percent-encoding involved);
# only these take the direct-file fast path for whole reads.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._\-]+(?:/[A-Za-z0-9._\-]+)*")
# A whole read of an object larger than _WHOLE_CHUNK streams its body into a result made
# at the announced size (see collect). Sync reads take pieces of _FILL_CHUNK: obstore's
# joining of network frames into a piece stays in the CPU's cache, and the Python work per
# piece does not count. Async reads take pieces of _WHOLE_CHUNK: each piece awaited costs
# a wake-up of the event loop, which outweighs the copy (measured on moto S3, 256 MiB:
# 256 KiB pieces 519 MiB/s, 4 MiB pieces 604 MiB/s).
_WHOLE_CHUNK = 4 * 1024 * 1024
_FILL_CHUNK = 256 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_REPLACING = WriteOptions()  # a copy within a local store replaces what is at its target
# Why a hard link could not be made: another filesystem, one without hard links, too many
# links to the file, no /proc to name the open file by.
_NO_HARD_LINK = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOENT, errno.ENOTDIR}
)
# The most an async call reads from local disk, or copies in and out of the memory store,
# without leaving the event loop: below it a hop to a worker thread or obstore's async
# runtime costs more than the work itself.
_INLINE = 1024 * 1024
# The most an async call writes to local disk without leaving the event loop (creating a
# file is metadata work for the filesystem, slower than a read).
_INLINE_WRITE = 64 * 1024
# Objects per batch of a listing. obstore's default is 50, and each batch takes the GIL
# back: next to a busy Python thread that costs up to a switch interval (5 ms) per batch.
# Listing 101,000 local files took 11.6 s instead of 0.7 s; with 1,000 per batch, 1.5 s.
_KIND_OF_STORE: tuple[tuple[type[Any], str], ...] = (
    (S3Store, "s3"),
    (GCSStore, "gcs"),
    (AzureStore, "azure"),
    (LocalStore, "local"),
    (MemoryStore, "memory"),
    (HTTPStore, "http"),
)


def _public_url(url: str) -> str:
    """``url`` without userinfo, query or fragment (which may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        return f"{parts.scheme}://{parts.path}"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _absolute_file_url(url: str) -> str:
    """``file://./dir``, ``file:dir`` and ``file://~/dir`` as absolute ``file:///...`` URLs."""
    if not url.lower().startswith("file:"):
        return url
    rest = url[5:]
    if rest.startswith("///"):
        return url
    rest = rest[2:] if rest.startswith("//") else rest
    return "file://" + os.path.abspath(os.path.expanduser(rest))


def _info(meta: ObjectMeta, attributes: Mapping[str, Any] | None = None) -> ObjectInfo:
    if not attributes:  # every listed object: no attributes to sort out
        return ObjectInfo(
            meta["path"],
            meta["size"],
            meta.get("e_tag"),
            meta.get("last_modified"),
            meta.get("version"),
        )
    attributes = dict(attributes)
    content_type = attributes.pop("Content-Type", None)
    for standard in (
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Cache-Control",
        "Storage-Class",
    ):
        attributes.pop(standard, None)
    return ObjectInfo(
        path=meta["path"],
        size=meta["size"],
        etag=meta.get("e_tag"),
        last_modified=meta.get("last_modified"),
        version=meta.get("version"),
        content_type=content_type,
        metadata={str(k): str(v) for k, v in attributes.items()},
    )


def _is_metadata_key(kind: str, name: str) -> bool:
    # Azure stores user metadata as C# identifiers; other stores take any header-safe token.
    if kind == "azure":
        return name.isidentifier() and name.isascii()
    return name.isascii() and all(ch.isalnum() or ch in "-_." for ch in name)


class ObstoreBackend(StorageBackend):
    """A backend on an obstore store, built from a URL and options or given as an instance.

    ``fs`` is a URL (``s3://bucket/prefix``, ``gs://``, ``az://``/``abfs://``,
    ``file:///dir``, ``memory://``) or an obstore store. Options use obstore's names
    (``aws_access_key_id``, ``aws_endpoint``, ``aws_region``, ``google_service_account``,
    ``azure_account_name``...). Options whose value is None are ignored, client options such
    as ``aws_allow_http`` or ``timeout`` may be given directly, and
    ``azure_storage_connection_string`` is understood. Local directories are created when
    missing. ``retry`` (a :class:`~storeroom.retry.RetryPolicy`, a mapping of its fields or a
    number of attempts) becomes obstore's retry configuration, so requests are retried by
    obstore's client and never twice; ``timeout`` (seconds or a duration such as ``"30s"``)
    bounds each request.

    Example::

        ObstoreBackend(key="private", fs="s3://private/", aws_region="us-east-1")
    """

    retries_natively = True

    def __init__(
        self,
        key: str,
        fs: str | ObjectStore,
        *,
        retry: RetryPolicy | Mapping[str, Any] | int | None = None,
        timeout: float | str | timedelta | None = None,
        **options: Any,
    ) -> None:
        super().__init__(key)
        # Whether a local file is deleted by one unlink here: only on a store built here
        # without automatic_cleanup (obstore then also removes emptied directories).
        self._unlinks = False
        #: Where the credentials come from (see :mod:`storeroom.backends.obstore.credentials`).
        self.credential_plan = CredentialPlan("unknown", "configured on the store instance")
        self.retry = RetryPolicy.from_value(retry)
        if isinstance(fs, str):
            fs = _absolute_file_url(fs)
            self._kind = store_kind(fs)
            self._url = _public_url(fs)
            if timeout is not None:
                options = {**options, "timeout": timeout_option(timeout)}
            options.setdefault("retry_config", self.retry.obstore_config())
            self.store: ObjectStore = self._build(fs, options)
        else:
            kinds = [kind for cls, kind in _KIND_OF_STORE if isinstance(fs, cls)]
            if not kinds:
                raise ConfigurationError(
                    f"backend {key!r}: fs must be a storage URL or an obstore store, got "
                    f"{type(fs).__name__}"
                )
            if options or timeout is not None:
                raise ConfigurationError(
                    f"backend {key!r}: options ({', '.join(sorted(options))}) cannot be "
                    "applied to an obstore store instance; pass them when creating the store "
                    "or pass a URL as fs"
                )
            self._kind = kinds[0]
            prefix = getattr(fs, "prefix", None)  # a LocalStore's is a pathlib.Path
            self._url = f"{self._kind}://" + (str(prefix) if prefix else "")
            self.store = fs
        self.stores_attributes = self._kind not in ("local", "http")
        self.served_locally = self._kind in ("local", "memory")
        # Local roots never follow links (storeroom.backends.local_root).
        self._root = _local_root(self.store) if self._kind == "local" else None
        self._bucket_root: Any = None  # the store at the bucket's root, made at a first need

    def _confine(self, *paths: str) -> None:
        if self._root is not None:
            for path in paths:
                confine(self._root, path, self.key)

    def _build(self, url: str, options: Mapping[str, Any]) -> ObjectStore:
        split = split_options(self._kind, options)
        self.credential_plan = plan_credentials(
            self._kind,
            split.config,
            credential_provider=split.credential_provider,
            aws_profile=split.aws_profile,
        )
        if self.credential_plan.provider is not None:
            split.credential_provider = self.credential_plan.provider
        self._unlinks = self._kind == "local" and not split.local.get("automatic_cleanup")
        try:
            return from_url(url, **split.as_kwargs())
        except UnknownConfigurationKeyError as exc:
            name = _unknown_key(str(exc)) or "?"
            raise unknown_option_error(self._kind, name, self.key) from exc
        except TypeError as exc:
            raise ConfigurationError(f"backend {self.key!r}: invalid option value: {exc}") from exc
        except BaseException as exc:
            # obstore raises a PanicException (a BaseException) for some option mixes.
            if type(exc).__name__ != "PanicException" and not isinstance(exc, Exception):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            message = mask_text(message)
            if "not a valid checksum algorithm" in message:
                message += _S3_CHECKSUM_HINT
            raise ConfigurationError(
                f"backend {self.key!r}: obstore rejected the options for {self._url!r} "
                f"({', '.join(sorted(options))}): {message}"
            ) from exc

    @property
    def location(self) -> str:
        """The store URL, without credentials."""
        return self._url

    @property
    def kind(self) -> str:
        """'s3', 'gcs', 'azure', 'local', 'memory' or 'http'."""
        return self._kind

    def _translate(self, exc: Exception, path: str) -> StoreroomError | None:
        if isinstance(exc, (FileNotFoundError, NotFoundError)):
            return self._not_found(path)
        missing = self._missing_credentials(exc)
        if missing is not None:
            return missing
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
            return BackendError(
                f"backend {self.key!r} ({self._url}) refused access to {path!r}: check its "
                f"credentials and permissions ({type(exc).__name__})"
            )
        if isinstance(exc, AlreadyExistsError):
            return self._taken(path)
        message = str(exc).lower()
        if "range" in message and ("invalid" in message or "not satisfiable" in message):
            return RangeNotSatisfiable(
                f"byte range requested from {path!r} in backend {self.key!r} starts at or "
                "beyond the end of the object"
            )
        return None

    def _error(self, exc: Exception, path: str, action: str) -> StoreroomError:
        # obstore's messages quote the request URL, endpoint password included: mask it
        # before the message reaches an exception, an event or a log line.
        error = super()._error(exc, path, action)
        if error is not exc:
            text = str(error)
            masked = mask_text(text)
            if masked != text:
                error.args = (masked,)
        return error

    def _missing_credentials(self, exc: Exception) -> StoreroomError | None:
        plan = self.credential_plan
        failure = getattr(plan.provider, "failure", None)
        if failure is not None and isinstance(exc, UnauthenticatedError):
            return plan.not_found(self.key, self._url, str(failure))
        if plan.resolved:
            return None
        message = str(exc).split("Debug source:")[0]
        if plan.provider is None and (
            "169.254.169.254" in message or "metadata" in message.lower()
        ):
            return plan.not_found(
                self.key, self._url, "the instance metadata service did not answer"
            )
        return None

    # -- writing ----------------------------------------------------------------------------

    def _attributes(self, opts: WriteOptions) -> dict[str, str] | None:
        if not self.stores_attributes:
            return None
        if not opts.metadata:
            return {"Content-Type": opts.content_type} if opts.content_type else None
        attributes = {
            name: value
            for name, value in opts.metadata.items()
            if _is_metadata_key(self._kind, name)
        }
        if opts.content_type:
            attributes["Content-Type"] = opts.content_type
        return attributes or None

    def _put_kwargs(self, opts: WriteOptions) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        attributes = self._attributes(opts)
        if attributes is not None:  # left out rather than None: obstore's quickest call
            kwargs["attributes"] = attributes
        if opts.multipart:
            kwargs.update(chunk_size=opts.chunk_size, max_concurrency=opts.max_concurrency)
        else:
            kwargs["use_multipart"] = False
        if opts.create_only and not (opts.multipart and self._checks_before_streaming(opts)):
            kwargs["mode"] = "create"
        return kwargs

    def _checks_before_streaming(self, opts: WriteOptions) -> bool:
        """Whether a create-only write is checked with a HEAD instead of a conditional PUT.

        obstore sends a conditional (``mode="create"``) multipart write to S3, GCS and Azure
        as one PUT, holding the whole body in memory first. Such writes stream as a normal
        multipart upload instead, once a HEAD found the path free: a writer that takes the
        path in that same instant can still win. Single PUTs, and every write on local disk
        and memory, stay atomic conditional writes.
        """
        return opts.create_only and opts.multipart and self._kind not in ("local", "memory")

    def _stages(self, body: object, opts: WriteOptions) -> bool:
        """Whether a create-only stream is written to a scratch object, then linked into place.

        A conditional (``mode="create"``) write is one PUT to obstore, which holds the whole
        body in memory first (measured: a 200 MiB stream grew the process by 202 MiB on local
        disk). On the memory store (and on local disk for a path that needs obstore's
        encoding: :meth:`_write_local` writes the others) a create-only stream is therefore
        written as a normal multipart upload to a scratch object beside its path, then
        copied there with copy-if-not-exists (a hard link on local disk): still atomic and
        create-only, and flat in memory. A crash in between leaves the scratch object,
        which ``storeroom gc`` finds as an orphan.
        """
        return (
            opts.create_only
            and opts.multipart
            and self._kind in ("local", "memory")
            and not isinstance(body, bytes)
        )

    def _link_into_place(self, scratch: str, path: str) -> None:
        try:
            obstore.copy(self.store, scratch, path, overwrite=False)
        except AlreadyExistsError:
            raise self._taken(path) from None
        finally:
            obstore.delete(self.store, scratch)

    def _write_local(
        self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions
    ) -> PutResult | None:
        """Write ``body`` (bytes, or chunks as they come) to a local store's file directly,
        as obstore would; None when this store is not local disk or the path needs obstore's
        encoding: obstore writes it.

        Like obstore's LocalStore: the bytes go to a file beside the path (unnamed, on
        Linux), which is then renamed over it (replacing what was there, atomically) or,
        create-only, linked to it (failing if anything is there, a link included); the
        etag is obstore's (inode, modification time in microseconds, size), so
        :meth:`head` agrees with it. The folder is opened through no link
        (:func:`open_folder`) and every name is made in it. Skipping obstore's runtime makes
        a small save about twice as fast, and a stream needs no scratch object to be
        create-only.
        """
        new = self._begin_local(path)
        if new is None:
            return None
        if isinstance(body, bytes):
            try:
                local_files.write_all(new.fd, body)
                return self._finish_local(new, path, opts)
            finally:
                new.close()
        writing: concurrent.futures.Future[None] | None = None  # the last batch's write
        batch = local_files.Batch()
        try:
            for chunk in body:
                if batch.add(chunk):  # a batch is full: written in a thread meanwhile
                    if writing is not None:
                        writing.result()  # in order: the previous batch is written first
                    writing = local_files.local_writer().submit(
                        local_files.write_parts, new.fd, batch.take()
                    )
            if writing is not None:
                writing.result()
            local_files.write_parts(new.fd, batch.take())
            return self._finish_local(new, path, opts)
        finally:
            if writing is not None:
                concurrent.futures.wait([writing])  # its file is not closed under it
            new.close()

    async def _write_local_async(
        self, path: str, body: bytes | AsyncIterator[bytes], opts: WriteOptions
    ) -> PutResult | None:
        """Async form of :meth:`_write_local`: a body up to ``_INLINE_WRITE`` bytes is
        written in the event loop, larger ones batch by batch in a worker thread. A save
        cancelled while a batch is written waits for that write before the file is closed
        and dropped."""
        if isinstance(body, bytes) and len(body) <= _INLINE_WRITE:
            return self._write_local(path, body, opts)  # a thread hop would cost more
        new = self._begin_local(path)
        if new is None:
            return None
        writing: asyncio.Future[None] | None = None  # the last batch's write
        batch = local_files.Batch()

        def start(parts: list[bytes]) -> asyncio.Future[None]:
            return asyncio.ensure_future(asyncio.to_thread(local_files.write_parts, new.fd, parts))

        try:
            async for chunk in _single(body) if isinstance(body, bytes) else body:
                if batch.add(chunk):  # a batch is full: written in a thread meanwhile
                    if writing is not None:
                        await asyncio.shield(writing)  # in order: the previous batch first
                    writing = start(batch.take())
            if writing is not None:
                await asyncio.shield(writing)
            parts = batch.take()
            if sum(map(len, parts)) <= _INLINE_WRITE:  # a thread hop would cost more
                local_files.write_parts(new.fd, parts)
            else:
                writing = start(parts)
                await asyncio.shield(writing)
            return self._finish_local(new, path, opts)
        finally:
            if writing is not None:
                await local_files.outlive_cancellation(writing)
            new.close()

    def _begin_local(self, path: str) -> local_files.NewLocalFile | None:
        """An open file to write ``path``'s bytes to, in its folder opened through no link;
        None when this store is not local disk or the path needs obstore's encoding."""
        if self._root is None or not _PLAIN_PATH.fullmatch(path):
            return None
        folder, name = local_files.open_folder_making(self._root, path, self.key)
        try:
            fd, scratch = local_files.new_file(folder, name)
        except BaseException:
            if folder is not None:
                os.close(folder)
            raise
        return local_files.NewLocalFile(folder, name, fd, scratch)

    def _finish_local(
        self, new: local_files.NewLocalFile, path: str, opts: WriteOptions
    ) -> PutResult:
        """Name the file written as ``new`` ``path`` (replacing, or create-only)."""
        folder, name, fd = new.folder, new.name, new.fd
        found = os.fstat(fd)
        if opts.create_only:
            try:
                if new.scratch is None:  # an unnamed file: named only once it is whole
                    local_files.name_unnamed(fd, folder, name)
                else:
                    os.link(new.scratch, name, src_dir_fd=folder, dst_dir_fd=folder)
            except FileExistsError:
                self._refuse_link(folder, name, path)
                raise self._taken(path) from None
        else:
            self._refuse_link(folder, name, path)
            if new.scratch is None:
                new.scratch = local_files.scratch_path(name)
                local_files.name_unnamed(fd, folder, new.scratch)
            os.replace(new.scratch, name, src_dir_fd=folder, dst_dir_fd=folder)
            new.scratch = None  # renamed: nothing left to remove
        etag = f'"{found.st_ino:x}-{found.st_mtime_ns // 1000:x}-{found.st_size:x}"'
        return PutResult(path, 0, None, etag, None)

    def _refuse_link(self, folder: int | None, name: str, path: str) -> None:
        """Raise :class:`UnsafePath` when ``name`` in ``folder`` is a symbolic link (a
        write never replaces one, nor reports it as an existing object)."""
        if folder is None:
            return  # the whole path was checked by confine
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.lstat(name, dir_fd=folder).st_mode):
                confine(cast(str, self._root), path, self.key)

    def _taken(self, path: str) -> ObjectExists:
        return ObjectExists(
            f"object {path!r} already exists in backend {self.key!r} and the write was "
            "create-only (overwrite=False); nothing was changed. Choose a new path."
        )

    def _put_in_memory(self, path: str, body: bytes, opts: WriteOptions) -> PutResult:
        """One PUT of bytes to the memory store: a copy in this process, nothing to decide."""
        result = obstore.put(self.store, path, body, **self._put_kwargs(opts))
        return PutResult(path, 0, None, result["e_tag"], result["version"])

    def _write(self, path: str, body: bytes | Iterator[bytes], opts: WriteOptions) -> PutResult:
        if self._kind == "memory" and isinstance(body, bytes):
            return self._put_in_memory(path, body, opts)
        if (direct := self._write_local(path, body, opts)) is not None:
            return direct  # (its folder opened through no link)
        self._confine(path)
        if self._stages(body, opts):
            scratch = local_files.scratch_path(path)
            staged = self._write(scratch, body, replace(opts, create_only=False))
            self._link_into_place(scratch, path)
            return staged._replace(path=path)
        if self._checks_before_streaming(opts):
            try:
                obstore.head(self.store, path)
            except (FileNotFoundError, NotFoundError):
                pass
            else:
                raise self._taken(path)
        try:
            result = obstore.put(self.store, path, body, **self._put_kwargs(opts))
        except BaseException:
            # obstore aborts a failed multipart upload itself; an interrupted one (Ctrl-C,
            # SystemExit) may be left open on S3, and its parts would be billed invisibly.
            if opts.multipart and self.kind == "s3" and not isinstance(body, bytes):
                from storeroom.backends.obstore.multipart import abort_uploads_of

                try:
                    abort_uploads_of(self, path)
                except Exception:  # storeroom gc aborts it later
                    pass
            raise
        return PutResult(path, 0, None, result["e_tag"], result["version"])

    async def _write_async(
        self, path: str, body: bytes | AsyncIterator[bytes], opts: WriteOptions
    ) -> PutResult:
        if self._kind == "memory" and isinstance(body, bytes) and len(body) <= _INLINE:
            return self._put_in_memory(path, body, opts)  # nothing to await
        if (direct := await self._write_local_async(path, body, opts)) is not None:
            return direct  # (its folder opened through no link)
        self._confine(path)
        if self._stages(body, opts):
            scratch = local_files.scratch_path(path)
            staged = await self._write_async(scratch, body, replace(opts, create_only=False))
            await asyncio.to_thread(self._link_into_place, scratch, path)
            return staged._replace(path=path)
        if self._checks_before_streaming(opts):
            try:
                await obstore.head_async(self.store, path)
            except (FileNotFoundError, NotFoundError):
                pass
            else:
                raise self._taken(path)
        try:
            result = await obstore.put_async(self.store, path, body, **self._put_kwargs(opts))
        except BaseException:
            # A cancelled put leaves its S3 multipart upload open (obstore only aborts on
            # errors): abort it, shielded so a second cancellation cannot stop the abort.
            if opts.multipart and self.kind == "s3" and not isinstance(body, bytes):
                from storeroom.backends.obstore.multipart import abort_uploads_of_async

                abort = asyncio.ensure_future(abort_uploads_of_async(self, path))
                try:
                    await asyncio.shield(abort)
                except BaseException:  # cancelled again, or the abort failed: gc finds it
                    pass
            raise
        return PutResult(path, 0, None, result["e_tag"], result["version"])

    # -- reading ----------------------------------------------------------------------------

    @staticmethod
    def _range(start: int, end: int | None) -> dict[str, Any]:
        if end is not None:
            return {"range": (start, end)}
        if start:
            return {"range": {"offset": start}}
        return {}

    def _open_local(self, path: str) -> tuple[int, int] | None:
        """``path``'s local file open for reading through no link (:func:`open_confined`),
        and its size. None when obstore should read it: this store is not local disk, the
        path needs obstore's encoding, or it is no regular file (a directory is no object:
        obstore says so); nothing is left open then. The open's errors are raised."""
        if self._root is None or not _PLAIN_PATH.fullmatch(path):
            return None
        fd = open_confined(self._root, path, local_files.READ_FILE, 0, self.key)
        try:
            found = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if not stat.S_ISREG(found.st_mode):
            os.close(fd)
            return None
        return fd, found.st_size

    def _open_span(self, path: str, start: int, end: int | None) -> tuple[int, int] | None:
        """``path``'s local file open through no link, and where bytes ``[start, end)`` stop
        (``end`` past the end of the file reads to its end, as obstore does): ``(fd,
        stop)``. None when obstore should read them: not a local file it can open (obstore
        says what is wrong in its own words), or a start at or past the end (obstore's
        range error). A missing file is :class:`ObjectNotFound` here, not handed to obstore
        to open again (by then perhaps through a link)."""
        try:
            opened = self._open_local(path)
        except FileNotFoundError:
            raise self._not_found(path) from None
        except OSError:
            return None
        if opened is None:
            return None
        fd, size = opened
        if start >= size:
            os.close(fd)
            return None
        return fd, size if end is None else min(end, size)

    def _read(self, path: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        if end == start:
            self._head(path)  # (which checks for links)
            return iter(())
        span = self._open_span(path, start, end)
        if span is not None:  # read from the file opened through no link
            fd, stop = span
            if stop - start <= chunk_size:
                return iter((local_files.read_and_close(fd, start, stop - start),))
            return local_files.FileChunks(fd, start, stop, chunk_size, path)
        self._confine(path)
        result = obstore.get(self.store, path, options=cast(Any, self._range(start, end)))
        if _span(result) <= chunk_size:
            # One chunk anyway: take the body in one call rather than through a stream.
            return iter((bytes(result.bytes()),))
        return iter(result.stream(min_chunk_size=chunk_size))

    async def _read_async(
        self, path: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        if end == start:
            await self._head_async(path)  # (which checks for links)
            return _empty()
        span = self._open_span(path, start, end)
        if span is not None:  # read from the file opened through no link
            fd, stop = span
            if stop - start <= min(chunk_size, _INLINE):  # a thread hop costs more
                return _single(local_files.read_and_close(fd, start, stop - start))
            return local_files.FileChunks(
                fd, start, stop, chunk_size, path
            )  # each chunk in a thread
        self._confine(path)
        options = cast(Any, self._range(start, end))
        result = await obstore.get_async(self.store, path, options=options)
        if _span(result) <= chunk_size:
            return _single(bytes(await result.bytes_async()))
        return cast(AsyncIterator[bytes], aiter(result.stream(min_chunk_size=chunk_size)))

    def _local_file(self, path: str) -> str | None:
        """The file a local store keeps ``path`` in, when it can be read directly."""
        if self._root is None or not _PLAIN_PATH.fullmatch(path):
            return None
        return os.path.join(self._root, path)

    def _read_all(self, path: str, meter: Meter | None) -> bytes:
        if self._kind == "memory":
            # Already in this process: one copy out, whatever the size (every read of a
            # small file comes this way, so it makes no call it does not need).
            data = obstore.get(self.store, path).bytes().to_bytes()
        elif (opened := self._open_local(path)) is not None:
            data = local_files.read_opened(*opened)
        else:
            self._confine(path)
            result = obstore.get(self.store, path)
            if (span := _span(result)) > _WHOLE_CHUNK:
                chunks = iter(result.stream(min_chunk_size=_FILL_CHUNK))
                return collect(chunks, meter, size=span, path=path)
            data = result.bytes().to_bytes()
        if meter is not None:
            meter.update(data)
        return data

    async def _read_all_async(self, path: str, meter: Meter | None) -> bytes:
        if (opened := self._open_local(path)) is not None:  # opened through no link
            if opened[1] <= _INLINE:
                data = local_files.read_opened(*opened)  # a thread hop costs more than this read
            else:
                data = await asyncio.to_thread(local_files.read_opened, *opened)
        elif self._kind == "memory" and _span(found := obstore.get(self.store, path)) <= _INLINE:
            data = found.bytes().to_bytes()  # a lookup in this process: nothing to await
        else:
            self._confine(path)
            result = await obstore.get_async(self.store, path)
            if (span := _span(result)) > _WHOLE_CHUNK:
                chunks = _read_ahead(result.stream(min_chunk_size=_WHOLE_CHUNK))
                try:
                    return await collect_async(chunks, meter, size=span, path=path)
                finally:
                    await chunks.aclose()
            data = (await result.bytes_async()).to_bytes()
        if meter is not None:
            meter.update(data)
        return data

    def _stat_local(self, path: str) -> ObjectInfo | None:
        """What obstore's HEAD tells of a local file, from one ``stat`` in this thread (through
        no link: :func:`stat_confined`).

        The etag is obstore's own for local files (inode, modification time in
        microseconds, size, in hex). None when obstore should answer: not a plain path, not
        a regular file, or an error it reports in its own words. A missing file is
        :class:`ObjectNotFound`, as from obstore.
        """
        if self._root is None or not _PLAIN_PATH.fullmatch(path):
            return None
        try:
            found = stat_confined(self._root, path, self.key)
        except FileNotFoundError:
            raise self._not_found(path) from None
        except OSError:
            return None
        if not stat.S_ISREG(found.st_mode):
            return None  # a directory: obstore says it is no object
        micros = found.st_mtime_ns // 1000
        if micros < 0:
            return None  # before 1970: obstore's etag takes 0 for the time; let it answer
        return ObjectInfo(
            path,
            found.st_size,
            f'"{found.st_ino:x}-{micros:x}-{found.st_size:x}"',
            _EPOCH + timedelta(microseconds=micros),
        )

    def _head(self, path: str) -> ObjectInfo:
        if (local := self._stat_local(path)) is not None:
            return local  # a thread hop to obstore costs ten times this stat
        self._confine(path)
        if not self.stores_attributes:
            return _info(obstore.head(self.store, path))
        result = obstore.get(self.store, path, options={"head": True})
        return _info(result.meta, result.attributes)

    async def _head_async(self, path: str) -> ObjectInfo:
        if (local := self._stat_local(path)) is not None:
            return local  # one stat costs less than leaving the event loop
        self._confine(path)
        if not self.stores_attributes:
            return _info(await obstore.head_async(self.store, path))
        result = await obstore.get_async(self.store, path, options={"head": True})
        return _info(result.meta, result.attributes)

    # -- the rest ---------------------------------------------------------------------------

    def _unlink_local(self, path: str) -> bool:
        """Delete a plain local file with one ``unlink`` in this thread; whether that did it.

        obstore deletes a local file the same way, after a hop to its thread pool that
        costs ten times the call. The name is removed from its folder opened through no
        link (:func:`open_folder`), and a name that is itself a link is refused. False when
        obstore should answer: not a plain path, a store with ``automatic_cleanup`` or
        built elsewhere, or an error it reports in its own words (a directory, a
        permission).
        """
        if not self._unlinks or self._root is None or not _PLAIN_PATH.fullmatch(path):
            return False
        try:
            folder, name = open_folder(self._root, path, self.key)
        except FileNotFoundError:
            return True  # no folder, so nothing to delete (obstore's NotFound is ignored)
        except OSError:
            return False
        try:
            self._refuse_link(folder, name, path)
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            return True  # nothing to delete, as obstore's NotFound (ignored) says
        except OSError:
            return False
        finally:
            if folder is not None:
                os.close(folder)
        return True

    def _delete(self, path: str) -> None:
        if self._unlink_local(path):
            return  # (its folder opened through no link)
        self._confine(path)
        try:
            obstore.delete(self.store, path)
        except FileNotFoundError:
            pass

    async def _delete_async(self, path: str) -> None:
        if self._unlink_local(path):
            return  # one unlink costs less than leaving the event loop
        self._confine(path)
        try:
            await obstore.delete_async(self.store, path)
        except FileNotFoundError:
            pass

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        check = None if self._root is None else ListingCheck(self._root)
        for batch in obstore.list(self.store, prefix or None, chunk_size=LIST_CHUNK):
            for meta in batch:
                if check is None or check.contained(meta["path"]):
                    yield _info(meta)

    def _list_rows(self, prefix: str) -> Iterator[ListedBatch]:
        if type(self)._list is not ObstoreBackend._list:
            # A subclass changed what a listing yields (a test double injecting faults):
            # the rows follow it.
            yield from super()._list_rows(prefix)
            return
        # Straight from obstore's batches: no ObjectInfo per object.
        yield from list_batches(
            self.store, prefix, None if self._root is None else ListingCheck(self._root)
        )

    @property
    def listing_directory(self) -> str | None:
        """The root directory of a local store whose listing is obstore's own, else None."""
        cls = type(self)
        if (
            self._root is None
            or cls._list is not ObstoreBackend._list
            or cls._list_rows is not ObstoreBackend._list_rows
            or cls.list_rows is not StorageBackend.list_rows
        ):
            return None  # a subclass changed what a listing yields: it stays in this process
        return self._root

    async def _list_async(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        check = None if self._root is None else ListingCheck(self._root)
        async for batch in obstore.list(self.store, prefix or None, chunk_size=LIST_CHUNK):
            for meta in batch:
                if check is None or check.contained(meta["path"]):
                    yield _info(meta)

    def _copy(self, src: str, dst: str) -> None:
        if self._copy_local(src, dst):
            return
        self._confine(src, dst)
        obstore.copy(self.store, src, dst)

    def _link_local(self, fd: int, dst: str) -> bool:
        """Name the open file ``fd`` ``dst`` too (a hard link, replacing what is at ``dst``),
        as a save names the file it wrote; False when this system or filesystem cannot,
        with nothing changed."""
        folder, name = local_files.open_folder_making(cast(str, self._root), dst, self.key)
        if folder is None:
            return False  # no folder opened through no link: copy the bytes instead
        new = local_files.NewLocalFile(folder, name, os.dup(fd), None)
        try:
            self._finish_local(new, dst, _REPLACING)
        except OSError as exc:
            if exc.errno in _NO_HARD_LINK:
                return False
            raise
        finally:
            new.close()  # (and the scratch name, when the link was made but not renamed)
        return True

    async def _copy_async(self, src: str, dst: str) -> None:
        if self._root is not None and await asyncio.to_thread(self._copy_local, src, dst):
            return
        self._confine(src, dst)
        await obstore.copy_async(self.store, src, dst)

    def _copy_local(self, src: str, dst: str) -> bool:
        """Copy ``src`` to ``dst`` on local disk through no link, replacing what is there.

        The source is opened through no link (:meth:`_open_local`). Like obstore, the copy
        is a hard link to the source's file, made from the open file into ``dst``'s folder
        (itself opened through no link) under a scratch name, then renamed into place: no
        byte is copied. Where a hard link cannot be made (another filesystem, a system
        without ``/proc``) the bytes are copied as a save writes them. A link swapped into
        either path after the check cannot redirect the copy, as it could obstore's (which
        opens both paths by name). False when obstore should copy: not local disk, a path
        that needs obstore's encoding, or a source that is no regular file.
        """
        if self._root is None or not (_PLAIN_PATH.fullmatch(src) and _PLAIN_PATH.fullmatch(dst)):
            return False
        try:
            opened = self._open_local(src)
        except FileNotFoundError:
            raise self._not_found(src) from None
        if opened is None:
            return False
        fd = opened[0]
        try:
            if self._link_local(fd, dst):
                return True
            new = self._begin_local(dst)
            if new is None:
                return False
            try:
                local_files.copy_to_end(fd, new.fd)
                self._finish_local(new, dst, _REPLACING)
            finally:
                new.close()
        finally:
            os.close(fd)
        return True

    # -- server-side copies: within this backend, or from another on the same bucket ------

    def copies_from(
        self, source: StorageBackend, *, create_only: bool = False, size: int | None = None
    ) -> bool:
        """Whether this store copies ``source``'s objects itself, without the bytes passing here.

        Within one backend, a copy that may replace what is there always is (as on every
        backend). Beyond that, on S3 and Azure: from another backend on the same bucket or
        container (another prefix, the same endpoint and credentials), and create-only
        (Azure's conditional copy; on S3 when the store is configured with
        ``aws_copy_if_not_exists``, for example ``"multipart"`` on AWS, and the object is at
        least 4 MiB: below that the multipart copy's extra request costs more than the
        bytes it saves), for objects whose size is known and fits one copy request (5 GiB
        on S3, 256 MiB on Azure). On local disk a create-only copy would be a hard link (one
        file under two names), so those are streamed instead.
        """
        if source is self and not create_only:
            return size is None or size <= _COPY_LIMITS.get(self._kind, size)
        if self._kind not in _COPY_LIMITS or size is None or size > _COPY_LIMITS[self._kind]:
            return False
        if source is not self and not self._shares_bucket_with(source):
            return False
        if create_only and self._kind == "s3":
            # A conditional copy on S3 is a multipart copy: three requests where a streamed
            # copy makes two, so it pays only once the bytes it saves outweigh one request.
            return size >= _S3_CONDITIONAL_COPY_FROM and bool(
                self._store_config().get("copy_if_not_exists")
            )
        return True

    def _store_config(self) -> dict[str, Any]:
        return dict(getattr(self.store, "config", None) or {})

    def _shares_bucket_with(self, other: StorageBackend) -> bool:
        """Same kind of store, bucket, endpoint, credentials and client: only the prefix differs."""
        if not isinstance(other, ObstoreBackend) or type(other.store) is not type(self.store):
            return False
        mine: Any = self.store
        theirs: Any = other.store
        return bool(
            _identity(self._store_config()) == _identity(other._store_config())
            and mine.client_options == theirs.client_options
            and _same_credentials(mine.credential_provider, theirs.credential_provider)
        )

    def _copy_route(self, source: StorageBackend, src: str, dst: str) -> tuple[Any, str, str]:
        """The store that makes a copy from ``source`` and the two keys as it sees them."""
        if source is self:
            self._confine(src, dst)
            return self.store, src, dst
        if self._bucket_root is None:
            store: Any = self.store
            self._bucket_root = type(store)(
                config=store.config,
                client_options=store.client_options,
                retry_config=store.retry_config,
                credential_provider=store.credential_provider,
            )
        return self._bucket_root, _under(cast(ObstoreBackend, source), src), _under(self, dst)

    def _copy_from(self, source: StorageBackend, src: str, dst: str, create_only: bool) -> None:
        if source is self and not create_only and self._copy_local(src, dst):
            return
        store, src_key, dst_key = self._copy_route(source, src, dst)
        try:
            obstore.copy(store, src_key, dst_key, overwrite=not create_only)
        except AlreadyExistsError:
            raise self._taken(dst) from None
        except (FileNotFoundError, NotFoundError):
            raise source._not_found(src) from None  # named with its own backend

    async def _copy_from_async(
        self, source: StorageBackend, src: str, dst: str, create_only: bool
    ) -> None:
        local = source is self and not create_only and self._root is not None
        if local and await asyncio.to_thread(self._copy_local, src, dst):
            return
        store, src_key, dst_key = self._copy_route(source, src, dst)
        try:
            await obstore.copy_async(store, src_key, dst_key, overwrite=not create_only)
        except AlreadyExistsError:
            raise self._taken(dst) from None
        except (FileNotFoundError, NotFoundError):
            raise source._not_found(src) from None

    def signs_natively(self, method: Method) -> bool:
        """S3, GCS and Azure stores sign GET and PUT URLs themselves."""
        return self._kind in ("s3", "gcs", "azure")

    def _sign(self, path: str, method: Method, expires_in: int, content_type: str | None) -> str:
        if not self.signs_natively(method):
            raise self._signing_not_supported()
        store = cast(Any, self.store)
        return obstore.sign(store, method, path, timedelta(seconds=expires_in))

    async def _sign_async(
        self, path: str, method: Method, expires_in: int, content_type: str | None
    ) -> str:
        if not self.signs_natively(method):
            raise self._signing_not_supported()
        store = cast(Any, self.store)
        return await obstore.sign_async(store, method, path, timedelta(seconds=expires_in))


# The largest object one server-side copy request takes (S3 CopyObject and UploadPartCopy:
# 5 GiB; Azure's synchronous Copy Blob From URL: 256 MiB); larger ones are streamed.
_COPY_LIMITS = {"s3": 5 * 1024**3, "azure": 256 * 1024**2}
# The smallest object an S3 create-only copy is made server-side for (a multipart copy:
# measured against moto, 1 KiB objects 0.65x and 1 MiB 0.84x of a streamed copy, 4 MiB
# even, 32 MiB 2.9x; benchmarks/s3_migrate.py).
_S3_CONDITIONAL_COPY_FROM = 4 * 1024 * 1024


# The S3 store option aws_checksum_algorithm (alias checksum_algorithm) is a header the
# server checks on upload, not the digest storeroom records; the two are easily confused.
_S3_CHECKSUM_HINT = (
    ". aws_checksum_algorithm is S3's own upload checksum, which the server verifies (such "
    "as 'SHA256'); the digest storeroom records and verifies on reads ('blake3', 'sha256', "
    "'xxh3-128', ...) is set with backend.checksum_algorithm, or checksum_algorithm in a "
    "configuration spec"
)

# Store options that change how a store writes, not which bucket it reaches as whom: two
# backends that differ only in these share their bucket.
_WRITE_BEHAVIOUR = frozenset(
    {"copy_if_not_exists", "conditional_put", "checksum_algorithm", "disable_tagging"}
)


def _identity(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _WRITE_BEHAVIOUR}


def _same_credentials(mine: Any, theirs: Any) -> bool:
    if mine is theirs:
        return True
    same_source = getattr(mine, "same_source", None)
    return bool(same_source(theirs)) if same_source is not None else False


def _under(backend: ObstoreBackend, path: str) -> str:
    """``path`` of ``backend`` as a key from its bucket's root (its prefix in front)."""
    prefix = str(getattr(backend.store, "prefix", None) or "").strip("/")
    return f"{prefix}/{path}" if prefix else path


def _local_root(store: Any) -> str | None:
    prefix = getattr(store, "prefix", None)
    return real_root(str(prefix)) if prefix is not None else None


def _span(result: Any) -> int:
    start, end = result.range
    return int(end - start)


async def _read_ahead(stream: Any) -> AsyncGenerator[bytes, None]:
    """The chunks of an obstore body stream, the next one already on its way meanwhile.

    obstore starts reading as soon as a chunk is asked for, in its own threads: asking for
    the next one before the caller copies this one keeps the connection busy while the
    event loop works (256 MiB from moto S3: 550-630 MiB/s one at a time, 770-790 ahead).
    At most one chunk is read ahead; closing stops the one under way.
    """
    pending: asyncio.Future[bytes] = asyncio.ensure_future(anext(stream))
    try:
        while True:
            try:
                chunk = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(stream))
            yield chunk
    finally:
        if not pending.done():
            pending.cancel()
        elif not pending.cancelled():
            pending.exception()  # an error after the last chunk wanted is dropped, not logged


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _empty() -> AsyncIterator[bytes]:
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk


def _unknown_key(message: str) -> str | None:
    marker = "Configuration key: '"
    if marker in message:
        return message.split(marker, 1)[1].split("'", 1)[0]
    return None
