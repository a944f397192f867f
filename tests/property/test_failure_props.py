"""Gangs under node failures and recoveries, handled the way the drivers do (``plan_repair``).

After every step: no gang is partly bound (all members in the ledger, or none and the
gang queued), no GPU is allocated twice, nothing sits on a failed node, slices stay whole
in their domain, and every member lost with a node was replaced or its gang requeued.
Cluster: two su of three 4-GPU nodes. A second machine checks the simulator the same way
at its quiet points. A third test runs the live loop on gangs some of whose members are bound
(two racks of three 8-GPU nodes, the in-memory cluster).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from models.placement import Placement
from models.requests import GangRequest, GangRole
from models.topology import build_arrays
from plugins.base import Context
from scheduler.engine import Engine, GangConfig, PlacementConfig, place
from scheduler.ledger import Allocation, Ledger
from scheduler.repair import plan_repair
from simulations.timesim import POLICIES, SimConfig, TimeSim
from simulations.workload import FailureSpec, JobSpec, NodeFailureSpec, WorkloadFile, generate
from tests.builders import build, make_cluster, make_node, make_topology

NICS = [{"name": f"mlx5_{i}", "rail": i, "gpus": [i]} for i in range(4)]
NODES = 6


def _cluster():
    nodes = []
    for i in range(NODES):
        n = make_node(f"n{i}", topology=make_topology(4, "H100", nvswitch=18, nics=NICS), su=f"su{i // 3}")
        n.update(cpu_milli=16000, memory_mib=65536)
        nodes.append(n)
    return build_arrays(build(make_cluster(*nodes, levels=["su"])))


ARRAYS = _cluster()
ENGINE = Engine.from_config(PlacementConfig(gang=GangConfig(solver="greedy")))


class FailureMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(ARRAYS)
        self.gangs: dict[str, GangRequest] = {}
        self.queued: set[str] = set()
        self.placed: dict[str, Placement] = {}
        self.failed: set[int] = set()
        self.count = 0

    # ------------------------------------------------------------------ helpers

    def _bind(self, gang: str, places: list[Placement]) -> None:
        for p in places:
            self.ledger.assume(Allocation(p.pod, p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib,
                                          gang=gang))
            self.placed[p.pod] = p

    def _unbind(self, pods: list[str]) -> None:
        for pod in pods:
            self.ledger.release(pod)
            del self.placed[pod]

    def _members(self, gang: str) -> list[str]:
        return [a.key for a in self.ledger.of_gang(gang)]

    def _try(self, gang: str) -> None:
        (out,) = place(self.ledger.snapshot(), [self.gangs[gang]], ENGINE).outcomes
        if out.placed:
            self._bind(gang, out.placements)
            self.queued.discard(gang)
        else:
            self.queued.add(gang)

    # ------------------------------------------------------------------ rules

    @rule(workers=st.integers(1, 3), gpus=st.sampled_from([1, 2, 4]), launcher=st.booleans(),
          required=st.sampled_from([None, "su"]), rail=st.booleans(),
          slices=st.sampled_from([None, None, (2, "su"), (2, "host")]))
    def submit(self, workers, gpus, launcher, required, rail, slices):
        self.count += 1
        name = f"g{self.count}"
        roles = [GangRole(name="worker", count=workers, gpus=gpus, cpu_milli=1000)]
        if launcher:
            roles.insert(0, GangRole(name="launcher", count=1, cpu_milli=500))
        size, level = slices if slices and (workers + launcher) % slices[0] == 0 else (None, None)
        self.gangs[name] = GangRequest(name=name, roles=tuple(roles), required_level=required, rail_aligned=rail,
                                       slice_size=size, slice_level=level)
        self._try(name)

    @rule(nodes=st.sets(st.integers(0, NODES - 1), min_size=1, max_size=3))
    def fail(self, nodes):
        """Several nodes at once: every gang they hit is handled, not only the first."""
        nodes = nodes - self.failed
        for n in nodes:
            self.failed.add(n)
            self.ledger.set_failed(n, True)
        hit: dict[str, list[Placement]] = {}
        for pod, p in list(self.placed.items()):
            if p.node_index in nodes:
                hit.setdefault(p.gang, []).append(p)
                self._unbind([pod])
        for gang, lost in sorted(hit.items()):
            survivors = [self.placed[k] for k in self._members(gang)]
            plan = plan_repair(ENGINE, self.ledger.snapshot(), self.gangs[gang], survivors, [p.pod for p in lost],
                               Context(), lost=lost)
            if plan.action == "repair":
                assert sorted(p.pod for p in plan.outcome.placements) == sorted(p.pod for p in lost)
                self._bind(gang, plan.outcome.placements)
            else:
                self._unbind([p.pod for p in survivors])
                if plan.action == "replace":
                    self._bind(gang, plan.outcome.placements)
                else:
                    self.queued.add(gang)
            for p in lost:  # every lost member replaced, or its gang requeued
                assert p.pod in self.placed or gang in self.queued

    @precondition(lambda self: self.failed)
    @rule(data=st.data())
    def recover(self, data):
        n = data.draw(st.sampled_from(sorted(self.failed)))
        self.failed.discard(n)
        self.ledger.set_failed(n, False)

    @precondition(lambda self: any(g not in self.queued for g in self.gangs))
    @rule(data=st.data())
    def finish(self, data):
        gang = data.draw(st.sampled_from(sorted(g for g in self.gangs if g not in self.queued)))
        self._unbind(self._members(gang))
        del self.gangs[gang]

    @precondition(lambda self: self.queued)
    @rule()
    def retry_queued(self):
        for gang in sorted(self.queued):
            self._try(gang)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def ledger_consistent(self):
        self.ledger.check_invariants()

    @invariant()
    def gangs_all_or_nothing(self):
        for name, req in self.gangs.items():
            members = sorted(self._members(name))
            if name in self.queued:
                assert members == [], f"{name} queued but {members} bound"
            else:
                assert members == sorted(m for m, _ in req.member_names()), f"{name} partly bound: {members}"

    @invariant()
    def no_gpu_twice_and_none_on_failed_nodes(self):
        seen: set[tuple[int, int]] = set()
        for a in self.ledger.allocations():
            assert a.node not in self.failed, f"{a.key} on failed node n{a.node}"
            for g in a.gpus:
                assert (a.node, g) not in seen, f"GPU {g} of n{a.node} allocated twice"
                seen.add((a.node, g))

    @invariant()
    def slices_kept(self):
        """Each run of ``slice_size`` members (by name, as placed) in one domain of its level."""
        for name, req in self.gangs.items():
            if req.slice_size is None or name in self.queued:
                continue
            names = [m for m, _ in req.member_names()]
            for j in range(0, len(names), req.slice_size):
                nodes = [self.placed[m].node_index for m in names[j: j + req.slice_size]]
                doms = {n if req.slice_level == "host" else ARRAYS.node_domain(n, 0) for n in nodes}
                assert len(doms) == 1, f"{name} slice {j // req.slice_size} spans {doms}"

    @invariant()
    def required_domain_kept(self):
        for name, req in self.gangs.items():
            if req.required_level == "su" and name not in self.queued:
                sus = {ARRAYS.node_domain(a.node, 0) for a in self.ledger.of_gang(name)}
                assert len(sus) == 1


TestFailureMachine = FailureMachine.TestCase
TestFailureMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------- the simulator


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=st.lists(st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(0, 600),
                               st.integers(60, 2000)), min_size=1, max_size=8),
       failures=st.lists(st.tuples(st.integers(0, NODES - 1), st.integers(0, 1500), st.integers(30, 900)),
                         max_size=4),
       policy=st.sampled_from(sorted(POLICIES)))
def test_simulator_never_leaves_a_gang_partly_bound(jobs, failures, policy):
    """Whatever arrives and fails, each job in the simulator ends up whole, waiting with nothing bound,
    or (pods one by one, or between a failure and its handling) in a state that says so."""
    wl = WorkloadFile(
        jobs=tuple(JobSpec(name=f"j{i}", workers=w, gpus_per_worker=g, arrival_s=t, duration_s=d,
                           cpu_milli_per_gpu=500, memory_mib_per_gpu=1024, preferred_level="su")
                   for i, (w, g, t, d) in enumerate(jobs)),
        node_failures=tuple(NodeFailureSpec(node=f"n{n}", at_s=t, repair_s=r) for n, t, r in failures),
        failures=FailureSpec(detection_s=30, recreate_s=2))
    cfg = SimConfig(hours=1.0, seed=0, check_every=1)
    s = TimeSim(ARRAYS, generate(wl, ARRAYS, cfg.hours, cfg.seed), wl, POLICIES[policy], cfg)
    s.run()
    for js in s.jobs.values():
        bound = set(a.key for a in s.ledger.of_gang(js.job.name))
        assert bound == set(js.placed), js.job.name
        state = js.state.value
        if state in ("running", "broken"):
            assert len(js.placed) + len(js.pending) + len(js.lost) == len(js.members)
        if state == "running":
            assert set(js.placed) == set(js.members)
        elif state in ("queued", "done"):
            assert not js.placed
        elif state == "starting":
            assert policy == "default"
        elif state == "repairing":
            assert POLICIES[policy].on_failure == "repair"
        for p in js.placed.values():
            assert p.node_index not in s.failed


# ---------------------------------------------------------------------------- partly bound gangs, live


@st.composite
def _partly_bound(draw):
    """A gang some of whose members were bound by someone else (on free GPUs, in any rack, maybe on
    node ``x`` that toposched does not know), busy pods, and maybe a node that fails before or after
    the pending members arrive."""
    size = draw(st.integers(2, 5))
    gpus = draw(st.sampled_from([2, 4, 8]))
    free = {f"n{i}": 8 for i in range(6)}
    busy = []
    for i in range(draw(st.integers(0, 5))):
        n, g = draw(st.sampled_from(sorted(free))), draw(st.sampled_from([2, 4, 8]))
        if free[n] >= g:
            free[n] -= g
            busy.append((f"busy-{i}", n, g))
    bound = []
    for _ in range(draw(st.integers(1, size - 1))):
        n = draw(st.sampled_from(["x", *(n for n in sorted(free) if free[n] >= gpus)]))
        free[n] = free.get(n, 8) - gpus
        bound.append(n)
    ann = {}
    minimum = draw(st.one_of(st.none(), st.integers(1, size)))
    if minimum is not None:
        ann["gang_min_members"] = str(minimum)
    if draw(st.booleans()):
        ann["required_level"] = "rack"
    if size % 2 == 0 and draw(st.booleans()):
        ann.update(slice_size="2", slice_level="rack")
    fail = draw(st.one_of(st.none(), st.tuples(st.sampled_from([f"n{i}" for i in range(6)]), st.booleans())))
    return size, gpus, ann, minimum or size, bound, busy, fail


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_partly_bound())
def test_a_partly_bound_gang_is_completed_restarted_or_left_running_never_left_short(case):
    """The loop on the in-memory cluster, a job controller re-creating what toposched deletes. At the
    end the gang has no member bound, or at least its minimum (of the pods there are; unless some
    member was bound where toposched cannot see), in one rack when it requires one and started in
    one; nothing sits on a failed node; members that made the minimum with no node failing were
    not deleted; and retries change nothing."""
    from scheduler.failures import NodeFailureConfig
    from tests.integration import objects as o
    from tests.scheduler.rig import LoopRig

    size, gpus, ann, minimum, bound, busy, fail = case
    rig = LoopRig(nodes=6, per_rack=3, node_failures=NodeFailureConfig())
    rack = {f"n{i}": i // 3 for i in range(6)}
    for name, n, g in busy:
        rig.cluster.add_pod({**o.pod(name, g, node_name=n), "status": {"phase": "Running"}})
    pods = o.our_gang("g", size, gpus, **ann)
    for pod, n in zip(pods, bound, strict=False):
        rig.cluster.add_pod({**pod, "spec": {**pod["spec"], "nodeName": n}, "status": {"phase": "Running"}})
    running = {f"default/g-{i}" for i in range(len(bound))}
    members = {f"default/{p['metadata']['name']}": p for p in pods}

    def fail_node():
        node = rig.cluster.nodes[fail[0]]
        rig.cluster.add_node({**node, "status": {**node["status"], "conditions": [{"type": "Ready",
                                                                                    "status": "False"}]}})
        rig.run()
        rig.clock.now += 31
        rig.run()

    if fail and fail[1]:
        fail_node()
    for pod in pods[len(bound):]:
        rig.cluster.add_pod(pod)
    rig.run()
    if fail and not fail[1]:
        fail_node()
    for _ in range(4):  # the job controller: a deleted member comes back under a new name
        rig.recreate(members, name=lambda _, n: f"g-r{n}")
        rig.clock.now += 11
        rig.run()
        rig.s.cache.ledger.check_invariants()
        rig.s.cache.check_gang_index()
    rig.clock.now += 61
    rig.run()
    now = {k: n for k, n in rig.cluster.bound().items() if k in members}
    if "x" not in bound:  # a gang bound only where toposched cannot see is placed as if nothing were bound
        assert not now or len(now) >= min(minimum, len(members)), now
    known = {rack[n] for n in bound if n in rack}
    if "required_level" in ann and len(known) == 1 and "x" not in bound:
        assert len({rack.get(n) for n in now.values()}) <= 1, now
    assert not fail or fail[0] not in now.values(), now
    if not fail and len(running) >= minimum:
        assert running <= set(now), now
    for _ in range(2):
        rig.clock.now += 61
        rig.run()
        assert {k: n for k, n in rig.cluster.bound().items() if k in members} == now
