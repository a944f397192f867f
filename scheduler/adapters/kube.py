"""The Kubernetes side of the driver, on the official ``kubernetes`` client.

One ``ApiClient`` (connection pool sized for the binding threads) carries every call.
Nothing is deserialised into client models: requests go through the client's
``param_serialize`` / ``call_api`` (auth, TLS, token refresh as configured by
``load_kube_config`` / ``load_incluster_config``) and responses are read as raw bytes and
``json.loads``-ed. That is what ``_preload_content=False`` buys on the generated methods,
and it sidesteps the client's binding quirk: the API server answers a ``pods/binding``
POST with a ``Status``, which the generated ``create_namespaced_pod_binding`` would try to
turn into a ``V1Binding`` and raise *after* the bind succeeded (K8S.md 3.2).

Parts:

- ``KubeApi``: client setup and one ``request()``; every failure becomes a ``KubeApiError``.
  Requests wait for a ``TokenBucket`` (client-side QPS and burst, as client-go's rate limiter
  does for kube-scheduler); watch streams and the leader lease do not.
- ``Reflector``: list + watch one resource with resourceVersion, bookmarks, 410 Gone and
  dropped streams answered by a re-list (the sink diffs it), errors retried with backoff.
- ``KubeBinder``, ``KubeEventSink`` (events.k8s.io/v1, core/v1 fallback), ``KubeLeaseStore``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from models.errors import ToposchedError
from scheduler.leader import micro_time
from scheduler.ports import KubeApiError, LeaseRecord, ObjectRef

log = logging.getLogger("toposched.kube")

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ConfigError(ToposchedError):
    """No usable API server configuration (no kubeconfig and not inside a cluster)."""


def load_configuration(kubeconfig: str | None, *, pool_size: int = 16, context: str | None = None) -> Any:
    """A ``kubernetes.client.Configuration``: from ``kubeconfig``, else the in-cluster service account."""
    cfg = k8s_client.Configuration()
    try:
        if kubeconfig:
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        else:
            k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config"
        hint = "" if kubeconfig else " (not running in a pod? pass --kubeconfig FILE)"
        raise ConfigError(f"{where}: {exc}{hint}") from None
    except OSError as exc:
        raise ConfigError(f"kubeconfig {kubeconfig}: {exc}") from None
    cfg.connection_pool_maxsize = pool_size
    return cfg


def bound_retries(configuration: Any) -> None:
    """Keep urllib3 from repeating a timed-out read: by default it tries three more times at
    once, so a call could last 4x its timeout (a lease read past the renew deadline).
    Reconnects stay; reads are the caller's to retry, with backoff. A configuration that
    sets its own ``retries`` is left alone."""
    if configuration.retries is None:
        configuration.retries = urllib3.Retry(total=3, connect=3, read=0, status=0, redirect=0)


def _api_error(exc: BaseException, operation: str) -> KubeApiError:
    """Map a client or transport exception to ``KubeApiError`` (the one place this happens)."""
    if isinstance(exc, KubeApiError):
        return exc
    if isinstance(exc, ApiException):
        reason, message, retry_after = str(exc.reason or ""), "", None
        try:
            body = json.loads(exc.body or "")
            reason = body.get("reason") or reason
            message = body.get("message") or ""
            retry_after = (body.get("details") or {}).get("retryAfterSeconds")
        except (ValueError, AttributeError):
            message = (exc.body or "")[:200] if isinstance(exc.body, str) else ""
        return KubeApiError(int(exc.status or 0), reason, message, operation=operation, retry_after_s=retry_after)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # what failed on the last try
    if isinstance(exc, urllib3.exceptions.TimeoutError | socket.timeout | TimeoutError):
        return KubeApiError(0, "Timeout", str(exc), operation=operation)
    return KubeApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}", operation=operation)


_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError, ValueError)


class TokenBucket:
    """Client-side request rate: ``qps`` tokens a second, at most ``burst`` saved up.

    ``wait()`` reserves a token under the lock and sleeps outside it, so concurrent callers
    queue in arrival order and the long-run rate never exceeds ``qps``."""

    def __init__(self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs qps > 0 and burst >= 1, not {qps} and {burst}")
        self.qps = float(qps)
        self.burst = int(burst)
        self._clock = clock
        self._closed = threading.Event()
        self._sleep = sleep if sleep is not None else self._closed.wait  # close() wakes every waiter
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self) -> float:
        """Take one token; the seconds until it is ours (0 when one was saved up)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def wait(self) -> float:
        """Block until a token is ours (or the bucket is closed); the seconds waited."""
        if self._closed.is_set():
            return 0.0
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
        return delay

    def close(self) -> None:
        """Stop limiting: waiters return now, later requests do not wait (shutdown must not queue)."""
        self._closed.set()


def rate_limiter(qps: float, burst: int) -> TokenBucket | None:
    """The bucket for a configured ``api_qps`` / ``api_burst``; None (no limit) when qps is 0."""
    return TokenBucket(qps, burst) if qps > 0 else None


class KubeApi:
    """One ``ApiClient`` and the raw request helpers every adapter uses."""

    def __init__(self, configuration: Any, request_timeout_s: float = 30.0, *, limiter: TokenBucket | None = None,
                 on_throttle: Callable[[float], None] | None = None, client: Any = None) -> None:
        if client is None and configuration is not None:
            bound_retries(configuration)
        self.client = client if client is not None else k8s_client.ApiClient(configuration)
        self.request_timeout_s = request_timeout_s
        self.limiter = limiter
        self.on_throttle = on_throttle

    def unlimited(self) -> KubeApi:
        """The same client without the rate limit (the leader lease must not queue behind bindings)."""
        return KubeApi(None, self.request_timeout_s, client=self.client)

    def close(self) -> None:
        if self.limiter is not None:
            self.limiter.close()
        self.client.close()

    def stop_limiting(self) -> None:
        """Let requests through without waiting (first step of a shutdown)."""
        if self.limiter is not None:
            self.limiter.close()

    def _send(self, method: str, path: str, query: list[tuple[str, Any]] | None, body: Any,
              content_type: str | None, timeout: Any) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type or JSON
        m, url, hdrs, data, _ = self.client.param_serialize(
            method, path, query_params=query or None, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        return self.client.call_api(m, url, hdrs, data, _request_timeout=timeout)

    def request(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None, body: Any = None,
                content_type: str | None = None, operation: str = "", timeout: float | None = None) -> Any:
        """One call; the decoded JSON answer (None when empty). Errors: ``KubeApiError``."""
        op = operation or f"{method} {path}"
        if self.limiter is not None:
            waited = self.limiter.wait()
            if waited > 0 and self.on_throttle is not None:
                self.on_throttle(waited)
        try:
            resp = self._send(method, path, query, body, content_type, timeout or self.request_timeout_s)
            data = resp.read()
        except ApiException as exc:
            raise _api_error(exc, op) from None
        except _TRANSPORT_ERRORS as exc:
            raise _api_error(exc, op) from None
        if not 200 <= resp.status <= 299:
            raise _api_error(ApiException(http_resp=resp.response, body=data.decode("utf-8", "replace")), op)
        return json.loads(data) if data else None

    def open_stream(self, path: str, query: list[tuple[str, Any]], read_timeout_s: float, operation: str) -> Any:
        """A streaming GET (watch); the raw urllib3 response, status checked."""
        try:
            resp = self._send("GET", path, query, None, None, (10.0, read_timeout_s))
        except (ApiException, *_TRANSPORT_ERRORS) as exc:
            raise _api_error(exc, operation) from None
        if resp.status != 200:
            data = resp.read()
            raise _api_error(ApiException(http_resp=resp.response, body=data.decode("utf-8", "replace")), operation)
        return resp.response


# --- list + watch ----------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """A collection the scheduler lists and watches (cluster-wide)."""

    name: str  # plural[.group], the key the sink sees
    path: str  # e.g. /api/v1/pods
    field_selector: str = ""
    optional: bool = False  # a CRD that may not be installed: 404 is "absent", not an error


NODES = Resource("nodes", "/api/v1/nodes")
# every non-terminal pod (bound: capacity accounting; unbound: maybe ours)
PODS = Resource("pods", "/api/v1/pods", field_selector="status.phase!=Succeeded,status.phase!=Failed")
GROUP_RESOURCES = (
    Resource("podgroups.scheduling.x-k8s.io", "/apis/scheduling.x-k8s.io/v1alpha1/podgroups", optional=True),
    Resource("podgroups.scheduling.volcano.sh", "/apis/scheduling.volcano.sh/v1beta1/podgroups", optional=True),
    Resource("podgroups.scheduling.k8s.io", "/apis/scheduling.k8s.io/v1alpha3/podgroups", optional=True),
    Resource("pytorchjobs.kubeflow.org", "/apis/kubeflow.org/v1/pytorchjobs", optional=True),
    Resource("jobsets.jobset.x-k8s.io", "/apis/jobset.x-k8s.io/v1alpha2/jobsets", optional=True),
    Resource("leaderworkersets.leaderworkerset.x-k8s.io", "/apis/leaderworkerset.x-k8s.io/v1/leaderworkersets",
             optional=True),
)
# policy/v1 PodDisruptionBudgets (preemption prefers victims that break none); optional like the CRDs:
# a server without policy/v1 answers 404 and the scheduler preempts without budgets
PDBS = Resource("poddisruptionbudgets.policy", "/apis/policy/v1/poddisruptionbudgets", optional=True)


class WatchSink(Protocol):
    """Where a reflector delivers: a full state after each (re-)list, then single events."""

    def replace(self, resource: str, items: list[dict[str, Any]]) -> None: ...

    def apply(self, resource: str, type_: str, obj: dict[str, Any]) -> None: ...


class Expired(Exception):
    """The resourceVersion we watch from is too old (410 Gone): re-list."""


class StreamDropped(Exception):
    """The watch connection broke mid-stream: re-list."""


def list_all(api: KubeApi, res: Resource, page_size: int = 500) -> tuple[list[dict[str, Any]], str]:
    """Every object (paged with ``limit``/``continue``) and the list's resourceVersion."""
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        query: list[tuple[str, Any]] = [("limit", page_size)]
        if res.field_selector:
            query.append(("fieldSelector", res.field_selector))
        if token:
            query.append(("continue", token))
        try:
            page = api.request("GET", res.path, query=query, operation=f"list {res.name}")
        except KubeApiError as exc:
            if exc.is_gone and token:  # the continue token expired: start over
                items, token = [], ""
                continue
            raise
        items.extend(page.get("items") or [])
        meta = page.get("metadata") or {}
        token = meta.get("continue") or ""
        if not token:
            return items, str(meta.get("resourceVersion") or "")


class Reflector:
    """List + watch one resource into a sink until stopped.

    Phases, repeated: (1) list (paged) and hand the sink the full state; (2) watch from the
    list's resourceVersion with bookmarks, passing every event on and advancing the
    resourceVersion (bookmarks included); (3) a clean end of stream re-watches from there,
    while 410 Gone (HTTP or in-stream ERROR) and a dropped connection go back to (1).
    API errors wait with backoff (0.2 s doubling to 10 s); an optional CRD that is not
    served (404) is reported empty and looked for again every 60 s.
    """

    def __init__(self, api: KubeApi, res: Resource, sink: WatchSink, *, watch_timeout_s: int = 300,
                 on_relist: Callable[[str, str], None] | None = None,
                 on_error: Callable[[str, KubeApiError], None] | None = None) -> None:
        self.api = api
        self.res = res
        self.sink = sink
        self.watch_timeout_s = watch_timeout_s
        self.on_relist = on_relist
        self.on_error = on_error
        self.synced = threading.Event()
        self.resource_version = ""
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Reflector:
        self._thread = threading.Thread(target=self.run, name=f"reflector-{self.res.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            for close in (getattr(resp, "shutdown", None), resp.close):
                try:
                    if close is not None:
                        close()
                        break
                except Exception:  # noqa: BLE001 - whichever works on this urllib3; the thread exits either way
                    continue
        if self._thread is not None:
            self._thread.join(timeout=5)

    def run(self) -> None:
        backoff = 0.2
        cause = "start"
        while not self._stop.is_set():
            try:
                if cause:
                    self._relist(cause)
                    cause = ""
                self._watch_once()
                backoff = 0.2
            except Expired:
                cause = "gone"
            except StreamDropped as exc:
                if self._stop.is_set():
                    return
                log.info("watch dropped: %s", exc, extra={"resource": self.res.name})
                cause = "dropped"
            except KubeApiError as exc:
                if self._stop.is_set():
                    return
                if exc.is_gone:
                    cause = "gone"
                    continue
                if exc.is_not_found and self.res.optional:
                    self.sink.replace(self.res.name, [])
                    self.synced.set()
                    self._stop.wait(60.0)
                    cause = "absent"
                    continue
                if self.on_error:
                    self.on_error(self.res.name, exc)
                log.warning("list/watch failed, retrying in %.1fs: %s", backoff, exc,
                            extra={"resource": self.res.name})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                cause = cause or "error"

    def _relist(self, cause: str) -> None:
        items, rv = list_all(self.api, self.res)
        self.resource_version = rv
        self.sink.replace(self.res.name, items)
        self.synced.set()
        if self.on_relist:
            self.on_relist(self.res.name, cause)

    def _watch_once(self) -> None:
        for type_, obj in self._events():
            if type_ == "BOOKMARK":
                self.resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or self.resource_version)
                continue
            if type_ == "ERROR":
                code = int(obj.get("code") or 0)
                if code == 410:
                    raise Expired(obj.get("message") or "")
                raise KubeApiError(code, str(obj.get("reason") or "Error"), str(obj.get("message") or ""),
                                   operation=f"watch {self.res.name}")
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = str(rv)
            self.sink.apply(self.res.name, type_, obj)

    def _events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        query: list[tuple[str, Any]] = [("watch", "true"), ("allowWatchBookmarks", "true"),
                                        ("timeoutSeconds", self.watch_timeout_s)]
        if self.resource_version:
            query.append(("resourceVersion", self.resource_version))
        if self.res.field_selector:
            query.append(("fieldSelector", self.res.field_selector))
        resp = self.api.open_stream(self.res.path, query, self.watch_timeout_s + 30.0, f"watch {self.res.name}")
        self._resp = resp
        try:
            for line in resp:
                if self._stop.is_set():
                    return
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise StreamDropped(f"undecodable watch line: {line[:80]!r}") from None
                yield str(event.get("type") or ""), event.get("object") or {}
        except _TRANSPORT_ERRORS as exc:
            raise StreamDropped(f"{type(exc).__name__}: {exc}") from None
        finally:
            self._resp = None
            try:
                resp.release_conn()
            except Exception:  # noqa: BLE001 - a broken connection cannot go back to the pool
                pass


# --- writes --------------------------------------------------------------------------------


def _pod_path(pod: ObjectRef, sub: str = "") -> str:
    return f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}" + (f"/{sub}" if sub else "")


class KubeBinder:
    """Pod writes: pods/binding, annotations (merge patch), PodScheduled and nominatedNodeName (status
    patches), delete."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def bind(self, pod: ObjectRef, node: str, annotations: Mapping[str, str]) -> None:
        meta: dict[str, Any] = {"name": pod.name, "namespace": pod.namespace}
        if pod.uid:
            meta["uid"] = pod.uid  # refuses a re-created pod of the same name
        if annotations:
            meta["annotations"] = dict(annotations)
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": meta,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        self.api.request("POST", _pod_path(pod, "binding"), body=body, operation=f"bind {pod.key}")

    def annotate(self, pod: ObjectRef, annotations: Mapping[str, str]) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        self.api.request("PATCH", _pod_path(pod), body=body, content_type=MERGE_PATCH,
                         operation=f"annotate {pod.key}")

    def set_condition(self, pod: ObjectRef, condition: Mapping[str, Any]) -> None:
        body = {"status": {"conditions": [dict(condition)]}}
        self.api.request("PATCH", _pod_path(pod, "status"), body=body, content_type=STRATEGIC_PATCH,
                         operation=f"patch status {pod.key}")

    def set_nominated_node(self, pod: ObjectRef, node: str | None) -> None:
        body = {"status": {"nominatedNodeName": node}}
        self.api.request("PATCH", _pod_path(pod, "status"), body=body, content_type=MERGE_PATCH,
                         operation=f"patch status {pod.key}")

    def delete(self, pod: ObjectRef) -> None:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if pod.uid:
            body["preconditions"] = {"uid": pod.uid}
        try:
            self.api.request("DELETE", _pod_path(pod), body=body, operation=f"delete {pod.key}")
        except KubeApiError as exc:
            if not exc.is_not_found:  # already gone is what we wanted
                raise


class KubeEventSink:
    """Creates events.k8s.io/v1 Events; falls back to core/v1 for good if that API is refused (404/403)."""

    def __init__(self, api: KubeApi, controller: str, instance: str) -> None:
        self.api = api
        self.controller = controller[:128]
        self.instance = instance[:128]
        self.use_core = False

    def emit(self, regarding: ObjectRef, type_: str, reason: str, action: str, note: str) -> None:
        if len(note.encode()) > 1024:
            note = note.encode()[:1020].decode("utf-8", "ignore") + " ..."
        ns = regarding.namespace or "default"
        name = f"{regarding.name}.{time.time_ns():x}"
        ref = {"kind": regarding.kind, "namespace": regarding.namespace, "name": regarding.name,
               "uid": regarding.uid, "apiVersion": regarding.api_version}
        ref = {k: v for k, v in ref.items() if v}
        if not self.use_core:
            body = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
                    "eventTime": micro_time(), "reportingController": self.controller,
                    "reportingInstance": self.instance, "action": action, "reason": reason, "regarding": ref,
                    "note": note, "type": type_}
            try:
                self.api.request("POST", f"/apis/events.k8s.io/v1/namespaces/{ns}/events", body=body,
                                 operation=f"event {regarding.key}")
                return
            except KubeApiError as exc:
                if exc.status not in (403, 404):
                    raise
                log.info("events.k8s.io/v1 refused (%s); using core/v1 events", exc.status)
                self.use_core = True
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
                "involvedObject": ref, "reason": reason, "message": note, "type": type_,
                "source": {"component": self.controller}, "firstTimestamp": stamp, "lastTimestamp": stamp,
                "count": 1, "action": action, "reportingComponent": self.controller,
                "reportingInstance": self.instance}
        self.api.request("POST", f"/api/v1/namespaces/{ns}/events", body=body, operation=f"event {regarding.key}")


class KubeLeaseStore:
    """One coordination.k8s.io/v1 Lease; updates carry the resourceVersion (409 when stale)."""

    def __init__(self, api: KubeApi, namespace: str, name: str, timeout_s: float = 5.0) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.timeout_s = timeout_s
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def get(self) -> LeaseRecord | None:
        try:
            obj = self.api.request("GET", f"{self._collection}/{self.name}", operation="get lease",
                                   timeout=self.timeout_s)
        except KubeApiError as exc:
            if exc.is_not_found:
                return None
            raise
        return self._record(obj)

    def create(self, record: LeaseRecord) -> LeaseRecord:
        obj = self.api.request("POST", self._collection, body=self._body(record), operation="create lease",
                               timeout=self.timeout_s)
        return self._record(obj)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        obj = self.api.request("PUT", f"{self._collection}/{self.name}", body=self._body(record),
                               operation="update lease", timeout=self.timeout_s)
        return self._record(obj)

    def _body(self, r: LeaseRecord) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if r.resource_version:
            meta["resourceVersion"] = r.resource_version
        spec: dict[str, Any] = {"holderIdentity": r.holder, "leaseDurationSeconds": r.lease_duration_s,
                                "leaseTransitions": r.transitions}
        if r.acquire_time:
            spec["acquireTime"] = r.acquire_time
        if r.renew_time:
            spec["renewTime"] = r.renew_time
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    @staticmethod
    def _record(obj: Mapping[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        meta = obj.get("metadata") or {}
        return LeaseRecord(holder=spec.get("holderIdentity") or "",
                           lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
                           acquire_time=spec.get("acquireTime") or "", renew_time=spec.get("renewTime") or "",
                           transitions=int(spec.get("leaseTransitions") or 0),
                           resource_version=str(meta.get("resourceVersion") or ""))
