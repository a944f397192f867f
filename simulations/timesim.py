"""Time-based simulator: training gangs and inference replicas arrive, run, fail and leave.

Every placement decision is the engine's (``scheduler.engine.place``; repairs
``scheduler.repair.repair_gang``); every allocation goes through a ``Ledger``. The
event loop is ``simulations.core.EventLoop`` (seeded, simulated clock). Phases of a run:

1. **Workload.** ``simulations.workload.generate`` draws jobs, services and node
   failures from the workload file and the seed (the same for every policy).
2. **Events** (same-time order: failures and detections, departures, arrivals, HPA,
   timeouts, then one scheduling cycle):

   - job arrival: its pods join the queue;
   - scheduling cycle (after any change): pending units in order (priority, then
     arrival); each is tried once per cycle; a unit shape that did not fit is not tried
     again until capacity is freed (``free_epoch``);
   - job completion: its pods leave;
   - node failure: running jobs on the node stop at once; after ``detection_s`` the
     node leaves the pool and its pods count as lost; after ``recreate_s`` more the job
     controller's replacement pods are pending and the policy's failure handling runs;
   - node repair: the node returns to the pool (nothing moves back);
   - HPA sync: each service's desired replicas from its demand curve (scale-down
     stabilised over a window); replicas added as pending pods or removed;
   - rendezvous timeout (pods placed one by one only): members that waited too long for
     their gang give up; the controller recreates all of them.
   - preemption (``SimConfig.preemption``, every policy): a unit that does not fit asks
     ``scheduler.preemption.plan_preemption`` for lower-priority victims; they are evicted
     (a running job is interrupted as by a failure) and the unit is placed at once where
     the plan put it, or, with ``preemption_grace_s``, when the victims' pods have
     terminated (see ``_preempt`` and ``_terminating``).
3. **Run time.** A job's step time grows with the communication cost of its placement
   (``simulations.comm_model``); an interruption loses the work since the last
   checkpoint and a restart pays ``restart_overhead_s``.
4. **Metrics.** GPU allocation (a step function), useful GPU time (progress of running
   jobs and serving replicas), start-up waits, JCT, placement communication costs,
   interruptions and times to repair (``RunResult.summary``).

Policies (``POLICIES``, in ``simulations.timesim_policies``; results in
``simulations.timesim_metrics``) are engine configurations plus how gangs are placed and how
failures are handled:

==============  ==========================================  =======================  ====================
policy          pod scoring (engine plugins)                gang placement           on node failure
==============  ==========================================  =======================  ====================
default         least-allocated (spread), replica spread     none: pods one by one    recreate lost pods
volcano         binpack, replica spread                      all-or-nothing pods      restart whole gang
topo-greedy     binpack + NVLink island (``binpack``)        greedy tree descent      restart whole gang
toposched       the ``toposched`` profile (fragmentation..)  tree descent (+CP-SAT)   repair, else restart
==============  ==========================================  =======================  ====================

With pods placed one by one a gang may hold part of its GPUs while waiting for the
rest; two such gangs can deadlock. That is modelled, not avoided: members that waited
``rendezvous_timeout_s`` give up and are recreated (pods restarted by the job controller).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from models.placement import Placement
from models.requests import GPU_MILLI, GangRequest, GangRole, PodRequest
from models.topology import TopologyArrays
from plugins.base import Context
from scheduler.engine import Engine, place
from scheduler.ledger import Allocation, Ledger
from scheduler.preemption import Holder, PreemptionPlan, plan_preemption
from scheduler.repair import plan_repair
from scheduler.snapshot import PodShape
from scheduler.workload_mix import WorkloadMix
from scheduler.workloads.disruption import Budget, LabelSelector, Requirement
from simulations import comm_model
from simulations.core import EventLoop
from simulations.timesim_metrics import RunResult, Segment
from simulations.timesim_policies import POLICIES, Policy, resolve_policies
from simulations.workload import Generated, Job, Service, WorkloadFile

__all__ = ["POLICIES", "Policy", "RunResult", "Segment", "SimConfig", "TimeSim", "resolve_policies", "simulate"]

# same-time order of events (lower first)
P_FAIL, P_DETECT, P_DONE, P_RECREATE, P_ARRIVE, P_HPA, P_TIMEOUT, P_CYCLE = range(8)


@dataclass(frozen=True)
class SimConfig:
    """How long, which seed, what to leave out of the metrics."""

    hours: float
    seed: int = 0
    warmup_hours: float = 0.0
    gang_solver: str | None = None  # replaces the solver of policies with ``solver_option`` (toposched)
    gang_time_limit_s: float = 0.2
    check_every: int = 0  # run ledger.check_invariants() every N cycles (0: at the end only)
    preemption: bool = False  # a unit that does not fit may evict lower-priority jobs and replicas
    # victims hold their resources this long after the eviction (terminationGracePeriodSeconds);
    # the preemptor is nominated meanwhile and placed when they are gone (0: at once)
    preemption_grace_s: float = 0.0


class JobState(StrEnum):
    QUEUED = "queued"  # waiting; no member holds resources
    STARTING = "starting"  # pods one by one: some members placed, not all
    RUNNING = "running"
    BROKEN = "broken"  # a node under it died; not yet detected
    REPAIRING = "repairing"  # lost members to be replaced; survivors hold their place
    DONE = "done"


@dataclass
class _Member:
    key: str
    role: GangRole
    created_s: float
    seq: int


@dataclass
class _Job:
    job: Job
    req: GangRequest
    members: dict[str, GangRole]
    seq: int
    state: JobState = JobState.QUEUED
    placed: dict[str, Placement] = field(default_factory=dict)
    pending: dict[str, _Member] = field(default_factory=dict)
    pending_since: float = 0.0  # creation time of the oldest pending member
    pending_roles: dict[str, int] = field(default_factory=dict)  # pending members per role
    work_left_s: float = 0.0
    rate: float = 1.0
    run_t0: float = 0.0  # progress starts (after any restart overhead)
    token: int = 0  # invalidates scheduled completion / timeout events
    first_start_s: float | None = None
    done_s: float | None = None
    interruptions: int = 0
    failed_at: float | None = None
    lost: list[Placement] = field(default_factory=list)
    repair_times: list[float] = field(default_factory=list)
    timeouts: int = 0
    restarted: int = 0  # whole-gang restarts after a failure
    preempted: int = 0  # times evicted by a higher-priority unit

    @property
    def is_single(self) -> bool:
        return len(self.members) == 1


@dataclass
class _Nomination:
    nodes: set[int]  # node indices of the plan's placements
    held: list[str]  # ledger keys of the room held for the preemptor beside its victims'


@dataclass
class _Replica:
    key: str
    service: Service
    created_s: float
    seq: int
    placed: Placement | None = None
    lost_at: float | None = None


# --------------------------------------------------------------------------- the simulator


class TimeSim:
    """One policy over one generated workload. ``run()`` returns a ``RunResult``."""

    def __init__(self, arrays: TopologyArrays, gen: Generated, wl: WorkloadFile, policy: Policy, cfg: SimConfig,
                 progress: Callable[[float], None] | None = None) -> None:
        self.arrays = arrays
        self.gen = gen
        self.wl = wl
        self.policy = policy
        self.cfg = cfg
        self.progress = progress
        solver = cfg.gang_solver if policy.solver_option else None
        self.engine = Engine.from_config(policy.engine_config(cfg.seed, solver, cfg.gang_time_limit_s))
        self.loop = EventLoop(cfg.seed)
        self.ledger = Ledger(arrays)
        self.ctx = Context(mix=_mix(gen), rng=np.random.default_rng(cfg.seed))
        self.hpa_rng = np.random.default_rng([cfg.seed, 1])
        self.horizon = cfg.hours * 3600.0
        self.comm = comm_model.CommParams(wl.comm.gradient_mib, wl.comm.base_latency_us, wl.comm.hop_latency_us)
        self.jobs: dict[str, _Job] = {}
        self.queue: dict[str, _Job] = {}  # jobs with something to place, by name
        self.replicas: dict[str, _Replica] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.dead: set[int] = set()  # nodes that died, detected or not
        self.failed: set[int] = set()  # nodes the scheduler knows as failed
        self.free_epoch = 0
        self.memo: dict[tuple, int] = {}
        self.seq = 0
        self.cycle_pending = False
        self.cycles = 0
        self.alloc_gpus = 0
        self.timeline: list[tuple[float, int, int]] = [(0.0, 0, arrays.total_gpus)]
        self.segments: list[Segment] = []
        self.lost_gpu_s: list[tuple[float, float, float]] = []  # (t, GPU-s lost, since)
        self.placements: list[dict] = []
        self.replica_repairs: list[tuple[float, float]] = []
        self.counters = {"cycles": 0, "decisions": 0, "repairs": 0, "repairs_replaced": 0, "repairs_failed": 0, "gang_restarts": 0,
                         "rendezvous_timeouts": 0, "node_failures": 0, "pods_lost": 0}
        self.recovery = wl.recovery
        self.evict_epoch = 0  # bumped when a job starts: its allocations become evictable
        self.preempt_memo: dict[tuple, tuple[int, int]] = {}
        # nothing is below a unit at the workload's lowest priority: it never preempts
        self.lowest_priority = min([j.priority for j in gen.jobs] + [s.priority for s in gen.services], default=0)
        self.replica_waits: list[tuple[float, float]] = []  # (t bound, pending since creation or eviction)
        self.preemption: dict[str, Any] = {"plans": 0, "events": [], "lost_gpu_s": []}
        # preemptors waiting for their victims to terminate, by request name: the nodes of the plan
        # and the ledger keys of the room held for them
        self.nominated: dict[str, _Nomination] = {}
        self.terminating: dict[str, int] = {}  # preemption victims' pods in their grace period: key -> node
        self.terminations = 0  # victims' pods that terminated or terminate (numbers their ledger keys)

    # ----------------------------------------------------------------- bookkeeping

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _record(self) -> None:
        healthy = self.arrays.total_gpus - int(self.arrays.gpu_count[list(self.failed)].sum()) if self.failed \
            else self.arrays.total_gpus
        row = (self.loop.now, self.alloc_gpus, healthy)
        if self.timeline and self.timeline[-1][0] == row[0]:
            self.timeline[-1] = row
        else:
            self.timeline.append(row)

    def _assume(self, p: Placement, gang: str | None = None, owner: str | None = None) -> None:
        self.ledger.assume(Allocation(p.pod, p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib,
                                      gang=gang, owner=owner, extended=p.extended))
        self.ledger.confirm(p.pod)
        self.alloc_gpus += _whole(p)

    def _release(self, p: Placement) -> None:
        self.ledger.release(p.pod)
        self.alloc_gpus -= _whole(p)
        self.free_epoch += 1

    def _add_pending(self, js: _Job, key: str) -> None:
        """A (new or recreated) member pod waits to be placed."""
        now = self.loop.now
        js.pending_since = now if not js.pending else min(js.pending_since, now)
        if key not in js.pending:
            role = js.members[key].name
            js.pending_roles[role] = js.pending_roles.get(role, 0) + 1
        js.pending[key] = _Member(key, js.members[key], now, self._next_seq())

    def _placed(self, js: _Job, key: str) -> None:
        """A pending member got its place."""
        m = js.pending.pop(key)
        js.pending_roles[m.role.name] -= 1

    def _kick(self) -> None:
        """Run one scheduling cycle after the events of this instant."""
        if not self.cycle_pending:
            self.cycle_pending = True
            self.loop.schedule(self.loop.now, self._cycle, P_CYCLE)

    # ----------------------------------------------------------------- setup and run

    def run(self) -> RunResult:
        t0 = time.perf_counter()
        for j in self.gen.jobs:
            self.loop.schedule(j.arrival_s, self._arrive(j), P_ARRIVE)
        for f in self.gen.failures:
            if f.node in self.arrays.node_index:
                self.loop.schedule(f.at_s, self._fail(self.arrays.node_index[f.node], f.repair_s), P_FAIL)
        inf = self.wl.inference
        if inf is not None and self.gen.services:
            for s in self.gen.services:
                self.services[s.name] = {"service": s, "history": [], "next": 0}
            self.loop.schedule(0.0, self._hpa, P_HPA)
        if self.progress is not None:
            step = max(self.horizon / 200.0, 1.0)
            t = step
            while t < self.horizon:
                self.loop.schedule(t, lambda lp: self.progress(lp.now), P_CYCLE + 1)
                t += step
        self.loop.run(until=self.horizon)
        self._finish()
        self.ledger.check_invariants()
        return self._result(time.perf_counter() - t0)

    def _finish(self) -> None:
        """Close the segments of work still running at the horizon."""
        now = self.horizon
        for js in self.jobs.values():
            if js.state == JobState.RUNNING and now > js.run_t0:
                self.segments.append(Segment(js.run_t0, now, js.job.gpus * js.rate))
        for r in self.replicas.values():
            if r.placed is not None:
                self.segments.append(Segment(r.created_s, now, float(r.service.gpus_per_replica)))
        self._record()

    # ----------------------------------------------------------------- jobs

    def _request(self, job: Job) -> GangRequest:
        roles = []
        if job.launcher:
            roles.append(GangRole(name="launcher", count=1, cpu_milli=job.launcher_cpu_milli,
                                  memory_mib=job.launcher_memory_mib))
        per = job.gpus_per_worker
        roles.append(GangRole(name="worker", count=job.workers, gpus=per, cpu_milli=job.cpu_milli_per_gpu * max(per, 1),
                              memory_mib=job.memory_mib_per_gpu * max(per, 1)))
        hints = self.policy.topology_hints
        return GangRequest(name=job.name, roles=tuple(roles),
                           preferred_level=job.preferred_level if hints else None,
                           required_level=job.required_level if hints else None,
                           rail_aligned=job.rail_aligned and hints and job.workers > 1, priority=job.priority)

    def _arrive(self, job: Job) -> Callable[[EventLoop], None]:
        def fire(loop: EventLoop) -> None:
            req = self._request(job)
            members = dict(req.member_names())
            js = _Job(job, req, members, self._next_seq(), work_left_s=job.duration_s)
            for key in members:
                self._add_pending(js, key)
            self.jobs[job.name] = js
            self.queue[job.name] = js
            self._kick()
        return fire

    def _start(self, js: _Job) -> None:
        """All members placed: the job runs (or is broken at once if a member sits on a dead node)."""
        now = self.loop.now
        first = js.first_start_s is None
        if first:
            js.first_start_s = now
        on_dead = any(p.node_index in self.dead for p in js.placed.values())
        if js.failed_at is not None and not on_dead:
            js.repair_times.append(now - js.failed_at)
            js.failed_at = None
        self.queue.pop(js.job.name, None)
        gpus_by_node: dict[int, list[int]] = {}
        for p in js.placed.values():
            if p.gpus:
                gpus_by_node.setdefault(p.node_index, []).extend(p.gpus)
        job = js.job
        rate = 1.0
        if job.gpus > 1:
            cost = comm_model.comm_cost(self.arrays, gpus_by_node, self.comm)
            ideal = comm_model.ideal_allreduce_s(self.arrays, job.workers, job.gpus_per_worker, self.comm)
            slow = comm_model.slowdown(cost.allreduce_s, ideal, job.comm_share)
            rate = 1.0 / max(slow, 1e-9)
            self.placements.append({"t": now, "job": job.name, "gpus": job.gpus, "slowdown": slow,
                                    "repair": not first, **cost.to_json()})
        js.rate = rate
        js.run_t0 = now + (0.0 if first and js.interruptions == 0 else self.recovery.restart_overhead_s)
        js.state = JobState.RUNNING
        self.evict_epoch += 1
        js.token += 1
        if on_dead:  # placed on a node that died before the scheduler noticed: broken at once
            if js.failed_at is None:
                js.failed_at = now
            self._interrupt(js, now)
            return
        token = js.token
        end = js.run_t0 + js.work_left_s / rate
        self.loop.schedule(end, lambda lp: self._complete(js, token), P_DONE)

    def _complete(self, js: _Job, token: int) -> None:
        if token != js.token or js.state != JobState.RUNNING:
            return
        now = self.loop.now
        self.segments.append(Segment(js.run_t0, now, js.job.gpus * js.rate))
        js.work_left_s = 0.0
        js.state = JobState.DONE
        js.done_s = now
        for p in list(js.placed.values()):
            self._release(p)
        js.placed.clear()
        self._record()
        self._kick()

    def _interrupt(self, js: _Job, t: float) -> None:
        """A running job stops at ``t``: keep the work up to its last checkpoint."""
        elapsed = max(0.0, t - js.run_t0)
        done = min(elapsed * js.rate, js.work_left_s)
        interval = self.recovery.checkpoint_interval_s
        kept = min(math.floor(elapsed / interval) * interval * js.rate, done)
        if elapsed > 0:
            self.segments.append(Segment(js.run_t0, t, js.job.gpus * js.rate))
        # the work lost was done between the last checkpoint and t
        self.lost_gpu_s.append((t, (done - kept) * js.job.gpus, t - (done - kept) / js.rate if js.rate > 0 else t))
        js.work_left_s -= kept
        js.interruptions += 1
        js.token += 1
        js.state = JobState.BROKEN

    # ----------------------------------------------------------------- failures

    def _fail(self, node: int, repair_s: float | None) -> Callable[[EventLoop], None]:
        def fire(loop: EventLoop) -> None:
            if node in self.dead:
                return
            self.dead.add(node)
            self.counters["node_failures"] += 1
            now = loop.now
            for js in self.jobs.values():
                if any(p.node_index == node for p in js.placed.values()):
                    if js.state == JobState.RUNNING:
                        js.failed_at = now
                        self._interrupt(js, now)
                    elif js.failed_at is None and js.state != JobState.DONE:
                        js.failed_at = now
            for r in self.replicas.values():
                if r.placed is not None and r.placed.node_index == node:
                    r.lost_at = now
            detect = self.wl.failures.detection_s
            loop.schedule(now + detect, lambda lp: self._detect(node), P_DETECT)
            if repair_s is not None:
                loop.schedule(now + detect + repair_s, lambda lp: self._recover(node), P_FAIL)
        return fire

    def _detect(self, node: int) -> None:
        """The scheduler sees the node failed: its GPUs leave the pool, its pods are lost."""
        now = self.loop.now
        self.failed.add(node)
        self.ledger.set_failed(node, True)
        for request in [r for r, nom in self.nominated.items() if node in nom.nodes]:
            # its victims there never finish terminating: it plans again at once, as live
            self._end_nomination(request)
            self._kick()
        for k in [k for k, n in self.terminating.items() if n == node]:
            self._terminated(k)  # lost with the node, like the pods running there
        recreate = self.wl.failures.recreate_s
        for js in list(self.jobs.values()):
            lost = [p for p in js.placed.values() if p.node_index == node]
            if not lost:
                continue
            for p in lost:
                self._release(p)
                del js.placed[p.pod]
                js.lost.append(p)
                self.counters["pods_lost"] += 1
            self.loop.schedule(now + recreate, lambda lp, js=js: self._recreated(js), P_RECREATE)
        for r in list(self.replicas.values()):
            if r.placed is not None and r.placed.node_index == node:
                lost_at = r.lost_at if r.lost_at is not None else now
                self.segments.append(Segment(r.created_s, lost_at, float(r.service.gpus_per_replica)))
                self._release(r.placed)
                self.counters["pods_lost"] += 1
                r.placed = None
                r.lost_at = lost_at
                r.created_s = now + recreate
                self.loop.schedule(now + recreate, lambda lp: self._kick(), P_RECREATE)
        self._record()

    def _recreated(self, js: _Job) -> None:
        """The controller's replacement pods exist: apply the policy's failure handling."""
        if js.state == JobState.DONE or not js.lost:
            return
        lost, js.lost = js.lost, []
        for p in lost:
            self._add_pending(js, p.pod)
        mode = self.policy.on_failure
        if mode == "restart" or (mode == "repair" and not js.placed):
            self._requeue(js, restart=bool(js.placed) or js.first_start_s is not None)
        elif mode == "repair":
            js.state = JobState.REPAIRING
            js.lost = lost  # the repair keeps the lost members' GPU indices (rails)
        else:  # recreate: survivors wait for the new pods; they give up after the rendezvous timeout
            js.state = JobState.STARTING if js.placed else JobState.QUEUED
            if js.placed:
                self._arm_timeout(js)
        self.queue[js.job.name] = js
        self._kick()

    def _requeue(self, js: _Job, restart: bool) -> None:
        """Release every member; the whole gang waits in the queue again."""
        for p in list(js.placed.values()):
            self._release(p)
            self._add_pending(js, p.pod)
        js.placed.clear()
        js.state = JobState.QUEUED
        js.token += 1
        if restart:
            js.restarted += 1
            self.counters["gang_restarts"] += 1
        self.queue[js.job.name] = js
        self._record()

    def _recover(self, node: int) -> None:
        self.dead.discard(node)
        self.failed.discard(node)
        self.ledger.set_failed(node, False)
        self.free_epoch += 1
        self._record()
        self._kick()

    # ----------------------------------------------------------------- rendezvous timeout

    def _arm_timeout(self, js: _Job) -> None:
        token = js.token
        self.loop.schedule(self.loop.now + self.recovery.rendezvous_timeout_s,
                           lambda lp: self._timeout(js, token), P_TIMEOUT)

    def _timeout(self, js: _Job, token: int) -> None:
        if token != js.token or js.state not in (JobState.STARTING, JobState.REPAIRING):
            return
        self.counters["rendezvous_timeouts"] += 1
        js.timeouts += 1
        self._requeue(js, restart=False)
        self._kick()

    # ----------------------------------------------------------------- inference

    def _hpa(self, loop: EventLoop) -> None:
        """One HPA sync: desired replicas per service, scale-down stabilised over the window."""
        inf = self.wl.inference
        assert inf is not None
        now = loop.now
        window = inf.scale_down_stabilization_s
        changed = False
        for name, st in self.services.items():
            svc: Service = st["service"]
            want = svc.demand(now, self.hpa_rng)
            hist = st["history"]
            hist.append((now, want))
            while hist and hist[0][0] < now - window:
                hist.pop(0)
            mine = [r for r in self.replicas.values() if r.service.name == name]
            current = len(mine)
            target = want if want >= current else max(w for _, w in hist)
            if target > current:
                for _ in range(target - current):
                    key = f"{name}/r{st['next']}"
                    st["next"] += 1
                    self.replicas[key] = _Replica(key, svc, now, self._next_seq())
                changed = True
            elif target < current:
                for r in self._scale_down_order(mine)[: current - target]:
                    if r.placed is not None:
                        self.segments.append(Segment(r.created_s, now, float(svc.gpus_per_replica)))
                        self._release(r.placed)
                    del self.replicas[r.key]
                changed = True
        if changed:
            self._record()
            self._kick()
        if now + inf.sync_period_s < self.horizon:
            loop.schedule(now + inf.sync_period_s, self._hpa, P_HPA)

    def _scale_down_order(self, mine: list[_Replica]) -> list[_Replica]:
        """Pending first, then replicas in the most crowded domain, newest first (ReplicaSet ranking)."""
        a = self.arrays

        def crowd(r: _Replica) -> int:
            if r.placed is None:
                return 1 << 30
            lv = r.service.spread_level
            if lv is None or lv not in a.level_names:
                return sum(1 for x in mine if x.placed is not None and x.placed.node_index == r.placed.node_index)
            i = a.level_index(lv)
            d = a.domain[i, r.placed.node_index]
            return sum(1 for x in mine if x.placed is not None and a.domain[i, x.placed.node_index] == d)

        return sorted(mine, key=lambda r: (-crowd(r), -r.seq))

    # ----------------------------------------------------------------- the scheduling cycle

    def _cycle(self, loop: EventLoop) -> None:
        self.cycle_pending = False
        self.cycles += 1
        self.counters["cycles"] += 1
        units: list[tuple[tuple, Any]] = []
        one_by_one = self.policy.gang == "none"
        for js in self.queue.values():
            if js.pending:
                # pods one by one go by pod creation time (recreated pods queue at the back)
                t = js.pending_since if one_by_one else js.job.arrival_s
                units.append(((-js.job.priority, t, js.seq), js))
        for r in self.replicas.values():
            if r.placed is None and r.created_s <= loop.now:
                units.append(((-r.service.priority, r.created_s, r.seq), r))
        units.sort(key=lambda u: u[0])
        tried: set[tuple] = set()
        changed = False
        for _, unit in units:
            if isinstance(unit, _Replica):
                changed |= self._try_replica(unit, tried)
            elif one_by_one:
                changed |= self._try_pods_one_by_one(unit, tried)
            elif unit.state == JobState.REPAIRING:
                changed |= self._try_repair(unit)
            else:
                changed |= self._try_gang(unit, tried)
        if changed:
            self._record()
        if self.cfg.check_every and self.cycles % self.cfg.check_every == 0:
            self.ledger.check_invariants()

    def _free_whole(self) -> int:
        snap = self.ledger.live
        ok = snap.usable()
        return int((snap.gpu_free[ok] == GPU_MILLI).sum())

    def _skip(self, key: tuple, tried: set[tuple]) -> bool:
        """Did this shape fail since capacity was last freed (this cycle or before)?"""
        return key in tried or self.memo.get(key) == self.free_epoch

    def _failed(self, key: tuple, tried: set[tuple]) -> None:
        tried.add(key)
        self.memo[key] = self.free_epoch

    # ----------------------------------------------------------------- preemption

    def _may_preempt(self, key: tuple, priority: int) -> bool:
        """Is preemption on and not known to fail for this shape and priority since the last change?

        A plan that failed fails again until capacity is freed or a job starts (its members
        become evictable); more evictable allocations below the priority cannot help, since
        the planner may take them off again."""
        return (self.cfg.preemption and priority > self.lowest_priority
                and self.preempt_memo.get((key, priority)) != (self.free_epoch, self.evict_epoch))

    def _holders(self) -> tuple[list[Holder], dict[str, _Job | _Replica]]:
        """Every allocation as a preemption candidate, and the job or replica owning each pod.

        Evictable: running jobs (pods one by one: also jobs still starting) and bound
        replicas, unless a node under them died. Jobs starting, repairing or broken are not,
        and neither is the rest of their gang. A job is one gang group (``Allocation.gang``
        is its name) except under pods one by one, where kube-scheduler sees single pods."""
        one_by_one = self.policy.gang == "none"
        holders: list[Holder] = []
        owners: dict[str, _Job | _Replica] = {}
        for js in self.jobs.values():
            if not js.placed:
                continue
            ok = js.failed_at is None and (js.state == JobState.RUNNING
                                           or (one_by_one and js.state == JobState.STARTING))
            for key in js.placed:
                a = self.ledger.get(key)
                assert a is not None
                holders.append(Holder(replace(a, gang=None) if one_by_one else a, js.job.priority, ok))
                owners[key] = js
        for r in self.replicas.values():
            if r.placed is not None:
                a = self.ledger.get(r.placed.pod)
                assert a is not None
                holders.append(Holder(a, r.service.priority, r.lost_at is None, {"app": r.service.name}))
                owners[r.placed.pod] = r
        return holders, owners

    def _place_pod(self, req: PodRequest, key: tuple, tried: set[tuple], skip: bool,
                   preempts: bool = True) -> Placement | None:
        """One pod: the engine's place (unless its shape is known not to fit), else a preemption's."""
        if not skip:
            self.counters["decisions"] += 1
            out = place(self.ledger.live, [req], self.engine, self.ctx).outcomes[0]
            if out.placed:
                return out.placements[0]
            self._failed(key, tried)
        plan = self._preempt(req, key, tried) if preempts else None
        return plan.placements[0] if plan is not None else None

    def _budgets(self) -> list[Budget]:
        """A PodDisruptionBudget per service that has one, as the disruption controller would
        publish it now: ``disruptionsAllowed`` = replicas serving - replicas it wants serving
        (``min_available``, or the replicas the HPA wants less ``max_unavailable``)."""
        out = []
        for name, st in self.services.items():
            svc: Service = st["service"]
            if svc.max_unavailable is None and svc.min_available is None:
                continue
            mine = [r for r in self.replicas.values() if r.service.name == name]
            healthy = sum(r.placed is not None and r.lost_at is None for r in mine)
            want = svc.min_available if svc.min_available is not None else len(mine) - (svc.max_unavailable or 0)
            ns, _, short = name.partition("/")
            out.append(Budget(ns, short, LabelSelector((Requirement("app", "In", frozenset((name,))),)),
                              max(0, healthy - want)))
        return out

    def _preempt(self, req: PodRequest | GangRequest, key: tuple, tried: set[tuple]) -> PreemptionPlan | None:
        """For a unit that did not fit: plan, evict the victims and return the plan (its placements are
        free now), or None (preemption off, nothing below the unit's priority, or no plan)."""
        if req.name in self.nominated or not self._may_preempt(key, req.priority):
            return None  # (a nominated unit waits for its victims to go)
        stamp = (self.free_epoch, self.evict_epoch)
        holders, owners = self._holders()
        plan = None
        if any(h.evictable and h.priority < req.priority for h in holders):
            self.preemption["plans"] += 1
            plan = plan_preemption(self.engine, self.ledger.live, holders, req, ctx=self.ctx,
                                   budgets=self._budgets())
        if plan is None:
            self.preempt_memo[(key, req.priority)] = stamp
            return None
        grace = self.cfg.preemption_grace_s
        held = [self.ledger.get(k) for k in plan.victim_pods] if grace > 0 else []
        self._evict(plan, owners)
        tried.discard(key)  # capacity changed: the shape may fit again without preempting
        self._kick()  # the victims are pending again: another cycle at this instant
        if grace > 0:
            self._terminating(plan, [a for a in held if a is not None], grace)
            return None
        return plan

    def _terminating(self, plan: PreemptionPlan, victims: list[Allocation], grace: float) -> None:
        """The victims' pods terminate for ``grace`` seconds: their resources stay taken (under
        ``<pod>~terminating~<n>``; the job or replica itself is already evicted and pending). The
        preemptor is nominated: it plans no other preemption, and the rest of the room its plan
        uses (free GPUs, CPU and memory next to the victims') is held for it (``<unit>~nominated``),
        so no unit slips in meanwhile. When the pods are gone both are released and a scheduling
        cycle runs at once, highest priority first: the preemptor takes the room. A node of the
        plan that fails meanwhile ends the nomination at once (``_detect``), as live."""
        keys = []
        for a in victims:
            # one key per eviction: a victim placed again at once may be evicted again in the grace period
            self.terminations += 1
            k = f"{a.key}~terminating~{self.terminations}"
            self.ledger.assume(replace(a, key=k, gang=None, owner=None))
            self.ledger.confirm(k)
            self.alloc_gpus += _whole(a)
            self.terminating[k] = a.node
            keys.append(k)
        nom = _Nomination({p.node_index for p in plan.placements}, self._hold_for(plan, victims))
        self.nominated[plan.request] = nom
        self._record()

        def gone(lp: EventLoop) -> None:
            for k in keys:
                if k in self.terminating:  # (else released with its node, _detect)
                    self._terminated(k)
            if self.nominated.get(plan.request) is nom:  # (not ended early and nominated again)
                self._end_nomination(plan.request)
            self.free_epoch += 1
            self._record()
            self._kick()

        self.loop.schedule(self.loop.now + grace, gone, P_DONE)

    def _terminated(self, key: str) -> None:
        """A victim's terminating pod is gone: its resources are free."""
        del self.terminating[key]
        a = self.ledger.get(key)
        assert a is not None
        self.ledger.release(key)
        self.alloc_gpus -= _whole(a)

    def _end_nomination(self, request: str) -> None:
        """The preemptor's held room is released; it may preempt again."""
        nom = self.nominated.pop(request)
        for k in nom.held:
            self.ledger.release(k)
        self.free_epoch += 1

    def _hold_for(self, plan: PreemptionPlan, victims: list[Allocation]) -> list[str]:
        """Take what the plan's placements need beyond the victims' resources on each node (the
        nomination); returns the ledger keys."""
        need: dict[int, dict] = {}
        for p in plan.placements:
            n = need.setdefault(p.node_index, {"gpu": {}, "cpu": 0, "mem": 0, "ext": {}})
            for g in p.gpus:
                n["gpu"][g] = n["gpu"].get(g, 0) + p.gpu_milli
            n["cpu"] += p.cpu_milli
            n["mem"] += p.memory_mib
            for name, v in p.extended:
                n["ext"][name] = n["ext"].get(name, 0) + v
        for a in victims:
            n = need.get(a.node)
            if n is None:
                continue
            for g in a.gpus:
                if g in n["gpu"]:
                    n["gpu"][g] -= a.gpu_milli
            n["cpu"] -= a.cpu_milli
            n["mem"] -= a.memory_mib
            for name, v in a.extended:
                if name in n["ext"]:
                    n["ext"][name] -= v
        keys = []
        for node, n in sorted(need.items()):
            ext = tuple(sorted((k, v) for k, v in n["ext"].items() if v > 0))
            parts = [((g,), m, 0, 0, ()) for g, m in sorted(n["gpu"].items()) if m > 0]
            if n["cpu"] > 0 or n["mem"] > 0 or ext:
                parts.append(((), 0, max(n["cpu"], 0), max(n["mem"], 0), ext))
            for gpus, milli, cpu, mem, extended in parts:
                k = f"{plan.request}~nominated~{len(keys)}"
                self.ledger.assume(Allocation(k, node, gpus, milli, cpu, mem, extended=extended))
                self.ledger.confirm(k)
                keys.append(k)
        return keys

    def _evict(self, plan: PreemptionPlan, owners: dict[str, _Job | _Replica]) -> None:
        """Carry a plan out: victim replicas go back to pending; victim jobs are interrupted
        (work kept to the last checkpoint) and their evicted pods wait to be placed again."""
        now = self.loop.now
        hit: dict[str, tuple[_Job, list[str]]] = {}
        replicas = 0
        for key in plan.victim_pods:
            o = owners[key]
            if isinstance(o, _Replica):
                assert o.placed is not None
                self.segments.append(Segment(o.created_s, now, float(o.service.gpus_per_replica)))
                self._release(o.placed)
                o.placed = None
                o.created_s = now
                replicas += 1
            else:
                hit.setdefault(o.job.name, (o, []))[1].append(key)
        for js, pods in hit.values():
            self._evict_job(js, pods, now)
        self.preemption["events"].append({"t": now, "unit": plan.request, "priority": plan.priority,
                                          "jobs": sorted(hit), "replicas": replicas,
                                          "pods": len(plan.victim_pods), "pdb_violations": plan.pdb_violations})

    def _evict_job(self, js: _Job, pods: list[str], now: float) -> None:
        """Gang policies: the whole job goes back to the queue and restarts whole. Pods one by
        one: the evicted pods are recreated; the others keep their place and wait for them."""
        was_running = js.state == JobState.RUNNING
        if was_running:
            self._interrupt(js, now)
            self.preemption["lost_gpu_s"].append(self.lost_gpu_s[-1])
        js.preempted += 1
        if self.policy.gang != "none":
            self._requeue(js, restart=False)
            return
        for key in pods:
            self._release(js.placed.pop(key))
            self._add_pending(js, key)
        if js.placed:
            js.state = JobState.STARTING
            if was_running:  # _interrupt invalidated the run; the survivors wait for the new pods
                self._arm_timeout(js)
        else:
            js.state = JobState.QUEUED
            js.token += 1
        self.queue[js.job.name] = js

    def _try_replica(self, r: _Replica, tried: set[tuple]) -> bool:
        s = r.service
        key = ("replica", s.name)
        skip = self._skip(key, tried)
        if skip and not self._may_preempt(key, s.priority):
            return False
        req = PodRequest(name=r.key, gpus=s.gpus_per_replica, cpu_milli=s.cpu_milli, memory_mib=s.memory_mib,
                         owner=s.name, spread_level=s.spread_level, priority=s.priority)
        p = self._place_pod(req, key, tried, skip, s.preempts)
        if p is None:
            return False
        self._assume(p, owner=s.name)
        self.replica_waits.append((self.loop.now, self.loop.now - r.created_s))
        r.placed = p
        if r.lost_at is not None:
            self.replica_repairs.append((self.loop.now, self.loop.now - r.lost_at))  # (repaired at, took)
            r.lost_at = None
        r.created_s = self.loop.now
        if p.node_index in self.dead:  # died, not yet detected: lost from the start, serves nothing
            r.lost_at = self.loop.now
        return True

    def _shape_key(self, js: _Job) -> tuple:
        j = js.job
        return ("gang", j.workers, j.gpus_per_worker, j.launcher, js.req.preferred_level, js.req.required_level,
                js.req.rail_aligned, j.cpu_milli_per_gpu, j.memory_mib_per_gpu)

    def _try_gang(self, js: _Job, tried: set[tuple]) -> bool:
        """The whole job at once (all-or-nothing), by the policy's gang mode."""
        key = self._shape_key(js)
        skip = self._skip(key, tried)
        if skip and not self._may_preempt(key, js.job.priority):
            return False
        placements = None
        if skip:
            pass
        elif js.job.gpus > self._free_whole():
            self._failed(key, tried)
        else:
            self.counters["decisions"] += 1
            snap = self.ledger.live
            if js.is_single:
                (member, role), = js.members.items()
                req = PodRequest(name=member, **_resources(role))
                out = place(snap, [req], self.engine, self.ctx).outcomes
            elif self.policy.gang == "pods":
                reqs = [PodRequest(name=m, **_resources(role)) for m, role in js.members.items()]
                out = place(snap, reqs, self.engine, self.ctx).outcomes
            else:
                out = place(snap, [js.req], self.engine, self.ctx).outcomes
            if all(o.placed for o in out):
                placements = [p for o in out for p in o.placements]
            else:
                self._failed(key, tried)
        if placements is None:
            if js.is_single:
                (member, role), = js.members.items()
                preq: PodRequest | GangRequest = PodRequest(name=member, priority=js.job.priority, **_resources(role))
            else:  # volcano's all-or-nothing pods are planned as one gang (its scorers, no topology hints)
                preq = js.req
            plan = self._preempt(preq, key, tried) if js.job.preempts else None
            if plan is None:
                return False
            placements = list(plan.placements)
        self._start_gang(js, placements)
        return True

    def _start_gang(self, js: _Job, placements: list[Placement]) -> None:
        """Every pending member of ``js`` takes its place in ``placements``; the job starts."""
        for p in placements:
            self._assume(p, gang=js.job.name)
            js.placed[p.pod] = p
        for key in list(js.pending):
            self._placed(js, key)
        self._start(js)

    def _try_repair(self, js: _Job) -> bool:
        """toposched: replace the lost members next to the survivors; else re-place or requeue the gang."""
        self.counters["decisions"] += 1
        self.counters["repairs"] += 1
        survivors = list(js.placed.values())
        plan = plan_repair(self.engine, self.ledger.live, js.req, survivors, list(js.pending), self.ctx, lost=js.lost)
        js.lost = []
        if plan.action == "requeue":
            self.counters["repairs_failed"] += 1
            self._requeue(js, restart=True)
            self._kick()  # capacity was freed: another cycle at this instant
            return True
        if plan.action == "replace":
            self.counters["repairs_replaced"] += 1
            self._requeue(js, restart=True)
        self._start_gang(js, plan.outcome.placements)
        return True

    def _try_pods_one_by_one(self, js: _Job, tried: set[tuple]) -> bool:
        """kube-scheduler-like: each pending member alone, wherever it fits; no gang.
        With preemption each member that does not fit preempts for itself (pods, not gangs)."""
        keys = {r.name: ("pod", r.gpus, r.gpu_milli, r.cpu_milli, r.memory_mib) for r in js.req.roles
                if js.pending_roles.get(r.name)}
        prio = js.job.priority
        if all(self._skip(k, tried) and not self._may_preempt(k, prio) for k in keys.values()):
            return False  # the common case: nothing of this job fits since the last release
        changed = False
        by_role: dict[str, list[_Member]] = {}
        for m in js.pending.values():
            if m.role.name in keys:
                by_role.setdefault(m.role.name, []).append(m)
        for members in by_role.values():
            role = members[0].role
            key = keys[role.name]
            if self._skip(key, tried) and not self._may_preempt(key, prio):
                continue
            for m in sorted(members, key=lambda m: (m.created_s, m.seq)):
                req = PodRequest(name=m.key, priority=prio, **_resources(role))
                p = self._place_pod(req, key, tried, self._skip(key, tried), js.job.preempts)
                if p is None:
                    break
                self._assume(p, gang=js.job.name)
                js.placed[p.pod] = p
                self._placed(js, m.key)
                changed = True
        if not changed:
            return False
        if not js.pending:
            js.token += 1
            self._start(js)
        elif js.state == JobState.QUEUED:
            js.state = JobState.STARTING
            js.token += 1
            self._arm_timeout(js)
        return True

    # ----------------------------------------------------------------- result

    def _result(self, wall_s: float) -> RunResult:
        jobs = []
        for js in self.jobs.values():
            j = js.job
            jobs.append({
                "name": j.name, "arrival_s": j.arrival_s, "gpus": j.gpus, "pods": j.pods, "duration_s": j.duration_s,
                "startup_wait_s": None if js.first_start_s is None else js.first_start_s - j.arrival_s,
                "jct_s": None if js.done_s is None else js.done_s - j.arrival_s,
                "state": js.state.value, "interruptions": js.interruptions, "repair_times_s": js.repair_times,
                "rendezvous_timeouts": js.timeouts, "restarts": js.restarted, "priority": j.priority,
                "preemptions": js.preempted,
            })
        self.counters["jobs_partial_at_end"] = sum(
            1 for js in self.jobs.values() if js.state in (JobState.STARTING, JobState.REPAIRING) and js.placed)
        preemption = None
        if self.cfg.preemption:
            preemption = {**self.preemption, "replica_waits": self.replica_waits}
        return RunResult(self.policy.name, self.cfg.seed, self.cfg.hours, self.cfg.warmup_hours,
                         self.arrays.total_gpus, self.timeline, self.segments, self.lost_gpu_s, jobs,
                         self.placements, self.replica_repairs, dict(self.counters), wall_s, dict(self.gen.info),
                         preemption)


def _whole(p: Placement | Allocation) -> int:
    """Whole GPUs held (a share of one GPU counts none)."""
    return len(p.gpus) if p.gpu_milli >= GPU_MILLI else 0


def _resources(role: GangRole) -> dict[str, Any]:
    return {"gpus": role.gpus, "gpu_milli": role.gpu_milli, "cpu_milli": role.cpu_milli,
            "memory_mib": role.memory_mib}


def _mix(gen: Generated) -> WorkloadMix:
    """The arriving pod mix (what the fragmentation plugin measures against)."""
    shapes = []
    for j in gen.jobs:
        per = max(j.gpus_per_worker, 1)
        shapes += [PodShape(cpu_milli=j.cpu_milli_per_gpu * per, gpus=j.gpus_per_worker)] * j.workers
    for s in gen.services:
        shapes += [PodShape(cpu_milli=s.cpu_milli, gpus=s.gpus_per_replica)] * max(s.max_replicas, 1)
    return WorkloadMix.from_shapes(shapes)


def simulate(arrays: TopologyArrays, wl: WorkloadFile, policies: list[Policy], cfg: SimConfig,
             progress: Callable[[str, float], None] | None = None) -> tuple[Generated, list[RunResult]]:
    """Generate the workload once, run every policy on it."""
    from simulations.workload import generate

    gen = generate(wl, arrays, cfg.hours, cfg.seed)
    out = []
    for pol in policies:
        cb = (lambda t, name=pol.name: progress(name, t)) if progress is not None else None
        out.append(TimeSim(arrays, gen, wl, pol, cfg, cb).run())
    return gen, out
