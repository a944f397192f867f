"""The scheduling loop: watch events in, placements out. It decides nothing itself; ``engine.place`` does.

One thread owns all state (cache, queue, in-flight binds). Reflector threads and binding
workers only put messages into ``inbox``. One ``step()``:

  1. Drain the inbox: node / pod / group-object events update the cache and the queue;
     binding results confirm, forget or roll back.
  2. Rebuild topology + ledger if nodes changed (``ClusterCache.refresh``).
  3. If leading: pop ready units (pods and whole gangs), translate them with
     ``scheduler.workloads`` (a malformed pod gets a Warning event and stays pending), and
     decide them all in ONE ``place()`` call (each request sees the ones before it).
  4. Placed: assume in the ledger, then bind on the worker pool (assignment annotations,
     then pods/binding). Not placed: ``FailedScheduling`` event + ``PodScheduled=False
     Unschedulable``, unit waits for a cluster change (then backoff 1 s -> 10 s).
  5. Preemption (``scheduler.preemption``): a unit that did not fit may evict lower-priority
     pods (whole gangs); the victims are deleted and the unit is nominated for the freed
     place (``status.nominatedNodeName``). While the nomination stands the unit does not
     preempt again, and units of its priority or lower decided without it see its place as
     taken (higher ones may take it); it ends when the unit is placed, its pods go away, its
     victims are gone and it still does not fit (it plans again), or after
     ``preemption_timeout_s``. A nominated pod whose place has room again is placed there
     without the engine (kube-scheduler's nominated-node fast path). PodDisruptionBudgets
     (watched, kept in the cache) steer the victims: the planner prefers victims whose
     eviction breaks no budget, and the ``Preempting`` event says when it cannot avoid it.

Gangs are all or nothing: if any member fails to bind, members already bound are deleted
through the API (their controller recreates them) with an event saying why, the rest are
forgotten, and the gang goes back to the queue with backoff.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.placement import Placement, RequestOutcome, SolverReport, SolverStatus
from models.requests import GangRequest, PodRequest
from plugins.base import Context
from scheduler import workloads
from scheduler.cache import GROUP_KINDS, PDB_RESOURCE, ClusterCache, pod_priority
from scheduler.engine import Engine, filter_counts, place
from scheduler.failures import FailureHandler
from scheduler.leader import micro_time
from scheduler.ledger import AllocState, LedgerError
from scheduler.metrics import SchedulerMetrics
from scheduler.ports import Binder, EventSink, KubeApiError, ObjectRef
from scheduler.preemption import NEVER, Holder, Placer, PreemptionPlan, plan_preemption, still_fits
from scheduler.queue import SchedulingQueue, Unit, UnitState, gang_unit_key
from scheduler.reporting import Reporter
from scheduler.serve_config import ServeConfig
from scheduler.snapshot import PodShape, Snapshot
from scheduler.workloads.common import get as field_at
from scheduler.workloads.common import shape_problem

log = logging.getLogger("toposched.loop")

NODES, PODS = "nodes", "pods"
GROUP_RESOURCES = frozenset(GROUP_KINDS.values())
NOT_LEADER = KubeApiError(0, "NotLeader", "this instance lost the lease before binding", operation="bind")


@dataclass
class BindJob:
    """One pod's binding: where, with which annotations, for which gang."""

    key: str
    ref: ObjectRef
    placement: Placement
    annotations: dict[str, str]
    gang: str | None
    unit: Unit


@dataclass
class BindResult:
    job: BindJob
    error: KubeApiError | None
    duration_s: float


@dataclass
class GangBinding:
    """A gang whose members are being bound; ``failed`` starts the rollback."""

    gang: str
    unit: Unit
    pending: set[str]
    bound: set[str] = field(default_factory=set)
    failed: str | None = None
    started: float = 0.0


@dataclass
class Nomination:
    """A preemptor waiting for its victims to go: where it will fit, and since when."""

    unit: str
    placements: tuple[Placement, ...]
    pods: frozenset[str]  # the preemptor's pod keys
    since: float
    priority: int = 0  # the preemptor's: only units of this priority or lower respect the hold
    victims: frozenset[str] = frozenset()  # pod keys deleted for it


@dataclass
class CycleStats:
    """What one ``step()`` did (tests and the benchmark read it)."""

    events: int = 0
    decided: int = 0
    placed: int = 0
    unschedulable: int = 0
    errors: int = 0


class Scheduler:
    """The driver: cache + queue + engine + binder. Thread-safe entry points: ``replace``, ``apply``."""

    def __init__(self, config: ServeConfig, binder: Binder, events: EventSink, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], str] = micro_time,
                 metrics: SchedulerMetrics | None = None, is_leader: Callable[[], bool] = lambda: True,
                 bind_workers: int | None = None, background_reporting: bool = True,
                 on_bound: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.binder = binder
        self.clock = clock
        self.metrics = metrics or SchedulerMetrics()
        self.is_leader = is_leader
        self.on_bound = on_bound
        self.profile = config.scheduler_name
        self.cache = ClusterCache(config.scheduler_name, config.levels)
        self.queue = SchedulingQueue(clock, config.backoff.initial_s, config.backoff.max_s,
                                     config.backoff.unschedulable_retry_s)
        self.engine = Engine.from_config(config.placement)
        self.arrivals = config.workload_mix.arrival_mix()  # what fragmentation scores against
        self._counted: set[str] = set()  # pending pods already counted in ``arrivals``
        # the engine request read from each pending pod, while the cache holds that very object
        self._requests: dict[str, tuple[Mapping[str, Any], Any, PodRequest]] = {}
        self._rng = np.random.default_rng(config.placement.seed)
        self.failures = FailureHandler(getattr(config, "node_failures", None), clock)  # node failures, gang repair
        self.reporter = Reporter(events, binder, clock=clock, wall=wall,
                                 repeat_interval_s=config.event_repeat_interval_s, background=background_reporting,
                                 on_error=self._api_error)
        self.inbox: queue_mod.SimpleQueue[tuple[Any, ...]] = queue_mod.SimpleQueue()
        workers = config.bind_workers if bind_workers is None else bind_workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="toposched-bind") if workers > 0 else None
        self._inflight: dict[str, BindJob] = {}
        self._gang_binds: dict[str, GangBinding] = {}
        self._gang_of: dict[str, str] = {}  # pending pod key -> gang key
        self._members: dict[str, set[str]] = {}  # gang key -> pending member keys
        self._invalid: dict[str, str] = {}  # pod key -> why it cannot be read (until it changes)
        self._timed_out: set[str] = set()  # gangs already told they are short of members
        self._nominations: dict[str, Nomination] = {}  # unit key -> its nomination (a preemptor)
        self._preempting: set[str] = set()  # victims whose deletion we asked for and the watch has not shown
        # this cycle's units that did not fit, with how they are placed when not by the engine's place()
        self._to_preempt: list[tuple[Unit, Any, dict[str, str], Placer | None]] = []
        self.synced: set[str] = set()
        self.last_step = clock()
        self._last_gauges = -1e9

    # --- thread-safe entry points (reflector threads) -----------------------------------------

    def replace(self, resource: str, items: list[dict[str, Any]]) -> None:
        self.inbox.put(("replace", resource, items))

    def apply(self, resource: str, type_: str, obj: dict[str, Any]) -> None:
        self.inbox.put(("event", resource, type_, obj))

    # --- the loop ----------------------------------------------------------------------------------

    def run(self, stop: Any, idle_wait_s: float = 0.2) -> None:
        """Step until ``stop`` (a threading.Event) is set; never dies of one bad step."""
        while not stop.is_set():
            try:
                self.step(wait_s=idle_wait_s)
            except Exception:  # noqa: BLE001 - the top of the loop: log with context and carry on
                log.exception("scheduling step failed")
                time.sleep(0.05)

    def step(self, wait_s: float = 0.0) -> CycleStats:
        """One cycle (phases in the module doc). ``wait_s``: block that long for input when idle."""
        stats = CycleStats()
        self.last_step = self.clock()
        stats.events = self._drain(wait_s)
        if self.cache.refresh():
            self.queue.cluster_changed()
            self.metrics.topology_version.set(self.cache.version)
            self.metrics.cache_nodes.set(len(self.cache.nodes))
            self.metrics.invalid_objects.set(len(self.cache.invalid_nodes))
            for name, problem in self.cache.invalid_nodes.items():
                log.warning("node left out: %s", problem, extra={"node": name})
        self.failures.step(self)
        leading = self.is_leader()
        if self._nominations:
            self._expire_nominations()
        if leading and self.ready_to_schedule():
            self._schedule(stats)
        self._gauges(leading)
        return stats

    def ready_to_schedule(self) -> bool:
        return NODES in self.synced and PODS in self.synced

    def _drain(self, wait_s: float) -> int:
        count = 0
        if wait_s > 0 and self.inbox.empty():
            nxt = self.queue.next_ready_at() if self.is_leader() and self.ready_to_schedule() else None
            if nxt is not None:
                wait_s = min(wait_s, max(0.0, nxt - self.clock()))
            if wait_s > 0:
                try:
                    self._handle(self.inbox.get(timeout=wait_s))
                    count += 1
                except queue_mod.Empty:
                    return 0
        while True:
            try:
                msg = self.inbox.get_nowait()
            except queue_mod.Empty:
                return count
            self._handle(msg)
            count += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.reporter.close()

    # --- inputs -------------------------------------------------------------------------------------

    def _handle(self, msg: tuple[Any, ...]) -> None:
        try:
            self._dispatch(msg)
        except Exception:  # noqa: BLE001 - one bad object must not stop the loop; say which
            obj = msg[3] if msg[0] == "event" and len(msg) > 3 else None
            name = field_at(obj, "metadata", "name")
            log.exception("could not process %s %s %s", msg[0], msg[1] if len(msg) > 1 else "",
                          name if isinstance(name, str) else "", extra={"pod": name if isinstance(name, str) else None})

    def _dispatch(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "replace":
            self._on_replace(msg[1], msg[2])
        elif kind == "event":
            self._on_event(msg[1], msg[2], msg[3])
        elif kind == "bound":
            self._on_bind_result(msg[1])
        elif kind == "deleted":
            self._on_delete_result(msg[1], msg[2])
        elif kind == "preempted":
            self._on_victim_delete(msg[1], msg[2])

    def _readable(self, resource: str, obj: Any) -> bool:
        """False (and said in the log, naming the object and the field) for an object whose shape
        cannot be read at all; such an object is skipped and what was known of it is kept."""
        problem = shape_problem(obj)
        if problem is None:
            return True
        name = field_at(obj, "metadata", "name")
        log.warning("%s %s left out: %s", resource, name if isinstance(name, str) else "(no name)", problem)
        return False

    def _on_replace(self, resource: str, items: list[dict[str, Any]]) -> None:
        names = {field_at(o, "metadata", "name") for o in items}
        keys = {workloads.pod_key(o) for o in items} if resource == PODS else set()
        items = [o for o in items if self._readable(resource, o)]  # the unreadable ones still count as present
        if resource == NODES:
            if self.cache.replace_nodes(items, keep={n for n in names if isinstance(n, str)}):
                self.queue.cluster_changed()
        elif resource == PODS:
            before = set(self.cache.pending) | set(self.cache.bound) | self.cache.gated
            for key in before - keys:  # deleted while we were not watching
                self._pod_gone(key, freed=self.cache.delete_pod(key))
            for pod in items:
                self._handle_one(resource, pod, self._sync_pod)
        elif resource in GROUP_RESOURCES:
            self.cache.replace_groups(resource, items)
            self._groups_changed()
        elif resource == PDB_RESOURCE:
            self.cache.replace_budgets(items)
            self.metrics.invalid_budgets.set(len(self.cache.invalid_budgets))
        self.synced.add(resource)

    def _handle_one(self, resource: str, obj: Mapping[str, Any], handle: Callable[[Any], None]) -> None:
        """``handle(obj)`` for one object of a list; an error is logged with the object's name and
        the list goes on."""
        try:
            handle(obj)
        except Exception:  # noqa: BLE001 - the rest of the list must still be read
            log.exception("could not process %s %s", resource, field_at(obj, "metadata", "name"))

    def _on_event(self, resource: str, type_: str, obj: dict[str, Any]) -> None:
        if not self._readable(resource, obj):
            return
        if resource == NODES:
            name = (obj.get("metadata") or {}).get("name") or ""
            changed = self.cache.delete_node(name) if type_ == "DELETED" else self.cache.upsert_node(obj)
            if changed:
                self.queue.cluster_changed()
        elif resource == PODS:
            if type_ == "DELETED":
                key = workloads.pod_key(obj)
                self._pod_gone(key, freed=self.cache.delete_pod(key))
            else:
                self._sync_pod(obj)
        elif resource in GROUP_RESOURCES:
            if type_ == "DELETED":
                self.cache.delete_group(resource, obj)
            else:
                self.cache.upsert_group(resource, obj)
            self._groups_changed()
        elif resource == PDB_RESOURCE:
            if type_ == "DELETED":
                self.cache.delete_budget(obj)
            else:
                self.cache.upsert_budget(obj)
            self.metrics.invalid_budgets.set(len(self.cache.invalid_budgets))

    def _sync_pod(self, pod: Mapping[str, Any]) -> None:
        """Bring cache and queue in line with one pod's new state."""
        key = workloads.pod_key(pod)
        old = self.cache.pending.get(key)
        state = self.cache.upsert_pod(pod)
        if state == "pending":
            if (key in self._inflight or key in self.cache.assumed) and not self._recreated(key, pod):
                return  # binding, or bound and the watch has not shown it yet
            if old is not None and self._queued(key) and _what_placement_reads(old) == _what_placement_reads(pod):
                return  # a status write (ours: PodScheduled) changes nothing for placement
            self._invalid.pop(key, None)
            self._enqueue(key, pod, changed=old is not None)
            self._count_arrival(key, pod)
            return
        self._counted.discard(key)
        self._requests.pop(key, None)
        self._dequeue(key)
        if state == "bound":
            self.reporter.forget(key)
            problem = self.cache.bad_annotations.get(key)
            if problem and self._invalid.get(key) != problem:
                self._invalid[key] = problem
                self.reporter.event(ObjectRef.of(pod), "Warning", "InvalidAssignment", "Scheduling",
                                    f"{problem}; its GPUs are counted as the lowest free ones of its node")
        elif state == "gone":
            self._pod_gone(key, freed=True)

    def _recreated(self, key: str, pod: Mapping[str, Any]) -> bool:
        """True when pending ``pod`` is a new pod under the name of one we bound or are binding
        (deleted and re-created: another uid). A binding that went through but was never seen
        by the watch is given up here; one still in flight fails (404 or uid conflict) and the
        new pod is tried once it has (see ``_on_bind_result``)."""
        uid = field_at(pod, "metadata", "uid")
        job = self._inflight.get(key)
        old = job.ref.uid if job is not None else self.cache.assumed_uid(key)
        if not uid or not old or uid == old:
            return False
        if job is None:
            self.cache.forget(key)
            self.queue.cluster_changed()  # its GPUs are free again
        return True

    def _count_arrival(self, key: str, pod: Mapping[str, Any]) -> None:
        """Count a pod we are asked to place in the arriving mix, once (an unreadable pod is not counted)."""
        if key in self._counted:
            return
        self._counted.add(key)
        try:
            self.arrivals.observe(PodShape.of(self._pod_request(key, pod)))
        except workloads.WorkloadError:
            self._counted.discard(key)  # unreadable: said when the pod is decided; counted once fixed
        except Exception:  # noqa: BLE001 - counting must never keep a pod from being scheduled
            log.exception("could not count a pod in the workload mix", extra={"pod": key})

    def _context(self) -> Context:
        """What a decision knows beyond the snapshot: the arriving mix, the scheduler's RNG."""
        return Context(mix=self.arrivals.mix, rng=self._rng)

    def _queued(self, key: str) -> bool:
        gang = self._gang_of.get(key)
        if gang is None:
            return key in self.queue
        return gang_unit_key(gang) in self.queue or gang in self._gang_binds

    def _pod_request(self, key: str, pod: Mapping[str, Any]) -> PodRequest:
        """The engine request of pending pod ``key``, read once per object the cache holds
        (counting the arrival and each attempt to place it reuse it); ``pod`` when the cache
        holds none. Raises ``WorkloadError``."""
        stored = self.cache.pending.get(key, pod)
        levels = self.cache.levels
        hit = self._requests.get(key)
        if hit is not None and hit[0] is stored and hit[1] is levels:
            return hit[2]
        req = workloads.pod_request(stored, levels)
        if key in self.cache.pending:
            self._requests[key] = (stored, levels, req)
        return req

    def _pod_gone(self, key: str, freed: bool) -> None:
        self._counted.discard(key)
        self._requests.pop(key, None)
        self._dequeue(key)
        self._preempting.discard(key)
        self.reporter.forget(key)
        self._invalid.pop(key, None)
        if freed:
            self.queue.cluster_changed()

    def _enqueue(self, key: str, pod: Mapping[str, Any], changed: bool) -> None:
        try:
            group = workloads.group_of(pod)
        except workloads.WorkloadError as exc:
            self._report_invalid(exc, [key])
            self.queue.add(key)
            self.queue.unschedulable(key)
            return
        priority = (pod.get("spec") or {}).get("priority") or 0
        priority = priority if isinstance(priority, int) else 0
        if group is None:
            old_gang = self._gang_of.pop(key, None)
            if old_gang is not None:
                self._leave_gang(key, old_gang)
            self.queue.add(key, priority=priority)
            if changed:
                self.queue.activate(key)
            return
        gkey = group.key
        self.queue.remove(key)
        old_gang = self._gang_of.get(key)
        if old_gang is not None and old_gang != gkey:  # moved to another gang: it leaves the old one
            self._leave_gang(key, old_gang)
        self._gang_of[key] = gkey
        members = self._members.setdefault(gkey, set())
        is_new = key not in members
        members.add(key)
        unit_key = gang_unit_key(gkey)
        if gkey in self._gang_binds:
            return  # a member re-created during a rollback joins the retry
        unit = self.queue.get(unit_key)
        self.queue.add(unit_key, is_gang=True, priority=priority)
        if unit is not None and (changed or is_new):
            self.queue.activate(unit_key)

    def _dequeue(self, key: str) -> None:
        self.queue.remove(key)
        if self._nominations:
            for unit_key in [u for u, nom in self._nominations.items() if key in nom.pods]:
                del self._nominations[unit_key]  # bound or gone: nothing left to hold a place for
        gkey = self._gang_of.pop(key, None)
        if gkey is not None:
            self._leave_gang(key, gkey)

    def _leave_gang(self, key: str, gkey: str) -> None:
        """``key`` is no longer a member of gang ``gkey``; a gang left without members leaves the queue."""
        members = self._members.get(gkey)
        if members is not None:
            members.discard(key)
            if not members:
                self._members.pop(gkey, None)
                if gkey not in self._gang_binds:
                    self.queue.remove(gang_unit_key(gkey))
                    self._timed_out.discard(gkey)

    def _groups_changed(self) -> None:
        for unit in self.queue.units.values():
            if unit.is_gang:
                self.queue.activate(unit.key)

    # --- scheduling ----------------------------------------------------------------------------------

    def _schedule(self, stats: CycleStats) -> None:
        units = self.queue.pop_ready(self.config.batch_size)
        units = self.failures.take_repairs(self, units, stats)
        if not units:
            self._preempt_pending()  # a completed gang's later pods may preempt too
            return
        requests: list[Any] = []
        plan: list[tuple[Unit, Any, dict[str, str]]] = []
        for unit in units:
            try:
                built = self._build(unit)
            except Exception as exc:  # noqa: BLE001 - a translation bug parks the unit, not the loop
                log.exception("could not build a request", extra={"pod": unit.key})
                self._scheduler_error(unit, f"internal error while reading the pod: {type(exc).__name__}: {exc}")
                continue
            if built is not None:
                req, members = built
                requests.append(req)
                plan.append((unit, req, members))
        if not requests:
            self._preempt_pending()
            return
        batch = {unit.key for unit, _, _ in plan}
        plan = self._take_nominated(plan, batch, stats)
        # a nominated pod whose room is not free yet (a victim still terminating) keeps holding it,
        # for the rest of the batch too (a gang decides its members with the engine, in its room)
        batch -= {unit.key for unit, req, _ in plan if unit.key in self._nominations and isinstance(req, PodRequest)}
        for group in self._by_holds(plan, batch) if plan else ():
            self._decide_batch(group, batch, stats)
        # after the batch's placements are assumed, so no victim is evicted for a place a
        # lower-priority unit of the same batch has just taken
        self._preempt_pending()

    def _preempt_pending(self) -> None:
        todo, self._to_preempt = self._to_preempt, []
        if todo:
            self._preempt_all(todo)

    def _take_nominated(self, plan: list[tuple[Unit, Any, dict[str, str]]], batch: set[str],
                        stats: CycleStats) -> list[tuple[Unit, Any, dict[str, str]]]:
        """kube-scheduler's nominated-node fast path: a nominated pod whose nominated place passes
        the filters and has room again (its victims are gone) is placed there, not wherever the
        engine would now put it. The rest of the batch is returned. (Gangs go through the engine:
        their members may have been re-created under other names.)"""
        if not self._nominations:
            return plan
        rest = []
        for unit, req, members in plan:
            nom = self._nominations.get(unit.key)
            if nom is None or not isinstance(req, PodRequest) or not self._room_again(nom, req, batch):
                rest.append((unit, req, members))
                continue
            report = SolverReport(SolverStatus.GREEDY, note="nominated node")
            self._apply_outcome(unit, req, members, RequestOutcome(req.name, "pod", list(nom.placements), report),
                                stats)
        return rest

    def _room_again(self, nom: Nomination, req: PodRequest, batch: set[str]) -> bool:
        """Whether the nominated place of ``req`` passes the filters and has room now (False
        whenever in doubt: the engine then decides as usual)."""
        if len(nom.placements) != 1:
            return False
        p = nom.placements[0]
        try:
            snap = self._snapshot(batch, _priority_of(req))
            if (snap is None or snap.arrays.node_index.get(p.node) != p.node_index
                    or any(g >= snap.gpu_free.shape[1] for g in p.gpus)):
                return False  # the topology changed since the plan
            shape = PodShape.of(req, owner=req.owner, spread_level=req.spread_level)
            states = {pl.name: pl.prepare(shape, snap, Context()) for pl in self.engine.all_plugins}
            ok, _ = filter_counts(self.engine, snap, shape, states)
            if not ok[p.node_index]:
                return False
            snap.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, extended=p.extended)
            return still_fits(snap, (p,))
        except Exception:  # noqa: BLE001 - the fast path is an extra: the engine decides instead
            log.exception("nominated-node check failed", extra={"pod": nom.unit})
            return False

    def _by_holds(self, plan: list[tuple[Unit, Any, dict[str, str]]], batch: set[str],
                  ) -> list[list[tuple[Unit, Any, dict[str, str]]]]:
        """The batch in runs of units that respect the same nominations (those of units outside
        the batch with at least the unit's priority), in order: one run unless a nomination of
        lower priority than some unit stands."""
        if not self._nominations:
            return [plan]
        outside = [(k, n.priority) for k, n in self._nominations.items() if k not in batch]
        runs: list[list[tuple[Unit, Any, dict[str, str]]]] = []
        last: tuple[str, ...] | None = None
        for entry in plan:
            prio = _priority_of(entry[1])
            held = tuple(sorted(k for k, p in outside if p >= prio))
            if runs and held == last:
                runs[-1].append(entry)
            else:
                runs.append([entry])
                last = held
        return runs

    def _decide_batch(self, plan: list[tuple[Unit, Any, dict[str, str]]], batch: set[str],
                      stats: CycleStats) -> None:
        """One engine call for ``plan`` (units respecting the same nominations), outcomes applied."""
        requests = [req for _, req, _ in plan]
        snap = self._snapshot(batch, _priority_of(requests[0]))
        t0 = time.perf_counter()
        if snap is None:
            n = len(self.cache.invalid_nodes)
            why = "0/0 nodes are available" + (f": {n} node(s) could not be read" if n else "")
            outcomes = [RequestOutcome(_request_name(r), "pod", [], SolverReport(SolverStatus.INFEASIBLE), why)
                        for r in requests]
        else:
            try:
                outcomes = place(snap, requests, self.engine, self._context()).outcomes
            except Exception:  # noqa: BLE001 - one bad request must not block the batch: decide one by one
                log.exception("batch placement failed; deciding requests one at a time")
                outcomes = None
        self.metrics.algorithm_duration.observe(time.perf_counter() - t0)
        if outcomes is None:
            for unit, req, members in plan:
                self._decide_alone(unit, req, members, stats)
        else:
            for (unit, req, members), out in zip(plan, outcomes, strict=True):
                self._apply_outcome(unit, req, members, out, stats)

    def _decide_alone(self, unit: Unit, req: Any, members: dict[str, str], stats: CycleStats) -> None:
        snap = self._snapshot({unit.key}, _priority_of(req))
        try:
            out = place(snap, [req], self.engine, self._context()).outcomes[0] if snap is not None else None
        except Exception as exc:  # noqa: BLE001
            log.exception("placement failed", extra={"pod": unit.key})
            self._scheduler_error(unit, f"internal error while placing: {type(exc).__name__}: {exc}")
            stats.errors += 1
            return
        if out is not None:
            self._apply_outcome(unit, req, members, out, stats)

    def _build(self, unit: Unit) -> tuple[Any, dict[str, str]] | None:
        """The engine request for a unit (None: not ready or not readable; the unit is parked)."""
        if not unit.is_gang:
            pod = self.cache.pending.get(unit.key)
            if pod is None or not self._placeable(unit.key):
                return None
            try:
                return self._pod_request(unit.key, pod), {unit.key: unit.key}
            except workloads.WorkloadError as exc:
                self._report_invalid(exc, [unit.key])
                self._park(unit, unschedulable=True)
                return None
        gkey = unit.key.removeprefix("gang:")
        keys = sorted(k for k in self._members.get(gkey, ()) if self._placeable(k))
        if not keys:
            return None
        pods = [self.cache.pending[k] for k in keys]
        try:
            ref, policy = self._gang_policy(pods)
            bound = sum(1 for k in self.cache.gang_members(gkey) if not self.failures.being_deleted(self.cache, k))
            if not policy.is_ready(len(pods) + bound):
                self._short_of_members(unit, gkey, keys, len(pods) + bound, policy)
                return None
            self._timed_out.discard(gkey)
            req, members = workloads.build_gang_request(ref, policy, pods, bound=bound)
        except workloads.MissingGroupObject as exc:
            self._report_invalid(exc, keys, reason="WaitingForPodGroup", type_="Normal")
            self._park(unit, unschedulable=False)
            return None
        except workloads.WorkloadError as exc:
            self._report_invalid(exc, keys)
            self._park(unit, unschedulable=True)
            return None
        return req, dict(members)

    def _gang_policy(self, pods: list[Any]) -> tuple[Any, Any]:
        """The gang reference and policy of a gang's pending pods (``WorkloadError`` when unreadable)."""
        ref = workloads.group_of(pods[0])
        assert ref is not None
        obj = self.cache.group_object(ref.object)
        is_pg = ref.object is not None and ref.object.is_podgroup
        return ref, workloads.gang_policy(ref, pods, obj if is_pg else None, None if is_pg else obj, self.cache.levels)

    def _placeable(self, key: str) -> bool:
        """Pending, and neither binding nor bound-but-not-yet-seen-by-the-watch."""
        return key in self.cache.pending and key not in self._inflight and key not in self.cache.assumed

    def _short_of_members(self, unit: Unit, gkey: str, keys: list[str], present: int, policy: Any) -> None:
        waited = self.clock() - unit.added_at
        timeout = min(policy.timeout_s, self.config.gang_timeout_s)
        if waited >= timeout and gkey not in self._timed_out:
            self._timed_out.add(gkey)
            note = (f"gang {gkey}: {present} of its {policy.min_members} minimum members exist after "
                    f"{waited:.0f}s; waiting for the rest")
            for k in keys:
                self.reporter.event(self._ref(k), "Warning", "FailedScheduling", "Scheduling", note)
        self.queue.requeue(unit)
        # wake up when the timeout passes, to tell the user who is missing
        self.queue.wait(unit.key, until=None if gkey in self._timed_out else unit.added_at + timeout)

    def _park(self, unit: Unit, unschedulable: bool) -> None:
        self.queue.requeue(unit)
        if unschedulable:
            self.queue.unschedulable(unit.key)
        else:
            self.queue.wait(unit.key)

    def _apply_outcome(self, unit: Unit, req: Any, members: dict[str, str], out: RequestOutcome,
                       stats: CycleStats, preempt: bool | Placer = True) -> None:
        """Bind what ``out`` placed, or report and park the unit. ``preempt``: whether a unit that
        did not fit may preempt, or the rule its preemption plan places it by (a partly bound
        gang's pending members go next to its bound ones)."""
        stats.decided += 1
        self.metrics.solver_results.labels(status=out.report.status.value).inc()
        is_gang = isinstance(req, GangRequest)
        if not out.placed:
            stats.unschedulable += 1
            keys = list(members.values())
            self.metrics.schedule_attempts.labels(result="unschedulable", profile=self.profile).inc(len(keys))
            if is_gang:
                self.metrics.gang_attempts.labels(result="unschedulable").inc()
            why = out.reason or "no placement"
            for k in keys:
                ref = self._ref(k)
                self.reporter.event(ref, "Warning", "FailedScheduling", "Scheduling", why)
                self.reporter.unschedulable(ref, "Unschedulable", why)
            self.metrics.attempt_duration.labels(result="unschedulable", profile=self.profile).observe(
                self.clock() - unit.attempt_started)
            log.info("unschedulable: %s", why, extra={"gang" if is_gang else "pod": req.name})
            nom = self._nominations.get(unit.key)
            if nom is not None and not any(k in self.cache.bound for k in nom.victims):
                # its victims are gone and it still does not fit: the room went to a unit of
                # higher priority; plan again rather than wait out the nomination
                self._end_nomination(unit.key, "its victims are gone but it still does not fit")
                nom = None
            if self.config.preemption and nom is None and preempt is not False:
                # once the whole batch is assumed
                self._to_preempt.append((unit, req, members, None if preempt is True else preempt))
            self._park(unit, unschedulable=True)
            return
        self._nominations.pop(unit.key, None)
        gang = req.name if is_gang else None
        jobs: list[BindJob] = []
        try:
            for p in out.placements:
                key = members[p.pod] if is_gang else unit.key
                self.cache.assume(key, p, gang)
                jobs.append(BindJob(key, self._ref(key), p, workloads.assignment_annotations(p), gang, unit))
        except (LedgerError, KeyError) as exc:
            for job in jobs:
                self.cache.forget(job.key)
            log.error("could not assume placement: %s", exc, extra={"pod": unit.key})
            self._scheduler_error(unit, f"internal error while reserving the placement: {exc}")
            stats.errors += 1
            return
        stats.placed += len(jobs)
        if is_gang:
            self.metrics.gang_attempts.labels(result="scheduled").inc()
            self._gang_binds[req.name] = GangBinding(req.name, unit, {j.key for j in jobs}, started=unit.added_at)
        for job in jobs:
            self._inflight[job.key] = job
            self._submit(job)

    def _scheduler_error(self, unit: Unit, why: str) -> None:
        self.metrics.schedule_attempts.labels(result="error", profile=self.profile).inc()
        for k in self._unit_pods(unit):
            self.reporter.event(self._ref(k), "Warning", "FailedScheduling", "Scheduling", why)
            self.reporter.unschedulable(self._ref(k), "SchedulerError", why)
        self.queue.requeue(unit)
        self.queue.backoff(unit.key)

    def _unit_pods(self, unit: Unit) -> list[str]:
        if unit.is_gang:
            return sorted(self._members.get(unit.key.removeprefix("gang:"), ()))
        return [unit.key]

    def _report_invalid(self, exc: workloads.WorkloadError, keys: list[str], reason: str = "FailedScheduling",
                        type_: str = "Warning") -> None:
        """A pod (or its gang's object) cannot be read: event on the pod it names, the pod stays pending."""
        targets = [exc.pod] if exc.pod in self.cache.pending else keys
        note = str(exc)
        for k in targets:
            self._invalid[k] = note
            self.reporter.event(self._ref(k), type_, reason, "Scheduling", note)
            if type_ == "Warning":
                self.reporter.unschedulable(self._ref(k), "Unschedulable", note)
        log.info("cannot place: %s", note, extra={"pod": targets[0] if targets else None})

    def _ref(self, key: str) -> ObjectRef:
        pod = self.cache.pending.get(key)
        if pod is not None:
            return ObjectRef.of(pod)
        ns, _, name = key.partition("/")
        rec = self.cache.bound.get(key)
        return ObjectRef.pod(ns, name, rec.uid if rec else "")

    # --- preemption ------------------------------------------------------------------------------------

    def _snapshot(self, batch: set[str], priority: int | None = None) -> Snapshot | None:
        """The cache's snapshot with the places of nominated units outside ``batch`` taken, those
        of at least ``priority`` when given (kube-scheduler: a pod respects nominated pods of its
        own priority or higher). A GPU may go below zero where a victim has not gone yet: the
        filters treat it as not free."""
        snap = self.cache.snapshot()
        if snap is None or not self._nominations:
            return snap
        arrays = snap.arrays
        for unit_key, nom in self._nominations.items():
            if unit_key in batch or (priority is not None and nom.priority < priority):
                continue
            for p in nom.placements:
                idx = arrays.node_index.get(p.node)
                if idx is None:
                    continue
                gpus = tuple(g for g in p.gpus if g < int(arrays.gpu_count[idx]))
                snap.apply(idx, gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, extended=p.extended)
        return snap

    def _expire_nominations(self) -> None:
        """Nominations older than ``preemption_timeout_s``, or on a node that failed, end: the
        unit may preempt again."""
        now = self.clock()
        failed = self.failures.failed
        for unit_key, nom in list(self._nominations.items()):
            lost = next((p.node for p in nom.placements if p.node in failed), None)
            if lost is not None:
                self._end_nomination(unit_key, f"its nominated node {lost} failed")
            elif now - nom.since >= self.config.preemption_timeout_s:
                self._end_nomination(unit_key, "it expired")

    def _end_nomination(self, unit_key: str, why: str) -> None:
        """Forget the unit's nomination and clear ``status.nominatedNodeName`` on its pending pods
        (a stale one misleads autoscalers, which count nominated pods as placed)."""
        nom = self._nominations.pop(unit_key, None)
        if nom is None:
            return
        log.info("nomination ended: %s", why, extra={"pod": unit_key})
        for k in sorted(nom.pods):
            if k in self.cache.pending:
                self.reporter.nominate(self._ref(k), None)
        self.queue.activate(unit_key)

    def _holders(self) -> list[Holder]:
        """Every allocation of the ledger with its pod's priority; only bound pods that are not
        being deleted (by us or anyone) are evictable."""
        ledger = self.cache.ledger
        if ledger is None:
            return []
        out = []
        for a in ledger.allocations():
            rec = self.cache.bound.get(a.key)
            if ledger.state(a.key) == AllocState.BOUND and rec is not None:
                ours = a.key in self._preempting or self.failures.being_deleted(self.cache, a.key)  # deleting it
                out.append(Holder(a, rec.priority, not rec.terminating and not ours, dict(rec.labels)))
            else:
                pod = self.cache.pending.get(a.key)
                out.append(Holder(a, pod_priority(pod) if pod is not None else 0, False))
        return out

    def _preempt_all(self, todo: list[tuple[Unit, Any, dict[str, str], Placer | None]]) -> None:
        """Try preemption for this cycle's units that did not fit. The allocations are read once
        (again only after a plan was carried out), and a unit whose priority is not above the
        lowest evictable pod's is skipped without planning: a backlog of ordinary pods costs
        nothing here."""
        holders: list[Holder] | None = None
        lowest: int | None = None
        for unit, req, members, placer in todo:
            if holders is None:
                holders = self._holders()
                lowest = min((h.priority for h in holders if h.evictable), default=None)
            if lowest is None or getattr(req, "priority", 0) <= lowest:
                continue
            if self._preempt(unit, req, members, holders, placer):
                holders = None

    def _preempt(self, unit: Unit, req: Any, members: dict[str, str], holders: list[Holder],
                 placer: Placer | None = None) -> bool:
        """A unit did not fit: plan a preemption and carry it out (True when done). Never raises
        (a failure: the unit parks as before)."""
        if not isinstance(req, PodRequest | GangRequest):
            return False
        try:
            self.metrics.preemption_attempts.inc()
            pods = [self.cache.pending.get(k) or {} for k in members.values()]
            never = any((p.get("spec") or {}).get("preemptionPolicy") == NEVER for p in pods)
            snap = self._snapshot({unit.key}, _priority_of(req))
            if snap is None:
                return False
            plan = plan_preemption(self.engine, snap, holders, req,
                                   preemption_policy=NEVER if never else "PreemptLowerPriority",
                                   budgets=self.cache.budget_list(), ctx=self._context(), placer=placer)
            if plan is None:
                return False
            self._carry_out(unit, req, members, plan)
            return True
        except Exception:  # noqa: BLE001 - preemption is an extra: a bug in it parks the unit as before
            log.exception("preemption failed", extra={"pod": unit.key})
            return False

    def _carry_out(self, unit: Unit, req: Any, members: dict[str, str], plan: PreemptionPlan) -> None:
        """Nominate the preemptor (and tell it), then delete the victims with an event each (a
        victim whose deletion is refused ends the nomination, so it is recorded first)."""
        is_gang = isinstance(req, GangRequest)
        who = f"gang {req.name}" if is_gang else unit.key
        nodes = sorted({node for _, node in plan.victim_nodes})
        count = len(plan.victim_nodes)
        note = (f"Preempting {count} pod(s) of lower priority (at most {plan.highest_victim_priority}) "
                f"on node(s) {', '.join(nodes)}")
        if plan.pdb_violations:
            note += f"; {plan.pdb_violations} of them break(s) a PodDisruptionBudget"
        keys = []
        for p in plan.placements:
            key = members[p.pod] if is_gang else unit.key
            keys.append(key)
            ref = self._ref(key)
            self.reporter.event(ref, "Normal", "Preempting", "Preempting", note, dedup=False)
            self.reporter.nominate(ref, p.node)
        self._nominations[unit.key] = Nomination(unit.key, plan.placements, frozenset(keys), self.clock(),
                                                 plan.priority, frozenset(plan.victim_pods))
        self.metrics.preemption_victims.observe(count)
        log.info("preempting %d pod(s) on %s (%d PodDisruptionBudget violation(s))", count, ", ".join(nodes),
                 plan.pdb_violations, extra={"gang" if is_gang else "pod": req.name, "count": count})
        for key, node in plan.victim_nodes:
            ref = self._ref(key)
            self._preempting.add(key)
            self.reporter.event(ref, "Normal", "Preempted", "Preempting", f"Preempted by {who} on node {node}",
                                dedup=False)
            if self._pool is None:
                self._handle(("preempted", key, self._evict(ref)))
            else:
                self._pool.submit(lambda key=key, ref=ref: self.inbox.put(("preempted", key, self._evict(ref))))

    def _on_victim_delete(self, key: str, err: KubeApiError | None) -> None:
        if err is None or err.is_not_found:
            return
        self._preempting.discard(key)
        if err.is_conflict:  # the uid precondition: that victim is gone (a new pod has its name); its room comes
            log.info("preemption victim already gone (re-created under its name)", extra={"pod": key})
            return
        self._api_error("delete", err)
        log.error("could not delete a preemption victim: %s", err, extra={"pod": key})
        for unit_key, nom in list(self._nominations.items()):
            if key in nom.victims:  # the room it waits for is not coming: plan again after its backoff
                self._end_nomination(unit_key, f"its victim {key} could not be deleted ({err})")

    # --- binding ---------------------------------------------------------------------------------------

    def _submit(self, job: BindJob) -> None:
        if self._pool is None:
            self._handle(("bound", self._bind(job)))
        else:
            self._pool.submit(self._bind_async, job)

    def _bind_async(self, job: BindJob) -> None:
        self.inbox.put(("bound", self._bind(job)))

    def _bind(self, job: BindJob) -> BindResult:
        """Worker thread: annotations (patch mode), then pods/binding. Checks leadership first."""
        t0 = time.perf_counter()
        if not self.is_leader():
            return BindResult(job, NOT_LEADER, 0.0)
        try:
            if self.config.assignment_write == "patch":
                self.binder.annotate(job.ref, job.annotations)
                if not self.is_leader():
                    return BindResult(job, NOT_LEADER, time.perf_counter() - t0)
                self.binder.bind(job.ref, job.placement.node, {})
            else:
                self.binder.bind(job.ref, job.placement.node, job.annotations)
        except KubeApiError as exc:
            return BindResult(job, exc, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a transport bug is a failed bind, not a dead worker
            return BindResult(job, KubeApiError(0, type(exc).__name__, str(exc), operation="bind"),
                              time.perf_counter() - t0)
        return BindResult(job, None, time.perf_counter() - t0)

    def _on_bind_result(self, res: BindResult) -> None:
        job = res.job
        self._inflight.pop(job.key, None)
        self.metrics.bind_duration.observe(res.duration_s)
        g = self._gang_binds.get(job.gang) if job.gang else None
        if g is not None:
            g.pending.discard(job.key)
        if res.error is None:
            self.metrics.binds.labels(result="ok").inc()
            if g is not None and g.failed:
                self._rollback_member(job.key, g)
            else:
                self._bound_ok(job)
                if g is not None:
                    g.bound.add(job.key)
        else:
            self.metrics.binds.labels(result="error").inc()
            self._api_error("bind", res.error)
            self.cache.forget(job.key)
            log.warning("bind failed: %s", res.error, extra={"pod": job.key, "gang": job.gang,
                                                             "node": job.placement.node})
            if g is not None:
                self._gang_member_failed(g, job, res.error)
            elif not self._successor_queued(job):
                self._single_failed(job, res.error)
        if g is not None and not g.pending:
            self._gang_done(g)

    def _bound_ok(self, job: BindJob) -> None:
        if job.gang is None:
            self.metrics.schedule_attempts.labels(result="scheduled", profile=self.profile).inc()
            self.metrics.attempt_duration.labels(result="scheduled", profile=self.profile).observe(
                self.clock() - job.unit.attempt_started)
        gpus = ",".join(map(str, job.placement.gpus)) or "none"
        log.debug("bound", extra={"pod": job.key, "node": job.placement.node, "gpus": gpus, "gang": job.gang})
        if self.config.scheduled_events:
            self.reporter.event(job.ref, "Normal", "Scheduled", "Binding",
                                f"Successfully assigned {job.key} to {job.placement.node} (GPUs {gpus})",
                                dedup=False)
        if self.on_bound is not None:
            self.on_bound(job.key, job.placement.node)

    def _successor_queued(self, job: BindJob) -> bool:
        """The pod ``job`` was binding was deleted and re-created meanwhile (its bind failed for
        that): the new pod, already queued, is tried now. False when there is no such pod."""
        pod = self.cache.pending.get(job.key)
        uid = field_at(pod, "metadata", "uid")
        if pod is None or not uid or not job.ref.uid or uid == job.ref.uid:
            return False
        self.metrics.schedule_attempts.labels(result="error", profile=self.profile).inc()
        self._enqueue(job.key, pod, changed=True)  # it may have been popped and dropped while the bind ran
        return True

    def _single_failed(self, job: BindJob, err: KubeApiError) -> None:
        self.metrics.schedule_attempts.labels(result="error", profile=self.profile).inc()
        if err.is_not_found or (err.is_conflict and job.key not in self.cache.pending):
            return  # the pod is gone or already bound: nothing left to place
        if err.reason == "NotLeader":
            self.queue.requeue(job.unit)
            self.queue.activate(job.key)
            return
        note = f"Binding rejected: {err}"
        self.reporter.event(job.ref, "Warning", "FailedScheduling", "Binding", note)
        self.reporter.unschedulable(job.ref, "SchedulerError", note)
        if job.key in self.cache.pending:
            self.queue.requeue(job.unit)
            self.queue.backoff(job.key)

    def _gang_member_failed(self, g: GangBinding, job: BindJob, err: KubeApiError) -> None:
        if g.failed:
            return
        g.failed = f"member {job.key} could not be bound to {job.placement.node}: {err}"
        self.metrics.gang_rollbacks.inc()
        log.warning("rolling back gang: %s", g.failed, extra={"gang": g.gang})
        if err.reason != "NotLeader":
            note = f"Binding rejected: {err}; gang {g.gang} is rolled back"
            self.reporter.event(job.ref, "Warning", "FailedScheduling", "Binding", note)
            self.reporter.unschedulable(job.ref, "SchedulerError", note)
        for key in sorted(g.bound):
            self._rollback_member(key, g)

    def _rollback_member(self, key: str, g: GangBinding) -> None:
        """Delete a bound member of a failed gang (its controller re-creates it)."""
        note = (f"Deleted by toposched: gang {g.gang} could not be bound as a whole ({g.failed}); "
                "no gang is left partly bound")
        self.failures.delete(self, key, f"gang {g.gang} is rolled back", event=("GangRollback", note))

    def _evict(self, ref: ObjectRef) -> KubeApiError | None:
        """One preemption victim: the ``DisruptionTarget`` condition kube-scheduler writes (so a
        Job's podFailurePolicy can tell preemption from failure), best effort, then the delete."""
        condition = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                     "message": f"{self.config.scheduler_name}: preempting to accommodate a higher priority pod",
                     "lastTransitionTime": self.reporter.wall()}
        try:
            self.binder.set_condition(ref, condition)
        except KubeApiError as exc:
            if exc.is_not_found:
                return None  # already gone
            log.warning("could not mark a preemption victim: %s", exc, extra={"pod": ref.key})
        return self._delete(ref)

    def _delete(self, ref: ObjectRef, attempts: int = 3) -> KubeApiError | None:
        err: KubeApiError | None = None
        for i in range(attempts):
            try:
                self.binder.delete(ref)
                return None
            except KubeApiError as exc:
                err = exc
                if not exc.is_retriable:
                    break
                time.sleep(0.2 * (i + 1))
        return err

    def _on_delete_result(self, key: str, err: KubeApiError | None) -> None:
        """A deletion toposched decided (a lost pod, a restarted or rolled-back gang's member)
        came back: a refusal is retried by the failure handler until the pod is gone."""
        if err is not None:
            self._api_error("delete", err)
            self.failures.deletion_failed(self, key, err)

    def _gang_done(self, g: GangBinding) -> None:
        self._gang_binds.pop(g.gang, None)
        unit = g.unit
        if g.failed:
            self.metrics.schedule_attempts.labels(result="error", profile=self.profile).inc()
            self.metrics.gang_attempts.labels(result="rolled_back").inc()
            if self._members.get(g.gang):
                unit.added_at = self.clock()  # a new run: its wait for re-created members starts now
                self.queue.requeue(unit)
                self.queue.backoff(unit.key)
            return
        now = self.clock()
        self.metrics.gang_latency.observe(now - g.started)
        self.metrics.schedule_attempts.labels(result="scheduled", profile=self.profile).inc(len(g.bound))
        self.metrics.attempt_duration.labels(result="scheduled", profile=self.profile).observe(
            now - unit.attempt_started)
        log.info("gang bound", extra={"gang": g.gang, "count": len(g.bound)})
        if any(self._placeable(k) for k in self._members.get(g.gang, ())):
            # an elastic gang started with fewer: the rest wait as a new gang
            self.queue.add(unit.key, is_gang=True, priority=unit.priority)

    # --- observability ---------------------------------------------------------------------------------

    def _api_error(self, operation: str, err: KubeApiError) -> None:
        self.metrics.api_errors.labels(operation=operation, code=str(err.status)).inc()

    def _gauges(self, leading: bool) -> None:
        now = self.clock()
        if now - self._last_gauges < 1.0:
            return
        self._last_gauges = now
        self.metrics.leader.set(1 if leading else 0)
        counts = {"active": 0, "backoff": 0, "unschedulable": 0}
        for unit in self.queue.units.values():
            n = len(self._members.get(unit.key.removeprefix("gang:"), ())) if unit.is_gang else 1
            state = "unschedulable" if unit.state in (UnitState.UNSCHEDULABLE, UnitState.WAITING) else unit.state.value
            counts[state] += n
        for q, n in counts.items():
            self.metrics.pending_pods.labels(queue=q).set(n)
        self.metrics.pending_pods.labels(queue="gated").set(len(self.cache.gated))
        self.metrics.mix_arrivals.set(self.arrivals.observed)
        mix = self.arrivals.mix
        self.metrics.mix_kinds.set(0 if mix is None else len(mix.typical))
        for model, (used, free, frag) in self.cache.gpu_stats().items():
            self.metrics.gpus.labels(model=model, state="allocated").set(used)
            self.metrics.gpus.labels(model=model, state="free").set(free)
            self.metrics.fragmentation.labels(model=model).set(frag)

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing queued that could run now."""
        return not self._inflight and not self._gang_binds and self.inbox.empty() and not any(
            u.state == UnitState.ACTIVE for u in self.queue.units.values())


def _priority_of(req: Any) -> int:
    return int(getattr(req, "priority", 0) or 0)


def _request_name(req: Any) -> str:
    return req.name if isinstance(req, PodRequest | GangRequest) else str(getattr(req, "owner", "request"))


def _what_placement_reads(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = pod.get("metadata") or {}
    return (meta.get("uid"), meta.get("labels"), meta.get("annotations"), meta.get("ownerReferences"),
            pod.get("spec"))
