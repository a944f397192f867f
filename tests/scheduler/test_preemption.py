"""The preemption planner on tiny hand-built clusters: tiers, reprieve, gangs, policy, extended resources.

Nodes are 4-GPU NVSwitch boxes with 32 CPUs unless a test says otherwise. Drawings show
each GPU's holder and its priority (``a1``: pod a at priority 1, ``.``: free)::

    n0 [a1 a1 b1 b1]
"""

from __future__ import annotations

import pytest

from models.requests import GangRequest, GangRole, PodRequest
from models.topology import build_arrays
from scheduler.engine import Engine, GangConfig, PlacementConfig
from scheduler.ledger import Allocation, Ledger
from scheduler.preemption import Holder, plan_preemption, victim_groups
from tests.builders import build, make_cluster, make_node

ENGINE = Engine.from_config(PlacementConfig(gang=GangConfig(solver="greedy")))
IB = "rdma/ib"


def node(name: str, gpus: int = 4, cpu: int = 32000, ib: int | None = None) -> dict:
    n = make_node(name, gpus, rack="r0")
    n.update(cpu_milli=cpu, memory_mib=262144)
    if ib is not None:
        n["extended_resources"] = {IB: ib}
    return n


class Cluster:
    """A ledger plus the priority of every pod in it."""

    def __init__(self, *nodes: dict) -> None:
        self.ledger = Ledger(build_arrays(build(make_cluster(*nodes))))
        self.priority: dict[str, int] = {}
        self.evictable: dict[str, bool] = {}

    def hold(self, key: str, node: str, gpus: tuple[int, ...] = (), priority: int = 0, *, cpu: int = 0,
             gang: str | None = None, ib: int = 0, evictable: bool = True) -> None:
        idx = self.ledger.arrays.node_index[node]
        self.ledger.observe(Allocation(key, idx, gpus, 1000, cpu, 0, gang, None, ((IB, ib),) if ib else ()))
        self.priority[key] = priority
        self.evictable[key] = evictable

    def holders(self) -> list[Holder]:
        return [Holder(a, self.priority[a.key], self.evictable[a.key]) for a in self.ledger.allocations()]

    def plan(self, req, **kw):
        return plan_preemption(ENGINE, self.ledger.snapshot(), self.holders(), req, **kw)


def pod(gpus: int = 0, priority: int = 10, **kw) -> PodRequest:
    return PodRequest(name="ml/hi", gpus=gpus, priority=priority, **kw)


def where(plan) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.node, p.gpus) for p in plan.placements]


def test_lowest_tier_wins_over_fewer_victims():
    # n0 [a1 a1 b1 b1]   n1 [c5 c5 c5 c5]: evicting c alone would also do, but c is priority 5
    c = Cluster(node("n0"), node("n1"))
    c.hold("ns/a", "n0", (0, 1), 1)
    c.hold("ns/b", "n0", (2, 3), 1)
    c.hold("ns/c", "n1", (0, 1, 2, 3), 5)
    plan = c.plan(pod(4))
    assert plan.victim_nodes == (("ns/a", "n0"), ("ns/b", "n0"))
    assert where(plan) == [("n0", (0, 1, 2, 3))]
    assert plan.highest_victim_priority == 1 and plan.priority == 10


def test_higher_tier_only_when_the_lower_one_is_not_enough():
    # n0 [a1 a1 b5 b5]   n1 [c20 c20 c20 c20]
    c = Cluster(node("n0"), node("n1"))
    c.hold("ns/a", "n0", (0, 1), 1)
    c.hold("ns/b", "n0", (2, 3), 5)
    c.hold("ns/c", "n1", (0, 1, 2, 3), 20)
    two = c.plan(pod(2))
    assert two.victim_pods == ("ns/a",) and where(two) == [("n0", (0, 1))]
    four = c.plan(pod(4))
    assert four.victim_pods == ("ns/a", "ns/b") and four.highest_victim_priority == 5


def test_reprieve_gives_back_what_the_placement_does_not_need():
    # n0 [a1 b1 c1 d1]: tier 1 takes all four off, a 2-GPU pod needs two of them
    c = Cluster(node("n0"))
    for i, name in enumerate("abcd"):
        c.hold(f"ns/{name}", "n0", (i,), 1, cpu=1000)
    plan = c.plan(pod(2, cpu_milli=1000))
    (placement,) = plan.placements
    assert len(placement.gpus) == 2
    assert sorted(plan.victim_pods) == sorted(f"ns/{'abcd'[g]}" for g in placement.gpus)


def test_reprieve_keeps_the_higher_priority_pod_first():
    # n0 (1 GPU, 8 CPUs) [x5]; cpu: h5 4000m, l1 4000m. The pod needs the GPU and 4000m:
    # tier 5 takes all three off; h (priority 5) is given back before l (priority 1) and stays
    c = Cluster(node("n0", gpus=1, cpu=8000))
    c.hold("ns/x", "n0", (0,), 5)
    c.hold("ns/h", "n0", (), 5, cpu=4000)
    c.hold("ns/l", "n0", (), 1, cpu=4000)
    plan = c.plan(pod(1, cpu_milli=4000))
    assert plan.victim_pods == ("ns/l", "ns/x")
    assert plan.highest_victim_priority == 5


def test_a_gang_victim_is_evicted_whole_even_where_the_pod_does_not_need_it():
    # n0 [g1 g1 p20 p20]   n1 [g1 g1 q20 q20]   (g: one gang, two members)
    c = Cluster(node("n0"), node("n1"))
    c.hold("ns/g-0", "n0", (0, 1), 1, gang="ns/g")
    c.hold("ns/g-1", "n1", (0, 1), 1, gang="ns/g")
    c.hold("ns/p", "n0", (2, 3), 20)
    c.hold("ns/q", "n1", (2, 3), 20)
    plan = c.plan(pod(2))
    assert [g.key for g in plan.victims] == ["ns/g"]
    assert plan.victim_nodes == (("ns/g-0", "n0"), ("ns/g-1", "n1"))
    assert len(plan.placements) == 1


def test_a_gang_with_any_member_at_or_above_the_preemptor_is_untouchable():
    c = Cluster(node("n0"), node("n1"))
    c.hold("ns/g-0", "n0", (0, 1, 2, 3), 1, gang="ns/g")
    c.hold("ns/g-1", "n1", (0, 1, 2, 3), 10, gang="ns/g")
    assert c.plan(pod(2)) is None
    assert victim_groups(c.holders(), 10) == []
    assert [g.pods for g in victim_groups(c.holders(), 11)] == [("ns/g-0", "ns/g-1")]


def test_in_flight_or_terminating_pods_are_not_victims():
    # a gang with one member still binding is not a candidate either
    c = Cluster(node("n0"), node("n1"))
    c.hold("ns/a", "n0", (0, 1, 2, 3), 1, evictable=False)
    c.hold("ns/g-0", "n1", (0, 1), 1, gang="ns/g")
    c.hold("ns/g-1", "n1", (2, 3), 1, gang="ns/g", evictable=False)
    assert c.plan(pod(2)) is None


@pytest.mark.parametrize(("preemptor", "policy"), [(10, "Never"), (0, "PreemptLowerPriority")],
                         ids=["policy-never", "equal-priority-0"])
def test_nothing_is_preempted_for_never_or_by_an_equal_priority(preemptor, policy):
    c = Cluster(node("n0"))
    c.hold("ns/a", "n0", (0, 1, 2, 3), 0)
    assert c.plan(pod(4, priority=preemptor), preemption_policy=policy) is None


def test_no_plan_when_even_every_candidate_gone_is_not_enough():
    c = Cluster(node("n0"))
    c.hold("ns/a", "n0", (0, 1), 1)
    c.hold("ns/b", "n0", (2, 3), 50)
    assert c.plan(pod(4)) is None


def test_a_gang_preemptor_needing_two_nodes_evicts_on_both():
    # n0 [a1 a1 a1 a1]   n1 [b2 b2 b2 b2]   n2 [c20 c20 c20 c20]
    c = Cluster(node("n0"), node("n1"), node("n2"))
    c.hold("ns/a", "n0", (0, 1, 2, 3), 1)
    c.hold("ns/b", "n1", (0, 1, 2, 3), 2)
    c.hold("ns/c", "n2", (0, 1, 2, 3), 20)
    gang = GangRequest(name="ml/big", roles=(GangRole(count=2, gpus=4),), priority=10)
    plan = c.plan(gang)
    assert plan.victim_nodes == (("ns/a", "n0"), ("ns/b", "n1"))
    assert sorted(where(plan)) == [("n0", (0, 1, 2, 3)), ("n1", (0, 1, 2, 3))]
    assert sorted(p.pod for p in plan.placements) == ["ml/big/worker-0", "ml/big/worker-1"]


def test_extended_resources_decide_the_victims():
    # n0 (ib 8): i1 holds 8 rdma/ib, o1 holds CPU only; n1 offers no rdma/ib (its pod is no help)
    c = Cluster(node("n0", ib=8), node("n1"))
    c.hold("ns/i", "n0", (), 1, ib=8)
    c.hold("ns/o", "n0", (), 1, cpu=2000)
    c.hold("ns/z", "n1", (0, 1, 2, 3), 1)
    plan = c.plan(pod(0, cpu_milli=1000, extended={IB: 4}))
    assert plan.victim_nodes == (("ns/i", "n0"),)
    assert where(plan) == [("n0", ())]


def test_the_preemptors_own_gang_is_never_a_victim():
    c = Cluster(node("n0"))
    c.hold("ml/big-0", "n0", (0, 1), 1, gang="ml/big")
    gang = GangRequest(name="ml/big", roles=(GangRole(count=1, gpus=4),), priority=10)
    assert c.plan(gang) is None


# -- phase 6: a single pod goes where the fewest (and least important) pods must go ----------


@pytest.mark.parametrize("crowded", ["n0", "n1"])
def test_a_pod_evicts_on_the_node_with_the_fewest_victims(crowded):
    """n_crowded holds four 1-GPU pods, the other node one 4-GPU pod, all at priority 1: the
    4-GPU preemptor evicts the single pod, wherever the engine would have put it."""
    c = Cluster(node("n0"), node("n1"))
    alone = "n1" if crowded == "n0" else "n0"
    for g in range(4):
        c.hold(f"s{g}", crowded, (g,), 1)
    c.hold("big", alone, (0, 1, 2, 3), 1)
    plan = c.plan(pod(4))
    assert plan.victim_pods == ("big",) and where(plan) == [(alone, (0, 1, 2, 3))]


def test_among_equally_many_victims_the_smaller_priority_sum_wins():
    """Both nodes need two victims of highest priority 1; n1's second victim is at 0."""
    c = Cluster(node("n0"), node("n1"))
    c.hold("a", "n0", (0, 1), 1)
    c.hold("b", "n0", (2, 3), 1)
    c.hold("c", "n1", (0, 1), 1)
    c.hold("d", "n1", (2, 3), 0)
    plan = c.plan(pod(4))
    assert sorted(plan.victim_pods) == ["c", "d"] and where(plan)[0][0] == "n1"
