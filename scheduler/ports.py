"""The driver's seams to the outside world: binder, event sink, lease store (Protocols).

Each has a Kubernetes implementation (``scheduler.adapters.kube``) and an in-memory one
(``scheduler.fakes``), as httpx swaps transports. Objects cross these seams as plain
values (``ObjectRef``, dicts, ``LeaseRecord``), never as client models. Every API
failure is a ``KubeApiError`` (mapped once, in the adapters); the loop decides from its
fields whether to retry, report or give up, and never dies of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from models.errors import KubeApiError as _BaseKubeApiError

RETRIABLE_STATUS = frozenset({0, 429, 500, 502, 503, 504})


class KubeApiError(_BaseKubeApiError):
    """An API call that failed. ``status`` 0: no HTTP answer (timeout, connection refused)."""

    def __init__(self, status: int, reason: str, message: str = "", *, operation: str = "",
                 retry_after_s: float | None = None) -> None:
        super().__init__(status, reason, message)
        self.operation = operation
        self.retry_after_s = retry_after_s
        what = f"{operation}: " if operation else ""
        code = f"{status} {reason}" if status else reason
        self.args = (f"{what}{code}: {message}" if message else f"{what}{code}",)

    @property
    def is_retriable(self) -> bool:
        """Worth trying again unchanged: timeouts, throttling, server errors."""
        return self.status in RETRIABLE_STATUS

    @property
    def is_conflict(self) -> bool:
        return self.status == 409

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an event or a write points at."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "v1"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def pod(cls, namespace: str, name: str, uid: str = "") -> ObjectRef:
        return cls("Pod", namespace, name, uid)

    @classmethod
    def of(cls, obj: Mapping[str, Any], kind: str = "Pod", api_version: str = "v1") -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(kind, meta.get("namespace") or "", meta.get("name") or "", meta.get("uid") or "", api_version)


class Binder(Protocol):
    """Writes to pods: bind, annotate, report the PodScheduled condition and the nominated node, delete."""

    def bind(self, pod: ObjectRef, node: str, annotations: Mapping[str, str]) -> None:
        """POST pods/binding (``annotations`` are merged into the pod by the API server)."""

    def annotate(self, pod: ObjectRef, annotations: Mapping[str, str]) -> None:
        """Merge-patch ``metadata.annotations``."""

    def set_condition(self, pod: ObjectRef, condition: Mapping[str, Any]) -> None:
        """Patch one ``status.conditions`` entry (merged by ``type``)."""

    def delete(self, pod: ObjectRef) -> None:
        """Delete the pod (its controller recreates it)."""

    def set_nominated_node(self, pod: ObjectRef, node: str | None) -> None:
        """Set (or, with None, clear) ``status.nominatedNodeName``: where a preemptor waits for its victims to go."""


class EventSink(Protocol):
    """Records events (events.k8s.io/v1 semantics; best effort)."""

    def emit(self, regarding: ObjectRef, type_: str, reason: str, action: str, note: str) -> None: ...


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a coordination.k8s.io/v1 Lease that leader election reads and writes.

    Times are MicroTime strings (RFC 3339, 6 fractional digits); ``resource_version`` is
    the optimistic-concurrency token (empty for a lease not yet stored).
    """

    holder: str = ""
    lease_duration_s: int = 15
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0
    resource_version: str = ""


class LeaseStore(Protocol):
    """One named Lease. ``create`` and ``update`` raise ``KubeApiError`` 409 when someone else wrote first."""

    def get(self) -> LeaseRecord | None: ...

    def create(self, record: LeaseRecord) -> LeaseRecord: ...

    def update(self, record: LeaseRecord) -> LeaseRecord: ...
