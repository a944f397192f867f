"""Preemption plan properties over small generated clusters of lower- and higher-priority pods and gangs.

For every generated case with a plan: every victim is below the preemptor's priority, a
gang is evicted whole or not at all, the preemptor's placements then fit the ledger
without over-committing any GPU (the ledger's own checks), and every victim was needed
(giving any one back would break the placement).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.requests import GangRequest, GangRole, PodRequest
from models.topology import build_arrays
from scheduler.engine import Engine, PlacementConfig
from scheduler.ledger import Allocation, Ledger
from scheduler.preemption import Holder, plan_preemption, still_fits
from tests.builders import build, make_cluster, make_node

ENGINE = Engine.from_config(PlacementConfig(gang={"solver": "greedy"}))


@st.composite
def cases(draw):
    """2-4 nodes of 4 GPUs (8 CPUs) filled by up to 10 pods or gangs of 1-4 GPUs at priorities 0-5."""
    n_nodes = draw(st.integers(2, 4))
    nodes = []
    for i in range(n_nodes):
        n = make_node(f"n{i}", 4, rack="r0")
        n.update(cpu_milli=8000, memory_mib=65536)
        nodes.append(n)
    led = Ledger(build_arrays(build(make_cluster(*nodes))))
    priority: dict[str, int] = {}
    for i in range(draw(st.integers(1, 10))):
        members = draw(st.sampled_from([1, 1, 2, 3]))
        gang = f"ns/g{i}" if members > 1 else None
        prios = [draw(st.integers(0, 5)) for _ in range(members)]
        for m in range(members):
            gpus, cpu = draw(st.integers(1, 4)), draw(st.sampled_from([0, 1000, 3000]))
            free = led.live.gpu_free == 1000
            node = next((n for n in range(n_nodes) if free[n].sum() >= gpus and led.live.free_cpu[n] >= cpu), None)
            if node is None:
                continue
            chosen = tuple(int(g) for g in free[node].nonzero()[0][:gpus])
            key = f"ns/p{i}-{m}"
            led.observe(Allocation(key, node, chosen, 1000, cpu, 0, gang))
            priority[key] = prios[m]
    p = draw(st.integers(0, 6))
    if draw(st.booleans()):
        req = PodRequest(name="ml/hi", gpus=draw(st.integers(1, 4)), cpu_milli=draw(st.sampled_from([0, 2000])),
                         priority=p)
    else:
        req = GangRequest(name="ml/hi", roles=(GangRole(count=draw(st.integers(2, 3)), gpus=draw(st.integers(1, 4))),),
                          priority=p)
    return led, priority, req


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_a_plan_evicts_only_lower_priority_whole_gangs_and_then_fits(case):
    led, priority, req = case
    holders = [Holder(a, priority[a.key]) for a in led.allocations()]
    plan = plan_preemption(ENGINE, led.snapshot(), holders, req)
    if plan is None:
        return
    victims = set(plan.victim_pods)
    assert victims and all(priority[k] < req.priority for k in victims)
    for a in led.allocations():
        if a.gang is not None and a.key in victims:
            assert {m.key for m in led.of_gang(a.gang)} <= victims, f"gang {a.gang} evicted in part"
    for k in victims:
        led.release(k)
    for i, p in enumerate(plan.placements):  # raises LedgerError on an over-committed GPU
        led.assume(Allocation(f"ml/hi-{i}", p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib))
    led.check_invariants()
    snap = led.snapshot()
    assert still_fits(snap, plan.placements)
    for group in plan.victims:  # none of them could have stayed
        for a in group.allocations:
            snap.apply(a.node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib)
        assert not still_fits(snap, plan.placements), f"{group.key} was evicted for nothing"
        for a in group.allocations:
            snap.apply(a.node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, sign=-1)
