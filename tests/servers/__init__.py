"""Real servers for the test suite, started on 127.0.0.1 with free ports.

A service the machine lacks makes its tests skip with a reason, except when the environment
variable ``STOREROOM_REQUIRE_SERVICES=1`` is set (as ``.ci/run`` does): then they fail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import NoReturn

import pytest

__all__ = [
    "free_port",
    "require_service",
    "services_required",
    "stop_process",
    "wait_for_port",
]


def services_required() -> bool:
    """Whether a missing service is a failure rather than a skip."""
    return os.environ.get("STOREROOM_REQUIRE_SERVICES", "") not in ("", "0", "false")


def require_service(name: str, reason: str) -> NoReturn:
    """Skip (or, under STOREROOM_REQUIRE_SERVICES=1, fail) because ``name`` is unavailable."""
    message = f"{name} unavailable: {reason}"
    if services_required():
        pytest.fail(f"{message} (STOREROOM_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, deadline_s: float, alive: object = None) -> bool:
    """Poll until 127.0.0.1:``port`` accepts connections or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
