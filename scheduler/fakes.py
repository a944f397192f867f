"""In-memory binder, event sink and lease store: the driver without a cluster.

For the simulator and for tests of the loop. They keep what was written, can be told to
fail, and call ``on_bind`` / ``on_delete`` so a caller can play the watch back into the
scheduler (a bound pod comes back as MODIFIED with ``spec.nodeName``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler.ports import KubeApiError, LeaseRecord, ObjectRef


@dataclass
class _Faults:
    """``key -> [status, ...]``: the next calls for that key fail with these codes, in order."""

    pending: dict[str, list[int]] = field(default_factory=dict)

    def arm(self, key: str, status: int, times: int) -> None:
        self.pending.setdefault(key, []).extend([status] * times)

    def take(self, key: str, operation: str) -> None:
        codes = self.pending.get(key)
        if codes:
            status = codes.pop(0)
            raise KubeApiError(status, "Injected", f"injected failure for {key}", operation=operation)


class InMemoryBinder:
    """Records binds, annotations, conditions, nominated nodes and deletions; thread-safe."""

    def __init__(self, on_bind: Callable[[ObjectRef, str, dict[str, str]], None] | None = None,
                 on_delete: Callable[[ObjectRef], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = _Faults()
        self.on_bind = on_bind
        self.on_delete = on_delete
        self.bound: dict[str, str] = {}
        self.annotations: dict[str, dict[str, str]] = {}
        self.conditions: dict[str, dict[str, Any]] = {}
        self.nominated: dict[str, str | None] = {}
        self.deleted: list[str] = []
        self.calls: list[tuple[str, str]] = []

    def fail(self, pod_key: str, status: int = 500, times: int = 1, operation: str = "bind") -> None:
        """Make the next ``times`` calls of ``operation`` for ``pod_key`` fail with ``status``."""
        with self._lock:
            self._faults.arm(f"{operation}:{pod_key}", status, times)

    def bind(self, pod: ObjectRef, node: str, annotations: Mapping[str, str]) -> None:
        with self._lock:
            self.calls.append(("bind", pod.key))
            self._faults.take(f"bind:{pod.key}", "bind")
            if pod.key in self.bound:
                raise KubeApiError(409, "Conflict", f'pod {pod.name} is already assigned to node "{self.bound[pod.key]}"',
                                   operation="bind")
            self.bound[pod.key] = node
            self.annotations.setdefault(pod.key, {}).update(annotations)
        if self.on_bind is not None:
            self.on_bind(pod, node, dict(annotations))

    def annotate(self, pod: ObjectRef, annotations: Mapping[str, str]) -> None:
        with self._lock:
            self.calls.append(("annotate", pod.key))
            self._faults.take(f"annotate:{pod.key}", "annotate")
            self.annotations.setdefault(pod.key, {}).update(annotations)

    def set_condition(self, pod: ObjectRef, condition: Mapping[str, Any]) -> None:
        with self._lock:
            self.calls.append(("condition", pod.key))
            self._faults.take(f"condition:{pod.key}", "condition")
            self.conditions[pod.key] = dict(condition)

    def set_nominated_node(self, pod: ObjectRef, node: str | None) -> None:
        with self._lock:
            self.calls.append(("nominate", pod.key))
            self._faults.take(f"nominate:{pod.key}", "nominate")
            self.nominated[pod.key] = node

    def delete(self, pod: ObjectRef) -> None:
        with self._lock:
            self.calls.append(("delete", pod.key))
            self._faults.take(f"delete:{pod.key}", "delete")
            self.deleted.append(pod.key)
            self.bound.pop(pod.key, None)
        if self.on_delete is not None:
            self.on_delete(pod)


@dataclass(frozen=True)
class RecordedEvent:
    regarding: ObjectRef
    type: str
    reason: str
    action: str
    note: str


class RecordingEvents:
    """Keeps every event; ``for_object(key)`` filters them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[RecordedEvent] = []

    def emit(self, regarding: ObjectRef, type_: str, reason: str, action: str, note: str) -> None:
        with self._lock:
            self.events.append(RecordedEvent(regarding, type_, reason, action, note))

    def for_object(self, key: str, reason: str | None = None) -> list[RecordedEvent]:
        with self._lock:
            return [e for e in self.events if e.regarding.key == key and (reason is None or e.reason == reason)]


class InMemoryLeaseStore:
    """One Lease with compare-and-swap on ``resource_version``; several electors may share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._record: LeaseRecord | None = None
        self._version = 0
        self.fail_writes = False  # every create/update answers 503 (an unreachable API server)

    def get(self) -> LeaseRecord | None:
        with self._lock:
            if self.fail_writes:
                raise KubeApiError(503, "ServiceUnavailable", "injected", operation="get lease")
            return self._record

    def create(self, record: LeaseRecord) -> LeaseRecord:
        with self._lock:
            self._check()
            if self._record is not None:
                raise KubeApiError(409, "AlreadyExists", "lease exists", operation="create lease")
            return self._store(record)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        with self._lock:
            self._check()
            if self._record is None:
                raise KubeApiError(404, "NotFound", "no lease", operation="update lease")
            if record.resource_version != self._record.resource_version:
                raise KubeApiError(409, "Conflict", "the object has been modified", operation="update lease")
            return self._store(record)

    def _check(self) -> None:
        if self.fail_writes:
            raise KubeApiError(503, "ServiceUnavailable", "injected", operation="write lease")

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self._version += 1
        self._record = replace(record, resource_version=str(self._version))
        return self._record


class InMemoryCluster:
    """Nodes and pods as API dicts, a ``Binder`` over them, and the watch played back into a sink.

    ``connect(sink)`` lists everything into the sink (a ``Scheduler``); later writes (``add_*``,
    ``bind``, ``delete``, ...) reach it as watch events, as a real API server would send them.
    Binds follow the API server's rules: 404 for a missing pod, 409 when already bound or when
    the UID precondition does not match. ``fail(...)`` injects errors per pod and operation.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._faults = _Faults()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.sink: Any = None
        self._uid = 0
        self._rv = 0

    # --- setup and watch -------------------------------------------------------------------

    def connect(self, sink: Any) -> None:
        self.sink = sink
        with self._lock:
            sink.replace("nodes", [dict(n) for n in self.nodes.values()])
            sink.replace("pods", [dict(p) for p in self.pods.values()])

    def _emit(self, resource: str, type_: str, obj: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink.apply(resource, type_, obj)

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj = {**obj, "metadata": {**(obj.get("metadata") or {}), "resourceVersion": str(self._rv)}}
        return obj

    def add_node(self, node: dict[str, Any]) -> None:
        with self._lock:
            name = node["metadata"]["name"]
            new = self._stamp(node)
            existed = name in self.nodes
            self.nodes[name] = new
        self._emit("nodes", "MODIFIED" if existed else "ADDED", new)

    def remove_node(self, name: str) -> None:
        with self._lock:
            old = self.nodes.pop(name)
        self._emit("nodes", "DELETED", old)

    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            meta = dict(pod.get("metadata") or {})
            meta.setdefault("namespace", "default")
            if not meta.get("uid"):
                self._uid += 1
                meta["uid"] = f"uid-{self._uid}"
            new = self._stamp({**pod, "metadata": meta})
            key = f"{meta['namespace']}/{meta['name']}"
            existed = key in self.pods
            self.pods[key] = new
        self._emit("pods", "MODIFIED" if existed else "ADDED", new)
        return new

    def finish_pod(self, key: str, phase: str = "Succeeded") -> None:
        """The pod ran to completion: the scheduler's watch of non-terminal pods sees it go."""
        with self._lock:
            old = self.pods.pop(key)
        self._emit("pods", "DELETED", {**old, "status": {**(old.get("status") or {}), "phase": phase}})

    def fail(self, pod_key: str, status: int = 500, times: int = 1, operation: str = "bind") -> None:
        with self._lock:
            self._faults.arm(f"{operation}:{pod_key}", status, times)

    def bound(self) -> dict[str, str]:
        """pod key -> node of every bound pod."""
        with self._lock:
            return {k: p["spec"]["nodeName"] for k, p in self.pods.items() if (p.get("spec") or {}).get("nodeName")}

    # --- Binder ---------------------------------------------------------------------------------

    def _pod(self, ref: ObjectRef, operation: str) -> dict[str, Any]:
        self._faults.take(f"{operation}:{ref.key}", operation)
        pod = self.pods.get(ref.key)
        if pod is None:
            raise KubeApiError(404, "NotFound", f'pods "{ref.name}" not found', operation=operation)
        if ref.uid and pod["metadata"].get("uid") != ref.uid:
            raise KubeApiError(409, "Conflict", "Precondition failed: UID mismatch", operation=operation)
        return pod

    def bind(self, pod: ObjectRef, node: str, annotations: Mapping[str, str]) -> None:
        with self._lock:
            old = self._pod(pod, "bind")
            if (old.get("spec") or {}).get("nodeName"):
                raise KubeApiError(409, "Conflict", f'pod {pod.name} is already assigned to node '
                                                    f'"{old["spec"]["nodeName"]}"', operation="bind")
            meta = {**old["metadata"], "annotations": {**(old["metadata"].get("annotations") or {}), **annotations}}
            new = self._stamp({**old, "metadata": meta, "spec": {**old["spec"], "nodeName": node}})
            self.pods[pod.key] = new
        self._emit("pods", "MODIFIED", new)

    def annotate(self, pod: ObjectRef, annotations: Mapping[str, str]) -> None:
        with self._lock:
            old = self._pod(pod, "annotate")
            meta = {**old["metadata"], "annotations": {**(old["metadata"].get("annotations") or {}), **annotations}}
            new = self._stamp({**old, "metadata": meta})
            self.pods[pod.key] = new
        self._emit("pods", "MODIFIED", new)

    def set_condition(self, pod: ObjectRef, condition: Mapping[str, Any]) -> None:
        with self._lock:
            old = self._pod(pod, "condition")
            conds = [c for c in (old.get("status") or {}).get("conditions") or [] if c.get("type") != condition["type"]]
            new = self._stamp({**old, "status": {**(old.get("status") or {}), "conditions": [*conds, dict(condition)]}})
            self.pods[pod.key] = new
        self._emit("pods", "MODIFIED", new)

    def set_nominated_node(self, pod: ObjectRef, node: str | None) -> None:
        with self._lock:
            old = self._pod(pod, "nominate")
            status = {k: v for k, v in (old.get("status") or {}).items() if k != "nominatedNodeName"}
            if node is not None:
                status["nominatedNodeName"] = node
            new = self._stamp({**old, "status": status})
            self.pods[pod.key] = new
        self._emit("pods", "MODIFIED", new)

    def delete(self, pod: ObjectRef) -> None:
        with self._lock:
            old = self._pod(pod, "delete")
            del self.pods[pod.key]
        self._emit("pods", "DELETED", old)
