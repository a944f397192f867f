"""The scheduler's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` (loop alive), ``/readyz`` (caches synced)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from models.errors import SpecError

Check = Callable[[], tuple[bool, str]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, ctype = self.server.metrics()
            self._send(200, body, ctype)
        elif path in ("/healthz", "/livez"):
            self._check(self.server.healthy)
        elif path == "/readyz":
            self._check(self.server.ready)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _check(self, check: Check) -> None:
        ok, text = check()
        self._send(200 if ok else 503, (text or ("ok" if ok else "not ok")).encode() + b"\n",
                   "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: Callable[[], tuple[bytes, str]],
                 healthy: Check, ready: Check) -> None:
        if ":" in address[0]:  # an IPv6 address ("::" listens on both families where the OS allows)
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.healthy = healthy
        self.ready = ready


class StatusServer:
    """Serves the three endpoints on ``address:port`` (port 0: any free port) in a daemon thread."""

    def __init__(self, address: str, port: int, metrics: Callable[[], tuple[bytes, str]],
                 healthy: Check, ready: Check) -> None:
        try:
            self._httpd = _Server((address, port), metrics, healthy, ready)
        except OSError as exc:  # in use, not an address of this host, ...
            raise SpecError(f"cannot listen on {address}:{port}: {exc.strerror or exc}", source="serve config",
                            path="metrics_address / metrics_port",
                            fix="pick a free port and an address of this host (0.0.0.0 or :: for all)") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="toposched-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
