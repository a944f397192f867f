"""Gang placement through place(): exact nodes, GPU indices, solver statuses and reasons.

Every case builds its own tiny cluster, drawn above it (``[....]`` a node's free GPUs,
``x`` a busy GPU). Nodes are NVSwitch boxes unless the drawing says otherwise.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from models.placement import SolverStatus
from models.requests import GangRequest, GangRole
from models.topology import build_arrays
from scheduler.engine import PlacementConfig, place
from scheduler.gang import sort_key
from scheduler.gang_greedy import waterfill
from scheduler.ledger import Allocation, Ledger
from tests.builders import build, make_cluster, make_node


def ledger(*nodes: dict, levels: list[str] | None = None) -> Ledger:
    return Ledger(build_arrays(build(make_cluster(*nodes, levels=levels))))


def node(name: str, gpus: int = 4, cpu: int = 32000, **levels: str) -> dict:
    n = make_node(name, gpus, **levels)
    n.update(cpu_milli=cpu, memory_mib=262144)
    return n


def busy(led: Ledger, name: str, gpus: tuple[int, ...]) -> None:
    led.observe(Allocation(f"busy-{name}-{gpus}", led.arrays.node_index[name], gpus, 1000, 0, 0))


def gang(name: str = "ml/job", count: int = 2, gpus: int = 4, **kw) -> GangRequest:
    return GangRequest(name=name, roles=(GangRole(count=count, gpus=gpus),), **kw)


def decide(led: Ledger, req: GangRequest, **gang_cfg):
    (out,) = place(led.snapshot(), [req], PlacementConfig(gang=gang_cfg)).outcomes
    return out


def where(out) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(p.pod, p.node, p.gpus) for p in out.placements]


# --------------------------------------------------------------------------- greedy traps

#        rack r1                          rack r2              rack r3
#   n1[....] n2[....] n3[....] n4[....]   n5[...x] n6[...x]    n7[...x] n8[...x]
def trap_racks_before_nodes() -> Ledger:
    led = ledger(*(node(f"n{i}", rack="r1") for i in range(1, 5)), node("n5", rack="r2"), node("n6", rack="r2"),
                 node("n7", rack="r3"), node("n8", rack="r3"))
    for n in ("n5", "n6", "n7", "n8"):
        busy(led, n, (3,))
    return led


@pytest.mark.parametrize("solver", ["cpsat", "greedy"])
def test_fewest_racks_before_fewest_nodes(solver):
    """4 pods of 3 GPUs go on 4 nodes of one rack, not on the exactly-fitting nodes of two racks."""
    out = decide(trap_racks_before_nodes(), gang(count=4, gpus=3), solver=solver)
    assert where(out) == [("ml/job/worker-0", "n1", (0, 1, 2)), ("ml/job/worker-1", "n2", (0, 1, 2)),
                          ("ml/job/worker-2", "n3", (0, 1, 2)), ("ml/job/worker-3", "n4", (0, 1, 2))]
    assert out.report.objective["racks"] == 1
    assert out.report.status == (SolverStatus.OPTIMAL if solver == "cpsat" else SolverStatus.GREEDY)


#          rack r1 (15 free)                 rack r2 (15 free)
#   n1[........] n2[.......x]        n3[........] n4[.......x]
def two_15_gpu_racks() -> Ledger:
    led = ledger(node("n1", 8, rack="r1"), node("n2", 8, rack="r1"), node("n3", 8, rack="r2"), node("n4", 8, rack="r2"))
    busy(led, "n2", (7,))
    busy(led, "n4", (7,))
    return led


@pytest.mark.parametrize("balanced, split", [(True, [12, 13]), (False, [10, 15])], ids=["balanced", "packed"])
def test_balanced_splits_25_pods_13_and_12(balanced, split):
    """25 one-GPU pods over two 15-GPU racks: 13 + 12 when balanced, else one rack filled."""
    out = decide(two_15_gpu_racks(), gang(count=25, gpus=1, balanced=balanced))
    racks = Counter("r1" if p.node in ("n1", "n2") else "r2" for p in out.placements)
    assert sorted(racks.values()) == split
    assert out.report.status == SolverStatus.OPTIMAL
    if balanced:
        assert out.report.objective["spread.rack"] == 1
        assert [(p.node, p.gpus) for p in out.placements[:13]] == \
            [("n1", (g,)) for g in range(8)] + [("n2", (g,)) for g in range(5)]


#          block b1                              block b2
#   r1: n1[....]  r2: n2[....]  r3: n3[....]   r4: n4[....] n5[....]   r5: n6[....] n7[....] n8[..xx]
def best_fit_block_trap() -> Ledger:
    led = ledger(node("n1", block="b1", rack="r1"), node("n2", block="b1", rack="r2"),
                 node("n3", block="b1", rack="r3"), node("n4", block="b2", rack="r4"),
                 node("n5", block="b2", rack="r4"), node("n6", block="b2", rack="r5"),
                 node("n7", block="b2", rack="r5"), node("n8", block="b2", rack="r5"))
    busy(led, "n8", (2, 3))
    return led


def test_cpsat_beats_greedy_best_fit_block():
    """Greedy takes the best-fitting block b1 (3 racks); CP-SAT finds b2 with 2 racks."""
    led = best_fit_block_trap()
    out = decide(led, gang(count=3))
    assert out.report.status == SolverStatus.OPTIMAL
    assert [n for _, n, _ in where(out)] == ["n4", "n5", "n6"]
    assert out.report.objective["racks"] == 2
    assert out.report.greedy_objective["racks"] == 3
    greedy = decide(led, gang(count=3), solver="greedy")
    assert [p.node for p in greedy.placements] == ["n1", "n2", "n3"]
    assert greedy.report.objective == out.report.greedy_objective


# ----------------------------------------------------------------------- levels, slices

#            rack r1                                  rack r2
#   n1[.......x] n2[........] n3[........] n4[........]   n5[.......x] n6[.......x] n7[........] n8[........]
def two_racks_of_eight(busy_nodes=("n1", "n5", "n6")) -> Ledger:
    led = ledger(*(node(f"n{i}", 8, rack="r1" if i <= 4 else "r2") for i in range(1, 9)))
    for n in busy_nodes:
        busy(led, n, (7,))
    return led


def test_required_rack_infeasible_reason_adds_up():
    out = decide(two_racks_of_eight(), gang("team-a/llm", count=6, gpus=8, required_level="rack"))
    assert out.report.status == SolverStatus.INFEASIBLE
    assert out.placements == []
    assert out.reason == ("gang team-a/llm (6x8 GPU): 0/8 nodes fit; 5 outside required rack, "
                          "3 had fewer than 8 free GPUs; best rack r1 fits 3/6")


def test_required_rack_keeps_everyone_in_one_rack():
    out = decide(two_racks_of_eight(), gang(count=3, gpus=8, required_level="rack"))
    assert [n for _, n, _ in where(out)] == ["n2", "n3", "n4"]
    assert out.report.objective["racks"] == 1


#          block b1                         block b2
#   r1: n1[....] n2[....]   r2: n3[....]   r3: n4[....] n5[....]
def blocks_for_preferred() -> Ledger:
    return ledger(node("n1", block="b1", rack="r1"), node("n2", block="b1", rack="r1"),
                  node("n3", block="b1", rack="r2"), node("n4", block="b2", rack="r3"),
                  node("n5", block="b2", rack="r3"))


@pytest.mark.parametrize("count, nodes, note", [
    (2, ["n4", "n5"], ""),
    (3, ["n1", "n2", "n3"], "preferred rack not possible; within one block"),
    (5, ["n1", "n2", "n3", "n4", "n5"], "preferred rack not possible"),
], ids=["fits-a-rack", "climbs-to-block", "climbs-to-anywhere"])
def test_preferred_level_climbs(count, nodes, note):
    out = decide(blocks_for_preferred(), gang(count=count, preferred_level="rack"))
    assert [p.node for p in out.placements] == nodes
    assert out.report.note == note


#            rack r1                               rack r2
#   n1[....] n2[....] n3[....] n4[..xx]     n5[....] n6[....] n7[....]
def slice_cluster() -> Ledger:
    led = ledger(*(node(f"n{i}", rack="r1") for i in range(1, 5)), *(node(f"n{i}", rack="r2") for i in range(5, 8)))
    busy(led, "n4", (0, 1))
    return led


def test_slices_keep_each_pair_in_one_rack():
    """Unsliced, the fuller rack r2 takes 3 members; slices of 2 per rack force 2 + 2."""
    free = decide(slice_cluster(), gang(count=4))
    assert [p.node for p in free.placements] == ["n1", "n5", "n6", "n7"]
    sliced = decide(slice_cluster(), gang(count=4, slice_size=2, slice_level="rack"))
    assert where(sliced) == [("ml/job/worker-0", "n1", (0, 1, 2, 3)), ("ml/job/worker-1", "n2", (0, 1, 2, 3)),
                             ("ml/job/worker-2", "n5", (0, 1, 2, 3)), ("ml/job/worker-3", "n6", (0, 1, 2, 3))]
    assert sliced.report.status == SolverStatus.OPTIMAL


def test_host_slices_pack_whole_slices_per_node():
    led = two_racks_of_eight(busy_nodes=())
    out = decide(led, gang(count=4, gpus=4, slice_size=2, slice_level="host"))
    assert [(p.node, p.gpus) for p in out.placements] == [("n1", (0, 1, 2, 3)), ("n1", (4, 5, 6, 7)),
                                                          ("n2", (0, 1, 2, 3)), ("n2", (4, 5, 6, 7))]


# ------------------------------------------------------------------- roles and elastic

#        rack r1: n1..n4 [....] 16 CPUs each
@pytest.mark.parametrize("worker_cpu, launcher_node", [(8000, "n1"), (14000, "n4")],
                         ids=["shares-a-worker-node", "own-node-when-cpu-is-short"])
def test_launcher_and_workers(worker_cpu, launcher_node):
    led = ledger(*(node(f"n{i}", cpu=16000, rack="r1") for i in range(1, 5)))
    req = GangRequest(name="ml/job", roles=(GangRole(name="launcher", count=1, cpu_milli=4000),
                                            GangRole(name="worker", count=3, gpus=4, cpu_milli=worker_cpu)))
    out = decide(led, req)
    assert where(out) == [("ml/job/launcher-0", launcher_node, ()), ("ml/job/worker-0", "n1", (0, 1, 2, 3)),
                          ("ml/job/worker-1", "n2", (0, 1, 2, 3)), ("ml/job/worker-2", "n3", (0, 1, 2, 3))]
    assert [p.role for p in out.placements] == ["launcher", "worker", "worker", "worker"]
    assert {p.gang for p in out.placements} == {"ml/job"}


#        rack r1:  n1[....] n2[...x] n3[....] n4[....]
def test_elastic_gang_places_what_fits():
    led = ledger(*(node(f"n{i}", rack="r1") for i in range(1, 5)))
    busy(led, "n2", (3,))
    out = decide(led, gang(count=5, min_members=2))
    assert [p.pod for p in out.placements] == ["ml/job/worker-0", "ml/job/worker-1", "ml/job/worker-2"]
    assert [p.node for p in out.placements] == ["n1", "n3", "n4"]
    assert out.report.objective["members"] == 3
    assert out.report.note == "placed 3/5 members (min 2)"
    out = decide(led, gang(count=5, min_members=4))
    assert out.reason == ("gang ml/job (5x4 GPU): 3/4 nodes fit; 1 had fewer than 4 free GPUs; "
                          "free capacity fits 3/5; needs at least 4 members")


#        rack r1:  n1[xx......]  n2[......xx]
@pytest.mark.parametrize("rail, gpus", [(False, [(2, 3, 4, 5), (0, 1, 2, 3)]), (True, [(2, 3, 4, 5), (2, 3, 4, 5)])],
                         ids=["free", "rail-aligned"])
def test_rail_alignment_uses_the_same_local_gpus(rail, gpus):
    led = ledger(node("n1", 8, rack="r1"), node("n2", 8, rack="r1"))
    busy(led, "n1", (0, 1))
    busy(led, "n2", (6, 7))
    out = decide(led, gang(count=2, rail_aligned=rail))
    assert [p.gpus for p in out.placements] == gpus


#        rack r1:  n1[....] n2[....]   clique c0: n3[....] n4[....]
def test_clique_is_the_best_level_below_the_rack():
    led = ledger(node("n1", rack="r1"), node("n2", rack="r1"), {**node("n3", rack="r1"), "clique": "c0"},
                 {**node("n4", rack="r1"), "clique": "c0"})
    out = decide(led, gang(count=2))
    assert [p.node for p in out.placements] == ["n3", "n4"]
    assert out.report.objective["cliques"] == 1
    out = decide(led, gang(count=3, required_level="clique"))
    assert out.reason == "gang ml/job (3x4 GPU): 0/4 nodes fit; 4 outside required clique; best clique c0 fits 2/3"


#        block b1
#   r1: n1[........]  n2[....] (clique c0)     r2: n3[....] (clique c0)
def test_required_clique_spanning_racks_is_kept_over_a_roomier_node():
    """n1 alone holds 6 members, but the clique is required: 4 + 2 on the clique's nodes."""
    led = ledger(node("n1", 8, block="b1", rack="r1"), {**node("n2", block="b1", rack="r1"), "clique": "c0"},
                 {**node("n3", block="b1", rack="r2"), "clique": "c0"})
    out = decide(led, gang(count=6, gpus=1, required_level="clique"))
    assert [p.node for p in out.placements] == ["n2"] * 4 + ["n3"] * 2
    assert (out.report.status, out.report.objective["cliques"]) == (SolverStatus.OPTIMAL, 1)
    free = decide(led, gang(count=6, gpus=1))
    assert [p.node for p in free.placements] == ["n1"] * 6


# ------------------------------------------------------------------- impossible requests

#        rack r1: n1 n2 [........]    rack r2: n3 n4 [........]
@pytest.mark.parametrize("req, reason", [
    (gang(count=1, gpus=16),
     "gang ml/job (1x16 GPU): 0/4 nodes fit; 4 had fewer than 16 free GPUs; no node has 16 GPUs (largest has 8)"),
    (GangRequest(name="ml/job", roles=(GangRole(count=2, gpus=8, gpu_models=("B200",)),)),
     "gang ml/job (2x8 GPU): 0/4 nodes fit; 4 had no GPU of model B200"),
    (gang(count=9, gpus=8),
     "gang ml/job (9x8 GPU): 4/4 nodes fit; free capacity fits 4/9; needs 72 GPUs, the cluster has 32"),
    (gang(count=2, gpus=8, required_level="zone"),
     "gang ml/job (2x8 GPU): unknown required level 'zone' (levels: rack, host)"),
    (gang(count=2, gpus=8, preferred_level="clique"),
     "gang ml/job (2x8 GPU): unknown preferred level 'clique' (levels: rack, host)"),
    (gang(count=5, gpus=4, slice_size=5, slice_level="host"),
     "gang ml/job (5x4 GPU): 4/4 nodes fit; 0/1 slices of 5 fit in one host each"),
], ids=["gpus-beyond-any-node", "unknown-model", "larger-than-cluster", "unknown-level", "no-cliques",
        "slice-too-big"])
def test_impossible_requests_are_infeasible_with_reasons(req, reason):
    led = ledger(*(node(f"n{i}", 8, rack="r1" if i < 3 else "r2") for i in range(1, 5)))
    out = decide(led, req)
    assert out.report.status == SolverStatus.INFEASIBLE
    assert (out.placements, out.reason) == ([], reason)


# ----------------------------------------------------------------------- solver report

def test_spent_time_budget_falls_back_to_greedy():
    out = decide(best_fit_block_trap(), gang(count=3), time_limit_s=1e-9)
    assert out.report.status == SolverStatus.GREEDY_FALLBACK
    assert [p.node for p in out.placements] == ["n1", "n2", "n3"]
    assert out.report.note == "time limit spent before the solver started"


def test_single_node_gang_is_solved_exactly():
    """Fits on one node: every count is 1, the node with the best (link, fragmentation) wins (r2 is fuller)."""
    out = decide(two_racks_of_eight(), gang(count=2, gpus=4))
    assert (out.report.status, out.report.solver) == (SolverStatus.OPTIMAL, "exact")
    assert where(out) == [("ml/job/worker-0", "n7", (0, 1, 2, 3)), ("ml/job/worker-1", "n7", (4, 5, 6, 7))]


#        rack r1:  n1[ 1000m, 500m ]  n2[ 1000m, 1000m ]
def test_shared_gpu_members_best_fit_partly_used_gpus():
    led = ledger(node("n1", 2, rack="r1"), node("n2", 2, rack="r1"))
    led.observe(Allocation("half", 0, (1,), 500, 0, 0))
    req = GangRequest(name="ml/share", roles=(GangRole(count=3, gpus=1, gpu_milli=500),))
    out = decide(led, req)
    assert [(p.node, p.gpus, p.gpu_milli) for p in out.placements] == [("n1", (1,), 500), ("n1", (0,), 500),
                                                                       ("n1", (0,), 500)]


def test_decision_is_deterministic_and_gangs_see_each_other():
    led = two_racks_of_eight(busy_nodes=())
    reqs = [gang("a", count=3, gpus=8), gang("b", count=3, gpus=8), gang("c", count=3, gpus=8)]
    first = place(led.snapshot(), reqs, PlacementConfig())
    again = place(led.snapshot(), reqs, PlacementConfig())
    assert [p.to_json() for p in first.placements] == [p.to_json() for p in again.placements]
    assert [o.report.status for o in first.outcomes] == [o.report.status for o in again.outcomes]
    used = [(p.node, g) for p in first.placements for g in p.gpus]
    assert len(used) == len(set(used)) == 48
    assert [o.placed for o in first.outcomes] == [True, True, False]
    assert first.outcomes[2].reason.startswith("gang c (3x8 GPU): 2/8 nodes fit; 6 had fewer than 8 free GPUs")


def test_elastic_objective_lists_members_first():
    out = decide(two_racks_of_eight(busy_nodes=()), gang(count=3, gpus=8, min_members=1))
    assert out.report.objective == {"members": 3, "racks": 1, "nodes": 3, "link_cost": 0, "fragmentation": 120}


@pytest.mark.parametrize("cap, total, want", [([15, 15], 25, [13, 12]), ([3, 15], 25, [3, 15]),
                                              ([10, 4, 10], 20, [8, 4, 8])])
def test_waterfill(cap, total, want):
    assert waterfill(np.array(cap), total).tolist() == want


def test_sort_key_negates_members_only():
    class P:
        elastic = True
        levels = ()
        balance = None

    assert sort_key(P(), {"members": 3, "nodes": 2, "link_cost": 0, "fragmentation": 5}) == (-3, 2, 0, 5)


@pytest.mark.parametrize("solver", ["greedy", "cpsat"])
@pytest.mark.parametrize(("slice_level", "required"), [("rack", "rack"), ("rack", "host"), ("host", "host"),
                                                       ("block", "rack")])
def test_an_elastic_gang_places_whole_slices_even_inside_its_required_domain(solver, slice_level, required):
    """slice_size 2 inside the required domain: room for three members is one slice, not one and a half."""
    nodes = []
    for i in range(2):
        node = make_node(f"n{i}", 8, block="b0", rack="r0")
        node["cpu_milli"] = 9000 if i == 0 else 1000
        nodes.append(node)
    ledger = Ledger(build_arrays(build(make_cluster(*nodes, levels=["block", "rack"]))))
    gang = GangRequest(name="g", roles=(GangRole(name="w", count=4, cpu_milli=3000),), min_members=2, slice_size=2,
                       slice_level=slice_level, required_level=required)
    out = place(ledger.snapshot(), [gang], PlacementConfig(gang={"solver": solver})).outcomes[0]
    assert out.placed and [p.pod for p in out.placements] == ["g/w-0", "g/w-1"]
    assert {p.node for p in out.placements} == {"n0"}


def test_an_elastic_sliced_gang_narrowed_to_one_clique_keeps_its_warm_start():
    """Greedy keeps the gang in one clique, so CP-SAT solves with clique required; the rack slices
    collapse into that clique and greedy's slice domains must follow (they were rack ids)."""
    nodes = []
    for i, (rack, clique) in enumerate([("r0", None)] * 3 + [("r1", "c0")] * 2):
        node = make_node(f"n{i}", 2, block="b0", rack=rack)
        if clique:
            node["clique"] = clique
        nodes.append(node)
    ledger = Ledger(build_arrays(build(make_cluster(*nodes, levels=["block", "rack"]))))
    gang = GangRequest(name="g", roles=(GangRole(name="w", count=2, gpus=2),), min_members=1, slice_size=1,
                       slice_level="rack")
    out = place(ledger.snapshot(), [gang], PlacementConfig()).outcomes[0]
    assert out.placed and out.report.status == SolverStatus.OPTIMAL
    assert sorted(p.node for p in out.placements) == ["n3", "n4"]


@pytest.mark.parametrize("solver", ["greedy", "cpsat"])
@pytest.mark.parametrize(("slice_level", "required"), [("rack", "rack"), ("block", "rack"), ("host", "host")])
def test_an_elastic_gang_with_a_launcher_counts_slices_of_both_kinds_inside_its_required_domain(solver, slice_level,
                                                                                                 required):
    """n0 [........] holds launcher + 3 workers: slices {launcher, w0} and {w1, w2}. One slice of the first
    kind and one of the second fit, though no slice-domain holds two slices shaped like the largest of
    each role (two launchers)."""
    led = ledger(node("n0", 8, block="b0", rack="r0"), levels=["block", "rack"])
    req = GangRequest(name="ml/job", roles=(GangRole(name="launcher", count=1, cpu_milli=1000),
                                            GangRole(name="worker", count=3, gpus=2)),
                      min_members=3, slice_size=2, slice_level=slice_level, required_level=required)
    out = place(led.snapshot(), [req], PlacementConfig(gang={"solver": solver})).outcomes[0]
    assert out.placed, out.reason
    assert len(out.placements) == 4 and {p.node for p in out.placements} == {"n0"}


def test_slices_of_two_kinds_narrower_than_the_required_domain_are_not_ruled_out():
    """r0 (n0 [........]) holds launcher + 3 workers in slices of two per rack inside the required
    block; the filter on required domains counted slices shaped like the largest of each role and
    dropped b0, so even CP-SAT found nothing."""
    led = ledger(node("n0", 8, block="b0", rack="r0"), levels=["block", "rack"])
    req = GangRequest(name="ml/job", roles=(GangRole(name="launcher", count=1, cpu_milli=1000),
                                            GangRole(name="worker", count=3, gpus=2)),
                      slice_size=2, slice_level="rack", required_level="block")
    out = place(led.snapshot(), [req], PlacementConfig()).outcomes[0]
    assert out.placed, out.reason
    assert len(out.placements) == 4 and {p.node for p in out.placements} == {"n0"}


def test_greedy_picks_a_required_host_that_holds_shared_and_whole_gpu_roles_together():
    """n0 [....] holds four 600m members or one whole GPU plus three of them, not all five (each
    share needs its own GPU); n1 [........] holds all. Greedy picked n0 (best fit for each role
    alone), found it full, and reported the gang INFEASIBLE."""
    led = ledger(node("n0", 4, rack="r0"), node("n1", 8, rack="r0"), levels=["rack"])
    req = GangRequest(name="ml/job", roles=(GangRole(name="s", count=4, gpus=1, gpu_milli=600),
                                            GangRole(name="w", count=1, gpus=1)), required_level="host")
    out = place(led.snapshot(), [req], PlacementConfig(gang={"solver": "greedy"})).outcomes[0]
    assert out.placed, out.reason
    assert {p.node for p in out.placements} == {"n1"}


@pytest.mark.parametrize("solver", ["greedy", "cpsat"])
def test_shares_of_two_sizes_go_to_a_node_whose_gpus_pack_them(solver):
    """2 x 600m + 1 x 500m: the 2-GPU node passes the resource sums (2,000 milli) but its GPUs cannot
    pack the shares (600 + 500 > 1,000); the 4-GPU node takes the gang."""
    ledger = Ledger(build_arrays(build(make_cluster(make_node("n0", 2, rack="r0"), make_node("n1", 4, rack="r0"),
                                                    levels=["rack"]))))
    gang = GangRequest(name="g", roles=(GangRole(name="a", count=2, gpus=1, gpu_milli=600),
                                        GangRole(name="b", count=1, gpus=1, gpu_milli=500)))
    out = place(ledger.snapshot(), [gang], PlacementConfig(gang={"solver": solver})).outcomes[0]
    assert out.placed and {p.node for p in out.placements} == {"n1"}
    assert len({p.gpus for p in out.placements}) == 3


# ------------------------------------------------- slices of several compositions (greedy too)

def slices_hold(req: GangRequest, out, dom: dict[str, str]) -> bool:
    """Every run of ``slice_size`` members sits in one domain (``dom``: node -> domain)."""
    nodes = [p.node for p in out.placements]
    return all(len({dom[n] for n in nodes[j: j + req.slice_size]}) == 1 for j in range(0, len(nodes), req.slice_size))


def launcher_cluster(slice_level: str) -> Ledger:
    """n0 [....] 32 CPUs, n1..n3 [...] 12 CPUs: only n0 has room for the 13-CPU launcher.
    In racks r0..r3 (one node each) for rack slices, all in r0 for host slices."""
    return ledger(node("n0", 4, cpu=32000, rack="r0"),
                  *(node(f"n{i}", 3, cpu=12000, rack=f"r{i}" if slice_level == "rack" else "r0") for i in (1, 2, 3)))


def launcher_gang(slice_level: str, **kw) -> GangRequest:
    """1 launcher + 8 workers in slices of 3: {launcher, w0, w1}, {w2, w3, w4}, {w5, w6, w7}."""
    return GangRequest(name="ml/job", roles=(GangRole(name="launcher", count=1, cpu_milli=13000),
                                            GangRole(name="worker", count=8, gpus=1, cpu_milli=4000)),
                       slice_size=3, slice_level=slice_level, **kw)


@pytest.mark.parametrize("solver", ["greedy", "cpsat"])
@pytest.mark.parametrize(("slice_level", "required"), [("host", None), ("rack", None), ("host", "rack")])
def test_each_slice_counts_by_its_own_composition(solver, slice_level, required):
    """Only n0 takes the launcher's slice; the workers' slices fit on n1..n3 (3 workers each). Greedy
    counted every slice as launcher + 3 workers, found room for one, and reported the gang INFEASIBLE."""
    req = launcher_gang(slice_level, required_level=required)
    out = decide(launcher_cluster(slice_level), req, solver=solver)
    assert out.placed and len(out.placements) == 9, out.reason
    assert [p.node for p in out.placements[:3]] == ["n0"] * 3
    dom = {f"n{i}": f"n{i}" for i in range(4)}
    assert slices_hold(req, out, dom)


#   rack r0: n0 [.....] (launcher fits)   rack r1: n1 [...] (launcher fits)
def test_greedy_puts_the_launcher_slice_where_it_costs_no_worker_slice():
    """{launcher, w0, w1} fits either rack; in r1 it leaves one worker free, no whole slice, so the
    two slices of three workers need r0 and r1 both: r0 must take the launcher's slice."""
    led = ledger(node("n0", 5, rack="r0"), node("n1", 3, rack="r1"))
    req = GangRequest(name="ml/job", roles=(GangRole(name="launcher", count=1, cpu_milli=1000),
                                            GangRole(name="worker", count=8, gpus=1)),
                      slice_size=3, slice_level="rack")
    out = decide(led, req, solver="greedy")
    assert out.placed, out.reason
    assert [p.node for p in out.placements] == ["n0"] * 6 + ["n1"] * 3


@pytest.mark.parametrize("solver", ["greedy", "cpsat"])
def test_roles_that_do_not_divide_into_slices(solver):
    """2 launchers + 4 workers in slices of 3: {l0, l1, w0} and {w1, w2, w3}. n0 [.] holds the first
    (one GPU, 20 CPUs), n1 [...] (8 CPUs) the second; no node holds two launchers and three workers."""
    led = ledger(node("n0", 1, cpu=20000, rack="r0"), node("n1", 3, cpu=8000, rack="r0"))
    req = GangRequest(name="ml/job", roles=(GangRole(name="launcher", count=2, cpu_milli=8000),
                                            GangRole(name="worker", count=4, gpus=1, cpu_milli=2000)),
                      slice_size=3, slice_level="host")
    out = decide(led, req, solver=solver)
    assert out.placed, out.reason
    assert [p.node for p in out.placements] == ["n0"] * 3 + ["n1"] * 3


@pytest.mark.parametrize("solver", ["greedy", "cpsat"])
def test_infeasible_reason_counts_each_slice_by_its_own_composition(solver):
    """n0 holds the launcher's slice, n1 one of the workers' slices: 2 of 3 fit (it said 1, every
    slice counted as launcher + 3 workers)."""
    led = ledger(node("n0", 4, cpu=32000, rack="r0"), node("n1", 3, cpu=12000, rack="r0"))
    out = decide(led, launcher_gang("host"), solver=solver)
    assert out.report.status == SolverStatus.INFEASIBLE
    assert out.reason == ("gang ml/job (1x13000m CPU launcher + 8x1 GPU, 4000m CPU worker): 2/2 nodes fit; "
                          "2/3 slices of 3 fit in one host each; needs 8 GPUs, the cluster has 7")


@pytest.mark.parametrize("solver", ["greedy", "cpsat"])
def test_greedy_required_domain_offers_the_resources_of_all_roles_together(solver):
    """A 13-CPU launcher and five 2-CPU workers: r1 (one 16-CPU node) holds either role alone but not
    both (23 CPUs); r0 (two such nodes) holds the gang. Greedy took r1, the best fit, and failed."""
    led = ledger(node("n0", cpu=16000, rack="r0"), node("n1", cpu=16000, rack="r0"), node("n2", cpu=16000, rack="r1"))
    req = GangRequest(name="ml/job", roles=(GangRole(name="launcher", count=1, cpu_milli=13000),
                                            GangRole(name="worker", count=5, cpu_milli=2000)), required_level="rack")
    out = decide(led, req, solver=solver)
    assert out.placed, out.reason
    assert {p.node for p in out.placements} == {"n0", "n1"}
