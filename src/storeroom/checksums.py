"""Checksums: which digest to record, how records are written, and how to verify them.

A recorded checksum names its algorithm: ``"blake3:<hex>"``, ``"sha256:<hex>"`` or
``"xxh3-128:<hex>"``. New saves use :data:`DEFAULT_ALGORITHM` (BLAKE3 when the ``blake3``
package is installed, SHA-256 otherwise); any algorithm of :mod:`hashlib`, and
``"xxh3-128"`` (:data:`XXH3_128`) with the ``xxhash`` package (``storeroom[xxhash]``), can
be chosen per save (``save(checksum="sha256")``) or per backend
(``backend.checksum_algorithm``). Records written with any supported algorithm verify,
whatever the current default::

    from storeroom import checksums

    hasher = checksums.hasher_for("sha256:" + "0" * 64)
    hasher.update(b"data")
    assert not checksums.matches("sha256:" + "0" * 64, checksums.record("sha256", hasher))

XXH3-128 is several times faster than BLAKE3 on small objects, but it is not a
cryptographic hash: it detects corruption (a flipped bit, a truncated or spliced object),
not deliberate tampering, since anyone who can write to the store can make other bytes with
the same XXH3 digest. BLAKE3 stays the default for that reason.

BLAKE3, hashlib and xxhash all release the GIL while hashing large buffers, so storeroom
hashes whole-bytes content in a worker thread while the store writes it.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from storeroom.errors import ConfigurationError, IntegrityError

_blake3: Any
try:  # pragma: no branch - which branch runs depends on the installation
    from blake3 import blake3 as _blake3
except ImportError:  # pragma: no cover - blake3 is a dependency; kept for stripped installs
    _blake3 = None

_xxhash: Any
try:  # pragma: no branch - which branch runs depends on the installation
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - the optional extra storeroom[xxhash]
    _xxhash = None

__all__ = [
    "DEFAULT_ALGORITHM",
    "XXH3_128",
    "BackgroundHasher",
    "Hasher",
    "algorithm_of",
    "check_algorithm",
    "digest",
    "digest_in_background",
    "hex_check",
    "hasher_for",
    "matches",
    "new_hasher",
    "record",
    "supported_algorithms",
]

DEFAULT_ALGORITHM: str = "blake3" if _blake3 is not None else "sha256"
"""The digest recorded by new saves unless another is chosen."""

XXH3_128 = "xxh3-128"
"""The name of XXH3's 128-bit digest in records (``"xxh3-128:<32 hex digits>"``).

Several times faster than BLAKE3 and good at catching corruption, but not cryptographic: it
does not show deliberate tampering. Needs the ``xxhash`` package
(``pip install 'storeroom[xxhash]'``); without it, saving with it or verifying such a record
raises :class:`ConfigurationError` saying so.
"""

#: Content at least this large is hashed in a worker thread while it is written.
BACKGROUND_THRESHOLD = 1024 * 1024

_pool: ThreadPoolExecutor | None = None


class Hasher(Protocol):
    """What a digest object offers (hashlib's, blake3's and xxhash's all do)."""

    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def supported_algorithms() -> list[str]:
    """Names accepted by :func:`new_hasher`, sorted."""
    names = {name for name in hashlib.algorithms_available if not name.startswith("shake")}
    if _blake3 is not None:
        names.add("blake3")
    if _xxhash is not None:
        names.add(XXH3_128)
    return sorted(names)


def check_algorithm(name: str) -> str:
    """``name`` normalised (lower case) if it is supported; else :class:`ConfigurationError`.

    The error names ``name``, lists the supported algorithms and, for ``"blake3"`` and
    ``"xxh3-128"``, says which package to install.
    """
    known = _CHECKED.get(name)
    if known is not None:
        return known
    _CHECKED[name] = checked = _check_algorithm(name)
    return checked


_CHECKED: dict[str, str] = {}

# What to install for an algorithm that is known but whose package is missing.
_INSTALL_HINTS = {
    "blake3": " (install the 'blake3' package)",
    XXH3_128: " (install storeroom[xxhash], or the 'xxhash' package)",
}


def _check_algorithm(name: str) -> str:
    normal = name.lower() if isinstance(name, str) else name
    if normal == "blake3" and _blake3 is not None:
        return "blake3"
    if normal == XXH3_128 and _xxhash is not None:
        return XXH3_128
    if (
        isinstance(normal, str)
        and normal in hashlib.algorithms_available
        and not (normal.startswith("shake"))
    ):
        return normal
    hint = _INSTALL_HINTS.get(normal, "") if isinstance(normal, str) else ""
    raise ConfigurationError(
        f"checksum algorithm {name!r} is not available{hint}; supported: "
        f"{', '.join(supported_algorithms())}"
    )


def new_hasher(algorithm: str, *, parallel: bool = False) -> Hasher:
    """A fresh digest object for ``algorithm`` (see :func:`supported_algorithms`).

    ``parallel`` lets BLAKE3 spread large updates over every core (other digests ignore
    it). Raises :class:`ConfigurationError` for an algorithm this installation lacks.
    """
    if algorithm == "blake3" and _blake3 is not None:
        if parallel:
            return _blake3(max_threads=_blake3.AUTO)  # type: ignore[no-any-return]
        return _blake3()  # type: ignore[no-any-return]
    name = check_algorithm(algorithm)
    if name == "blake3":
        return new_hasher(name, parallel=parallel)
    if name == XXH3_128:
        return _xxhash.xxh3_128()  # type: ignore[no-any-return]
    return hashlib.new(name)


def algorithm_of(recorded: str | None) -> str | None:
    """The algorithm a recorded checksum names (``"sha256:ab.."`` -> ``"sha256"``)."""
    if not recorded:
        return None
    algorithm, sep, value = recorded.partition(":")
    if not sep or not value:
        raise IntegrityError(
            f"recorded checksum {recorded!r} is malformed; expected '<algorithm>:<hex digest>' "
            "such as 'blake3:…' or 'sha256:…'"
        )
    return algorithm.lower()


HexCheck = tuple[Callable[[bytes | memoryview], str], str]
"""``(hex_of, expected)``: see :func:`hex_check`."""

# Lower-case algorithm name -> the function giving the hex digest of bytes in one call.
_HEX_OF: dict[str, Callable[[bytes | memoryview], str]] = {}


def _blake3_hex(data: bytes | memoryview) -> str:
    if len(data) >= _PARALLEL_THRESHOLD:  # as digest(parallel=True)
        return _blake3(data, max_threads=_blake3.AUTO).hexdigest()  # type: ignore[no-any-return]
    return _blake3(data).hexdigest()  # type: ignore[no-any-return]


def _hex_of(name: str) -> Callable[[bytes | memoryview], str]:
    if name == "blake3":
        return _blake3_hex
    if name == XXH3_128:
        return _xxhash.xxh3_128_hexdigest  # type: ignore[no-any-return]
    return lambda data: hashlib.new(name, data).hexdigest()


def hex_check(recorded: str | None) -> HexCheck | None:
    """How to verify bytes against ``recorded`` with one call: ``(hex_of, expected)``.

    ``hex_of(data)`` is the lower-case hex digest of ``data`` with the algorithm that
    ``recorded`` names, and ``expected`` the hex digest it records; the bytes match when
    the two are equal (when they differ, :func:`matches` decides, as it also accepts
    upper-case records). None when nothing is recorded. Raises :class:`IntegrityError` for
    a malformed record and :class:`ConfigurationError` for an algorithm this installation
    lacks, so both fail before any I/O. Used by every small verified read.
    """
    if not recorded:
        return None
    algorithm, _, value = recorded.partition(":")
    hex_of = _HEX_OF.get(algorithm)
    if hex_of is None or not value:
        name = check_algorithm(algorithm_of(recorded) or "")  # raises when malformed
        hex_of = _HEX_OF[name] = _hex_of(name)
    return hex_of, value


def hasher_for(recorded: str) -> Hasher:
    """A digest object of the algorithm that ``recorded`` was written with."""
    algorithm = algorithm_of(recorded)
    if algorithm is None:
        raise IntegrityError("no checksum was recorded to verify against")
    return new_hasher(algorithm)


def record(algorithm: str, hasher: Hasher) -> str:
    """The checksum as recorded: ``"<algorithm>:<hex digest>"``."""
    return f"{algorithm}:{hasher.hexdigest()}"


def matches(recorded: str, computed: str | None) -> bool:
    """Whether ``computed`` equals ``recorded`` (algorithm names compared case-insensitively)."""
    if computed is None:
        return False
    if recorded == computed:
        return True
    ra, _, rv = recorded.partition(":")
    ca, _, cv = computed.partition(":")
    return ra.lower() == ca.lower() and hmac.compare_digest(rv.lower(), cv.lower())


#: BLAKE3 hashes buffers at least this large on every core when asked to.
_PARALLEL_THRESHOLD = 4 * 1024 * 1024


def digest(algorithm: str, data: bytes | memoryview, *, parallel: bool = False) -> str:
    """The recorded form of the checksum of ``data`` in one call.

    ``parallel`` lets BLAKE3 use every core for large buffers (used when nothing else
    runs meanwhile; a hash overlapping a write stays on one thread). Raises
    :class:`ConfigurationError` for an algorithm this installation lacks.
    """
    parallel = parallel and len(data) >= _PARALLEL_THRESHOLD
    if algorithm == "blake3" and not parallel and _blake3 is not None:
        return "blake3:" + _blake3(data).hexdigest()  # type: ignore[no-any-return]
    if algorithm == XXH3_128 and _xxhash is not None:
        return "xxh3-128:" + _xxhash.xxh3_128_hexdigest(data)  # type: ignore[no-any-return]
    name = check_algorithm(algorithm)
    hasher = new_hasher(name, parallel=parallel)
    hasher.update(data)
    return record(name, hasher)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="storeroom-hash")
    return _pool


def digest_in_background(algorithm: str, data: bytes) -> Future[str]:
    """Start hashing ``data`` in a worker thread; the GIL is released while it runs."""
    return _executor().submit(digest, algorithm, data)


class BackgroundHasher:
    """Feeds a hasher in a worker thread, in order, while the caller goes on reading.

    ``update`` queues the data and returns at once; :meth:`settled` is a future that is
    done once everything queued has been hashed (it raises what the hasher raised).
    """

    __slots__ = ("_hasher", "_lock", "_queue", "_running")

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher
        self._queue: deque[bytes | memoryview] = deque()
        self._lock = threading.Lock()
        self._running: Future[None] | None = None

    def update(self, data: bytes | memoryview, /) -> None:
        """Queue ``data`` to be hashed after everything queued before it."""
        with self._lock:
            self._queue.append(data)
            if self._running is None:
                self._running = _executor().submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = None
                    return
                data = self._queue.popleft()
            self._hasher.update(data)

    def settled(self) -> Future[None]:
        """A future done once every queued update has been hashed."""
        with self._lock:
            running = self._running
        if running is None:
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return running

    def hexdigest(self) -> str:
        """The digest of everything queued (waits for the worker)."""
        self.settled().result()
        return self._hasher.hexdigest()
