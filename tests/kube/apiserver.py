"""A Kubernetes API server for integration tests: real HTTP/1.1 on 127.0.0.1 over the in-memory ``ApiStore``.

The official ``kubernetes`` client talks to it unchanged (``ApiServer.kube_config()`` or a kubeconfig file from
``write_kubeconfig``). One thread per connection (``ThreadingHTTPServer``); watches stream chunked,
newline-delimited JSON events. Coverage and gaps versus kube-apiserver: docs/test-apiserver.md.

Request flow: parse path -> route (resource type, namespace, name, subresource, verb) -> injected fault? ->
store operation -> JSON response or ``Status`` -> request log.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .resources import ResourceType
from .status import ApiError, bad_request, status_body
from .store import ApiStore, RequestRecord, Watcher

SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0-toposched-test",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "none",
    "compiler": "none",
    "platform": "linux/amd64",
}

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False", ""}


def _parse_bool(params: dict[str, str], name: str) -> bool:
    """Go strconv.ParseBool, as the apiserver decodes boolean query parameters."""
    value = params.get(name)
    if value is None:
        return False
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise bad_request(f'{name}: Invalid value: "{value}": not a boolean')


def _parse_int(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f'{name}: Invalid value: "{value}": not an integer') from None
    if number < 0:
        raise bad_request(f'{name}: Invalid value: "{value}": must be non-negative')
    return number


@dataclass
class Route:
    """What a request path addresses."""

    verb: str
    rtype: ResourceType | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    special: str | None = None  # discovery / health endpoints


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: ApiStore, token: str | None) -> None:
        super().__init__(address, _Handler)
        self.store = store
        self.token = token
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle + delayed ACK add ~40 ms a request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    # --- plumbing ------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        store = self.server.store
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        record = RequestRecord(method, url.path, params, 0, content_type=self.headers.get("Content-Type") or "",
                               time_s=time.time())
        raw = self._read_body()
        headers: dict[str, str] = {}
        try:
            self._check_auth()
            route = self._route(method, url.path, params)
            record.verb = route.verb
            fault = store.take_fault(method, route.verb, url.path)
            if fault is not None:
                if fault.delay_s:
                    time.sleep(fault.delay_s)
                if fault.status is not None:
                    raise store.fault_error(fault)
            if route.verb == "watch":
                self._serve_watch(route, params, record)
                return
            code, payload = self._dispatch(method, route, params, raw)
        except ApiError as exc:
            code, payload, headers = exc.code, exc.body(), exc.headers
        except Exception as exc:  # a bug in this server: answer like the apiserver's panic handler, and say where
            traceback.print_exc(file=sys.stderr)
            code, payload = 500, status_body(500, "InternalError", f"test apiserver error: {exc!r}")
        # Log before answering, so a client that got its response always finds the request in the log.
        record.status = code
        store.log_request(record)
        try:
            if isinstance(payload, str):
                self._send_text(code, payload)
            else:
                self._send_json(code, payload, headers)
        except OSError:
            self.close_connection = True

    def _check_auth(self) -> None:
        token = self.server.token
        if token is None:
            return
        if self.headers.get("Authorization") != f"Bearer {token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _route(self, method: str, path: str, params: dict[str, str]) -> Route:
        """Map a URL path to a resource type and verb (404/405 Status when nothing serves it)."""
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] in ("version", "healthz", "livez", "readyz") or (
                parts[0] == "api" and len(parts) <= 2) or (parts[0] == "apis" and len(parts) <= 3):
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")
            return Route("discovery", special="/" + "/".join(parts))
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise self._no_route()
        store = self.server.store
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            inner = store.type_for(group, version, rest[2])
            if (inner is not None and inner.namespaced) or (group == "" and rest[2] == "bindings"):
                namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        if len(rest) > 3:
            raise self._no_route()
        if group == "" and plural == "bindings" and namespace is not None and name is None:
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on bindings")
            return Route("bind", store.type_for("", "v1", "pods"), namespace)
        rtype = store.type_for(group, version, plural)
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise self._no_route()
        if rtype.namespaced and namespace is None and (name is not None or method != "GET"):
            raise self._no_route()
        if sub is not None:
            if sub == "binding" and rtype.qualified == "pods":
                if method != "POST":
                    raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on pods/binding")
                return Route("bind", rtype, namespace, name, sub)
            if sub != "status" or not rtype.has_status:
                raise self._no_route()
            if method not in ("GET", "PUT", "PATCH"):
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {plural}/status")
        verbs = {
            ("GET", False): "list", ("GET", True): "get", ("POST", False): "create", ("PUT", True): "update",
            ("PATCH", True): "patch", ("DELETE", True): "delete",
        }
        verb = verbs.get((method, name is not None))
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")
        if verb == "list" and _parse_bool(params, "watch"):
            verb = "watch"
        return Route(verb, rtype, namespace, name, sub)

    @staticmethod
    def _no_route() -> ApiError:
        return ApiError(404, "NotFound", "the server could not find the requested resource",
                        {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})

    @staticmethod
    def _json(raw: bytes) -> Any:
        if not raw:
            raise bad_request("the request body is empty")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"error decoding request body as JSON: {exc}") from None

    def _dispatch(self, method: str, route: Route, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        store = self.server.store
        if route.special is not None:
            return 200, self._discovery(route.special)
        rtype, ns, name = route.rtype, route.namespace, route.name
        assert rtype is not None
        dry_run = params.get("dryRun") == "All"
        if params.get("dryRun") not in (None, "All"):
            raise bad_request(f'dryRun: Unsupported value: "{params["dryRun"]}": supported values: "All"')
        if route.verb == "bind":
            return 201, store.api_bind(ns or "", name, self._json(raw), dry_run=dry_run)
        if route.verb == "get":
            return 200, store.api_get(rtype, ns, name or "")
        if route.verb == "list":
            return 200, store.api_list(rtype, ns, params.get("labelSelector"), params.get("fieldSelector"),
                                       _parse_int(params, "limit"), params.get("continue"),
                                       params.get("resourceVersion"), params.get("resourceVersionMatch"))
        if route.verb == "create":
            return 201, store.api_create(rtype, ns, self._json(raw), dry_run=dry_run)
        if route.verb == "update":
            obj, created = store.api_update(rtype, ns, name or "", self._json(raw), route.subresource, dry_run)
            return (201 if created else 200), obj
        if route.verb == "patch":
            return 200, store.api_patch(rtype, ns, name or "", self.headers.get("Content-Type") or "",
                                        self._json(raw), route.subresource, dry_run)
        if route.verb == "delete":
            options = json.loads(raw) if raw.strip() else None
            if options is not None and not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
            return 200, store.api_delete(rtype, ns, name or "", options, dry_run)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # --- watch ---------------------------------------------------------------------------------------------

    def _serve_watch(self, route: Route, params: dict[str, str], record: RequestRecord) -> None:
        """Stream events as chunked JSON lines until timeout, a store-side close or client disconnect."""
        store = self.server.store
        assert route.rtype is not None
        timeout = _parse_int(params, "timeoutSeconds")
        watcher = store.api_watch(route.rtype, route.namespace, params.get("labelSelector"),
                                  params.get("fieldSelector"), params.get("resourceVersion"),
                                  bookmarks=_parse_bool(params, "allowWatchBookmarks"),
                                  send_initial_events=_parse_bool(params, "sendInitialEvents"))
        try:
            record.status = 200
            store.log_request(record)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            # timeoutSeconds=0 means no timeout given, as for the real server (its default then applies)
            self._watch_loop(watcher, timeout if timeout else store.watch_timeout_s)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            store.close_watcher(watcher)
            store.notify_all()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_event(self, event_type: str, obj: Any) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"
        self._write_chunk(line)

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _watch_loop(self, watcher: Watcher, timeout_s: float) -> None:
        store = self.server.store
        start = time.monotonic()
        deadline = start + timeout_s
        next_bookmark = start + store.bookmark_interval_s if watcher.bookmarks else float("inf")
        while True:
            now = time.monotonic()
            wait = max(0.0, min(0.2, deadline - now, next_bookmark - now))
            events, closed, current_rv, bookmark_now = store.next_watch_batch(watcher, wait)
            for event_type, obj in events:
                self._write_event(event_type, obj)
            if closed == "drop":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if closed == "expire":
                self._write_event("ERROR", status_body(410, "Expired", watcher.close_message))
                self._end_stream()
                return
            if closed == "clean":
                self._end_stream()
                return
            now = time.monotonic()
            if watcher.bookmarks and (bookmark_now or now >= next_bookmark):
                self._write_event("BOOKMARK", store.bookmark_event(watcher, current_rv))
                next_bookmark = now + store.bookmark_interval_s
            if now >= deadline:
                self._end_stream()
                return
            if not events and self._client_gone():
                self.close_connection = True
                return

    # --- discovery -----------------------------------------------------------------------------------------

    def _discovery(self, path: str) -> Any:
        store = self.server.store
        if path in ("/healthz", "/livez", "/readyz"):
            return "ok"
        if path in ("/", "/version"):
            return SERVER_VERSION
        if path == "/api":
            host, port = self.server.server_address[:2]
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{host}:{port}"}]}
        groups: dict[str, list[str]] = {}
        for t in store.types():
            if t.group:
                versions = groups.setdefault(t.group, [])
                if t.version not in versions:
                    versions.append(t.version)

        def group_doc(name: str) -> dict[str, Any]:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}

        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in sorted(groups)]}
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2:
            if parts[1] not in groups:
                raise self._no_route()
            return {"kind": "APIGroup", "apiVersion": "v1", **group_doc(parts[1])}
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        served = [t for t in store.types() if t.group == group and t.version == version]
        if not served:
            raise self._no_route()
        listing = []
        for t in served:
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            listing.append({"name": t.plural, "singularName": t.kind.lower(), "namespaced": t.namespaced,
                            "kind": t.kind, "verbs": verbs})
            if t.has_status:
                listing.append({"name": f"{t.plural}/status", "singularName": "", "namespaced": t.namespaced,
                                "kind": t.kind, "verbs": ["get", "patch", "update"]})
        if group == "":
            listing.append({"name": "pods/binding", "singularName": "", "namespaced": True, "kind": "Binding",
                            "verbs": ["create"]})
            listing.append({"name": "bindings", "singularName": "binding", "namespaced": True, "kind": "Binding",
                            "verbs": ["create"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
                "resources": listing}


class ApiServer:
    """A running test apiserver: ``url``, ``store``, client configuration and kubeconfig helpers."""

    def __init__(self, store: ApiStore | None = None, token: str | None = None, port: int = 0) -> None:
        self.store = store or ApiStore()
        self.token = token
        self._httpd = _Server(("127.0.0.1", port), self.store, token)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="test-apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: drop open watches, close every connection, free the port."""
        self.store.drop_watches()
        self._httpd.shutdown()
        with self._httpd.connections_lock:
            connections = list(self._httpd.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kube_config(self) -> Any:
        """A ``kubernetes.client.Configuration`` pointing at this server."""
        from kubernetes import client

        config = client.Configuration(host=self.url)
        if self.token is not None:
            config.api_key = {"BearerToken": self.token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return config

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server (close it when done)."""
        from kubernetes import client

        return client.ApiClient(self.kube_config())

    def write_kubeconfig(self, path: str | Path, namespace: str = "default", context: str = "toposched-test") -> Path:
        """Write a kubeconfig whose current context points at this server; returns the path."""
        user: dict[str, Any] = {"token": self.token} if self.token is not None else {}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": user}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
            "preferences": {},
        }
        target = Path(path)
        target.write_text(json.dumps(doc, indent=2) + "\n")  # JSON is valid YAML; kubeconfig loaders read it
        return target


@contextlib.contextmanager
def running_apiserver(store: ApiStore | None = None, token: str | None = None) -> Iterator[ApiServer]:
    """Start a test apiserver on a free 127.0.0.1 port for the duration of the block."""
    server = ApiServer(store, token).start()
    try:
        yield server
    finally:
        server.stop()
