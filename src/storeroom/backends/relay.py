"""Reading an iterator in a thread of its own, a few items ahead of its consumer."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["Relay"]

_T = TypeVar("_T")


class Relay(Generic[_T]):
    """Reads a source stream in a thread of its own and hands its chunks over a small queue.

    A sync obstore write consumes its body inside obstore's runtime, where a sync obstore
    stream cannot be read (the runtime would have to start inside itself: a panic, not an
    error). Reading the source in another thread keeps the two apart, and lets reading and
    writing overlap. At most ``depth`` chunks wait in between, so memory stays bounded. An
    error reading the source is raised to the writer; when the writer stops early, the
    reader stops after its current chunk and the source stream is closed.
    """

    _END = object()

    def __init__(self, chunks: Iterator[_T], depth: int = 4) -> None:
        self._chunks = chunks
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # The reader runs in a copy of this context, so storage events it emits carry the
        # caller's context variables (trace spans, request ids).
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._read,),
            name="storeroom-transfer",
            daemon=True,
        )

    def __enter__(self) -> Relay[_T]:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a reader waiting for room in the queue
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _read(self) -> None:
        item: Any = self._END
        try:
            for chunk in self._chunks:
                self._queue.put(chunk)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the writer, which raises it
            item = exc
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        if not self._stop.is_set():
            self._queue.put(item)

    def __iter__(self) -> Iterator[_T]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
