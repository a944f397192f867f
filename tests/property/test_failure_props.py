"""Gangs under node failures and recoveries, handled the way the drivers do (``plan_repair``).

After every step: no gang is partly bound (all members in the ledger, or none and the
gang queued), no GPU is allocated twice, nothing sits on a failed node, slices stay whole
in their domain, and every member lost with a node was replaced or its gang requeued.
Cluster: two su of three 4-GPU nodes. A second machine checks the simulator the same way
at its quiet points.
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
