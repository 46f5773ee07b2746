"""Let obstore's runtime threads leave Python before the interpreter finalizes.

obstore (through pyo3-async-runtimes) completes an awaited call from one of its tokio worker
threads: with the GIL held it calls ``loop.call_soon_threadsafe(...)``, whose
``_write_to_self`` sends a byte on the loop's self-pipe socket and releases the GIL around
that ``send``. The main thread can then run the callback, finish ``asyncio.run`` and start
shutting the interpreter down before the worker has taken the GIL back. A thread that asks
for the GIL once finalization has begun is ended with ``pthread_exit`` (CPython 3.8-3.13);
on a Rust thread that forced unwind cannot pass through Rust frames and the process aborts
(SIGABRT, exit code 134) although the script had succeeded.

The fix is an ``atexit`` callback, which runs before finalization starts: while a thread
that ``threading`` does not know (a foreign, runtime-owned thread) is still inside Python
code, release the GIL briefly so it can finish, with a deadline so that exit never hangs.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time

__all__ = ["wait_for_foreign_threads"]

_DEADLINE_SECONDS = 2.0


def _foreign_threads_in_python() -> list[int]:
    """Ids of threads running Python code that ``threading`` did not start."""
    known = {t.ident for t in threading.enumerate()}
    return [ident for ident in sys._current_frames() if ident not in known]


def wait_for_foreign_threads(deadline_seconds: float = _DEADLINE_SECONDS) -> bool:
    """Wait until no foreign thread is inside Python code; True if none is left.

    Called at interpreter exit; safe to call at any time (it only sleeps, which releases
    the GIL, while such a thread exists, for at most ``deadline_seconds``).
    """
    end = time.monotonic() + deadline_seconds
    while _foreign_threads_in_python():
        if time.monotonic() >= end:
            return False
        time.sleep(0.0005)
    return True


atexit.register(wait_for_foreign_threads)
