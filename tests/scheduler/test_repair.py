"""Gang repair: replacements next to the survivors, inside the original constraint, on the same rails.

Every case builds the cluster below (4-GPU NVSwitch nodes, NIC i on rail i next to GPU i),
places a gang, kills nodes and asks ``repair_gang`` / ``plan_repair`` for the lost members::

                    zone z1                          zone z2
         rack r1               rack r2               rack r3
    n1[....] n2[....] n3[....]   n4[....] n5[....] n6[....]   n7[....] n8[....]
"""

from __future__ import annotations

import numpy as np
import pytest

from models.placement import Placement, SolverStatus
from models.requests import GangRequest, GangRole
from models.topology import build_arrays
from plugins.base import Context
from scheduler.engine import Engine, GangConfig, PlacementConfig
from scheduler.ledger import Allocation, Ledger
from scheduler.repair import depth_to, plan_repair, repair_gang
from tests.builders import build, make_cluster, make_node, make_topology

RACKS = {"n1": ("z1", "r1"), "n2": ("z1", "r1"), "n3": ("z1", "r1"), "n4": ("z1", "r2"), "n5": ("z1", "r2"),
         "n6": ("z1", "r2"), "n7": ("z2", "r3"), "n8": ("z2", "r3")}


def cluster_ledger() -> Ledger:
    nics = [{"name": f"mlx5_{i}", "bandwidth_gbps": 400, "rail": i, "gpus": [i]} for i in range(4)]
    nodes = []
    for name, (zone, rack) in RACKS.items():
        n = make_node(name, topology=make_topology(4, "H100", nvswitch=18, nics=nics), zone=zone, rack=rack)
        n.update(cpu_milli=64000, memory_mib=524288)
        nodes.append(n)
    return Ledger(build_arrays(build(make_cluster(*nodes, levels=["zone", "rack"]))))


ENGINE = Engine.from_config(PlacementConfig(gang=GangConfig(solver="greedy")))


def gang(count: int = 2, gpus: int = 4, **kw) -> GangRequest:
    return GangRequest(name="ml/train", roles=(GangRole(name="worker", count=count, gpus=gpus),), **kw)


def bind(led: Ledger, places: list[Placement]) -> None:
    for p in places:
        led.assume(Allocation(p.pod, p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, gang=p.gang))


def at(led: Ledger, req: GangRequest, spots: dict[str, tuple[str, tuple[int, ...]]]) -> list[Placement]:
    """Bind the gang's members exactly where the test says: ``{member: (node, gpus)}``."""
    a = led.arrays
    roles = dict(req.member_names())
    out = [Placement(m, node, a.node_index[node], gpus, 1000, roles[m].cpu_milli, roles[m].memory_mib,
                     gang=req.name, role=roles[m].name) for m, (node, gpus) in spots.items()]
    bind(led, out)
    return out


def fill(led: Ledger, node: str, gpus: tuple[int, ...] = (0, 1, 2, 3)) -> None:
    led.observe(Allocation(f"other/{node}-{gpus}", led.arrays.node_index[node], gpus, 1000, 0, 0))


def kill(led: Ledger, places: list[Placement], *nodes: str) -> tuple[list[Placement], list[Placement]]:
    """Fail ``nodes``: release the members on them; returns (survivors, lost)."""
    idx = {led.arrays.node_index[n] for n in nodes}
    for i in idx:
        led.set_failed(i, True)
    lost = [p for p in places if p.node_index in idx]
    for p in lost:
        led.release(p.pod)
    return [p for p in places if p.node_index not in idx], lost


def repair(led: Ledger, req: GangRequest, survivors, lost, *, keep_old: bool = True):
    return repair_gang(ENGINE, led.snapshot(), req, survivors, [p.pod for p in lost], Context(),
                       lost=lost if keep_old else ())


def where(out) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(p.pod, p.node, p.gpus) for p in out.placements]


def test_replacement_stays_in_the_required_rack():
    """Required rack r1: the member lost on n2 goes to n3 (r1), never to the emptier rack r2."""
    led = cluster_ledger()
    req = gang(required_level="rack")
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1, 2, 3)), "ml/train/worker-1": ("n2", (0, 1, 2, 3))})
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost)
    assert out.placed and out.report.solver == "repair" and out.report.status == SolverStatus.GREEDY
    assert where(out) == [("ml/train/worker-1", "n3", (0, 1, 2, 3))]
    assert "kept 1 survivors, replaced 1 within rack r1" in out.report.note


def test_full_required_rack_is_infeasible_with_a_reason():
    led = cluster_ledger()
    req = gang(required_level="rack")
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1, 2, 3)), "ml/train/worker-1": ("n2", (0, 1, 2, 3))})
    fill(led, "n3")
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost)
    assert not out.placed and out.placements == []
    assert out.reason == ("repair gang ml/train: member ml/train/worker-1 (4 GPU): 5/8 nodes are available: "
                          "2 had fewer than 4 free GPUs, 1 node(s) had failed; "
                          "5 feasible node(s) outside required rack r1")


@pytest.mark.parametrize("busy, expect", [
    ((), "n3"),  # same rack as the survivor
    (("n3",), "n4"),  # rack full: same zone z1
    (("n3", "n4", "n5", "n6"), "n7"),  # zone full: anywhere
], ids=["same-rack", "same-zone", "other-zone"])
def test_closest_to_the_survivors_without_a_requirement(busy, expect):
    led = cluster_ledger()
    req = gang(preferred_level="rack")
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1, 2, 3)), "ml/train/worker-1": ("n2", (0, 1, 2, 3))})
    for n in busy:
        fill(led, n)
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost)
    assert [p.node for p in out.placements] == [expect]


def test_survivor_node_with_room_comes_first():
    """Two-GPU members: the survivor's own node still has two free GPUs, so the replacement goes there."""
    led = cluster_ledger()
    req = gang(count=2, gpus=2)
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1)), "ml/train/worker-1": ("n2", (0, 1))})
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost)
    assert where(out) == [("ml/train/worker-1", "n1", (2, 3))]


def test_rail_aligned_replacement_takes_the_lost_members_gpus():
    """The lost member held GPUs 2,3 (rails 2,3): its replacement takes 2,3 again, though 0,1 are free too."""
    led = cluster_ledger()
    req = gang(count=2, gpus=2, rail_aligned=True)
    places = at(led, req, {"ml/train/worker-0": ("n1", (2, 3)), "ml/train/worker-1": ("n2", (2, 3))})
    fill(led, "n1", (0, 1))
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost)
    assert where(out) == [("ml/train/worker-1", "n3", (2, 3))]


def test_rail_aligned_without_the_old_placement_uses_a_survivors_set():
    led = cluster_ledger()
    req = gang(count=2, gpus=2, rail_aligned=True)
    places = at(led, req, {"ml/train/worker-0": ("n1", (2, 3)), "ml/train/worker-1": ("n2", (2, 3))})
    fill(led, "n1", (0, 1))
    fill(led, "n3", (2,))  # n3 has 0,1,3 free: not the survivors' set, so it is skipped
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost, keep_old=False)
    assert where(out) == [("ml/train/worker-1", "n4", (2, 3))]


def test_rail_set_taken_everywhere_is_infeasible():
    led = cluster_ledger()
    req = gang(count=2, gpus=2, rail_aligned=True, required_level="rack")
    places = at(led, req, {"ml/train/worker-0": ("n1", (2, 3)), "ml/train/worker-1": ("n2", (2, 3))})
    fill(led, "n1", (0, 1))
    fill(led, "n3", (3,))
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost)
    assert not out.placed
    assert "none has the rail-aligned GPU set(s) [2, 3] free" in out.reason


def test_slice_mates_keep_their_domain():
    """Slices of 2 per rack: the member lost from slice 0 (rack r1) is replaced inside r1."""
    led = cluster_ledger()
    req = gang(count=4, gpus=4, slice_size=2, slice_level="rack")
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1, 2, 3)), "ml/train/worker-1": ("n2", (0, 1, 2, 3)),
                           "ml/train/worker-2": ("n4", (0, 1, 2, 3)), "ml/train/worker-3": ("n5", (0, 1, 2, 3))})
    fill(led, "n6")
    survivors, lost = kill(led, places, "n2")
    out = repair(led, req, survivors, lost)
    assert where(out) == [("ml/train/worker-1", "n3", (0, 1, 2, 3))]
    fill(led, "n3")
    out = repair(led, req, survivors, lost)
    assert not out.placed and "outside slice 0's rack r1" in out.reason



@pytest.mark.parametrize("by_place", [False, True], ids=["by-name", "by-place"])
def test_a_whole_lost_slice_goes_where_all_of_it_fits(by_place):
    """Slices of 2 per host: n4 dies with all of slice 0. n2 (rack r1, next to the survivors on n1)
    has room for one member only; the slice goes whole to n7, and the survivors stay. By place:
    slices told by ``slice_groups`` (the live scheduler's way) instead of member names."""
    led = cluster_ledger()
    req = gang(count=4, gpus=2, slice_size=2, slice_level="host")
    places = at(led, req, {"ml/train/worker-0": ("n4", (0, 1)), "ml/train/worker-1": ("n4", (2, 3)),
                           "ml/train/worker-2": ("n1", (0, 1)), "ml/train/worker-3": ("n1", (2, 3))})
    for n in ("n3", "n5", "n6"):
        fill(led, n)
    fill(led, "n2", (0, 1))
    survivors, lost = kill(led, places, "n4")
    groups = {"ml/train/worker-0": "lost", "ml/train/worker-1": "lost", "ml/train/worker-2": "n1",
              "ml/train/worker-3": "n1"} if by_place else None

    def again():
        return repair_gang(ENGINE, led.snapshot(), req, survivors, [p.pod for p in lost], Context(), lost=lost,
                           slice_groups=groups)

    out = again()
    assert out.placed, out.reason
    assert [(m, n) for m, n, _ in where(out)] == [("ml/train/worker-0", "n7"), ("ml/train/worker-1", "n7")]
    for n in ("n7", "n8"):
        fill(led, n, (0, 1))
    out = again()
    assert not out.placed
    assert "no host has room for all 2 lost members of its slice" in out.reason

def test_several_members_lost_on_several_nodes():
    led = cluster_ledger()
    req = gang(count=4, gpus=4, required_level="zone")
    places = at(led, req, {f"ml/train/worker-{i}": (n, (0, 1, 2, 3)) for i, n in enumerate(("n1", "n2", "n4", "n5"))})
    survivors, lost = kill(led, places, "n2", "n5")
    out = repair(led, req, survivors, lost)
    assert sorted(where(out)) == [("ml/train/worker-1", "n3", (0, 1, 2, 3)), ("ml/train/worker-3", "n6", (0, 1, 2, 3))]


def test_launcher_role_replaced_next_to_the_workers():
    """Only the launcher's node (n4) dies: the new launcher joins a surviving worker's node."""
    led = cluster_ledger()
    req = GangRequest(name="ml/mpi", roles=(GangRole(name="launcher", count=1, cpu_milli=2000),
                                            GangRole(name="worker", count=2, gpus=4)))
    places = at(led, req, {"ml/mpi/launcher-0": ("n4", ()), "ml/mpi/worker-0": ("n1", (0, 1, 2, 3)),
                           "ml/mpi/worker-1": ("n2", (0, 1, 2, 3))})
    survivors, lost = kill(led, places, "n4")
    out = repair(led, req, survivors, lost)
    assert where(out) == [("ml/mpi/launcher-0", "n1", ())]


def test_no_survivor_places_the_gang_anew():
    led = cluster_ledger()
    req = gang(count=1, gpus=4)
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1, 2, 3))})
    survivors, lost = kill(led, places, "n1")
    out = repair(led, req, survivors, lost)
    assert out.placed and [p.pod for p in out.placements] == ["ml/train/worker-0"]
    assert out.placements[0].node != "n1"
    assert "no survivor: placed anew" in out.report.note


def test_unknown_member_is_reported():
    led = cluster_ledger()
    req = gang()
    out = repair_gang(ENGINE, led.snapshot(), req, [], ["ml/train/worker-9"], Context())
    assert not out.placed and "ml/train/worker-9 not a member" in out.reason


def test_plan_replaces_the_whole_gang_when_repair_cannot():
    """Required rack r1 is full after n2 dies; the whole gang moves to the best-fit rack r3."""
    led = cluster_ledger()
    req = gang(required_level="rack")
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1, 2, 3)), "ml/train/worker-1": ("n2", (0, 1, 2, 3))})
    fill(led, "n3")
    survivors, lost = kill(led, places, "n2")
    plan = plan_repair(ENGINE, led.snapshot(), req, survivors, [p.pod for p in lost], Context(), lost=lost)
    assert plan.action == "replace"
    assert sorted(p.node for p in plan.outcome.placements) == ["n7", "n8"]
    assert len(plan.outcome.placements) == 2 and "outside required rack r1" in plan.why


def test_plan_requeues_when_nothing_fits():
    led = cluster_ledger()
    req = gang(required_level="rack")
    places = at(led, req, {"ml/train/worker-0": ("n1", (0, 1, 2, 3)), "ml/train/worker-1": ("n2", (0, 1, 2, 3))})
    for n in ("n3", "n4", "n5", "n7"):
        fill(led, n)
    survivors, lost = kill(led, places, "n2")
    plan = plan_repair(ENGINE, led.snapshot(), req, survivors, [p.pod for p in lost], Context(), lost=lost)
    assert plan.action == "requeue" and not plan.outcome.placed
    assert "whole gang: gang ml/train" in plan.why


def test_depth_counts_shared_tiers():
    led = cluster_ledger()
    a = led.arrays
    d = depth_to(a, np.array([a.node_index["n1"]]))
    got = {name: int(d[a.node_index[name], 0]) for name in ("n1", "n2", "n4", "n7")}
    assert got == {"n1": 3, "n2": 2, "n4": 1, "n7": 0}
