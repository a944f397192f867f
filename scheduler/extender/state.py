"""The extender's view of the cluster: the secondary scheduler's ``ClusterCache``, shared safely between threads.

The cache is built for one owning thread; in extender mode the reflectors (watch threads)
write to it and the HTTP threads read it, so ``CacheState`` puts one lock around both and
is itself the reflectors' ``WatchSink``. It adds the one thing the cache does not keep
that preemption needs: the priority of every bound pod (the PodDisruptionBudgets and pod
labels preempt also reads are in the cache). ``ClusterState`` is the
interface the handlers use; tests build a ``CacheState`` from Node/Pod dicts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from models.placement import Placement
from models.spec import LevelSpec
from scheduler import workloads
from scheduler.cache import GROUP_KINDS, PDB_RESOURCE, ClusterCache
from scheduler.ledger import Allocation, LedgerError
from scheduler.snapshot import Snapshot
from scheduler.workloads.disruption import Budget

GONE_UIDS = 10_000  # deleted pods' uids remembered (the handlers drop what they noted of them)


class ClusterState(Protocol):
    """What the extender handlers read and write."""

    def levels(self) -> list[LevelSpec]: ...

    def is_synced(self) -> bool: ...

    def snapshot(self) -> Snapshot | None:
        """A copy of the free capacity (None: no usable node yet)."""

    def holds(self, key: str) -> bool:
        """The ledger counts pod ``key`` (assumed or bound)."""

    def is_gone(self, uid: str) -> bool:
        """The watch showed the pod of this uid deleted (recently: the last ``GONE_UIDS`` deletions)."""

    def assume(self, key: str, placement: Placement, gang: str | None) -> None: ...

    def forget(self, key: str) -> None: ...

    def pending_pod(self, key: str) -> dict[str, Any] | None: ...

    def nominated_pods(self) -> list[dict[str, Any]]:
        """Pending pods with ``status.nominatedNodeName`` (preemptors waiting for their room)."""

    def pending_group_pods(self, gang: str) -> list[dict[str, Any]]:
        """The pending members of ``gang``, less those bound here and not yet seen bound by the
        watch (``bound_gang_members`` counts them)."""

    def group_object(self, ref: workloads.ObjectRef | None) -> dict[str, Any] | None: ...

    def bound_gang_members(self, gang: str) -> int: ...

    def bound_gang_allocations(self, gang: str) -> list[Allocation]:
        """The ledger's allocations of ``gang``'s members, bound or assumed, not terminating."""

    def pods_on_node(self, node: str) -> list[tuple[dict[str, Any], Allocation]]:
        """``({metadata: {uid, name: pod key, labels}, spec: {priority}}, allocation)`` of every pod the
        ledger has on ``node``."""

    def budgets(self) -> list[Budget]:
        """The readable PodDisruptionBudgets (empty when none are watched)."""


class CacheState:
    """``ClusterCache`` behind a lock, fed by reflectors (``replace`` / ``apply``)."""

    def __init__(self, cache: ClusterCache) -> None:
        self.cache = cache
        self._lock = threading.RLock()
        self._priority: dict[str, tuple[str, int]] = {}  # bound pod key -> (uid, priority)
        self._gone: OrderedDict[str, None] = OrderedDict()  # uids of pods the watch showed deleted
        self._synced = threading.Event()
        self._sources: list[threading.Event] = []

    @classmethod
    def from_objects(cls, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]] = (), *,
                     scheduler_name: str = "default-scheduler", levels: list[LevelSpec] | None = None,
                     groups: Mapping[str, Iterable[Mapping[str, Any]]] | None = None) -> CacheState:
        """A synced state from plain API dicts (tests, benchmarks)."""
        state = cls(ClusterCache(scheduler_name, levels))
        state.replace("nodes", [dict(n) for n in nodes])
        state.replace("pods", [dict(p) for p in pods])
        for resource, items in (groups or {}).items():
            state.replace(resource, [dict(o) for o in items])
        state.mark_synced()
        return state

    # --- WatchSink ------------------------------------------------------------------------

    def replace(self, resource: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            if resource == "nodes":
                self.cache.replace_nodes(items)
            elif resource == "pods":
                uids = {str((p.get("metadata") or {}).get("uid") or "") for p in items}
                for pod in self.cache.pending.values():
                    uid = str((pod.get("metadata") or {}).get("uid") or "")
                    if uid and uid not in uids:
                        self._forget_uid(uid)
                self.cache.replace_pods(items)
                self._priority = {}
                for pod in items:
                    self._note(pod)
            elif resource in GROUP_KINDS.values():
                self.cache.replace_groups(resource, items)
            elif resource == PDB_RESOURCE:
                self.cache.replace_budgets(items)

    def apply(self, resource: str, type_: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if resource == "nodes":
                name = (obj.get("metadata") or {}).get("name") or ""
                if type_ == "DELETED":
                    self.cache.delete_node(name)
                else:
                    self.cache.upsert_node(obj)
            elif resource == "pods":
                key = workloads.pod_key(obj)
                if type_ == "DELETED":
                    self.cache.delete_pod(key)
                    self._priority.pop(key, None)
                    uid = str((obj.get("metadata") or {}).get("uid") or "")
                    if uid:
                        self._forget_uid(uid)
                else:
                    self.cache.upsert_pod(obj)
                    self._note(obj)
            elif resource in GROUP_KINDS.values():
                if type_ == "DELETED":
                    self.cache.delete_group(resource, obj)
                else:
                    self.cache.upsert_group(resource, obj)
            elif resource == PDB_RESOURCE:
                if type_ == "DELETED":
                    self.cache.delete_budget(obj)
                else:
                    self.cache.upsert_budget(obj)

    def _forget_uid(self, uid: str) -> None:
        self._gone[uid] = None
        if len(self._gone) > GONE_UIDS:
            self._gone.popitem(last=False)

    def is_gone(self, uid: str) -> bool:
        with self._lock:
            return uid in self._gone

    def _note(self, pod: Mapping[str, Any]) -> None:
        key = workloads.pod_key(pod)
        if key in self.cache.bound:
            meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
            prio = spec.get("priority")
            self._priority[key] = (str(meta.get("uid") or ""),
                                   prio if isinstance(prio, int) and not isinstance(prio, bool) else 0)
        else:
            self._priority.pop(key, None)

    def mark_synced(self) -> None:
        self._synced.set()

    def synced_when(self, *events: threading.Event) -> None:
        """Synced once every one of ``events`` is set (the reflectors' first lists)."""
        self._sources = list(events)

    def refresh(self) -> None:
        """Rebuild the topology now if nodes changed (so a verb does not pay for it)."""
        with self._lock:
            self.cache.refresh()

    # --- ClusterState ------------------------------------------------------------------------

    def is_synced(self) -> bool:
        if not self._synced.is_set() and self._sources and all(e.is_set() for e in self._sources):
            self.refresh()
            self._synced.set()
        return self._synced.is_set()

    def levels(self) -> list[LevelSpec]:
        with self._lock:
            self.cache.refresh()
            return list(self.cache.levels)

    def snapshot(self) -> Snapshot | None:
        with self._lock:
            self.cache.refresh()
            return self.cache.snapshot()

    def holds(self, key: str) -> bool:
        with self._lock:
            return self.cache.ledger is not None and key in self.cache.ledger

    def assume(self, key: str, placement: Placement, gang: str | None) -> None:
        """Record a placement before binding; the node index is re-read in case the topology was rebuilt."""
        with self._lock:
            self.cache.refresh()
            arrays = self.cache.arrays
            idx = None if arrays is None else arrays.node_index.get(placement.node)
            if idx is None:
                raise LedgerError(f"node {placement.node} left the cluster")
            if idx != placement.node_index:
                placement = Placement(placement.pod, placement.node, idx, placement.gpus, placement.gpu_milli,
                                      placement.cpu_milli, placement.memory_mib, placement.gang, placement.role,
                                      placement.owner, placement.extended)
            self.cache.assume(key, placement, gang)

    def forget(self, key: str) -> None:
        with self._lock:
            self.cache.forget(key)

    def pending_pod(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self.cache.pending.get(key)

    def nominated_pods(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self.cache.pending[k] for k in sorted(self.cache.nominated)]  # kept by the cache: no scan

    def pending_group_pods(self, gang: str) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for key, pod in self.cache.pending.items():
                if key in self.cache.assumed:
                    continue  # bound by us, not yet seen bound by the watch: counted as bound
                try:
                    ref = workloads.group_of(pod)
                except workloads.WorkloadError:
                    continue
                if ref is not None and ref.key == gang:
                    out.append(pod)
            return out

    def group_object(self, ref: workloads.ObjectRef | None) -> dict[str, Any] | None:
        with self._lock:
            return self.cache.group_object(ref)

    def bound_gang_members(self, gang: str) -> int:
        with self._lock:
            return self.cache.bound_in_gang(gang)

    def bound_gang_allocations(self, gang: str) -> list[Allocation]:
        with self._lock:
            ledger, bound = self.cache.ledger, self.cache.bound
            if ledger is None:
                return []
            return sorted((a for a in ledger.of_gang(gang) if not (a.key in bound and bound[a.key].terminating)),
                          key=lambda a: a.key)

    def pods_on_node(self, node: str) -> list[tuple[dict[str, Any], Allocation]]:
        with self._lock:
            ledger = self.cache.ledger
            if ledger is None:
                return []
            out = []
            for key in sorted(self.cache.by_node.get(node, ())):
                alloc = ledger.get(key)
                if alloc is None:
                    continue
                rec = self.cache.bound.get(key)
                uid, prio = self._priority.get(key, (rec.uid if rec is not None else "", 0))
                labels = dict(rec.labels) if rec is not None else {}
                out.append(({"metadata": {"uid": uid, "name": key, "labels": labels}, "spec": {"priority": prio}},
                            alloc))
            return out

    def budgets(self) -> list[Budget]:
        with self._lock:
            return self.cache.budget_list()
