"""The extender's HTTP server: ``POST <prefix>/{filter,prioritize,bind,preempt}`` in kube-scheduler's wire format.

Request flow: route (prefix + verb, else 404; a verb path with another method: 405) ->
headers (Content-Type must be JSON: 415; Content-Length over the cap: 413, chunked bodies
are read up to the cap) -> body (short or slow: 400) -> ``wire.decode`` (bad JSON: 400,
bad shape: 422) -> the verb's handler -> 200 with the result as PascalCase JSON.

Every error answer is JSON ``{"Error": "<what>", "Code": <status>}``; a bad request never
produces a 5xx nor stops the server. A handler bug answers 500 and is logged with its
traceback. ``GET /healthz`` answers while the process serves; ``GET /readyz`` answers 200
once the verbs' state has synced (503 before). TLS: pass an ``ssl.SSLContext``; the
handshake runs in the connection's own thread so a slow client blocks nobody.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from models.errors import ToposchedError
from scheduler.extender import wire

log = logging.getLogger("toposched.extender")

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # a NodeList of ~5,000 real Node objects
DEFAULT_READ_TIMEOUT_S = 10.0  # to read one request body
# An idle keep-alive connection is kept longer than Go's transports keep theirs (90 s), so
# kube-scheduler, not we, closes idle connections (a POST on a connection we just closed fails).
DEFAULT_IDLE_TIMEOUT_S = 120.0
VERBS = ("filter", "prioritize", "bind", "preempt")


class Verbs(Protocol):
    """What the server calls; ``scheduler.extender.handlers.ExtenderHandlers`` implements it."""

    def filter(self, args: wire.ExtenderArgs) -> wire.ExtenderFilterResult: ...

    def prioritize(self, args: wire.ExtenderArgs) -> list[wire.HostPriority]: ...

    def bind(self, args: wire.ExtenderBindingArgs) -> wire.ExtenderBindingResult: ...

    def preempt(self, args: wire.ExtenderPreemptionArgs) -> wire.ExtenderPreemptionResult: ...

    def is_ready(self) -> bool: ...


# (verb, HTTP status, seconds) after each answered request; the CLI feeds metrics from it
Observer = Callable[[str, int, float], None]


class HttpError(Exception):
    """An answer other than 200; ``close`` when the connection cannot be reused (unread body)."""

    def __init__(self, status: int, message: str, close: bool = False, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.close, self.headers = status, message, close, headers or {}


def normalize_prefix(prefix: str) -> str:
    """``toposched/`` -> ``/toposched``; ``/`` or empty -> ``""`` (verbs at the root)."""
    prefix = prefix.strip()
    if not prefix or prefix == "/":
        return ""
    if "?" in prefix or "#" in prefix or " " in prefix:
        raise ToposchedError(f"--url-prefix {prefix!r}: a URL path only (no query, fragment or spaces)")
    return "/" + prefix.strip("/")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ToposchedError(f"--listen {text!r}: expected HOST:PORT (e.g. 127.0.0.1:8888)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def tls_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A server context from a PEM certificate (chain) and key; errors name the file."""
    for label, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        if not Path(path).is_file():
            raise ToposchedError(f"{label} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ToposchedError(f"--tls-cert {cert_file} / --tls-key {key_file}: cannot load: {exc}") from None
    return ctx


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: ExtenderServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        ctx = self.owner.ssl_context
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up or fails the TLS handshake is not our error
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "toposched-extender"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.owner.idle_timeout_s
        try:  # headers and body go out as two writes: no Nagle delay between them
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        log.debug("%s " + format, self.client_address[0], *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the base class raises itself (bad request line, headers too large) as JSON."""
        self.close_connection = True
        self._send_json(code, {"Error": message or explain or "bad request", "Code": code})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any other method: 405 (405 for verbs, 404 elsewhere)
            return self._other_method
        raise AttributeError(name)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        owner = self.server.owner
        t0 = time.perf_counter()
        verb = "unknown"
        try:
            verb = self._route()
            body = self._read_body()
            status, payload = 200, owner.dispatch(verb, body)
        except HttpError as exc:
            status, payload = exc.status, {"Error": exc.message, "Code": exc.status}
            if exc.close:
                self.close_connection = True
            self._send_json(status, payload, exc.headers)
        else:
            self._send_bytes(status, payload)
        if owner.observer is not None:
            owner.observer(verb, status, time.perf_counter() - t0)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        if path in ("/healthz", owner.url_prefix + "/healthz"):
            self._send_json(200, {"status": "ok"})
        elif path in ("/readyz", owner.url_prefix + "/readyz"):
            ready = owner.is_ready()
            self._send_json(200 if ready else 503, {"status": "ready" if ready else "cache not synced"})
        else:
            self._other_method()

    def _other_method(self) -> None:
        self._discard_body()
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        if owner.verb_of(path) is not None:
            msg = f"method {self.command} not allowed on {path}: kube-scheduler POSTs to extender verbs"
            self._send_json(405, {"Error": msg, "Code": 405}, {"Allow": "POST"})
        else:
            self._send_json(404, {"Error": f"no such path {path}", "Code": 404})

    def _route(self) -> str:
        path = self.path.split("?", 1)[0]
        verb = self.server.owner.verb_of(path)
        if verb is None:
            prefix = self.server.owner.url_prefix
            raise HttpError(404, f"unknown path {path}: the verbs are {', '.join(prefix + '/' + v for v in VERBS)}",
                            close=True)
        ctype = self.headers.get("Content-Type")
        if ctype is not None:
            media = ctype.split(";", 1)[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                raise HttpError(415, f"Content-Type {ctype!r} is not supported: send application/json", close=True)
        return verb

    def _read_body(self) -> bytes:
        owner = self.server.owner
        self.connection.settimeout(owner.read_timeout_s)
        try:
            return self._read_body_now(owner.max_body_bytes)
        finally:
            self.connection.settimeout(owner.idle_timeout_s)

    def _read_body_now(self, cap: int) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            return self._read_chunked(cap)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HttpError(400, f"bad Content-Length {raw!r}", close=True) from None
        if length > cap:
            raise HttpError(413, f"request body of {length} bytes is over the {cap}-byte limit "
                                 "(set nodeCacheCapable: true, or raise --max-body-mib)", close=True)
        return self._read_exact(length)

    def _read_exact(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n)
        except (TimeoutError, OSError):
            raise HttpError(400, f"timed out reading a {n}-byte body", close=True) from None
        if len(data) < n:
            raise HttpError(400, f"request body truncated: got {len(data)} of {n} bytes", close=True)
        return data

    def _read_chunked(self, cap: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                line = self.rfile.readline(1026)
            except (TimeoutError, OSError):
                raise HttpError(400, "timed out reading a chunked body", close=True) from None
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpError(400, "malformed chunked body", close=True) from None
            if size < 0:
                raise HttpError(400, "malformed chunked body", close=True)
            if size == 0:
                while self.rfile.readline(1026) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > cap:
                raise HttpError(413, f"chunked request body is over the {cap}-byte limit", close=True)
            parts.append(self._read_exact(size))
            self._read_exact(2)  # CRLF after the chunk

    def _discard_body(self) -> None:
        raw = self.headers.get("Content-Length")
        if raw is None and "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return
        try:
            n = int(raw) if raw is not None else -1
        except ValueError:
            n = -1
        if 0 <= n <= 1024 * 1024:
            try:
                self.rfile.read(n)
                return
            except OSError:
                pass
        self.close_connection = True

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it


class ExtenderServer:
    """A threaded HTTP(S) server over a ``Verbs`` implementation.

    ``start()`` serves from a background thread (tests, the CLI), ``stop()`` frees the port.
    """

    def __init__(self, verbs: Verbs, *, host: str = "127.0.0.1", port: int = 0, url_prefix: str = "",
                 ssl_context: ssl.SSLContext | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 observer: Observer | None = None) -> None:
        self.verbs = verbs
        self.url_prefix = normalize_prefix(url_prefix)
        self.ssl_context = ssl_context
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.observer = observer
        self._paths = {f"{self.url_prefix}/{v}": v for v in VERBS}
        self._httpd = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The ``urlPrefix`` kube-scheduler needs: scheme, host, port and prefix."""
        host, port = self.address
        scheme = "https" if self.ssl_context is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}{self.url_prefix}"

    def verb_of(self, path: str) -> str | None:
        return self._paths.get(path.rstrip("/") if path != "/" else path)

    def is_ready(self) -> bool:
        probe = getattr(self.verbs, "is_ready", None)
        return bool(probe()) if probe is not None else True

    def dispatch(self, verb: str, body: bytes) -> bytes:
        """Decode, run the verb, encode; errors become ``HttpError`` (4xx bad input, 500 a bug)."""
        try:
            args = wire.decode(verb, body)
            result = getattr(self.verbs, verb)(args)
        except wire.WireError as exc:
            raise HttpError(exc.status, str(exc)) from None
        except ToposchedError as exc:
            raise HttpError(422, f"{verb}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a handler bug must not take the server down
            log.exception("extender %s failed", verb)
            raise HttpError(500, f"{verb}: internal error: {type(exc).__name__}: {exc}") from None
        try:
            if isinstance(result, list):
                return wire.encode_priorities(result)
            return result.to_json_bytes()
        except (ValueError, RecursionError) as exc:  # a reply echoes request data it cannot encode
            log.warning("extender %s: reply not encodable: %s", verb, exc)
            raise HttpError(400, f"{verb}: the reply cannot be encoded from this request "
                                 f"({type(exc).__name__}: {str(exc)[:200]}); objects nested too deeply?") from None

    def start(self) -> ExtenderServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="toposched-extender", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ExtenderServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
