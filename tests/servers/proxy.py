"""A recording (and optionally fault-injecting) HTTP proxy on 127.0.0.1.

Sits between a client (obstore, s3fs) and a real server (moto) to count the requests a
storeroom operation makes, and to inject faults: dropped connections, 5xx answers, stalls.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Fault = Callable[[int, str, str], "int | str | None"]
"""Called with (request number, method, path); returns None to forward, an HTTP status to
answer with instead, "drop" to close the connection without answering, "stall" to hold
the request for ``stall_seconds`` and then drop it, or ``"cut:N"`` to forward it and close
the connection after the first N bytes of the answer's body (its headers announce all)."""


@dataclass
class RecordedRequest:
    """One request that passed through the proxy."""

    method: str
    path: str
    query: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    response_bytes: int = 0
    """Size of the response body sent back to the client."""


@dataclass
class RecordingProxy:
    """A reverse proxy to ``upstream`` that records every request."""

    upstream: str
    fault: Fault | None = None
    stall_seconds: float = 3.0
    requests: list[RecordedRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RecordingProxy:
        """Start serving in a daemon thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    def count(self, method: str | None = None) -> int:
        """How many requests (of ``method``) were recorded."""
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    def _record(self, method: str, target: str) -> tuple[int, RecordedRequest]:
        parts = urlsplit(target)
        entry = RecordedRequest(method, parts.path, parts.query)
        with self._lock:
            self.requests.append(entry)
            return len(self.requests), entry

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        upstream = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                number, entry = proxy._record(self.command, self.path)
                entry.headers = {k.lower(): v for k, v in self.headers.items()}
                body = self._body()
                action = proxy.fault(number, self.command, self.path) if proxy.fault else None
                if action == "stall":
                    proxy._stop.wait(proxy.stall_seconds)
                    action = "drop"
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if isinstance(action, int):
                    entry.status = action
                    payload = b"<Error><Code>InternalError</Code></Error>"
                    self.send_response(action)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("transfer-encoding", "content-length")
                }
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                entry.status = response.status
                entry.response_bytes = 0 if self.command == "HEAD" else len(data)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                try:
                    if isinstance(action, str) and action.startswith("cut:"):
                        self.wfile.write(data[: int(action[4:])])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.close()
                    elif self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client stopped reading: nothing to do
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
