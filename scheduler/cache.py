"""The scheduler's picture of the cluster: nodes -> topology, bound pods -> ledger, our pending pods.

Fed with plain API dicts (what the reflectors list and watch); owned by one thread (the loop).

- **Nodes.** Each Node is read once per relevant change (labels, annotations, allocatable,
  taints, cordon, Ready) with ``node_from_k8s``; a node whose labels or annotations cannot
  be read is left out and reported. Any change marks the topology dirty; ``refresh()``
  rebuilds ``Cluster -> TopologyArrays`` (new ``version``) and a fresh ``Ledger`` replayed
  from the bound pods and our assumed placements.
- **Bound pods** (any scheduler, any non-terminal pod with ``spec.nodeName``) are slim
  ``BoundPod`` records, observed into the ledger with ``force`` (the API server is the
  truth). Their GPUs come from our assignment annotation; a GPU pod placed by someone else
  gets the lowest free GPUs of its node, and moves if an annotated pod later claims them.
  Their extended resources (``rdma/ib``, hugepages, ...) are taken on their node too.
- **Pending pods** whose ``schedulerName`` is ours are kept as raw dicts for the loop.
- **PodDisruptionBudgets** (policy/v1) are kept read as ``Budget``s for preemption; one that
  cannot be read (bad selector, non-integer ``disruptionsAllowed``) is left out, logged and
  listed in ``invalid_budgets``.
- **Assumed** placements (binding in flight) are in the ledger as ASSUMED until the watch
  shows the pod bound (``confirm``) or the bind fails (``forget``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from models.cluster import Cluster, expand
from models.errors import SpecError
from models.placement import Placement
from models.readers.annotation import ANNOTATION_KEY
from models.readers.k8s_node import GPU_RESOURCE, levels_from_labels, node_from_k8s, parse_quantity
from models.requests import GPU_MILLI
from models.spec import ClusterSpec, LevelSpec, NodeSpec
from models.topology import TopologyArrays, build_arrays
from scheduler import workloads
from scheduler.ledger import Allocation, AllocState, Ledger
from scheduler.snapshot import Snapshot
from scheduler.workloads.disruption import Budget, BudgetError, budget_from_k8s
from scheduler.workloads.pods import REPLICA_KINDS

log = logging.getLogger("toposched.cache")

# Group objects the cache keeps, by (API group, kind) -> the reflector's resource name.
GROUP_KINDS: dict[tuple[str, str], str] = {
    ("scheduling.x-k8s.io", "PodGroup"): "podgroups.scheduling.x-k8s.io",
    ("scheduling.volcano.sh", "PodGroup"): "podgroups.scheduling.volcano.sh",
    ("scheduling.k8s.io", "PodGroup"): "podgroups.scheduling.k8s.io",
    ("kubeflow.org", "PyTorchJob"): "pytorchjobs.kubeflow.org",
    ("jobset.x-k8s.io", "JobSet"): "jobsets.jobset.x-k8s.io",
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): "leaderworkersets.leaderworkerset.x-k8s.io",
}
# The reflector's resource name of policy/v1 PodDisruptionBudgets.
PDB_RESOURCE = "poddisruptionbudgets.policy"


@dataclass(frozen=True, slots=True)
class BoundPod:
    """What the ledger needs of a pod on a node."""

    key: str
    uid: str
    node: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    gpu_milli: int
    assigned: tuple[int, ...] | None  # exact GPUs from our annotation; None: not recorded
    gang: str | None
    owner: str | None
    resource_version: str = ""
    extended: tuple[tuple[str, int], ...] = ()  # extended resources by name, sorted
    priority: int = 0  # spec.priority (preemption picks victims below the preemptor's)
    terminating: bool = False  # metadata.deletionTimestamp set: already on its way out
    labels: tuple[tuple[str, str], ...] = ()  # metadata.labels, sorted (PodDisruptionBudget selectors)


def pod_labels(pod: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``metadata.labels`` as sorted pairs (string keys and values only)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if not isinstance(labels, Mapping):
        return ()
    return tuple(sorted((k, v) for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)))


def pod_priority(pod: Mapping[str, Any]) -> int:
    """``spec.priority`` (0 when unset or not an integer, as without a PriorityClass)."""
    value = (pod.get("spec") or {}).get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class InvalidObject:
    """A node or pod whose labels/annotations could not be read, and why."""

    key: str
    problem: str


def _node_fingerprint(obj: Mapping[str, Any]) -> str:
    """Everything of a Node that the topology depends on (heartbeats excluded)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or []
                  if isinstance(c, Mapping) and c.get("type") == "Ready"), None)
    annotations = meta.get("annotations") or {}
    topo = annotations.get(ANNOTATION_KEY) if isinstance(annotations, Mapping) else None
    return json.dumps([meta.get("labels"), topo, status.get("allocatable"), status.get("capacity"),
                       spec.get("unschedulable"), spec.get("taints"), ready], sort_keys=True, default=str)


def _lenient_usage(pod: Mapping[str, Any]) -> tuple[int, int, int, dict[str, int]]:
    """cpu milli, MiB, GPUs and extended resources summed over app containers, skipping what
    cannot be read (pods others placed)."""
    cpu = mem = Decimal(0)
    gpus = 0
    ext: dict[str, int] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = (c.get("resources") or {}) if isinstance(c, Mapping) else {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if not isinstance(req, Mapping) or not isinstance(lim, Mapping):
            continue
        for name in {*req, *lim}:
            text = req.get(name, lim.get(name))
            if text is None or not isinstance(name, str) or name in ("pods", "ephemeral-storage"):
                continue
            try:
                value = parse_quantity(text)
            except SpecError:
                continue
            if name == "cpu":
                cpu += value
            elif name == "memory":
                mem += value
            elif name == GPU_RESOURCE:
                gpus += int(value)
            elif value > 0:
                ext[name] = ext.get(name, 0) + int(value)
    return int(cpu * 1000), int(mem / (1024 * 1024)), gpus, ext


def _extended_of(requests: Mapping[str, Decimal]) -> dict[str, int]:
    """The extended resources among effective requests (whole units; a fraction rounds down)."""
    skip = ("cpu", "memory", GPU_RESOURCE, "pods", "ephemeral-storage")
    return {k: int(v) for k, v in requests.items() if k not in skip and int(v) > 0}


def bound_pod(pod: Mapping[str, Any]) -> tuple[BoundPod, str | None]:
    """The record of a bound pod, and a problem with its annotations (recorded GPUs then unknown)."""
    meta = pod.get("metadata") or {}
    key = workloads.pod_key(pod)
    problem = None
    try:
        res = workloads.pod_resources(pod)
        cpu, mem, gpus, milli = res.cpu_milli, res.memory_mib, res.gpus, res.gpu_milli
        ext = dict(res.extended)
    except workloads.WorkloadError:
        # a pod someone else placed may use constraints we do not model: count what it takes
        try:
            req = workloads.effective_requests(pod)
            cpu = int(req.get("cpu", Decimal(0)) * 1000)
            mem = int(req.get("memory", Decimal(0)) / (1024 * 1024))
            gpus = int(req.get(GPU_RESOURCE, Decimal(0)))
            ext = _extended_of(req)
        except workloads.WorkloadError:
            cpu, mem, gpus, ext = _lenient_usage(pod)
        milli = GPU_MILLI
    assigned = None
    try:
        parsed = workloads.parse_assignment(pod)
        if parsed is not None:
            assigned, milli = parsed
            gpus = len(assigned)
    except workloads.WorkloadError as exc:
        problem = str(exc)
    try:
        group = workloads.group_of(pod)
    except workloads.WorkloadError:
        group = None
    try:
        owner = workloads.owner_of(pod)
    except workloads.WorkloadError:
        owner = None
    if owner is not None and owner.split("/")[1] not in REPLICA_KINDS:
        owner = None
    rec = BoundPod(key, meta.get("uid") or "", (pod.get("spec") or {}).get("nodeName") or "", cpu, mem, gpus, milli,
                   assigned, group.key if group else None, owner, str(meta.get("resourceVersion") or ""),
                   tuple(sorted(ext.items())), pod_priority(pod), bool(meta.get("deletionTimestamp")),
                   pod_labels(pod))
    return rec, problem


class ClusterCache:
    """Nodes, bound pods, our pending pods and group objects; topology + ledger derived from them."""

    def __init__(self, scheduler_name: str, levels: list[LevelSpec] | None = None) -> None:
        self.scheduler_name = scheduler_name
        self.configured_levels = levels
        self.levels: list[LevelSpec] = list(levels or [])
        self.nodes: dict[str, dict[str, Any]] = {}
        self._node_prints: dict[str, str] = {}
        self._node_specs: dict[str, NodeSpec] = {}
        self.invalid_nodes: dict[str, str] = {}
        self.bound: dict[str, BoundPod] = {}
        self.by_node: dict[str, set[str]] = {}
        self._by_gang: dict[str, set[str]] = {}  # gang -> keys bound or assumed with it (bound_in_gang)
        self.pending: dict[str, dict[str, Any]] = {}
        self.nominated: set[str] = set()  # pending pods with status.nominatedNodeName (preemptors)
        self.gated: set[str] = set()
        self.groups: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.budgets: dict[tuple[str, str], Budget] = {}  # (namespace, name) -> PodDisruptionBudget
        self.invalid_budgets: dict[str, str] = {}  # "ns/name" -> why it is left out
        self.assumed: dict[str, Allocation] = {}  # key -> allocation (node index of the current arrays)
        self._assumed_nodes: dict[str, str] = {}  # key -> node name (survives rebuilds)
        self._assumed_uids: dict[str, str] = {}  # key -> the pod's uid when we decided
        self.dirty = True
        self.version = 0
        self.arrays: TopologyArrays | None = None
        self.ledger: Ledger | None = None
        self.bad_annotations: dict[str, str] = {}

    # --- nodes ---------------------------------------------------------------------------

    def replace_nodes(self, items: Iterable[Mapping[str, Any]], keep: Iterable[str] = ()) -> set[str]:
        """A full node list (after a (re-)list); returns the names that changed. Nodes named in
        ``keep`` are in the list but were not handed in (unreadable): they are not deleted."""
        seen = set(keep)
        changed = set()
        for obj in items:
            name = (obj.get("metadata") or {}).get("name")
            if name:
                seen.add(name)
                if self.upsert_node(obj):
                    changed.add(name)
        for name in list(self.nodes):
            if name not in seen:
                self.delete_node(name)
                changed.add(name)
        return changed

    def upsert_node(self, obj: Mapping[str, Any]) -> bool:
        """Add or update a node; True when its topology-relevant content changed."""
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return False
        fp = _node_fingerprint(obj)
        self.nodes[name] = dict(obj)
        if self._node_prints.get(name) == fp:
            return False
        self._node_prints[name] = fp
        self._node_specs.pop(name, None)
        self.dirty = True
        return True

    def delete_node(self, name: str) -> bool:
        if name not in self.nodes:
            return False
        for d in (self.nodes, self._node_prints, self._node_specs, self.invalid_nodes):
            d.pop(name, None)
        self.dirty = True
        return True

    # --- pods ----------------------------------------------------------------------------

    def replace_pods(self, items: Iterable[Mapping[str, Any]]) -> None:
        """A full pod list: synthesise deletes for pods that vanished, then upsert every pod."""
        items = list(items)
        keys = {workloads.pod_key(p) for p in items}
        for key in [k for k in (*self.bound, *self.pending, *self.gated) if k not in keys]:
            self.delete_pod(key)
        for pod in items:
            self.upsert_pod(pod)

    def upsert_pod(self, pod: Mapping[str, Any]) -> str:
        """Add or update a pod. Returns what it is now: bound, pending, gated, other or gone."""
        key = workloads.pod_key(pod)
        spec = pod.get("spec") or {}
        if workloads.is_terminal(pod):
            self.delete_pod(key)
            return "gone"
        node = spec.get("nodeName")
        if node:
            self._unpend(key)
            self.gated.discard(key)
            old = self.bound.get(key)
            uid = (pod.get("metadata") or {}).get("uid") or ""
            rv = str((pod.get("metadata") or {}).get("resourceVersion") or "")
            if old is not None and old.uid == uid and old.node == node and old.resource_version == rv:
                return "bound"
            a = self.assumed.get(key)
            if old is None and a is not None and self._assumed_nodes.get(key) == node \
                    and self._assumed_uids.get(key) == uid:
                # our own binding seen by the watch: we know what it holds
                self._confirm(key, a, node, uid, rv, pod)
                return "bound"
            rec, problem = bound_pod(pod)
            if problem:
                self.bad_annotations[key] = problem
            else:
                self.bad_annotations.pop(key, None)
            if old is not None and old.uid == uid and old.node == node and old.assigned == rec.assigned \
                    and (old.cpu_milli, old.memory_mib, old.gpus, old.gpu_milli, old.extended) == \
                    (rec.cpu_milli, rec.memory_mib, rec.gpus, rec.gpu_milli, rec.extended):
                self._set_bound(key, rec)  # nothing the ledger cares about changed
                return "bound"
            if old is not None:
                self._unindex(old)
            self._set_bound(key, rec)
            self.by_node.setdefault(node, set()).add(key)
            self._observe(rec)
            return "bound"
        if key in self.bound:  # a pod cannot be unbound; a re-created one under the same name
            self.delete_pod(key)
        ours = (spec.get("schedulerName") or "default-scheduler") == self.scheduler_name
        if not ours:
            self._unpend(key)
            self.gated.discard(key)
            return "other"
        if workloads.is_ours(pod, self.scheduler_name):
            self.gated.discard(key)
            self._pend(key, pod)
            return "pending"
        self._unpend(key)
        if spec.get("schedulingGates") and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.gated.add(key)
            return "gated"
        self.gated.discard(key)
        return "other"

    def _pend(self, key: str, pod: Mapping[str, Any]) -> None:
        self.pending[key] = dict(pod)
        status = pod.get("status")
        if isinstance(status, Mapping) and status.get("nominatedNodeName"):
            self.nominated.add(key)
        else:
            self.nominated.discard(key)

    def _unpend(self, key: str) -> None:
        self.pending.pop(key, None)
        self.nominated.discard(key)

    def delete_pod(self, key: str) -> bool:
        """The pod is gone (deleted or finished): free what it held. True when it held something."""
        self._unpend(key)
        self.gated.discard(key)
        self.bad_annotations.pop(key, None)
        rec = self.bound.pop(key, None)
        freed = False
        if rec is not None:
            self._ungang(key, rec.gang)
            self._unindex(rec)
            freed = True
        if key in self.assumed:
            self._drop_assumed(key)
            freed = True
        if self.ledger is not None and key in self.ledger:
            self.ledger.release(key)
        return freed

    def _confirm(self, key: str, a: Allocation, node: str, uid: str, rv: str, pod: Mapping[str, Any]) -> None:
        rec = BoundPod(key, uid, node, a.cpu_milli, a.memory_mib, len(a.gpus), a.gpu_milli, a.gpus, a.gang, a.owner, rv,
                       a.extended, pod_priority(pod), bool((pod.get("metadata") or {}).get("deletionTimestamp")),
                       pod_labels(pod))
        self._set_bound(key, rec)
        self.by_node.setdefault(node, set()).add(key)
        self.bad_annotations.pop(key, None)
        if self.ledger is not None and not self.dirty and self.ledger.state(key) == AllocState.ASSUMED \
                and self.ledger.get(key) == a:
            self.ledger.confirm(key)
            self._drop_assumed(key)
        else:
            self._observe(rec)

    def _set_bound(self, key: str, rec: BoundPod) -> None:
        old = self.bound.get(key)
        self.bound[key] = rec
        if old is not None and old.gang != rec.gang:
            self._ungang(key, old.gang)
        if rec.gang is not None:
            self._by_gang.setdefault(rec.gang, set()).add(key)

    def _ungang(self, key: str, gang: str | None) -> None:
        """``key`` no longer bound (or assumed) with ``gang``, unless it still is the other way."""
        keys = self._by_gang.get(gang) if gang is not None else None
        if keys is None:
            return
        still = (key in self.bound and self.bound[key].gang == gang) or \
            (key in self.assumed and self.assumed[key].gang == gang)
        if not still:
            keys.discard(key)
            if not keys:
                del self._by_gang[gang]

    def _drop_assumed(self, key: str) -> None:
        a = self.assumed.pop(key, None)
        if a is not None:
            self._ungang(key, a.gang)
        self._assumed_nodes.pop(key, None)
        self._assumed_uids.pop(key, None)

    def _unindex(self, rec: BoundPod) -> None:
        keys = self.by_node.get(rec.node)
        if keys is not None:
            keys.discard(rec.key)
            if not keys:
                self.by_node.pop(rec.node, None)

    # --- group objects (PodGroups, jobs) ------------------------------------------------------

    def replace_groups(self, resource: str, items: Iterable[Mapping[str, Any]]) -> None:
        self.groups[resource] = {}
        for obj in items:
            self.upsert_group(resource, obj)

    def upsert_group(self, resource: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.groups.setdefault(resource, {})[(meta.get("namespace") or "", meta.get("name") or "")] = dict(obj)

    def delete_group(self, resource: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.groups.get(resource, {}).pop((meta.get("namespace") or "", meta.get("name") or ""), None)

    def group_object(self, ref: workloads.ObjectRef | None) -> dict[str, Any] | None:
        """The cached object a gang's ``GroupRef.object`` names, or None."""
        if ref is None:
            return None
        resource = GROUP_KINDS.get((ref.api_version.split("/")[0], ref.kind))
        if resource is None:
            return None
        return self.groups.get(resource, {}).get((ref.namespace, ref.name))

    # --- PodDisruptionBudgets --------------------------------------------------------------------

    def replace_budgets(self, items: Iterable[Mapping[str, Any]]) -> None:
        self.budgets, self.invalid_budgets = {}, {}
        for obj in items:
            self.upsert_budget(obj)

    def upsert_budget(self, obj: Mapping[str, Any]) -> None:
        """Read one PodDisruptionBudget; one that cannot be read is left out with a warning (once per problem)."""
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        try:
            budget = budget_from_k8s(obj)
        except BudgetError as exc:
            self.budgets.pop((ns, name), None)
            if self.invalid_budgets.get(exc.key) != str(exc):
                log.warning("PodDisruptionBudget ignored: %s", exc, extra={"resource": PDB_RESOURCE})
            self.invalid_budgets[exc.key] = str(exc)
            return
        self.budgets[(ns, name)] = budget
        self.invalid_budgets.pop(budget.key, None)

    def delete_budget(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        self.budgets.pop((ns, name), None)
        self.invalid_budgets.pop(f"{ns}/{name}", None)

    def budget_list(self) -> list[Budget]:
        """Every readable PodDisruptionBudget, by namespace and name."""
        return [self.budgets[k] for k in sorted(self.budgets)]

    # --- topology + ledger --------------------------------------------------------------------

    def refresh(self) -> bool:
        """Rebuild topology and ledger if nodes changed; True when rebuilt."""
        if not self.dirty:
            return False
        specs: list[NodeSpec] = []
        levels = self.configured_levels
        if levels is None:
            try:
                levels = levels_from_labels(list(self.nodes.values()))
            except SpecError:
                levels = []
        self.levels = list(levels)
        self.invalid_nodes = {}
        for name in sorted(self.nodes):
            spec = self._node_specs.get(name)
            if spec is None:
                try:
                    spec = node_from_k8s(self.nodes[name], self.levels)
                except SpecError as exc:
                    self.invalid_nodes[name] = str(exc)
                    continue
                missing = {lv.name: f"unlabelled-{name}" for lv in self.levels if lv.name not in spec.levels}
                if missing:
                    spec = spec.model_copy(update={"levels": {**spec.levels, **missing}})
                self._node_specs[name] = spec
            specs.append(spec)
        self.version += 1
        self.dirty = False
        if not specs:
            self.arrays, self.ledger = None, None
            return True
        cluster: Cluster = expand(ClusterSpec(name="live", levels=tuple(self.levels), nodes=tuple(specs)),
                                  source="cluster")
        self.arrays = build_arrays(cluster, version=self.version)
        self.ledger = Ledger(self.arrays)
        # exact assignments first, so guessed GPUs never take recorded ones
        recs = sorted(self.bound.values(), key=lambda r: r.assigned is None)
        for rec in recs:
            self._observe(rec)
        for key, node in list(self._assumed_nodes.items()):
            old = self.assumed[key]
            idx = self.arrays.node_index.get(node)
            if idx is None:
                self._drop_assumed(key)
                continue
            a = Allocation(key, idx, old.gpus, old.gpu_milli, old.cpu_milli, old.memory_mib, old.gang, old.owner,
                           old.extended)
            self.assumed[key] = a
            if key not in self.ledger and self._fits(a):  # else the watch will tell where it went
                self.ledger.assume(a)
        return True

    def _fits(self, a: Allocation) -> bool:
        assert self.ledger is not None
        live = self.ledger.live
        free = live.gpu_free
        names = live.arrays.ext_names
        return all(0 <= g < free.shape[1] and free[a.node, g] >= a.gpu_milli for g in a.gpus) and all(
            name in names and live.free_ext[a.node, names.index(name)] >= amount for name, amount in a.extended)

    def _observe(self, rec: BoundPod) -> None:
        """Account a bound pod in the ledger (a no-op until the topology knows its node)."""
        if self.ledger is None or self.arrays is None or self.dirty:
            return
        idx = self.arrays.node_index.get(rec.node)
        if idx is None:
            if rec.key in self.ledger:
                self.ledger.release(rec.key)
            return
        n_gpus = int(self.arrays.gpu_count[idx])
        gpus = rec.assigned
        if gpus is not None and any(g >= n_gpus for g in gpus):
            gpus = None  # recorded for a node that has fewer GPUs now: place it like an unrecorded pod
        if rec.key in self.ledger:
            self.ledger.release(rec.key)
        moved = self._release_guesses(idx, gpus, rec.key) if gpus is not None else []
        if gpus is None and rec.gpus:
            gpus = self._guess_gpus(idx, rec.gpus, rec.gpu_milli)
        self.ledger.observe(Allocation(rec.key, idx, tuple(gpus or ()), rec.gpu_milli, rec.cpu_milli, rec.memory_mib,
                                       rec.gang, rec.owner, rec.extended), force=True)
        self._drop_assumed(rec.key)
        for other in moved:  # re-place the displaced guesses around the recorded GPUs
            self._observe(self.bound[other])

    def _guess_gpus(self, node: int, count: int, milli: int) -> tuple[int, ...]:
        """Lowest free GPUs for a pod whose GPUs were not recorded (any GPUs when none are free)."""
        assert self.ledger is not None and self.arrays is not None
        free = self.ledger.live.gpu_free[node, : int(self.arrays.gpu_count[node])]
        if milli < GPU_MILLI:
            ok = np.flatnonzero(free >= milli)
            return (int(ok[np.argmin(free[ok])]),) if len(ok) else ((0,) if len(free) else ())
        whole = [int(g) for g in np.flatnonzero(free == GPU_MILLI)]
        rest = [g for g in range(len(free)) if g not in whole]
        return tuple((whole + rest)[: min(count, len(free))])

    def _release_guesses(self, node: int, gpus: tuple[int, ...], key: str) -> list[str]:
        """Take pods whose GPUs were guessed off ``gpus`` (a pod with recorded GPUs claims them)."""
        assert self.ledger is not None and self.arrays is not None
        moved = []
        for other in sorted(self.by_node.get(self.arrays.node_names[node], ())):
            rec = self.bound.get(other)
            a = self.ledger.get(other)
            if other != key and rec is not None and rec.assigned is None and a is not None and set(a.gpus) & set(gpus):
                self.ledger.release(other)
                moved.append(other)
        return moved

    # --- assume / forget ------------------------------------------------------------------------

    def assume(self, key: str, p: Placement, gang: str | None = None) -> Allocation:
        """Record a decided placement before binding."""
        assert self.ledger is not None
        a = Allocation(key, p.node_index, tuple(p.gpus), p.gpu_milli, p.cpu_milli, p.memory_mib, gang, p.owner,
                       p.extended)
        self.ledger.assume(a)
        self.assumed[key] = a
        if gang is not None:
            self._by_gang.setdefault(gang, set()).add(key)
        self._assumed_nodes[key] = p.node
        self._assumed_uids[key] = ((self.pending.get(key) or {}).get("metadata") or {}).get("uid") or ""
        return a

    def assumed_uid(self, key: str) -> str | None:
        """The uid of the pod we bound (or are binding) under ``key``, while it is assumed."""
        return self._assumed_uids.get(key)

    def forget(self, key: str) -> None:
        """A bind failed: give back what was assumed (unless the watch already saw the pod bound)."""
        self._drop_assumed(key)
        if self.ledger is not None and self.ledger.state(key) == AllocState.ASSUMED:
            self.ledger.forget(key)

    # --- views ----------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        return self.ledger.snapshot() if self.ledger is not None else None

    def gang_members(self, gang: str) -> list[str]:
        """Keys of the members of ``gang`` bound or being bound, sorted (not those on their way
        out: a restarted job's old members, still terminating, are not members of its new run)."""
        out = []
        for k in self._by_gang.get(gang, ()):
            rec, a = self.bound.get(k), self.assumed.get(k)
            if (rec.gang == gang and not rec.terminating) if rec is not None else (a is not None and a.gang == gang):
                out.append(k)
        return sorted(out)

    def check_gang_index(self) -> None:
        """Raise ``AssertionError`` unless the gang index holds exactly the bound and assumed
        pods of each gang (tests call it after every step, as the ledger's ``check_invariants``)."""
        want: dict[str, set[str]] = {}
        for k, r in self.bound.items():
            if r.gang is not None:
                want.setdefault(r.gang, set()).add(k)
        for k, a in self.assumed.items():
            if a.gang is not None:
                want.setdefault(a.gang, set()).add(k)
        assert self._by_gang == want, (self._by_gang, want)

    def bound_in_gang(self, gang: str) -> int:
        """How many members of ``gang`` are bound or being bound (``gang_members``)."""
        return len(self.gang_members(gang))

    def gpu_stats(self) -> dict[str, tuple[int, int, float]]:
        """Per GPU model: (allocated GPUs, free whole GPUs, fragmentation ratio).

        Fragmentation: the share of free whole GPUs that sit on nodes with some GPU in use
        (they cannot take a job that needs a whole node)."""
        out: dict[str, tuple[int, int, float]] = {}
        if self.ledger is None or self.arrays is None:
            return out
        a = self.arrays
        live = self.ledger.live
        present = live.gpu_free >= 0
        free_whole = ((live.gpu_free == GPU_MILLI) & present).sum(axis=1)
        used = (present & (live.gpu_free < GPU_MILLI)).sum(axis=1)
        usable = live.usable()
        for m, model in enumerate(a.models):
            sel = a.model_id == m
            if not a.gpu_count[sel].sum():
                continue
            free = int(free_whole[sel & usable].sum())
            stranded = int(free_whole[sel & usable & (used > 0)].sum())
            out[model or "unknown"] = (int(used[sel].sum()), free, stranded / free if free else 0.0)
        return out

    def owner_counts(self) -> Counter[str]:
        return Counter(r.owner for r in self.bound.values() if r.owner)
