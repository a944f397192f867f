"""The extender verbs on top of the cluster state and the engine; no HTTP here.

Which pods are ours: those asking for ``nvidia.com/gpu`` (the managed resource) without
the opt-out annotation ``toposched.io/extender: ignore``. Every other pod passes through:
filter keeps every node, prioritize adds nothing, preempt returns the input unchanged.
kube-scheduler has already applied its own filters (selectors, affinity, taints, spread,
host ports, other resources) to the nodes it sends, so we read a pod without them
(``extender_view``) and judge only what it cannot: GPUs, their topology, gangs.

Single pod, per verb:
  filter      the engine's filters on the requested nodes plus "has a free GPU set";
              a node that would fail even when empty is *unresolvable* (preemption
              cannot help), the rest are *failed*;
  prioritize  the engine's weighted plugin score of each node's best GPU set, mapped
              monotonically onto 1..10 (0 for a node we would filter out);
  bind        the best GPU set on the chosen node -> ledger assume -> Binding carrying
              the assignment annotations -> on failure, forget;
  preempt     per candidate node, kube-scheduler's victims plus the fewest lower-priority
              GPU pods (lowest priority first, then reprieved: those whose eviction would
              break a PodDisruptionBudget first, then highest priority first) whose removal
              leaves a free GPU set; ``numPDBViolations`` adds the budgets our extra victims
              break; nodes where none would do are dropped.

Gang member: once its minimum members exist, the first member filtered places the whole gang (``scheduler.engine.place``) and
reserves every member's slot (``reservations.py``); filter admits a member only on its
slot's node, prioritize gives that node 10, bind uses the slot's GPUs, preempt passes
through. A reservation not fully bound before the gang's timeout is released with a
Warning event on its members.

Between filter and the watch seeing the pod bound, kube-scheduler does not account GPUs
(``ignoredByScheduler``), so the node we expect it to choose (the only one we admitted, or
our top score) is held for the pod for ``hold_ttl_s``: the next pod does not get the same GPUs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.placement import Placement
from models.requests import PodRequest
from plugins.base import Context
from scheduler import workloads
from scheduler.engine import Engine, build_candidates, place
from scheduler.extender import wire
from scheduler.extender.reservations import ReservationBook, Slot
from scheduler.extender.state import ClusterState
from scheduler.ledger import LedgerError
from scheduler.partial_gang import complete_gang
from scheduler.ports import Binder, EventSink, KubeApiError, ObjectRef
from scheduler.snapshot import PodShape, Snapshot
from scheduler.workload_mix import ArrivalMix
from scheduler.workloads.common import get as field_at
from scheduler.workloads.disruption import Tally, covering

log = logging.getLogger("toposched.extender")

MANAGED_RESOURCE = "nvidia.com/gpu"
OPT_OUT_ANNOTATION = "toposched.io/extender"
OPT_OUT_VALUE = "ignore"
UNKNOWN_NODE = "node is not in toposched's cache (yet)"
NOT_SYNCED = "toposched's cache is not synced yet (waiting for the first node and pod lists); try again"
HOLD_TTL_S = 30.0
COUNTED_UIDS = 100_000  # pod uids remembered as counted in the arriving mix
PENDING_TTL_S = 600.0


def extender_view(pod: Mapping[str, Any], keep_node_affinity: bool = True) -> dict[str, Any]:
    """A copy of ``pod`` without what kube-scheduler itself enforces before calling us and the
    engine does not model: inter-pod affinity, topology spread, host ports and DRA claims (node
    affinity too, unless ``keep_node_affinity``: a gang is placed on every node, so its members'
    node affinity matters to us). Resources are kept, extended ones included: the engine checks
    them against the nodes' allocatable as kube-scheduler does, so a gang's reserved slots only
    land where every member's resources are."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return dict(pod)
    spec = dict(spec)
    for key in ("topologySpreadConstraints", "resourceClaims"):
        spec.pop(key, None)
    affinity = spec.pop("affinity", None)
    if keep_node_affinity and isinstance(affinity, Mapping) and affinity.get("nodeAffinity") is not None:
        spec["affinity"] = {"nodeAffinity": affinity["nodeAffinity"]}
    for field in ("containers", "initContainers"):
        items = spec.get(field)
        if isinstance(items, list):
            spec[field] = [_container_view(c) if isinstance(c, Mapping) else c for c in items]
    tolerations = spec.get("tolerations")
    if isinstance(tolerations, list):
        spec["tolerations"] = [t for t in tolerations
                               if not (isinstance(t, Mapping) and t.get("operator") not in (None, "", "Equal", "Exists"))]
    out = dict(pod)
    out["spec"] = spec
    return out


def _engine_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    """``extender_view`` with node affinity when the engine can express it, else without
    (kube-scheduler enforces it on the nodes it sends either way)."""
    view = extender_view(pod)
    try:
        workloads.pod_resources(view)
    except workloads.UnsupportedConstraint:
        return extender_view(pod, keep_node_affinity=False)
    except workloads.WorkloadError:
        pass  # reported by the caller's own translation
    return view


def _container_view(c: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in c.items() if k != "ports"}


def asks_for_gpus(pod: Mapping[str, Any]) -> bool:
    """kube-scheduler's interest test for ``managedResources``: some (init) container names the
    resource in its requests or limits."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return False
    for field in ("containers", "initContainers"):
        items = spec.get(field)
        for c in items if isinstance(items, list) else ():
            res = c.get("resources") if isinstance(c, Mapping) else None
            if not isinstance(res, Mapping):
                continue
            for part in ("requests", "limits"):
                m = res.get(part)
                if isinstance(m, Mapping) and MANAGED_RESOURCE in m:
                    return True
    return False


def is_opted_out(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") if isinstance(pod.get("metadata"), Mapping) else None
    return isinstance(annotations, Mapping) and annotations.get(OPT_OUT_ANNOTATION) == OPT_OUT_VALUE


@dataclass
class PodWork:
    """One pod as the handlers see it."""

    key: str
    uid: str
    pod: Mapping[str, Any]
    request: PodRequest
    shape: PodShape
    group: workloads.GroupRef | None
    seen_s: float

    @property
    def ref(self) -> ObjectRef:
        ns, _, name = self.key.partition("/")
        return ObjectRef.pod(ns, name, self.uid)


@dataclass
class Hold:
    """GPUs we expect kube-scheduler to give a pod it has not bound yet."""

    key: str
    node: str
    gpus: tuple[int, ...]
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    expires_s: float
    extended: tuple[tuple[str, int], ...] = ()


class ExtenderHandlers:
    """The four verbs. Thread-safe: one lock around every decision (the engine is not re-entrant)."""

    def __init__(self, state: ClusterState, engine: Engine, *, binder: Binder | None = None,
                 events: EventSink | None = None, clock: Callable[[], float] = time.monotonic,
                 gang_timeout_s: float | None = None, hold_ttl_s: float = HOLD_TTL_S,
                 ctx: Context | None = None, arrivals: ArrivalMix | None = None) -> None:
        self.state = state
        self.engine = engine
        self.binder = binder
        self.events = events
        self.clock = clock
        self.gang_timeout_s = gang_timeout_s
        self.hold_ttl_s = hold_ttl_s
        self.ctx = ctx or Context(rng=np.random.default_rng(engine.config.seed))
        # the arriving mix (GPU pods seen by filter, each once) that fragmentation scores against
        self.arrivals = arrivals or ArrivalMix()
        self._counted: OrderedDict[str, None] = OrderedDict()  # uids counted, oldest first (bounded)
        self.reservations = ReservationBook(clock, gang_timeout_s or workloads.DEFAULT_GANG_TIMEOUT_S)
        self._lock = threading.RLock()
        self._pending: dict[str, PodWork] = {}  # uid -> pod seen by filter, not bound yet
        self._passed: OrderedDict[str, None] = OrderedDict()  # uids filter passed through untouched (bounded)
        self._holds: dict[str, Hold] = {}  # uid -> expected placement
        self._empty: tuple[Any, Snapshot] | None = None

    # --- readiness and housekeeping -------------------------------------------------

    def is_ready(self) -> bool:
        return self.state.is_synced()

    def tick(self) -> None:
        """Expire reservations, holds and old pending pods (call every few seconds)."""
        with self._lock:
            self._housekeeping()

    def _housekeeping(self) -> None:
        now = self.clock()
        self.reservations.reconcile(lambda s: s.pod_key is not None and self.state.holds(s.pod_key))
        for res in self.reservations.expire():
            self._report_expired(res)
        for uid, h in list(self._holds.items()):
            if now >= h.expires_s or self.state.holds(h.key):
                del self._holds[uid]
        for uid, w in list(self._pending.items()):
            if now - w.seen_s > PENDING_TTL_S or self.state.holds(w.key) or self.state.is_gone(uid):
                del self._pending[uid]  # (a deleted gang member must not count towards its gang)

    def _report_expired(self, res: Any) -> None:
        bound = len(res.counted)
        waited = self.clock() - res.created_s
        note = (f"gang {res.gang}: reservation of {len(res.slots)} members released after {waited:.0f} s with "
                f"{bound}/{len(res.slots)} bound; the unbound members will be placed again")
        log.warning("%s", note)
        if self.events is None:
            return
        for slot in res.slots:
            if slot.pod_key is None or slot.index in res.counted:
                continue
            ns, _, name = slot.pod_key.partition("/")
            try:
                self.events.emit(ObjectRef.pod(ns, name, slot.pod_uid or ""), "Warning", "GangReservationExpired",
                                 "Scheduling", note)
            except Exception:  # noqa: BLE001 - events are best effort
                log.debug("event for %s failed", slot.pod_key, exc_info=True)

    # --- translation ----------------------------------------------------------------

    def _work(self, pod: Mapping[str, Any]) -> PodWork | None:
        """The pod as the engine sees it, or None when it is not ours (passes through)."""
        if not asks_for_gpus(pod) or is_opted_out(pod):
            return None
        view = _engine_view(pod)
        request = workloads.pod_request(view, self.state.levels())
        if request.gpus == 0:
            return None
        meta = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
        uid = meta.get("uid") if isinstance(meta.get("uid"), str) else ""
        key = workloads.pod_key(pod)
        shape = PodShape.of(request, owner=request.owner, spread_level=request.spread_level)
        return PodWork(key, uid or key, view, request, shape, workloads.group_of(pod), self.clock())

    # --- snapshot ---------------------------------------------------------------------

    def _snapshot(self, skip_uid: str | None = None, priority: int | None = None) -> Snapshot | None:
        """The cache's free capacity minus reserved gang slots and holds (not ``skip_uid``'s own)
        and, for a pod of ``priority``, the room of nominated pods of that priority or higher;
        None while the cache knows no node."""
        snap = self.state.snapshot()
        if snap is None:
            return None
        index = snap.arrays.node_index
        for slot in self.reservations.held_slots():
            node = index.get(slot.node)
            if node is not None:
                snap.apply(node, slot.gpus, slot.gpu_milli, slot.cpu_milli, slot.memory_mib, extended=slot.extended)
        for uid, h in self._holds.items():
            node = index.get(h.node)
            if uid != skip_uid and node is not None:
                snap.apply(node, h.gpus, h.gpu_milli, h.cpu_milli, h.memory_mib, extended=h.extended)
        if priority is not None:
            self._keep_nominated(snap, skip_uid, priority)
        return snap

    def _keep_nominated(self, snap: Snapshot, skip_uid: str | None, priority: int) -> None:
        """Take the GPUs a nominated pod (``status.nominatedNodeName``, set by kube-scheduler after
        preemption) of ``priority`` or higher would get on its node out of ``snap``, as
        kube-scheduler keeps a nominated pod's room for the resources it counts itself."""
        for pod in self.state.nominated_pods():
            try:
                work = self._work(pod)
            except workloads.WorkloadError:
                continue
            if work is None or work.uid == skip_uid or work.request.priority < priority or work.group is not None:
                continue
            node = snap.arrays.node_index.get(str(pod["status"]["nominatedNodeName"]))
            if node is None or work.uid in self._holds:  # a held pod's set is already out
                continue
            wanted = np.zeros(snap.n_nodes, dtype=bool)
            wanted[node] = True
            ok, _, scored = self._evaluate(snap, work.shape, wanted, with_reasons=False)
            if scored is None or not ok[node]:
                continue  # its room is not free yet (victims still terminating)
            cand, total = scored
            m = int(np.argmax(total))
            shape = work.shape
            snap.apply(node, tuple(int(g) for g in cand.gpus[m]), shape.gpu_milli, shape.cpu_milli,
                       shape.memory_mib, extended=shape.extended)

    def _empty_snapshot(self, snap: Snapshot) -> Snapshot:
        """All capacity free, same nodes and failures (cached per topology)."""
        if self._empty is None or self._empty[0] is not snap.arrays:
            self._empty = (snap.arrays, Snapshot.empty(snap.arrays))
        empty = self._empty[1]
        empty.failed = snap.failed
        empty._cache.clear()
        return empty

    def _evaluate(self, snap: Snapshot, shape: PodShape, wanted: np.ndarray, with_reasons: bool = True,
                  ) -> tuple[np.ndarray, dict[int, str], Any]:
        """Filters, candidates and scores over the ``wanted`` nodes: (feasible mask, reason per
        rejected wanted node, (candidates, totals) or None)."""
        states = {p.name: p.prepare(shape, snap, self.ctx) for p in self.engine.all_plugins}
        ok = wanted.copy()
        reasons: dict[int, str] = {}
        for p in self.engine.all_plugins:
            res = p.filter(shape, snap, states.get(p.name))
            if res is None:
                continue
            if with_reasons:
                for mask, why in res.reasons:
                    for i in np.flatnonzero(mask & ok):
                        reasons.setdefault(int(i), why)
            ok &= res.ok
        if with_reasons:
            for i in np.flatnonzero(wanted & ~ok):
                reasons.setdefault(int(i), "were filtered out")
        if not ok.any():
            return ok, reasons, None
        cand = build_candidates(snap, shape, ok)
        has_set = np.zeros(len(ok), dtype=bool)
        has_set[cand.node] = True
        for i in np.flatnonzero(ok & ~has_set):
            reasons[int(i)] = f"had no free set of {shape.gpus} GPUs"
        ok &= has_set
        total = np.zeros(len(cand))
        for p, w in self.engine.scorers:
            s = p.score(shape, snap, cand, states.get(p.name))
            if s is not None and w:
                total += w * s
        return ok, reasons, (cand, total)

    # --- filter -----------------------------------------------------------------------

    def filter(self, args: wire.ExtenderArgs) -> wire.ExtenderFilterResult:
        names = args.candidate_names()
        try:
            return self._filter(args, names)
        except workloads.MissingGroupObject as exc:  # may appear later: resolvable
            return _filter_result(args, set(), {n: f"toposched: {exc}" for n in names}, {})
        except workloads.WorkloadError as exc:  # the pod must change: no node will do
            return _filter_result(args, set(), {}, {n: f"toposched: {exc}" for n in names})

    def _passed_through(self, pod: Mapping[str, Any]) -> None:
        """Remember that filter let ``pod`` through untouched, so that bind binds it as it is
        (a pod of another profile that opted out is not in the cache's pending pods)."""
        uid = field_at(pod, "metadata", "uid")
        if isinstance(uid, str) and uid:
            with self._lock:
                self._passed[uid] = None
                self._passed.move_to_end(uid)
                while len(self._passed) > COUNTED_UIDS:
                    self._passed.popitem(last=False)

    def _filter(self, args: wire.ExtenderArgs, names: list[str]) -> wire.ExtenderFilterResult:
        work = self._work(args.pod)
        if work is None:
            self._passed_through(args.pod)
            return _filter_result(args, set(names), {}, {})
        if not self.state.is_synced():  # GPUs in use may not be known yet: place nothing
            return _filter_result(args, set(), {n: f"toposched: {NOT_SYNCED}" for n in names}, {})
        with self._lock:
            self._housekeeping()
            self._count_arrival(work)
            if work.group is not None:
                return self._filter_gang(args, names, work)
            self._pending[work.uid] = work
            snap = self._snapshot(skip_uid=work.uid, priority=work.request.priority)
            if snap is None:
                return _filter_result(args, set(), {n: f"toposched: {UNKNOWN_NODE}" for n in names}, {})
            index = snap.arrays.node_index
            wanted = np.zeros(snap.n_nodes, dtype=bool)
            unknown = {n: f"toposched: {UNKNOWN_NODE}" for n in names if n not in index}
            for n in names:
                if n in index:
                    wanted[index[n]] = True
            ok, reasons, scored = self._evaluate(snap, work.shape, wanted)
            failed: dict[str, str] = dict(unknown)
            unresolvable: dict[str, str] = {}
            if reasons:
                empty = self._empty_snapshot(snap)
                rejected = np.zeros(snap.n_nodes, dtype=bool)
                rejected[list(reasons)] = True
                ok_empty, _, _ = self._evaluate(empty, work.shape, rejected, with_reasons=False)
                for i, why in reasons.items():
                    target = failed if ok_empty[i] else unresolvable
                    target[snap.arrays.node_names[i]] = f"toposched: {why}"
            passed = {snap.arrays.node_names[i] for i in np.flatnonzero(ok)}
            if len(passed) == 1 and scored is not None:
                self._hold_best(work, snap, scored, next(iter(passed)))
            return _filter_result(args, passed, failed, unresolvable)

    def _count_arrival(self, work: PodWork) -> None:
        """Count a pod in the arriving mix the first time filter sees it."""
        if work.uid in self._counted:
            return
        self._counted[work.uid] = None
        if len(self._counted) > COUNTED_UIDS:
            self._counted.popitem(last=False)
        try:
            if self.arrivals.observe(work.shape):
                self.ctx = Context(mix=self.arrivals.mix, rng=self.ctx.rng)
        except Exception:  # noqa: BLE001 - counting must never fail a verb
            log.exception("could not count a pod in the workload mix", extra={"pod": work.key})

    def _filter_gang(self, args: wire.ExtenderArgs, names: list[str], work: PodWork) -> wire.ExtenderFilterResult:
        assert work.group is not None
        self._pending[work.uid] = work
        res = self.reservations.get(work.group.key)
        if res is None:
            problem = self._reserve_gang(work)
            if problem:
                return _filter_result(args, set(), {n: f"toposched: {problem}" for n in names}, {})
            res = self.reservations.get(work.group.key)
            assert res is not None
        slot = self._claim(work, names)
        if slot is None:
            why = f"toposched: gang {work.group.key} is placed ({res.describe()}) and has no slot for {work.key}; " \
                  "it waits for the placement to finish"
            return _filter_result(args, set(), {n: why for n in names}, {})
        if slot.node not in names:
            why = f"toposched: gang {work.group.key} reserved node {slot.node} for {work.key}, which is not a candidate"
            return _filter_result(args, set(), {n: why for n in names}, {})
        why = f"toposched: gang {work.group.key} reserved node {slot.node} for {work.key}"
        return _filter_result(args, {slot.node}, {}, {n: why for n in names if n != slot.node})

    def _claim(self, work: PodWork, names: Sequence[str]) -> Slot | None:
        """This member's slot (by pod key), moved to a free slot of the same shape on a candidate node
        if its own is not a candidate; a pod the placement did not name takes a free slot of its shape."""
        assert work.group is not None
        res = self.reservations.get(work.group.key)
        if res is None:
            return None

        def free(s: Slot) -> bool:
            return s.pod_uid is None and s.index not in res.counted and _same_shape(s, work.shape)

        # a slot named for this pod's key but of another shape was placed for an earlier pod of that
        # name (deleted and re-created with other resources): not this pod's
        mine = next((s for s in res.slots if s.pod_key == work.key and _same_shape(s, work.shape)), None)
        if mine is not None and mine.node not in names and mine.index not in res.counted:
            swap = next((s for s in res.slots if s is not mine and free(s) and s.node in names), None)
            if swap is not None:
                swap.pod_key, mine.pod_key = mine.pod_key, swap.pod_key
                mine = swap
        if mine is None:
            spare = [s for s in res.slots if free(s) and (s.pod_key is None or not self._pod_known(s.pod_key))]
            if not spare:
                return None
            mine = next((s for s in spare if s.node in names), spare[0])
            mine.pod_key = work.key
        mine.pod_uid = work.uid
        return mine

    def _pod_known(self, key: str) -> bool:
        return any(w.key == key for w in self._pending.values()) or self.state.pending_pod(key) is not None

    def _reserve_gang(self, work: PodWork) -> str:
        """Place the whole gang and reserve its slots; the reason when it cannot be placed."""
        assert work.group is not None
        ref = work.group
        members = {workloads.pod_key(p): _engine_view(p) for p in self.state.pending_group_pods(ref.key)}
        for w in self._pending.values():
            if w.group is not None and w.group.key == ref.key:
                members.setdefault(w.key, w.pod)
        members[work.key] = work.pod
        pods = [members[k] for k in sorted(members)]
        podgroup = job = None
        if ref.object is not None:
            obj = self.state.group_object(ref.object)
            if ref.object.is_podgroup:
                podgroup = obj
            else:
                job = obj
        levels = self.state.levels()
        policy = workloads.gang_policy(ref, pods, podgroup=podgroup, job=job, levels=levels)
        bound = self.state.bound_gang_members(ref.key)
        if not policy.is_ready(len(pods) + bound):
            return f"gang {ref.key}: waiting for members ({len(pods) + bound} of {policy.min_members} exist)"
        request, members_map = workloads.build_gang_request(ref, policy, pods, bound=bound)
        snap = self._snapshot()
        if snap is None:
            return f"gang {ref.key}: {UNKNOWN_NODE}"
        running = self.state.bound_gang_allocations(ref.key) if bound else []
        if running:
            # some members are bound already (a reservation that timed out half bound, a restart):
            # the rest go next to them, in their required domain and slices
            outcome = complete_gang(self.engine, snap, request, running, (policy.slice_size, policy.slice_level))
            if not outcome.placed:
                return (f"gang {ref.key}: {len(running)} members are bound; the rest do not fit next to them "
                        f"({outcome.reason.replace(f'repair gang {ref.key}: ', '', 1)})")
        else:
            outcome = place(snap, [request], self.engine, self.ctx).outcomes[0]
        if not outcome.placed:
            return outcome.reason or f"gang {ref.key} does not fit"
        pod_of = dict(members_map)
        slots = [Slot(i, p.role or "worker", p.node, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib,
                      pod_key=pod_of.get(p.pod), extended=p.extended) for i, p in enumerate(outcome.placements)]
        # the gang's own timeout (annotation, PodGroup, job), else the configured default
        timeout = policy.timeout_s
        if self.gang_timeout_s is not None and policy.timeout_s == workloads.DEFAULT_GANG_TIMEOUT_S:
            timeout = self.gang_timeout_s
        self.reservations.add(ref.key, slots, timeout)
        log.info("gang %s reserved: %s", ref.key, ", ".join(f"{s.pod_key}->{s.node}{list(s.gpus)}" for s in slots))
        return ""

    # --- prioritize -------------------------------------------------------------------

    def prioritize(self, args: wire.ExtenderArgs) -> list[wire.HostPriority]:
        names = args.candidate_names()
        try:
            work = self._work(args.pod)
        except workloads.WorkloadError:
            work = None  # filter has said why; no opinion here
        if work is None:
            return []
        if not self.state.is_synced():
            return [_priority_of(n, score=0) for n in names]
        with self._lock:
            self._housekeeping()
            if work.group is not None:
                res = self.reservations.get(work.group.key)
                slot = None if res is None else next((s for s in res.slots if s.pod_key == work.key), None)
                best = slot.node if slot is not None else None
                return [_priority_of(n, score=10 if n == best else 0) for n in names]
            self._pending[work.uid] = work
            snap = self._snapshot(skip_uid=work.uid, priority=work.request.priority)
            if snap is None:
                return [_priority_of(n, score=0) for n in names]
            index = snap.arrays.node_index
            wanted = np.zeros(snap.n_nodes, dtype=bool)
            for n in names:
                if n in index:
                    wanted[index[n]] = True
            ok, _, scored = self._evaluate(snap, work.shape, wanted, with_reasons=False)
            per_node = np.full(snap.n_nodes, -np.inf)
            if scored is not None:
                cand, total = scored
                np.maximum.at(per_node, cand.node, total)
                best = int(np.argmax(per_node))
                self._hold_best(work, snap, scored, snap.arrays.node_names[best])
            scores = _scale(per_node, ok)
            return [_priority_of(n, score=int(scores[index[n]]) if n in index else 0) for n in names]

    def _hold_best(self, work: PodWork, snap: Snapshot, scored: Any, node_name: str) -> None:
        cand, total = scored
        node = snap.arrays.node_index[node_name]
        on_node = np.flatnonzero(cand.node == node)
        if not len(on_node):
            return
        m = int(on_node[np.argmax(total[on_node])])
        self._holds[work.uid] = Hold(work.key, node_name, tuple(int(g) for g in cand.gpus[m]),
                                     work.shape.gpu_milli, work.shape.cpu_milli, work.shape.memory_mib,
                                     self.clock() + self.hold_ttl_s, work.shape.extended)

    # --- bind -------------------------------------------------------------------------

    def bind(self, args: wire.ExtenderBindingArgs) -> wire.ExtenderBindingResult:
        ref = ObjectRef.pod(args.pod_namespace, args.pod_name, args.pod_uid)
        if self.binder is None:
            return wire.ExtenderBindingResult(error="toposched: this extender does not bind (no API access); "
                                                    "remove bindVerb from the extender configuration")
        placement: Placement | None = None
        annotations: dict[str, str] = {}
        with self._lock:
            self._housekeeping()
            if not self.state.is_synced() and args.pod_uid not in self._passed:
                return wire.ExtenderBindingResult(error=f"toposched: {NOT_SYNCED}")
            work = self._pending.get(args.pod_uid) if args.pod_uid else next(
                (w for w in self._pending.values() if w.key == ref.key), None)
            if work is None:
                pod = self.state.pending_pod(ref.key)
                cached_uid = field_at(pod, "metadata", "uid")
                if pod is None and args.pod_uid in self._passed:
                    pass  # filter let it through untouched: a plain binding
                elif pod is None:
                    return wire.ExtenderBindingResult(
                        error=f"toposched: pod {ref.key} was not filtered by this extender; schedule it again")
                elif args.pod_uid and cached_uid and cached_uid != args.pod_uid:
                    return wire.ExtenderBindingResult(
                        error=f"toposched: pod {ref.key} is now uid {cached_uid}, not {args.pod_uid} "
                              "(re-created); schedule it again")
                else:
                    try:
                        work = self._work(pod)  # None: not ours, a plain binding
                    except workloads.WorkloadError as exc:
                        return wire.ExtenderBindingResult(error=f"toposched: {exc}")
            if work is not None:
                try:
                    placement = self._choose(work, args.node)
                    self.state.assume(work.key, placement, placement.gang)
                except (_NoFit, LedgerError) as exc:
                    return wire.ExtenderBindingResult(error=f"toposched: {exc}")
                annotations = workloads.assignment_annotations(placement)
                self._holds.pop(work.uid, None)
        try:
            self.binder.bind(ref, args.node, annotations)
        except KubeApiError as exc:
            if placement is not None:
                with self._lock:
                    self.state.forget(placement.pod)
            return wire.ExtenderBindingResult(error=f"toposched: binding {ref.key} to {args.node} failed: {exc}")
        if work is not None:
            with self._lock:
                self._pending.pop(work.uid, None)
        return wire.ExtenderBindingResult()

    def _choose(self, work: PodWork, node_name: str) -> Placement:
        """The GPUs ``work`` gets on ``node_name``: its gang slot, its hold, or the best set now."""
        group = work.group.key if work.group is not None else None
        res = self.reservations.get(group) if group is not None else None
        slot = None if res is None else next(
            (s for s in res.slots if s.pod_key == work.key and _same_shape(s, work.shape)), None)
        snap = self._snapshot(skip_uid=work.uid, priority=work.request.priority)
        node = None if snap is None else snap.arrays.node_index.get(node_name)
        if snap is None or node is None:
            raise _NoFit(f"node {node_name} is not in toposched's cache")
        if slot is None and group is not None:
            # a member binds only into its gang's placement, never on its own (the gang waits for
            # members, does not fit, or its reservation expired since this member's filter)
            raise _NoFit(f"gang {group} has no slot reserved for {work.key} (it waits for members, does not fit, "
                         "or its reservation expired); schedule it again")
        if slot is not None:
            if slot.node != node_name:
                raise _NoFit(f"gang {group} reserved node {slot.node} for {work.key}, not {node_name}")
            gpus, milli = slot.gpus, slot.gpu_milli
        else:
            hold = self._holds.get(work.uid)
            if hold is not None and hold.node == node_name and _free(snap, node, hold.gpus, hold.gpu_milli):
                gpus, milli = hold.gpus, hold.gpu_milli
            else:
                wanted = np.zeros(snap.n_nodes, dtype=bool)
                wanted[node] = True
                ok, reasons, scored = self._evaluate(snap, work.shape, wanted)
                if scored is None or not ok[node]:
                    raise _NoFit(f"{work.key} no longer fits on {node_name}: {reasons.get(node, 'no free GPU set')}")
                cand, total = scored
                m = int(np.argmax(total))
                gpus, milli = tuple(int(g) for g in cand.gpus[m]), work.shape.gpu_milli
        shape = work.shape
        return Placement(work.key, node_name, node, gpus, milli, shape.cpu_milli, shape.memory_mib,
                         gang=group, role=slot.role if slot is not None else None, owner=shape.owner,
                         extended=shape.extended)

    # --- preempt ----------------------------------------------------------------------

    def preempt(self, args: wire.ExtenderPreemptionArgs) -> wire.ExtenderPreemptionResult:
        given = args.meta_victims()
        try:
            work = self._work(args.pod)
        except workloads.WorkloadError:
            work = None
        if work is None:
            return wire.ExtenderPreemptionResult(node_name_to_meta_victims=given)
        if work.group is not None:
            return wire.ExtenderPreemptionResult(node_name_to_meta_victims=self._member_victims(work, given))
        if not self.state.is_synced():  # GPUs in use may not be known yet: no preemption now
            return wire.ExtenderPreemptionResult(node_name_to_meta_victims={})
        with self._lock:
            self._housekeeping()
            snap = self._snapshot(skip_uid=work.uid, priority=work.request.priority)
            if snap is None:
                return wire.ExtenderPreemptionResult(node_name_to_meta_victims=given)
            return wire.ExtenderPreemptionResult(node_name_to_meta_victims=self._victims(work, snap, given))

    def _member_victims(self, work: PodWork, given: dict[str, wire.MetaVictims]) -> dict[str, wire.MetaVictims]:
        """A gang member: kube-scheduler's victims on the node its slot is reserved on, and no other
        node (the filter passes only that node). Without a slot nothing is preempted: the gang is
        placed whole or not at all, and victims chosen for one member, blind to GPUs and to the
        other members, would be evicted for nothing."""
        assert work.group is not None
        with self._lock:
            res = self.reservations.get(work.group.key)
            slot = None if res is None else next((s for s in res.slots if s.pod_key == work.key), None)
        if slot is None or slot.node not in given:
            return {}
        return {slot.node: given[slot.node]}

    def _victims(self, work: PodWork, snap: Snapshot, given: dict[str, wire.MetaVictims],
                 ) -> dict[str, wire.MetaVictims]:
        """Per candidate node: kube-scheduler's victims plus the fewest lower-priority GPU pods that free
        a GPU set for the pod; nodes where even all of them would not do are dropped.

        The filters are node-local, so every node is decided in the same few engine passes:
          1. remove kube-scheduler's victims everywhere; nodes that fit now keep exactly those;
          2. on the rest, also remove every lower-priority GPU pod; nodes that still do not fit drop out;
          3. reprieve in rounds: round k gives back each node's k-th pod and takes it again where the
             pod would no longer fit; those are victims. The order per node, as kube-scheduler's: the
             pods whose eviction would break a PodDisruptionBudget (counting kube-scheduler's victims
             against the budgets first) before the others, each by highest priority, then fewer GPUs.
             The victims we add that break a budget are added to kube-scheduler's ``numPDBViolations``.
        """
        index = snap.arrays.node_index
        out: dict[str, wire.MetaVictims] = {}
        nodes: dict[str, int] = {}
        for name, victims in given.items():
            if name in index:
                nodes[name] = index[name]
            else:
                out[name] = victims  # nothing better to say about a node we do not know
        extras: dict[str, list[tuple[str, Any]]] = {}
        budgets = self.state.budgets()
        tallies: dict[str, Tally] = {}  # per node: what the budgets allow after kube-scheduler's victims
        covers: dict[str, tuple[str, tuple[int, ...]]] = {}  # uid -> (pod key, the budgets selecting it)
        for name, node in nodes.items():
            uids = {p.uid for p in given[name].pods or []}
            mine = []
            tally = Tally(budgets)
            for pod, a in self.state.pods_on_node(name):
                uid = _uid(pod)
                if budgets:
                    key = str((pod.get("metadata") or {}).get("name") or "")
                    covers[uid] = (key, covering(budgets, key, (pod.get("metadata") or {}).get("labels")))
                if uid in uids:
                    snap.apply(node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, sign=-1,
                           extended=a.extended)
                    if budgets:
                        tally.take(*covers[uid])
                elif a.gpus and _priority(pod) < work.request.priority:
                    mine.append((_priority(pod), len(a.gpus), uid, a))
            mine.sort(key=lambda t: (-t[0], t[1], t[2]))
            if budgets:
                trial = tally.copy()
                breaking = {t[2] for t in mine if trial.take(*covers[t[2]])}
                mine = [t for t in mine if t[2] in breaking] + [t for t in mine if t[2] not in breaking]
            tallies[name] = tally
            extras[name] = [(uid, a) for _, _, uid, a in mine]
        fits = self._fits(snap, work.shape, list(nodes.values()))
        need = [n for n in nodes if not fits[nodes[n]]]
        for n in nodes:
            if fits[nodes[n]]:
                out[n] = given[n]
        for n in need:
            for _, a in extras[n]:
                snap.apply(nodes[n], a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, sign=-1,
                           extended=a.extended)
        fits = self._fits(snap, work.shape, [nodes[n] for n in need])
        need = [n for n in need if fits[nodes[n]]]
        chosen: dict[str, list[str]] = {n: [] for n in need}
        for k in range(max((len(extras[n]) for n in need), default=0)):
            trying = [n for n in need if k < len(extras[n])]
            for n in trying:
                a = extras[n][k][1]
                snap.apply(nodes[n], a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, extended=a.extended)
            fits = self._fits(snap, work.shape, [nodes[n] for n in trying])
            for n in trying:
                if not fits[nodes[n]]:
                    uid, a = extras[n][k]
                    snap.apply(nodes[n], a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, sign=-1,
                           extended=a.extended)
                    chosen[n].append(uid)
        for n in need:
            pods = [*(given[n].pods or []), *(wire.MetaPod(uid=u) for u in chosen[n])]
            added = sum(tallies[n].take(*covers[u]) for u in chosen[n]) if budgets else 0
            out[n] = wire.MetaVictims(pods=pods, num_pdb_violations=given[n].num_pdb_violations + added)
        return out

    def _fits(self, snap: Snapshot, shape: PodShape, nodes: Sequence[int]) -> np.ndarray:
        """bool [N]: which of ``nodes`` could host ``shape`` now (filters plus a free GPU set)."""
        wanted = np.zeros(snap.n_nodes, dtype=bool)
        if len(nodes):
            wanted[list(nodes)] = True
            ok, _, _ = self._evaluate(snap, shape, wanted, with_reasons=False)
            return ok
        return wanted


class _NoFit(Exception):
    """The pod cannot get GPUs on the node kube-scheduler chose."""


def _uid(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("uid") or "")


def _priority(pod: Mapping[str, Any]) -> int:
    p = (pod.get("spec") or {}).get("priority")
    return p if isinstance(p, int) and not isinstance(p, bool) else 0


def _priority_of(host: str, score: int) -> wire.HostPriority:
    """A reply entry built without validation (scores come from ``_scale``, always 0..10)."""
    return wire.HostPriority.model_construct(host=host, score=score)


def _same_shape(slot: Slot, shape: PodShape) -> bool:
    return (len(slot.gpus), slot.gpu_milli, slot.cpu_milli, slot.memory_mib, slot.extended) == \
        (shape.gpus, shape.gpu_milli, shape.cpu_milli, shape.memory_mib, shape.extended)


def _free(snap: Snapshot, node: int, gpus: tuple[int, ...], milli: int) -> bool:
    return all(0 <= g < snap.gpu_free.shape[1] and snap.gpu_free[node, g] >= milli for g in gpus)


def _scale(per_node: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Engine totals -> 1..10 over the feasible nodes (monotone; best = 10); 0 elsewhere."""
    out = np.zeros(len(per_node), dtype=np.int64)
    if not ok.any():
        return out
    vals = per_node[ok]
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo <= 1e-12:
        out[ok] = wire.MAX_EXTENDER_PRIORITY
    else:
        out[ok] = 1 + np.floor((vals - lo) / (hi - lo) * (wire.MAX_EXTENDER_PRIORITY - 1) + 1e-9).astype(np.int64)
    return out


def _filter_result(args: wire.ExtenderArgs, passed: set[str], failed: dict[str, str],
                   unresolvable: dict[str, str]) -> wire.ExtenderFilterResult:
    """Echo the input form: full ``Nodes`` when they came in, else ``NodeNames``; order kept."""
    if args.nodes is not None:
        items = [n for n in args.nodes.items if _node_name(n) in passed]
        extra = {k: v for k, v in (args.nodes.model_extra or {}).items()}
        nodes = wire.NodeList(metadata=args.nodes.metadata, items=items, **extra)
        return wire.ExtenderFilterResult(nodes=nodes, node_names=None, failed_nodes=failed,
                                         failed_and_unresolvable_nodes=unresolvable)
    names = [n for n in (args.node_names or []) if n in passed]
    return wire.ExtenderFilterResult(nodes=None, node_names=names, failed_nodes=failed,
                                     failed_and_unresolvable_nodes=unresolvable)


def _node_name(node: Mapping[str, Any]) -> str:
    meta = node.get("metadata")
    return meta.get("name", "") if isinstance(meta, Mapping) else ""

