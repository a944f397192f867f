"""The preemption planner with PodDisruptionBudgets: reprieve order, violation count, tier rule.

Nodes are 4-GPU NVSwitch boxes with 32 CPUs. Drawings show each GPU's holder and its
priority (``a1``: pod a at priority 1, ``.``: free); ``*`` marks a pod a budget protects::

    n0 [a1 a1 b1* b1*]
"""

from __future__ import annotations

from models.requests import GangRequest, GangRole, PodRequest
from models.topology import build_arrays
from scheduler.engine import Engine, GangConfig, PlacementConfig
from scheduler.ledger import Allocation, Ledger
from scheduler.preemption import Holder, plan_preemption
from scheduler.workloads.disruption import Budget, parse_label_selector
from tests.builders import build, make_cluster, make_node

ENGINE = Engine.from_config(PlacementConfig(gang=GangConfig(solver="greedy")))
DB = {"app": "db"}


def node(name: str) -> dict:
    n = make_node(name, 4, rack="r0")
    n.update(cpu_milli=32000, memory_mib=262144)
    return n


def budget(allowed: int, labels: dict[str, str] = DB, ns: str = "ns", name: str = "db") -> Budget:
    return Budget(ns, name, parse_label_selector({"matchLabels": labels}), allowed)


class Cluster:
    """A ledger plus the priority and labels of every pod in it."""

    def __init__(self, *names: str) -> None:
        self.ledger = Ledger(build_arrays(build(make_cluster(*(node(n) for n in names)))))
        self.meta: dict[str, tuple[int, dict[str, str]]] = {}

    def hold(self, key: str, node: str, gpus: tuple[int, ...], priority: int = 1,
             labels: dict[str, str] | None = None, gang: str | None = None, cpu: int = 0) -> None:
        idx = self.ledger.arrays.node_index[node]
        self.ledger.observe(Allocation(key, idx, gpus, 1000, cpu, 0, gang, None))
        self.meta[key] = (priority, dict(labels or {}))

    def plan(self, req, budgets=()):
        holders = [Holder(a, self.meta[a.key][0], True, self.meta[a.key][1]) for a in self.ledger.allocations()]
        return plan_preemption(ENGINE, self.ledger.snapshot(), holders, req, budgets=budgets)


def pod(gpus: int, priority: int = 10) -> PodRequest:
    return PodRequest(name="ns/hi", gpus=gpus, priority=priority)


def test_a_protected_pod_is_reprieved_in_favour_of_an_unprotected_one_of_equal_priority():
    # n0 [a1* a1* b1 b1]: a 2-GPU preemptor needs one of them; without budgets the engine takes GPUs 0-1
    # (a goes), with a's budget at 0 it is placed beside a and b goes
    c = Cluster("n0")
    c.hold("ns/a", "n0", (0, 1), labels=DB)
    c.hold("ns/b", "n0", (2, 3))
    plain = c.plan(pod(2))
    assert plain.victim_pods == ("ns/a",) and plain.pdb_violations == 0
    plan = c.plan(pod(2), [budget(0)])
    assert plan.victim_pods == ("ns/b",) and plan.pdb_violations == 0
    assert [p.gpus for p in plan.placements] == [(2, 3)]


def test_when_a_protected_pod_must_go_the_reprieve_keeps_the_other_protected_ones_first():
    # n0, 32 CPUs: a, y* and z* hold 8000 CPU each (y and z under budgets allowing 0); a 24000-CPU
    # preemptor needs two of the three gone. Sparing y and z does not fit, so one of them must go; the
    # reprieve gives y back before a (kube-scheduler's order), so a and z go: one violation, not two
    c = Cluster("n0")
    c.hold("ns/a", "n0", (), cpu=8000)
    c.hold("ns/y", "n0", (), cpu=8000, labels={"app": "y"})
    c.hold("ns/z", "n0", (), cpu=8000, labels={"app": "z"})
    req = PodRequest(name="ns/hi", cpu_milli=24000, priority=10)
    budgets = [budget(0, {"app": "y"}, name="y"), budget(0, {"app": "z"}, name="z")]
    assert c.plan(req).victim_pods == ("ns/y", "ns/z")  # without budgets: a is given back first
    plan = c.plan(req, budgets)
    assert plan.victim_pods == ("ns/a", "ns/z") and plan.pdb_violations == 1


def test_a_budget_with_room_does_not_change_the_victims():
    c = Cluster("n0")
    c.hold("ns/a", "n0", (0, 1), labels=DB)
    c.hold("ns/b", "n0", (2, 3))
    plan = c.plan(pod(2), [budget(1)])
    assert plan.victim_pods == c.plan(pod(2)).victim_pods == ("ns/a",) and plan.pdb_violations == 0


def test_violations_are_counted_and_a_plan_is_still_made_when_nothing_else_works():
    # n0 [a1* a1* b1* b1*], budget allows 1 disruption: the whole node is needed, one eviction is too many
    c = Cluster("n0")
    c.hold("ns/a", "n0", (0, 1), labels=DB)
    c.hold("ns/b", "n0", (2, 3), labels=DB)
    plan = c.plan(pod(4), [budget(1)])
    assert plan.victim_pods == ("ns/a", "ns/b") and plan.pdb_violations == 1
    plan = c.plan(pod(4), [budget(0)])
    assert plan.pdb_violations == 2


def test_only_budgets_of_the_pods_namespace_and_selector_count():
    c = Cluster("n0")
    c.hold("ns/a", "n0", (0, 1), labels=DB)
    c.hold("ns/b", "n0", (2, 3), labels={"app": "web"})
    plan = c.plan(pod(4), [budget(0, ns="other"), budget(0, labels={"app": "cache"})])
    assert plan.pdb_violations == 0 and len(plan.victim_pods) == 2


def test_a_gang_member_under_a_budget_makes_the_whole_gang_violating():
    # n0 [g1 g1 b1 b1]  n1 [g1* g1* x50 x50]: gang g (one member protected) or pod b; both free 2 GPUs on n0
    c = Cluster("n0", "n1")
    c.hold("ns/g-0", "n0", (0, 1), gang="ns/g")
    c.hold("ns/g-1", "n1", (0, 1), labels=DB, gang="ns/g")
    c.hold("ns/b", "n0", (2, 3))
    c.hold("ns/x", "n1", (2, 3), priority=50)
    plan = c.plan(pod(2), [budget(0)])
    assert plan.victim_pods == ("ns/b",) and plan.pdb_violations == 0


def test_a_higher_tier_that_breaks_no_budget_wins_over_a_lower_tier_that_does():
    # n0 [a1* a1* a1* a1*]  n1 [c5 c5 c5 c5]: tier 1 places the 4-GPU preemptor on n0 by evicting the
    # protected a; tier 5 may use n1 instead, breaking nothing
    c = Cluster("n0", "n1")
    c.hold("ns/a", "n0", (0, 1, 2, 3), labels=DB)
    c.hold("ns/c", "n1", (0, 1, 2, 3), priority=5)
    assert c.plan(pod(4)).victim_pods == ("ns/a",)  # without budgets: the lowest tier
    plan = c.plan(pod(4), [budget(0)])
    assert plan.victim_pods == ("ns/c",) and plan.pdb_violations == 0
    assert [p.node for p in plan.placements] == ["n1"]


def test_the_first_tiers_plan_stands_when_every_tier_breaks_a_budget():
    # as above, but c is protected too: the lowest tier's plan (victim a) stands, one violation
    c = Cluster("n0", "n1")
    c.hold("ns/a", "n0", (0, 1, 2, 3), labels=DB)
    c.hold("ns/c", "n1", (0, 1, 2, 3), priority=5, labels=DB)
    plan = c.plan(pod(4), [budget(0)])
    assert plan.victim_pods == ("ns/a",) and plan.pdb_violations == 1 and plan.highest_victim_priority == 1


def test_a_gang_preemptor_sees_budgets_on_every_node():
    # n0 [a1* a1* a1* a1*]  n1 [b1 b1 b1 b1]  n2 [c1 c1 c1 c1]: two 4-GPU members need two whole nodes
    c = Cluster("n0", "n1", "n2")
    c.hold("ns/a", "n0", (0, 1, 2, 3), labels=DB)
    c.hold("ns/b", "n1", (0, 1, 2, 3))
    c.hold("ns/c", "n2", (0, 1, 2, 3))
    req = GangRequest(name="ns/job", roles=(GangRole(count=2, gpus=4),), priority=10)
    plan = c.plan(req, [budget(0)])
    assert plan is not None and sorted(plan.victim_pods) == ["ns/b", "ns/c"] and plan.pdb_violations == 0
